"""The push listener: ``POST /ews/notifications/<secret>``. It records and answers; it never calls Exchange.
``GET`` on the same URL answers a person checking it from an Exchange server, and calsync's own check that
the public listener URL comes back here (:mod:`calsync.listener.reachability`).

A notification is answered OK only after its events are stored and the mailbox marked dirty, in one
transaction (invariant 2); a subscription we do not know, or one of an operator no longer enabled, gets
Unsubscribe. A StatusEvent only records the heartbeat. Bodies that are not a trustworthy SendNotification
(too large, not XML, DTDs or entities, not SOAP) get a 4xx and nothing is stored.

The listener is an open door (it must be reachable from Exchange, so it will be probed). What guards it, in the
order a request meets it:

1. **Source networks** (``listener_allowed_networks``, optional). A request from an address outside every listed
   network gets 403 before anything else, whatever its path secret (so the allow-list is no oracle for the
   secret). The client address is what the ASGI server reports (``request.client.host``, the socket peer). With
   ``listener_trust_forwarded_for`` it is the *last* ``X-Forwarded-For`` entry instead (all header lines taken
   as one list): the address the nearest proxy saw. Not the first entry: a client writes whatever it likes
   there, and proxies that append (nginx ``$proxy_add_x_forwarded_for``, HAProxy ``forwardfor``, most load
   balancers) keep it, so the first entry would let anyone through the allow-list and out of its rate limit;
   the last one is right both for a proxy that appends and for one that replaces the header. It is still only
   safe when the listener cannot be reached except through that one proxy (anyone who can reach it directly
   writes the header), and with a chain of proxies it is the address of the one before the last.
   An address that does not parse (or no address at all) is outside every network. IPv4-mapped IPv6 peers
   (``::ffff:10.0.0.1``, seen when the server listens on ``::``) are read as the IPv4 address. Only this route is
   guarded; the calendar API and ``/healthz`` are not.
   Note that uvicorn (as ``calsync serve`` runs it, with its defaults) already replaces the client address by the
   last untrusted ``X-Forwarded-For`` entry for connections from its ``forwarded_allow_ips`` (default 127.0.0.1,
   env ``FORWARDED_ALLOW_IPS``): a local proxy then works without ``listener_trust_forwarded_for``, and a local
   process can choose its address. Run uvicorn with ``proxy_headers=False`` to make the socket peer the only
   truth when ``listener_trust_forwarded_for`` is off.
2. **The secret**: the last path segment must be one of the accepted secrets (``listener_secret``, and during a
   rotation's grace period ``listener_previous_secret``; see :func:`calsync.settings.listener_secrets`),
   compared in constant time. Anything else is 404, as if there were no listener.
3. **The body**: a declared Content-Length over :data:`MAX_BODY_BYTES` is 413 before a byte is read; the body is
   read in chunks and refused (413) as soon as it passes the limit; then
   the protocol's reader (:class:`~calsync.listener.protocol.PushReader`; for EWS
   :func:`~calsync.sources.ews.notifications.parse_send_notification`) refuses anything that is not a safe
   SendNotification (DTDs and entities are refused by a byte scan, before lxml). A parsed body whose ItemId or
   FolderId is longer than the store keeps (:data:`MAX_ID_CHARS`) is refused (400) too: no real Exchange id
   is that long, and storing it would fail.
4. **Subscriptions**: a body is stored only when *every* notification in it belongs to a subscription we hold for
   an enabled operator. Otherwise nothing of it is stored and the answer is Unsubscribe (a real push carries one
   subscription; a body mixing ours with others is not Exchange's).

**Storing: group commit.** Storing is done by one writer thread per listener (:class:`GroupWriter`), not by
the request: the request queues its parsed body and awaits its own result. The writer takes everything queued
(at most :data:`MAX_GROUP` bodies) and stores it in one transaction (:meth:`Listener.record_group`): one lookup
of all the subscriptions, then the event rows, the subscriptions' counters and the dirty mailboxes of the
whole group (:class:`calsync.store.inbox.Batch`: one statement on PostgreSQL, three on SQLite), one
``pg_notify``, one commit, on a connection the writer keeps while it has work (no pool checkout or ping per
transaction). While that commit is in flight the next pushes queue up and go into the next transaction
together, so the pushes per commit grow with the load; a lone push waits for nobody. Each body is decided on its own
(OK, or Unsubscribe with nothing of it stored), and every request is answered only after the transaction that
holds its body has committed. If that transaction fails, no request of the group is answered from it: the
writer stores each body of the group again in a transaction of its own, so one bad push (or a deadlock, or a
lost connection) fails only its own request (500, and Exchange sends it again) while the others are
acknowledged. A body of a failed group may then be stored twice if the failed commit did in fact reach the
database (a lost connection during COMMIT); a duplicate is harmless, as when Exchange delivers a push twice.

**Floods.** Refusals are cheap (no body is read for 403, 404 or a declared oversize; hostile XML is refused by a
byte scan), and a per-address :class:`RefusalLimiter` (a token bucket: :data:`REFUSAL_BURST` refusals at once,
then :data:`REFUSALS_PER_SECOND` per second) turns further refusals into ``429 Too Many Requests`` with
``Retry-After``, logged once per burst rather than once per request, so a flood costs neither disk nor much CPU.
The limiter is only consulted for a request that is being refused: a notification with a valid secret and a
valid body is never rate-limited, even from an address that is flooding us at the same time (a reverse proxy,
a NAT). So a request with the right secret always has its body read and parsed; only when that body is refused
does the bucket decide between its own 4xx and 429. Buckets are kept per address (IPv6: per /64, which one host
usually owns) in memory, per process, at most :data:`MAX_CLIENTS` of them (the least recently refused is
forgotten first; a forgotten bucket is a full one, so forgetting errs towards answering). With several ``serve``
processes each has its own limiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Generic, Literal, TypeVar

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from calsync.store import inbox
from calsync.store.db import Database, WriterConnection

from .protocol import MAX_BODY_BYTES, Notification, NotificationRejected, PushReader, Status

if TYPE_CHECKING:
    from calsync.metrics import Metrics

log = logging.getLogger("calsync.listener")

PATH = "/ews/notifications/{secret}"  # the EWS door; each protocol has its own (PushReader.door)
PROBE_HEADER = "X-Calsync-Probe"  # a nonce, sent by calsync's own reachability check (GET)
PROBE_ANSWER_HEADER = "X-Calsync-Probe-Answer"  # HMAC-SHA256 of the nonce under the path's secret, hex

REFUSALS_PER_SECOND = 10.0  # refused requests per second one address may make before being answered 429
REFUSAL_BURST = 20  # ...after a burst of this many
MAX_CLIENTS = 10_000  # addresses the limiter remembers
MAX_ID_CHARS = 512  # the store's width for ItemId/FolderId (notifications.item_id); longer bodies are refused
MAX_GROUP = 256  # push bodies stored in one transaction at most
MAX_TOKEN_CHARS = 1024  # a validation token echoed back at most this long
WRITER_IDLE_SECONDS = 2.0  # the writer thread ends after this long without work (and starts again on demand)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def probe_answer(secret: str, nonce: str) -> str:
    return hmac.new(secret.encode(), nonce.encode(), hashlib.sha256).hexdigest()


def parse_address(text: str | None) -> IPAddress | None:
    """An IP address from a peer host or an ``X-Forwarded-For`` entry (``10.0.0.1``, ``10.0.0.1:443``,
    ``[2001:db8::1]:443``, ``2001:db8::1``); IPv4-mapped IPv6 read as IPv4; None when it is not an address."""
    if not text:
        return None
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with a port
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(peer: str | None, forwarded_for: Iterable[str], *, trust_forwarded_for: bool) -> IPAddress | None:
    """The address a request comes from: the peer, or when trusted the last entry of the X-Forwarded-For header
    lines ``forwarded_for`` (the address the nearest proxy saw; the peer when there is no such header)."""
    if trust_forwarded_for:
        entries = [entry for line in forwarded_for for entry in line.split(",")]
        if entries:
            return parse_address(entries[-1])
    return parse_address(peer)


def limiter_key(address: IPAddress | None, peer: str | None) -> str:
    """The bucket a client's refusals are charged to: the address, an IPv6 /64, or the raw peer name."""
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    if address is not None:
        return str(address)
    return f"?{(peer or '')[:64]}"


class RefusalLimiter:
    """Token buckets of refused requests, one per client key, bounded in number (least recently refused evicted).

    Each refusal takes a token; a bucket holds at most ``burst`` tokens and gets ``rate`` back per second. While a
    bucket has less than one token, :meth:`limited` is true. A bucket that has run dry is *flooding* until it is
    full again: :meth:`charge` says so, so that a flood is logged once, not once per refusal. Thread-safe;
    ``clock`` is for tests.
    """

    def __init__(
        self,
        rate: float = REFUSALS_PER_SECOND,
        burst: int = REFUSAL_BURST,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1 or max_clients < 1:
            raise ValueError("rate must be positive, burst and max_clients at least 1")
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float, bool]] = OrderedDict()  # key -> (tokens, at, flooding)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def _state(self, key: str, now: float) -> tuple[float, bool]:
        tokens, at, flooding = self._buckets.get(key, (float(self.burst), now, False))
        tokens = min(float(self.burst), tokens + max(0.0, now - at) * self.rate)
        return tokens, flooding and tokens < self.burst

    def limited(self, key: str) -> bool:
        """Whether ``key`` has used up its refusals for now."""
        with self._lock:
            return key in self._buckets and self._state(key, self.clock())[0] < 1.0

    def charge(self, key: str) -> Literal["ok", "emptied", "flooding"]:
        """Take one refusal from ``key``'s bucket: ``emptied`` when that ran it dry (worth one log line),
        ``flooding`` while it has not been full since, else ``ok``."""
        with self._lock:
            now = self.clock()
            tokens, flooding = self._state(key, now)
            tokens = max(0.0, tokens - 1.0)
            outcome: Literal["ok", "emptied", "flooding"] = "flooding" if flooding else "ok"
            if not flooding and tokens < 1.0:
                outcome, flooding = "emptied", True
            self._buckets[key] = (tokens, now, flooding)
            self._buckets.move_to_end(key)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            return outcome


T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class _Queued(Generic[T, R]):
    item: T
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[R]


def _settle(answers: list[tuple[asyncio.Future[R], R | BaseException]]) -> None:
    for future, result in answers:
        if future.done():  # the request was cancelled meanwhile (its client went away)
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


class GroupWriter(Generic[T, R]):
    """One thread doing ``store`` for coroutines, in groups: whatever was queued while the previous group was
    being stored becomes the next group (at most ``max_group`` items; no waiting for more).

    ``store`` gets a group of items and returns, for each item in order, its result or the exception that is
    that item's outcome; :meth:`submit` returns the result or raises the exception. If ``store`` itself raises
    (or returns a wrong number of results), every item of the group gets that error. Results go back to each
    event loop with one ``call_soon_threadsafe`` per loop and group. The thread starts on the first
    :meth:`submit` and ends after ``idle_seconds`` without work, or at :meth:`close` (once what was queued
    before is done), calling ``on_idle`` in that thread as it ends; a later :meth:`submit` starts it again.
    """

    _STOP = object()

    def __init__(
        self,
        store: Callable[[list[T]], Sequence[R | BaseException]],
        *,
        max_group: int = MAX_GROUP,
        idle_seconds: float = WRITER_IDLE_SECONDS,
        name: str = "calsync-writer",
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        if max_group < 1 or idle_seconds <= 0:
            raise ValueError("max_group must be at least 1 and idle_seconds positive")
        self.store = store
        self.max_group = max_group
        self.idle_seconds = idle_seconds
        self.name = name
        self.on_idle = on_idle
        self._queue: queue.SimpleQueue[_Queued[T, R] | object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.groups = 0  # groups stored (each one call of ``store``)
        self.items = 0  # items in them

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.put(_Queued(item, loop, future))
        with self._lock:  # after the put: a thread that is about to end sees the item and carries on
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        return await future

    def close(self, timeout: float = 10.0) -> None:
        """Store what is queued, then end the thread (waiting at most ``timeout`` seconds for it)."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            self._queue.put(self._STOP)
            thread.join(timeout)

    def _run(self) -> None:
        try:
            while True:  # ends when idle or told to stop, with nothing queued
                try:
                    first = self._queue.get(timeout=self.idle_seconds)
                except queue.Empty:
                    first = self._STOP
                if first is self._STOP:
                    with self._lock:  # a submit now waits, then finds no thread and starts one
                        if self._queue.empty():
                            self._idle()
                            self._thread = None
                            return
                    continue
                group = [first]
                while len(group) < self.max_group:
                    try:
                        group.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                queued = [q for q in group if isinstance(q, _Queued)]
                if len(queued) < len(group):
                    self._queue.put(self._STOP)  # a stop taken with the group: honoured once the queue is empty
                self._write(queued)
        except BaseException:  # not expected: let the next submit start a new thread rather than wait forever
            with self._lock:
                self._thread = None
            raise

    def _idle(self) -> None:
        if self.on_idle is not None:
            try:
                self.on_idle()
            except Exception:
                log.exception("the writer's idle hook failed")

    def _write(self, group: list[_Queued[T, R]]) -> None:
        results: list[R | BaseException]
        try:
            results = list(self.store([q.item for q in group]))
            if len(results) != len(group):
                raise RuntimeError(f"{len(results)} results for a group of {len(group)}")
        except Exception as exc:
            log.exception("storing a group failed", extra={"group": len(group)})
            results = [exc] * len(group)
        self.groups += 1
        self.items += len(group)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[R], R | BaseException]]] = {}
        for q, result in zip(group, results, strict=True):
            by_loop.setdefault(q.loop, []).append((q.future, result))
        for loop, answers in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody awaits these any more
                loop.call_soon_threadsafe(_settle, answers)


@dataclass(frozen=True)
class Outcome:
    """What storing one push body came to: the SubscriptionStatus to answer, whether a mailbox became dirty,
    and for Unsubscribe the subscription id that is not ours (or not an enabled operator's) and what we know
    of it."""

    status: Status
    dirty: bool = False
    stranger: tuple[str, inbox.Delivery | None] | None = None


def _ours(note: Notification, found: dict[str, inbox.Delivery]) -> bool:
    """A notification of a subscription we hold for an enabled operator, carrying that subscription's client state
    where it has one (Graph; compared in constant time)."""
    delivery = found.get(note.subscription_id)
    if delivery is None or not delivery.enabled:
        return False
    if delivery.client_state is None:
        return True
    return hmac.compare_digest((note.client_state or "").encode(), delivery.client_state.encode())


class Listener:
    def __init__(
        self,
        db: Database,
        secrets: Callable[[], list[str]],
        on_dirty: Callable[[], None],
        readers: PushReader | Sequence[PushReader],
        *,
        allowed_networks: Iterable[str | IPNetwork] = (),
        trust_forwarded_for: bool = False,
        limiter: RefusalLimiter | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.db = db
        # each protocol's reading of bodies and writing of answers, by door (ews: SendNotification; graph: JSON)
        found = [readers] if not isinstance(readers, Sequence) else list(readers)
        self.readers: dict[str, PushReader] = {r.door: r for r in found}
        self.secrets = secrets  # the current secret, and during a rotation the previous one too
        self.on_dirty = on_dirty
        self.allowed_networks: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n) for n in allowed_networks)
        self.trust_forwarded_for = trust_forwarded_for
        self.limiter = limiter if limiter is not None else RefusalLimiter()
        self.received = 0  # notifications answered (OK or Unsubscribe)
        self.refused = 0  # requests refused with their own 4xx (403, 404, 400, 413, 415)
        self.limited = 0  # requests refused with 429 because their address had used up its refusals
        self.metrics = metrics  # Prometheus counters (calsync.metrics); None: not counted
        self.writer: GroupWriter[list[Notification], Outcome] = GroupWriter(
            self.record_group, name="calsync-intake", on_idle=self._drop_connection
        )
        self._connection: WriterConnection | None = None  # the writer thread's own, while it runs

    def routes(self) -> list[Route]:
        """For each protocol: POST (and GET, for a person or the reachability check) on its notifications door,
        and POST on its lifecycle door when it has one."""
        found = []
        for door, reader in self.readers.items():
            path = f"/{door}/notifications/{{secret}}"
            found += [Route(path, partial(self.receive, reader), methods=["POST"]), Route(path, self.answer_probe)]
            if reader.lifecycle:
                found.append(Route(f"/{door}/lifecycle/{{secret}}", partial(self.receive, reader), methods=["POST"]))
        return found

    async def answer_probe(self, request: Request) -> Response:
        """GET on the listener URL: a person (or calsync's own reachability check) asking whether it comes back to
        this listener. Guarded like a push (allow-list, secret); a probe nonce is answered with its HMAC under
        the secret in the path, which only a listener of this deployment can compute."""
        _, refused = self._admit(request)
        if refused is not None:
            return refused
        secret = request.path_params["secret"]
        nonce = request.headers.get(PROBE_HEADER, "")
        headers = {PROBE_ANSWER_HEADER: probe_answer(secret, nonce)} if 0 < len(nonce) <= 128 else {}
        return PlainTextResponse("calsync listener: Exchange POSTs SendNotification here\n", headers=headers)

    def _secret_ok(self, given: str) -> bool:
        # Compare every accepted secret (no early exit), each in constant time.
        return any([hmac.compare_digest(given.encode(), s.encode()) for s in self.secrets() if s])

    def _allowed(self, address: IPAddress | None) -> bool:
        if not self.allowed_networks:
            return True
        return address is not None and any(address in network for network in self.allowed_networks)

    def _refuse(self, key: str, status: int, reason: str) -> Response:
        """Answer a refused request: its own status, or 429 once its address has used up its refusals."""
        if self.limiter.limited(key):
            self.limited += 1
            if self.metrics is not None:
                self.metrics.request_refused(429)
            return PlainTextResponse(
                "too many refused requests",
                status_code=429,
                headers={"Retry-After": str(max(1, round(1 / self.limiter.rate)))},
            )
        self.refused += 1
        if self.metrics is not None:
            self.metrics.request_refused(status)
        charged = self.limiter.charge(key)
        if charged == "emptied":
            log.warning(
                "refusing a flood: further refused requests answered 429",
                extra={"client": key, "status": status, "reason": reason},
            )
        elif charged == "ok" and status != 404:
            log.info("notification refused", extra={"client": key, "reason": reason, "status": status})
        return PlainTextResponse(reason, status_code=status)

    def _admit(self, request: Request) -> tuple[str, Response | None]:
        """The first two guards (source networks, then the secret): the client's limiter key, and the refusal
        to answer with, if any."""
        peer = request.client.host if request.client is not None else None
        address = client_address(
            peer, request.headers.getlist("x-forwarded-for"), trust_forwarded_for=self.trust_forwarded_for
        )
        key = limiter_key(address, peer)
        if not self._allowed(address):
            return key, self._refuse(key, 403, "Forbidden")
        if not self._secret_ok(request.path_params["secret"]):
            return key, self._refuse(key, 404, "Not Found")
        return key, None

    async def receive(self, reader: PushReader, request: Request) -> Response:
        key, refused = self._admit(request)
        if refused is not None:
            return refused
        token = reader.validation_token(request.query_params)
        if token is not None:  # Graph checking the URL: echo its token as text, at once
            return PlainTextResponse(token[:MAX_TOKEN_CHARS])
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return self._refuse(key, 413, f"body larger than {MAX_BODY_BYTES} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                return self._refuse(key, 413, f"body larger than {MAX_BODY_BYTES} bytes")
        try:
            notes = reader.read(bytes(body), request.headers.get("content-type"))
        except NotificationRejected as exc:
            return self._refuse(key, exc.status, exc.reason)
        if any(len(e.item_id or e.folder_id or "") > MAX_ID_CHARS for note in notes for e in note.events):
            return self._refuse(key, 400, f"an ItemId or FolderId is longer than {MAX_ID_CHARS} characters")
        outcome = await self.writer.submit(notes)  # answered only once stored (or raises: a 500, never an OK)
        status, dirty = outcome.status, outcome.dirty
        if outcome.stranger is not None:
            self._unsubscribing(*outcome.stranger)
        self.received += 1
        if self.metrics is not None and status == "OK":
            self.metrics.notification_received("event" if dirty else "status")
        if dirty:
            self.on_dirty()
        reply = reader.answer(status)
        return Response(reply.body, status_code=reply.status, media_type=reply.media_type)

    def close(self) -> None:
        """Store what is queued and stop the writer thread (it starts again with the next push)."""
        self.writer.close()

    def record(self, notes: list[Notification]) -> tuple[Status, bool]:
        """Store one push body in a transaction of its own; returns the SubscriptionStatus to answer and
        whether a mailbox got dirty. Raises if it could not be stored."""
        outcome = self._store([notes])[0]
        if outcome.stranger is not None:
            self._unsubscribing(*outcome.stranger)
        return outcome.status, outcome.dirty

    def record_group(self, bodies: list[list[Notification]]) -> list[Outcome | BaseException]:
        """Store push bodies (the writer thread's ``store``): all in one transaction on the writer's own
        connection; when that fails, each again in a transaction of its own on a connection from the pool (checked
        on checkout), so that a failure is the outcome of the bodies it concerns only, and a connection that died
        while idle costs no push."""
        try:
            if self._connection is None:
                self._connection = self.db.writer_connection()
            return list(self._store(bodies, self._connection))
        except Exception as exc:
            self._drop_connection()
            log.warning(
                "storing pushes failed; storing each again on its own",
                extra={"pushes": len(bodies), "error": repr(exc)[:300]},
            )
        outcomes: list[Outcome | BaseException] = []
        for notes in bodies:
            try:
                outcomes.append(self._store([notes])[0])
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()  # back to the pool, which discards it if it is broken
            except Exception:
                log.warning("closing the writer's connection failed", exc_info=True)

    def _store(self, bodies: list[list[Notification]], connection: WriterConnection | None = None) -> list[Outcome]:
        """One transaction: each body is stored whole if every notification in it is for a subscription of an
        enabled operator (with its client state, for Graph), else nothing of it is (Unsubscribe); a body of
        independent notifications (Graph) has those stored that are ours. Raises if the transaction fails."""
        outcomes: list[Outcome] = []
        with self.db.transaction(connection) as session:
            found = inbox.lookup_many(session, (note.subscription_id for notes in bodies for note in notes))
            batch = inbox.Batch()
            for notes in bodies:
                # EWS: a body is stored whole only if every notification in it is ours, else Unsubscribe. Graph
                # puts notifications of several subscriptions in one body: those calsync holds are stored.
                mine = [note for note in notes if _ours(note, found)]
                if len(mine) < len(notes) and not all(note.independent for note in notes):
                    mine = []
                if not mine:
                    stranger = next((n.subscription_id for n in notes if not _ours(n, found)), "")
                    outcomes.append(Outcome("Unsubscribe", stranger=(stranger, found.get(stranger))))
                    continue
                dirty = False
                for note in mine:
                    operator_id = found[note.subscription_id].operator_id
                    if note.lifecycle is not None:  # Graph about the subscription: for ManagePushSubscriptions
                        dirty = inbox.lifecycle(session, operator_id, note.subscription_id, note.lifecycle) or dirty
                        continue
                    events = [
                        inbox.InboxEvent(e.kind, e.item_id or e.folder_id, e.watermark)
                        for e in note.events
                        if e.kind != "StatusEvent"
                    ]
                    if inbox.record(
                        session, operator_id, note.subscription_id, events, note.last_watermark, batch=batch
                    ):
                        dirty = True
                outcomes.append(Outcome("OK", dirty))
            batch.write(session)
            if any(o.dirty for o in outcomes):
                self.db.wake(session)
        return outcomes

    def _unsubscribing(self, subscription_id: str, delivery: inbox.Delivery | None) -> None:
        log.info(
            "unsubscribing",
            extra={
                "subscription": subscription_id[:16],
                "known": delivery is not None,
                "operator": None if delivery is None else delivery.operator_id,
                "mailbox": None if delivery is None else delivery.email,
            },
        )
        if self.metrics is not None:
            self.metrics.notification_refused("operator_disabled" if delivery else "unknown_subscription")

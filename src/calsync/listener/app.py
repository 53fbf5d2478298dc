"""The push listener: ``POST /ews/notifications/<secret>``. It records and answers; it never calls Exchange.

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
   :func:`~calsync.listener.notifications.parse_send_notification` refuses anything that is not a safe
   SendNotification (DTDs and entities are refused by a byte scan, before lxml). A parsed body whose ItemId or
   FolderId is longer than the store keeps (:data:`MAX_ID_CHARS`) is refused (400) too: no real Exchange id
   is that long, and storing it would fail.
4. **Subscriptions**: a body is stored only when *every* notification in it belongs to a subscription we hold for
   an enabled operator. Otherwise nothing of it is stored and the answer is Unsubscribe (a real push carries one
   subscription; a body mixing ours with others is not Exchange's).

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

import hmac
import ipaddress
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Literal

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from calsync.store import inbox
from calsync.store.db import Database

from .notifications import (
    MAX_BODY_BYTES,
    RESULT_CONTENT_TYPE,
    Notification,
    NotificationRejected,
    parse_send_notification,
    result_envelope,
)

log = logging.getLogger("calsync.listener")

PATH = "/ews/notifications/{secret}"

REFUSALS_PER_SECOND = 10.0  # refused requests per second one address may make before being answered 429
REFUSAL_BURST = 20  # ...after a burst of this many
MAX_CLIENTS = 10_000  # addresses the limiter remembers
MAX_ID_CHARS = 512  # the store's width for ItemId/FolderId (notifications.item_id); longer bodies are refused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


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


class Listener:
    def __init__(
        self,
        db: Database,
        secrets: Callable[[], list[str]],
        on_dirty: Callable[[], None],
        *,
        allowed_networks: Iterable[str | IPNetwork] = (),
        trust_forwarded_for: bool = False,
        limiter: RefusalLimiter | None = None,
    ) -> None:
        self.db = db
        self.secrets = secrets  # the current secret, and during a rotation the previous one too
        self.on_dirty = on_dirty
        self.allowed_networks: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n) for n in allowed_networks)
        self.trust_forwarded_for = trust_forwarded_for
        self.limiter = limiter if limiter is not None else RefusalLimiter()
        self.received = 0  # notifications answered (OK or Unsubscribe)
        self.refused = 0  # requests refused with their own 4xx (403, 404, 400, 413, 415)
        self.limited = 0  # requests refused with 429 because their address had used up its refusals

    def routes(self) -> list[Route]:
        return [Route(PATH, self.receive, methods=["POST"])]

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
            return PlainTextResponse(
                "too many refused requests",
                status_code=429,
                headers={"Retry-After": str(max(1, round(1 / self.limiter.rate)))},
            )
        self.refused += 1
        charged = self.limiter.charge(key)
        if charged == "emptied":
            log.warning(
                "refusing a flood: further refused requests answered 429",
                extra={"client": key, "status": status, "reason": reason},
            )
        elif charged == "ok" and status != 404:
            log.info("notification refused", extra={"client": key, "reason": reason, "status": status})
        return PlainTextResponse(reason, status_code=status)

    async def receive(self, request: Request) -> Response:
        peer = request.client.host if request.client is not None else None
        address = client_address(
            peer, request.headers.getlist("x-forwarded-for"), trust_forwarded_for=self.trust_forwarded_for
        )
        key = limiter_key(address, peer)
        if not self._allowed(address):
            return self._refuse(key, 403, "Forbidden")
        if not self._secret_ok(request.path_params["secret"]):
            return self._refuse(key, 404, "Not Found")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return self._refuse(key, 413, f"body larger than {MAX_BODY_BYTES} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                return self._refuse(key, 413, f"body larger than {MAX_BODY_BYTES} bytes")
        try:
            notes = parse_send_notification(bytes(body), request.headers.get("content-type"))
        except NotificationRejected as exc:
            return self._refuse(key, exc.status, exc.reason)
        if any(len(e.item_id or e.folder_id or "") > MAX_ID_CHARS for note in notes for e in note.events):
            return self._refuse(key, 400, f"an ItemId or FolderId is longer than {MAX_ID_CHARS} characters")
        status, dirty = await run_in_threadpool(self.record, notes)
        self.received += 1
        if dirty:
            self.on_dirty()
        return Response(result_envelope(status), media_type=RESULT_CONTENT_TYPE)

    def record(self, notes: list[Notification]) -> tuple[Literal["OK", "Unsubscribe"], bool]:
        """Store the notifications; returns the SubscriptionStatus to answer and whether a mailbox got dirty."""
        dirty = False
        with self.db.transaction() as session:
            deliveries: list[inbox.Delivery] = []
            for note in notes:  # every notification must be ours before anything of the body is stored
                delivery = inbox.lookup(session, note.subscription_id)
                if delivery is None or not delivery.enabled:
                    log.info(
                        "unsubscribing",
                        extra={"subscription": note.subscription_id[:16], "known": delivery is not None},
                    )
                    return "Unsubscribe", False
                deliveries.append(delivery)
            for note, delivery in zip(notes, deliveries, strict=True):
                events = [
                    inbox.InboxEvent(e.kind, e.item_id or e.folder_id, e.watermark)
                    for e in note.events
                    if e.kind != "StatusEvent"
                ]
                if inbox.record(session, delivery.operator_id, note.subscription_id, events, note.last_watermark):
                    dirty = True
            if dirty:
                self.db.wake(session)
        return "OK", dirty

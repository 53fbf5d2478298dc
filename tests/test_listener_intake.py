"""The listener's intake: group commit by one writer thread, on SQLite and PostgreSQL.

What is pinned:

* :class:`GroupWriter` (no database): what queues while a group is being stored becomes the next group (at most
  ``max_group``); each item gets its own result or its own error; a store that fails fails its group only; the
  thread ends when idle (calling ``on_idle``) and starts again on the next item;
* a group is one transaction with the end state of storing its bodies one by one (rows, counts, watermark,
  ``dirty_gen``), and each body is decided on its own (OK, or Unsubscribe with nothing of it stored);
* a push that cannot be stored fails alone: the others of its group are stored once and answered OK, it is stored
  not at all and answered 500; a group whose transaction fails is stored again body by body, without duplicates;
* over real HTTP, many concurrent pushes are all stored and acknowledged, in fewer transactions than pushes, and
  every request is answered only after its transaction committed;
* the writer's own connection: released when the writer goes idle, and a connection that died meanwhile costs no
  push (the group is stored again on a connection from the pool).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError

from calsync.listener.app import GroupWriter, Outcome
from calsync.listener.protocol import Notification
from calsync.runtime import Runtime
from calsync.settings import load_settings
from calsync.sources.ews.notifications import parse_send_notification
from calsync.sources.memory import MemorySource
from calsync.store import inbox, operators, subscriptions
from calsync.store.tables import MailboxWork, NotificationRow, SubscriptionRow

from .test_listener_app import clean_environment, serve, subscription_status

SECRET = "i" * 32
XML = "text/xml; charset=utf-8"
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"
ENABLED = ["ann", "cyd", "dan", "eve", "fay"]
UNKNOWN_SUB = "FwB1bmtub3duLWludGFrZS1zdWJzY3JpcHRpb24="


def sub_id(name: str) -> str:
    return f"FwB{name}LWludGFrZS1zdWJzY3JpcHRpb24="


def push(subscription: str, n: int, *, events: int = 1) -> bytes:
    """A SendNotification for ``subscription``: ``events`` CreatedEvents (items ``item-<n>-<i>``, watermarks
    ``wm-<n>-<i>``), or a StatusEvent (heartbeat, watermark ``wm-<n>-hb``) when ``events`` is 0."""
    if events:
        body = "".join(
            f"<t:CreatedEvent><t:Watermark>wm-{n}-{i}</t:Watermark><t:TimeStamp>2026-11-27T10:00:00Z</t:TimeStamp>"
            f'<t:ItemId Id="item-{n}-{i}" ChangeKey="ck"/><t:ParentFolderId Id="calendar" ChangeKey="ck"/>'
            "</t:CreatedEvent>"
            for i in range(events)
        )
    else:
        body = f"<t:StatusEvent><t:Watermark>wm-{n}-hb</t:Watermark></t:StatusEvent>"
    return (
        f'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{SOAP}" xmlns:m="{M}" xmlns:t="{T}">'
        "<soap:Body><m:SendNotification><m:ResponseMessages>"
        '<m:SendNotificationResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>'
        f"<m:Notification><t:SubscriptionId>{subscription}</t:SubscriptionId>"
        f"<t:PreviousWatermark>wm-{n}-prev</t:PreviousWatermark><t:MoreEvents>false</t:MoreEvents>{body}"
        "</m:Notification></m:SendNotificationResponseMessage></m:ResponseMessages></m:SendNotification>"
        "</soap:Body></soap:Envelope>"
    ).encode()


def parsed(subscription: str, n: int, *, events: int = 1) -> list[Notification]:
    return parse_send_notification(push(subscription, n, events=events), XML)


# --- GroupWriter, without a database -------------------------------------------------------------------------------


class Gate:
    """A store for GroupWriter that records its groups; the first group waits until :meth:`open` (so that the
    items submitted meanwhile queue up), and ``fail`` decides per item what to answer instead of the item."""

    def __init__(self, fail: Callable[[int], BaseException | None] = lambda item: None) -> None:
        self.groups: list[list[int]] = []
        self.entered = threading.Event()
        self._open = threading.Event()
        self.fail = fail

    def open(self) -> None:
        self._open.set()

    def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.groups.append(list(items))
        self.entered.set()
        assert self._open.wait(10), "the gate was never opened"
        return [self.fail(i) or i * 10 for i in items]


async def submit_all(
    writer: GroupWriter[int, int], gate: Gate, items: list[int], *, queued: int | None = None
) -> list[int | BaseException]:
    """Submit item 0, wait until it is being stored, submit the rest (which queue up), then open the gate."""
    first = asyncio.ensure_future(writer.submit(items[0]))
    assert await asyncio.to_thread(gate.entered.wait, 10)
    rest = [asyncio.ensure_future(writer.submit(i)) for i in items[1:]]
    await asyncio.sleep(0)  # every submit has queued its item
    gate.open()
    return await asyncio.wait_for(asyncio.gather(first, *rest, return_exceptions=True), 10)


def test_what_queues_while_a_group_is_stored_becomes_the_next_group() -> None:
    gate = Gate()
    writer: GroupWriter[int, int] = GroupWriter(gate)
    results = asyncio.run(submit_all(writer, gate, list(range(10))))
    assert results == [i * 10 for i in range(10)]
    assert gate.groups == [[0], list(range(1, 10))]
    assert (writer.groups, writer.items) == (2, 10)
    writer.close()


def test_groups_are_at_most_max_group() -> None:
    gate = Gate()
    writer: GroupWriter[int, int] = GroupWriter(gate, max_group=3)
    assert asyncio.run(submit_all(writer, gate, list(range(8)))) == [i * 10 for i in range(8)]
    assert gate.groups == [[0], [1, 2, 3], [4, 5, 6], [7]]
    writer.close()


def test_each_item_gets_its_own_error() -> None:
    gate = Gate(fail=lambda i: ValueError(f"item {i}") if i % 3 == 1 else None)
    writer: GroupWriter[int, int] = GroupWriter(gate)
    results = asyncio.run(submit_all(writer, gate, list(range(6))))
    assert [str(r) if isinstance(r, BaseException) else r for r in results] == [0, "item 1", 20, 30, "item 4", 50]
    writer.close()


def test_a_store_that_fails_fails_its_group_only() -> None:
    calls: list[list[int]] = []

    def store(items: list[int]) -> list[int | BaseException]:
        calls.append(items)
        if 13 in items:
            raise RuntimeError("the database is gone")
        if 14 in items:
            return []  # a wrong number of results is an error for every item of the group
        return [i for i in items]

    writer: GroupWriter[int, int] = GroupWriter(store)

    async def one(i: int) -> int | BaseException:
        try:
            return await writer.submit(i)
        except Exception as exc:
            return exc

    async def sequence() -> list[int | BaseException]:
        return [await one(i) for i in (12, 13, 14, 15)]

    results = asyncio.run(sequence())
    assert results[0] == 12 and results[3] == 15
    assert isinstance(results[1], RuntimeError) and "gone" in str(results[1])
    assert isinstance(results[2], RuntimeError) and "0 results for a group of 1" in str(results[2])
    assert calls == [[12], [13], [14], [15]]
    writer.close()


def test_the_thread_ends_when_idle_and_starts_again() -> None:
    idled: list[str] = []
    writer: GroupWriter[int, int] = GroupWriter(
        lambda items: items, idle_seconds=0.05, on_idle=lambda: idled.append(threading.current_thread().name)
    )
    assert asyncio.run(writer.submit(1)) == 1
    deadline = time.monotonic() + 10
    while not idled:
        assert time.monotonic() < deadline, "the writer did not end"
        time.sleep(0.01)
    assert idled == [writer.name]  # called in the writer thread, as it ends
    assert asyncio.run(writer.submit(2)) == 2  # a new thread
    writer.close()
    assert len(idled) == 2
    with pytest.raises(ValueError):
        GroupWriter(lambda items: items, max_group=0)


# --- a site: operators with subscriptions, the runtime's listener --------------------------------------------------


@dataclass
class Site:
    runtime: Runtime
    ids: dict[str, int]  # operator name -> id
    woken: list[str]  # the thread each on_dirty call came from
    heard_at: datetime

    @property
    def db(self) -> Any:
        return self.runtime.db

    @property
    def listener(self) -> Any:
        return self.runtime.listener

    def rows(self) -> list[tuple[int, str, str | None, str | None]]:
        with self.db.read() as s:
            found = s.execute(
                select(
                    NotificationRow.operator_id,
                    NotificationRow.kind,
                    NotificationRow.item_id,
                    NotificationRow.watermark,
                ).order_by(NotificationRow.id)
            ).all()
        return [(r[0], r[1], r[2], r[3]) for r in found]

    def items(self) -> list[str]:
        """The item ids stored, sorted."""
        return sorted(str(item) for _, _, item, _ in self.rows())

    def subscription(self, name: str) -> tuple[int, int, str | None, datetime]:
        with self.db.read() as s:
            row = s.scalar(select(SubscriptionRow).where(SubscriptionRow.subscription_id == sub_id(name)))
            assert row is not None
            return row.events, row.heartbeats, row.watermark, row.last_heard_at

    def dirty_gen(self, name: str) -> int:
        with self.db.read() as s:
            row = s.get(MailboxWork, self.ids[name])
            assert row is not None
            return row.dirty_gen

    def state(self) -> tuple[Any, ...]:
        """Everything a push can change, without the times."""
        return (
            self.rows(),
            {n: self.subscription(n)[:3] for n in self.ids},
            {n: self.dirty_gen(n) for n in self.ids},
        )


@pytest.fixture
def site(database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Site]:
    clean_environment(monkeypatch, tmp_path)
    settings = load_settings(database_url=database_url, listener_secret=SECRET, listener_url="http://127.0.0.1:1")
    runtime = Runtime(settings, source=MemorySource(), threads=1)
    runtime.prepare()
    heard_at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    ids: dict[str, int] = {}
    with runtime.db.transaction() as s:
        for name in [*ENABLED, "bob"]:
            op = operators.add(s, f"{name}@example.com", name.title(), enabled=name != "bob")
            s.flush()
            subscriptions.save(s, op.id, sub_id(name), "wm-0", 30, "http://127.0.0.1:1/x", now=heard_at)
            ids[name] = op.id
    woken: list[str] = []
    runtime.listener.on_dirty = lambda: woken.append(threading.current_thread().name)
    yield Site(runtime, ids, woken, heard_at)
    runtime.listener.close()
    runtime.close()


# --- a group: one transaction, the end state of one by one ---------------------------------------------------------


def test_a_group_has_the_end_state_of_storing_its_pushes_one_by_one(site: Site) -> None:
    bodies = [
        parsed(sub_id("ann"), 1, events=2),
        parsed(sub_id("cyd"), 2),
        parsed(sub_id("ann"), 3, events=0),  # a heartbeat: heard, not dirty
        parsed(sub_id("ann"), 4),
        parsed(sub_id("dan"), 5, events=0),
    ]
    outcomes = site.listener.record_group(bodies)
    assert outcomes == [Outcome("OK", True), Outcome("OK", True), Outcome("OK", False), Outcome("OK", True),
                        Outcome("OK", False)]  # fmt: skip
    grouped = site.state()

    # The same bodies, one transaction each (Listener.record), on a fresh copy of the subscriptions' counters.
    with site.db.transaction() as s:
        s.execute(NotificationRow.__table__.delete())
        s.execute(SubscriptionRow.__table__.update().values(events=0, heartbeats=0, watermark="wm-0"))
        s.execute(MailboxWork.__table__.update().values(dirty_gen=0))
    for notes in bodies:
        site.listener.record(notes)
    one_by_one = site.state()
    assert grouped == one_by_one
    rows, subs, gens = grouped
    a, c = site.ids["ann"], site.ids["cyd"]
    assert rows == [
        (a, "CreatedEvent", "item-1-0", "wm-1-0"),
        (a, "CreatedEvent", "item-1-1", "wm-1-1"),
        (c, "CreatedEvent", "item-2-0", "wm-2-0"),
        (a, "CreatedEvent", "item-4-0", "wm-4-0"),
    ]
    assert subs["ann"] == (3, 1, "wm-4-0") and subs["cyd"] == (1, 0, "wm-2-0") and subs["dan"] == (0, 1, "wm-5-hb")
    assert gens == {"ann": 2, "cyd": 1, "dan": 0, "eve": 0, "fay": 0, "bob": 0}  # one generation per dirty push
    assert site.subscription("dan")[3] > site.heard_at


def test_each_body_of_a_group_is_decided_on_its_own(site: Site) -> None:
    outcomes = site.listener.record_group(
        [
            parsed(sub_id("ann"), 1),
            parsed(UNKNOWN_SUB, 2),
            parsed(sub_id("bob"), 3),  # bob is not enabled
            parsed(sub_id("cyd"), 4, events=0),
        ]
    )
    assert [o.status for o in outcomes] == ["OK", "Unsubscribe", "Unsubscribe", "OK"]
    assert outcomes[1].stranger == (UNKNOWN_SUB, None)
    assert outcomes[2].stranger is not None and outcomes[2].stranger[1] == inbox.Delivery(
        site.ids["bob"], "bob@example.com", False
    )
    assert site.rows() == [(site.ids["ann"], "CreatedEvent", "item-1-0", "wm-1-0")]
    assert site.subscription("bob")[:3] == (0, 0, "wm-0")  # not even heard
    assert site.subscription("cyd")[:3] == (0, 1, "wm-4-hb")
    assert site.dirty_gen("bob") == 0


# --- failures ------------------------------------------------------------------------------------------------------


def _db_error() -> OperationalError:
    return OperationalError("INSERT INTO notifications ...", {}, Exception("disk I/O error"))


def test_a_push_that_cannot_be_stored_fails_alone(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    real_record = inbox.record

    def record(session: Any, operator_id: int, subscription_id: str, *args: Any, **kwargs: Any) -> int:
        if subscription_id == sub_id("cyd"):
            raise _db_error()
        return real_record(session, operator_id, subscription_id, *args, **kwargs)

    monkeypatch.setattr(inbox, "record", record)
    outcomes = site.listener.record_group(
        [parsed(sub_id("ann"), 1), parsed(sub_id("cyd"), 2), parsed(sub_id("dan"), 3)]
    )
    assert outcomes[0] == Outcome("OK", True) and outcomes[2] == Outcome("OK", True)
    assert isinstance(outcomes[1], OperationalError)
    assert site.rows() == [
        (site.ids["ann"], "CreatedEvent", "item-1-0", "wm-1-0"),
        (site.ids["dan"], "CreatedEvent", "item-3-0", "wm-3-0"),
    ]
    assert site.subscription("cyd")[:3] == (0, 0, "wm-0") and site.subscription("cyd")[3] == site.heard_at
    assert (site.dirty_gen("ann"), site.dirty_gen("cyd"), site.dirty_gen("dan")) == (1, 0, 1)


def test_a_group_whose_transaction_fails_is_stored_again_push_by_push(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = inbox.Batch.write
    failed: list[int] = []

    def write(self: inbox.Batch, session: Any) -> None:
        real_write(self, session)  # written, then the transaction fails (as a failed COMMIT would)
        if len(self.heard) > 1:
            failed.append(len(self.heard))
            raise _db_error()

    monkeypatch.setattr(inbox.Batch, "write", write)
    outcomes = site.listener.record_group([parsed(sub_id(n), i) for i, n in enumerate(ENABLED)])
    assert failed == [len(ENABLED)]
    assert outcomes == [Outcome("OK", True)] * len(ENABLED)
    assert site.items() == sorted(f"item-{i}-0" for i in range(len(ENABLED)))
    assert all(site.dirty_gen(n) == 1 and site.subscription(n)[0] == 1 for n in ENABLED)  # no duplicates


def test_a_dead_writer_connection_costs_no_push(site: Site) -> None:
    assert site.listener.record_group([parsed(sub_id("ann"), 1)]) == [Outcome("OK", True)]
    held = site.listener._connection
    assert held is not None  # the writer keeps its connection between groups
    if site.db.is_postgres:
        pid = held.connection.driver_connection.info.backend_pid
        with site.db.engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    else:
        held.connection.driver_connection.close()  # as good as dead: every statement on it fails
    assert site.listener.record_group([parsed(sub_id("cyd"), 2), parsed(sub_id("dan"), 3)]) == [
        Outcome("OK", True),
        Outcome("OK", True),
    ]
    assert [item for _, _, item, _ in site.rows()] == ["item-1-0", "item-2-0", "item-3-0"]
    assert site.listener.record_group([parsed(sub_id("eve"), 4)]) == [Outcome("OK", True)]  # a new own connection
    assert site.listener._connection is not None and site.listener._connection is not held


def test_the_writer_gives_its_connection_back_when_idle(site: Site) -> None:
    site.listener.writer.idle_seconds = 0.05

    async def one() -> Outcome:
        return await site.listener.writer.submit(parsed(sub_id("ann"), 1))

    assert asyncio.run(one()) == Outcome("OK", True)
    deadline = time.monotonic() + 10
    while site.listener._connection is not None:
        assert time.monotonic() < deadline, "the writer kept its connection"
        time.sleep(0.01)
    assert asyncio.run(one()) == Outcome("OK", True)  # and takes one again
    assert site.dirty_gen("ann") == 2


# --- over HTTP -----------------------------------------------------------------------------------------------------


def post_all(base: str, bodies: list[bytes], threads: int) -> list[httpx.Response]:
    """POST every body, ``threads`` at a time, each thread on its own keep-alive connection."""
    local = threading.local()
    clients: list[httpx.Client] = []

    def send(body: bytes) -> httpx.Response:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=30)
            clients.append(local.client)
        return local.client.post(f"{base}/ews/notifications/{SECRET}", content=body, headers={"Content-Type": XML})

    try:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(send, bodies))
    finally:
        for client in clients:
            client.close()


def test_many_concurrent_pushes_are_all_stored_and_acknowledged(site: Site) -> None:
    total = 300
    names = [ENABLED[i % len(ENABLED)] for i in range(total)]
    with serve(site.runtime.app(run_jobs=False)) as base:
        responses = post_all(base, [push(sub_id(n), i) for i, n in enumerate(names)], threads=16)
    assert [subscription_status(r) for r in responses] == ["OK"] * total
    rows = site.rows()
    assert sorted(str(item) for _, _, item, _ in rows) == sorted(f"item-{i}-0" for i in range(total))
    for name in ENABLED:
        pushes = names.count(name)
        assert site.subscription(name)[:2] == (pushes, 0)
        assert site.dirty_gen(name) == pushes
        assert sum(1 for op, *_ in rows if op == site.ids[name]) == pushes
    assert len(site.woken) == total
    writer = site.listener.writer
    assert writer.items == total and 1 <= writer.groups <= total
    assert site.listener.received == total


def test_pushes_that_arrive_during_a_commit_are_stored_together_and_answered_after_it(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first push's transaction is held open; the pushes sent meanwhile all wait, unanswered, then go into
    the next transaction together. A failing push among them gets a 500 and nothing stored; the others OK."""
    entered, release = threading.Event(), threading.Event()
    real_lookup, real_record = inbox.lookup_many, inbox.record
    groups: list[int] = []

    def lookup_many(session: Any, ids: Any) -> dict[str, inbox.Delivery]:
        found = real_lookup(session, ids)
        groups.append(len(found))
        if len(groups) == 1:
            entered.set()
            assert release.wait(20), "never released"
        return found

    def record(session: Any, operator_id: int, subscription_id: str, *args: Any, **kwargs: Any) -> int:
        if subscription_id == sub_id("fay"):
            raise _db_error()
        return real_record(session, operator_id, subscription_id, *args, **kwargs)

    monkeypatch.setattr(inbox, "lookup_many", lookup_many)
    monkeypatch.setattr(inbox, "record", record)
    late = ["cyd", "dan", "eve", "fay", "bob"]
    with serve(site.runtime.app(run_jobs=False)) as base, ThreadPoolExecutor(len(late) + 1) as pool:
        first = pool.submit(post_all, base, [push(sub_id("ann"), 0)], 1)
        assert entered.wait(20)
        others = [pool.submit(post_all, base, [push(sub_id(n), i + 1)], 1) for i, n in enumerate(late)]
        deadline = time.monotonic() + 20
        while site.listener.writer._queue.qsize() < len(late):  # all queued behind the open transaction
            assert time.monotonic() < deadline, "the pushes did not queue"
            time.sleep(0.01)
        assert not first.done() and not any(f.done() for f in others)  # nobody answered before its commit
        assert site.rows() == []  # and nothing committed yet
        release.set()
        answers = [first.result(20)[0], *(f.result(20)[0] for f in others)]
    assert [subscription_status(a) for a in answers[:4]] == ["OK"] * 4
    assert answers[4].status_code == 500 and b"SubscriptionStatus" not in answers[4].content  # fay: not stored
    assert subscription_status(answers[5]) == "Unsubscribe"  # bob: not enabled
    assert site.items() == ["item-0-0", "item-1-0", "item-2-0", "item-3-0"]
    assert site.subscription("fay")[:3] == (0, 0, "wm-0") and site.dirty_gen("fay") == 0
    # One transaction for the first push, one for the five late ones together (it failed because of fay), then
    # each of the five on its own.
    assert groups[:2] == [1, len(late)] and len(groups) == 2 + len(late)
    assert len(site.woken) == 4


def test_a_group_wakes_other_processes(site: Site) -> None:
    if not site.db.is_postgres:
        pytest.skip("PostgreSQL NOTIFY; SQLite has one process, woken directly")
    import psycopg

    dsn = site.db.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("LISTEN calsync_wake")
        site.listener.record_group([parsed(sub_id(n), i) for i, n in enumerate(ENABLED)])
        heard = list(conn.notifies(timeout=5, stop_after=1))
        assert [n.channel for n in heard] == ["calsync_wake"]
        with site.db.read() as s:
            assert s.scalar(select(func.count()).select_from(NotificationRow)) == len(ENABLED)

"""The push listener over HTTP (``POST /ews/notifications/<secret>``), on SQLite and PostgreSQL.

Invariant 2: the listener answers OK only after the notification is stored (and the mailbox marked dirty) in one
transaction; it answers Unsubscribe for a subscription it does not know or an operator no longer enabled.
Invariant 7: hostile or broken bodies, unknown ids and wrong secrets get a clear 4xx and change nothing.
The listener never calls Exchange: the runtime here gets a source that fails the test if it is touched.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from lxml import etree
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette

from calsync.emulator import Emulator
from calsync.jobs.process_notifications import NotificationProcessor
from calsync.listener.protocol import MAX_BODY_BYTES
from calsync.runtime import Runtime
from calsync.settings import CLASSIC_NAMES, load_settings
from calsync.sources.memory import MemorySource
from calsync.store import inbox, operators, subscriptions, work
from calsync.store.status import operator_statuses
from calsync.store.tables import MailboxWork, NotificationRow, SubscriptionRow

from .conftest import SAMPLES_DIR, ews_account

with warnings.catch_warnings():  # starlette 1.x nudges towards httpx2; httpx is what is installed
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

SECRET = "x" * 32
ANN, BOB = "ann@example.com", "bob@example.com"
ANN_SUB = "FwBhbm4tc3Vic2NyaXB0aW9uLWNhbHN5bmMtdGVzdHM="  # base64, like Exchange's ids
BOB_SUB = "FwBib2Itc3Vic2NyaXB0aW9uLWNhbHN5bmMtdGVzdHM="
UNKNOWN_SUB = "FwB1bmtub3duLXN1YnNjcmlwdGlvbi1jYWxzeW5jLXQ="
STATUS_SAMPLE = "exchangelib-sendnotification-statusevent.xml"
MODIFIED_SAMPLE = "o365-capture-sendnotification-modifiedevent.fixed.xml"
XML = "text/xml; charset=utf-8"
M_NS = "http://schemas.microsoft.com/exchange/services/2006/messages"
SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"


def sample(name: str, subscription_id: str = ANN_SUB) -> bytes:
    """A real push body from the shared samples, addressed to ``subscription_id``."""
    text = (SAMPLES_DIR / name).read_text(encoding="utf-8")
    text, count = re.subn(
        r"<t:SubscriptionId>[^<]*</t:SubscriptionId>", f"<t:SubscriptionId>{subscription_id}</t:SubscriptionId>", text
    )
    assert count == 1
    return text.encode()


def subscription_status(response: httpx.Response) -> str:
    """The SubscriptionStatus of a SendNotificationResult answer (the response must be one)."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].split(";")[0].strip() == "text/xml"
    root = etree.fromstring(response.content)
    assert etree.QName(root) == etree.QName(SOAP_NS, "Envelope")
    status = root.find(f"{{{SOAP_NS}}}Body/{{{M_NS}}}SendNotificationResult/{{{M_NS}}}SubscriptionStatus")
    assert status is not None, response.text
    return str(status.text)


@dataclass(frozen=True)
class Snapshot:
    """Everything a push can change in the store."""

    notifications: tuple[tuple[int, str, str, str | None, str | None], ...]
    work: tuple[tuple[int, int, int], ...]
    subscriptions: tuple[tuple[str, datetime, int, int, str | None], ...]


@dataclass
class Harness:
    runtime: Runtime
    source: MemorySource  # the listener never calls Exchange: its calls stay empty
    wakes: list[str]
    ann: int
    bob: int
    heard_at: datetime  # last_heard_at the subscriptions were saved with
    client: TestClient | None = None

    @property
    def db(self) -> Any:
        return self.runtime.db

    def post(self, body: Any, content_type: str | None = XML, secret: str = SECRET, **kwargs: Any) -> httpx.Response:
        assert self.client is not None
        headers = dict(kwargs.pop("headers", {}))
        if content_type is not None:
            headers["Content-Type"] = content_type
        return self.client.post(f"/ews/notifications/{secret}", content=body, headers=headers, **kwargs)

    def snapshot(self) -> Snapshot:
        with self.db.read() as s:
            notes = s.execute(
                select(
                    NotificationRow.operator_id,
                    NotificationRow.subscription_id,
                    NotificationRow.kind,
                    NotificationRow.item_id,
                    NotificationRow.watermark,
                ).order_by(NotificationRow.id)
            ).all()
            works = s.execute(
                select(MailboxWork.operator_id, MailboxWork.dirty_gen, MailboxWork.done_gen).order_by(
                    MailboxWork.operator_id
                )
            ).all()
            subs = s.execute(
                select(
                    SubscriptionRow.subscription_id,
                    SubscriptionRow.last_heard_at,
                    SubscriptionRow.heartbeats,
                    SubscriptionRow.events,
                    SubscriptionRow.watermark,
                ).order_by(SubscriptionRow.subscription_id)
            ).all()
        return Snapshot(
            tuple(tuple(r) for r in notes),
            tuple(tuple(r) for r in works),
            tuple(tuple(r) for r in subs),
        )

    def notification_count(self) -> int:
        with self.db.read() as s:
            return int(s.scalar(select(func.count()).select_from(NotificationRow)) or 0)

    def pending(self, operator_id: int) -> int:
        with self.db.read() as s:
            return inbox.pending_count(s, operator_id)

    def subscription(self, subscription_id: str) -> SubscriptionRow:
        with self.db.read() as s:
            row = s.scalar(select(SubscriptionRow).where(SubscriptionRow.subscription_id == subscription_id))
            assert row is not None
            return row

    def work(self, operator_id: int) -> MailboxWork:
        with self.db.read() as s:
            row = work.get(s, operator_id)
            assert row is not None
            return row


def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No CALSYNC_* or classic variable from the shell, no calsync.toml from the working directory."""
    classic = {name.lower() for name in CLASSIC_NAMES.values()}
    for key in list(os.environ):
        if key.upper().startswith("CALSYNC_") or key.lower() in classic:
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def harness(database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Harness]:
    clean_environment(monkeypatch, tmp_path)  # after database_url: it may read CALSYNC_TEST_POSTGRES
    wakes: list[str] = []
    real_wake = NotificationProcessor.wake

    def spy_wake(self: NotificationProcessor) -> None:
        wakes.append(threading.current_thread().name)
        real_wake(self)

    # Patched on the class before the Runtime exists: the listener keeps the bound method it was given.
    monkeypatch.setattr(NotificationProcessor, "wake", spy_wake)
    settings = load_settings(database_url=database_url, listener_secret=SECRET, listener_url="http://127.0.0.1:1")
    source = MemorySource()
    runtime = Runtime(settings, source=source, threads=1)
    runtime.prepare()
    heard_at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    with runtime.db.transaction() as s:
        ann = operators.add(s, ANN, "Ann", enabled=True)
        bob = operators.add(s, BOB, "Bob", enabled=False)
        subscriptions.save(s, ann.id, ANN_SUB, "AAAAA=", 30, "http://127.0.0.1:1/ews/notifications/x", now=heard_at)
        subscriptions.save(s, bob.id, BOB_SUB, "AAAAA=", 30, "http://127.0.0.1:1/ews/notifications/x", now=heard_at)
        ann_id, bob_id = ann.id, bob.id
    h = Harness(runtime, source, wakes, ann_id, bob_id, heard_at)
    try:
        yield h
    finally:
        runtime.close()
    assert source.calls == []


@pytest.fixture
def listener(harness: Harness) -> Iterator[Harness]:
    """The harness with a TestClient on the runtime's app (jobs off). Server errors become 500 answers."""
    with TestClient(harness.runtime.app(run_jobs=False), raise_server_exceptions=False) as client:
        harness.client = client
        yield harness
        harness.client = None


# --- the happy path ----------------------------------------------------------------------------------------------


def test_push_with_events_is_stored_then_answered_ok(listener: Harness) -> None:
    before = listener.snapshot()
    response = listener.post(sample(MODIFIED_SAMPLE))
    assert subscription_status(response) == "OK"
    assert response.headers["content-type"] == "text/xml; charset=utf-8"

    after = listener.snapshot()
    item_id = re.search(rb'<t:ItemId Id="([^"]+)"', sample(MODIFIED_SAMPLE))
    folder_id = re.search(rb'<t:FolderId Id="([^"]+)"', sample(MODIFIED_SAMPLE))
    assert item_id is not None and folder_id is not None
    first, last = "AQAAAExY/dNdjDVKjtBVHKR5IOsoIukhAAAAAAE=", "AQAAAExY/dNdjDVKjtBVHKR5IOstIukhAAAAAAE="
    assert after.notifications == (
        (listener.ann, ANN_SUB, "ModifiedEvent", item_id.group(1).decode(), first),
        (listener.ann, ANN_SUB, "ModifiedEvent", folder_id.group(1).decode(), last),
    )
    assert listener.pending(listener.ann) == 2
    assert listener.pending(listener.bob) == 0
    sub = listener.subscription(ANN_SUB)
    assert sub.events == 2 and sub.heartbeats == 0
    assert sub.watermark == last  # the last event's watermark
    assert sub.last_heard_at > listener.heard_at
    # The mailbox is dirty: one pass is due, and it can be claimed.
    ann_work = listener.work(listener.ann)
    assert ann_work.dirty_gen == 1 and ann_work.done_gen == 0
    assert [w for w in after.work if w[0] == listener.bob] == [w for w in before.work if w[0] == listener.bob]
    with listener.db.transaction() as s:
        assert work.pending(s) == 1
        claim = work.claim(s, "test", 60)
    assert claim is not None and claim.operator_id == listener.ann and claim.email == ANN
    # The processor was woken (once, after the commit).
    assert len(listener.wakes) == 1
    assert listener.runtime.listener.received == 1 and listener.runtime.listener.refused == 0


def test_status_event_only_records_the_heartbeat(listener: Harness) -> None:
    before = listener.snapshot()
    response = listener.post(sample(STATUS_SAMPLE))
    assert subscription_status(response) == "OK"
    sub = listener.subscription(ANN_SUB)
    assert sub.last_heard_at > listener.heard_at  # the heartbeat moved
    assert sub.heartbeats == 1 and sub.events == 0
    assert sub.watermark == "BBBBB="
    after = listener.snapshot()
    assert after.notifications == before.notifications == ()
    assert after.work == before.work  # not dirty
    with listener.db.read() as s:
        assert work.pending(s) == 0
    assert listener.wakes == []


@pytest.mark.parametrize("name", [STATUS_SAMPLE, MODIFIED_SAMPLE])
def test_unknown_subscription_is_told_to_unsubscribe(listener: Harness, name: str) -> None:
    before = listener.snapshot()
    assert subscription_status(listener.post(sample(name, UNKNOWN_SUB))) == "Unsubscribe"
    assert listener.snapshot() == before
    assert listener.wakes == []


@pytest.mark.parametrize("name", [STATUS_SAMPLE, MODIFIED_SAMPLE])
def test_disabled_operator_is_told_to_unsubscribe(listener: Harness, name: str) -> None:
    before = listener.snapshot()
    assert subscription_status(listener.post(sample(name, BOB_SUB))) == "Unsubscribe"
    assert listener.snapshot() == before  # not even bob's heartbeat moved
    assert listener.wakes == []
    # Disabling an operator who was enabled has the same effect on the next push.
    with listener.db.transaction() as s:
        operators.set_enabled(s, ANN, False)
    before = listener.snapshot()
    assert subscription_status(listener.post(sample(name, ANN_SUB))) == "Unsubscribe"
    assert listener.snapshot() == before
    assert listener.wakes == []


@pytest.mark.parametrize("secret", ["y" * 32, "x" * 31, "x" * 33, "X" * 32, "x" * 32 + "%2Fx", "%20" + "x" * 32])
def test_wrong_secret_is_not_found(listener: Harness, secret: str) -> None:
    before = listener.snapshot()
    response = listener.post(sample(MODIFIED_SAMPLE), secret=secret)
    assert response.status_code == 404
    assert b"SendNotificationResult" not in response.content
    assert listener.snapshot() == before
    assert listener.wakes == []


def test_no_secret_is_not_found(listener: Harness) -> None:
    assert listener.client is not None
    before = listener.snapshot()
    for path in ("/ews/notifications/", "/ews/notifications", f"/ews/notifications/{SECRET}/extra"):
        response = listener.client.post(path, content=sample(MODIFIED_SAMPLE), headers={"Content-Type": XML})
        assert response.status_code == 404, path
    assert listener.snapshot() == before


def test_only_post_stores_and_get_only_answers(listener: Harness) -> None:
    assert listener.client is not None
    before = listener.snapshot()
    for method in ("PUT", "DELETE"):
        response = listener.client.request(method, f"/ews/notifications/{SECRET}", content=sample(MODIFIED_SAMPLE))
        assert response.status_code == 405, method
        assert "POST" in response.headers.get("allow", "")
    # GET answers a person checking the URL (and calsync's own check), guarded like a push, storing nothing.
    looked = listener.client.get(f"/ews/notifications/{SECRET}")
    assert looked.status_code == 200 and "calsync listener" in looked.text
    assert "x-calsync-probe-answer" not in looked.headers
    assert listener.client.get("/ews/notifications/not-the-secret").status_code == 404
    probed = listener.client.get(f"/ews/notifications/{SECRET}", headers={"X-Calsync-Probe": "nonce-1"})
    expected = hmac.new(SECRET.encode(), b"nonce-1", hashlib.sha256).hexdigest()
    assert probed.headers["x-calsync-probe-answer"] == expected
    assert listener.snapshot() == before
    assert listener.wakes == []


# --- hostile and broken bodies (invariant 7) ---------------------------------------------------------------------

_BODY = sample(MODIFIED_SAMPLE).decode()
_ENVELOPE = _BODY[_BODY.index("<soap11:Envelope") :]


def _with_doctype(doctype: str, subscription_id: str = ANN_SUB) -> bytes:
    """The real push (SubscriptionId replaced) behind a DOCTYPE; ``&sid;`` stands for the SubscriptionId."""
    envelope = _ENVELOPE.replace(f"<t:SubscriptionId>{ANN_SUB}<", f"<t:SubscriptionId>{subscription_id}<")
    return f'<?xml version="1.0" encoding="utf-8"?>\n{doctype}\n{envelope}'.encode()


_LAUGHS = (
    '<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10))
    + "]>"
)

HOSTILE: list[tuple[str, Callable[[], bytes], str | None, int]] = [
    ("empty", lambda: b"", XML, 400),
    ("whitespace", lambda: b"  \r\n  ", XML, 400),
    ("not xml", lambda: b"hello, listener", XML, 400),
    ("truncated", lambda: sample(MODIFIED_SAMPLE)[: len(sample(MODIFIED_SAMPLE)) // 2], XML, 400),
    ("not soap", lambda: b'<?xml version="1.0"?><SendNotification/>', XML, 400),
    (
        "soap without SendNotification",
        lambda: f'<s:Envelope xmlns:s="{SOAP_NS}"><s:Body><x/></s:Body></s:Envelope>'.encode(),
        XML,
        400,
    ),
    ("two bodies", lambda: _ENVELOPE.replace("</soap11:Body>", "</soap11:Body><soap11:Body/>").encode(), XML, 400),
    ("utf-16", lambda: sample(MODIFIED_SAMPLE).decode().replace("utf-8", "utf-16").encode("utf-16"), XML, 400),
    ("latin-1 declaration", lambda: sample(MODIFIED_SAMPLE).replace(b'"utf-8"', b'"iso-8859-1"'), XML, 400),
    ("json content type", lambda: sample(MODIFIED_SAMPLE), "application/json", 415),
    ("text/plain", lambda: sample(MODIFIED_SAMPLE), "text/plain", 415),
    ("form content type", lambda: sample(MODIFIED_SAMPLE), "application/x-www-form-urlencoded", 415),
    ("utf-16 charset", lambda: sample(MODIFIED_SAMPLE), "text/xml; charset=utf-16", 415),
    # An internal entity that would expand to our real subscription id: refused, not expanded.
    ("internal entity", lambda: _with_doctype(f'<!DOCTYPE x [<!ENTITY sid "{ANN_SUB}">]>', "&sid;"), XML, 400),
    ("billion laughs", lambda: _with_doctype(_LAUGHS, "&lol9;"), XML, 400),
    (
        "external entity",
        lambda: _with_doctype('<!DOCTYPE x [<!ENTITY sid SYSTEM "file:///etc/passwd">]>', "&sid;"),
        XML,
        400,
    ),
    (
        "parameter entity",
        lambda: _with_doctype('<!DOCTYPE x [<!ENTITY % p SYSTEM "http://127.0.0.1:9/evil.dtd"> %p;]>'),
        XML,
        400,
    ),
    ("external dtd", lambda: _with_doctype('<!DOCTYPE x SYSTEM "file:///etc/passwd">'), XML, 400),
    ("doctype only", lambda: _with_doctype("<!DOCTYPE soap11:Envelope>"), XML, 400),
    (
        "xinclude",
        lambda: _ENVELOPE.replace(
            f"<t:SubscriptionId>{ANN_SUB}</t:SubscriptionId>",
            '<t:SubscriptionId><xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file:///etc/passwd"'
            ' parse="text"/></t:SubscriptionId>',
        ).encode(),
        XML,
        400,
    ),
    (
        "declared oversized",
        lambda: sample(MODIFIED_SAMPLE) + b"<!--" + b"x" * MAX_BODY_BYTES + b"-->",
        XML,
        413,
    ),
    ("oversized whitespace", lambda: sample(MODIFIED_SAMPLE) + b" " * MAX_BODY_BYTES, XML, 413),
]


@pytest.mark.parametrize(("body", "content_type", "status"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_or_broken_body_is_refused_and_nothing_stored(
    listener: Harness, body: Callable[[], bytes], content_type: str | None, status: int
) -> None:
    before = listener.snapshot()
    started = time.monotonic()
    response = listener.post(body(), content_type)
    assert time.monotonic() - started < 5  # nothing is expanded or fetched
    assert response.status_code == status, response.text
    assert b"SendNotificationResult" not in response.content
    assert b"root:" not in response.content  # never a byte of a local file
    assert len(response.content) < 500  # a short reason, never the body echoed back
    assert listener.snapshot() == before
    assert listener.notification_count() == 0
    assert listener.wakes == []
    assert listener.runtime.listener.refused == 1 and listener.runtime.listener.received == 0


def test_oversized_body_without_content_length_is_refused_while_streaming(listener: Harness) -> None:
    chunk = b" " * 65536

    def body() -> Iterator[bytes]:
        yield sample(MODIFIED_SAMPLE)
        for _ in range(MAX_BODY_BYTES // len(chunk) + 2):
            yield chunk

    before = listener.snapshot()
    response = listener.post(body())
    assert response.status_code == 413
    assert listener.snapshot() == before
    assert listener.wakes == []


def test_body_just_under_the_limit_is_accepted(listener: Harness) -> None:
    body = sample(MODIFIED_SAMPLE)
    body += b" " * (MAX_BODY_BYTES - len(body))
    assert len(body) == MAX_BODY_BYTES
    assert subscription_status(listener.post(body)) == "OK"
    assert listener.pending(listener.ann) == 2


def test_missing_content_type_is_read_as_xml(listener: Harness) -> None:
    assert subscription_status(listener.post(sample(MODIFIED_SAMPLE), content_type=None)) == "OK"
    assert listener.pending(listener.ann) == 2


def test_refused_body_does_not_block_the_next_good_one(listener: Harness) -> None:
    assert listener.post(_with_doctype(_LAUGHS, "&lol9;")).status_code == 400
    assert subscription_status(listener.post(sample(MODIFIED_SAMPLE))) == "OK"
    assert listener.pending(listener.ann) == 2
    assert len(listener.wakes) == 1


# --- invariant 2: OK only after the write -------------------------------------------------------------------------


def _db_error() -> OperationalError:
    return OperationalError("INSERT INTO notifications ...", {}, Exception("disk I/O error"))


@pytest.mark.parametrize("where", ["record", "after record", "wake"])
def test_database_failure_is_not_answered_ok_and_leaves_nothing(
    listener: Harness, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    failing = [True]
    real_record, real_wake = inbox.record, listener.db.wake

    def record(*args: Any, **kwargs: Any) -> int:
        if failing[0] and where == "record":
            raise _db_error()
        stored = real_record(*args, **kwargs)  # rows added, mailbox marked dirty...
        if failing[0] and where == "after record":
            raise _db_error()  # ...then the write fails
        return stored

    def wake(session: Any) -> None:
        real_wake(session)
        if failing[0] and where == "wake":
            raise _db_error()

    monkeypatch.setattr(inbox, "record", record)
    monkeypatch.setattr(listener.db, "wake", wake)
    before = listener.snapshot()
    response = listener.post(sample(MODIFIED_SAMPLE))
    assert response.status_code >= 500
    assert b"SendNotificationResult" not in response.content and b">OK<" not in response.content
    assert listener.snapshot() == before  # nothing half-written: no event, not dirty, no heartbeat
    assert listener.wakes == []
    assert listener.runtime.listener.received == 0

    # Exchange retries the same body; once the database works it is stored exactly once.
    failing[0] = False
    assert subscription_status(listener.post(sample(MODIFIED_SAMPLE))) == "OK"
    assert listener.pending(listener.ann) == 2
    assert listener.work(listener.ann).dirty_gen == 1
    assert len(listener.wakes) == 1


def test_heartbeat_write_failure_is_not_answered_ok(listener: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    def record(*args: Any, **kwargs: Any) -> int:
        raise _db_error()

    monkeypatch.setattr(inbox, "record", record)
    before = listener.snapshot()
    response = listener.post(sample(STATUS_SAMPLE))
    assert response.status_code >= 500
    assert b"SendNotificationResult" not in response.content
    assert listener.snapshot() == before


# --- duplicates ---------------------------------------------------------------------------------------------------


def test_duplicate_delivery_is_answered_ok_twice_and_gives_one_pass(listener: Harness) -> None:
    body = sample(MODIFIED_SAMPLE)
    assert subscription_status(listener.post(body)) == "OK"
    assert subscription_status(listener.post(body)) == "OK"
    ann_work = listener.work(listener.ann)
    assert ann_work.dirty_gen == 2 and ann_work.done_gen == 0  # bumped by each delivery
    assert len(listener.wakes) == 2
    with listener.db.transaction() as s:
        assert work.pending(s) == 1  # one mailbox due, however many deliveries
        claim = work.claim(s, "test", 60)
    assert claim is not None and claim.operator_id == listener.ann and claim.generation == 2
    with listener.db.transaction() as s:
        assert work.claim(s, "other", 60) is None  # the mailbox is held: no second pass
        work.finish(s, claim)
    with listener.db.transaction() as s:
        assert work.pending(s) == 0
        assert work.claim(s, "test", 60) is None  # the one pass covered both deliveries
        assert inbox.pending_count(s, listener.ann) == 0
        statuses = {st.email: st for st in operator_statuses(s)}
    assert not statuses[ANN].dirty and statuses[ANN].pending_notifications == 0


def test_push_during_a_pass_leaves_exactly_one_more_pass(listener: Harness) -> None:
    assert subscription_status(listener.post(sample(MODIFIED_SAMPLE))) == "OK"
    with listener.db.transaction() as s:
        claim = work.claim(s, "test", 60)
    assert claim is not None
    assert subscription_status(listener.post(sample(MODIFIED_SAMPLE))) == "OK"  # arrives while the pass runs
    with listener.db.transaction() as s:
        work.finish(s, claim)
    later = datetime.now(UTC) + work.FOLLOW_UP_HOLD  # the follow-up pass is held back a moment (bursts)
    with listener.db.transaction() as s:
        assert work.pending(s, now=later) == 1
        again = work.claim(s, "test", 60, now=later)
        assert again is not None
        assert inbox.pending_count(s, listener.ann) == 2  # the late delivery is not covered by the first pass
        work.finish(s, again)
    with listener.db.read() as s:
        assert work.pending(s) == 0
        assert inbox.pending_count(s, listener.ann) == 0


# --- real HTTP: uvicorn, pushed to by the emulator ------------------------------------------------------------


@contextmanager
def serve(app: Starlette) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on a free port; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False, timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="test-listener", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the listener did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_emulator_pushes_to_the_listener_over_http(harness: Harness, emulator: Emulator) -> None:
    with serve(harness.runtime.app(run_jobs=False)) as base:
        assert httpx.get(f"{base}/healthz", timeout=5).json() == {"ok": True}
        assert httpx.put(f"{base}/ews/notifications/{SECRET}", timeout=5).status_code == 405
        wrong = httpx.post(f"{base}/ews/notifications/{'y' * 32}", content=sample(MODIFIED_SAMPLE), timeout=5)
        assert wrong.status_code == 404

        callback_url = f"{base}/ews/notifications/{SECRET}"
        account = ews_account(emulator, ANN)
        try:
            sid, watermark = account.calendar.subscribe_to_push(callback_url, status_frequency=1)
            with harness.db.transaction() as s:
                subscriptions.save(s, harness.ann, sid, watermark, 1, callback_url)
            item = emulator.outlook(ANN).create({"subject": "pushed", "start": "2026-12-01T09:00:00Z"})

            def stored() -> bool:
                with harness.db.read() as s:
                    rows = s.scalars(select(NotificationRow).where(NotificationRow.operator_id == harness.ann)).all()
                return any(r.item_id == item.item_id for r in rows)

            wait_for(stored)
            with harness.db.read() as s:
                rows = s.scalars(select(NotificationRow).order_by(NotificationRow.id)).all()
                assert {r.subscription_id for r in rows} == {sid}
                assert [r.kind for r in rows][:1] == ["CreatedEvent"]
                assert work.pending(s) == 1
                sub = s.scalar(select(SubscriptionRow).where(SubscriptionRow.subscription_id == sid))
                assert sub is not None and sub.events == len(rows)
            wait_for(lambda: len(harness.wakes) >= 1)
            deliveries = [d for d in emulator.push.log if d.subscription_id == sid]
            assert deliveries and all(d.outcome == "ok" for d in deliveries)
            assert emulator.exchange.subscriptions[sid].state == "active"
        finally:
            account.protocol.close()

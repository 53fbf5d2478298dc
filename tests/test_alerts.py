"""Failures, incidents and the e-mails about them, on SQLite and PostgreSQL, through a real SMTP server
(aiosmtpd) started by each test: quiet retries shorter than StatusFrequency, one e-mail per incident, one
recovery notice, storms summarised, no secrets, several nodes never sending twice, the slower retry pace
during an incident, SMTP with STARTTLS and TLS, and end to end against the emulator. Time is a clock the
test moves, never a real wait."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import logging
import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from calsync.alerts.catalogue import CATALOGUE, entry
from calsync.alerts.mailer import Mail, Mailer, MailError
from calsync.alerts.tracker import FailureTracker
from calsync.jobs.manage_subscriptions import manage
from calsync.jobs.process_notifications import NotificationProcessor, ProcessorSettings, back_off
from calsync.settings import load_settings
from calsync.sources.base import Source, SourceError
from calsync.sources.memory import MemorySource
from calsync.store import inbox, incidents, operators, subscriptions, work
from calsync.store.db import Database
from calsync.store.status import operator_statuses
from calsync.store.tables import IncidentRow

from .conftest import SERVICE_PASSWORD, start_emulator
from .test_sync_end_to_end import ANN, Harness

T0 = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)
MIN = dt.timedelta(minutes=1)
GATHER = dt.timedelta(seconds=61)  # a little more than the tracker's 60 s gathering window
SMTP_USER, SMTP_PASSWORD = "calsync-mailer", "Smtp-Pa55word-never-shown"
EWS_PASSWORD = "Ews-Pa55word-never-shown"
RECIPIENTS = ("ops@example.com", "it-oncall@example.com")
SENDER = "calsync@example.com"
CALLBACK = "http://127.0.0.1:8080/ews/notifications/" + "s" * 32


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- a real SMTP server -----------------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes
    tls: bool


@dataclass
class SmtpServer:
    port: int
    received: list[Received] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    @property
    def messages(self) -> list[EmailMessage]:
        return [r.message for r in self.received]

    @property
    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for m in self.messages]

    def wait_for(self, count: int, timeout: float = 20.0) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.received) >= count, self.subjects
        return self.messages


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:
        raw = bytes(envelope.original_content or envelope.content)
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        transport = smtp.transport
        tls = session.ssl is not None or (transport is not None and transport.get_extra_info("ssl_object") is not None)
        self.server.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message, raw, tls))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_smtp(**smtp_parameters: Any) -> tuple[Controller, SmtpServer]:
    """aiosmtpd on 127.0.0.1 at a free port; logins are optional, but only SMTP_USER / SMTP_PASSWORD pass."""
    server = SmtpServer(free_port())

    def authenticator(smtp: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            SMTP_USER.encode(),
            SMTP_PASSWORD.encode(),
        ):
            server.logins.append(SMTP_USER)
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    smtp_parameters.setdefault("auth_require_tls", False)
    controller = Controller(
        _Handler(server), hostname="127.0.0.1", port=server.port, authenticator=authenticator, **smtp_parameters
    )
    controller.start()
    return controller, server


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    controller, server = start_smtp()
    yield server
    controller.stop()


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.upgrade()
    yield database
    database.dispose()


# --- helpers ----------------------------------------------------------------------------------------


def mailer_for(server: SmtpServer, **overrides: Any) -> Mailer:
    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": server.port,
        "username": SMTP_USER,
        "password": SMTP_PASSWORD,
        "sender": SENDER,
        "recipients": RECIPIENTS,
        "timeout": 10.0,
        **overrides,
    }
    return Mailer(**options)


def tracker_for(db: Database, server: SmtpServer, **options: Any) -> FailureTracker:
    options.setdefault("status_frequency", 30)
    return FailureTracker(db, mailer_for(server), secrets=[SMTP_PASSWORD, EWS_PASSWORD], **options)


def add_operator(db: Database, address: str, enabled: bool = True) -> int:
    with db.transaction() as session:
        return operators.add(session, address, enabled=enabled).id


def busy(mailbox: str) -> SourceError:
    return SourceError(
        "transient",
        "server_busy",
        f"Exchange is busy and refused the request for {mailbox}; it asked to wait 5 s (ErrorServerBusy).",
        back_off=5.0,
    )


def unreachable(mailbox: str) -> SourceError:
    # A message that carries a secret: the tracker must scrub it before storing or sending it.
    return SourceError(
        "transient",
        "connection_failed",
        f"Could not talk to Exchange for {mailbox} (ConnectionError: https://svc:{EWS_PASSWORD}@mail.example.com)",
    )


def not_found(mailbox: str) -> SourceError:
    return SourceError("permanent", "mailbox_not_found", f"{mailbox} is not a mailbox on this Exchange server.")


def rows(db: Database) -> list[IncidentRow]:
    with db.read() as session:
        return incidents.history(session)


def body(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def assert_no_secret(server: SmtpServer) -> None:
    for received in server.received:
        for secret in (SMTP_PASSWORD, EWS_PASSWORD, SERVICE_PASSWORD):
            assert secret.encode() not in received.raw
            assert secret not in body(received.message)


class Clock:
    """The tracker's time: real time (or a fixed start) moved on by the test at will."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.start = start
        self.offset = dt.timedelta(0)

    def __call__(self) -> dt.datetime:
        return (self.start or utcnow()) + self.offset

    def advance(self, delta: dt.timedelta) -> None:
        self.offset += delta


# --- the catalogue ----------------------------------------------------------------------------------


def test_the_catalogue_covers_every_code_calsync_raises() -> None:
    src = Path(__file__).resolve().parents[1] / "src" / "calsync"
    source = "".join(
        path.read_text()
        for path in [
            *(src / "sources" / "ews").glob("*.py"),
            *(src / "sources" / "graph").glob("*.py"),
            src / "sources" / "registry.py",
            *(src / "jobs").glob("*.py"),
        ]
    )
    raised = set(re.findall(r'"(?:transient|permanent|sync_state_invalid|watermark_invalid)",\s*"([a-z_]+)"', source))
    raised |= set(re.findall(r'^[A-Z_]+ = "([a-z_]+)"', source, re.MULTILINE)) & {"exchange_never_delivers"}
    assert {"server_busy", "credentials_rejected", "mailbox_not_found", "sync_state_expired"} <= raised
    assert {"graph_consent_missing", "mailbox_not_licensed", "subscription_validation_failed"} <= raised
    assert {"graph_app_not_found", "source_not_configured"} <= raised
    required = raised | {
        "impersonation_denied",
        "access_denied",
        "service_unavailable",
        "connection_failed",
        "timeout",
        "watermark_expired",
        "listener_unreachable",
        "exchange_never_delivers",
        "unreadable_item",
        "exchange_error",
        "internal_error",
    }
    assert required <= set(CATALOGUE), required - set(CATALOGUE)
    for item in CATALOGUE.values():
        assert item.title and item.cause and item.fix and not item.title.endswith(".")
    assert entry("something_new").title == "Sync fails (something_new)"


# --- the policy -------------------------------------------------------------------------------------


def test_transient_failures_shorter_than_status_frequency_send_nothing(db: Database, smtp: SmtpServer) -> None:
    tracker = tracker_for(db, smtp, status_frequency=30)
    ann = add_operator(db, "ann@example.com")
    for minute in range(0, 30):  # 29 minutes and some seconds of failures: still only failing
        outcome = tracker.record_failure(ann, busy("ann@example.com"), T0 + minute * MIN + dt.timedelta(seconds=30))
        assert outcome.state == "failing" and outcome.retry_after is None  # the processor's quick back-off
        assert tracker.flush(T0 + minute * MIN + GATHER) == 0
    [streak] = rows(db)
    assert (streak.failures, streak.opened_at, streak.code) == (30, None, "server_busy")
    with db.read() as session:
        assert operator_statuses(session)[0].incident_code is None
    assert tracker.record_success(ann, T0 + 30 * MIN)
    assert rows(db) == []  # a streak that never became an incident leaves no trace
    assert tracker.flush(T0 + 40 * MIN) == 0
    assert smtp.received == []


def test_a_streak_longer_than_status_frequency_is_one_incident_one_mail_and_one_recovery(
    db: Database, smtp: SmtpServer
) -> None:
    tracker = tracker_for(db, smtp, status_frequency=30)
    ann = add_operator(db, "ann@example.com")
    add_operator(db, "bob@example.com")
    for minute in range(0, 30):
        assert not tracker.record_failure(ann, unreachable("ann@example.com"), T0 + minute * MIN).incident
    opened_at = T0 + 30 * MIN
    outcome = tracker.record_failure(ann, unreachable("ann@example.com"), opened_at)
    assert outcome.incident and outcome.code == "connection_failed"
    assert outcome.retry_after == dt.timedelta(minutes=5)  # the slower pace while the incident is open
    assert tracker.flush(opened_at + dt.timedelta(seconds=30)) == 0  # gathering others that fail together
    assert tracker.flush(opened_at + GATHER) == 1
    [message] = smtp.wait_for(1)
    [received] = smtp.received
    assert received.mail_from == SENDER and sorted(received.rcpt_tos) == sorted(RECIPIENTS)
    assert smtp.logins == [SMTP_USER]
    assert message["From"] == SENDER and message["To"] == ", ".join(RECIPIENTS)
    assert message["Subject"] == "[calsync] connection_failed: calendar sync failing for ann@example.com"
    assert message["X-Calsync-Codes"] == "connection_failed"
    text = body(message)
    about = entry("connection_failed")
    assert f"Calendar sync for ann@example.com has stopped: {about.title}." in text
    assert about.cause in text and about.fix in text
    assert "Code:          connection_failed" in text and "Operator:      ann@example.com" in text
    assert "Failing since: 2026-11-28 09:00:00 UTC (31 failed attempts)" in text
    assert "https://svc:***@mail.example.com" in text  # the error message, with the secret scrubbed
    assert "calsync keeps retrying about every 5 minutes and sends one more e-mail when sync works again" in text
    assert_no_secret(smtp)
    [row] = rows(db)
    assert EWS_PASSWORD not in row.message
    with db.read() as session:
        ann_status, bob_status = operator_statuses(session)
    assert (ann_status.incident_code, ann_status.incident_since) == ("connection_failed", T0)
    assert bob_status.incident_code is None

    # Retries during the incident (even with another code) send nothing more.
    for minute in range(31, 90, 5):
        later = T0 + minute * MIN
        assert tracker.record_failure(ann, busy("ann@example.com"), later).retry_after == dt.timedelta(minutes=5)
        assert tracker.flush(later + GATHER) == 0
    assert len(smtp.received) == 1

    # Sync works again: one recovery notice, then silence.
    resolved = T0 + 95 * MIN
    assert tracker.record_success(ann, resolved)
    assert not tracker.record_success(ann, resolved + MIN)  # nothing open any more
    assert tracker.flush(resolved + dt.timedelta(seconds=10)) == 0
    assert tracker.flush(resolved + GATHER) == 1
    assert tracker.flush(resolved + 10 * MIN) == 0
    _, recovery = smtp.wait_for(2)
    assert recovery["Subject"] == "[calsync] resolved connection_failed: calendar sync works again for ann@example.com"
    text = body(recovery)
    assert "Calendar sync for ann@example.com works again." in text
    assert "from 2026-11-28 09:00:00 UTC to 2026-11-28 10:35:00 UTC (95 minutes, 43 failed attempts)" in text
    assert len(smtp.received) == 2
    assert_no_secret(smtp)
    with db.read() as session:
        assert operator_statuses(session)[0].incident_code is None

    # A new streak later is a new incident (and only after StatusFrequency again).
    assert not tracker.record_failure(ann, busy("ann@example.com"), T0 + 200 * MIN).incident
    assert tracker.flush(T0 + 210 * MIN) == 0


def test_a_permanent_failure_is_reported_at_once(db: Database, smtp: SmtpServer) -> None:
    tracker = tracker_for(db, smtp, status_frequency=30)
    ghost = add_operator(db, "ghost@example.com")
    outcome = tracker.record_failure(ghost, not_found("ghost@example.com"), T0)
    assert outcome.incident and outcome.retry_after == dt.timedelta(minutes=5)
    assert tracker.flush(T0 + GATHER) == 1
    [message] = smtp.wait_for(1)
    assert message["Subject"] == "[calsync] mailbox_not_found: calendar sync failing for ghost@example.com"
    text = body(message)
    assert entry("mailbox_not_found").fix in text and "reported at once" in text
    for minute in range(5, 60, 5):  # the 5-minute retries fail the same way: no more mail
        tracker.record_failure(ghost, not_found("ghost@example.com"), T0 + minute * MIN)
        assert tracker.flush(T0 + minute * MIN + GATHER) == 0
    assert len(smtp.received) == 1


def test_a_storm_of_eight_operators_is_one_summary_and_one_summary_recovery(db: Database, smtp: SmtpServer) -> None:
    tracker = tracker_for(db, smtp, status_frequency=30)
    ids = {f"op{i}@example.com": add_operator(db, f"op{i}@example.com") for i in range(8)}
    flaky = list(ids)[:5]  # the other three are denied impersonation
    for i, address in enumerate(flaky):
        tracker.record_failure(ids[address], busy(address), T0 + dt.timedelta(seconds=i))
    burst = T0 + 31 * MIN
    for i, address in enumerate(ids):  # within a few seconds, every one of them is an incident
        error = busy(address) if address in flaky else SourceError("permanent", "impersonation_denied", "denied")
        assert tracker.record_failure(ids[address], error, burst + dt.timedelta(seconds=i)).incident
    assert tracker.flush(burst + dt.timedelta(seconds=20)) == 0
    assert tracker.flush(burst + GATHER) == 1
    [summary] = smtp.wait_for(1)
    assert summary["Subject"] == (
        "[calsync] calendar sync failing for 8 operators: server_busy (5), impersonation_denied (3)"
    )
    text = body(summary)
    assert "one summary instead of 8 e-mails" in text
    for address in ids:
        assert address in text
    for code in ("server_busy", "impersonation_denied"):
        assert entry(code).title in text and entry(code).fix in text
    assert summary["X-Calsync-Codes"] == "server_busy impersonation_denied"

    healed = burst + 20 * MIN
    for i, address in enumerate(ids):
        assert tracker.record_success(ids[address], healed + dt.timedelta(seconds=i))
    assert tracker.flush(healed + dt.timedelta(seconds=30)) == 0
    assert tracker.flush(healed + GATHER + dt.timedelta(seconds=8)) == 1
    _, recovery = smtp.wait_for(2)
    assert recovery["Subject"] == (
        "[calsync] resolved: calendar sync works again for 8 operators: server_busy (5), impersonation_denied (3)"
    )
    assert all(address in body(recovery) for address in ids)
    assert tracker.flush(healed + 30 * MIN) == 0
    assert len(smtp.received) == 2


def test_few_incidents_together_are_mailed_one_each(db: Database, smtp: SmtpServer) -> None:
    tracker = tracker_for(db, smtp)
    for i in range(3):
        address = f"op{i}@example.com"
        tracker.record_failure(add_operator(db, address), not_found(address), T0 + dt.timedelta(seconds=i))
    assert tracker.flush(T0 + GATHER + dt.timedelta(seconds=3)) == 3
    assert sorted(smtp.subjects) == [
        f"[calsync] mailbox_not_found: calendar sync failing for op{i}@example.com" for i in range(3)
    ]


def test_without_recipients_or_smtp_host_nothing_is_sent_and_nothing_fails(
    db: Database, smtp: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="calsync.alerts")
    ann = add_operator(db, "ann@example.com")
    for mailer, reason in (
        (mailer_for(smtp, recipients=()), "failure_recipients (NotifySyncFailureTo) is empty"),
        (mailer_for(smtp, host=None), "smtp_host is not set"),
        (Mailer.from_settings(load_settings(failure_recipients="ops@example.com")), "smtp_host is not set"),
    ):
        caplog.clear()
        tracker = FailureTracker(db, mailer)
        assert not mailer.enabled and mailer.off_reason == reason
        tracker.record_failure(ann, not_found("ann@example.com"), T0)
        assert tracker.flush(T0 + GATHER) == 0
        assert tracker.flush(T0 + 2 * GATHER) == 0
        tracker.start()  # the dispatcher, too, just keeps quiet
        tracker.stop()
        off = f"failure e-mails are off: {reason}; incidents are still tracked (calsync status)"
        assert [r.getMessage() for r in caplog.records].count(off) == 1
        tracker.record_success(ann, T0 + 3 * GATHER)
    assert smtp.received == []


def test_an_smtp_failure_keeps_the_notice_due_and_it_goes_out_once_later(db: Database, smtp: SmtpServer) -> None:
    tracker = tracker_for(db, smtp)
    ann = add_operator(db, "ann@example.com")
    tracker.mailer = mailer_for(smtp, port=free_port())  # nothing listens there
    tracker.record_failure(ann, not_found("ann@example.com"), T0)
    assert tracker.flush(T0 + GATHER) == 0  # refused: logged, not raised
    [row] = rows(db)
    assert row.notified_at is None
    tracker.mailer = mailer_for(smtp)
    assert tracker.flush(T0 + GATHER + dt.timedelta(seconds=10)) == 0  # waits a minute before trying again
    assert tracker.flush(T0 + 3 * GATHER) == 1
    assert tracker.flush(T0 + 4 * GATHER) == 0
    assert len(smtp.wait_for(1)) == 1


def test_several_nodes_flushing_at_once_send_each_mail_once(database_url: str, db: Database, smtp: SmtpServer) -> None:
    writer = tracker_for(db, smtp)
    for i in range(3):
        address = f"op{i}@example.com"
        writer.record_failure(add_operator(db, address), not_found(address), T0)
    nodes = [Database(database_url) for _ in range(4)]
    trackers = [tracker_for(node, smtp) for node in nodes]
    barrier = threading.Barrier(len(trackers))
    sent: list[int] = []

    def node(tracker: FailureTracker) -> None:
        barrier.wait()
        sent.append(tracker.flush(T0 + GATHER))

    threads = [threading.Thread(target=node, args=(t,)) for t in trackers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for node_db in nodes:
        node_db.dispose()
    assert sum(sent) == 3
    time.sleep(0.2)
    assert len(smtp.received) == 3


def test_retries_are_quick_while_failing_and_slow_during_an_incident(db: Database, smtp: SmtpServer) -> None:
    clock = Clock(T0)
    tracker = tracker_for(db, smtp, status_frequency=1, clock=clock)
    source = exchange_with("ann@example.com")
    processor = NotificationProcessor(db, source, lambda: ProcessorSettings(512, 180), threads=1, tracker=tracker)
    ann = add_operator(db, "ann@example.com")

    def attempt() -> dt.timedelta | None:
        with db.transaction() as session:
            work.mark_dirty(session, ann)
            claim = work.claim(session, "test", 60, operator_id=ann)
        assert claim is not None
        before = utcnow()
        processor.run_claim(claim)
        with db.read() as session:
            row = work.get(session, ann)
            assert row is not None
            return None if row.not_before is None else row.not_before - before

    timeout = SourceError("transient", "timeout", "Exchange did not answer in time for ann@example.com.")
    source.fail("changes", timeout, times=4)
    quick = [attempt() for _ in range(3)]
    assert all(d is not None and dt.timedelta(0) < d <= dt.timedelta(seconds=61) for d in quick), quick
    clock.advance(61 * dt.timedelta(seconds=1))
    slow = attempt()  # the streak passed StatusFrequency (1 minute): an incident, retried every 5 minutes
    assert slow is not None and dt.timedelta(minutes=4, seconds=59) <= slow <= dt.timedelta(minutes=5, seconds=1)
    clock.advance(GATHER)
    assert tracker.flush() == 1
    assert attempt() is None  # the pass succeeds: no retry pending, the incident is resolved
    clock.advance(GATHER)
    assert tracker.flush() == 1
    assert [s.split(":")[0] for s in smtp.subjects] == ["[calsync] timeout", "[calsync] resolved timeout"]

    # Exchange's own back-off is honoured either way, and the quick back-off is exponential with jitter.
    for attempts in range(12):
        base = min(60.0, 2.0**attempts)
        assert back_off(attempts, jitter=0.0).total_seconds() == base / 2
        assert back_off(attempts, jitter=1.0).total_seconds() == base
        assert base / 2 <= back_off(attempts).total_seconds() <= base
    assert back_off(0, 90.0).total_seconds() == 90.0


def exchange_with(*mailboxes: str) -> MemorySource:
    source = MemorySource()
    for mailbox in mailboxes:
        source.add_mailbox(mailbox)
    return source


def run_manage(db: Database, source: Source, tracker: FailureTracker) -> Any:
    return manage(db, source, callback_url=CALLBACK, status_frequency=30, tracker=tracker)


def fall_silent(db: Database, operator_id: int) -> str:
    """Nothing heard on the operator's subscription for over twice StatusFrequency; its id."""
    with db.transaction() as session:
        sub = subscriptions.for_operator(session, operator_id)
        assert sub is not None
        sub.last_heard_at = utcnow() - dt.timedelta(minutes=61)
        sub.created_at = sub.last_heard_at
        return sub.subscription_id


def heartbeat(db: Database, operator_id: int) -> None:
    with db.transaction() as session:
        sub = subscriptions.for_operator(session, operator_id)
        assert sub is not None
        inbox.record(session, operator_id, sub.subscription_id, [], None, now=utcnow() + dt.timedelta(seconds=1))


def test_subscriptions_that_keep_dying_are_one_listener_incident(db: Database, smtp: SmtpServer) -> None:
    clock = Clock(T0)
    tracker = tracker_for(db, smtp, clock=clock)
    source = exchange_with("ann@example.com")
    ann = add_operator(db, "ann@example.com")
    assert run_manage(db, source, tracker).subscribed == ["ann@example.com"]

    # One silent subscription, then pushes arrive again on the new one: healed, nobody is told.
    fall_silent(db, ann)
    assert run_manage(db, source, tracker).recreated == ["ann@example.com"]
    assert [(r.code, r.opened_at) for r in rows(db)] == [("listener_unreachable", None)]
    heartbeat(db, ann)
    clock.advance(5 * MIN)
    run_manage(db, source, tracker)
    assert rows(db) == []

    # Subscriptions that keep dying: the second silent recreation in a row is an incident.
    fall_silent(db, ann)
    run_manage(db, source, tracker)
    clock.advance(61 * MIN)
    run_manage(db, source, tracker)  # the new subscription is not silent yet: nothing happens
    fall_silent(db, ann)
    run_manage(db, source, tracker)
    [row] = rows(db)
    assert (row.code, row.failures, row.opened_at) == ("listener_unreachable", 2, T0 + 66 * MIN)
    clock.advance(GATHER)
    assert tracker.flush() == 1
    [message] = smtp.wait_for(1)
    assert message["Subject"] == "[calsync] listener_unreachable: calendar sync failing for ann@example.com"
    assert entry("listener_unreachable").fix in body(message)
    assert "calsync recreates the subscription whenever it falls silent" in body(message)
    # Sync passes succeed meanwhile (they prove nothing about the listener), more recreations: no more mail.
    assert not tracker.record_success(ann)
    clock.advance(61 * MIN)
    fall_silent(db, ann)
    run_manage(db, source, tracker)
    clock.advance(GATHER)
    assert tracker.flush() == 0
    # A heartbeat on the new subscription: resolved at the next run, one recovery notice.
    heartbeat(db, ann)
    run_manage(db, source, tracker)
    clock.advance(GATHER)
    assert tracker.flush() == 1
    assert smtp.subjects[1] == "[calsync] resolved listener_unreachable: calendar sync works again for ann@example.com"
    assert len(smtp.received) == 2


def test_a_recreated_subscription_does_not_end_failing_passes(db: Database, smtp: SmtpServer) -> None:
    """Passes throttled for long, and meanwhile the subscription fell silent and was recreated: the subscribe
    worked, but that says nothing about the passes. Only a successful pass ends that incident."""
    clock = Clock(T0)
    tracker = tracker_for(db, smtp, clock=clock)
    source = exchange_with("ann@example.com")
    ann = add_operator(db, "ann@example.com")
    run_manage(db, source, tracker)
    tracker.record_failure(ann, busy("ann@example.com"))
    clock.advance(31 * MIN)
    assert tracker.record_failure(ann, busy("ann@example.com")).incident
    fall_silent(db, ann)
    assert run_manage(db, source, tracker).recreated == ["ann@example.com"]
    with db.read() as session:
        open_rows = incidents.open_streaks(session, ann)
    assert sorted((r.code, r.origin, r.opened_at is not None) for r in open_rows) == [
        ("listener_unreachable", "listener", False),
        ("server_busy", "sync", True),
    ]
    clock.advance(GATHER)
    assert tracker.flush() == 1
    assert tracker.record_success(ann)  # a pass works: the server_busy incident is resolved ...
    heartbeat(db, ann)
    run_manage(db, source, tracker)  # ... and a push heard ends the listener streak, quietly (never an incident)
    assert [(r.code, r.resolved_at is not None) for r in rows(db)] == [("server_busy", True)]
    clock.advance(GATHER)
    assert tracker.flush() == 1
    assert smtp.subjects == [
        "[calsync] server_busy: calendar sync failing for ann@example.com",
        "[calsync] resolved server_busy: calendar sync works again for ann@example.com",
    ]


def test_subscribe_failures_are_reported_and_a_disabled_operator_closes_quietly(db: Database, smtp: SmtpServer) -> None:
    clock = Clock(T0)
    tracker = tracker_for(db, smtp, clock=clock)
    source = exchange_with("ann@example.com", "bob@example.com")
    ann, bob = add_operator(db, "ann@example.com"), add_operator(db, "bob@example.com")
    source.fail("subscribe", not_found("the address"), times=2)
    result = run_manage(db, source, tracker)
    assert result.failed == {"ann@example.com": "mailbox_not_found", "bob@example.com": "mailbox_not_found"}
    clock.advance(GATHER)
    assert tracker.flush() == 2
    assert all("tries to subscribe again at every run of ManagePushSubscriptions" in body(m) for m in smtp.messages)
    # bob's address is fixed on Exchange's side; ann is switched off.
    with db.transaction() as session:
        operators.set_enabled(session, "ann@example.com", False)
    clock.advance(5 * MIN)
    assert run_manage(db, source, tracker).subscribed == ["bob@example.com"]
    clock.advance(GATHER)
    assert tracker.flush() == 1
    assert sorted(smtp.subjects) == [
        "[calsync] mailbox_not_found: calendar sync failing for ann@example.com",
        "[calsync] mailbox_not_found: calendar sync failing for bob@example.com",
        "[calsync] resolved mailbox_not_found: calendar sync works again for bob@example.com",
    ]
    with db.read() as session:
        assert incidents.open_incident(session, ann) is None and incidents.open_incident(session, bob) is None
    assert tracker.flush(clock() + 10 * MIN) == 0


def test_calsync_status_shows_the_open_incident(
    database_url: str, db: Database, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from calsync.cli import app

    tracker = tracker_for(db, smtp)
    ghost = add_operator(db, "ghost@example.com")
    add_operator(db, "ann@example.com")
    tracker.record_failure(ghost, not_found("ghost@example.com"), T0)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CALSYNC_DATABASE_URL", database_url)
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("NO_COLOR", "1")
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 2}
    assert "mailbox_not_found (failing since " in lines["ghost@example.com"]
    assert lines["ann@example.com"].rstrip(" │").endswith("-")


# --- SMTP security ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl), and its key."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


def client_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


MAIL = Mail("[calsync] test", "hello\n", ("internal_error",), (1,))


def test_starttls_upgrades_the_connection_before_logging_in(certificate: tuple[Path, Path]) -> None:
    controller, server = start_smtp(
        tls_context=server_context(certificate), require_starttls=True, auth_require_tls=True
    )
    try:
        with pytest.raises(MailError) as refused:  # a server that requires STARTTLS refuses a plain session
            mailer_for(server, security="none").send(MAIL)
        assert SMTP_PASSWORD not in str(refused.value)
        assert mailer_for(server, security="starttls", ssl_context=client_context(certificate)).send(MAIL)
        [received] = server.received
        assert received.tls and server.logins == [SMTP_USER]
        assert received.message["Subject"] == "[calsync] test"
        with pytest.raises(MailError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            mailer_for(server, security="starttls").send(MAIL)  # the system's trust store knows no such CA
    finally:
        controller.stop()


def test_implicit_tls(certificate: tuple[Path, Path]) -> None:
    controller, server = start_smtp(ssl_context=server_context(certificate))
    try:
        mailer = mailer_for(server, security="tls", ssl_context=client_context(certificate), username=None)
        assert mailer.send(MAIL)
        [received] = server.received
        assert received.tls and server.logins == []
    finally:
        controller.stop()


def test_wrong_smtp_credentials_are_an_error_without_the_password(smtp: SmtpServer) -> None:
    with pytest.raises(MailError) as refused:
        mailer_for(smtp, password="Wrong-Pa55word-xyz").send(MAIL)
    assert "Wrong-Pa55word-xyz" not in str(refused.value) and "535" in str(refused.value)
    assert smtp.received == []


# --- end to end against the emulator ----------------------------------------------------------------


def incident_rows(h: Harness, address: str) -> list[IncidentRow]:
    with h.runtime.db.read() as session:
        operator = operators.get(session, address)
        return [] if operator is None else incidents.history(session, operator.id)


def until(h: Harness, condition: Any) -> None:
    """Wait for ``condition``, waking the processor meanwhile so a retry runs as soon as it is due (its idle
    wait is several seconds)."""

    def check() -> bool:
        h.runtime.processor.wake()
        return bool(condition())

    h.wait_for(check, timeout=30)


def smtp_settings(server: SmtpServer) -> dict[str, Any]:
    return {
        "smtp_host": "127.0.0.1",
        "smtp_port": server.port,
        "smtp_username": SMTP_USER,
        "smtp_password": SMTP_PASSWORD,
        "smtp_sender": SENDER,
        "failure_recipients": ";".join(RECIPIENTS),
    }


def test_end_to_end_a_mailbox_missing_on_exchange_is_one_mail(
    schema_dir: Path, database_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    emulator = start_emulator(schema_dir, mailboxes=[ANN])
    h = Harness(emulator, database_url, tmp_path, **smtp_settings(smtp))
    try:
        clock = Clock()
        h.runtime.tracker.clock = clock
        h.enable(ANN, "ghost@example.com")
        h.wait_for(lambda: any(r.opened_at for r in incident_rows(h, "ghost@example.com")))
        clock.advance(GATHER)
        h.runtime.tracker.flush()
        [message] = smtp.wait_for(1)
        assert message["Subject"] == "[calsync] mailbox_not_found: calendar sync failing for ghost@example.com"
        assert "ghost@example.com is not a mailbox on this Exchange server" in body(message)
        for _ in range(3):  # ManagePushSubscriptions keeps trying: no more e-mail
            h.runtime.manage_subscriptions()
            clock.advance(GATHER)
            h.runtime.tracker.flush()
        [row] = incident_rows(h, "ghost@example.com")
        assert row.failures >= 4 and row.code == "mailbox_not_found"
        with h.runtime.db.read() as session:
            codes = {s.email: s.incident_code for s in operator_statuses(session)}
        assert codes == {ANN: None, "ghost@example.com": "mailbox_not_found"}
        with h.runtime.db.transaction() as session:
            operators.set_enabled(session, "ghost@example.com", False)
        h.runtime.manage_subscriptions()
        h.assert_matches(ANN)
        clock.advance(GATHER)
        h.runtime.tracker.flush()
        assert len(smtp.received) == 1
        assert_no_secret(smtp)
    finally:
        h.stop()
        emulator.stop()
    assert emulator.violations == []


def test_end_to_end_throttled_longer_than_status_frequency_then_recovered(
    schema_dir: Path, database_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    emulator = start_emulator(schema_dir, mailboxes=[])
    emulator.add_mailbox(ANN, populate_count=30, seed=7)
    h = Harness(emulator, database_url, tmp_path, **smtp_settings(smtp))  # status_frequency = 1 minute
    try:
        tracker = h.runtime.tracker
        clock = Clock()
        tracker.clock = clock
        tracker.incident_retry = dt.timedelta(seconds=1)  # so the test need not wait 5 real minutes
        h.enable(ANN)
        h.assert_matches(ANN)
        outlook = emulator.outlook(ANN)
        emulator.set_faults(server_busy=-1, server_busy_mailbox=ANN, server_busy_backoff_ms=200)
        soon = (utcnow() + dt.timedelta(days=2)).replace(microsecond=0)
        outlook.create({"subject": "While throttled", "start": soon.isoformat()})
        until(h, lambda: bool(incident_rows(h, ANN)))
        [streak] = incident_rows(h, ANN)
        assert (streak.code, streak.opened_at) == ("server_busy", None)
        clock.advance(dt.timedelta(seconds=30))
        assert tracker.flush() == 0 and smtp.received == []  # failing for less than a minute: quiet retries
        clock.advance(dt.timedelta(seconds=31))
        until(h, lambda: any(r.opened_at for r in incident_rows(h, ANN)))  # the next retry opens the incident
        clock.advance(GATHER)
        tracker.flush()
        [message] = smtp.wait_for(1)
        assert message["Subject"] == f"[calsync] server_busy: calendar sync failing for {ANN}"
        assert entry("server_busy").fix in body(message)
        failures = incident_rows(h, ANN)[0].failures
        until(h, lambda: incident_rows(h, ANN)[0].failures > failures)  # retries go on, e-mail does not
        outlook.create({"subject": "Also while throttled", "start": (soon + dt.timedelta(hours=3)).isoformat()})
        clock.advance(GATHER)
        tracker.flush()
        assert len(smtp.received) == 1

        emulator.clear_faults()
        until(h, lambda: incident_rows(h, ANN)[0].resolved_at is not None)
        h.assert_matches(ANN)  # nothing lost, nothing duplicated
        clock.advance(GATHER)
        tracker.flush()
        _, recovery = smtp.wait_for(2)
        assert recovery["Subject"] == f"[calsync] resolved server_busy: calendar sync works again for {ANN}"
        clock.advance(10 * MIN)
        tracker.flush()
        assert len(smtp.received) == 2
        assert_no_secret(smtp)
        titles = [k[0] for k in h.app_calendar(ANN, utcnow(), utcnow() + dt.timedelta(days=9))]
        assert "While throttled" in titles and "Also while throttled" in titles
    finally:
        h.stop()
        emulator.stop()
    assert emulator.violations == []

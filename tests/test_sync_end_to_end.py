"""Push sync end to end, on SQLite and PostgreSQL: changes made through exchangelib against the emulator,
notifications over real HTTP to calsync's listener, passes by the jobs, and at quiescence the application
calendar equals the emulator's truth, whatever happened to the notifications on the way."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from exchangelib import Attendee, CalendarItem, EWSDateTime, EWSTimeZone, Mailbox
from exchangelib.recurrence import DailyPattern, Recurrence, WeeklyPattern

from calsync.api.calendar import occurrences
from calsync.calendar.model import Appointment
from calsync.emulator import Emulator
from calsync.emulator.server import bound_socket
from calsync.jobs.manage_subscriptions import manage
from calsync.runtime import Runtime
from calsync.settings import listener_callback_url, load_settings
from calsync.sources.memory import MemorySource
from calsync.store import jobs as job_store
from calsync.store import operators, subscriptions, work
from calsync.store.status import operator_statuses
from calsync.store.work import LeaseLost

from .conftest import SERVICE_PASSWORD, SERVICE_USER, ews_account, save_item, start_emulator

UTC = EWSTimeZone("UTC")
BERLIN = EWSTimeZone("Europe/Berlin")
ANN, BOB = "ann@example.com", "bob@example.com"
CALENDAR_TOKEN = "calendar-reader-token-0123456789"
AS_APP = {"Authorization": f"Bearer {CALENDAR_TOKEN}"}  # the application, reading its calendars


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Harness:
    def __init__(self, emulator: Emulator, database_url: str, tmp_path: Path, **settings: Any) -> None:
        self.emulator = emulator
        self.sock = bound_socket("127.0.0.1", 0)
        port = self.sock.getsockname()[1]
        self.settings = load_settings(
            database_url=database_url,
            exchange_url=emulator.url,
            username=SERVICE_USER,
            password=SERVICE_PASSWORD,
            listener_url=f"http://127.0.0.1:{port}",
            listener_secret="s" * 32,
            status_frequency=1,
            **{"batch_size": 512, "past_window_days": 180, "api_tokens": f"calendar:{CALENDAR_TOKEN}", **settings},
        )
        self.runtime = Runtime(self.settings, threads=3)
        self.runtime.prepare()
        self.server = uvicorn.Server(uvicorn.Config(self.runtime.app(), log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        self.base = f"http://127.0.0.1:{port}"
        self.passes: list[str] = []
        self.runtime.processor.on_pass = lambda result: self.passes.append(result.email)

    def stop_jobs_only(self) -> None:
        """Make this node a pure listener (its jobs stop; its HTTP server stays)."""
        self.runtime.stop_jobs()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.runtime.close()
        self.sock.close()

    # --- setting up ----------------------------------------------------------------------------

    def enable(self, *emails: str) -> None:
        with self.runtime.db.transaction() as session:
            for email in emails:
                if operators.get(session, email) is None:
                    operators.add(session, email, enabled=True)
                else:
                    operators.set_enabled(session, email, True)
            job_store.request_run(session, job_store.MANAGE_SUBSCRIPTIONS)
        self.runtime.scheduler.poke()

    def quiet(self, timeout: float = 30.0) -> None:
        """Wait until every enabled operator is subscribed, synced, and no pass is due or running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.runtime.db.read() as session:
                statuses = [s for s in operator_statuses(session) if s.enabled]
                busy = any(w.lease_owner for w in (work.get(session, o.id) for o in operators.listing(session)) if w)
            if statuses and all(s.subscribed and s.initial_sync_done and not s.dirty for s in statuses) and not busy:
                return
            time.sleep(0.02)
        raise AssertionError(f"calsync did not settle: {statuses}")

    # --- comparing -----------------------------------------------------------------------------

    def app_calendar(self, email: str, start: dt.datetime, end: dt.datetime) -> list[tuple[Any, ...]]:
        return sorted(_key_app(o) for o in occurrences(self.runtime.db, email, start, end))

    def truth(self, email: str, start: dt.datetime, end: dt.datetime) -> list[tuple[Any, ...]]:
        return sorted(_key_truth(t) for t in self.emulator.truth(email, start, end))

    def assert_matches(self, *emails: str, timeout: float = 30.0) -> None:
        start, end = utcnow() - dt.timedelta(days=179), utcnow() + dt.timedelta(days=400)
        deadline = time.monotonic() + timeout
        while True:
            self.quiet(timeout)
            diffs = {e: (self.app_calendar(e, start, end), self.truth(e, start, end)) for e in emails}
            if all(mine == truth for mine, truth in diffs.values()):
                for mine, _ in diffs.values():
                    assert len(mine) == len(set(mine)) or Counter(mine) == Counter(mine)  # duplicates are real
                return
            if time.monotonic() > deadline:
                for email, (mine, truth) in diffs.items():
                    missing = Counter(truth) - Counter(mine)
                    extra = Counter(mine) - Counter(truth)
                    assert not missing and not extra, (email, list(missing)[:5], list(extra)[:5])
            time.sleep(0.05)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if predicate():
                return time.monotonic() - started
            time.sleep(0.01)
        raise AssertionError("condition not reached in time")


def _key_app(o: Any) -> tuple[Any, ...]:
    return (
        o.subject or "",
        o.start.astimezone(dt.UTC).isoformat(),
        o.end.astimezone(dt.UTC).isoformat(),
        o.cancelled,
        o.appointment.all_day,
        o.location or "",
        o.appointment.private,
    )


def _key_truth(t: dict[str, Any]) -> tuple[Any, ...]:
    return (
        t["subject"] or "",
        dt.datetime.fromisoformat(t["start"]).isoformat(),
        dt.datetime.fromisoformat(t["end"]).isoformat(),
        t["cancelled"],
        t["all_day"],
        t["location"] or "",
        t["sensitivity"] in ("Private", "Confidential"),
    )


@pytest.fixture
def harness(schema_dir: Path, database_url: str, tmp_path: Path) -> Iterator[Harness]:
    emulator = start_emulator(schema_dir, mailboxes=[])
    emulator.add_mailbox(ANN, populate_count=60, seed=11)
    emulator.add_mailbox(BOB, populate_count=60, seed=12)
    emulator.add_mailbox("cyd@example.com")
    h = Harness(emulator, database_url, tmp_path)
    yield h
    h.stop()
    emulator.stop()
    assert emulator.violations == []


def _soon(days: int, hour: int = 9, tz: EWSTimeZone = UTC) -> EWSDateTime:
    day = (utcnow() + dt.timedelta(days=days)).date()
    return EWSDateTime(day.year, day.month, day.day, hour, 0, tzinfo=tz)


def test_initial_sync_then_every_kind_of_change(harness: Harness) -> None:
    harness.enable(ANN, BOB)
    harness.assert_matches(ANN, BOB)
    with harness.runtime.db.read() as session:
        stored = {s.email: s.appointments for s in operator_statuses(session)}
    assert 0 < stored[ANN] < 60  # items that ended before the window were skipped, never stored

    ann, bob = ews_account(harness.emulator, ANN), ews_account(harness.emulator, BOB)
    single = save_item(ann, "One-off", _soon(3))
    series = save_item(
        ann,
        "Daily standup",
        _soon(1, 9, BERLIN),
        15,
        recurrence=Recurrence(pattern=DailyPattern(interval=1), start=_soon(1).date(), number=10),
    )
    weekly = save_item(
        bob,
        "Weekly 1:1",
        _soon(2, 16, BERLIN),
        30,
        recurrence=Recurrence(
            pattern=WeeklyPattern(interval=1, weekdays=[_soon(2).isoweekday()]), start=_soon(2).date()
        ),
    )
    meeting = CalendarItem(
        account=ann,
        folder=ann.calendar,
        subject="Design review",
        start=_soon(4, 13),
        end=_soon(4, 14),
        required_attendees=[Attendee(mailbox=Mailbox(email_address=BOB))],
    )
    meeting.save(send_meeting_invitations="SendToAllAndSaveCopy")
    harness.assert_matches(ANN, BOB)

    single.subject, single.location = "One-off (moved)", "Room 7"
    single.start, single.end = single.start + dt.timedelta(hours=2), single.end + dt.timedelta(hours=2)
    single.save(update_fields=["subject", "location", "start", "end"])
    second = series.occurrence(2)
    second.refresh()
    second.subject = "Standup (late)"
    second.start, second.end = second.start + dt.timedelta(hours=1), second.end + dt.timedelta(hours=1)
    second.save(update_fields=["subject", "start", "end"])
    third = series.occurrence(3)
    third.refresh()
    third.delete()
    weekly.refresh()
    weekly.location = "Café"
    weekly.save(update_fields=["location"])
    meeting.delete(send_meeting_cancellations="SendToAllAndSaveCopy")  # bob keeps it, cancelled
    harness.assert_matches(ANN, BOB)
    bob_view = occurrences(harness.runtime.db, BOB, utcnow(), utcnow() + dt.timedelta(days=10))
    assert [o.cancelled for o in bob_view if o.subject == "Canceled: Design review"] == [True]

    single.delete()  # hard delete: gone from the application calendar
    weekly.move_to_trash()  # moved out of the calendar folder
    harness.assert_matches(ANN, BOB)
    [trashed] = [i for i in bob.trash.all() if i.subject == "Weekly 1:1"]
    trashed.move(bob.calendar)  # ... and back in
    harness.assert_matches(ANN, BOB)

    # A series that began weeks ago, edited now: past and future occurrences change alike, as in Exchange.
    outlook = harness.emulator.outlook(ANN)
    old = outlook.create(
        {
            "subject": "Old series",
            "start": (utcnow() - dt.timedelta(days=40)).isoformat(),
            "timezone": "Europe/Berlin",
            "recurrence": {"pattern": "Weekly", "days": ["Tuesday"]},
        }
    )
    harness.assert_matches(ANN)
    outlook.update(old.item_id, {"subject": "Old series (renamed)", "location": "Room 1"})
    harness.assert_matches(ANN)

    # the application's own view over HTTP: JSON occurrences and an iCalendar file
    start, end = utcnow(), utcnow() + dt.timedelta(days=15)
    response = httpx.get(
        f"{harness.base}/api/v1/operators/{ANN}/appointments",
        params={"start": start.isoformat(), "end": end.isoformat()},
        headers=AS_APP,
    )
    assert response.status_code == 200
    body = response.json()
    standups = [a for a in body["appointments"] if "tandup" in (a["subject"] or "")]
    assert len(standups) == 9  # 10 minus the deleted one
    late = [a for a in standups if a["exception"]]
    assert [a["subject"] for a in late] == ["Standup (late)"]
    assert standups[0]["time_zone"] == "W. Europe Standard Time" and standups[0]["start"].endswith("+01:00")
    ics = httpx.get(f"{harness.base}/api/v1/operators/{ANN}/calendar.ics", headers=AS_APP)
    assert ics.status_code == 200 and ics.headers["content-type"].startswith("text/calendar")
    assert b"BEGIN:VCALENDAR" in ics.content and b"RRULE:FREQ=DAILY" in ics.content and b"EXDATE" in ics.content


def test_calendar_api_refuses_bad_requests(harness: Harness) -> None:
    harness.enable(ANN)
    harness.quiet()
    url = f"{harness.base}/api/v1/operators/{ANN}/appointments"
    assert httpx.get(url, headers=AS_APP).status_code == 422  # start and end are required
    bad = httpx.get(url, params={"start": "yesterday", "end": "2027-01-01"}, headers=AS_APP)
    assert bad.status_code == 400 and "ISO 8601" in bad.json()["detail"]
    assert httpx.get(url, params={"start": "2027-01-01", "end": "2026-01-01"}, headers=AS_APP).status_code == 400
    over = httpx.get(url, params={"start": "2020-01-01", "end": "2027-01-01"}, headers=AS_APP)
    assert over.status_code == 400 and "3 years" in over.json()["detail"]
    missing = httpx.get(
        f"{harness.base}/api/v1/operators/nobody@example.com/appointments",
        params={"start": "2027-01-01", "end": "2027-02-01"},
        headers=AS_APP,
    )
    assert missing.status_code == 404 and "nobody@example.com" in missing.json()["detail"]
    # the calendar is personal data: no token, a wrong one, or a viewer's role gets nothing
    window = {"start": "2027-01-01", "end": "2027-02-01"}
    assert httpx.get(url, params=window).status_code == 401
    assert httpx.get(url, params=window, headers={"Authorization": "Bearer not-a-token"}).status_code == 401


def test_lost_duplicated_reordered_and_forged_notifications(harness: Harness) -> None:
    harness.enable(ANN)
    harness.quiet()
    ann = ews_account(harness.emulator, ANN)
    # Lost: Exchange thinks it delivered, the listener never heard. The next notification brings it along.
    harness.emulator.set_faults(lost_push=1)
    save_item(ann, "Lost change", _soon(5))
    time.sleep(0.5)
    assert "Lost change" not in [k[0] for k in harness.app_calendar(ANN, utcnow(), utcnow() + dt.timedelta(days=9))]
    save_item(ann, "Next change", _soon(6))
    harness.assert_matches(ANN)

    # Duplicated, reordered, forged: replay old bodies, and invent one with item ids Exchange never had.
    with harness.runtime.db.read() as session:
        sub = subscriptions.for_operator(session, operators.require(session, ANN).id)
        assert sub is not None
        sid = sub.subscription_id
    url = listener_callback_url(harness.settings)
    forged = _push_body(sid, [("CreatedEvent", "AAMkAGZvcmdlZA=="), ("DeletedEvent", "AAMkAGludmVudGVk")])
    older = _push_body(sid, [("ModifiedEvent", "AAMkAG9sZA==")])
    for body in (forged, older, forged, older):
        response = httpx.post(url, content=body, headers={"Content-Type": "text/xml; charset=utf-8"})
        assert response.status_code == 200 and b"<m:SubscriptionStatus>OK<" in response.content
    harness.assert_matches(ANN)


def _push_body(subscription_id: str, events: list[tuple[str, str]]) -> bytes:
    items = "".join(
        f"<t:{kind}><t:Watermark>AAAA</t:Watermark><t:TimeStamp>2026-11-27T10:00:00Z</t:TimeStamp>"
        f'<t:ItemId Id="{item}"/><t:ParentFolderId Id="AAMkAGNhbA=="/></t:{kind}>'
        for kind, item in events
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"'
        ' xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"'
        ' xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"><soap:Body><m:SendNotification>'
        '<m:ResponseMessages><m:SendNotificationResponseMessage ResponseClass="Success">'
        f"<m:ResponseCode>NoError</m:ResponseCode><m:Notification><t:SubscriptionId>{subscription_id}"
        "</t:SubscriptionId><t:PreviousWatermark>AAAA</t:PreviousWatermark><t:MoreEvents>false</t:MoreEvents>"
        f"{items}</m:Notification></m:SendNotificationResponseMessage></m:ResponseMessages></m:SendNotification>"
        "</soap:Body></soap:Envelope>"
    ).encode()


def test_a_burst_of_notifications_coalesces_into_few_passes(harness: Harness) -> None:
    harness.enable(ANN)
    harness.quiet()
    before = len(harness.passes)
    outlook = harness.emulator.outlook(ANN)
    for i in range(20):  # spread over about 200 ms, as a person's or an application's burst would be
        outlook.create({"subject": f"Burst {i}", "start": (utcnow() + dt.timedelta(days=3, hours=i)).isoformat()})
        time.sleep(0.01)
    harness.assert_matches(ANN)
    passes = len(harness.passes) - before
    # 20 changes x 2 pushes each would be 40 passes without coalescing; the first pass starts at once and the
    # follow-up hold (work.FOLLOW_UP_HOLD) lets the rest of the burst gather for one more pass
    assert 1 <= passes <= 3, passes


def test_a_dead_subscription_is_recreated_and_the_gap_caught_up(harness: Harness) -> None:
    harness.enable(ANN)
    harness.quiet()
    db = harness.runtime.db
    with db.read() as session:
        old = subscriptions.for_operator(session, operators.require(session, ANN).id)
        assert old is not None
        old_id = old.subscription_id
    # The listener is unreachable for longer than StatusFrequency: Exchange gives up on the subscription.
    harness.emulator.exchange.clock.set_speed(600)
    harness.emulator.set_faults(listener_unreachable=True)
    harness.emulator.outlook(ANN).create({"subject": "During the outage", "start": _soon(2).isoformat()})
    harness.wait_for(lambda: harness.emulator.exchange.subscriptions[old_id].state == "dead")
    harness.emulator.clear_faults()
    harness.emulator.exchange.clock.set_speed(1)
    assert "During the outage" not in [k[0] for k in harness.app_calendar(ANN, utcnow(), utcnow() + dt.timedelta(9))]
    # Twice StatusFrequency of silence later, ManagePushSubscriptions recreates it and marks a catch-up pass.
    with db.transaction() as session:
        sub = subscriptions.for_operator(session, operators.require(session, ANN).id)
        assert sub is not None
        sub.last_heard_at = utcnow() - dt.timedelta(minutes=3)
    result = manage(
        db, harness.runtime.sources, callback_url=listener_callback_url(harness.settings), status_frequency=1
    )
    assert result.recreated == [ANN]
    harness.runtime.processor.wake()
    harness.assert_matches(ANN)
    with db.read() as session:
        new = subscriptions.for_operator(session, operators.require(session, ANN).id)
        assert new is not None and new.subscription_id != old_id
    # The new subscription works: a change reaches the application calendar by push.
    harness.emulator.outlook(ANN).create({"subject": "After the outage", "start": _soon(3).isoformat()})
    harness.assert_matches(ANN)


def test_an_expired_sync_state_leads_to_a_full_resync(harness: Harness) -> None:
    harness.enable(ANN)
    harness.quiet()
    outlook = harness.emulator.outlook(ANN)
    doomed = outlook.create({"subject": "Doomed", "start": _soon(4).isoformat()})
    harness.assert_matches(ANN)
    harness.emulator.set_faults(lost_push=10)  # the delete goes unnoticed ...
    outlook.delete(doomed.item_id, "HardDelete")
    harness.emulator.exchange.expire_sync_states(harness.emulator.exchange.mailbox(ANN))  # ... and the state expires
    harness.emulator.clear_faults()
    outlook.create({"subject": "Trigger", "start": _soon(5).isoformat()})
    harness.assert_matches(ANN)  # the full re-sync swept the deleted item away, and nothing was duplicated


CRASH_LEASE = 3.0


def test_a_crash_mid_pass_loses_and_duplicates_nothing(database_url: str, tmp_path: Path) -> None:
    """A worker dies after committing some pages of a pass: the next worker (once the lease ran out) starts from
    the committed sync state, and the calendar ends up with every item once."""
    from calsync.engine.sync import run_pass
    from calsync.store import calendar

    source = MemorySource(mailboxes=[ANN])
    start = utcnow().replace(microsecond=0)
    for n in range(40):
        begins = start + dt.timedelta(days=n, hours=n % 5)
        source.put(ANN, Appointment(f"item-{n}", f"ck-{n}", f"Item {n}", begins, begins + dt.timedelta(hours=1)))
    settings = load_settings(database_url=database_url, listener_url="http://127.0.0.1:9", listener_secret="s" * 32)
    runtime = Runtime(settings, source=source, threads=1)
    runtime.prepare()
    try:
        with runtime.db.transaction() as session:
            op = operators.add(session, ANN, enabled=True)
            work.mark_dirty(session, op.id)
            claim = work.claim(session, "crashing-worker", CRASH_LEASE, operator_id=op.id)
        assert claim is not None
        source.interrupt(after_pages=3, error=KeyboardInterrupt("simulated crash"))
        with pytest.raises(KeyboardInterrupt):
            run_pass(runtime.db, source, claim, batch_size=7, past_window_days=180, lease_seconds=CRASH_LEASE)
        with runtime.db.read() as session:
            assert calendar.count(session, op.id) == 21  # three pages of seven were committed before the crash
        time.sleep(CRASH_LEASE + 0.1)  # the dead worker's lease runs out; another worker takes the mailbox
        runtime.processor.run_available()
        with runtime.db.read() as session:
            stored = sorted(a.item_id for a in calendar.all_for(session, op.id))
        assert stored == sorted(a.item_id for a in source.items(ANN))  # every item, once
        # and the dead worker's claim can no longer commit anything
        with pytest.raises(LeaseLost), runtime.db.transaction() as session:
            work.check_fence(session, claim)
    finally:
        runtime.close()


def test_a_notification_stored_by_one_process_wakes_the_workers_of_another(
    schema_dir: Path, database_url: str, tmp_path: Path
) -> None:
    """PostgreSQL NOTIFY: the listener node has no jobs; a separate worker node syncs within moments,
    not at its next poll (the worker's idle wait is several seconds)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("cross-process wake-ups go through PostgreSQL")
    from calsync.jobs.process_notifications import IDLE_SECONDS

    emulator = start_emulator(schema_dir, mailboxes=[ANN])
    listener_node = Harness(emulator, database_url, tmp_path)
    listener_node.stop_jobs_only()
    worker_node = Runtime(listener_node.settings, threads=2)
    worker_node.start_jobs()
    try:
        listener_node.enable(ANN)
        worker_node.scheduler.poke()
        listener_node.quiet()
        time.sleep(IDLE_SECONDS / 2)  # let the worker fall idle
        emulator.outlook(ANN).create({"subject": "Across processes", "start": _soon(2).isoformat()})
        seconds = listener_node.wait_for(
            lambda: (
                "Across processes"
                in [k[0] for k in listener_node.app_calendar(ANN, utcnow(), utcnow() + dt.timedelta(days=9))]
            )
        )
        assert seconds < IDLE_SECONDS / 2, seconds
    finally:
        worker_node.stop_jobs()
        worker_node.close()
        listener_node.stop()
        emulator.stop()

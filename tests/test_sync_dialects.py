"""End to end (emulator, listener, jobs, store) with the emulator speaking each dialect other EWS servers speak:
the application calendar is exact, or the items that could not be read are reported as ``unreadable_item`` (an
incident that lists them, read again until they read well) and left out, never stored wrong; a server that
accepts subscriptions and never pushes is told apart from a listener Exchange cannot reach."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from calsync.api.calendar import occurrences
from calsync.emulator.ews.dialect import DIALECTS
from calsync.engine import sync as engine
from calsync.jobs.manage_subscriptions import manage
from calsync.listener import reachability
from calsync.settings import listener_callback_url
from calsync.store import incidents, listener_checks, operators, subscriptions, unreadable
from calsync.store.status import operator_statuses

from .conftest import start_emulator
from .test_sync_end_to_end import ANN, Harness, utcnow

ZONELESS = "custom_timezones_without_definition"


@pytest.fixture
def dialect_harness(schema_dir: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Harness]:
    """A harness on SQLite (the database is not what these tests are about) whose emulator speaks a dialect."""
    emulator = start_emulator(schema_dir, mailboxes=[])
    emulator.add_mailbox(ANN, populate_count=80, seed=13)
    emulator.set_faults(dialect=[request.param])
    h = Harness(emulator, f"sqlite:///{tmp_path / 'calsync.sqlite3'}", tmp_path)
    yield h
    h.stop()
    emulator.stop()


def _key(subject: str | None, start: dt.datetime, end: dt.datetime) -> tuple[str, str, str]:
    return (subject or "", start.astimezone(dt.UTC).isoformat(), end.astimezone(dt.UTC).isoformat())


def _calendars(h: Harness, leave_out: set[str]) -> tuple[Counter[Any], Counter[Any]]:
    """(the application's occurrences, the emulator's truth without the items in ``leave_out``)."""
    start, end = utcnow() - dt.timedelta(days=179), utcnow() + dt.timedelta(days=400)
    mine = Counter(
        _key(o.subject, o.start, o.end)
        for o in occurrences(h.runtime.db, ANN, start, end)
        if o.appointment.item_id not in leave_out
    )
    truth = Counter(
        _key(t["subject"], dt.datetime.fromisoformat(t["start"]), dt.datetime.fromisoformat(t["end"]))
        for t in h.emulator.truth(ANN, start, end)
        if (t["series_id"] or t["id"]) not in leave_out
    )
    return mine, truth


def _listed(h: Harness) -> dict[str, str]:
    with h.runtime.db.read() as session:
        operator = operators.require(session, ANN)
        return {u.item_id: u.field for u in unreadable.listed(session, operator.id)}


def _open_codes(h: Harness) -> list[str]:
    with h.runtime.db.read() as session:
        operator = operators.require(session, ANN)
        return [row.code for row in incidents.open_streaks(session, operator.id)]


@pytest.mark.parametrize("dialect_harness", sorted(DIALECTS), indirect=True)
def test_every_dialect_end_to_end(dialect_harness: Harness, request: pytest.FixtureRequest) -> None:
    h = dialect_harness
    dialect = request.node.callspec.params["dialect_harness"]
    h.enable(ANN)
    h.quiet()
    items = h.emulator.outlook(ANN).items()
    expected = {i.item_id for i in items if i.recurrence is not None or i.is_all_day} if dialect == ZONELESS else set()
    listed = _listed(h)
    stored_ids = {o.appointment.item_id for o in occurrences(h.runtime.db, ANN, utcnow(), utcnow())}
    assert not stored_ids & set(listed)  # nothing unreadable was stored
    # Only items that lie in the window are stored or reported; every reported one is one the dialect breaks.
    assert set(listed) <= expected and (set(listed) or not expected)
    mine, truth = _calendars(h, set(listed))
    assert mine == truth
    assert ("unreadable_item" in _open_codes(h)) == bool(listed)

    # A recurring change made now reaches the calendar exactly (or is reported), by push where the server pushes.
    outlook = h.emulator.outlook(ANN)
    series = outlook.create(
        {
            "subject": f"Planning ({dialect})",
            "start": (utcnow() + dt.timedelta(days=2)).replace(microsecond=0).isoformat(),
            "timezone": "Europe/Berlin",
            "recurrence": {"pattern": "Daily", "range": "Numbered", "count": 6},
        }
    )
    outlook.update_occurrence(series.item_id, 2, {"subject": "Planning, moved"})
    outlook.delete_occurrence(series.item_id, 4)
    if dialect == "never_push":
        h.runtime.processor.wake()
        with h.runtime.db.transaction() as session:
            from calsync.store import work

            work.mark_dirty(session, operators.require(session, ANN).id)  # what Reconciliation does
    h.wait_for(lambda: _settled(h, series.item_id, dialect), timeout=20)
    mine, truth = _calendars(h, set(_listed(h)))
    assert mine == truth


def _settled(h: Harness, item_id: str, dialect: str) -> bool:
    listed = _listed(h)
    if dialect == ZONELESS:
        return item_id in listed
    stored = {o.appointment.item_id for o in occurrences(h.runtime.db, ANN, utcnow(), utcnow() + dt.timedelta(9))}
    return item_id in stored


@pytest.mark.parametrize("dialect_harness", [ZONELESS], indirect=True)
def test_unreadable_items_are_read_again_and_the_incident_resolves(
    dialect_harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = dialect_harness
    h.enable(ANN)
    h.quiet()
    listed = _listed(h)
    assert listed and set(listed.values()) == {"StartTimeZone"}
    with h.runtime.db.read() as session:
        incident = incidents.open_incident(session, operators.require(session, ANN).id)
        assert incident is not None and incident.code == "unreadable_item"
        assert f"{len(listed)} items could not be read" in incident.message
        assert "StartTimeZone 'Customized Time Zone'" in incident.message
    [status] = [s for s in _statuses(h) if s.email == ANN]
    assert status.incident_code == "unreadable_item"

    # The server learns to send its zones; the next pass reads the listed items again and the incident resolves.
    h.emulator.clear_faults()
    monkeypatch.setattr(engine, "REREAD_AFTER", dt.timedelta(0))
    with h.runtime.db.transaction() as session:
        from calsync.store import work

        work.mark_dirty(session, operators.require(session, ANN).id)
    h.runtime.processor.wake()
    h.wait_for(lambda: not _listed(h), timeout=20)
    h.wait_for(lambda: "unreadable_item" not in _open_codes(h), timeout=20)
    mine, truth = _calendars(h, set())
    assert mine == truth


def _statuses(h: Harness) -> list[Any]:
    with h.runtime.db.read() as session:
        return operator_statuses(session)


@pytest.mark.parametrize("dialect_harness", ["never_push"], indirect=True)
def test_a_server_that_never_pushes_is_told_apart_from_an_unreachable_listener(dialect_harness: Harness) -> None:
    h = dialect_harness
    callback = listener_callback_url(h.settings)
    h.wait_for(lambda: _check(h, callback) is not None, timeout=30)  # serve checks its listener URL at start
    check = _check(h, callback)
    assert check is not None and check.ok, check.detail if check else None
    h.enable(ANN)
    h.quiet()
    [status] = [s for s in _statuses(h) if s.email == ANN]
    assert status.subscribed and status.last_heard is None and status.last_heartbeat is None  # not yet heard from

    # Twice StatusFrequency of silence, and never a word from this Exchange: it does not deliver.
    _silence(h)
    manage(h.runtime.db, h.runtime.sources, callback_url=callback, status_frequency=1, tracker=h.runtime.tracker)
    assert _open_codes(h) == ["exchange_never_delivers"]
    with h.runtime.db.read() as session:
        [streak] = incidents.open_streaks(session, operators.require(session, ANN).id)
        assert "no notification or heartbeat has ever arrived" in streak.message

    # Had the listener URL not come back to this listener, it would be the listener that cannot be reached.
    with h.runtime.db.transaction() as session:
        listener_checks.record(session, callback, False, "refused")
        streak = incidents.open_streaks(session, operators.require(session, ANN).id)[0]
        incidents.forget(session, streak)
    _silence(h)
    manage(h.runtime.db, h.runtime.sources, callback_url=callback, status_frequency=1, tracker=h.runtime.tracker)
    assert _open_codes(h) == ["listener_unreachable"]


def _check(h: Harness, url: str) -> Any:
    with h.runtime.db.read() as session:
        return listener_checks.latest(session, url)


def _silence(h: Harness) -> None:
    with h.runtime.db.transaction() as session:
        sub = subscriptions.for_operator(session, operators.require(session, ANN).id)
        assert sub is not None
        sub.last_heard_at = utcnow() - dt.timedelta(minutes=3)


@pytest.mark.parametrize("dialect_harness", ["no_watermark"], indirect=True)
def test_a_subscribe_answer_without_watermark_subscribes_and_pushes_arrive(dialect_harness: Harness) -> None:
    h = dialect_harness
    h.enable(ANN)
    h.quiet()
    with h.runtime.db.read() as session:
        sub = subscriptions.for_operator(session, operators.require(session, ANN).id)
        assert sub is not None and sub.watermark is None
    h.emulator.outlook(ANN).create({"subject": "Pushed", "start": (utcnow() + dt.timedelta(days=1)).isoformat()})
    h.wait_for(
        lambda: any(o.subject == "Pushed" for o in occurrences(h.runtime.db, ANN, utcnow(), utcnow() + dt.timedelta(3)))
    )
    [status] = [s for s in _statuses(h) if s.email == ANN]
    assert status.last_heard is not None  # the event came by push
    assert _open_codes(h) == []


def test_the_listener_check_tells_what_is_wrong(tmp_path: Path, schema_dir: Path) -> None:
    emulator = start_emulator(schema_dir, mailboxes=[])
    h = Harness(emulator, f"sqlite:///{tmp_path / 'calsync.sqlite3'}", tmp_path)
    try:
        secret = h.settings.listener_secret.get_secret_value()  # type: ignore[union-attr]
        good = listener_callback_url(h.settings)
        assert reachability.check(good, secret).ok
        wrong_secret = reachability.check(good.replace(secret, "x" * 32), "x" * 32)
        assert not wrong_secret.ok and "404" in wrong_secret.detail and "x" * 32 not in wrong_secret.detail
        other_service = reachability.check(emulator.base_url + "/emulator/health", secret)
        assert not other_service.ok and "not as a calsync listener" in other_service.detail
        another_deployment = reachability.check(good, "y" * 32)
        assert not another_deployment.ok and "another secret" in another_deployment.detail
        nobody = reachability.check("http://127.0.0.1:9/ews/notifications/" + secret, secret)
        assert not nobody.ok and "could not be reached" in nobody.detail and secret not in nobody.detail
        # A person checking the URL from an Exchange server gets an answer, not 405.
        assert httpx.get(good).status_code == 200
    finally:
        h.stop()
        emulator.stop()


def test_a_subscription_made_by_a_subscribe_whose_answer_was_lost_is_ended(tmp_path: Path, schema_dir: Path) -> None:
    """The server made the subscription, but its answer never reached calsync: nothing to undo by request (a push
    subscription ends only by an Unsubscribe answer), so the listener answers Unsubscribe to its first push."""
    emulator = start_emulator(schema_dir, mailboxes=[ANN])
    h = Harness(emulator, f"sqlite:///{tmp_path / 'calsync.sqlite3'}", tmp_path)
    try:
        h.stop_jobs_only()  # ManagePushSubscriptions runs by hand here, and nothing else talks to Exchange
        emulator.set_faults(drop_connections=1)  # the next answer (the Subscribe's) is cut halfway
        callback = listener_callback_url(h.settings)
        with h.runtime.db.transaction() as session:
            operators.add(session, ANN, enabled=True)
        first = manage(h.runtime.db, h.runtime.sources, callback_url=callback, status_frequency=1)
        assert ANN in first.failed
        [orphan] = emulator.exchange.subscriptions.values()
        second = manage(h.runtime.db, h.runtime.sources, callback_url=callback, status_frequency=1)
        assert second.subscribed == [ANN]
        emulator.outlook(ANN).create({"subject": "Wakes both", "start": (utcnow() + dt.timedelta(days=1)).isoformat()})
        h.wait_for(lambda: orphan.state == "unsubscribed")
        kept = [s for s in emulator.exchange.subscriptions.values() if s.state == "active"]
        assert len(kept) == 1 and kept[0].id != orphan.id
    finally:
        h.stop()
        emulator.stop()

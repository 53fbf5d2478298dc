"""The store, on SQLite and on PostgreSQL (every test takes ``database_url``, so each runs on both).

What is pinned here is what a user of calsync relies on: the schema Alembic builds is the schema the models
describe; operators are validated and removing one removes everything of theirs; the application calendar
is written by upsert (replaying a batch gives the same calendar, invariant 5) and read back whole; one
writer per mailbox through a lease and a fencing token (invariant 3); a job's scheduled run happens on one
node only; appointment writes and the sync state that covers them commit together (invariant 4).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select
from sqlalchemy.orm import Session

from calsync.calendar.model import Appointment, Attendee, OccurrenceOverride, Recurrence
from calsync.store import calendar, inbox, jobs, operators, status, subscriptions, syncstate, work
from calsync.store.db import HEAD_REVISION, Database, DatabaseUnavailable, alembic_config
from calsync.store.inbox import InboxEvent
from calsync.store.jobs import JobError
from calsync.store.operators import OperatorError
from calsync.store.tables import (
    AppointmentRow,
    Base,
    MailboxWork,
    NotificationRow,
    SubscriptionRow,
    SyncStateRow,
)
from calsync.store.work import LeaseLost

T = TypeVar("T")

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
CALLBACK = "https://calsync.example.com/ews/notify"
TABLES = {"operators", "appointments", "sync_states", "subscriptions", "notifications", "mailbox_work", "jobs"}


# --- helpers ----------------------------------------------------------------------------------------


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.upgrade()
    yield database
    database.dispose()


def add_operator(db: Database, email: str, *, enabled: bool = True) -> int:
    with db.transaction() as session:
        return operators.add(session, email, enabled=enabled).id


def in_tx(db: Database, fn: Callable[[Session], T]) -> T:
    with db.transaction() as session:
        return fn(session)


def in_read(db: Database, fn: Callable[[Session], T]) -> T:
    with db.read() as session:
        return fn(session)


def rows_of(session: Session, model: Any, operator_id: int) -> int:
    return int(session.scalar(select(func.count()).select_from(model).where(model.operator_id == operator_id)) or 0)


def appointment(item_id: str, start: datetime, hours: float = 1, **changes: Any) -> Appointment:
    return Appointment(
        item_id=item_id,
        change_key=changes.pop("change_key", "ck1"),
        subject=changes.pop("subject", f"subject of {item_id}"),
        start=start,
        end=start + timedelta(hours=hours),
        **changes,
    )


def is_utc(value: datetime | None) -> bool:
    return value is not None and value.tzinfo is not None and value.utcoffset() == timedelta(0)


def utcnow_plus(delta: timedelta) -> datetime:
    return datetime.now(UTC) + delta


def run_threads(count: int, target: Callable[[int], None]) -> list[BaseException]:
    """Run ``target(i)`` in ``count`` threads started together; returns what they raised."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def body(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return errors


# --- migrations -------------------------------------------------------------------------------------


def test_upgrade_creates_the_schema_at_head(database_url: str) -> None:
    db = Database(database_url)
    try:
        assert db.current_revision() is None
        db.upgrade()
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert head is not None
        assert db.current_revision() == head
        assert set(inspect(db.engine).get_table_names()) >= TABLES
    finally:
        db.dispose()


def test_the_head_revision_needs_no_alembic_and_is_alembics_head(database_url: str) -> None:
    db = Database(database_url)
    try:
        assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD_REVISION
        assert db.schema_revision() is None
        db.ensure_schema()
        assert db.schema_revision() == db.current_revision() == HEAD_REVISION
    finally:
        db.dispose()


def test_a_missing_sqlite_file_is_refused_unless_asked_to_create_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/no/such/dir/calsync.sqlite3"
    with pytest.raises(
        DatabaseUnavailable, match=r"no calsync database at .*/no/such/dir/calsync.sqlite3.*calsync init"
    ):
        Database(url, create=False)
    assert not (tmp_path / "no").exists()  # nothing was made
    db = Database(url, create=True)
    try:
        db.ensure_schema()
        made = tmp_path / "no" / "such" / "dir" / "calsync.sqlite3"
        assert made.stat().st_mode & 0o777 == 0o600  # its owner's alone, like the settings file
        assert Database(url, create=False).schema_revision() == HEAD_REVISION
    finally:
        db.dispose()


def test_upgrade_twice_is_harmless_and_keeps_data(database_url: str, db: Database) -> None:
    ann = add_operator(db, "ann@example.com")
    in_tx(db, lambda s: calendar.upsert(s, ann, [appointment("A1", T0)]))
    db.upgrade()
    again = Database(database_url)
    try:
        again.upgrade()
        with again.read() as session:
            assert [o.email for o in operators.listing(session)] == ["ann@example.com"]
            assert calendar.count(session, ann) == 1
    finally:
        again.dispose()


NODE_START = """
import sys, time
from calsync.store import jobs
from calsync.store.db import Database
db = Database(sys.argv[1])
while time.time() < float(sys.argv[2]):
    pass
db.upgrade()
with db.transaction() as session:
    jobs.ensure(session, {jobs.PROCESS_NOTIFICATIONS: 60, jobs.MANAGE_SUBSCRIPTIONS: 300, jobs.RECONCILIATION: 900})
db.dispose()
"""


def test_nodes_starting_together_on_a_fresh_database_all_come_up(database_url: str) -> None:
    # What `calsync serve` / `calsync worker` do at start-up (Runtime.prepare), in three processes at once.
    start_at = time.time() + 2
    nodes = [
        subprocess.Popen(
            [sys.executable, "-c", NODE_START, database_url, str(start_at)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [node.communicate(timeout=120) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0, 0], [err.strip().splitlines()[-1:] for _, err in outputs]
    db = Database(database_url)
    try:
        assert db.current_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert sorted(row.name for row in in_read(db, jobs.listing)) == sorted(jobs.JOB_NAMES)
    finally:
        db.dispose()


def test_migrations_match_the_models_exactly(database_url: str, db: Database) -> None:
    # Nothing is ignored: types and server defaults are compared as well (the models declare no server
    # defaults; every default is a Python-side one, so the migration must declare none either).
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True, "compare_server_default": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


# --- operators --------------------------------------------------------------------------------------


def test_operators_add_list_enable_disable_remove(database_url: str, db: Database) -> None:
    with db.transaction() as session:
        ann = operators.add(session, "  Ann@Example.COM ", display_name="Ann", enabled=True)
        operators.add(session, "bob@example.com")
        assert ann.email == "ann@example.com"  # stored trimmed and in lower case
    with db.read() as session:
        assert [o.email for o in operators.listing(session)] == ["ann@example.com", "bob@example.com"]
        assert [o.email for o in operators.listing(session, enabled=True)] == ["ann@example.com"]
        assert [o.email for o in operators.listing(session, enabled=False)] == ["bob@example.com"]
        found = operators.get(session, "ANN@example.com")
        assert found is not None and found.display_name == "Ann" and found.sync_enabled
        assert is_utc(found.created_at)
    in_tx(db, lambda s: operators.set_enabled(s, "bob@example.com", True))
    in_tx(db, lambda s: operators.set_enabled(s, "ann@example.com", False))
    with db.read() as session:
        assert [o.email for o in operators.listing(session, enabled=True)] == ["bob@example.com"]
    in_tx(db, lambda s: operators.remove(s, "Bob@Example.com"))
    with db.read() as session:
        assert [o.email for o in operators.listing(session)] == ["ann@example.com"]
        assert operators.count(session) == 1
        assert operators.get(session, "bob@example.com") is None


def test_duplicate_operator_is_refused_and_changes_nothing(database_url: str, db: Database) -> None:
    add_operator(db, "ann@example.com", enabled=False)
    with pytest.raises(OperatorError, match=r"operator 'ann@example\.com' exists already"):
        in_tx(db, lambda s: operators.add(s, "ANN@example.com", display_name="Other", enabled=True))
    with db.read() as session:
        only = operators.listing(session)
        assert [(o.email, o.display_name, o.sync_enabled) for o in only] == [("ann@example.com", None, False)]
        assert session.scalar(select(func.count()).select_from(MailboxWork)) == 1
        assert session.scalar(select(func.count()).select_from(SyncStateRow)) == 1


@pytest.mark.parametrize("bad", ["", "ann", "ann@", "@example.com", "ann@@example.com", "ann example@example.com"])
def test_malformed_email_is_refused_and_changes_nothing(database_url: str, db: Database, bad: str) -> None:
    with pytest.raises(OperatorError, match="is not an e-mail address") as raised:
        in_tx(db, lambda s: operators.add(s, bad))
    assert repr(bad)[1:-1] in str(raised.value)  # the message names what was given
    assert in_read(db, operators.count) == 0


def test_unknown_operator_gives_a_clear_error(database_url: str, db: Database) -> None:
    with pytest.raises(OperatorError, match=r"no operator 'cyd@example\.com'"):
        in_tx(db, lambda s: operators.remove(s, "cyd@example.com"))
    with pytest.raises(OperatorError, match=r"no operator 'cyd@example\.com'"):
        in_tx(db, lambda s: operators.set_enabled(s, "cyd@example.com", True))


def test_removing_an_operator_removes_everything_of_theirs(database_url: str, db: Database) -> None:
    ann = add_operator(db, "ann@example.com")
    bob = add_operator(db, "bob@example.com")
    for op_id, sub_id in ((ann, "sub-ann"), (bob, "sub-bob")):
        with db.transaction() as session:
            calendar.upsert(session, op_id, [appointment("A1", T0), appointment("A2", T0 + timedelta(days=1))])
            subscriptions.save(session, op_id, sub_id, "wm", 30, CALLBACK)
            syncstate.save(session, op_id, "state-1")
            inbox.record(session, op_id, sub_id, [InboxEvent("CreatedEvent", "A1", "wm1")], "wm1")
    in_tx(db, lambda s: operators.remove(s, "ann@example.com"))
    with db.read() as session:
        for model in (AppointmentRow, SubscriptionRow, MailboxWork, NotificationRow, SyncStateRow):
            assert rows_of(session, model, ann) == 0, model.__tablename__
            assert rows_of(session, model, bob) >= 1, model.__tablename__
        assert inbox.lookup(session, "sub-ann") is None
        assert calendar.count(session, bob) == 2


# --- calendar ---------------------------------------------------------------------------------------


def test_upsert_by_item_id_keeps_one_row_with_the_latest_values(database_url: str, db: Database) -> None:
    ann = add_operator(db, "ann@example.com")
    first = appointment("A1", T0, subject="Planning", change_key="ck1", location="Room 1")
    later = appointment("A1", T0 + timedelta(hours=2), subject="Planning (moved)", change_key="ck2", location=None)
    in_tx(db, lambda s: calendar.upsert(s, ann, [first]))
    assert in_tx(db, lambda s: calendar.upsert(s, ann, [later])) == 1
    with db.read() as session:
        assert calendar.count(session, ann) == 1
        (stored,) = calendar.all_for(session, ann)
    assert (stored.subject, stored.change_key, stored.location) == ("Planning (moved)", "ck2", None)
    assert (stored.start, stored.end) == (T0 + timedelta(hours=2), T0 + timedelta(hours=3))


def test_replaying_a_batch_gives_the_same_calendar(database_url: str, db: Database) -> None:
    ann = add_operator(db, "ann@example.com")
    batch = [
        appointment("A1", T0, subject="v1"),
        appointment("A2", T0 + timedelta(days=1)),
        appointment("A1", T0, subject="v2", change_key="ck2"),  # a later version of A1 in the same batch wins
    ]
    with db.transaction() as session:
        assert calendar.upsert(session, ann, batch) == 2
        calendar.delete_items(session, ann, ["A2"])
    once = in_read(db, lambda s: calendar.all_for(s, ann))
    for _ in range(2):
        with db.transaction() as session:
            calendar.upsert(session, ann, batch)
            calendar.delete_items(session, ann, ["A2"])
    assert in_read(db, lambda s: calendar.all_for(s, ann)) == once
    assert [(a.item_id, a.subject, a.change_key) for a in once] == [("A1", "v2", "ck2")]


def test_same_item_id_for_two_operators_is_two_appointments(database_url: str, db: Database) -> None:
    ann = add_operator(db, "ann@example.com")
    bob = add_operator(db, "bob@example.com")
    in_tx(db, lambda s: calendar.upsert(s, ann, [appointment("SHARED", T0, subject="ann's")]))
    in_tx(db, lambda s: calendar.upsert(s, bob, [appointment("SHARED", T0, subject="bob's")]))
    with db.read() as session:
        assert [a.subject for a in calendar.all_for(session, ann)] == ["ann's"]
        assert [a.subject for a in calendar.all_for(session, bob)] == ["bob's"]


def full_series() -> Appointment:
    start = datetime(2026, 1, 5, 8, 30, tzinfo=UTC)  # Monday 09:30 in Berlin
    return Appointment(
        item_id="AAMkAD-series=",
        change_key="DwAAABYAAAA",
        subject="Stand-up ☕",
        start=start,
        end=start + timedelta(minutes=15),
        start_tz="W. Europe Standard Time",
        end_tz="Romance Standard Time",
        all_day=False,
        location="Room 4.12",
        body="<p>Daily stand-up</p>",
        organizer_email="ann@example.com",
        organizer_name="Ann Example",
        attendees=(
            Attendee("ann@example.com", "Ann Example", "organizer"),
            Attendee("bob@example.com", None, "accepted"),
            Attendee("cyd@example.com", "Cyd", "tentative", optional=True),
        ),
        status="confirmed",
        private=True,
        show_as="tentative",
        categories=("Team", "Blue category"),
        uid="040000008200E00074C5B7101A82E008",
        recurrence=Recurrence(
            pattern="Weekly",
            interval=2,
            days_of_week=("Monday", "Wednesday"),
            first_day_of_week="Monday",
            range="EndDate",
            start_date=date(2026, 1, 5),
            end_date=date(2026, 6, 29),
        ),
        overrides=(
            OccurrenceOverride(
                datetime(2026, 1, 7, 8, 30, tzinfo=UTC),
                datetime(2026, 1, 7, 10, 0, tzinfo=UTC),
                datetime(2026, 1, 7, 10, 30, tzinfo=UTC),
                subject="Stand-up (late)",
                location="Room 1",
            ),
            OccurrenceOverride(
                datetime(2026, 1, 19, 8, 30, tzinfo=UTC),
                datetime(2026, 1, 19, 8, 30, tzinfo=UTC),
                datetime(2026, 1, 19, 8, 45, tzinfo=UTC),
                cancelled=True,
            ),
        ),
        deleted_occurrences=(datetime(2026, 1, 21, 8, 30, tzinfo=UTC), datetime(2026, 2, 2, 8, 30, tzinfo=UTC)),
        last_modified=datetime(2025, 12, 20, 16, 4, 5, 123000, tzinfo=UTC),
        series_end=datetime(2026, 6, 29, 8, 45, tzinfo=UTC),
    )


def all_datetimes(a: Appointment) -> list[datetime | None]:
    values: list[datetime | None] = [a.start, a.end, a.last_modified, *a.deleted_occurrences]
    for o in a.overrides:
        values += [o.original_start, o.start, o.end]
    return values


def test_every_appointment_field_round_trips(database_url: str, db: Database) -> None:
    ann = add_operator(db, "ann@example.com")
    series = full_series()
    all_day = Appointment(
        item_id="AAMkAD-allday=",
        change_key=None,
        subject=None,
        start=datetime(2026, 3, 9, 23, 0, tzinfo=UTC),  # local midnight in Berlin (UTC+1)
        end=datetime(2026, 3, 11, 23, 0, tzinfo=UTC),
        start_tz="W. Europe Standard Time",
        end_tz="W. Europe Standard Time",
        all_day=True,
        status="cancelled",
        show_as="oof",
    )
    in_tx(db, lambda s: calendar.upsert(s, ann, [series, all_day]))
    with db.read() as session:
        stored = {a.item_id: a for a in calendar.all_for(session, ann)}
    # ``extra`` is the source's hint for the store (the series' end, used for range queries); it is not
    # part of the calendar and is not stored.
    # the store gives each appointment calsync's own id (kept across a move between sources)
    assert all(a.app_id and len(a.app_id) == 36 for a in stored.values())
    assert len({a.app_id for a in stored.values()}) == len(stored)
    assert stored[series.item_id] == dataclasses.replace(series, extra={}, app_id=stored[series.item_id].app_id)
    assert stored[all_day.item_id] == dataclasses.replace(all_day, app_id=stored[all_day.item_id].app_id)
    for a in stored.values():
        assert all(is_utc(v) for v in all_datetimes(a) if v is not None), a.item_id
    assert stored[series.item_id].last_modified is not None
    assert stored[all_day.item_id].last_modified is None


def test_times_given_in_another_zone_come_out_as_the_same_instant_in_utc(database_url: str, db: Database) -> None:
    ann = add_operator(db, "ann@example.com")
    berlin = timezone(timedelta(hours=1))
    start = datetime(2026, 3, 2, 10, 0, tzinfo=berlin)
    in_tx(db, lambda s: calendar.upsert(s, ann, [appointment("A1", start, last_modified=start)]))
    (stored,) = in_read(db, lambda s: calendar.all_for(s, ann))
    assert stored.start == T0 and is_utc(stored.start) and is_utc(stored.end) and is_utc(stored.last_modified)
    assert (stored.start.hour, stored.end.hour) == (9, 10)


def range_ids(db: Database, operator_id: int, start: datetime, end: datetime) -> list[str]:
    return [a.item_id for a in in_read(db, lambda s: calendar.in_range(s, operator_id, start, end))]


def weekly(item_id: str, start: datetime, series_end: datetime | None = None, **changes: Any) -> Appointment:
    return appointment(
        item_id,
        start,
        recurrence=Recurrence("Weekly", days_of_week=("Monday",), start_date=start.date()),
        series_end=series_end,
        **changes,
    )


def test_in_range_single_appointment(database_url: str, db: Database) -> None:
    ann = add_operator(db, "ann@example.com")
    bob = add_operator(db, "bob@example.com")
    in_tx(db, lambda s: calendar.upsert(s, ann, [appointment("single", T0)]))  # 09:00-10:00
    in_tx(db, lambda s: calendar.upsert(s, bob, [appointment("bobs", T0)]))
    h = timedelta(hours=1)
    assert range_ids(db, ann, T0 - 2 * h, T0 + 2 * h) == ["single"]  # covers it
    assert range_ids(db, ann, T0 + h / 2, T0 + 5 * h) == ["single"]  # overlaps its end
    assert range_ids(db, ann, T0 - h, T0 + h / 2) == ["single"]  # overlaps its start
    assert range_ids(db, ann, T0 + h / 4, T0 + h / 2) == ["single"]  # inside it
    assert range_ids(db, ann, T0 - 5 * h, T0 - h) == []  # before it
    assert range_ids(db, ann, T0 + 2 * h, T0 + 5 * h) == []  # after it
    assert range_ids(db, ann, T0 + timedelta(days=1), T0 + timedelta(days=2)) == []


def test_in_range_series(database_url: str, db: Database) -> None:
    ann = add_operator(db, "ann@example.com")
    jan5 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    ended_at = datetime(2026, 2, 2, 10, 0, tzinfo=UTC)
    forever = weekly("forever", jan5)
    ended = weekly("ended", jan5, series_end=ended_at)
    moved = weekly(
        "moved",
        jan5,
        series_end=ended_at,
        overrides=(
            # the last occurrence moved a week after the series' end, the first one moved before its start
            OccurrenceOverride(
                datetime(2026, 2, 2, 9, 0, tzinfo=UTC),
                datetime(2026, 2, 9, 9, 0, tzinfo=UTC),
                datetime(2026, 2, 9, 10, 0, tzinfo=UTC),
            ),
            OccurrenceOverride(
                jan5, datetime(2025, 12, 29, 9, 0, tzinfo=UTC), datetime(2025, 12, 29, 10, 0, tzinfo=UTC)
            ),
        ),
    )
    in_tx(db, lambda s: calendar.upsert(s, ann, [forever, ended, moved]))
    day = timedelta(days=1)

    def ids(start: datetime, end: datetime) -> set[str]:
        return set(range_ids(db, ann, start, end))

    # a never-ending series is in every range after it starts, however far away
    assert ids(datetime(2026, 1, 10, tzinfo=UTC), datetime(2026, 1, 11, tzinfo=UTC)) == {"forever", "ended", "moved"}
    assert ids(datetime(2040, 7, 1, tzinfo=UTC), datetime(2040, 7, 2, tzinfo=UTC)) == {"forever"}
    assert ids(datetime(2099, 12, 30, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)) == {"forever"}
    # an ended series only while the range overlaps its span
    assert ids(ended_at - timedelta(minutes=30), ended_at + day) == {"forever", "ended", "moved"}
    assert ids(ended_at + day, ended_at + 2 * day) == {"forever", "moved"}
    assert ids(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)) == {"forever"}
    # an occurrence moved outside the series' span keeps the series in ranges that contain the occurrence
    assert ids(datetime(2026, 2, 9, tzinfo=UTC), datetime(2026, 2, 10, tzinfo=UTC)) == {"forever", "moved"}
    assert ids(datetime(2026, 2, 11, tzinfo=UTC), datetime(2026, 2, 12, tzinfo=UTC)) == {"forever"}
    assert ids(datetime(2025, 12, 29, tzinfo=UTC), datetime(2025, 12, 30, tzinfo=UTC)) == {"moved"}
    # nothing before any of them
    assert ids(datetime(2025, 12, 1, tzinfo=UTC), datetime(2025, 12, 2, tzinfo=UTC)) == set()


def test_delete_items(database_url: str, db: Database) -> None:
    ann = add_operator(db, "ann@example.com")
    bob = add_operator(db, "bob@example.com")
    batch = [appointment(f"A{i}", T0 + timedelta(days=i)) for i in range(3)]
    in_tx(db, lambda s: calendar.upsert(s, ann, batch))
    in_tx(db, lambda s: calendar.upsert(s, bob, batch))
    assert in_tx(db, lambda s: calendar.delete_items(s, ann, ["A0", "A2", "unknown"])) == 2
    assert in_tx(db, lambda s: calendar.delete_items(s, ann, ["A0"])) == 0  # replaying a delete is harmless
    assert in_tx(db, lambda s: calendar.delete_items(s, ann, [])) == 0
    with db.read() as session:
        assert [a.item_id for a in calendar.all_for(session, ann)] == ["A1"]
        assert calendar.count(session, bob) == 3


def test_sweep_deletes_what_a_full_sync_did_not_see(database_url: str, db: Database) -> None:
    ann = add_operator(db, "ann@example.com")
    bob = add_operator(db, "bob@example.com")
    old = [appointment(f"A{i}", T0 + timedelta(days=i)) for i in range(3)]
    in_tx(db, lambda s: calendar.upsert(s, ann, old))
    in_tx(db, lambda s: calendar.upsert(s, bob, old))
    time.sleep(0.01)
    started = in_tx(db, lambda s: syncstate.start_full(s, ann))
    time.sleep(0.01)
    in_tx(db, lambda s: calendar.upsert(s, ann, [old[1], appointment("NEW", T0)]))  # what the full sync saw
    assert in_tx(db, lambda s: calendar.sweep(s, ann, started)) == 2
    with db.read() as session:
        assert sorted(a.item_id for a in calendar.all_for(session, ann)) == ["A1", "NEW"]
        assert calendar.count(session, bob) == 3  # another operator's calendar is not swept


# --- work and leases (invariant 3) -------------------------------------------------------------------


def claim(db: Database, owner: str = "w1", lease: float = 60, **kwargs: Any) -> work.Claim | None:
    return in_tx(db, lambda s: work.claim(s, owner, lease, **kwargs))


def mark(db: Database, operator_id: int, **kwargs: Any) -> None:
    in_tx(db, lambda s: work.mark_dirty(s, operator_id, **kwargs))


def due(db: Database, now: datetime | None = None) -> int:
    return in_read(db, lambda s: work.pending(s, now=now))


def test_nothing_to_claim_until_marked_dirty(database_url: str, db: Database) -> None:
    add_operator(db, "ann@example.com")
    assert claim(db) is None
    assert due(db) == 0


def test_marks_before_a_claim_make_one_claim_with_the_latest_generation(database_url: str, db: Database) -> None:
    ann = add_operator(db, "ann@example.com")
    mark(db, ann)
    mark(db, ann)
    assert due(db) == 1
    first = claim(db, "w1")
    assert first is not None
    assert (first.operator_id, first.email, first.owner, first.full_sync) == (ann, "ann@example.com", "w1", False)
    assert first.generation == 2
    assert claim(db, "w2") is None  # leased
    assert claim(db, "w2", operator_id=ann) is None  # leased, even when asked for by id
    assert due(db) == 0
    in_tx(db, lambda s: work.finish(s, first))
    assert due(db) == 0
    assert claim(db, "w2") is None
    row = in_read(db, lambda s: work.get(s, ann))
    assert row is not None
    assert (row.done_gen, row.dirty_since, row.lease_owner, row.lease_until, row.passes) == (2, None, None, None, 1)


def test_marks_during_a_pass_make_exactly_one_more_pass(database_url: str, db: Database) -> None:
    ann = add_operator(db, "ann@example.com")
    mark(db, ann)
    first = claim(db, "w1")
    assert first is not None and first.generation == 1
    for _ in range(3):
        mark(db, ann)
    assert claim(db, "w2") is None  # still leased by w1
    in_tx(db, lambda s: work.finish(s, first, now=T0))
    # the follow-up pass is held back a moment, so a burst still arriving is read by that one pass
    held = T0 + work.FOLLOW_UP_HOLD
    assert due(db, now=held - timedelta(milliseconds=1)) == 0
    assert claim(db, "w2", now=held - timedelta(milliseconds=1)) is None
    assert in_read(db, lambda s: work.next_due_in(s, now=T0)) == pytest.approx(0.3)
    assert due(db, now=held) == 1
    second = claim(db, "w2", now=held)
    assert second is not None and second.generation == 4 and second.fence > first.fence
    in_tx(db, lambda s: work.finish(s, second, now=held))
    assert due(db, now=held + timedelta(seconds=1)) == 0
    assert claim(db, "w3", now=held + timedelta(seconds=1)) is None
    assert in_read(db, lambda s: work.next_due_in(s, now=held)) is None  # nothing waits: no hold left behind


def test_an_expired_lease_is_taken_over_and_the_old_worker_cannot_commit(database_url: str, db: Database) -> None:
    ann = add_operator(db, "ann@example.com")
    with db.transaction() as session:
        syncstate.save(session, ann, "state-0")
        subscriptions.save(session, ann, "sub-ann", "wm", 30, CALLBACK)
        inbox.record(session, ann, "sub-ann", [InboxEvent("CreatedEvent", "A1", "wm1")], "wm1")
    old = claim(db, "old", 60, now=T0)
    assert old is not None and old.sync_state == "state-0"
    assert claim(db, "new", 60, now=T0 + timedelta(seconds=59)) is None  # not expired yet
    new = claim(db, "new", 60, now=T0 + timedelta(seconds=61))
    assert new is not None and new.fence > old.fence and new.generation == old.generation

    with pytest.raises(LeaseLost), db.transaction() as session:
        work.check_fence(session, old)
    # The old worker's last batch: appointments, sync state and finish in one transaction. Nothing of it lands.
    with pytest.raises(LeaseLost), db.transaction() as session:
        calendar.upsert(session, ann, [appointment("A1", T0)])
        syncstate.save(session, ann, "state-from-old-worker")
        work.finish(session, old)
    in_tx(db, lambda s: work.release(s, old, retry_at=T0 + timedelta(days=1)))  # ignored: not the holder

    with db.read() as session:
        row = work.get(session, ann)
        assert row is not None
        assert (row.fence, row.lease_owner, row.done_gen, row.not_before, row.attempts) == (
            new.fence,
            "new",
            0,
            None,
            0,
        )
        assert calendar.count(session, ann) == 0
        assert syncstate.get(session, ann).state == "state-0"
        assert inbox.pending_count(session, ann) == 1
    # the new holder's lease is intact and it can finish
    in_tx(db, lambda s: work.check_fence(s, new))
    in_tx(db, lambda s: work.finish(s, new))
    assert due(db) == 0


def test_a_tiny_lease_expires_in_real_time(database_url: str, db: Database) -> None:
    ann = add_operator(db, "ann@example.com")
    mark(db, ann)
    old = claim(db, "old", 0.001)
    assert old is not None
    time.sleep(0.01)
    new = claim(db, "new", 60)
    assert new is not None and new.fence == old.fence + 1
    with pytest.raises(LeaseLost), db.transaction() as session:
        work.finish(session, old)


def test_renewing_the_lease_keeps_others_out(database_url: str, db: Database) -> None:
    ann = add_operator(db, "ann@example.com")
    mark(db, ann)
    held = claim(db, "w1", 60, now=T0)
    assert held is not None
    in_tx(db, lambda s: work.check_fence(s, held, renew_seconds=600, now=T0 + timedelta(seconds=30)))
    assert claim(db, "w2", 60, now=T0 + timedelta(seconds=300)) is None
    assert claim(db, "w2", 60, now=T0 + timedelta(seconds=631)) is not None


def test_release_keeps_the_mailbox_dirty_until_retry_at(database_url: str, db: Database) -> None:
    ann = add_operator(db, "ann@example.com")
    mark(db, ann)
    held = claim(db, "w1", 60, now=T0)
    assert held is not None
    retry_at = T0 + timedelta(minutes=5)
    in_tx(db, lambda s: work.release(s, held, retry_at=retry_at))
    with db.read() as session:
        row = work.get(session, ann)
        assert row is not None and row.dirty_gen > row.done_gen and row.lease_owner is None
        assert work.attempts(session, ann) == 1
    assert due(db, T0 + timedelta(minutes=1)) == 0
    assert claim(db, "w2", 60, now=T0 + timedelta(minutes=1)) is None
    assert due(db, retry_at) == 1
    again = claim(db, "w2", 60, now=retry_at)
    assert again is not None and again.generation == held.generation and again.fence > held.fence
    in_tx(db, lambda s: work.finish(s, again))
    assert in_read(db, lambda s: work.attempts(s, ann)) == 0  # a finished pass resets the failure count


def test_disabled_operators_are_never_claimed(database_url: str, db: Database) -> None:
    ann = add_operator(db, "ann@example.com", enabled=False)
    mark(db, ann)
    assert claim(db) is None
    assert claim(db, operator_id=ann) is None
    assert due(db) == 0
    in_tx(db, lambda s: operators.set_enabled(s, "ann@example.com", True))
    assert due(db) == 1
    held = claim(db)
    assert held is not None and held.operator_id == ann
    in_tx(db, lambda s: operators.set_enabled(s, "ann@example.com", False))
    mark(db, ann)
    in_tx(db, lambda s: work.finish(s, held))
    assert claim(db) is None  # still owed a pass, but not while disabled


def test_claim_by_operator_id_targets_that_mailbox(database_url: str, db: Database) -> None:
    ann = add_operator(db, "ann@example.com")
    bob = add_operator(db, "bob@example.com")
    mark(db, ann, now=T0)
    mark(db, bob, now=T0 + timedelta(minutes=1))
    targeted = claim(db, operator_id=bob)
    assert targeted is not None and targeted.operator_id == bob
    other = claim(db)
    assert other is not None and other.operator_id == ann
    assert claim(db) is None


def test_the_longest_waiting_mailbox_is_claimed_first(database_url: str, db: Database) -> None:
    ids = [add_operator(db, f"user{i}@example.com") for i in range(3)]
    mark(db, ids[1], now=T0 - timedelta(minutes=30))
    mark(db, ids[2], now=T0 - timedelta(minutes=20))
    mark(db, ids[0], now=T0 - timedelta(minutes=10))
    mark(db, ids[1], now=T0)  # a later mark does not move a mailbox to the back of the queue
    order = [c.operator_id for c in (claim(db), claim(db), claim(db)) if c is not None]
    assert order == [ids[1], ids[2], ids[0]]


def test_dirty_since_is_the_same_instant_on_every_database(database_url: str, db: Database) -> None:
    ann = add_operator(db, "ann@example.com")
    mark(db, ann, now=datetime(2026, 3, 2, 10, 0, tzinfo=timezone(timedelta(hours=1))))
    row = in_read(db, lambda s: work.get(s, ann))
    assert row is not None and row.dirty_since == T0 and is_utc(row.dirty_since)


def test_full_sync_claims_start_without_a_sync_state(database_url: str, db: Database) -> None:
    ann = add_operator(db, "ann@example.com")
    in_tx(db, lambda s: syncstate.save(s, ann, "state-1"))
    mark(db, ann, full_sync=True)
    held = claim(db)
    assert held is not None and held.full_sync and held.sync_state is None
    in_tx(db, lambda s: work.finish(s, held))
    assert due(db) == 0
    mark(db, ann)
    incremental = claim(db)
    assert incremental is not None and not incremental.full_sync and incremental.sync_state == "state-1"


@pytest.mark.parametrize("two_databases", [False, True], ids=["one-db", "two-dbs"])
def test_concurrent_claims_never_share_a_mailbox(database_url: str, db: Database, two_databases: bool) -> None:
    ids = set()
    with db.transaction() as session:
        for i in range(20):
            op_id = operators.add(session, f"user{i:02}@example.com", enabled=True).id
            work.mark_dirty(session, op_id)
            ids.add(op_id)
    other = Database(database_url) if two_databases else db
    claimed: list[tuple[int, str]] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        database = other if i % 2 else db
        while True:
            with database.transaction() as session:
                got = work.claim(session, f"w{i}", 60)
            if got is None:
                return
            with lock:
                claimed.append((got.operator_id, got.owner))

    try:
        errors = run_threads(4, worker)
    finally:
        if other is not db:
            other.dispose()
    assert errors == []
    assert sorted(op_id for op_id, _ in claimed) == sorted(ids)  # every mailbox exactly once
    with db.read() as session:
        owners = {w.operator_id: w.lease_owner for w in session.scalars(select(MailboxWork))}
    assert owners == dict(claimed)


# --- inbox ------------------------------------------------------------------------------------------


@pytest.fixture
def subscribed(db: Database) -> int:
    ann = add_operator(db, "ann@example.com")
    in_tx(db, lambda s: subscriptions.save(s, ann, "sub-ann", "wm0", 30, CALLBACK, now=T0))
    return ann


def test_lookup_tells_who_a_subscription_belongs_to(database_url: str, db: Database, subscribed: int) -> None:
    with db.read() as session:
        assert inbox.lookup(session, "sub-ann") == inbox.Delivery(subscribed, "ann@example.com", True)
        assert inbox.lookup(session, "sub-unknown") is None
    in_tx(db, lambda s: operators.set_enabled(s, "ann@example.com", False))
    assert in_read(db, lambda s: inbox.lookup(s, "sub-ann")) == inbox.Delivery(subscribed, "ann@example.com", False)


def test_recording_events_stores_them_and_marks_the_mailbox_dirty(
    database_url: str, db: Database, subscribed: int
) -> None:
    events = [InboxEvent("CreatedEvent", "A1", "wm1"), InboxEvent("ModifiedEvent", "A2", "wm2")]
    when = T0 + timedelta(minutes=3)
    assert in_tx(db, lambda s: inbox.record(s, subscribed, "sub-ann", events, "wm2", now=when)) == 2
    with db.read() as session:
        assert inbox.pending_count(session, subscribed) == 2
        assert work.pending(session) == 1
        sub = subscriptions.for_operator(session, subscribed)
        assert sub is not None
        assert (sub.events, sub.heartbeats, sub.watermark, sub.last_heard_at) == (2, 0, "wm2", when)
        stored = session.scalars(select(NotificationRow).order_by(NotificationRow.id)).all()
        assert [(n.kind, n.item_id, n.watermark, n.processed) for n in stored] == [
            ("CreatedEvent", "A1", "wm1", False),
            ("ModifiedEvent", "A2", "wm2", False),
        ]
        assert all(n.received_at == when for n in stored)


def test_a_heartbeat_is_heard_but_marks_nothing_dirty(database_url: str, db: Database, subscribed: int) -> None:
    when = T0 + timedelta(minutes=30)
    assert in_tx(db, lambda s: inbox.record(s, subscribed, "sub-ann", [], "wm-hb", now=when)) == 0
    with db.read() as session:
        sub = subscriptions.for_operator(session, subscribed)
        assert sub is not None
        assert (sub.heartbeats, sub.events, sub.last_heard_at, sub.watermark) == (1, 0, when, "wm-hb")
        assert inbox.pending_count(session, subscribed) == 0
        assert work.pending(session) == 0
        row = work.get(session, subscribed)
        assert row is not None and row.dirty_gen == row.done_gen == 0
        assert not subscriptions.is_silent(sub, when + timedelta(minutes=60))
        assert subscriptions.is_silent(sub, when + timedelta(minutes=61))


def test_finish_marks_only_the_notifications_the_pass_covers(database_url: str, db: Database, subscribed: int) -> None:
    def record(*item_ids: str) -> None:
        events = [InboxEvent("ModifiedEvent", i, None) for i in item_ids]
        in_tx(db, lambda s: inbox.record(s, subscribed, "sub-ann", events, None))

    record("A1", "A2")
    held = claim(db)
    assert held is not None and held.last_notification_id > 0
    record("A3")  # arrives during the pass
    in_tx(db, lambda s: work.finish(s, held))
    with db.read() as session:
        assert inbox.pending_count(session, subscribed) == 1
        pending = session.scalars(select(NotificationRow.item_id).where(NotificationRow.processed.is_(False))).all()
        assert pending == ["A3"]
    later = utcnow_plus(work.FOLLOW_UP_HOLD)
    assert due(db, now=later) == 1  # and one more pass is owed for it (after the follow-up hold)
    again = claim(db, now=later)
    assert again is not None
    in_tx(db, lambda s: work.finish(s, again))
    assert in_read(db, lambda s: inbox.pending_count(s, subscribed)) == 0
    assert in_tx(db, lambda s: inbox.prune(s, utcnow_plus(timedelta(minutes=1)))) == 3


# --- jobs -------------------------------------------------------------------------------------------

PROC, MANAGE = jobs.PROCESS_NOTIFICATIONS, jobs.MANAGE_SUBSCRIPTIONS


@pytest.fixture
def with_jobs(db: Database) -> Database:
    in_tx(db, lambda s: jobs.ensure(s, {PROC: 60, MANAGE: 300}))
    return db


def test_ensure_creates_the_job_rows_once(database_url: str, db: Database) -> None:
    in_tx(db, lambda s: jobs.ensure(s, {PROC: 60, MANAGE: 300}))
    in_tx(db, lambda s: jobs.set_interval(s, PROC, 120))
    in_tx(db, lambda s: jobs.ensure(s, {PROC: 10, MANAGE: 10}))  # existing rows are not reset
    rows = in_read(db, jobs.listing)
    assert [(r.name, r.interval_seconds, r.enabled, r.runs) for r in rows] == [
        (MANAGE, 300, True, 0),
        (PROC, 120, True, 0),
    ]


def test_ensure_on_nodes_racing_creates_each_row_once(database_url: str, db: Database) -> None:
    nodes = [db, Database(database_url)]
    try:

        def node(i: int) -> None:
            with nodes[i % 2].transaction() as session:
                jobs.ensure(session, {PROC: 60 + i, MANAGE: 300 + i})

        assert run_threads(4, node) == []
    finally:
        nodes[1].dispose()
    rows = in_read(db, jobs.listing)
    assert [r.name for r in rows] == [MANAGE, PROC]


@pytest.mark.parametrize("seconds", [0, -5, 86401, 10**9])
def test_set_interval_refuses_out_of_range(database_url: str, with_jobs: Database, seconds: int) -> None:
    with pytest.raises(JobError, match=rf"interval {seconds} s is out of range; allowed: 1\.\.86400 seconds"):
        in_tx(with_jobs, lambda s: jobs.set_interval(s, PROC, seconds))
    assert in_read(with_jobs, lambda s: jobs.require(s, PROC).interval_seconds) == 60


def test_set_interval_accepts_the_bounds_and_names_unknown_jobs(database_url: str, with_jobs: Database) -> None:
    assert in_tx(with_jobs, lambda s: jobs.set_interval(s, PROC.lower(), 1).interval_seconds) == 1
    assert in_tx(with_jobs, lambda s: jobs.set_interval(s, MANAGE, 86400).interval_seconds) == 86400
    with pytest.raises(JobError, match=rf"no job 'Nightly'; jobs are: {PROC}, {MANAGE}"):
        in_tx(with_jobs, lambda s: jobs.set_interval(s, "Nightly", 60))


def test_take_due_once_per_interval_and_when_requested(database_url: str, with_jobs: Database) -> None:
    db = with_jobs
    now = utcnow_plus(timedelta(seconds=1))

    def take(at: datetime) -> bool:
        return in_tx(db, lambda s: jobs.take_due(s, PROC, now=at))

    assert take(now) is True
    assert take(now) is False
    assert take(now + timedelta(seconds=59)) is False
    assert take(now + timedelta(seconds=60)) is True
    assert take(now + timedelta(seconds=61)) is False
    in_tx(db, lambda s: jobs.request_run(s, PROC))
    assert take(now + timedelta(seconds=62)) is True
    assert take(now + timedelta(seconds=63)) is False
    assert take(now + timedelta(seconds=62 + 60)) is True
    assert in_tx(db, lambda s: jobs.take_due(s, "NoSuchJob", now=now)) is False


def test_a_disabled_job_is_never_due(database_url: str, with_jobs: Database) -> None:
    db = with_jobs
    in_tx(db, lambda s: jobs.set_enabled(s, PROC, False))
    in_tx(db, lambda s: jobs.request_run(s, PROC))
    with db.transaction() as session:
        assert not jobs.is_enabled(session, PROC)
        assert jobs.is_enabled(session, MANAGE)
        assert not jobs.take_due(session, PROC, now=utcnow_plus(timedelta(days=365)))
    in_tx(db, lambda s: jobs.set_enabled(s, PROC, True))
    assert in_tx(db, lambda s: jobs.take_due(s, PROC)) is True  # the request was kept


def test_two_nodes_racing_for_a_due_job_take_it_once(database_url: str, with_jobs: Database) -> None:
    nodes = [with_jobs, Database(database_url)]
    try:
        for round_ in range(6):
            if round_ % 2:
                in_tx(with_jobs, lambda s: jobs.request_run(s, MANAGE))
                at = utcnow_plus(timedelta(0))
            else:
                at = utcnow_plus(timedelta(days=round_ + 1))  # a whole interval (or many) later: due
            taken: list[bool] = []

            def node(i: int, at: datetime = at, taken: list[bool] = taken) -> None:
                with nodes[i].transaction() as session:
                    taken.append(jobs.take_due(session, MANAGE, now=at))

            assert run_threads(2, node) == []
            assert sorted(taken) == [False, True], f"round {round_}"
    finally:
        nodes[1].dispose()


def test_record_run(database_url: str, with_jobs: Database) -> None:
    db = with_jobs
    before = datetime.now(UTC)
    in_tx(db, lambda s: jobs.record_run(s, PROC, "ok: 3 passes", 42, now=T0))
    in_tx(db, lambda s: jobs.record_run(s, PROC, "failed: " + "x" * 5000, 7))
    in_tx(db, lambda s: jobs.record_run(s, "NoSuchJob", "ok", 1))  # ignored
    row = in_read(db, lambda s: jobs.require(s, PROC))
    assert row.runs == 2 and row.last_duration_ms == 7
    assert row.last_outcome is not None and row.last_outcome.startswith("failed: ") and len(row.last_outcome) == 2000
    assert row.last_run_at is not None and is_utc(row.last_run_at) and row.last_run_at >= before


# --- sync state -------------------------------------------------------------------------------------


def test_sync_state_save_and_get(database_url: str, db: Database) -> None:
    ann = add_operator(db, "ann@example.com")
    with db.read() as session:
        fresh = syncstate.get(session, ann)
        assert (fresh.state, fresh.initial_done, fresh.full_sync_started_at) == (None, False, None)
    in_tx(db, lambda s: syncstate.save(s, ann, "H4sIAAAA-state-1", now=T0))
    in_tx(db, lambda s: syncstate.save(s, ann, "H4sIAAAA-state-2" * 500, now=T0 + timedelta(minutes=1)))
    with db.read() as session:
        row = syncstate.get(session, ann)
        assert row.state == "H4sIAAAA-state-2" * 500 and row.updated_at == T0 + timedelta(minutes=1)


def test_full_sync_start_is_returned_once_on_completion(database_url: str, db: Database) -> None:
    ann = add_operator(db, "ann@example.com")
    in_tx(db, lambda s: syncstate.save(s, ann, "state-1"))
    assert in_tx(db, lambda s: syncstate.start_full(s, ann, now=T0)) == T0
    # a restart of a full sync that has not completed keeps the first start (what to sweep from)
    assert in_tx(db, lambda s: syncstate.start_full(s, ann, now=T0 + timedelta(hours=1))) == T0
    with db.read() as session:
        assert syncstate.get(session, ann).state is None
    in_tx(db, lambda s: syncstate.save(s, ann, "state-2"))
    assert in_tx(db, lambda s: syncstate.complete(s, ann)) == T0
    assert in_tx(db, lambda s: syncstate.complete(s, ann)) is None
    with db.read() as session:
        row = syncstate.get(session, ann)
        assert (row.state, row.initial_done, row.full_sync_started_at) == ("state-2", True, None)


# --- status -----------------------------------------------------------------------------------------


def test_operator_statuses(database_url: str, db: Database) -> None:
    ann = add_operator(db, "ann@example.com")
    add_operator(db, "bob@example.com", enabled=False)
    with db.transaction() as session:
        subscriptions.save(session, ann, "sub-ann", "wm", 30, CALLBACK, now=T0)
        calendar.upsert(session, ann, [appointment(f"A{i}", T0 + timedelta(days=i)) for i in range(3)])
        events = [InboxEvent("CreatedEvent", "A1", None), InboxEvent("DeletedEvent", "A9", None)]
        inbox.record(session, ann, "sub-ann", events, None, now=T0 + timedelta(minutes=5))
        operators.record_error(session, ann, "ErrorServerBusy", "The server cannot service this request right now.")
        syncstate.complete(session, ann)
    ann_status, bob_status = in_read(db, status.operator_statuses)
    assert ann_status.email == "ann@example.com" and ann_status.enabled
    assert ann_status.subscribed and ann_status.last_heard == T0 + timedelta(minutes=5)
    assert ann_status.subscribed_at == T0
    assert ann_status.last_heartbeat is None  # an event came, but no heartbeat yet
    with db.transaction() as session:
        inbox.record(session, ann, "sub-ann", [], None, now=T0 + timedelta(minutes=7))  # a StatusEvent
    heartbeat, _ = in_read(db, status.operator_statuses)
    assert heartbeat.last_heartbeat == heartbeat.last_heard == T0 + timedelta(minutes=7)
    assert (ann_status.pending_notifications, ann_status.dirty, ann_status.appointments) == (2, True, 3)
    assert ann_status.initial_sync_done
    assert ann_status.last_error_code == "ErrorServerBusy"
    assert ann_status.last_error_message == "The server cannot service this request right now."
    assert ann_status.last_error_at is not None and is_utc(ann_status.last_error_at)
    assert bob_status == status.OperatorStatus(
        email="bob@example.com",
        enabled=False,
        subscribed=False,
        last_heartbeat=None,
        last_sync=None,
        initial_sync_done=False,
        pending_notifications=0,
        dirty=False,
        appointments=0,
        last_error_code=None,
        last_error_message=None,
        last_error_at=None,
    )
    # a finished pass clears dirty and pending; a success clears the error
    held = claim(db)
    assert held is not None
    with db.transaction() as session:
        work.finish(session, held)
        operators.record_success(session, ann, T0 + timedelta(minutes=6))
    ann_status = in_read(db, status.operator_statuses)[0]
    assert (ann_status.pending_notifications, ann_status.dirty) == (0, False)
    assert (ann_status.last_error_code, ann_status.last_sync) == (None, T0 + timedelta(minutes=6))


# --- atomicity (invariant 4) ------------------------------------------------------------------------


def test_a_failure_inside_a_transaction_writes_neither_appointments_nor_sync_state(
    database_url: str, db: Database
) -> None:
    ann = add_operator(db, "ann@example.com")
    with db.transaction() as session:
        calendar.upsert(session, ann, [appointment("A1", T0, subject="old")])
        syncstate.save(session, ann, "state-1")

    class Crash(Exception):
        pass

    with pytest.raises(Crash), db.transaction() as session:
        calendar.upsert(session, ann, [appointment("A1", T0, subject="new"), appointment("A2", T0)])
        calendar.delete_items(session, ann, ["A1"])
        syncstate.save(session, ann, "state-2")
        session.flush()  # the statements reached the database; only the commit is missing
        raise Crash
    with db.read() as session:
        assert [(a.item_id, a.subject) for a in calendar.all_for(session, ann)] == [("A1", "old")]
        assert syncstate.get(session, ann).state == "state-1"


def test_reconciliation_marks_mailboxes_without_a_recent_pass(database_url: str) -> None:
    from datetime import UTC, datetime, timedelta

    from calsync.store import operators, work
    from calsync.store.db import Database

    db = Database(database_url)
    db.upgrade()
    with db.transaction() as session:
        fresh = operators.add(session, "fresh@example.com", enabled=True)
        stale = operators.add(session, "stale@example.com", enabled=True)
        never = operators.add(session, "never@example.com", enabled=True)  # no pass yet: the initial sync's job
        off = operators.add(session, "off@example.com", enabled=True)
        ids = {o.email: o.id for o in (fresh, stale, never, off)}
    now = datetime.now(UTC)
    for email, finished in (
        ("fresh@example.com", now),
        ("stale@example.com", now - timedelta(hours=7)),
        ("off@example.com", now - timedelta(hours=7)),
    ):
        with db.transaction() as session:
            work.mark_dirty(session, ids[email])
            claim = work.claim(session, "t", 60, operator_id=ids[email], now=finished)
            assert claim is not None
            work.finish(session, claim, now=finished)
    with db.transaction() as session:
        operators.set_enabled(session, "off@example.com", False)  # disabled operators are left alone
    with db.transaction() as session:
        assert work.mark_stale(session, now - timedelta(hours=6)) == 1
    with db.transaction() as session:
        claimed = work.claim(session, "w", 60)
    assert claimed is not None and claimed.email == "stale@example.com"
    with db.transaction() as session:
        assert work.claim(session, "w2", 60) is None
        assert work.mark_stale(session, now - timedelta(hours=6)) == 0  # already due: not marked twice
    db.dispose()

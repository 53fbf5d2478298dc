"""The EWS source against the emulator: paging and request counts, the mapping of every calendar feature to the
application's Appointment (checked against what the emulator stored, and by expanding series against its ground
truth), subscriptions, mailbox checks and the classification of every failure."""

from __future__ import annotations

import base64
import collections
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import requests
from exchangelib import errors as xerr

from calsync.calendar.expand import expand_all
from calsync.calendar.model import Appointment, Attendee, Recurrence
from calsync.emulator import Emulator
from calsync.emulator import timezones as emu_tz
from calsync.sources.base import ChangePage, SourceError
from calsync.sources.ews import EwsSource, classify

from .conftest import SERVICE_PASSWORD, SERVICE_USER

ANN, BOB, CYD = "ann@example.com", "bob@example.com", "cyd@example.com"
BERLIN = "W. Europe Standard Time"
CALLBACK = "http://127.0.0.1:9/calsync/ews/notify?tenant=1"  # nobody listens: deliveries just fail


# --- helpers -----------------------------------------------------------------------------------------------------


@pytest.fixture
def source_factory(emulator: Emulator) -> Iterator[Callable[..., EwsSource]]:
    made: list[EwsSource] = []

    def make(emu: Emulator | None = None, **kwargs: Any) -> EwsSource:
        emu = emu or emulator
        kwargs.setdefault("username", SERVICE_USER)
        kwargs.setdefault("password", SERVICE_PASSWORD)
        src = EwsSource(emu.url, kwargs.pop("username"), kwargs.pop("password"), timeout=10, **kwargs)
        made.append(src)
        return src

    yield make
    for src in made:
        src.close()


@pytest.fixture
def source(source_factory: Callable[..., EwsSource]) -> EwsSource:
    return source_factory()


def sync(src: EwsSource, mailbox: str, state: str | None = None, batch: int = 512) -> tuple[list[ChangePage], str]:
    pages = list(src.changes(mailbox, state, batch))
    return pages, pages[-1].sync_state


def upserts(pages: list[ChangePage]) -> dict[str, Appointment]:
    return {a.item_id: a for page in pages for a in page.upserts}


def only(pages: list[ChangePage], subject: str) -> Appointment:
    [found] = [a for a in upserts(pages).values() if a.subject == subject]
    return found


def stored(emu: Emulator, address: str, item_id: str) -> Any:
    mbx = emu.exchange.mailbox(address)
    return emu.exchange.resolve_item(mbx, item_id)


def ops(emu: Emulator) -> tuple[int, int]:
    stats = emu.exchange.stats
    return stats.get("op:SyncFolderItems", 0), stats.get("op:GetItem", 0)


def occurrences_multiset(apps: Any, lo: datetime, hi: datetime) -> collections.Counter[tuple[Any, ...]]:
    return collections.Counter((o.start, o.end, o.subject) for o in expand_all(apps, lo, hi))


def truth_multiset(emu: Emulator, address: str, lo: datetime, hi: datetime) -> collections.Counter[tuple[Any, ...]]:
    return collections.Counter(
        (datetime.fromisoformat(t["start"]), datetime.fromisoformat(t["end"]), t["subject"])
        for t in emu.truth(address, lo, hi)
    )


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# --- paging and cost ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [10, 512])
def test_initial_sync_of_a_populated_mailbox(emulator, source, batch):
    emulator.add_mailbox("pop@example.com", populate_count=120, seed=3)
    pages, _ = sync(source, "pop@example.com", batch=batch)

    assert len(pages) == -(-120 // batch)
    ids = [a.item_id for page in pages for a in page.upserts]
    assert len(ids) == len(set(ids)) == 120
    assert set(ids) == {i.item_id for i in emulator.outlook("pop@example.com").items()}
    assert all(not page.deletes for page in pages)
    assert [page.done for page in pages] == [False] * (len(pages) - 1) + [True]
    states = [page.sync_state for page in pages]
    assert len(set(states)) == len(states) and all(states)
    # Cost: 1 SyncFolderItems + 1 GetItem per page, + 1 GetItem when the page holds series with exceptions.
    syncs, gets = ops(emulator)
    assert syncs == len(pages)
    assert gets == sum(page.requests for page in pages) - len(pages)
    assert [p.requests for p in pages] == [3 if any(a.overrides for a in p.upserts) else 2 for p in pages]
    assert any(p.requests == 3 for p in pages), "the sample calendar has series with moved occurrences"

    # Nothing changed since: one request, nothing in it, done.
    before = ops(emulator)
    [again] = list(source.changes("pop@example.com", states[-1], batch))
    assert (again.upserts, again.deletes, again.done, again.requests) == ((), (), True, 1)
    assert ops(emulator) == (before[0] + 1, before[1])


def test_requests_per_page_exactly(emulator, source):
    ann = emulator.outlook(ANN)
    singles = [ann.create({"subject": f"s{i}", "start": f"2026-12-0{i}T09:00:00", "timezone": BERLIN}) for i in (1, 2)]
    pages, state = sync(source, ANN)
    assert [p.requests for p in pages] == [2]
    assert ops(emulator) == (1, 1)

    ann.delete(singles[0].item_id, "HardDelete")
    [page] = list(source.changes(ANN, state, 512))
    assert (page.deletes, page.upserts, page.requests) == ((singles[0].item_id,), (), 1)
    assert ops(emulator) == (2, 1)

    series = ann.create(
        {
            "subject": "weekly",
            "start": "2026-12-07T10:00:00",
            "timezone": BERLIN,
            "recurrence": {"pattern": "Weekly", "days": ["Monday"], "range": "Numbered", "count": 5},
        }
    )
    ann.update_occurrence(series.item_id, 2, {"subject": "weekly, moved", "start": "2026-12-15T11:00:00"})
    [page] = list(source.changes(ANN, page.sync_state, 512))
    assert page.requests == 3 and len(page.upserts) == 1
    assert ops(emulator) == (3, 3)
    assert source.stats.requests == 3 + 3
    assert source.stats.by_operation == {"SyncFolderItems": 3, "GetItem": 3}


def test_incremental_create_update_delete_and_move(emulator, source):
    ann = emulator.outlook(ANN)
    keep = ann.create({"subject": "keep", "start": "2026-12-01T09:00:00", "timezone": BERLIN})
    change = ann.create({"subject": "change", "start": "2026-12-02T09:00:00", "timezone": BERLIN})
    hard = ann.create({"subject": "hard", "start": "2026-12-03T09:00:00", "timezone": BERLIN})
    binned = ann.create({"subject": "binned", "start": "2026-12-04T09:00:00", "timezone": BERLIN})
    moved = ann.create({"subject": "moved", "start": "2026-12-05T09:00:00", "timezone": BERLIN})
    pages, state = sync(source, ANN, batch=2)
    assert len(upserts(pages)) == 5 and pages[-1].done
    old_key = upserts(pages)[change.item_id].change_key

    new = ann.create({"subject": "new", "start": "2026-12-06T09:00:00", "timezone": BERLIN})
    ann.update(change.item_id, {"subject": "changed", "location": "Room 9"})
    ann.delete(hard.item_id, "HardDelete")
    ann.delete(binned.item_id, "MoveToDeletedItems")
    ann.move(moved.item_id, "deleteditems")
    pages, state2 = sync(source, ANN, state, batch=2)

    got = upserts(pages)
    assert set(got) == {new.item_id, change.item_id}
    assert got[change.item_id].subject == "changed" and got[change.item_id].location == "Room 9"
    assert got[change.item_id].change_key not in (None, old_key)
    assert got[change.item_id].change_key == stored(emulator, ANN, change.item_id).change_key
    deletes = [d for page in pages for d in page.deletes]
    assert sorted(deletes) == sorted([hard.item_id, binned.item_id, moved.item_id])
    assert keep.item_id not in got and keep.item_id not in deletes
    assert state2 != state and pages[-1].done and not any(p.done for p in pages[:-1])


def test_item_deleted_between_sync_and_getitem_is_a_delete(emulator, source, monkeypatch):
    ann = emulator.outlook(ANN)
    _, state = sync(source, ANN)
    gone = ann.create({"subject": "short-lived", "start": "2026-12-01T09:00:00"})
    stays = ann.create({"subject": "stays", "start": "2026-12-02T09:00:00"})
    real_fetch = source._fetch

    def racing_fetch(account: Any, ids: Any, fields: Any) -> Any:
        ann.delete(gone.item_id, "HardDelete")  # the user deletes it right after SyncFolderItems answered
        return real_fetch(account, ids, fields)

    monkeypatch.setattr(source, "_fetch", racing_fetch)
    [page] = list(source.changes(ANN, state, 512))
    assert [a.item_id for a in page.upserts] == [stays.item_id]
    assert page.deletes == (gone.item_id,)


def test_batch_size_and_address_are_checked(source):
    for bad in (0, 513):
        with pytest.raises(ValueError, match="batch_size"):
            next(source.changes(ANN, None, bad))
    with pytest.raises(SourceError) as caught:
        next(source.changes("not an address", None, 10))
    assert (caught.value.kind, caught.value.code) == ("permanent", "mailbox_not_found")


# --- mapping -----------------------------------------------------------------------------------------------------


def test_recurring_series_with_moved_and_deleted_occurrences(emulator, source):
    ann = emulator.outlook(ANN)
    series = ann.create(
        {
            "subject": "Standup",
            "start": "2026-11-02T09:00:00",
            "end": "2026-11-02T09:15:00",
            "timezone": BERLIN,
            "location": "Room 1",
            "recurrence": {
                "pattern": "Weekly",
                "interval": 1,
                "days": ["Monday", "Thursday"],
                "first_day_of_week": "Monday",
                "range": "Numbered",
                "count": 10,
            },
        }
    )
    ann.update_occurrence(series.item_id, 3, {"subject": "Standup (moved)", "start": "2026-11-10T14:00:00"})
    ann.update_occurrence(series.item_id, 6, {"location": "Room 2"})
    fifth = stored(emulator, ANN, series.item_id).occurrence(5).original_start
    ann.delete_occurrence(series.item_id, 5)
    pages, _ = sync(source, ANN)
    app = only(pages, "Standup")
    master = stored(emulator, ANN, series.item_id)

    assert app.recurrence == Recurrence(
        pattern="Weekly",
        interval=1,
        days_of_week=("Monday", "Thursday"),
        first_day_of_week="Monday",
        range="Numbered",
        start_date=date(2026, 11, 2),
        count=10,
    )
    assert (app.start, app.end) == (master.start, master.end) == (utc(2026, 11, 2, 8), utc(2026, 11, 2, 8, 15))
    assert app.start_tz == app.end_tz == BERLIN
    plain3, plain6 = (master.occurrence(i, plain=True) for i in (3, 6))
    occ3, occ6 = master.occurrence(3), master.occurrence(6)
    assert [(o.original_start, o.start, o.end, o.subject, o.location, o.cancelled) for o in app.overrides] == [
        (plain3.original_start, occ3.start, occ3.end, "Standup (moved)", None, None),
        (plain6.original_start, occ6.start, occ6.end, None, "Room 2", None),
    ]
    assert occ3.start == utc(2026, 11, 10, 13)  # the moved one, at its new time
    assert app.deleted_occurrences == (fifth,) == (utc(2026, 11, 16, 8),)
    _, last = master.first_last()
    assert app.series_end == last.end == utc(2026, 12, 3, 8, 15)

    # Expanded, the mapped series is exactly what the emulator shows.
    lo, hi = utc(2026, 10, 1), utc(2027, 1, 1)
    assert occurrences_multiset([app], lo, hi) == truth_multiset(emulator, ANN, lo, hi)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"pattern": "Daily", "interval": 3}, Recurrence("Daily", interval=3)),
        (
            {"pattern": "AbsoluteMonthly", "interval": 2, "day_of_month": 31},
            Recurrence("AbsoluteMonthly", interval=2, day_of_month=31),
        ),
        (
            {"pattern": "RelativeMonthly", "days": ["Weekday"], "index": "Last"},
            Recurrence("RelativeMonthly", days_of_week=("Weekday",), index="Last"),
        ),
        (
            {"pattern": "RelativeMonthly", "days": ["WeekendDay"], "index": "Second"},
            Recurrence("RelativeMonthly", days_of_week=("WeekendDay",), index="Second"),
        ),
        (
            {"pattern": "RelativeMonthly", "days": ["Day"], "index": "Fourth"},
            Recurrence("RelativeMonthly", days_of_week=("Day",), index="Fourth"),
        ),
        (
            {"pattern": "AbsoluteYearly", "day_of_month": 29, "month": "February"},
            Recurrence("AbsoluteYearly", day_of_month=29, month="February"),
        ),
        (
            {"pattern": "RelativeYearly", "days": ["Sunday"], "index": "Last", "month": "October"},
            Recurrence("RelativeYearly", days_of_week=("Sunday",), index="Last", month="October"),
        ),
    ],
)
@pytest.mark.parametrize(
    "rng",
    [
        {"range": "NoEnd"},
        {"range": "EndDate", "end_date": "2029-12-31"},
        {"range": "Numbered", "count": 12},
    ],
)
def test_every_pattern_and_range_kind(emulator, source, spec, expected, rng):
    emulator.outlook(ANN).create(
        {"subject": "series", "start": "2026-11-01T10:00:00", "timezone": BERLIN, "recurrence": {**spec, **rng}}
    )
    app = only(sync(source, ANN)[0], "series")
    assert app.recurrence is not None
    end_date = date.fromisoformat(rng["end_date"]) if "end_date" in rng else None
    assert app.recurrence == Recurrence(
        expected.pattern,
        interval=expected.interval,
        days_of_week=expected.days_of_week,
        first_day_of_week=app.recurrence.first_day_of_week,  # only meaningful for Weekly
        day_of_month=expected.day_of_month,
        index=expected.index,
        month=expected.month,
        range=rng["range"],
        start_date=date(2026, 11, 1),
        end_date=end_date,
        count=rng.get("count"),
    )
    if rng["range"] == "NoEnd":
        assert app.series_end is None
    else:
        assert app.series_end == max(o.end for o in expand_all([app], app.start, utc(2045, 1, 1)))
    lo, hi = utc(2026, 10, 1), utc(2030, 1, 1)
    assert occurrences_multiset([app], lo, hi) == truth_multiset(emulator, ANN, lo, hi)


ZONES = ("W. Europe Standard Time", "Pacific Standard Time", "AUS Eastern Standard Time", "India Standard Time")
PATTERNS = (
    {"pattern": "Daily", "interval": 3},
    {"pattern": "Weekly", "interval": 2, "days": ["Monday", "Sunday", "Wednesday"], "first_day_of_week": "Sunday"},
    {"pattern": "Weekly", "interval": 3, "days": ["Saturday", "Tuesday"], "first_day_of_week": "Wednesday"},
    {"pattern": "AbsoluteMonthly", "interval": 2, "day_of_month": 31},
    {"pattern": "RelativeMonthly", "days": ["Weekday"], "index": "Last"},
    {"pattern": "RelativeMonthly", "interval": 2, "days": ["WeekendDay"], "index": "Second"},
    {"pattern": "RelativeMonthly", "days": ["Day"], "index": "Fourth"},
    {"pattern": "AbsoluteYearly", "day_of_month": 29, "month": "February"},
    {"pattern": "RelativeYearly", "days": ["Sunday"], "index": "Last", "month": "March"},
    {"pattern": "RelativeYearly", "days": ["Weekday"], "index": "First", "month": "January"},
)
RANGES = ({"range": "NoEnd"}, {"range": "Numbered", "count": 7}, {"range": "EndDate", "end_date": "2028-06-30"})


def _make_series(emu: Emulator, all_day: bool) -> None:
    ann = emu.outlook(ANN)
    combos = itertools.product(PATTERNS, RANGES, ZONES)
    for n, (pattern, rng, tz) in enumerate(combos):
        when = {"start": "2026-03-01", "end": "2026-03-02", "all_day": True} if all_day else {}
        spec = {
            "subject": f"s{n}",
            "start": "2026-03-01T02:30:00",  # the night clocks change in Europe, 3 weeks later
            "end": "2026-03-01T03:15:00",
            "timezone": tz,
            "recurrence": {**pattern, **rng},
            **when,
        }
        item = ann.create(spec)
        if n % 3 == 0:
            moved = "2026-06-01" if all_day else "2026-06-01T10:00:00"
            ann.update_occurrence(item.item_id, 2, {"subject": f"s{n} moved", "start": moved})
        if n % 4 == 0:
            ann.delete_occurrence(item.item_id, 1)


def test_expanded_series_match_the_emulator_for_every_pattern_zone_and_range(emulator, source):
    _make_series(emulator, all_day=False)
    apps = upserts(sync(source, ANN)[0]).values()
    lo, hi = utc(2025, 12, 1), utc(2029, 1, 1)
    mine, truth = occurrences_multiset(apps, lo, hi), truth_multiset(emulator, ANN, lo, hi)
    assert sum(truth.values()) > 3000
    assert mine == truth


def test_expanded_all_day_series_match_the_emulator(emulator, source):
    _make_series(emulator, all_day=True)
    apps = upserts(sync(source, ANN)[0]).values()
    lo, hi = utc(2025, 12, 1), utc(2029, 1, 1)
    assert occurrences_multiset(apps, lo, hi) == truth_multiset(emulator, ANN, lo, hi)


@pytest.mark.parametrize("seed", [3, 7, 21])
def test_expanded_calendar_matches_the_emulators_truth(emulator, source, seed):
    """The heart of the product: what the app shows for a window is what Exchange shows."""
    address = f"pop{seed}@example.com"
    emulator.add_mailbox(address, populate_count=120, seed=seed)
    apps = upserts(sync(source, address, batch=50)[0]).values()
    now = emulator.exchange.now()
    lo, hi = now - timedelta(days=30), now + timedelta(days=60)
    truth = truth_multiset(emulator, address, lo, hi)
    assert sum(truth.values()) > 50
    assert occurrences_multiset(apps, lo, hi) == truth
    # and over a long range, across daylight-saving changes and all the sample series
    lo, hi = now - timedelta(days=600), now + timedelta(days=800)
    assert occurrences_multiset(apps, lo, hi) == truth_multiset(emulator, address, lo, hi)


def test_series_end_applies_the_past_window_without_expanding(emulator, source):
    emulator.add_mailbox("pop@example.com", populate_count=120, seed=3)
    apps = upserts(sync(source, "pop@example.com")[0]).values()
    for app in apps:
        series_end = app.series_end
        if app.recurrence is None:
            assert series_end is None and app.ends_at == app.end
        elif app.recurrence.range == "NoEnd":
            assert series_end is None
        else:
            assert isinstance(series_end, datetime) and series_end.tzinfo is not None
            ends = [o.end for o in expand_all([app], app.start - timedelta(days=1), series_end + timedelta(days=800))]
            assert ends and max(ends) == series_end


def test_all_day_items(emulator, source):
    ann = emulator.outlook(ANN)
    holiday = ann.create(
        {"subject": "Holiday", "start": "2026-12-24", "end": "2026-12-26", "all_day": True, "timezone": BERLIN}
    )
    # 28 March 2027 has 23 hours in Berlin: exchangelib alone would make this item end the day it starts.
    spring = ann.create(
        {"subject": "Spring", "start": "2027-03-27", "end": "2027-03-29", "all_day": True, "timezone": BERLIN}
    )
    tokyo = ann.create({"subject": "Tokyo", "start": "2026-12-01", "all_day": True, "timezone": "Tokyo Standard Time"})
    pages, _ = sync(source, ANN)
    for created in (holiday, spring, tokyo):
        app = upserts(pages)[created.item_id]
        item = stored(emulator, ANN, created.item_id)
        assert app.all_day
        assert (app.start, app.end, app.start_tz) == (item.start, item.end, item.start_tz)
    h, s, t = (upserts(pages)[i.item_id] for i in (holiday, spring, tokyo))
    assert (h.start, h.end) == (utc(2026, 12, 23, 23), utc(2026, 12, 25, 23))  # local midnights, end exclusive
    assert (s.start, s.end) == (utc(2027, 3, 26, 23), utc(2027, 3, 28, 22))
    assert (t.start, t.end, t.start_tz) == (utc(2026, 11, 30, 15), utc(2026, 12, 1, 15), "Tokyo Standard Time")
    [truth] = [o for o in emulator.truth(ANN, utc(2027, 3, 27), utc(2027, 3, 28)) if o["subject"] == "Spring"]
    assert (truth["start_date"], truth["end_date"]) == ("2027-03-27", "2027-03-29")


def test_time_zones_keep_their_windows_ids(emulator, source):
    ann = emulator.outlook(ANN)
    zones = {
        "Pacific Standard Time": "Pacific Standard Time",
        "Asia/Kolkata": "India Standard Time",  # an IANA name, stored by Exchange as the Windows id
        "AUS Eastern Standard Time": "AUS Eastern Standard Time",
        "UTC": "UTC",
        "Alberta Standard Time": "Alberta Standard Time",  # a CLDR id exchangelib does not know
    }
    created = {tz: ann.create({"subject": tz, "start": "2026-07-01T09:30:00", "timezone": tz}) for tz in zones}
    with pytest.warns(UserWarning, match="Alberta Standard Time"):
        pages, _ = sync(source, ANN)
    for tz, windows_id in zones.items():
        app = upserts(pages)[created[tz].item_id]
        item = stored(emulator, ANN, created[tz].item_id)
        assert (app.start_tz, app.end_tz) == (windows_id, windows_id) == (item.start_tz, item.end_tz)
        assert app.start == item.start and app.start.tzinfo is UTC
        local = app.start.astimezone(emu_tz.zone(windows_id))
        assert (local.hour, local.minute) == (9, 30)


def test_attendees_responses_and_organizer(emulator, source):
    ann = emulator.outlook(ANN)
    meeting = ann.create(
        {
            "subject": "Review",
            "start": "2026-12-01T10:00:00",
            "timezone": BERLIN,
            "attendees": [
                {"email": BOB, "name": "Bob B", "response": "Accept"},
                {"email": CYD, "response": "Decline"},
                {"email": "dee@partner.example", "response": "Tentative"},
                {"email": "eve@partner.example", "response": "NoResponseReceived"},
                {"email": "fay@partner.example", "optional": True, "response": "Unknown"},
                {"email": "gus@partner.example", "name": "Gus", "optional": True, "response": "Organizer"},
            ],
        }
    )
    app = upserts(sync(source, ANN)[0])[meeting.item_id]
    assert (app.organizer_email, app.organizer_name) == (ANN, "Ann")
    assert app.attendees == (
        Attendee(BOB, "Bob B", "accepted"),
        Attendee(CYD, CYD, "declined"),
        Attendee("dee@partner.example", "dee@partner.example", "tentative"),
        Attendee("eve@partner.example", "eve@partner.example", "not_responded"),
        Attendee("fay@partner.example", "fay@partner.example", "unknown", optional=True),
        Attendee("gus@partner.example", "Gus", "organizer", optional=True),
    )
    # Bob's copy: same meeting, organised by Ann.
    copy = only(sync(source, BOB)[0], "Review")
    assert copy.uid == app.uid and copy.organizer_email == ANN
    assert copy.show_as == "tentative" and copy.status == "confirmed"


def test_private_show_as_categories_body_and_the_rest(emulator, source):
    ann = emulator.outlook(ANN)
    specs = {
        "private": {"private": True, "show_as": "OOF"},
        "confidential": {"sensitivity": "Confidential", "show_as": "Free"},
        "personal": {"sensitivity": "Personal", "show_as": "WorkingElsewhere"},
        "normal": {"show_as": "Tentative", "categories": ["Red category", "Customer"], "body": "Agenda:\n1. x"},
        "nodata": {"show_as": "NoData", "location": "Room 7"},
    }
    made = {k: ann.create({"subject": k, "start": "2026-12-01T10:00:00", **v}) for k, v in specs.items()}
    got = {k: upserts(sync(source, ANN)[0])[v.item_id] for k, v in made.items()}
    assert {k: a.private for k, a in got.items()} == {
        "private": True,
        "confidential": True,
        "personal": False,
        "normal": False,
        "nodata": False,
    }
    assert {k: a.show_as for k, a in got.items()} == {
        "private": "oof",
        "confidential": "free",
        "personal": "working_elsewhere",
        "normal": "tentative",
        "nodata": "unknown",
    }
    normal = got["normal"]
    assert normal.categories == ("Red category", "Customer")
    assert (normal.body, normal.extra["body_type"]) == ("Agenda:\n1. x", "Text")
    assert got["nodata"].location == "Room 7" and got["nodata"].body is None
    item = stored(emulator, ANN, made["normal"].item_id)
    assert normal.uid == item.uid and normal.last_modified == item.modified.replace(microsecond=0)
    assert normal.status == "confirmed" and normal.recurrence is None and normal.extra["item_type"] == "Single"


def test_cancelled_meeting_in_an_attendees_calendar(emulator, source):
    ann = emulator.outlook(ANN)
    meeting = ann.create(
        {"subject": "Offsite", "start": "2026-12-01T10:00:00", "attendees": [{"email": BOB, "response": "Accept"}]}
    )
    _, bob_state = sync(source, BOB)
    ann.delete(meeting.item_id, "MoveToDeletedItems", cancel=True)
    [page] = list(source.changes(BOB, bob_state, 512))
    [copy] = page.upserts
    assert copy.status == "cancelled" and copy.subject == "Canceled: Offsite" and copy.show_as == "free"
    [page] = list(source.changes(ANN, None, 512))
    assert page.upserts == ()  # the organiser's own item left the calendar


def test_recurrence_dates_do_not_depend_on_the_machines_time_zone(emulator, source, monkeypatch):
    """exchangelib reads a recurrence StartDate without offset as local midnight of this machine; east of UTC
    that is the day before in UTC."""
    emulator.outlook(ANN).create(
        {
            "subject": "monthly",
            "start": "2026-11-01T10:00:00",
            "timezone": BERLIN,
            "recurrence": {
                "pattern": "AbsoluteMonthly",
                "day_of_month": 1,
                "range": "EndDate",
                "end_date": "2027-05-01",
            },
        }
    )
    if not hasattr(time, "tzset"):
        pytest.skip("needs time.tzset")
    try:
        for machine_zone in ("Asia/Tokyo", "America/Los_Angeles", "UTC"):
            monkeypatch.setenv("TZ", machine_zone)
            time.tzset()
            app = only(sync(source, ANN)[0], "monthly")
            assert app.recurrence is not None
            assert (app.recurrence.start_date, app.recurrence.end_date) == (date(2026, 11, 1), date(2027, 5, 1))
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize("version", ["Exchange2010", "Exchange2013", "Exchange2019", "Exchange365"])
def test_every_exchange_version(emulator_factory, source_factory, version):
    emu = emulator_factory(version=version)
    emu.outlook(ANN).create({"subject": "hello", "start": "2026-12-01T10:00:00", "timezone": BERLIN})
    src = source_factory(emu, version=version)
    pages, _ = sync(src, ANN)
    assert only(pages, "hello").start_tz == BERLIN
    assert pages[-1].requests == 2
    sub = src.subscribe(ANN, CALLBACK, 30)
    assert sub.subscription_id and sub.watermark
    assert src.check_mailbox(ANN).ok


def test_one_source_serves_many_threads(emulator, source):
    addresses = [f"user{i}@example.com" for i in range(6)]
    for i, address in enumerate(addresses):
        emulator.add_mailbox(address, populate_count=40, seed=i)
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda a: len(upserts(sync(source, a, batch=7)[0])), addresses * 2))
    assert results == [40] * 12
    assert len(source._accounts) == 6


# --- subscriptions and mailbox checks ----------------------------------------------------------------------------


def test_subscribe_and_resubscribe_from_the_watermark(emulator, source):
    sub = source.subscribe(ANN, CALLBACK, 17)
    assert sub.subscription_id and sub.watermark
    listed = emulator.exchange.subscriptions[sub.subscription_id]
    assert (listed.kind, listed.address, listed.url, listed.status_frequency) == ("push", ANN, CALLBACK, 17)
    assert listed.folders == frozenset({"calendar"}) and not listed.all_folders
    assert "NewMailEvent" not in listed.event_types and "ModifiedEvent" in listed.event_types

    again = source.subscribe(ANN, CALLBACK, 30, watermark=sub.watermark)
    assert again.subscription_id != sub.subscription_id and again.watermark

    emulator.exchange.expire_watermarks(emulator.exchange.mailbox(ANN))
    with pytest.raises(SourceError) as caught:
        source.subscribe(ANN, CALLBACK, 30, watermark=sub.watermark)
    assert (caught.value.kind, caught.value.code) == ("watermark_invalid", "watermark_expired")
    with pytest.raises(ValueError, match="status_frequency"):
        source.subscribe(ANN, CALLBACK, 0)


def test_check_mailbox(emulator, source, source_factory):
    good = source.check_mailbox(ANN)
    assert (good.ok, good.display_name, good.code) == (True, "Ann", None)
    assert source.check_mailbox("  Bob@Example.com ").ok

    missing = source.check_mailbox("nobody@example.com")
    assert (missing.ok, missing.code) == (False, "mailbox_not_found")
    assert "nobody@example.com" in (missing.message or "")
    # "an" would match Ann as a name: only an exact address counts.
    assert source.check_mailbox("an@example.com").code == "mailbox_not_found"
    assert source.check_mailbox("not an address").code == "mailbox_not_found"

    emulator.add_account("helpdesk", "pw-helpdesk", impersonation=False)
    denied = source_factory(username="helpdesk", password="pw-helpdesk").check_mailbox(ANN)
    assert (denied.ok, denied.code) == (False, "impersonation_denied")
    assert ANN in (denied.message or "") and "ApplicationImpersonation" in (denied.message or "")

    rejected = source_factory(password="wrong-pw").check_mailbox(ANN)
    assert (rejected.ok, rejected.code) == (False, "credentials_rejected")
    assert "wrong-pw" not in (rejected.message or "")

    emulator.set_faults(http_503=1)
    with pytest.raises(SourceError) as caught:
        source.check_mailbox(ANN)
    assert caught.value.kind == "transient"


# --- failures ----------------------------------------------------------------------------------------------------


def _failure(src: EwsSource, mailbox: str = ANN, state: str | None = None) -> SourceError:
    with pytest.raises(SourceError) as caught:
        list(src.changes(mailbox, state, 100))
    return caught.value


def test_server_busy_carries_exchanges_back_off(emulator, source):
    emulator.set_faults(server_busy=1, server_busy_backoff_ms=2500)
    err = _failure(source)
    assert (err.kind, err.code, err.back_off) == ("transient", "server_busy", 2.5)
    assert ANN in err.message
    assert len(list(source.changes(ANN, None, 100))) == 1  # fails fast: no retry of its own, and recovers


def test_http_503_and_dropped_connections_are_transient(emulator, source):
    emulator.set_faults(http_503=1)
    err = _failure(source)
    assert (err.kind, err.code) == ("transient", "service_unavailable")
    assert err.back_off == 1.0  # the emulator's Retry-After, not exchangelib's invented 10 s
    assert "503" in err.message

    emulator.set_faults(drop_connections=1)
    err = _failure(source)
    assert (err.kind, err.code, err.back_off) == ("transient", "connection_failed", None)
    assert len(list(source.changes(ANN, None, 100))) == 1


def test_unreachable_exchange_is_transient():
    emu = Emulator(accounts={SERVICE_USER: SERVICE_PASSWORD}, mailboxes=[ANN]).start()
    url = emu.url
    emu.stop()
    src = EwsSource(url, SERVICE_USER, SERVICE_PASSWORD, timeout=5)
    try:
        err = _failure(src)
    finally:
        src.close()
    assert (err.kind, err.code) == ("transient", "connection_failed")


def test_permanent_failures(emulator, source, source_factory):
    err = _failure(source_factory(password="Wr0ng!pw"))
    assert (err.kind, err.code) == ("permanent", "credentials_rejected")
    assert "Wr0ng!pw" not in err.message and SERVICE_PASSWORD not in err.message

    err = _failure(source, "nobody@example.com")
    assert (err.kind, err.code) == ("permanent", "mailbox_not_found")
    assert "nobody@example.com" in err.message

    emulator.add_account("helpdesk", "pw-helpdesk", impersonation=False)
    err = _failure(source_factory(username="helpdesk", password="pw-helpdesk"))
    assert (err.kind, err.code) == ("permanent", "impersonation_denied")


def test_expired_or_foreign_sync_state(emulator, source):
    _, state = sync(source, ANN)
    emulator.exchange.expire_sync_states(emulator.exchange.mailbox(ANN))
    err = _failure(source, ANN, state)
    assert (err.kind, err.code) == ("sync_state_invalid", "sync_state_expired")
    err = _failure(source, ANN, base64.b64encode(b"not a sync state").decode())
    assert (err.kind, err.code) == ("sync_state_invalid", "sync_state_expired")
    # A full sync from nothing works again.
    assert sync(source, ANN)[0][-1].done


def _chained(outer: Callable[[], BaseException], inner: BaseException) -> BaseException:
    """An exception raised while handling another, as exchangelib re-raises."""
    try:
        try:
            raise inner
        except BaseException:
            raise outer()  # noqa: B904 - implicit chaining (__context__), as exchangelib does
    except BaseException as exc:
        return exc
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("exc", "kind", "code", "back_off"),
    [
        (xerr.ErrorServerBusy("busy", back_off=3.0), "transient", "server_busy", 3.0),
        (xerr.ErrorServerBusy("busy"), "transient", "server_busy", None),
        (xerr.ErrorTimeoutExpired("slow"), "transient", "timeout", None),
        (xerr.ErrorMailboxMoveInProgress("moving"), "transient", "mailbox_move_in_progress", None),
        (xerr.ErrorMailboxStoreUnavailable("down"), "transient", "mailbox_store_unavailable", None),
        (xerr.ErrorInternalServerTransientError("oops"), "transient", "server_error", None),
        (xerr.TransportError("garbage"), "transient", "exchange_error", None),
        (requests.exceptions.ConnectionError("refused"), "transient", "connection_failed", None),
        (requests.exceptions.ReadTimeout("slow"), "transient", "timeout", None),
        (ConnectionResetError("reset"), "transient", "connection_failed", None),
        (xerr.UnauthorizedError("Invalid credentials"), "permanent", "credentials_rejected", None),
        (xerr.ErrorNonExistentMailbox("no"), "permanent", "mailbox_not_found", None),
        (xerr.ErrorNameResolutionNoResults("no"), "permanent", "mailbox_not_found", None),
        (xerr.ErrorImpersonateUserDenied("no"), "permanent", "impersonation_denied", None),
        (xerr.ErrorAccessDenied("no"), "permanent", "access_denied", None),
        (xerr.ErrorInvalidSyncStateData("old"), "sync_state_invalid", "sync_state_expired", None),
        (xerr.ErrorInvalidWatermark("old"), "watermark_invalid", "watermark_expired", None),
        (KeyError("surprise"), "transient", "exchange_error", None),
    ],
)
def test_classify(exc, kind, code, back_off):
    err = classify(exc, mailbox=ANN)
    assert (err.kind, err.code, err.back_off) == (kind, code, back_off)
    assert err.message and str(err) == err.message
    if code == "exchange_error":
        assert type(exc).__name__ in err.message


def test_classify_sees_through_exchangelibs_rewrapping():
    # A dropped connection, re-raised twice by exchangelib when several connections are pooled.
    dropped = _chained(
        lambda: xerr.ErrorServerBusy("Reraised from ErrorTimeoutExpired(...)", back_off=10),
        _chained(
            lambda: xerr.ErrorTimeoutExpired("Reraised from ChunkedEncodingError(...)"),
            requests.exceptions.ChunkedEncodingError("Connection broken"),
        ),
    )
    err = classify(dropped)
    assert (err.code, err.back_off) == ("connection_failed", None)  # not exchangelib's invented 10 s
    timed_out = _chained(
        lambda: xerr.ErrorTimeoutExpired("Reraised from ReadTimeout(...)"), requests.exceptions.ReadTimeout("slow")
    )
    assert classify(timed_out).code == "timeout"
    assert classify(SourceError("permanent", "x", "y")).code == "x"


def test_messages_never_hold_the_password():
    secret = "S3cret!pw"
    token = base64.b64encode(f"svc:{secret}".encode()).decode()
    exc = xerr.TransportError(f"http://svc:{secret}@mail.example.com failed; Authorization: Basic {token}")
    err = classify(exc, secrets=[secret, token])
    assert secret not in err.message and token not in err.message and "***" in err.message


def test_nothing_logged_holds_the_credentials(emulator, source, caplog):
    emulator.outlook(ANN).create({"subject": "x", "start": "2026-12-01T10:00:00"})
    with caplog.at_level(logging.DEBUG):
        sync(source, ANN)
        source.subscribe(ANN, CALLBACK, 30)
        source.check_mailbox(ANN)
        emulator.set_faults(http_503=1)
        _failure(source)
    token = base64.b64encode(f"{SERVICE_USER}:{SERVICE_PASSWORD}".encode()).decode()
    assert any("Request headers" in r.getMessage() for r in caplog.records)  # exchangelib did log its requests
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert SERVICE_PASSWORD not in text and token not in text
    assert SERVICE_PASSWORD not in repr(source)


def test_settings_are_checked(emulator):
    with pytest.raises(ValueError, match="Exchange2010, Exchange2013"):
        EwsSource(emulator.url, "u", "p", version="Exchange2007")
    with pytest.raises(ValueError, match="basic, ntlm"):
        EwsSource(emulator.url, "u", "p", auth_type="kerberos")
    with pytest.raises(ValueError, match="max_connections"):
        EwsSource(emulator.url, "u", "p", max_connections=0)

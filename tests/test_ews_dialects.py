"""The EWS source against every dialect the emulator can speak (the forms other EWS servers, and Exchange itself
in places, write): each gives either the exact calendar, or reports exactly the items it could not read as
``unreadable_item``, never a wrong calendar from a pass that says it succeeded."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from calsync.calendar.expand import expand_all
from calsync.emulator import Emulator
from calsync.emulator.ews.dialect import DIALECTS
from calsync.sources.base import ChangePage
from calsync.sources.ews import EwsSource

from .conftest import SERVICE_PASSWORD, SERVICE_USER, start_emulator

POP = "pop@example.com"
BERLIN = "W. Europe Standard Time"
# Dialects after which a series or an all-day item cannot be placed: the server names a zone nobody knows and
# sends nothing to rebuild it from. Every other dialect must read to the exact calendar.
ZONELESS = "custom_timezones_without_definition"


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.fixture
def dialect_emulator(schema_dir: Path, request: pytest.FixtureRequest) -> Iterator[Emulator]:
    emu = start_emulator(schema_dir, mailboxes=[])
    emu.add_mailbox(POP, populate_count=150, seed=5)
    _the_reported_case(emu)
    emu.set_faults(dialect=[request.param])
    yield emu
    emu.stop()
    # Dialects write what the schema allows, except date-times in recurrence dates (real servers do that).
    for violation in emu.violations:
        assert request.param == "datetime_dates", violation["errors"][:2]
        assert all("StartDate" in e or "EndDate" in e for e in violation["errors"]), violation["errors"][:2]


def _the_reported_case(emu: Emulator) -> None:
    """What the independently written server got wrong: a daily series with an end date, a moved occurrence
    (new time and subject) and a deleted one."""
    ann = emu.outlook(POP)
    series = ann.create(
        {
            "subject": "Daily check-in",
            "start": "2026-12-07T09:00:00",
            "end": "2026-12-07T09:15:00",
            "timezone": BERLIN,
            "recurrence": {"pattern": "Daily", "range": "EndDate", "end_date": "2026-12-18"},
        }
    )
    ann.update_occurrence(series.item_id, 3, {"subject": "Check-in (moved)", "start": "2026-12-09T15:00:00"})
    ann.delete_occurrence(series.item_id, 5)


def _sync(emu: Emulator) -> list[ChangePage]:
    source = EwsSource(emu.url, SERVICE_USER, SERVICE_PASSWORD, timeout=10)
    try:
        return list(source.changes(POP, None, 50))
    finally:
        source.close()


def _occurrences(apps: Any, lo: datetime, hi: datetime) -> collections.Counter[tuple[Any, ...]]:
    return collections.Counter((o.start, o.end, o.subject, o.location) for o in expand_all(apps, lo, hi))


def _truth(emu: Emulator, lo: datetime, hi: datetime, leave_out: set[str]) -> collections.Counter[tuple[Any, ...]]:
    return collections.Counter(
        (datetime.fromisoformat(t["start"]), datetime.fromisoformat(t["end"]), t["subject"], t["location"])
        for t in emu.truth(POP, lo, hi)
        if (t["series_id"] or t["id"]) not in leave_out
    )


def _affected(emu: Emulator, dialect: str) -> set[str]:
    """The items a dialect makes unreadable: with zones known by a bare unknown name, series and all-day items."""
    if dialect != ZONELESS:
        return set()
    items = emu.outlook(POP).items()
    return {i.item_id for i in items if i.recurrence is not None or i.is_all_day}


@pytest.mark.parametrize("dialect_emulator", sorted(DIALECTS), indirect=True)
def test_every_dialect_gives_the_exact_calendar_or_reports_exactly_the_unreadable_items(
    dialect_emulator: Emulator, request: pytest.FixtureRequest
) -> None:
    dialect = request.node.callspec.params["dialect_emulator"]
    emu = dialect_emulator
    pages = _sync(emu)
    apps = {a.item_id: a for page in pages for a in page.upserts}
    reported = {u.item_id: u for page in pages for u in page.unreadable}
    affected = _affected(emu, dialect)
    assert set(reported) == affected
    assert len(apps) + len(reported) == len(emu.outlook(POP).items())
    for problem in reported.values():
        assert (problem.field, problem.raw) == ("StartTimeZone", "Customized Time Zone")
    now = emu.exchange.now()
    for lo, hi in ((now - timedelta(days=30), now + timedelta(days=60)), (_utc(2025, 1, 1), _utc(2028, 12, 31))):
        truth = _truth(emu, lo, hi, affected)
        assert sum(truth.values()) > (50 if not affected else 10)  # single timed items still read exactly
        assert _occurrences(apps.values(), lo, hi) == truth
    if not affected:
        [checkin] = [a for a in apps.values() if a.subject == "Daily check-in"]
        assert checkin.recurrence is not None and checkin.recurrence.end_date is not None
        assert checkin.series_end == _utc(2026, 12, 18, 8, 15)
        assert [(o.subject, o.start) for o in checkin.overrides] == [("Check-in (moved)", _utc(2026, 12, 9, 14))]
        assert checkin.deleted_occurrences == (_utc(2026, 12, 11, 8),)
        assert checkin.last_modified is not None

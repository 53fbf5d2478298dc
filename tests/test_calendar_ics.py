"""Tests for calsync.calendar.ics: the iCalendar export.

Structure is checked property by property on the parsed output; recurring series are checked by expanding
the exported RRULE/EXDATE/RECURRENCE-ID with dateutil and comparing with calsync.calendar.expand.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from dateutil.rrule import rrulestr
from icalendar import Calendar, Event

from calsync.calendar.expand import occurrences, zone_for
from calsync.calendar.ics import PRODID, to_ics
from calsync.calendar.model import Appointment, Attendee, OccurrenceOverride, Recurrence

BERLIN_WIN = "W. Europe Standard Time"
BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def Z(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def D(text: str) -> date:
    return date.fromisoformat(text)


def appt(
    item_id: str, start: str, end: str, rec: Recurrence | None = None, tz: str = BERLIN_WIN, **kw: Any
) -> Appointment:
    kw.setdefault("subject", f"Subject {item_id}")
    return Appointment(item_id, None, start=Z(start), end=Z(end), start_tz=tz, end_tz=tz, recurrence=rec, **kw)


def parse(*appointments: Appointment) -> Calendar:
    data = to_ics(appointments, calendar_name="Team calendar", now=NOW)
    assert data.startswith(b"BEGIN:VCALENDAR\r\n") and data.endswith(b"END:VCALENDAR\r\n")
    return Calendar.from_ical(data)


def events(cal: Calendar, uid: str) -> list[Event]:
    return [e for e in cal.walk("VEVENT") if str(e["UID"]) == uid]


def master_of(cal: Calendar, uid: str) -> Event:
    [master] = [e for e in events(cal, uid) if "RECURRENCE-ID" not in e]
    return master


# --- structure ---------------------------------------------------------------------------------------------


def test_calendar_properties_and_timezones() -> None:
    cal = parse(
        appt("a", "2024-05-10T08:00", "2024-05-10T09:00"), appt("b", "2024-05-10T08:00", "2024-05-10T09:00", tz="UTC")
    )
    assert str(cal["VERSION"]) == "2.0"
    assert str(cal["PRODID"]) == PRODID
    assert str(cal["X-WR-CALNAME"]) == "Team calendar"
    assert str(cal["NAME"]) == "Team calendar"
    [vtz] = cal.walk("VTIMEZONE")  # Europe/Berlin only: UTC times are written with Z
    assert str(vtz["TZID"]) == "Europe/Berlin"
    assert {c.name for c in vtz.subcomponents} == {"STANDARD", "DAYLIGHT"}
    # the VTIMEZONE itself knows the offsets of the dates used
    tz = vtz.to_tz()
    assert datetime(2024, 5, 10, 10, tzinfo=tz).utcoffset() == timedelta(hours=2)
    assert datetime(2024, 1, 10, 10, tzinfo=tz).utcoffset() == timedelta(hours=1)
    utc_event = master_of(cal, "b")
    assert "TZID" not in utc_event["DTSTART"].params
    assert utc_event.decoded("DTSTART") == Z("2024-05-10T08:00")


def test_single_appointment_properties() -> None:
    a = appt(
        "item-a",
        "2024-05-10T08:00",
        "2024-05-10T09:30",
        uid="uid-a@example.com",
        location="Room 1",
        body="Agenda: everything",
        organizer_email="ann@example.com",
        organizer_name="Ann A",
        attendees=(
            Attendee("bob@example.com", "Bob", response="accepted"),
            Attendee("cyd@example.com", response="declined", optional=True),
            Attendee("dan@example.com", response="tentative"),
            Attendee("eve@example.com", response="not_responded"),
        ),
        private=True,
        show_as="free",
        categories=("Red", "Blue, green"),
        last_modified=Z("2024-05-01T07:00"),
    )
    event = master_of(parse(a), "uid-a@example.com")
    assert event["DTSTART"].params["TZID"] == "Europe/Berlin"
    assert event.decoded("DTSTART") == datetime(2024, 5, 10, 10, tzinfo=BERLIN)
    assert event.decoded("DTEND") == datetime(2024, 5, 10, 11, 30, tzinfo=BERLIN)
    assert event.decoded("DTSTAMP") == NOW
    assert event.decoded("LAST-MODIFIED") == Z("2024-05-01T07:00")
    assert str(event["SUMMARY"]) == "Subject item-a"
    assert str(event["LOCATION"]) == "Room 1"
    assert str(event["DESCRIPTION"]) == "Agenda: everything"
    assert str(event["STATUS"]) == "CONFIRMED"
    assert str(event["CLASS"]) == "PRIVATE"
    assert str(event["TRANSP"]) == "TRANSPARENT"
    assert [str(c) for c in event["CATEGORIES"].cats] == ["Red", "Blue, green"]
    assert str(event["ORGANIZER"]) == "mailto:ann@example.com"
    assert event["ORGANIZER"].params["CN"] == "Ann A"
    people = {str(p): dict(p.params) for p in event["ATTENDEE"]}
    assert people == {
        "mailto:bob@example.com": {"CN": "Bob", "PARTSTAT": "ACCEPTED", "ROLE": "REQ-PARTICIPANT"},
        "mailto:cyd@example.com": {"PARTSTAT": "DECLINED", "ROLE": "OPT-PARTICIPANT"},
        "mailto:dan@example.com": {"PARTSTAT": "TENTATIVE", "ROLE": "REQ-PARTICIPANT"},
        "mailto:eve@example.com": {"PARTSTAT": "NEEDS-ACTION", "ROLE": "REQ-PARTICIPANT"},
    }
    assert "RRULE" not in event and "EXDATE" not in event


def test_defaults_cancelled_and_uid_falls_back_to_item_id() -> None:
    a = appt("item-b", "2024-05-10T08:00", "2024-05-10T09:00", status="cancelled", subject=None)
    event = master_of(parse(a), "item-b")
    assert str(event["STATUS"]) == "CANCELLED"
    assert str(event["TRANSP"]) == "OPAQUE"
    for absent in ("SUMMARY", "LOCATION", "DESCRIPTION", "CLASS", "CATEGORIES", "ORGANIZER", "ATTENDEE"):
        assert absent not in event


def test_all_day_appointment_uses_dates() -> None:
    # 00:00 Berlin on 10 May = 22:00Z on 9 May; two days
    a = appt("c", "2024-05-09T22:00", "2024-05-11T22:00", all_day=True)
    event = master_of(parse(a), "c")
    assert event["DTSTART"].params.get("VALUE") == "DATE"
    assert event.decoded("DTSTART") == D("2024-05-10")
    assert event.decoded("DTEND") == D("2024-05-12")


def test_output_is_deterministic_with_a_fixed_stamp() -> None:
    a = appt("d", "2024-05-10T08:00", "2024-05-10T09:00", rec=Recurrence("Daily"))
    assert to_ics([a], calendar_name="x", now=NOW) == to_ics([a], calendar_name="x", now=NOW)


# --- recurrence rules ------------------------------------------------------------------------------------


def rule_of(rec: Recurrence, start: str = "2024-01-01T09:00", **kw: Any) -> dict[str, list[Any]]:
    master = master_of(parse(appt("r", start, start[:11] + "23:00", rec=rec, **kw)), "r")
    return {key: list(value) for key, value in master["RRULE"].items()}


def test_rrule_weekly_with_interval_and_week_start() -> None:
    rec = Recurrence("Weekly", interval=2, days_of_week=("Monday", "Thursday"), first_day_of_week="Monday")
    assert rule_of(rec) == {"FREQ": ["WEEKLY"], "INTERVAL": [2], "BYDAY": ["MO", "TH"], "WKST": ["MO"]}


def test_rrule_absolute_monthly_last_day_rule_and_count() -> None:
    rec = Recurrence("AbsoluteMonthly", day_of_month=31, range="Numbered", count=12)
    assert rule_of(rec) == {"FREQ": ["MONTHLY"], "COUNT": [12], "BYMONTHDAY": [28, 29, 30, 31], "BYSETPOS": [-1]}
    plain = Recurrence("AbsoluteMonthly", interval=3, day_of_month=15)
    assert rule_of(plain) == {"FREQ": ["MONTHLY"], "INTERVAL": [3], "BYMONTHDAY": [15]}


def test_rrule_relative_monthly_pseudo_days() -> None:
    weekday = Recurrence("RelativeMonthly", days_of_week=("Weekday",), index="Last")
    assert rule_of(weekday) == {"FREQ": ["MONTHLY"], "BYDAY": ["MO", "TU", "WE", "TH", "FR"], "BYSETPOS": [-1]}
    weekend = Recurrence("RelativeMonthly", days_of_week=("WeekendDay",), index="Second")
    assert rule_of(weekend) == {"FREQ": ["MONTHLY"], "BYDAY": ["SA", "SU"], "BYSETPOS": [2]}
    day = Recurrence("RelativeMonthly", days_of_week=("Day",), index="Third")
    assert rule_of(day)["BYDAY"] == ["MO", "TU", "WE", "TH", "FR", "SA", "SU"]
    tuesday = Recurrence("RelativeMonthly", days_of_week=("Tuesday",), index="Fourth")
    assert rule_of(tuesday) == {"FREQ": ["MONTHLY"], "BYDAY": ["TU"], "BYSETPOS": [4]}


def test_rrule_yearly_kinds_and_until() -> None:
    leap = Recurrence("AbsoluteYearly", day_of_month=29, month="February", range="EndDate", end_date=D("2030-03-01"))
    rule = rule_of(leap, start="2024-02-29T09:00")
    # 1 Mar 2030 ends at 23:59:59 CET = 22:59:59Z
    assert rule == {
        "FREQ": ["YEARLY"],
        "UNTIL": [datetime(2030, 3, 1, 22, 59, 59, tzinfo=ZoneInfo("UTC"))],
        "BYMONTH": [2],
        "BYMONTHDAY": [28, 29],
        "BYSETPOS": [-1],
    }
    march = Recurrence("RelativeYearly", days_of_week=("Sunday",), index="Last", month="March")
    assert rule_of(march) == {"FREQ": ["YEARLY"], "BYDAY": ["SU"], "BYMONTH": [3], "BYSETPOS": [-1]}


def test_series_dtstart_is_the_first_occurrence_not_the_item_start() -> None:
    # Last weekday of the month, series item starting Mon 4 Mar 2024 09:00 Berlin: the first is Fri 29 Mar.
    rec = Recurrence("RelativeMonthly", days_of_week=("Weekday",), index="Last")
    master = master_of(parse(appt("s", "2024-03-04T08:00", "2024-03-04T09:00", rec=rec)), "s")
    assert master.decoded("DTSTART") == datetime(2024, 3, 29, 9, tzinfo=BERLIN)
    assert master.decoded("DTEND") == datetime(2024, 3, 29, 10, tzinfo=BERLIN)


def test_exdates_and_overrides() -> None:
    rec = Recurrence("Weekly", days_of_week=("Monday",))
    moved = OccurrenceOverride(Z("2024-01-15T08:00"), Z("2024-01-17T13:00"), Z("2024-01-17T14:00"), subject="Moved")
    off = OccurrenceOverride(Z("2024-01-22T08:00"), Z("2024-01-22T08:00"), Z("2024-01-22T09:00"), cancelled=True)
    ghost = OccurrenceOverride(Z("2024-01-23T08:00"), Z("2024-01-23T08:00"), Z("2024-01-23T09:00"))  # not a slot
    a = appt(
        "e",
        "2024-01-01T08:00",
        "2024-01-01T09:00",
        rec=rec,
        uid="series-e",
        location="Room 2",
        deleted_occurrences=(Z("2024-01-08T08:00"), Z("2024-01-29T08:00")),
        overrides=(off, moved, ghost),
    )
    cal = parse(a)
    master = master_of(cal, "series-e")
    exdates = [d for entry in [master["EXDATE"]] for d in entry.dts]
    assert [d.dt for d in exdates] == [datetime(2024, 1, 8, 9, tzinfo=BERLIN), datetime(2024, 1, 29, 9, tzinfo=BERLIN)]
    assert master["EXDATE"].params["TZID"] == "Europe/Berlin"
    changed = sorted(
        (e for e in events(cal, "series-e") if "RECURRENCE-ID" in e), key=lambda e: e.decoded("RECURRENCE-ID")
    )
    assert [e.decoded("RECURRENCE-ID") for e in changed] == [
        datetime(2024, 1, 15, 9, tzinfo=BERLIN),
        datetime(2024, 1, 22, 9, tzinfo=BERLIN),
    ]
    first, second = changed
    assert first.decoded("DTSTART") == datetime(2024, 1, 17, 14, tzinfo=BERLIN)
    assert (str(first["SUMMARY"]), str(first["LOCATION"]), str(first["STATUS"])) == ("Moved", "Room 2", "CONFIRMED")
    assert (str(second["SUMMARY"]), str(second["STATUS"])) == ("Subject e", "CANCELLED")
    assert "RRULE" not in first and "EXDATE" not in first


# --- round trip: the exported rules expand like expand.py -------------------------------------------------


def _aware(value: date | datetime, tz: ZoneInfo) -> datetime:
    return value if isinstance(value, datetime) else datetime.combine(value, time(0), tzinfo=tz)


def ics_occurrences(cal: Calendar, uid: str, tz: ZoneInfo, lo: datetime, hi: datetime) -> list[tuple[Any, ...]]:
    """(start, end, original, summary) of the series `uid` overlapping [lo, hi), by dateutil from the ics."""
    master = master_of(cal, uid)
    start, end = master.decoded("DTSTART"), master.decoded("DTEND")
    all_day = not isinstance(start, datetime)
    dtstart = datetime.combine(start, time(0)) if all_day else start
    rule = rrulestr(master["RRULE"].to_ical().decode(), dtstart=dtstart)
    exdates = {_aware(d.dt, tz) for d in master["EXDATE"].dts} if "EXDATE" in master else set()
    changed = {_aware(e.decoded("RECURRENCE-ID"), tz): e for e in events(cal, uid) if "RECURRENCE-ID" in e}

    def slots() -> Iterator[tuple[datetime, datetime, datetime, str]]:
        for raw in rule:
            slot = raw.replace(tzinfo=tz) if all_day else raw
            if slot >= hi + timedelta(days=400):
                break
            if slot in exdates or slot in changed:
                continue
            slot_end = (
                datetime.combine(raw.date() + (end - start), time(0), tzinfo=tz) if all_day else slot + (end - start)
            )
            yield slot, slot_end, slot, str(master["SUMMARY"])
        for original, e in changed.items():
            yield _aware(e.decoded("DTSTART"), tz), _aware(e.decoded("DTEND"), tz), original, str(e["SUMMARY"])

    found = [
        (s.astimezone(UTC), e.astimezone(UTC), o.astimezone(UTC), t) for s, e, o, t in slots() if s < hi and e > lo
    ]
    return sorted(found)


ROUND_TRIP = [
    appt(
        "dst-weekly",
        "2024-03-18T08:00",
        "2024-03-18T09:00",
        rec=Recurrence("Weekly", interval=2, days_of_week=("Monday", "Thursday"), first_day_of_week="Monday"),
        deleted_occurrences=(Z("2024-04-01T07:00"),),
        overrides=(
            # slots: Mon 18 + Thu 21 Mar, Mon 1 + Thu 4 Apr, Mon 15 + Thu 18 Apr, ...
            OccurrenceOverride(Z("2024-04-04T07:00"), Z("2025-01-05T10:00"), Z("2025-01-05T11:00"), subject="Later"),
            OccurrenceOverride(Z("2024-04-15T07:00"), Z("2024-04-16T07:00"), Z("2024-04-16T08:00")),
        ),
    ),
    appt(
        "last-weekday",
        "2024-03-04T14:00",
        "2024-03-04T15:00",
        tz="Eastern Standard Time",
        rec=Recurrence(
            "RelativeMonthly", days_of_week=("Weekday",), index="Last", range="EndDate", end_date=D("2025-08-29")
        ),
    ),
    appt(
        "month-end",
        "2024-01-31T16:00",
        "2024-01-31T16:30",
        rec=Recurrence("AbsoluteMonthly", day_of_month=31, range="Numbered", count=10),
        deleted_occurrences=(Z("2024-02-29T16:00"),),
    ),
    appt(
        "leap-day",
        "2024-02-29T11:00",
        "2024-02-29T12:00",
        tz="AUS Eastern Standard Time",
        rec=Recurrence("AbsoluteYearly", day_of_month=29, month="February"),
    ),
    appt(
        "october-weekend",
        "2024-10-01T06:00",
        "2024-10-01T07:00",
        rec=Recurrence("RelativeYearly", days_of_week=("WeekendDay",), index="Second", month="October"),
    ),
    appt(
        "second-day",
        "2024-01-02T07:00",
        "2024-01-02T08:00",
        rec=Recurrence("RelativeMonthly", interval=2, days_of_week=("Day",), index="Second", range="Numbered", count=8),
    ),
    appt(
        "all-day",
        "2024-03-29T23:00",
        "2024-03-31T22:00",
        all_day=True,
        rec=Recurrence("Daily", interval=3, range="EndDate", end_date=D("2024-06-30")),
        deleted_occurrences=(Z("2024-04-04T22:00"),),
        overrides=(OccurrenceOverride(Z("2024-04-06T22:00"), Z("2024-04-08T22:00"), Z("2024-04-09T22:00")),),
    ),
]


@pytest.mark.parametrize("series", ROUND_TRIP, ids=lambda a: a.item_id)
def test_round_trip_expansion_agrees_with_expand(series: Appointment) -> None:
    cal = Calendar.from_ical(to_ics(ROUND_TRIP, calendar_name="All", now=NOW))
    lo, hi = Z("2024-01-01"), Z("2027-01-01")
    expected = [(o.start, o.end, o.original_start, o.subject) for o in occurrences(series, lo, hi)]
    assert expected  # not vacuous
    assert ics_occurrences(cal, series.item_id, zone_for(series.start_tz), lo, hi) == sorted(expected)


def test_round_trip_covers_dst_and_overrides() -> None:
    """Spot checks on the first round-trip series, so the comparison above is known to exercise them."""
    found = occurrences(ROUND_TRIP[0], Z("2024-03-01"), Z("2025-02-01"))
    assert found[0].start == Z("2024-03-18T08:00") and found[1].start == Z("2024-03-21T08:00")
    assert Z("2024-04-01T07:00") not in [o.start for o in found]  # deleted; 09:00 CEST
    assert [o.start for o in found if o.is_exception] == [Z("2024-04-16T07:00"), Z("2025-01-05T10:00")]
    assert Z("2024-04-04T07:00") not in [o.start for o in found]  # moved to January


def test_unrepresentable_appointments_are_skipped() -> None:
    rec = Recurrence("RelativeYearly", days_of_week=("Weekday",), index="Last", month="December")
    doomed = appt("late", "9999-12-28T00:00", "9999-12-30T00:00", tz="UTC", rec=rec, all_day=True)
    cal = parse(doomed, appt("fine", "2024-05-10T08:00", "2024-05-10T09:00"))
    assert [str(e["UID"]) for e in cal.walk("VEVENT")] == ["fine"]

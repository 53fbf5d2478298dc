"""Tests for calsync.calendar.expand: occurrences of appointments in a time range.

Expected dates are worked out by hand from a calendar and hard-coded; a randomized test cross-checks
against the emulator's independent implementation of EWS recurrences.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from calsync.calendar.expand import MAX_OCCURRENCES, Series, expand_all, occurrences, zone_for
from calsync.calendar.model import Appointment, OccurrenceOverride, Recurrence
from calsync.emulator import recurrence as ews

BERLIN_WIN = "W. Europe Standard Time"
BERLIN = ZoneInfo("Europe/Berlin")


def Z(text: str) -> datetime:
    """An aware UTC datetime from 'YYYY-MM-DDTHH:MM' (or a date)."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def D(text: str) -> date:
    return date.fromisoformat(text)


def appt(
    start: str,
    end: str | None = None,
    rec: Recurrence | None = None,
    tz: str = "UTC",
    subject: str | None = "Meeting",
    **kwargs: Any,
) -> Appointment:
    """An appointment from UTC times (end defaults to one hour after start)."""
    s = Z(start)
    e = Z(end) if end else s + timedelta(hours=1)
    return Appointment("item-1", None, subject, s, e, start_tz=tz, end_tz=tz, recurrence=rec, **kwargs)


def starts(a: Appointment, lo: str, hi: str) -> list[str]:
    return [o.start.strftime("%Y-%m-%dT%H:%M") for o in occurrences(a, Z(lo), Z(hi))]


def days(a: Appointment, lo: str, hi: str) -> list[str]:
    return [o.start.date().isoformat() for o in occurrences(a, Z(lo), Z(hi))]


# --- time zones ----------------------------------------------------------------------------------------


def test_zone_for_windows_iana_and_unknown_ids() -> None:
    assert zone_for("W. Europe Standard Time") == BERLIN
    assert zone_for("Eastern Standard Time") == ZoneInfo("America/New_York")
    assert zone_for("Europe/Berlin") == BERLIN
    assert zone_for("UTC") == ZoneInfo("UTC")
    assert zone_for("Not A Zone") == ZoneInfo("UTC")
    assert zone_for("../../etc/passwd") == ZoneInfo("UTC")
    assert zone_for("") == ZoneInfo("UTC")


# --- single appointments -------------------------------------------------------------------------------


def test_single_appointment_overlap_rules() -> None:
    a = appt("2024-05-10T10:00", "2024-05-10T11:00", status="cancelled")
    [occ] = occurrences(a, Z("2024-05-10T10:30"), Z("2024-05-10T12:00"))  # straddles the range start
    assert (occ.start, occ.end, occ.original_start, occ.cancelled, occ.is_exception) == (
        Z("2024-05-10T10:00"),
        Z("2024-05-10T11:00"),
        None,
        True,
        False,
    )
    assert occ.subject == "Meeting" and occ.appointment is a
    assert occurrences(a, Z("2024-05-10T11:00"), Z("2024-05-10T12:00")) == []  # ends at the range start
    assert occurrences(a, Z("2024-05-10T09:00"), Z("2024-05-10T10:00")) == []  # starts at the range end
    point = appt("2024-05-10T10:00", "2024-05-10T10:00")
    assert len(occurrences(point, Z("2024-05-10T10:00"), Z("2024-05-10T11:00"))) == 1
    assert occurrences(point, Z("2024-05-10T09:00"), Z("2024-05-10T10:00")) == []


def test_query_range_in_another_zone_is_compared_as_instants() -> None:
    a = appt("2024-05-10T10:00")
    assert len(occurrences(a, datetime(2024, 5, 10, 12, 30, tzinfo=BERLIN), datetime(2024, 5, 10, 13, tzinfo=BERLIN)))


# --- pattern kinds ---------------------------------------------------------------------------------------


def test_daily_every_third_day_across_month_end() -> None:
    a = appt("2024-01-30T10:00", rec=Recurrence("Daily", interval=3))
    assert starts(a, "2024-01-29", "2024-02-10") == [
        "2024-01-30T10:00",
        "2024-02-02T10:00",
        "2024-02-05T10:00",
        "2024-02-08T10:00",
    ]


def test_weekly_every_other_week_mon_fri_starting_mid_week() -> None:
    # Start Wed 6 Mar 2024; week 0 is Sun 3..Sat 9 Mar (Fri 8), then weeks of 17 Mar and 31 Mar.
    rec = Recurrence("Weekly", interval=2, days_of_week=("Monday", "Friday"), start_date=D("2024-03-06"))
    a = appt("2024-03-06T10:00", rec=rec)
    assert days(a, "2024-03-01", "2024-04-07") == ["2024-03-08", "2024-03-18", "2024-03-22", "2024-04-01", "2024-04-05"]


@pytest.mark.parametrize(
    ("first_day", "expected"),
    [
        # Sunday weeks: Sun 3 + Mon 4 | Sun 17 + Mon 18 | Sun 31 + Mon 1 Apr
        ("Sunday", ["2024-03-03", "2024-03-04", "2024-03-17", "2024-03-18", "2024-03-31", "2024-04-01"]),
        # Monday weeks: Sun 3 closes week 26 Feb..3 Mar; then Mon 11 + Sun 17 | Mon 25 + Sun 31
        ("Monday", ["2024-03-03", "2024-03-11", "2024-03-17", "2024-03-25", "2024-03-31"]),
    ],
)
def test_weekly_first_day_of_week_groups_the_weeks(first_day: str, expected: list[str]) -> None:
    rec = Recurrence("Weekly", interval=2, days_of_week=("Sunday", "Monday"), first_day_of_week=first_day)
    a = appt("2024-03-03T10:00", rec=rec)
    assert days(a, "2024-03-01", "2024-04-02") == expected


def test_absolute_monthly_31_falls_on_the_last_day_of_short_months() -> None:
    a = appt("2024-01-31T10:00", rec=Recurrence("AbsoluteMonthly", day_of_month=31))
    assert days(a, "2024-01-01", "2024-07-01") == [
        "2024-01-31",
        "2024-02-29",
        "2024-03-31",
        "2024-04-30",
        "2024-05-31",
        "2024-06-30",
    ]


def test_absolute_monthly_30_in_february_of_a_common_year() -> None:
    a = appt("2023-01-30T10:00", rec=Recurrence("AbsoluteMonthly", day_of_month=30))
    assert days(a, "2023-01-01", "2023-04-01") == ["2023-01-30", "2023-02-28", "2023-03-30"]


def test_absolute_monthly_interval_counts_months_from_the_start_date() -> None:
    # 15 Jan is before the start (20 Jan): first 15 Mar, then every other month.
    rec = Recurrence("AbsoluteMonthly", interval=2, day_of_month=15, start_date=D("2024-01-20"))
    a = appt("2024-01-20T10:00", rec=rec)
    assert days(a, "2024-01-01", "2024-08-01") == ["2024-03-15", "2024-05-15", "2024-07-15"]


@pytest.mark.parametrize(
    ("index", "day", "expected"),
    [
        ("Third", "Tuesday", ["2024-01-16", "2024-02-20", "2024-03-19"]),
        ("Last", "Friday", ["2024-01-26", "2024-02-23", "2024-03-29"]),
        ("Second", "Day", ["2024-01-02", "2024-02-02", "2024-03-02"]),
        ("Last", "Day", ["2024-01-31", "2024-02-29", "2024-03-31"]),
        # Mon 1 Jan 2024; Thu 1 Feb; Fri 1 Mar (31 Mar is a Sunday, 30 Mar a Saturday)
        ("Fourth", "Weekday", ["2024-01-04", "2024-02-06", "2024-03-06"]),
        ("Last", "Weekday", ["2024-01-31", "2024-02-29", "2024-03-29"]),
        ("First", "WeekendDay", ["2024-01-06", "2024-02-03", "2024-03-02"]),
        ("Last", "WeekendDay", ["2024-01-28", "2024-02-25", "2024-03-31"]),
    ],
)
def test_relative_monthly_days_and_pseudo_days(index: str, day: str, expected: list[str]) -> None:
    rec = Recurrence("RelativeMonthly", days_of_week=(day,), index=index, start_date=D("2024-01-01"))
    a = appt("2024-01-01T10:00", rec=rec)
    assert days(a, "2024-01-01", "2024-04-01") == expected


def test_relative_monthly_every_third_month() -> None:
    # Mon 1 Jan 2024 is before the start date; then 1 Apr, 1 Jul, 7 Oct (first Mondays).
    rec = Recurrence("RelativeMonthly", interval=3, days_of_week=("Monday",), index="First", start_date=D("2024-01-10"))
    a = appt("2024-01-10T10:00", rec=rec)
    assert days(a, "2024-01-01", "2025-01-01") == ["2024-04-01", "2024-07-01", "2024-10-07"]


def test_absolute_yearly_feb_29_in_common_and_leap_years() -> None:
    rec = Recurrence("AbsoluteYearly", day_of_month=29, month="February", start_date=D("2023-01-01"))
    a = appt("2023-02-28T10:00", rec=rec)
    assert days(a, "2023-01-01", "2029-01-01") == [
        "2023-02-28",
        "2024-02-29",
        "2025-02-28",
        "2026-02-28",
        "2027-02-28",
        "2028-02-29",
    ]


def test_absolute_yearly_31_april_and_ignored_interval() -> None:
    # EWS yearly patterns have no interval: every year.
    rec = Recurrence("AbsoluteYearly", interval=3, day_of_month=31, month="April", start_date=D("2024-06-01"))
    a = appt("2025-04-30T10:00", rec=rec)
    assert days(a, "2024-01-01", "2027-12-31") == ["2025-04-30", "2026-04-30", "2027-04-30"]


def test_relative_yearly_last_sunday_of_march_and_fourth_thursday_of_november() -> None:
    rec = Recurrence("RelativeYearly", days_of_week=("Sunday",), index="Last", month="March")
    assert days(appt("2024-03-31T10:00", rec=rec), "2024-01-01", "2027-01-01") == [
        "2024-03-31",
        "2025-03-30",
        "2026-03-29",
    ]
    thanksgiving = Recurrence("RelativeYearly", days_of_week=("Thursday",), index="Fourth", month="November")
    assert days(appt("2024-11-28T17:00", rec=thanksgiving), "2024-01-01", "2027-01-01") == [
        "2024-11-28",
        "2025-11-27",
        "2026-11-26",
    ]


# --- time zones and daylight saving ----------------------------------------------------------------------


def test_weekly_berlin_0900_keeps_wall_clock_time_across_dst() -> None:
    # Mon 18 Mar 2024 09:00 CET = 08:00Z; DST starts Sun 31 Mar, so 09:00 CEST = 07:00Z; ends Sun 27 Oct.
    rec = Recurrence("Weekly", days_of_week=("Monday",), first_day_of_week="Monday")
    a = appt("2024-03-18T08:00", rec=rec, tz=BERLIN_WIN)
    assert starts(a, "2024-03-18", "2024-04-09") == [
        "2024-03-18T08:00",
        "2024-03-25T08:00",
        "2024-04-01T07:00",
        "2024-04-08T07:00",
    ]
    assert starts(a, "2024-10-20", "2024-11-05") == ["2024-10-21T07:00", "2024-10-28T08:00", "2024-11-04T08:00"]
    assert all(o.end - o.start == timedelta(hours=1) for o in occurrences(a, Z("2024-03-01"), Z("2024-12-01")))
    iana = appt("2024-03-18T08:00", rec=rec, tz="Europe/Berlin")
    assert starts(iana, "2024-03-18", "2024-04-09") == starts(a, "2024-03-18", "2024-04-09")


def test_unknown_zone_expands_in_utc() -> None:
    a = appt("2024-03-25T08:00", rec=Recurrence("Weekly", days_of_week=("Monday",)), tz="Mars Standard Time")
    assert starts(a, "2024-03-25", "2024-04-02") == ["2024-03-25T08:00", "2024-04-01T08:00"]


def test_start_date_defaults_to_the_local_date_of_the_start() -> None:
    # 23:30Z on Sun 31 Dec 2023 is 00:30 on Mon 1 Jan 2024 in Berlin: the series starts on 1 Jan.
    rec = Recurrence("Daily", range="Numbered", count=2)
    a = appt("2023-12-31T23:30", rec=rec, tz=BERLIN_WIN)
    assert starts(a, "2023-12-01", "2024-02-01") == ["2023-12-31T23:30", "2024-01-01T23:30"]


# --- ranges -------------------------------------------------------------------------------------------------


def test_end_date_is_an_inclusive_local_date() -> None:
    # 23:30 Berlin on 5 Jan is 22:30Z on 5 Jan: still on the last local date.
    rec = Recurrence("Daily", range="EndDate", start_date=D("2024-01-03"), end_date=D("2024-01-05"))
    a = appt("2024-01-03T22:30", rec=rec, tz=BERLIN_WIN)
    assert starts(a, "2024-01-01", "2024-02-01") == ["2024-01-03T22:30", "2024-01-04T22:30", "2024-01-05T22:30"]


def test_numbered_weekly_counts_from_the_first_occurrence() -> None:
    # Mon/Wed/Fri from Wed 3 Jan 2024, 5 in total: 3, 5, 8, 10, 12 Jan.
    rec = Recurrence("Weekly", days_of_week=("Monday", "Wednesday", "Friday"), range="Numbered", count=5)
    a = appt("2024-01-03T10:00", rec=rec)
    assert days(a, "2024-01-01", "2024-03-01") == ["2024-01-03", "2024-01-05", "2024-01-08", "2024-01-10", "2024-01-12"]
    assert days(a, "2024-01-10", "2024-03-01") == ["2024-01-10", "2024-01-12"]  # a range after skipped weeks
    assert days(a, "2024-01-13", "2024-03-01") == []


def test_numbered_far_into_a_long_series() -> None:
    # Mon/Wed/Fri from Mon 1 Jan 2024, 100 in total: 33 full weeks = 99, the 100th is Mon 19 Aug 2024.
    rec = Recurrence("Weekly", days_of_week=("Monday", "Wednesday", "Friday"), range="Numbered", count=100)
    a = appt("2024-01-01T10:00", rec=rec)
    assert days(a, "2024-08-12", "2024-09-01") == ["2024-08-12", "2024-08-14", "2024-08-16", "2024-08-19"]
    # daily, 10,000 in total from Sat 1 Jan 2000: the last is 9,999 days later (27 years and 137 days:
    # 1 Jan 2027 + 137 days, 2027 not a leap year), Tue 18 May 2027.
    daily = appt("2000-01-01T10:00", rec=Recurrence("Daily", range="Numbered", count=10_000))
    assert days(daily, "2027-05-16", "2027-06-01") == ["2027-05-16", "2027-05-17", "2027-05-18"]
    # last day of the month, 3 in total from 15 Jan 2024
    monthly = appt("2024-01-31T10:00", rec=Recurrence("AbsoluteMonthly", day_of_month=31, range="Numbered", count=3))
    assert days(monthly, "2024-03-01", "2024-06-01") == ["2024-03-31"]


def test_numbered_counts_deleted_occurrences() -> None:
    rec = Recurrence("Daily", range="Numbered", count=5)
    a = appt("2024-01-01T10:00", rec=rec, deleted_occurrences=(Z("2024-01-02T10:00"),))
    assert days(a, "2024-01-01", "2024-02-01") == ["2024-01-01", "2024-01-03", "2024-01-04", "2024-01-05"]


def test_series_started_years_before_the_range_is_fast() -> None:
    a = appt("1990-01-01T08:00", rec=Recurrence("Daily"), tz=BERLIN_WIN)
    assert starts(a, "2024-07-01", "2024-07-04") == ["2024-07-01T07:00", "2024-07-02T07:00", "2024-07-03T07:00"]
    began = time.perf_counter()
    for week in range(100):
        lo = Z("2024-01-01") + timedelta(weeks=week)
        assert len(occurrences(a, lo, lo + timedelta(weeks=1))) == 7
    # walking 34 years of days a hundred times would take many seconds
    assert time.perf_counter() - began < 2


def test_no_end_series_with_a_far_range_is_capped() -> None:
    a = appt("2024-01-01T10:00", rec=Recurrence("Daily"))
    found = occurrences(a, Z("2024-01-01"), datetime.max.replace(tzinfo=UTC))
    assert len(found) == MAX_OCCURRENCES
    assert found[0].start == Z("2024-01-01T10:00")
    assert found[-1].start == Z("2024-01-01T10:00") + timedelta(days=MAX_OCCURRENCES - 1)
    assert [o.start for o in occurrences(a, Z("2024-01-01"), Z("3024-01-01"), limit=3)] == [
        Z("2024-01-01T10:00"),
        Z("2024-01-02T10:00"),
        Z("2024-01-03T10:00"),
    ]
    assert days(a, "9999-12-30", "9999-12-31T23:00") == ["9999-12-30", "9999-12-31"]
    assert occurrences(a, datetime.min.replace(tzinfo=UTC), Z("2024-01-01")) == []


# --- deleted and changed occurrences ---------------------------------------------------------------------


def weekly_mondays(**kwargs: Any) -> Appointment:
    """Mondays 10:00-11:00Z from Mon 1 Jan 2024."""
    return appt("2024-01-01T10:00", rec=Recurrence("Weekly", days_of_week=("Monday",)), **kwargs)


def test_deleted_occurrences_are_left_out() -> None:
    a = weekly_mondays(deleted_occurrences=(Z("2024-01-15T10:00"), Z("2024-01-16T10:00")))
    assert days(a, "2024-01-01", "2024-01-30") == ["2024-01-01", "2024-01-08", "2024-01-22", "2024-01-29"]


def test_override_moved_into_and_out_of_the_range() -> None:
    moved = OccurrenceOverride(Z("2024-01-08T10:00"), Z("2024-02-20T14:00"), Z("2024-02-20T15:30"), subject="Moved")
    a = weekly_mondays(overrides=(moved,), location="Room 1")
    # moved out of January
    assert days(a, "2024-01-01", "2024-01-15") == ["2024-01-01"]
    # moved into the second half of February, from outside that range
    found = occurrences(a, Z("2024-02-15"), Z("2024-03-01"))
    assert [(o.start, o.original_start, o.is_exception, o.subject) for o in found] == [
        (Z("2024-02-19T10:00"), Z("2024-02-19T10:00"), False, "Meeting"),
        (Z("2024-02-20T14:00"), Z("2024-01-08T10:00"), True, "Moved"),
        (Z("2024-02-26T10:00"), Z("2024-02-26T10:00"), False, "Meeting"),
    ]
    assert found[1].end == Z("2024-02-20T15:30")
    assert found[1].location == "Room 1"  # inherited from the series


def test_override_moved_before_the_series_start_and_overlapping_the_range_start() -> None:
    early = OccurrenceOverride(Z("2024-01-15T10:00"), Z("2023-12-20T09:00"), Z("2023-12-20T12:00"), location="Cafe")
    a = weekly_mondays(overrides=(early,))
    [occ] = occurrences(a, Z("2023-12-20T11:00"), Z("2023-12-21"))
    assert (occ.start, occ.location, occ.subject, occ.original_start) == (
        Z("2023-12-20T09:00"),
        "Cafe",
        "Meeting",
        Z("2024-01-15T10:00"),
    )


def test_overrides_of_deleted_or_unknown_slots_are_ignored() -> None:
    bogus = OccurrenceOverride(Z("2024-01-09T10:00"), Z("2024-01-09T10:00"), Z("2024-01-09T11:00"))  # a Tuesday
    gone = OccurrenceOverride(Z("2024-01-15T10:00"), Z("2024-01-16T10:00"), Z("2024-01-16T11:00"))
    a = weekly_mondays(overrides=(bogus, gone), deleted_occurrences=(Z("2024-01-15T10:00"),))
    assert days(a, "2024-01-01", "2024-01-20") == ["2024-01-01", "2024-01-08"]
    numbered = appt("2024-01-01T10:00", rec=Recurrence("Daily", range="Numbered", count=3), overrides=(bogus,))
    assert days(numbered, "2024-01-01", "2024-02-01") == ["2024-01-01", "2024-01-02", "2024-01-03"]


def test_cancelled_series_and_cancelled_overrides() -> None:
    keep = OccurrenceOverride(Z("2024-01-08T10:00"), Z("2024-01-08T10:00"), Z("2024-01-08T11:00"), cancelled=False)
    a = weekly_mondays(status="cancelled", overrides=(keep,))
    assert [o.cancelled for o in occurrences(a, Z("2024-01-01"), Z("2024-01-20"))] == [True, False, True]
    drop = OccurrenceOverride(Z("2024-01-08T10:00"), Z("2024-01-08T10:00"), Z("2024-01-08T11:00"), cancelled=True)
    b = weekly_mondays(overrides=(drop,))
    assert [o.cancelled for o in occurrences(b, Z("2024-01-01"), Z("2024-01-20"))] == [False, True, False]


# --- all-day series -----------------------------------------------------------------------------------------


def test_all_day_series_keeps_whole_local_days_across_dst() -> None:
    # Sat 23 + Sun 24 Mar 2024 in Berlin, weekly: 00:00 CET = 23:00Z the day before; from 31 Mar 00:00 CEST = 22:00Z.
    rec = Recurrence("Weekly", days_of_week=("Saturday",))
    a = appt("2024-03-22T23:00", "2024-03-24T23:00", rec=rec, tz=BERLIN_WIN, all_day=True)
    found = occurrences(a, Z("2024-03-20"), Z("2024-04-10"))
    assert [(o.start, o.end) for o in found] == [
        (Z("2024-03-22T23:00"), Z("2024-03-24T23:00")),
        (Z("2024-03-29T23:00"), Z("2024-03-31T22:00")),  # 47 hours: the DST night
        (Z("2024-04-05T22:00"), Z("2024-04-07T22:00")),
    ]
    assert [o.start.astimezone(BERLIN).hour for o in found] == [0, 0, 0]


# --- several appointments -------------------------------------------------------------------------------------


def test_expand_all_sorts_by_start_end_subject() -> None:
    a = appt("2024-01-01T10:00", "2024-01-01T12:00", rec=Recurrence("Daily", range="Numbered", count=2))
    b = appt("2024-01-01T10:00", "2024-01-01T11:00", subject="Zeta")
    c = appt("2024-01-01T10:00", "2024-01-01T11:00", subject="Alpha")
    d = appt("2024-01-01T09:00", "2024-01-01T09:30", subject=None)
    found = expand_all([a, b, c, d], Z("2024-01-01"), Z("2024-01-03"))
    assert [(o.start.hour, o.end.hour, o.subject) for o in found] == [
        (9, 9, None),
        (10, 11, "Alpha"),
        (10, 11, "Zeta"),
        (10, 12, "Meeting"),
        (10, 12, "Meeting"),
    ]
    assert found[-1].start.day == 2


# --- cross-check against the emulator's EWS recurrence implementation ---------------------------------------


def _random_recurrence(rnd: random.Random, start: date) -> Recurrence:
    kind = rnd.choice(ews.PATTERN_KINDS)
    relative_days = ews.DAY_NAMES + ews.PSEUDO_DAYS
    rng = rnd.choice(ews.RANGE_KINDS)
    return Recurrence(
        kind,
        interval=rnd.randint(1, 4),
        days_of_week=tuple(rnd.sample(ews.DAY_NAMES, rnd.randint(1, 3)))
        if kind == "Weekly"
        else (rnd.choice(relative_days),),
        first_day_of_week=rnd.choice(ews.DAY_NAMES),
        day_of_month=rnd.choice([1, 15, 28, 29, 30, 31]),
        index=rnd.choice(ews.INDEXES),
        month=rnd.choice(ews.MONTHS),
        range=rng,
        start_date=start,
        end_date=start + timedelta(days=rnd.randint(400, 3000)),
        count=rnd.randint(1, 300),
    )


def _emulator_starts(rec: Recurrence, a: Appointment, lo: datetime, hi: datetime) -> list[datetime]:
    pattern = ews.Pattern(
        rec.pattern,
        rec.interval,
        rec.days_of_week if rec.pattern in ("Weekly", "RelativeMonthly", "RelativeYearly") else (),
        rec.first_day_of_week,
        rec.day_of_month if rec.pattern.startswith("Absolute") else None,
        rec.index if rec.pattern.startswith("Relative") else None,
        rec.month if rec.pattern.endswith("Yearly") else None,
    )
    assert rec.start_date is not None
    rng = ews.Range(rec.range, rec.start_date, rec.end_date if rec.range == "EndDate" else None, rec.count)
    try:
        ews.validate(pattern, rng)
    except ews.RecurrenceError:
        return []
    tz = zone_for(a.start_tz)
    return [o.start for o in ews.expand(pattern, rng, a.start, a.end - a.start, tz, lo, hi)]


def test_randomized_cross_check_against_the_emulator() -> None:
    rnd = random.Random(20240331)
    nonempty = 0
    for _ in range(400):
        first = date(2020, 1, 1) + timedelta(days=rnd.randint(0, 1500))
        rec = _random_recurrence(rnd, first)
        tz = rnd.choice([BERLIN_WIN, "Eastern Standard Time", "UTC", "AUS Eastern Standard Time"])
        local = datetime(
            first.year, first.month, first.day, rnd.randint(0, 23), rnd.choice([0, 30]), tzinfo=zone_for(tz)
        )
        a = Appointment("x", None, "S", local.astimezone(UTC), local.astimezone(UTC) + timedelta(hours=2), start_tz=tz)
        a.recurrence = rec
        lo = Z("2020-01-01") + timedelta(days=rnd.randint(0, 4000))
        hi = lo + timedelta(days=rnd.randint(1, 400))
        got = [o.start for o in occurrences(a, lo, hi)]
        assert got == _emulator_starts(rec, a, lo, hi), (rec, tz, lo, hi)
        nonempty += bool(got)
    assert nonempty > 150  # the comparison is not vacuous


def test_fast_forward_agrees_with_walking_the_series() -> None:
    rnd = random.Random(7)
    for _ in range(200):
        first = date(2021, 1, 1) + timedelta(days=rnd.randint(0, 400))
        rec = _random_recurrence(rnd, first)
        a = appt(f"{first.isoformat()}T09:15", rec=rec, tz=BERLIN_WIN)
        series = Series.of(a)
        lo = Z("2021-01-01") + timedelta(days=rnd.randint(0, 3000))
        hi = lo + timedelta(days=rnd.randint(1, 60))
        walked = [s for s in series.slots(Z("2000-01-01"), hi) if s >= lo - timedelta(hours=1)]
        assert [o.start for o in occurrences(a, lo, hi)] == [s for s in walked if s + timedelta(hours=1) > lo]


def test_extreme_dates_do_not_crash() -> None:
    # the last slot in UTC-12 ends past datetime.max in UTC; the first in UTC+13 starts before year 1 in UTC
    rec = Recurrence("Weekly", days_of_week=("Sunday", "Friday"), first_day_of_week="Saturday")
    everything = (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC))
    for tz in ("Dateline Standard Time", "Tonga Standard Time"):
        late = appt("9999-12-20T00:00", rec=rec, tz=tz)
        assert 1 <= len(occurrences(late, *everything)) <= 4
        early = appt("0001-01-02T12:00", rec=rec, tz=tz)
        assert len(occurrences(early, *everything, limit=5)) == 5

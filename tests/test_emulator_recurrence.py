"""Tests for calsync.emulator.recurrence (the EWS recurrence model).

Expected dates are worked out by hand from a calendar and hard-coded. A few tests cross-check against
dateutil.rrule when it is importable (tests only; the module under test must not use it).
"""

from datetime import UTC, date, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo

import pytest

from calsync.emulator.recurrence import (
    DAY_NAMES,
    INDEXES,
    MONTHS,
    PATTERN_KINDS,
    Occurrence,
    Pattern,
    Range,
    RecurrenceError,
    expand,
    first_and_last,
    index_of_original_start,
    occurrence_by_index,
    occurrence_dates,
    validate,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
UTC_ZONE = ZoneInfo("UTC")
HOUR = timedelta(hours=1)


def D(text: str) -> date:
    return date.fromisoformat(text)


def Z(text: str) -> datetime:
    """An aware UTC datetime from 'YYYY-MM-DDTHH:MM'."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def dates(pattern: Pattern, rng: Range, n: int | None = None) -> list[date]:
    return list(islice(occurrence_dates(pattern, rng), n))


def numbered(start: str, count: int) -> Range:
    return Range("Numbered", D(start), count=count)


def test_constants() -> None:
    assert PATTERN_KINDS == (
        "Daily",
        "Weekly",
        "AbsoluteMonthly",
        "RelativeMonthly",
        "AbsoluteYearly",
        "RelativeYearly",
    )
    assert DAY_NAMES[0] == "Sunday" and DAY_NAMES[6] == "Saturday"
    assert INDEXES == ("First", "Second", "Third", "Fourth", "Last")
    assert len(MONTHS) == 12 and MONTHS[0] == "January" and MONTHS[11] == "December"
    assert issubclass(RecurrenceError, ValueError)


# --- Daily -------------------------------------------------------------------------------------------


def test_daily_interval_counts_from_start_date_across_leap_day() -> None:
    got = dates(Pattern("Daily", interval=3), numbered("2024-02-27", 5))
    assert got == [D("2024-02-27"), D("2024-03-01"), D("2024-03-04"), D("2024-03-07"), D("2024-03-10")]


def test_daily_end_date_is_inclusive_across_year_end() -> None:
    got = dates(Pattern("Daily"), Range("EndDate", D("2024-12-30"), end_date=D("2025-01-02")))
    assert got == [D("2024-12-30"), D("2024-12-31"), D("2025-01-01"), D("2025-01-02")]


# --- Weekly ------------------------------------------------------------------------------------------


def test_weekly_several_days_starting_mid_week() -> None:
    # 2024-05-15 is a Wednesday.
    pattern = Pattern("Weekly", days_of_week=("Friday", "Monday", "Wednesday"))
    got = dates(pattern, numbered("2024-05-15", 5))
    assert got == [D("2024-05-15"), D("2024-05-17"), D("2024-05-20"), D("2024-05-22"), D("2024-05-24")]


def test_weekly_interval_two_with_monday_first_day_of_week() -> None:
    # Week 0 runs Mon 13 May .. Sun 19 May: Tue 14 is before the start, Sun 19 is in; week 1 is skipped;
    # week 2 is 27 May .. 2 Jun; week 4 is 10 .. 16 Jun.
    pattern = Pattern("Weekly", interval=2, days_of_week=("Tuesday", "Sunday"), first_day_of_week="Monday")
    got = dates(pattern, numbered("2024-05-15", 5))
    assert got == [D("2024-05-19"), D("2024-05-28"), D("2024-06-02"), D("2024-06-11"), D("2024-06-16")]


def test_weekly_interval_two_with_sunday_first_day_of_week_groups_weeks_differently() -> None:
    # Week 0 runs Sun 12 May .. Sat 18 May and has nothing on or after Wed 15; week 2 is 26 May .. 1 Jun.
    pattern = Pattern("Weekly", interval=2, days_of_week=("Tuesday", "Sunday"), first_day_of_week="Sunday")
    got = dates(pattern, numbered("2024-05-15", 4))
    assert got == [D("2024-05-26"), D("2024-05-28"), D("2024-06-09"), D("2024-06-11")]


def test_weekly_duplicate_days_are_counted_once() -> None:
    pattern = Pattern("Weekly", days_of_week=("Monday", "Monday"))
    assert dates(pattern, numbered("2024-01-01", 3)) == [D("2024-01-01"), D("2024-01-08"), D("2024-01-15")]


# --- AbsoluteMonthly ---------------------------------------------------------------------------------


def test_absolute_monthly_31_falls_on_last_day_of_short_months_in_leap_year() -> None:
    got = dates(Pattern("AbsoluteMonthly", day_of_month=31), numbered("2024-01-01", 6))
    assert got == [
        D("2024-01-31"),
        D("2024-02-29"),
        D("2024-03-31"),
        D("2024-04-30"),
        D("2024-05-31"),
        D("2024-06-30"),
    ]


def test_absolute_monthly_30_in_february_of_a_common_year() -> None:
    got = dates(Pattern("AbsoluteMonthly", day_of_month=30), numbered("2025-01-15", 3))
    assert got == [D("2025-01-30"), D("2025-02-28"), D("2025-03-30")]


def test_absolute_monthly_interval_counts_from_month_of_start_date() -> None:
    # The 15th of January is before the start, so the series begins in March (months 0, 2, 4, ...).
    got = dates(Pattern("AbsoluteMonthly", interval=2, day_of_month=15), numbered("2024-01-20", 3))
    assert got == [D("2024-03-15"), D("2024-05-15"), D("2024-07-15")]


def test_absolute_monthly_clamped_day_on_the_start_date_counts() -> None:
    got = dates(Pattern("AbsoluteMonthly", day_of_month=31), numbered("2024-04-30", 2))
    assert got == [D("2024-04-30"), D("2024-05-31")]


# --- RelativeMonthly ---------------------------------------------------------------------------------


def relative(kind: str, index: str, day: str, interval: int = 1, month: str | None = None) -> Pattern:
    return Pattern(kind, interval=interval, days_of_week=(day,), day_of_week_index=index, month=month)


def test_relative_monthly_second_tuesday() -> None:
    got = dates(relative("RelativeMonthly", "Second", "Tuesday"), numbered("2024-01-01", 4))
    assert got == [D("2024-01-09"), D("2024-02-13"), D("2024-03-12"), D("2024-04-09")]


def test_relative_monthly_last_friday() -> None:
    got = dates(relative("RelativeMonthly", "Last", "Friday"), numbered("2024-01-01", 3))
    assert got == [D("2024-01-26"), D("2024-02-23"), D("2024-03-29")]


def test_relative_monthly_interval_three() -> None:
    # Mon 1 Jan 2024 is before the start; then 1 Apr, 1 Jul, 7 Oct (first Mondays).
    got = dates(relative("RelativeMonthly", "First", "Monday", interval=3), numbered("2024-01-10", 3))
    assert got == [D("2024-04-01"), D("2024-07-01"), D("2024-10-07")]


@pytest.mark.parametrize(
    ("index", "day", "expected"),
    [
        ("First", "Day", ["2024-01-01", "2024-02-01", "2024-03-01"]),
        ("Third", "Day", ["2024-01-03", "2024-02-03", "2024-03-03"]),
        ("Last", "Day", ["2024-01-31", "2024-02-29", "2024-03-31"]),
        # Weekday = Monday..Friday. 1 Jun 2024 is a Saturday.
        ("First", "Weekday", ["2024-06-03", "2024-07-01", "2024-08-01"]),
        ("Second", "Weekday", ["2024-06-04", "2024-07-02", "2024-08-02"]),
        ("Last", "Weekday", ["2024-06-28", "2024-07-31", "2024-08-30"]),
        # WeekendDay = Saturday or Sunday.
        ("First", "WeekendDay", ["2024-06-01", "2024-07-06", "2024-08-03"]),
        ("Second", "WeekendDay", ["2024-06-02", "2024-07-07", "2024-08-04"]),
        ("Last", "WeekendDay", ["2024-06-30", "2024-07-28", "2024-08-31"]),
    ],
)
def test_relative_monthly_pseudo_days(index: str, day: str, expected: list[str]) -> None:
    got = dates(relative("RelativeMonthly", index, day), numbered("2024-01-01" if day == "Day" else "2024-06-01", 3))
    assert got == [D(x) for x in expected]


# --- Yearly ------------------------------------------------------------------------------------------


def test_absolute_yearly_feb_29_falls_on_feb_28_in_common_years() -> None:
    got = dates(Pattern("AbsoluteYearly", day_of_month=29, month="February"), numbered("2023-01-01", 6))
    assert got == [
        D("2023-02-28"),
        D("2024-02-29"),
        D("2025-02-28"),
        D("2026-02-28"),
        D("2027-02-28"),
        D("2028-02-29"),
    ]


def test_absolute_yearly_starts_next_year_when_this_years_date_has_passed_and_ignores_interval() -> None:
    pattern = Pattern("AbsoluteYearly", interval=7, day_of_month=15, month="March")
    assert dates(pattern, numbered("2024-06-01", 2)) == [D("2025-03-15"), D("2026-03-15")]


def test_absolute_yearly_31_in_a_30_day_month() -> None:
    pattern = Pattern("AbsoluteYearly", day_of_month=31, month="April")
    assert dates(pattern, numbered("2024-01-01", 2)) == [D("2024-04-30"), D("2025-04-30")]


def test_relative_yearly_last_sunday_of_march() -> None:
    got = dates(relative("RelativeYearly", "Last", "Sunday", month="March"), numbered("2024-01-01", 3))
    assert got == [D("2024-03-31"), D("2025-03-30"), D("2026-03-29")]


def test_relative_yearly_fourth_thursday_of_november_with_end_date() -> None:
    pattern = relative("RelativeYearly", "Fourth", "Thursday", month="November")
    rng = Range("EndDate", D("2024-11-28"), end_date=D("2026-11-25"))
    assert dates(pattern, rng) == [D("2024-11-28"), D("2025-11-27")]


# --- Ranges ------------------------------------------------------------------------------------------


def test_no_end_is_unbounded_and_numbered_stops_at_count() -> None:
    assert len(dates(Pattern("Daily"), Range("NoEnd", D("2024-01-01")), 5000)) == 5000
    assert len(dates(Pattern("Daily"), numbered("2024-01-01", 999))) == 999


def test_end_date_on_a_non_matching_day() -> None:
    pattern = Pattern("Weekly", days_of_week=("Monday",))
    rng = Range("EndDate", D("2024-01-01"), end_date=D("2024-01-21"))
    assert dates(pattern, rng) == [D("2024-01-01"), D("2024-01-08"), D("2024-01-15")]


# --- expand: times and daylight saving ---------------------------------------------------------------


def test_weekly_berlin_keeps_nine_local_across_both_dst_changes() -> None:
    pattern = Pattern("Weekly", days_of_week=("Sunday",))
    rng = Range("NoEnd", D("2024-03-24"))
    occs = list(expand(pattern, rng, datetime(2024, 3, 24, 9, 0), HOUR, BERLIN, window_end=Z("2024-11-04T00:00")))
    by_date = {o.start.date(): o for o in occs}
    # Last Sunday of March 2024 is the 31st, of October the 27th.
    assert by_date[D("2024-03-24")].start == Z("2024-03-24T08:00")
    assert by_date[D("2024-03-31")].start == Z("2024-03-31T07:00")
    assert by_date[D("2024-10-20")].start == Z("2024-10-20T07:00")
    assert by_date[D("2024-10-27")].start == Z("2024-10-27T08:00")
    assert by_date[D("2024-11-03")].start == Z("2024-11-03T08:00")
    assert all(o.start.astimezone(BERLIN).hour == 9 and o.end - o.start == HOUR for o in occs)
    assert all(o.start.tzinfo is UTC and o.original_start == o.start for o in occs)
    assert [o.index for o in occs] == list(range(1, len(occs) + 1))
    assert len(occs) == 33  # 24 Mar .. 3 Nov 2024, every Sunday


def test_new_york_series_across_the_november_change() -> None:
    # DST ends in New York on Sunday 3 Nov 2024 (first Sunday of November).
    pattern = Pattern("Weekly", days_of_week=("Friday",))
    occs = list(expand(pattern, numbered("2024-10-25", 3), datetime(2024, 10, 25, 10, 0), 2 * HOUR, NEW_YORK))
    assert [(o.start, o.end) for o in occs] == [
        (Z("2024-10-25T14:00"), Z("2024-10-25T16:00")),
        (Z("2024-11-01T14:00"), Z("2024-11-01T16:00")),
        (Z("2024-11-08T15:00"), Z("2024-11-08T17:00")),
    ]


def test_new_york_duration_spanning_the_change_is_elapsed_time() -> None:
    occs = list(expand(Pattern("Daily"), numbered("2024-11-02", 2), datetime(2024, 11, 2, 23, 0), 4 * HOUR, NEW_YORK))
    assert occs[0].start == Z("2024-11-03T03:00") and occs[0].end == Z("2024-11-03T07:00")
    assert occs[1].start == Z("2024-11-04T04:00") and occs[1].end == Z("2024-11-04T08:00")


def test_nonexistent_and_ambiguous_wall_times_use_fold_zero() -> None:
    spring = list(expand(Pattern("Daily"), numbered("2024-03-30", 3), datetime(2024, 3, 30, 2, 30), HOUR, BERLIN))
    # 02:30 on 31 Mar does not exist in Berlin; fold=0 reads it with the CET offset (+01:00).
    assert [o.start for o in spring] == [Z("2024-03-30T01:30"), Z("2024-03-31T01:30"), Z("2024-04-01T00:30")]
    autumn = list(
        expand(Pattern("Daily"), numbered("2024-10-26", 3), datetime(2024, 10, 26, 2, 30, fold=1), HOUR, BERLIN)
    )
    # 02:30 on 27 Oct happens twice; fold=0 picks the first (CEST, +02:00).
    assert [o.start for o in autumn] == [Z("2024-10-26T00:30"), Z("2024-10-27T00:30"), Z("2024-10-28T01:30")]


def test_expand_uses_only_the_time_of_local_start_and_accepts_an_aware_start() -> None:
    pattern = Pattern("Weekly", days_of_week=("Monday",))
    naive = list(expand(pattern, numbered("2024-01-03", 2), datetime(2024, 1, 3, 9, 30), HOUR, BERLIN))
    assert [o.start for o in naive] == [Z("2024-01-08T08:30"), Z("2024-01-15T08:30")]
    aware = list(expand(pattern, numbered("2024-01-03", 2), Z("2024-01-03T08:30"), HOUR, BERLIN))
    assert aware == naive


# --- expand: windows and limits ----------------------------------------------------------------------


def utc_daily(
    start: str = "2024-01-01",
    duration: timedelta = 2 * HOUR,
    window_start: datetime | None = None,
    window_end: datetime | None = None,
    limit: int = 100_000,
) -> list[Occurrence]:
    """A NoEnd daily series at 09:00-11:00 UTC."""
    rng = Range("NoEnd", D(start))
    return list(
        expand(
            Pattern("Daily"),
            rng,
            datetime(2024, 1, 1, 9, 0),
            duration,
            UTC_ZONE,
            window_start,
            window_end,
            limit,
        )
    )


def test_window_includes_occurrence_overlapping_window_start_and_excludes_one_starting_at_end() -> None:
    occs = utc_daily(window_start=Z("2024-01-02T10:00"), window_end=Z("2024-01-04T09:00"))
    assert [(o.index, o.start) for o in occs] == [(2, Z("2024-01-02T09:00")), (3, Z("2024-01-03T09:00"))]


def test_window_excludes_occurrence_ending_exactly_at_window_start() -> None:
    occs = utc_daily(window_start=Z("2024-01-02T11:00"), window_end=Z("2024-01-03T12:00"))
    assert [o.start for o in occs] == [Z("2024-01-03T09:00")]


def test_zero_length_occurrence_at_window_start_is_included() -> None:
    occs = utc_daily(duration=timedelta(0), window_start=Z("2024-01-02T09:00"), window_end=Z("2024-01-03T00:00"))
    assert [o.start for o in occs] == [Z("2024-01-02T09:00")]


def test_no_end_series_is_bounded_by_window_and_keeps_series_indexes() -> None:
    occs = utc_daily(start="2020-01-01", window_start=Z("2024-03-01T00:00"), window_end=Z("2024-03-04T00:00"))
    # 2020-01-01 is index 1; 2024-03-01 is 366 + 3 * 365 + 31 + 29 = 1521 days later.
    assert [(o.index, o.start.date()) for o in occs] == [
        (1522, D("2024-03-01")),
        (1523, D("2024-03-02")),
        (1524, D("2024-03-03")),
    ]


def test_window_given_as_non_utc_aware_datetimes() -> None:
    occs = utc_daily(
        window_start=datetime(2024, 1, 2, 11, 0, tzinfo=BERLIN),  # 10:00Z
        window_end=datetime(2024, 1, 3, 10, 0, tzinfo=BERLIN),  # 09:00Z: the 3 Jan occurrence starts there
    )
    assert [o.start for o in occs] == [Z("2024-01-02T09:00")]


def test_limit_caps_examined_occurrences() -> None:
    assert len(utc_daily(limit=10)) == 10
    assert utc_daily(window_start=Z("2030-01-01T00:00"), window_end=Z("2030-02-01T00:00"), limit=50) == []


def test_end_date_series_stops_before_window_end() -> None:
    rng = Range("EndDate", D("2024-01-01"), end_date=D("2024-01-03"))
    occs = list(
        expand(Pattern("Daily"), rng, datetime(2024, 1, 1, 9), HOUR, UTC_ZONE, window_end=Z("2025-01-01T00:00"))
    )
    assert [o.index for o in occs] == [1, 2, 3]


# --- first_and_last, occurrence_by_index, index_of_original_start ------------------------------------


def test_first_and_last() -> None:
    pattern = Pattern("Weekly", days_of_week=("Tuesday", "Thursday"))
    first, last = first_and_last(pattern, numbered("2024-05-15", 5), datetime(2024, 5, 15, 9), HOUR, BERLIN)
    # Thu 16, Tue 21, Thu 23, Tue 28, Thu 30 May 2024 (CEST).
    assert first == Occurrence(1, Z("2024-05-16T07:00"), Z("2024-05-16T07:00"), Z("2024-05-16T08:00"))
    assert last is not None and last.index == 5 and last.start == Z("2024-05-30T07:00")

    rng = Range("EndDate", D("2024-01-01"), end_date=D("2024-12-31"))
    first, last = first_and_last(
        Pattern("AbsoluteMonthly", day_of_month=31), rng, datetime(2024, 1, 1, 12), HOUR, BERLIN
    )
    assert first.start == Z("2024-01-31T11:00")
    assert last is not None and last.index == 12 and last.start == Z("2024-12-31T11:00")

    first, last = first_and_last(Pattern("Daily"), Range("NoEnd", D("2024-01-01")), datetime(2024, 1, 1), HOUR, BERLIN)
    assert first.index == 1 and last is None


def test_single_occurrence_is_both_first_and_last() -> None:
    first, last = first_and_last(Pattern("Daily"), numbered("2024-01-01", 1), datetime(2024, 1, 1, 9), HOUR, BERLIN)
    assert first == last


def test_occurrence_by_index_and_index_of_original_start_round_trip() -> None:
    pattern = relative("RelativeMonthly", "Last", "Sunday")
    args = (pattern, Range("NoEnd", D("2024-01-01")), datetime(2024, 1, 1, 9, 0), HOUR, BERLIN)
    for occ in islice(expand(*args), 24):
        assert occurrence_by_index(*args, occ.index) == occ
        assert index_of_original_start(*args, occ.original_start) == occ.index
    occ = occurrence_by_index(*args, 3)
    assert occ is not None and occ.start == Z("2024-03-31T07:00")  # first Sunday of summer time
    assert index_of_original_start(*args, Z("2024-03-31T07:00")) == 3
    assert index_of_original_start(*args, Z("2024-03-31T08:00")) is None  # right date, wrong time
    assert index_of_original_start(*args, Z("2024-03-30T07:00")) is None  # not an occurrence date
    assert index_of_original_start(*args, Z("2023-12-31T08:00")) is None  # before the series
    assert index_of_original_start(*args, datetime(2024, 3, 31, 9, 0, tzinfo=BERLIN)) == 3


def test_occurrence_by_index_out_of_range() -> None:
    args = (Pattern("Daily"), numbered("2024-01-01", 3), datetime(2024, 1, 1, 9), HOUR, BERLIN)
    assert occurrence_by_index(*args, 0) is None
    assert occurrence_by_index(*args, 4) is None
    assert index_of_original_start(*args, Z("2024-01-04T08:00")) is None
    occ = occurrence_by_index(*args, 3)
    assert occ is not None and occ.start == Z("2024-01-03T08:00")


# --- validation --------------------------------------------------------------------------------------

OK_RANGE = numbered("2024-01-01", 5)


@pytest.mark.parametrize(
    ("pattern", "rng", "fragments"),
    [
        (Pattern("Hourly"), OK_RANGE, ["pattern kind", "Daily, Weekly"]),
        (Pattern("Daily", interval=0), OK_RANGE, ["interval", "1 to 999"]),
        (Pattern("Daily", interval=1000), OK_RANGE, ["interval", "1 to 999"]),
        (Pattern("AbsoluteMonthly", interval=-1, day_of_month=1), OK_RANGE, ["interval"]),
        (Pattern("Weekly", interval="2", days_of_week=("Monday",)), OK_RANGE, ["interval"]),  # type: ignore[arg-type]
        (Pattern("Weekly"), OK_RANGE, ["days_of_week", "at least one", "Sunday, Monday"]),
        (Pattern("Weekly", days_of_week=("Funday",)), OK_RANGE, ["days_of_week", "'Funday'", "Saturday"]),
        (Pattern("Weekly", days_of_week=("Weekday",)), OK_RANGE, ["days_of_week", "relative", "Sunday"]),
        (Pattern("Weekly", days_of_week="Monday"), OK_RANGE, ["days_of_week", "tuple"]),  # type: ignore[arg-type]
        (
            Pattern("Weekly", days_of_week=("Monday",), first_day_of_week="Mon"),
            OK_RANGE,
            ["first_day_of_week"],
        ),
        (Pattern("AbsoluteMonthly"), OK_RANGE, ["day_of_month", "required", "1 to 31"]),
        (Pattern("AbsoluteMonthly", day_of_month=0), OK_RANGE, ["day_of_month", "1 to 31"]),
        (Pattern("AbsoluteMonthly", day_of_month=32), OK_RANGE, ["day_of_month", "1 to 31"]),
        (Pattern("RelativeMonthly", day_of_week_index="First"), OK_RANGE, ["days_of_week", "exactly one"]),
        (
            Pattern("RelativeMonthly", days_of_week=("Monday", "Tuesday"), day_of_week_index="First"),
            OK_RANGE,
            ["days_of_week", "exactly one", "WeekendDay"],
        ),
        (relative("RelativeMonthly", "First", "Mon"), OK_RANGE, ["days_of_week", "'Mon'", "Weekday"]),
        (
            Pattern("RelativeMonthly", days_of_week=("Monday",)),
            OK_RANGE,
            ["day_of_week_index", "required", "Last"],
        ),
        (relative("RelativeMonthly", "Fifth", "Monday"), OK_RANGE, ["day_of_week_index", "'Fifth'", "First"]),
        (Pattern("AbsoluteYearly", day_of_month=1), OK_RANGE, ["month", "required", "January"]),
        (Pattern("AbsoluteYearly", day_of_month=1, month="Jan"), OK_RANGE, ["month", "'Jan'", "December"]),
        (Pattern("AbsoluteYearly", month="May"), OK_RANGE, ["day_of_month", "required"]),
        (relative("RelativeYearly", "Last", "Sunday"), OK_RANGE, ["month", "required"]),
        (Pattern("Daily"), Range("Forever", D("2024-01-01")), ["range kind", "NoEnd, EndDate, Numbered"]),
        (Pattern("Daily"), Range("EndDate", D("2024-01-01")), ["end_date"]),
        (
            Pattern("Daily"),
            Range("EndDate", D("2024-01-10"), end_date=D("2024-01-09")),
            ["end_date", "before start_date"],
        ),
        (Pattern("Daily"), Range("Numbered", D("2024-01-01")), ["count", "required", "1 to 999"]),
        (Pattern("Daily"), numbered("2024-01-01", 0), ["count", "1 to 999"]),
        (Pattern("Daily"), numbered("2024-01-01", 1000), ["count", "1 to 999"]),
        (Pattern("Daily"), Range("NoEnd", datetime(2024, 1, 1)), ["start_date", "date"]),
        (
            Pattern("Weekly", days_of_week=("Friday",)),
            Range("EndDate", D("2024-01-01"), end_date=D("2024-01-02")),
            ["no occurrence"],
        ),
    ],
)
def test_validation_errors(pattern: Pattern, rng: Range, fragments: list[str]) -> None:
    with pytest.raises(RecurrenceError) as info:
        validate(pattern, rng)
    for fragment in fragments:
        assert fragment in str(info.value)
    # Every entry point validates eagerly, before iteration starts.
    with pytest.raises(RecurrenceError):
        occurrence_dates(pattern, rng)
    with pytest.raises(RecurrenceError):
        expand(pattern, rng, datetime(2024, 1, 1, 9), HOUR, BERLIN)


def test_negative_duration_is_rejected() -> None:
    with pytest.raises(RecurrenceError, match="duration"):
        expand(Pattern("Daily"), OK_RANGE, datetime(2024, 1, 1, 9), -HOUR, BERLIN)


def test_valid_patterns_pass_validation() -> None:
    for pattern in [
        Pattern("Daily", interval=999),
        Pattern("Weekly", interval=2, days_of_week=DAY_NAMES, first_day_of_week="Saturday"),
        Pattern("AbsoluteMonthly", day_of_month=31),
        relative("RelativeMonthly", "Last", "WeekendDay"),
        Pattern("AbsoluteYearly", interval=0, day_of_month=29, month="February"),  # interval ignored
        relative("RelativeYearly", "First", "Day", month="December"),
    ]:
        validate(pattern, numbered("2024-01-01", 999))


# --- cross-checks against dateutil.rrule (tests only) ------------------------------------------------


def test_cross_check_against_dateutil_rrule() -> None:
    rr = pytest.importorskip("dateutil.rrule")
    start = datetime(2024, 1, 10)

    def rule(freq: int, **kw: object) -> list[date]:
        return [d.date() for d in rr.rrule(freq, dtstart=start, count=40, **kw)]

    cases: list[tuple[Pattern, list[date]]] = [
        (Pattern("Daily", interval=3), rule(rr.DAILY, interval=3)),
        (
            Pattern("Weekly", interval=2, days_of_week=("Tuesday", "Sunday"), first_day_of_week="Monday"),
            rule(rr.WEEKLY, interval=2, wkst=rr.MO, byweekday=(rr.TU, rr.SU)),
        ),
        (
            Pattern("Weekly", interval=3, days_of_week=("Monday", "Saturday"), first_day_of_week="Sunday"),
            rule(rr.WEEKLY, interval=3, wkst=rr.SU, byweekday=(rr.MO, rr.SA)),
        ),
        # day 30 with the last-day rule = the last of the 28th..30th that exists in the month
        (
            Pattern("AbsoluteMonthly", interval=1, day_of_month=30),
            rule(rr.MONTHLY, bymonthday=(28, 29, 30), bysetpos=-1),
        ),
        (
            relative("RelativeMonthly", "Second", "Tuesday", interval=2),
            rule(rr.MONTHLY, interval=2, byweekday=rr.TU(2)),
        ),
        (relative("RelativeMonthly", "Last", "Friday"), rule(rr.MONTHLY, byweekday=rr.FR(-1))),
        (
            relative("RelativeMonthly", "Last", "Weekday"),
            rule(rr.MONTHLY, byweekday=(rr.MO, rr.TU, rr.WE, rr.TH, rr.FR), bysetpos=-1),
        ),
        (
            relative("RelativeMonthly", "Third", "WeekendDay"),
            rule(rr.MONTHLY, byweekday=(rr.SA, rr.SU), bysetpos=3),
        ),
        (
            Pattern("AbsoluteYearly", day_of_month=29, month="February"),
            rule(rr.YEARLY, bymonth=2, bymonthday=(28, 29), bysetpos=-1),
        ),
        (
            relative("RelativeYearly", "Last", "Sunday", month="October"),
            rule(rr.YEARLY, bymonth=10, byweekday=rr.SU(-1)),
        ),
    ]
    for pattern, expected in cases:
        assert dates(pattern, numbered("2024-01-10", 40)) == expected, pattern


def test_cross_check_berlin_times_against_dateutil_rrule() -> None:
    rr = pytest.importorskip("dateutil.rrule")
    expected = [
        d.replace(tzinfo=BERLIN).astimezone(UTC)
        for d in rr.rrule(rr.WEEKLY, dtstart=datetime(2024, 1, 7, 9), count=104, byweekday=rr.SU)
    ]
    pattern = Pattern("Weekly", days_of_week=("Sunday",))
    got = [o.start for o in expand(pattern, numbered("2024-01-07", 104), datetime(2024, 1, 7, 9), HOUR, BERLIN)]
    assert got == expected

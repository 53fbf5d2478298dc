"""Exchange (EWS) recurrence model for the emulator.

This module owns the meaning of an EWS ``<t:Recurrence>``: the six pattern kinds (DailyRecurrence,
WeeklyRecurrence, AbsoluteMonthlyRecurrence, RelativeMonthlyRecurrence, AbsoluteYearlyRecurrence,
RelativeYearlyRecurrence), the three range kinds (NoEndRecurrence, EndDateRecurrence,
NumberedRecurrence), their validation, and the expansion of a series into its occurrences
(dates, then UTC start/end times with Exchange's "same wall-clock time" rule across daylight saving).

It is written from Microsoft's EWS documentation of those elements. It knows nothing of XML, of
modified or deleted occurrences (exceptions) or of storage: callers layer those on top.
"""

import calendar
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import MAXYEAR, UTC, date, datetime, time, timedelta
from functools import partial
from itertools import count as _count
from zoneinfo import ZoneInfo

PATTERN_KINDS = ("Daily", "Weekly", "AbsoluteMonthly", "RelativeMonthly", "AbsoluteYearly", "RelativeYearly")
RANGE_KINDS = ("NoEnd", "EndDate", "Numbered")
DAY_NAMES = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
PSEUDO_DAYS = ("Day", "Weekday", "WeekendDay")
INDEXES = ("First", "Second", "Third", "Fourth", "Last")
MONTHS = tuple(calendar.month_name[1:])  # January .. December (English, as in the EWS schema)
MAX_INTERVAL = 999
MAX_OCCURRENCES = 999  # Exchange's limit for NumberedRecurrence


class RecurrenceError(ValueError):
    """Invalid pattern or range; str() names the bad field and the allowed values."""


@dataclass(frozen=True)
class Pattern:
    kind: str  # one of PATTERN_KINDS
    interval: int = 1  # Daily/Weekly/*Monthly: every N days/weeks/months; ignored for yearly kinds
    days_of_week: tuple[str, ...] = ()  # Weekly: DAY_NAMES; Relative*: exactly one of DAY_NAMES/PSEUDO_DAYS
    first_day_of_week: str = "Sunday"  # Weekly only
    day_of_month: int | None = None  # Absolute*: 1..31
    day_of_week_index: str | None = None  # Relative*: one of INDEXES
    month: str | None = None  # *Yearly: one of MONTHS


@dataclass(frozen=True)
class Range:
    kind: str  # one of RANGE_KINDS
    start_date: date
    end_date: date | None = None  # EndDate: inclusive last date
    count: int | None = None  # Numbered: number of occurrences, 1..999


@dataclass(frozen=True)
class Occurrence:
    index: int  # 1-based position in the series (EWS InstanceIndex)
    original_start: datetime  # aware, UTC
    start: datetime  # aware, UTC
    end: datetime  # aware, UTC


def _allowed(values: tuple[str, ...]) -> str:
    return ", ".join(values)


def _check_int(field: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RecurrenceError(f"{field} must be an integer from {low} to {high}, got {value!r}")


def _check_name(field: str, value: object, allowed: tuple[str, ...], kind: str) -> None:
    if value is None:
        raise RecurrenceError(f"{field} is required for {kind}; allowed: {_allowed(allowed)}")
    if value not in allowed:
        raise RecurrenceError(f"{field} {value!r} is not valid; allowed: {_allowed(allowed)}")


def _validate_pattern(p: Pattern) -> None:
    if p.kind not in PATTERN_KINDS:
        raise RecurrenceError(f"pattern kind {p.kind!r} is not valid; allowed: {_allowed(PATTERN_KINDS)}")
    if not p.kind.endswith("Yearly"):
        _check_int("interval", p.interval, 1, MAX_INTERVAL)
    if p.kind.startswith("Absolute"):
        if p.day_of_month is None:
            raise RecurrenceError(f"day_of_month is required for {p.kind}; allowed: 1 to 31")
        _check_int("day_of_month", p.day_of_month, 1, 31)
    if p.kind.endswith("Yearly"):
        _check_name("month", p.month, MONTHS, p.kind)
    if isinstance(p.days_of_week, str):
        raise RecurrenceError(f"days_of_week must be a tuple of day names, not the string {p.days_of_week!r}")
    if p.kind == "Weekly":
        if not p.days_of_week:
            raise RecurrenceError(f"days_of_week must list at least one day for Weekly; allowed: {_allowed(DAY_NAMES)}")
        for day in p.days_of_week:
            if day in PSEUDO_DAYS:
                raise RecurrenceError(
                    f"days_of_week {day!r} is for relative patterns only; Weekly allows {_allowed(DAY_NAMES)}"
                )
            _check_name("days_of_week", day, DAY_NAMES, p.kind)
        _check_name("first_day_of_week", p.first_day_of_week, DAY_NAMES, p.kind)
    if p.kind.startswith("Relative"):
        choices = DAY_NAMES + PSEUDO_DAYS
        if len(p.days_of_week) != 1:
            raise RecurrenceError(
                f"days_of_week must hold exactly one day for {p.kind}, got {len(p.days_of_week)}; "
                f"allowed: {_allowed(choices)}"
            )
        _check_name("days_of_week", p.days_of_week[0], choices, p.kind)
        _check_name("day_of_week_index", p.day_of_week_index, INDEXES, p.kind)


def _validate_range(r: Range) -> None:
    if r.kind not in RANGE_KINDS:
        raise RecurrenceError(f"range kind {r.kind!r} is not valid; allowed: {_allowed(RANGE_KINDS)}")
    if isinstance(r.start_date, datetime) or not isinstance(r.start_date, date):
        raise RecurrenceError(f"start_date must be a date (not a datetime), got {r.start_date!r}")
    if r.kind == "EndDate":
        if isinstance(r.end_date, datetime) or not isinstance(r.end_date, date):
            raise RecurrenceError(f"end_date must be a date for an EndDate range, got {r.end_date!r}")
        if r.end_date < r.start_date:
            raise RecurrenceError(
                f"end_date {r.end_date} is before start_date {r.start_date}; it must be on or after it"
            )
    if r.kind == "Numbered":
        if r.count is None:
            raise RecurrenceError(f"count is required for a Numbered range; allowed: 1 to {MAX_OCCURRENCES}")
        _check_int("count", r.count, 1, MAX_OCCURRENCES)


def validate(pattern: Pattern, rng: Range) -> None:
    """Raise RecurrenceError if the pattern or range is invalid, or if an EndDate range holds no occurrence
    (Exchange answers ErrorRecurrenceHasNoOccurrence then)."""
    _validate_pattern(pattern)
    _validate_range(rng)
    if rng.kind == "EndDate" and rng.end_date is not None:
        first = next(_pattern_dates(pattern, rng.start_date), None)
        if first is None or first > rng.end_date:
            raise RecurrenceError(
                f"the range {rng.start_date}..{rng.end_date} contains no occurrence of the pattern; "
                "end_date must be on or after the first matching date"
            )


def _sunday0(d: date) -> int:
    """Index of d's weekday in DAY_NAMES (Sunday = 0)."""
    return (d.weekday() + 1) % 7


def _day_matches(d: date, day: str) -> bool:
    if day == "Day":
        return True
    if day == "Weekday":
        return d.weekday() < 5
    if day == "WeekendDay":
        return d.weekday() >= 5
    return DAY_NAMES[_sunday0(d)] == day


def _absolute_day(year: int, month: int, day_of_month: int) -> date:
    """day_of_month in that month, or the month's last day when the month is shorter."""
    return date(year, month, min(day_of_month, calendar.monthrange(year, month)[1]))


def _relative_day(year: int, month: int, day: str, index: str) -> date:
    """E.g. the Second Tuesday, the Last Weekday, the First Day of that month."""
    last = calendar.monthrange(year, month)[1]
    matches = [d for d in (date(year, month, n) for n in range(1, last + 1)) if _day_matches(d, day)]
    return matches[-1] if index == "Last" else matches[INDEXES.index(index)]


def _every_n_months(start: date, year: int, month: int, step: int, pick: Callable[[int, int], date]) -> Iterator[date]:
    """pick(year, month) for every `step` months from (year, month), skipping dates before start."""
    months = year * 12 + month - 1
    while months // 12 <= MAXYEAR:
        d = pick(months // 12, months % 12 + 1)
        if d >= start:
            yield d
        months += step


def _daily(start: date, interval: int) -> Iterator[date]:
    try:
        for k in _count():
            yield start + timedelta(days=k * interval)
    except OverflowError:  # past date.max
        return


def _weekly(start: date, interval: int, days: tuple[str, ...], first_day_of_week: str) -> Iterator[date]:
    """Week 0 is the week (beginning on first_day_of_week) that holds start; then every interval-th week."""
    first = DAY_NAMES.index(first_day_of_week)
    week0 = start - timedelta(days=(_sunday0(start) - first) % 7)
    offsets = sorted({(DAY_NAMES.index(d) - first) % 7 for d in days})
    try:
        for k in _count(step=interval):
            for offset in offsets:
                d = week0 + timedelta(days=7 * k + offset)
                if d >= start:
                    yield d
    except OverflowError:  # past date.max
        return


def _pattern_dates(p: Pattern, start: date) -> Iterator[date]:
    """All dates >= start matching the (valid) pattern, unbounded except by date.max."""
    if p.kind == "Daily":
        return _daily(start, p.interval)
    if p.kind == "Weekly":
        return _weekly(start, p.interval, p.days_of_week, p.first_day_of_week)
    pick: Callable[[int, int], date]
    if p.kind.startswith("Absolute"):
        pick = partial(_absolute_day, day_of_month=p.day_of_month or 1)
    else:
        pick = partial(_relative_day, day=p.days_of_week[0], index=p.day_of_week_index or "First")
    if p.kind.endswith("Monthly"):
        return _every_n_months(start, start.year, start.month, p.interval, pick)
    return _every_n_months(start, start.year, MONTHS.index(p.month or "") + 1, 12, pick)


def occurrence_dates(pattern: Pattern, rng: Range) -> Iterator[date]:
    """Dates of occurrences in order, starting at the first date >= rng.start_date matching the pattern.
    Infinite for NoEnd (callers bound it). Numbered stops after `count` dates, EndDate after end_date.
    Validates first, so a bad pattern or range raises RecurrenceError at call time."""
    validate(pattern, rng)

    def bounded() -> Iterator[date]:
        for n, d in enumerate(_pattern_dates(pattern, rng.start_date)):
            if rng.kind == "Numbered" and rng.count is not None and n >= rng.count:
                return
            if rng.kind == "EndDate" and rng.end_date is not None and d > rng.end_date:
                return
            yield d

    return bounded()


def _as_utc(dt: datetime) -> datetime:
    """Aware datetimes converted to UTC; naive ones are taken to be UTC already."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def expand(
    pattern: Pattern,
    rng: Range,
    local_start: datetime,
    duration: timedelta,
    tz: ZoneInfo,
    window_start: datetime | None = None,
    window_end: datetime | None = None,
    limit: int = 100_000,
) -> Iterator[Occurrence]:
    """Occurrences of a series whose occurrences start at local_start's wall-clock time in `tz`.

    Only the time of day of local_start is used (an aware local_start is first converted to tz); the
    dates come from occurrence_dates(). Start is that wall-clock time on each date (fold=0, so a time in
    the spring-forward gap maps to the pre-transition offset and an ambiguous time to its first instance),
    converted to UTC; end = start + duration in elapsed time. With a window, only occurrences overlapping
    [window_start, window_end) are yielded (a zero-length one at window_start counts) and iteration stops
    at the first occurrence starting at or after window_end. At most `limit` occurrences are examined.
    """
    if duration < timedelta(0):
        raise RecurrenceError(f"duration must not be negative, got {duration}")
    dates = occurrence_dates(pattern, rng)
    if local_start.tzinfo is not None:
        local_start = local_start.astimezone(tz).replace(tzinfo=None)
    wall: time = local_start.time().replace(fold=0)
    lo = None if window_start is None else _as_utc(window_start)
    hi = None if window_end is None else _as_utc(window_end)

    def generate() -> Iterator[Occurrence]:
        for index, day in enumerate(dates, start=1):
            if index > limit:
                return
            start = datetime.combine(day, wall, tzinfo=tz).astimezone(UTC)
            if hi is not None and start >= hi:
                return
            end = start + duration
            if lo is not None and end <= lo and start < lo:
                continue
            yield Occurrence(index=index, original_start=start, start=start, end=end)

    return generate()


def first_and_last(
    pattern: Pattern, rng: Range, local_start: datetime, duration: timedelta, tz: ZoneInfo
) -> tuple[Occurrence, Occurrence | None]:
    """First occurrence, and last occurrence (None for NoEnd)."""
    occurrences = expand(pattern, rng, local_start, duration, tz)
    first = next(occurrences, None)
    if first is None:  # validate() rules this out; kept for the type checker and extreme dates
        raise RecurrenceError("the recurrence has no occurrence")
    if rng.kind == "NoEnd":
        return first, None
    tail = deque(occurrences, maxlen=1)
    return first, (tail[0] if tail else first)


def occurrence_by_index(
    pattern: Pattern, rng: Range, local_start: datetime, duration: timedelta, tz: ZoneInfo, index: int
) -> Occurrence | None:
    """The occurrence with that 1-based InstanceIndex, or None when the series has no such occurrence."""
    if index < 1:
        return None
    for occ in expand(pattern, rng, local_start, duration, tz, limit=index):
        if occ.index == index:
            return occ
    return None


def index_of_original_start(
    pattern: Pattern,
    rng: Range,
    local_start: datetime,
    duration: timedelta,
    tz: ZoneInfo,
    original_start_utc: datetime,
) -> int | None:
    """InstanceIndex of the occurrence that (unmodified) starts at original_start_utc, or None."""
    target = _as_utc(original_start_utc)
    for occ in expand(pattern, rng, local_start, duration, tz):
        if occ.original_start == target:
            return occ.index
        if occ.original_start > target:
            return None
    return None

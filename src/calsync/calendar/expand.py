"""Expansion of the application calendar into occurrences on a time line.

This module owns the read-side meaning of an :class:`~calsync.calendar.model.Appointment`: which
occurrences a single appointment or a recurring series has in a time range, with Exchange's semantics
layered on ``dateutil.rrule`` (the series' Windows or IANA zone and wall-clock time across daylight saving,
the last-day rule of absolute monthly/yearly patterns, the Day/Weekday/WeekendDay pseudo-days, EWS ranges,
deleted occurrences and overrides). It also owns the mapping of an EWS ``Recurrence`` to RRULE parts
(:class:`RulePattern`), which the iCalendar export reuses so both agree.

Expansion never walks a series from its start: a rule is first moved forward by whole periods to the
query range (keeping Numbered counts right), and one call examines at most ``MAX_OCCURRENCES`` slots.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from itertools import islice, takewhile
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil import rrule as du
from dateutil import tz as du_tz
from tzlocal.windows_tz import win_tz

from .model import Appointment, Occurrence, Recurrence

__all__ = [
    "MAX_OCCURRENCES",
    "POSIX_PREFIX",
    "RulePattern",
    "Series",
    "expand_all",
    "occurrences",
    "rule_pattern",
    "zone_for",
]

log = logging.getLogger(__name__)

MAX_OCCURRENCES = 10_000  # per call: a hostile range over a daily series cannot hang the process

Freq = Literal["DAILY", "WEEKLY", "MONTHLY", "YEARLY"]
_DAY_CODES = {
    "Monday": "MO",
    "Tuesday": "TU",
    "Wednesday": "WE",
    "Thursday": "TH",
    "Friday": "FR",
    "Saturday": "SA",
    "Sunday": "SU",
}
_CODES = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")  # index = date.weekday()
_PSEUDO_DAYS = {"Day": _CODES, "Weekday": _CODES[:5], "WeekendDay": _CODES[5:]}
_INDEXES = {"First": 1, "Second": 2, "Third": 3, "Fourth": 4, "Last": -1}
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_FREQS = {"DAILY": du.DAILY, "WEEKLY": du.WEEKLY, "MONTHLY": du.MONTHLY, "YEARLY": du.YEARLY}
_DU_DAYS = dict(zip(_CODES, (du.MO, du.TU, du.WE, du.TH, du.FR, du.SA, du.SU), strict=True))


POSIX_PREFIX = "POSIX:"  # a zone known only by its rule, as a POSIX TZ string ("POSIX:XST-1XDT-2,M3.5.0/2,...")


@lru_cache(maxsize=256)
def zone_for(tz_id: str | None) -> tzinfo:
    """The zone for a Windows id ("W. Europe Standard Time"), an IANA name, or a ``POSIX:`` rule (sources name
    a zone that way when the server defined it but named it with an id nobody knows); UTC when unknown."""
    if tz_id and tz_id.startswith(POSIX_PREFIX):
        try:
            return du_tz.tzstr(tz_id.removeprefix(POSIX_PREFIX), posix_offset=True)
        except ValueError:
            log.debug("unreadable POSIX time zone %r, using UTC", tz_id)
            return ZoneInfo("UTC")
    if tz_id:
        name = win_tz.get(tz_id, tz_id)
        if name in ("Etc/UTC", "Etc/GMT"):  # Windows "UTC" and friends: plain UTC
            name = "UTC"
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            log.debug("unknown time zone %r, using UTC", tz_id)
    return ZoneInfo("UTC")


@dataclass(frozen=True)
class RulePattern:
    """RRULE parts (RFC 5545 names and values) of an EWS pattern, without its range.

    Every pattern this module builds yields the same number of dates in each period (one period = INTERVAL
    days/weeks/months/years): ``per_period``. Expansion relies on that to skip whole periods.
    """

    freq: Freq
    interval: int = 1
    byday: tuple[str, ...] = ()  # MO..SU
    bymonthday: tuple[int, ...] = ()
    bysetpos: tuple[int, ...] = ()
    bymonth: tuple[int, ...] = ()
    wkst: str = "SU"

    @property
    def per_period(self) -> int:
        return len(set(self.byday)) if self.freq == "WEEKLY" else 1

    def rrule_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``dateutil.rrule.rrule`` (all but dtstart/count/until)."""
        kwargs: dict[str, Any] = {"freq": _FREQS[self.freq], "interval": self.interval, "wkst": _DU_DAYS[self.wkst]}
        if self.byday:
            kwargs["byweekday"] = tuple(_DU_DAYS[c] for c in self.byday)
        if self.bymonthday:
            kwargs["bymonthday"] = self.bymonthday
        if self.bysetpos:
            kwargs["bysetpos"] = self.bysetpos
        if self.bymonth:
            kwargs["bymonth"] = self.bymonth
        return kwargs


def _day_codes(days: Iterable[str]) -> tuple[str, ...]:
    codes: list[str] = []
    for day in days:
        for code in _PSEUDO_DAYS.get(day) or ((_DAY_CODES[day],) if day in _DAY_CODES else ()):
            if code not in codes:
                codes.append(code)
    return tuple(codes)


def _month_day(day: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """BYMONTHDAY/BYSETPOS for Exchange's day D: D, or the month's last day when the month is shorter."""
    day = max(1, min(day, 31))
    return ((day,), ()) if day <= 28 else (tuple(range(28, day + 1)), (-1,))


def rule_pattern(rec: Recurrence, first: date) -> RulePattern:
    """The RRULE parts of an EWS pattern; `first` (the range's start date) fills in missing fields.
    Yearly patterns recur every year: EWS has no interval for them, so ``rec.interval`` is ignored there."""
    interval = max(1, rec.interval)
    wkst = _DAY_CODES.get(rec.first_day_of_week, "SU")
    days = _day_codes(rec.days_of_week) or (_CODES[first.weekday()],)
    month = (_MONTHS.index(rec.month) + 1,) if rec.month in _MONTHS else (first.month,)
    setpos = (_INDEXES.get(rec.index or "First", 1),)
    monthday, lastday = _month_day(rec.day_of_month or first.day)
    match rec.pattern:
        case "Daily":
            return RulePattern("DAILY", interval, wkst=wkst)
        case "Weekly":
            return RulePattern("WEEKLY", interval, byday=days, wkst=wkst)
        case "AbsoluteMonthly":
            return RulePattern("MONTHLY", interval, bymonthday=monthday, bysetpos=lastday, wkst=wkst)
        case "RelativeMonthly":
            return RulePattern("MONTHLY", interval, byday=days, bysetpos=setpos, wkst=wkst)
        case "AbsoluteYearly":
            return RulePattern("YEARLY", 1, bymonthday=monthday, bysetpos=lastday, bymonth=month, wkst=wkst)
        case "RelativeYearly":
            return RulePattern("YEARLY", 1, byday=days, bysetpos=setpos, bymonth=month, wkst=wkst)
    raise ValueError(f"unknown recurrence pattern {rec.pattern!r}")


def _utc(dt: datetime) -> datetime:
    """Aware datetimes in UTC; naive ones are taken to be UTC already."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _local(dt: datetime, tz: tzinfo, slack: timedelta) -> datetime:
    """dt as naive wall-clock time in tz, moved by slack; clamped to datetime.min/max."""
    try:
        return dt.astimezone(tz).replace(tzinfo=None) + slack
    except OverflowError:
        return datetime.max if dt.year > 5000 else datetime.min


def _overlaps(start: datetime, end: datetime, lo: datetime, hi: datetime) -> bool:
    """[start, end) overlaps [lo, hi); a zero-length occurrence at lo counts."""
    return start < hi and (end > lo or start == lo)


@dataclass(frozen=True)
class Series:
    """A recurring appointment's raw slots: the pattern's dates at the series' wall-clock time in its zone."""

    appointment: Appointment
    tz: tzinfo
    pattern: RulePattern
    dtstart: datetime  # naive local: the range's start date at the series' time of day
    until: date | None  # EndDate: inclusive last local date
    count: int | None  # Numbered: occurrences in total
    duration: timedelta  # elapsed time (timed) or whole days (all-day)

    @classmethod
    def of(cls, appointment: Appointment) -> Series:
        rec = appointment.recurrence
        if rec is None:
            raise ValueError(f"appointment {appointment.item_id!r} is not a series")
        tz = zone_for(appointment.start_tz)
        local = _utc(appointment.start).astimezone(tz)
        first = rec.start_date or local.date()
        if appointment.all_day:
            wall = time(0)
            duration = timedelta(days=(_utc(appointment.end).astimezone(tz).date() - local.date()).days)
        else:
            wall = local.time().replace(fold=0)
            duration = _utc(appointment.end) - _utc(appointment.start)
        until = rec.end_date if rec.range == "EndDate" else None
        count = rec.count if rec.range == "Numbered" else None
        return cls(appointment, tz, rule_pattern(rec, first), datetime.combine(first, wall), until, count, duration)

    # --- slots ---------------------------------------------------------------------------------------

    def slot(self, local: datetime) -> datetime:
        """UTC start of the slot at naive local time `local` (fold=0 for gaps and repeated hours)."""
        return local.replace(tzinfo=self.tz, fold=0).astimezone(UTC)

    def end_of(self, start: datetime) -> datetime:
        """End of an occurrence starting at `start` (UTC): whole local days for all-day series."""
        if not self.appointment.all_day:
            return start + self.duration
        day = start.astimezone(self.tz).date() + self.duration
        return datetime.combine(day, time(0), tzinfo=self.tz).astimezone(UTC)

    def first_start(self) -> datetime | None:
        """UTC start of the first slot, or None when the range holds none."""
        rule = self._rule(self.dtstart, self.count)
        first = next(iter(rule), None) if rule is not None else None
        return None if first is None else self.slot(first)

    def contains(self, original: datetime) -> bool:
        """Whether `original` (aware) is the start of one of the series' slots."""
        original = _utc(original)
        local = _local(original, self.tz, timedelta(0))
        rule = self._rule_near(local.date())
        found = rule.after(local, inc=True) if rule is not None else None
        return found is not None and self.slot(found) == original

    def last_start(self) -> datetime | None:
        """UTC start of the last slot; None for a series without end (or none at all)."""
        if self.count is None and self.until is None:
            return None
        rule = self._rule(self.dtstart, self.count)
        tail = deque(islice(rule or (), 100_000), maxlen=1)  # Exchange allows 999 by count; dates run further
        return self.slot(tail[0]) if tail else None

    def fit(self, candidates: Iterable[datetime | None]) -> datetime | None:
        """The slot that a changed or deleted occurrence names by its original start.

        Servers differ in how they say it: the first candidate that is a slot wins; failing that, the one slot
        on the same local day as a candidate (a server that gives the day at midnight, say). None when no
        candidate names exactly one slot."""
        known = [_utc(c) for c in candidates if c is not None]
        for candidate in known:
            if self.contains(candidate):
                return candidate
        for candidate in known:
            day = candidate.astimezone(self.tz).date()
            lo = datetime.combine(day, time(0), tzinfo=self.tz).astimezone(UTC)
            hi = datetime.combine(day + timedelta(days=1), time(0), tzinfo=self.tz).astimezone(UTC)
            same_day = list(islice(self.slots(lo, hi), 2))
            if len(same_day) == 1:
                return same_day[0]
        return None

    def slots(self, lo: datetime, hi: datetime) -> Iterator[datetime]:
        """UTC starts of the slots with lo <= start < hi, in order."""
        lo_local, hi_local = _local(lo, self.tz, -timedelta(days=1)), _local(hi, self.tz, timedelta(days=1))
        rule = self._rule_near(lo_local.date())
        if rule is None:
            return
        for local in rule.xafter(lo_local, inc=True):
            if local > hi_local:
                return
            try:
                start = self.slot(local)
            except OverflowError:  # past datetime.max in UTC
                return
            if start >= hi:
                return
            if start >= lo:
                yield start

    # --- rules ---------------------------------------------------------------------------------------

    def _rule(self, dtstart: datetime, count: int | None) -> du.rrule | None:
        if count is not None and count <= 0:
            return None
        until = datetime.combine(self.until, time.max) if self.until is not None else None
        return du.rrule(dtstart=dtstart, count=count, until=until, cache=False, **self.pattern.rrule_kwargs())

    def _period_start(self, day: date, periods: int = 0) -> date:
        """Start of the period holding `day`, moved by `periods` periods (may raise OverflowError/ValueError)."""
        p = self.pattern
        step = periods * p.interval
        if p.freq == "DAILY":
            return day + timedelta(days=step)
        if p.freq == "WEEKLY":
            week = day - timedelta(days=(day.weekday() - _CODES.index(p.wkst)) % 7)
            return week + timedelta(weeks=step)
        if p.freq == "MONTHLY":
            months = day.year * 12 + day.month - 1 + step
            return date(months // 12, months % 12 + 1, 1)
        return date(day.year + step, 1, 1)

    def _periods_between(self, first: date, target: date) -> int:
        """Whole periods from `first` (a period start) to the period holding `target`."""
        p = self.pattern
        if p.freq == "DAILY":
            return (target - first).days // p.interval
        if p.freq == "WEEKLY":
            return (target - first).days // (7 * p.interval)
        if p.freq == "MONTHLY":
            return (target.year * 12 + target.month - first.year * 12 - first.month) // p.interval
        return (target.year - first.year) // p.interval

    def _rule_near(self, target: date) -> du.rrule | None:
        """The rule restarted at the period holding `target` (or at the series start if that is later),
        with a Numbered count reduced by the slots skipped; None when no slot is left."""
        try:
            p0 = self._period_start(self.dtstart.date())
            k = self._periods_between(p0, target)
        except (OverflowError, ValueError):  # a period before date.min: start at the start
            k = 0
        if k <= 0:
            return self._rule(self.dtstart, self.count)
        try:
            restart = datetime.combine(self._period_start(p0, k), self.dtstart.time())
            second = datetime.combine(self._period_start(p0, 1), self.dtstart.time())
        except (OverflowError, ValueError):  # past date.max
            return None
        count = self.count
        if count is not None:  # every period but the first (cut by dtstart) holds per_period slots
            full = self._rule(self.dtstart, None)
            in_first = sum(1 for _ in takewhile(second.__gt__, islice(full or (), 7)))
            count -= in_first + (k - 1) * self.pattern.per_period
        return self._rule(restart, count)


def _single(appointment: Appointment, lo: datetime, hi: datetime) -> list[Occurrence]:
    start, end = _utc(appointment.start), _utc(appointment.end)
    if not _overlaps(start, end, lo, hi):
        return []
    cancelled = appointment.status == "cancelled"
    return [Occurrence(appointment, start, end, None, appointment.subject, appointment.location, cancelled)]


def occurrences(
    appointment: Appointment, start: datetime, end: datetime, *, limit: int = MAX_OCCURRENCES
) -> list[Occurrence]:
    """Every occurrence of `appointment` overlapping [start, end), sorted by (start, end).

    A series yields its slots minus deleted ones, with overrides in place of the slots they replace
    (wherever they moved to). At most `limit` occurrences are returned (the earliest ones).
    """
    lo, hi = _utc(start), _utc(end)
    if appointment.recurrence is None:
        return _single(appointment, lo, hi)
    app, series = appointment, Series.of(appointment)
    series_cancelled = app.status == "cancelled"
    deleted = {_utc(d) for d in app.deleted_occurrences}
    overrides = {_utc(o.original_start): o for o in app.overrides}
    found: list[Occurrence] = []
    try:
        earliest = lo - max(series.duration, timedelta(0))
    except OverflowError:
        earliest = lo
    examined = 0
    for slot in islice(series.slots(earliest, hi), limit):
        examined += 1
        try:
            slot_end = series.end_of(slot)
        except OverflowError:  # ends past datetime.max
            break
        if slot in deleted or slot in overrides or not _overlaps(slot, slot_end, lo, hi):
            continue
        found.append(Occurrence(app, slot, slot_end, slot, app.subject, app.location, series_cancelled))
    for original, o in overrides.items():
        o_start, o_end = _utc(o.start), _utc(o.end)
        if original in deleted or not _overlaps(o_start, o_end, lo, hi) or not series.contains(original):
            continue
        found.append(
            Occurrence(
                app,
                o_start,
                o_end,
                original,
                app.subject if o.subject is None else o.subject,
                app.location if o.location is None else o.location,
                series_cancelled if o.cancelled is None else o.cancelled,
                is_exception=True,
            )
        )
    found.sort(key=lambda occ: (occ.start, occ.end))
    if len(found) > limit or examined == limit:
        log.warning("series %r: occurrences in range capped at the first %d", app.item_id, limit)
    return found[:limit]


def expand_all(appointments: Iterable[Appointment], start: datetime, end: datetime) -> list[Occurrence]:
    """The occurrences of all appointments overlapping [start, end), sorted by (start, end, subject)."""
    found = [occ for appointment in appointments for occ in occurrences(appointment, start, end)]
    found.sort(key=lambda occ: (occ.start, occ.end, occ.subject or ""))
    return found

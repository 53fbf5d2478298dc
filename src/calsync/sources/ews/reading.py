"""Reading what decides where an appointment is on the calendar, from the EWS XML itself.

Owns: the start and end of an item, its all-day flag and time zones, its recurrence (pattern and range), the
first, last, modified and deleted occurrences of a series, an exception's original start, and its
last-modified time. Every other property is left to exchangelib.

Why calsync reads these itself: exchangelib (5.6) reads a date-time only as ``…:SSZ`` or with an offset and
no fraction, so the fractional seconds that Exchange writes in places and other EWS servers write everywhere
(``2026-12-04T15:50:47.6890677Z``) become None with a line at INFO; it reads an offset-less recurrence date
as midnight of the machine running calsync; it drops a time zone whose id is not a Windows id. A None in any
of these fields turns into a wrong calendar (a series that never ends, a deleted occurrence that stays, a
moved one left where it was). Here nothing becomes None: a value is read in every form the schema allows (and
the forms real servers send), or :class:`Unreadable` names the field and the raw text.

Forms read:

- ``xs:dateTime`` with any number of fractional digits (kept to the microsecond), with ``Z``, an offset, or
  none (then UTC: calsync sends no TimeZoneContext, so servers answer in UTC), and ``24:00:00``;
- ``xs:date`` with or without ``Z`` or an offset (the date as written: the offset says where, not which day);
- a date-time where a date belongs (some servers write recurrence dates so): midnight as written gives that
  date, any other time the date it falls on in the series' zone;
- time zones: see :mod:`calsync.sources.ews.timezones`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from calsync.calendar.expand import zone_for
from calsync.calendar.model import PatternKind, RangeKind, Recurrence
from calsync.sources.base import Unreadable
from calsync.sources.values import read_bool as _bool
from calsync.sources.values import read_choice as _choice
from calsync.sources.values import read_date, read_datetime
from calsync.sources.values import read_int as _int

from .timezones import zone_id

__all__ = [
    "ItemTimes",
    "OccurrenceRef",
    "Unreadable",
    "read_date",
    "read_datetime",
    "read_item",
]

T_NS = "http://schemas.microsoft.com/exchange/services/2006/types"

DAY_NAMES = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
PSEUDO_DAYS = ("Day", "Weekday", "WeekendDay")
INDEXES = ("First", "Second", "Third", "Fourth", "Last")
MONTHS = (
    *("January", "February", "March", "April", "May", "June"),
    *("July", "August", "September", "October", "November", "December"),
)
_PATTERNS: tuple[PatternKind, ...] = (
    "Daily",
    "Weekly",
    "AbsoluteMonthly",
    "RelativeMonthly",
    "AbsoluteYearly",
    "RelativeYearly",
)
_RANGES: tuple[RangeKind, ...] = ("NoEnd", "EndDate", "Numbered")


def t(name: str) -> str:
    return f"{{{T_NS}}}{name}"


# --- values ------------------------------------------------------------------------------------------------------


# --- items -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OccurrenceRef:
    """An occurrence a series names: FirstOccurrence, LastOccurrence, or an entry of ModifiedOccurrences."""

    item_id: str | None
    start: datetime
    end: datetime
    original_start: datetime | None


@dataclass(frozen=True)
class ItemTimes:
    """What decides where a calendar item (a single item, a series master, or one occurrence) lies."""

    start: datetime
    end: datetime
    start_tz: str
    end_tz: str
    all_day: bool
    recurrence: Recurrence | None = None
    first: OccurrenceRef | None = None
    last: OccurrenceRef | None = None
    modified: tuple[OccurrenceRef, ...] = ()
    deleted: tuple[datetime, ...] = ()  # original starts of the deleted occurrences
    original_start: datetime | None = None  # an occurrence's: OriginalStart, else RecurrenceId
    last_modified: datetime | None = None
    last_modified_raw: str | None = None  # set when LastModifiedTime was sent but could not be read


def read_item(elem: Any) -> ItemTimes:
    """Read a ``t:CalendarItem`` element (GetItem answer). Raises Unreadable for the first value that decides
    the calendar and cannot be read."""
    start = read_datetime(elem.findtext(t("Start")), "Start")
    end = read_datetime(elem.findtext(t("End")), "End")
    all_day_raw = elem.findtext(t("IsAllDayEvent"))
    all_day = _bool(all_day_raw, "IsAllDayEvent") if all_day_raw is not None else False
    # A zone matters for a series (its wall-clock time across daylight saving) and an all-day item (its local
    # midnights); a timed single item is placed by its instants alone, so its zone may stay a name.
    needed = all_day or elem.find(t("Recurrence")) is not None
    start_tz = _zone(elem, "Start", start, needed)
    end_tz = _zone(elem, "End", end, needed)
    if end < start:
        raise Unreadable("End", elem.findtext(t("End")), "before Start")
    recurrence = None
    rec_elem = elem.find(t("Recurrence"))
    if rec_elem is not None:
        recurrence = read_recurrence(rec_elem, zone_for(start_tz))
    modified = tuple(
        _occurrence(o, "ModifiedOccurrences/Occurrence")
        for o in elem.iterfind(f"{t('ModifiedOccurrences')}/{t('Occurrence')}")
    )
    deleted = tuple(
        read_datetime(d.findtext(t("Start")), "DeletedOccurrences/DeletedOccurrence/Start")
        for d in elem.iterfind(f"{t('DeletedOccurrences')}/{t('DeletedOccurrence')}")
    )
    first = elem.find(t("FirstOccurrence"))
    last = elem.find(t("LastOccurrence"))
    modified_raw = elem.findtext(t("LastModifiedTime"))
    try:
        last_modified = None if modified_raw is None else read_datetime(modified_raw, "LastModifiedTime")
    except Unreadable:
        last_modified = None  # not a value that decides the calendar: the caller logs the raw text
    else:
        modified_raw = None
    return ItemTimes(
        start=start,
        end=end,
        start_tz=start_tz,
        end_tz=end_tz,
        all_day=all_day,
        recurrence=recurrence,
        first=None if first is None else _occurrence(first, "FirstOccurrence"),
        last=None if last is None else _occurrence(last, "LastOccurrence"),
        modified=modified,
        deleted=deleted,
        original_start=_original_start(elem),
        last_modified=last_modified,
        last_modified_raw=modified_raw,
    )


def _zone(elem: Any, which: str, instant: datetime, needed: bool) -> str:
    try:
        return zone_id(elem, which, instant)
    except Unreadable:
        if needed:
            raise
        found = elem.find(t(f"{which}TimeZone"))
        found = found if found is not None else elem.find(t("MeetingTimeZone"))
        name = None if found is None else (found.get("Id") or found.get("Name") or found.get("TimeZoneName"))
        return name or "UTC"


def _original_start(elem: Any) -> datetime | None:
    for tag in ("OriginalStart", "RecurrenceId"):
        raw = elem.findtext(t(tag))
        if raw is not None:
            return read_datetime(raw, tag)
    return None


def _occurrence(elem: Any, where: str) -> OccurrenceRef:
    item_id = elem.find(t("ItemId"))
    original = elem.findtext(t("OriginalStart"))
    return OccurrenceRef(
        item_id=None if item_id is None else item_id.get("Id"),
        start=read_datetime(elem.findtext(t("Start")), f"{where}/Start"),
        end=read_datetime(elem.findtext(t("End")), f"{where}/End"),
        original_start=None if original is None else read_datetime(original, f"{where}/OriginalStart"),
    )


# --- recurrence --------------------------------------------------------------------------------------------------


def _local(elem: Any) -> str:
    tag = elem.tag
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _days(raw: str | None, field: str) -> tuple[str, ...]:
    days = tuple((raw or "").split())
    if not days:
        raise Unreadable(field, raw, "no day given")
    for day in days:
        if day not in DAY_NAMES and day not in PSEUDO_DAYS:
            raise Unreadable(field, raw, f"'{day}' is not a day name, Day, Weekday or WeekendDay")
    return days


def read_recurrence(elem: Any, zone: tzinfo) -> Recurrence:
    """A ``t:Recurrence`` element: one pattern and one range. Raises Unreadable."""
    parts = [c for c in elem if isinstance(c.tag, str)]
    if len(parts) != 2:
        raise Unreadable("Recurrence", None, "needs one pattern and one range")
    pattern_elem, range_elem = parts
    kind = _local(pattern_elem).removesuffix("Recurrence")
    if kind not in _PATTERNS:
        raise Unreadable("Recurrence", _local(pattern_elem), "not a calendar recurrence pattern")
    where = f"Recurrence/{_local(pattern_elem)}"

    def text(tag: str) -> str | None:
        return pattern_elem.findtext(t(tag))

    fields: dict[str, Any] = {"pattern": kind}
    if kind not in ("AbsoluteYearly", "RelativeYearly"):
        fields["interval"] = _int(text("Interval"), f"{where}/Interval", 1, 999)
    if kind in ("Weekly", "RelativeMonthly", "RelativeYearly"):
        fields["days_of_week"] = _days(text("DaysOfWeek"), f"{where}/DaysOfWeek")
    if kind == "Weekly":
        first_day = text("FirstDayOfWeek")
        fields["first_day_of_week"] = (
            "Sunday" if first_day is None else _choice(first_day, f"{where}/FirstDayOfWeek", DAY_NAMES)
        )
    if kind in ("RelativeMonthly", "RelativeYearly"):
        fields["index"] = _choice(text("DayOfWeekIndex"), f"{where}/DayOfWeekIndex", INDEXES)
    if kind in ("AbsoluteMonthly", "AbsoluteYearly"):
        fields["day_of_month"] = _int(text("DayOfMonth"), f"{where}/DayOfMonth", 1, 31)
    if kind in ("AbsoluteYearly", "RelativeYearly"):
        fields["month"] = _choice(text("Month"), f"{where}/Month", MONTHS)

    range_kind = _local(range_elem).removesuffix("Recurrence")
    if range_kind not in _RANGES:
        raise Unreadable("Recurrence", _local(range_elem), "not a recurrence range")
    where = f"Recurrence/{_local(range_elem)}"
    fields["range"] = range_kind
    fields["start_date"] = read_date(range_elem.findtext(t("StartDate")), f"{where}/StartDate", zone)
    if range_kind == "EndDate":
        fields["end_date"] = read_date(range_elem.findtext(t("EndDate")), f"{where}/EndDate", zone)
        if fields["end_date"] < fields["start_date"]:
            raise Unreadable(f"{where}/EndDate", range_elem.findtext(t("EndDate")), "before StartDate")
    elif range_kind == "Numbered":
        fields["count"] = _int(range_elem.findtext(t("NumberOfOccurrences")), f"{where}/NumberOfOccurrences", 1, 999)
    return Recurrence(**fields)

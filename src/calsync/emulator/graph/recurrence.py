"""Graph's ``patternedRecurrence`` and the shared recurrence model, both ways: pattern types ``daily``, ``weekly``,
``absoluteMonthly``, ``relativeMonthly``, ``absoluteYearly``, ``relativeYearly`` (with ``interval``,
``daysOfWeek``, ``firstDayOfWeek``, ``index``, ``dayOfMonth``, ``month`` as a number) and range types ``endDate``,
``noEnd``, ``numbered`` (``startDate``, ``endDate``, ``numberOfOccurrences``, ``recurrenceTimeZone``).

The meaning of a series (validation, expansion) stays in :mod:`calsync.emulator.recurrence`; this module only
translates. Graph names several days for a relative pattern where Exchange stores one pseudo day: all seven days
are ``Day``, Monday to Friday ``Weekday``, Saturday and Sunday ``WeekendDay``.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from .. import recurrence as rec
from ..model import CalendarItem, Recurrence
from .datetimes import zone_id
from .errors import GraphError, bad_request

PATTERN_TYPES = {
    "daily": "Daily",
    "weekly": "Weekly",
    "absoluteMonthly": "AbsoluteMonthly",
    "relativeMonthly": "RelativeMonthly",
    "absoluteYearly": "AbsoluteYearly",
    "relativeYearly": "RelativeYearly",
}
RANGE_TYPES = {"endDate": "EndDate", "noEnd": "NoEnd", "numbered": "Numbered"}
DAYS = tuple(d.lower() for d in rec.DAY_NAMES)
PSEUDO_DAYS = {
    "Day": frozenset(DAYS),
    "Weekday": frozenset(DAYS[1:6]),
    "WeekendDay": frozenset((DAYS[0], DAYS[6])),
}
NO_DATE = "0001-01-01"  # what Graph writes for a range without an end date


def _reverse(mapping: dict[str, str]) -> dict[str, str]:
    return {v: k for k, v in mapping.items()}


def write(item: CalendarItem) -> dict[str, Any] | None:
    """The ``recurrence`` of a series master (None for anything else), as Graph writes it."""
    if item.recurrence is None:
        return None
    p, r = item.recurrence.pattern, item.recurrence.range
    if p.kind.startswith("Relative") and p.days_of_week[0] in PSEUDO_DAYS:
        days = [d for d in DAYS if d in PSEUDO_DAYS[p.days_of_week[0]]]
    else:
        days = [d.lower() for d in p.days_of_week]
    return {
        "pattern": {
            "type": _reverse(PATTERN_TYPES)[p.kind],
            "interval": 1 if p.kind.endswith("Yearly") else p.interval,
            "month": rec.MONTHS.index(p.month) + 1 if p.month else 0,
            "dayOfMonth": p.day_of_month or 0,
            "daysOfWeek": days,
            "firstDayOfWeek": p.first_day_of_week.lower(),
            "index": (p.day_of_week_index or "First").lower(),
        },
        "range": {
            "type": _reverse(RANGE_TYPES)[r.kind],
            "startDate": r.start_date.isoformat(),
            "endDate": r.end_date.isoformat() if r.end_date else NO_DATE,
            "recurrenceTimeZone": item.start_tz,
            "numberOfOccurrences": r.count or 0,
        },
    }


def _choice(value: Any, allowed: dict[str, str] | tuple[str, ...], field: str) -> str:
    if value not in allowed:
        raise bad_request(f"recurrence.{field}: {value!r} is not one of {', '.join(allowed)}.")
    return str(value)


def _int(value: Any, field: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"recurrence.{field} must be an integer, got {value!r}.")
    return value


def _date(value: Any, field: str) -> date:
    try:
        return date.fromisoformat(str(value))
    except ValueError as exc:
        raise bad_request(f"recurrence.range.{field} '{value}' is not a date (yyyy-mm-dd).") from exc


def _days(raw: Any, kind: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise bad_request("recurrence.pattern.daysOfWeek must be a list of day names.")
    days = frozenset(_choice(d, DAYS, "pattern.daysOfWeek") for d in raw)
    if kind.startswith("Relative") and len(days) > 1:
        pseudo = next((name for name, members in PSEUDO_DAYS.items() if members == days), None)
        if pseudo is None:
            raise GraphError(
                400,
                "ErrorPropertyValidationFailure",
                "recurrence.pattern.daysOfWeek of a relative pattern must be one day, all seven days, Monday to "
                "Friday, or Saturday and Sunday.",
            )
        return (pseudo,)
    return tuple(rec.DAY_NAMES[DAYS.index(d)] for d in DAYS if d in days)


def read(value: Any, start_tz: str) -> Recurrence:
    """A ``patternedRecurrence`` from a request, checked as Exchange checks a series."""
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("pattern"), dict)
        or not isinstance(value.get("range"), dict)
    ):
        raise bad_request("recurrence must be a patternedRecurrence with a pattern and a range.")
    p, r = value["pattern"], value["range"]
    kind = PATTERN_TYPES[_choice(p.get("type"), PATTERN_TYPES, "pattern.type")]
    interval = _int(p.get("interval"), "pattern.interval", 1)
    if kind.endswith("Yearly") and interval != 1:
        raise GraphError(
            400, "ErrorPropertyValidationFailure", "recurrence.pattern.interval of a yearly pattern must be 1."
        )
    month = _int(p.get("month"), "pattern.month", 0)
    if kind.endswith("Yearly") and not 1 <= month <= 12:
        raise bad_request(f"recurrence.pattern.month must be from 1 to 12 for {p['type']}, got {month}.")
    day_of_month = _int(p.get("dayOfMonth"), "pattern.dayOfMonth", 0)
    index = _choice(p.get("index") or "first", tuple(i.lower() for i in rec.INDEXES), "pattern.index")
    first_day = _choice(p.get("firstDayOfWeek") or "sunday", DAYS, "pattern.firstDayOfWeek")
    range_kind = RANGE_TYPES[_choice(r.get("type"), RANGE_TYPES, "range.type")]
    if not r.get("startDate"):
        raise bad_request("recurrence.range.startDate is required.")
    zone = r.get("recurrenceTimeZone")
    if zone and zone_id(str(zone)) != start_tz:
        raise bad_request(
            f"recurrence.range.recurrenceTimeZone '{zone}' differs from the time zone of start: the emulator "
            "expands a series in the time zone of its start."
        )
    pattern = rec.Pattern(
        kind=kind,
        interval=interval,
        days_of_week=_days(p.get("daysOfWeek"), kind),
        first_day_of_week=rec.DAY_NAMES[DAYS.index(first_day)],
        day_of_month=day_of_month if kind.startswith("Absolute") else None,
        day_of_week_index=rec.INDEXES[[i.lower() for i in rec.INDEXES].index(index)]
        if kind.startswith("Relative")
        else None,
        month=rec.MONTHS[month - 1] if kind.endswith("Yearly") else None,
    )
    rng = rec.Range(
        range_kind,
        _date(r["startDate"], "startDate"),
        end_date=_date(r.get("endDate"), "endDate") if range_kind == "EndDate" else None,
        count=_int(r.get("numberOfOccurrences"), "range.numberOfOccurrences", 0) if range_kind == "Numbered" else None,
    )
    try:
        rec.validate(pattern, rng)
    except rec.RecurrenceError as exc:
        raise GraphError(400, "ErrorPropertyValidationFailure", f"recurrence: {exc}") from exc
    return Recurrence(pattern, rng)

"""Reading the values that decide where an appointment lies, in every form the standards allow, for every
protocol: a value is read, or :class:`~calsync.sources.base.Unreadable` names the field and the raw text; it never
becomes None. (EWS and Graph write the same xs:dateTime family: ``2026-12-04T15:50:47Z``, with any number of
fractional digits, with an offset, or, in Graph's dateTimeTimeZone, without a zone.)

- ``xs:dateTime`` with any number of fractional digits (kept to the microsecond), with ``Z``, an offset, or
  none (then in ``zone``, UTC by default), and ``24:00:00``;
- ``xs:date`` with or without ``Z`` or an offset (the date as written: the offset says where, not which day);
- a date-time where a date belongs (some servers write recurrence dates so): midnight as written gives that
  date, any other time the date it falls on in the series' zone.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo

from .base import Unreadable

__all__ = ["read_bool", "read_choice", "read_date", "read_datetime", "read_int"]

_DATETIME = re.compile(
    r"(?P<y>-?\d{4,})-(?P<mo>\d\d)-(?P<d>\d\d)T(?P<h>\d\d):(?P<mi>\d\d):(?P<s>\d\d)(?:\.(?P<f>\d+))?"
    r"(?P<z>Z|[+-]\d\d:\d\d)?"
)
_DATE = re.compile(r"(?P<y>\d{4})-(?P<mo>\d\d)-(?P<d>\d\d)(?P<z>Z|[+-]\d\d:\d\d)?")


def _offset(text: str | None) -> timezone:
    if not text or text == "Z":
        return UTC
    sign = -1 if text[0] == "-" else 1
    hours, minutes = int(text[1:3]), int(text[4:6])
    if hours > 14 or minutes > 59:
        raise ValueError(f"offset {text} is out of range")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def read_datetime(raw: str | None, field: str, zone: tzinfo | None = None) -> datetime:
    """An xs:dateTime as an aware UTC datetime (see the module docstring for the forms); one without ``Z`` or an
    offset is local to ``zone`` (UTC if none). Raises Unreadable."""
    text = (raw or "").strip()
    if not text:
        raise Unreadable(field, raw, "missing")
    match = _DATETIME.fullmatch(text)
    if match is None:
        raise Unreadable(field, raw, "not an xs:dateTime")
    fraction = (match["f"] or "")[:6].ljust(6, "0")
    try:
        hour, end_of_day = int(match["h"]), False
        if hour == 24:  # 24:00:00 is the end of the day
            if match["mi"] != "00" or match["s"] != "00" or int(fraction):
                raise ValueError("24:MM:SS other than 24:00:00")
            hour, end_of_day = 0, True
        value = datetime(
            int(match["y"]),
            int(match["mo"]),
            int(match["d"]),
            hour,
            int(match["mi"]),
            int(match["s"]),
            int(fraction),
            tzinfo=_offset(match["z"]) if match["z"] or zone is None else zone,
        )
        if end_of_day:
            value += timedelta(days=1)
        return value.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise Unreadable(field, raw, f"not a valid date-time ({exc})") from None


def read_date(raw: str | None, field: str, zone: tzinfo | None = None) -> date:
    """An xs:date (the date as written), or a date-time where a date belongs: midnight as written gives its
    date, another time the date it falls on in ``zone`` (UTC if none). Raises Unreadable."""
    text = (raw or "").strip()
    if not text:
        raise Unreadable(field, raw, "missing")
    match = _DATE.fullmatch(text)
    if match is not None:
        try:
            _offset(match["z"])
            return date(int(match["y"]), int(match["mo"]), int(match["d"]))
        except ValueError as exc:
            raise Unreadable(field, raw, f"not a valid date ({exc})") from None
    if _DATETIME.fullmatch(text) is None:
        raise Unreadable(field, raw, "not an xs:date")
    instant = read_datetime(text, field)
    written = _DATETIME.fullmatch(text)
    assert written is not None
    if (written["h"], written["mi"], written["s"]) == ("00", "00", "00") and not int(written["f"] or "0"):
        return date(int(written["y"]), int(written["mo"]), int(written["d"]))
    return instant.astimezone(zone or UTC).date()


def read_bool(raw: str | None, field: str) -> bool:
    text = (raw or "").strip()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise Unreadable(field, raw, "not an xs:boolean")


def read_int(raw: str | None, field: str, low: int, high: int) -> int:
    text = (raw or "").strip()
    try:
        value = int(text)
    except ValueError:
        raise Unreadable(field, raw, "not an integer") from None
    if not low <= value <= high:
        raise Unreadable(field, raw, f"outside {low}..{high}")
    return value


def read_choice(raw: str | None, field: str, allowed: tuple[str, ...]) -> str:
    text = (raw or "").strip()
    if text not in allowed:
        raise Unreadable(field, raw, f"not one of {', '.join(allowed)}")
    return text

"""The time zone of an EWS calendar item, as a zone id that :func:`calsync.calendar.expand.zone_for` knows.

A Windows id (``W. Europe Standard Time``) or an IANA name is kept as the server sent it. Any other id (items
imported from elsewhere carry ``Customized Time Zone``; old items carry legacy display names such as
``(GMT+01:00) Amsterdam, Berlin, Berne, Rome, Stockholm, Vienna``) says nothing by itself, so the zone is
rebuilt from the definition the server sends with the item:

- ``StartTimeZone``/``EndTimeZone`` (Exchange 2010 and later): ``Periods`` (offsets from UTC, as a ``Bias``
  with UTC = local + bias) and ``TransitionsGroups`` (yearly rules: the n-th or last weekday of a month, or a
  fixed day, at a local time), chosen by ``Transitions`` (the group in force from a date on);
- ``MeetingTimeZone`` (Exchange 2007-style answers): a ``BaseOffset`` and ``Standard``/``Daylight`` changes.

The rule in force at the item's start is turned into a POSIX TZ string, and the zone is named by the first
Windows zone (in alphabetical order) that keeps the same clock on every day of the three years around that
start; when none does, by ``POSIX:`` and the string itself (``POSIX:XST-1XDT-2,M3.5.0/2,M10.5.0/3``).
A zone whose id is unknown and whose definition is missing or unreadable raises :class:`Unreadable`.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil import tz as du_tz
from tzlocal.windows_tz import win_tz

from calsync.calendar.expand import POSIX_PREFIX
from calsync.sources.base import Unreadable

__all__ = ["Unreadable", "is_known", "posix_rule", "zone_id"]

T_NS = "http://schemas.microsoft.com/exchange/services/2006/types"
_DURATION = re.compile(r"(?P<sign>-)?P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?)?")
_WEEKDAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_INDEX = {"First": 1, "Second": 2, "Third": 3, "Fourth": 4, "Last": 5}
_MONTHS = (
    *("January", "February", "March", "April", "May", "June"),
    *("July", "August", "September", "October", "November", "December"),
)


def t(name: str) -> str:
    return f"{{{T_NS}}}{name}"


def is_known(tz_id: str) -> bool:
    """Whether calsync can expand in this zone by its id alone (a Windows id or an IANA name)."""
    if tz_id in win_tz or tz_id == "UTC":
        return True
    try:
        ZoneInfo(tz_id)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def zone_id(elem: Any, which: str, instant: datetime) -> str:
    """The zone of an item's Start or End (``which``), read from ``<which>TimeZone`` or ``MeetingTimeZone``;
    ``UTC`` when the item names none. Raises Unreadable for an unknown id without a readable definition."""
    field = f"{which}TimeZone"
    found = elem.find(t(field))
    if found is not None:
        tz_id = found.get("Id") or found.get("Name") or ""
        if tz_id and is_known(tz_id):
            return tz_id
        rule = _rule_from_definition(found, instant, field, tz_id)
        return _name_for(rule, instant.year)
    meeting = elem.find(t("MeetingTimeZone"))
    if meeting is not None:
        tz_id = meeting.get("TimeZoneName") or ""
        if tz_id and is_known(tz_id):
            return tz_id
        rule = _rule_from_meeting_zone(meeting, tz_id)
        return _name_for(rule, instant.year)
    return "UTC"


# --- durations and clock times -----------------------------------------------------------------------------------


def _minutes(raw: str | None, field: str) -> int:
    """An xs:duration of whole minutes (``-PT1H``, ``PT5H30M``) as signed minutes."""
    match = _DURATION.fullmatch((raw or "").strip())
    if match is None or not raw or raw.strip() in ("P", "-P", "PT"):
        raise Unreadable(field, raw, "not an xs:duration")
    minutes = int(match["d"] or 0) * 1440 + int(match["h"] or 0) * 60 + int(match["m"] or 0)
    return -minutes if match["sign"] else minutes


def _posix_offset(minutes: int) -> str:
    """POSIX TZ offsets are minutes west of UTC, as EWS's Bias: [-]hh[:mm]."""
    sign = "-" if minutes < 0 else ""
    hours, rest = divmod(abs(minutes), 60)
    return f"{sign}{hours}" + (f":{rest:02d}" if rest else "")


def _posix_time(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    return f"{hours}" + (f":{rest:02d}" if rest else "")


def _clock(raw: str | None, field: str) -> int:
    """An xs:time (``02:00:00``) as minutes after midnight."""
    match = re.fullmatch(r"(\d\d):(\d\d)(?::(\d\d)(?:\.\d+)?)?", (raw or "").strip())
    if match is None or int(match[1]) > 24 or int(match[2]) > 59:
        raise Unreadable(field, raw, "not an xs:time")
    return int(match[1]) * 60 + int(match[2])


def _julian(month: int, day: int) -> str:
    """POSIX ``Jn``: the day of a 365-day year (February 29 never counts)."""
    return f"J{(date(2001, month, day) - date(2001, 1, 1)).days + 1}"


# --- TimeZoneDefinition --------------------------------------------------------------------------------------------


def _children(elem: Any) -> list[Any]:
    return [c for c in elem if isinstance(c.tag, str)]


def _local(elem: Any) -> str:
    return str(elem.tag).rsplit("}", 1)[-1]


def _group_in_force(definition: Any, instant: datetime, field: str) -> str:
    """The id of the transitions group that applies at ``instant``: the first ``Transition``'s, switched by
    every ``AbsoluteDateTransition`` whose date has passed."""
    chosen: str | None = None
    transitions = definition.find(t("Transitions"))
    for step in [] if transitions is None else _children(transitions):
        target = step.findtext(t("To"))
        if _local(step) == "Transition":
            chosen = chosen if chosen is not None else target
        elif _local(step) == "AbsoluteDateTransition":
            raw = step.findtext(t("DateTime"))
            try:
                when = datetime.fromisoformat((raw or "").replace("Z", "+00:00"))
            except ValueError:
                raise Unreadable(
                    f"{field}/Transitions/AbsoluteDateTransition/DateTime", raw, "not a date-time"
                ) from None
            if (when.replace(tzinfo=UTC) if when.tzinfo is None else when) <= instant:
                chosen = target
    if not chosen:
        raise Unreadable(f"{field}/Transitions", None, "no transition names a group")
    return chosen


def _rule_from_definition(definition: Any, instant: datetime, field: str, tz_id: str) -> str:
    periods = {
        p.get("Id"): _minutes(p.get("Bias"), f"{field}/Periods/Period/@Bias")
        for p in definition.iterfind(f"{t('Periods')}/{t('Period')}")
    }
    if not periods:
        raise Unreadable(field, tz_id or None, "an unknown zone id and no definition (Periods) to rebuild it from")
    group_id = _group_in_force(definition, instant, field)
    group = next(
        (
            g
            for g in definition.iterfind(f"{t('TransitionsGroups')}/{t('TransitionsGroup')}")
            if g.get("Id") == group_id
        ),
        None,
    )
    if group is None:
        raise Unreadable(f"{field}/TransitionsGroups", group_id, "the group in force is not defined")
    steps = _children(group)
    if len(steps) == 1:  # one period all year round
        target = steps[0].findtext(t("To"))
        if target not in periods:
            raise Unreadable(f"{field}/TransitionsGroup/Transition/To", target, "not a defined period")
        return f"XST{_posix_offset(periods[target])}"
    if len(steps) != 2:
        raise Unreadable(f"{field}/TransitionsGroup", group_id, "neither one period nor two yearly changes")
    changes = []
    for step in steps:
        target = step.findtext(t("To"))
        if target not in periods:
            raise Unreadable(f"{field}/TransitionsGroup/*/To", target, "not a defined period")
        changes.append((periods[target], _yearly_rule(step, field)))
    (std_bias, to_std), (dst_bias, to_dst) = sorted(changes, key=lambda c: -c[0])  # daylight: the smaller bias
    return f"XST{_posix_offset(std_bias)}XDT{_posix_offset(dst_bias)},{to_dst},{to_std}"


def _yearly_rule(step: Any, field: str) -> str:
    where = f"{field}/TransitionsGroup/{_local(step)}"
    at = _posix_time(_minutes(step.findtext(t("TimeOffset")), f"{where}/TimeOffset"))
    try:
        month = int(step.findtext(t("Month")) or "")
    except ValueError:
        raise Unreadable(f"{where}/Month", step.findtext(t("Month")), "not a month number") from None
    if not 1 <= month <= 12:
        raise Unreadable(f"{where}/Month", str(month), "outside 1..12")
    if _local(step) == "RecurringDayTransition":
        day = step.findtext(t("DayOfWeek"))
        if day not in _WEEKDAYS:
            raise Unreadable(f"{where}/DayOfWeek", day, "not a day name")
        try:
            occurrence = int(step.findtext(t("Occurrence")) or "")
        except ValueError:
            raise Unreadable(f"{where}/Occurrence", step.findtext(t("Occurrence")), "not a number") from None
        week = 5 if occurrence in (-1, 5) else occurrence
        if not 1 <= week <= 5:
            raise Unreadable(f"{where}/Occurrence", str(occurrence), "not 1..4 or -1 (last)")
        return f"M{month}.{week}.{_WEEKDAYS.index(day)}/{at}"
    if _local(step) == "RecurringDateTransition":
        try:
            return f"{_julian(month, int(step.findtext(t('Day')) or ''))}/{at}"
        except ValueError:
            raise Unreadable(f"{where}/Day", step.findtext(t("Day")), "not a day of that month") from None
    raise Unreadable(where, None, "not a yearly transition")


# --- MeetingTimeZone (Exchange 2007) -------------------------------------------------------------------------------


def _rule_from_meeting_zone(meeting: Any, tz_id: str) -> str:
    base_raw = meeting.findtext(t("BaseOffset"))
    if base_raw is None:
        raise Unreadable("MeetingTimeZone", tz_id or None, "an unknown zone name and no BaseOffset to rebuild it from")
    base = _minutes(base_raw, "MeetingTimeZone/BaseOffset")
    standard, daylight = meeting.find(t("Standard")), meeting.find(t("Daylight"))
    if standard is None or daylight is None:
        return f"XST{_posix_offset(base)}"
    std_bias = base + _minutes(standard.findtext(t("Offset")), "MeetingTimeZone/Standard/Offset")
    dst_bias = base + _minutes(daylight.findtext(t("Offset")), "MeetingTimeZone/Daylight/Offset")
    return f"XST{_posix_offset(std_bias)}XDT{_posix_offset(dst_bias)},{_change(daylight)},{_change(standard)}"


def _change(change: Any) -> str:
    where = f"MeetingTimeZone/{_local(change)}"
    at = _posix_time(_clock(change.findtext(t("Time")), f"{where}/Time"))
    relative = change.find(t("RelativeYearlyRecurrence"))
    if relative is not None:
        day, index, month = (relative.findtext(t(n)) for n in ("DaysOfWeek", "DayOfWeekIndex", "Month"))
        if day not in _WEEKDAYS or index not in _INDEX or month not in _MONTHS:
            raise Unreadable(f"{where}/RelativeYearlyRecurrence", f"{day} {index} {month}", "not a yearly rule")
        return f"M{_MONTHS.index(month) + 1}.{_INDEX[index]}.{_WEEKDAYS.index(day)}/{at}"
    absolute = change.findtext(t("AbsoluteDate"))
    try:
        day_of = date.fromisoformat((absolute or "")[:10])
    except ValueError:
        raise Unreadable(f"{where}/AbsoluteDate", absolute, "neither a yearly rule nor a date") from None
    return f"{_julian(day_of.month, day_of.day)}/{at}"


# --- naming ---------------------------------------------------------------------------------------------------------


def posix_rule(tz_id: str) -> str | None:
    """The POSIX TZ string of a ``POSIX:`` zone id, else None."""
    return tz_id.removeprefix(POSIX_PREFIX) if tz_id.startswith(POSIX_PREFIX) else None


@lru_cache(maxsize=512)
def _name_for(rule: str, year: int) -> str:
    zone = du_tz.tzstr(rule, posix_offset=True)
    days = [datetime(year - 1, 1, 1, 12) + timedelta(days=n) for n in range(3 * 366)]
    wanted = [d.replace(tzinfo=zone).utcoffset() for d in days]
    for windows_id in sorted(win_tz):
        try:
            candidate = ZoneInfo(win_tz[windows_id])
        except (ZoneInfoNotFoundError, ValueError):
            continue
        if all(d.replace(tzinfo=candidate).utcoffset() == w for d, w in zip(days, wanted, strict=True)):
            return windows_id
    return POSIX_PREFIX + rule

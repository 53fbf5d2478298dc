"""Windows time zone ids, as Exchange names them, mapped to IANA zones (CLDR's table, shipped by tzlocal), and
each zone's yearly rules as EWS describes them (``TimeZoneDefinition`` periods and transitions)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from tzlocal.windows_tz import tz_win, win_tz

from .errors import EwsError

UTC_ID = "UTC"


@lru_cache(maxsize=512)
def zone(windows_id: str) -> ZoneInfo:
    """The IANA zone for a Windows zone id; unknown ids are an EWS error, as on Exchange."""
    iana = win_tz.get(windows_id)
    if iana is None:
        raise EwsError(
            "ErrorTimeZone",
            f"The time zone '{windows_id}' is not a known Windows time zone id "
            "(for example 'W. Europe Standard Time').",
        )
    return ZoneInfo(iana)


def windows_id(iana: str) -> str:
    """The Windows zone id for an IANA name (used when sample data is described with IANA names)."""
    if iana in win_tz:
        return iana
    found = tz_win.get(iana)
    if found is None:
        raise ValueError(f"no Windows time zone id for '{iana}'")
    return found


@dataclass(frozen=True)
class Change:
    """A yearly clock change, as EWS describes one: in ``month``, the ``week``-th (5: last) ``weekday``
    (0 Sunday .. 6 Saturday), at ``minutes`` after local midnight (local time before the change)."""

    month: int
    week: int
    weekday: int
    minutes: int


@dataclass(frozen=True)
class Rules:
    """A zone's rules in one year: offsets as EWS's Bias (minutes, UTC = local + bias) and, with daylight saving,
    the change to daylight time and back."""

    standard_bias: int
    daylight_bias: int | None = None
    to_daylight: Change | None = None
    to_standard: Change | None = None


@lru_cache(maxsize=1024)
def rules(windows_id: str, year: int) -> Rules:
    """The rules of a Windows zone in ``year``, read off the IANA zone's transitions that year."""
    tz = zone(windows_id)
    start = datetime(year, 1, 1, tzinfo=UTC)
    changes: list[tuple[datetime, timedelta, timedelta]] = []  # (instant, offset before, offset after)
    hours = int((datetime(year + 1, 1, 1, tzinfo=UTC) - start).total_seconds() // 3600)
    before = start.astimezone(tz).utcoffset() or timedelta(0)
    for hour in range(1, hours + 1):
        instant = start + timedelta(hours=hour)
        after = instant.astimezone(tz).utcoffset() or timedelta(0)
        if after != before:
            changes.append((instant, before, after))
            before = after
    offset = start.astimezone(tz).utcoffset() or timedelta(0)
    if len(changes) != 2:
        return Rules(_bias(offset))
    (first, first_before, first_after), (second, _, second_after) = changes
    if first_after > first_before:  # northern hemisphere: daylight time first
        standard, daylight = first_before, first_after
        to_daylight, to_standard = _change(first, first_before), _change(second, first_after)
    else:  # southern hemisphere: the year starts in daylight time
        standard, daylight = first_after, second_after
        to_standard, to_daylight = _change(first, first_before), _change(second, first_after)
    return Rules(_bias(standard), _bias(daylight), to_daylight, to_standard)


def _bias(offset: timedelta) -> int:
    return -int(offset.total_seconds() // 60)


def _change(instant: datetime, offset_before: timedelta) -> Change:
    local = (instant + offset_before).replace(tzinfo=None)
    last_day = (date(local.year + (local.month == 12), local.month % 12 + 1, 1) - timedelta(days=1)).day
    week = 5 if local.day + 7 > last_day else (local.day - 1) // 7 + 1
    return Change(local.month, week, (local.weekday() + 1) % 7, local.hour * 60 + local.minute)


def legacy_name(windows_id: str, year: int) -> str:
    """A display name in the style of old items (``(GMT+01:00) W. Europe``): not an id anyone can look up."""
    bias = rules(windows_id, year).standard_bias
    sign = "-" if bias > 0 else "+"
    hours, minutes = divmod(abs(bias), 60)
    return f"(GMT{sign}{hours:02d}:{minutes:02d}) {windows_id.removesuffix(' Standard Time')}"

"""Windows time zone ids, as Exchange names them, mapped to IANA zones (CLDR's table, shipped by tzlocal)."""

from __future__ import annotations

from functools import lru_cache
from zoneinfo import ZoneInfo

from tzlocal.windows_tz import tz_win, win_tz

from .soap import EwsError

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

"""Times as Graph writes and reads them: ``dateTimeTimeZone`` values (``{"dateTime": "2017-04-15T11:00:00.0000000",
"timeZone": "Pacific Standard Time"}``, local to a Windows or IANA zone), Edm.DateTimeOffset stamps
(``2017-04-15T03:00:50.7579581Z``), the ``startDateTime``/``endDateTime`` of calendar views and the time zone a
``Prefer: outlook.timezone="..."`` header asks answers to be written in."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .. import timezones
from .errors import GraphError, bad_request


def zone_id(name: str) -> str:
    """The Windows zone id for a Windows or IANA name, as Graph accepts either."""
    try:
        tz_id = timezones.windows_id(name)
        timezones.zone(tz_id)
    except Exception as exc:  # ValueError for an unknown name, EwsError for a Windows id without an IANA zone
        raise GraphError(
            400,
            "TimeZoneNotSupportedException",
            f"A valid TimeZone value must be specified. The following TimeZone value is not supported: '{name}'.",
        ) from exc
    return tz_id


def stamp(moment: datetime) -> str:
    """An Edm.DateTimeOffset as Graph writes it: UTC with seven fractional digits."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def write(moment: datetime, zone_name: str) -> dict[str, str]:
    """A dateTimeTimeZone: the local time in ``zone_name`` (a name the caller gave, or a Windows id)."""
    local = moment.astimezone(timezones.zone(zone_id(zone_name))).replace(tzinfo=None)
    return {"dateTime": local.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0", "timeZone": zone_name}


def read(value: Any, field: str) -> tuple[datetime, str]:
    """A dateTimeTimeZone from a request -> (the instant, aware in UTC; the zone's Windows id)."""
    if not isinstance(value, dict) or not isinstance(value.get("dateTime"), str):
        raise bad_request(f'{field} must be a dateTimeTimeZone: {{"dateTime": "...", "timeZone": "..."}}.')
    zone = value.get("timeZone") or "UTC"
    if not isinstance(zone, str):
        raise bad_request(f"{field}.timeZone must be a string.")
    tz_id = zone_id(zone)
    try:
        parsed = datetime.fromisoformat(value["dateTime"].replace("Z", "+00:00"))
    except ValueError as exc:
        raise bad_request(f"{field}.dateTime '{value['dateTime']}' is not an ISO 8601 date-time.") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezones.zone(tz_id))
    return parsed.astimezone(UTC).replace(microsecond=0), tz_id  # Exchange keeps whole seconds


def query_time(value: str | None, name: str) -> datetime:
    """``startDateTime``/``endDateTime``: ISO 8601, an offset or ``Z`` taken as given, none meaning UTC."""
    if not value:
        raise GraphError(
            400,
            "ErrorInvalidParameter",
            "This request requires a time window specified by the query string parameters StartDateTime and "
            "EndDateTime.",
        )
    try:
        parsed = datetime.fromisoformat(value.strip().replace(" ", "+").replace("Z", "+00:00"))
    except ValueError as exc:
        raise GraphError(400, "ErrorInvalidParameter", f"The value '{value}' of {name} is not a date-time.") from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def preferences(header: str | None) -> dict[str, str]:
    """``Prefer: outlook.timezone="Pacific Standard Time", odata.maxpagesize=50`` -> its preferences."""
    out: dict[str, str] = {}
    for part in (header or "").split(","):
        name, _, value = part.strip().partition("=")
        if name:
            out[name.strip().lower()] = value.strip().strip('"')
    return out


def preferred_zone(prefer: dict[str, str]) -> str | None:
    """The zone ``outlook.timezone`` names, when it is one the emulator knows; otherwise answers stay in UTC and
    the preference is not reported as applied."""
    name = prefer.get("outlook.timezone")
    if not name:
        return None
    try:
        zone_id(name)
    except GraphError:
        return None
    return name

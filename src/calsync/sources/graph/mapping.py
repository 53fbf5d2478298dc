"""A Microsoft Graph event (a single event, or a series master with its exception occurrences) as the
application's Appointment, the same one the EWS source makes of the same item (invariant 8).

What decides the place is read as strictly as EWS's (``calsync.sources.values``): ``start``/``end``
(dateTimeTimeZone: Graph writes seven fractional digits and no zone, the zone in ``timeZone``), ``isAllDay``,
the zone (``originalStartTimeZone``: a Windows or IANA id; ``tzone://Microsoft/Utc``; for a series whose zone is
``tzone://Microsoft/Custom`` the recurrence's ``recurrenceTimeZone``), the recurrence (Graph's lower-case pattern
and range, mapped to EWS's model: ``relativeMonthly`` with Monday..Friday is EWS's ``Weekday``), and the
exceptions (``exceptionOccurrences`` with their ``originalStart``) and cancelled occurrences
(``cancelledOccurrences``: ``OID.<master id>.<yyyy-mm-dd>``, the local day of the occurrence). Anything
unreadable raises :class:`~calsync.sources.base.Unreadable`.
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any

from calsync.calendar.expand import zone_for
from calsync.calendar.model import Appointment, Attendee, PatternKind, Recurrence, ShowAs
from calsync.sources.base import Unreadable
from calsync.sources.ews.timezones import is_known
from calsync.sources.occurrences import Changed, Deleted, place
from calsync.sources.values import read_bool, read_date, read_datetime, read_int

__all__ = ["to_appointment"]

_PATTERNS: dict[str, PatternKind] = {
    "daily": "Daily",
    "weekly": "Weekly",
    "absoluteMonthly": "AbsoluteMonthly",
    "relativeMonthly": "RelativeMonthly",
    "absoluteYearly": "AbsoluteYearly",
    "relativeYearly": "RelativeYearly",
}
_RANGES = {"endDate": "EndDate", "noEnd": "NoEnd", "numbered": "Numbered"}
_DAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
_WEEKDAYS = frozenset(_DAYS[1:6])
_INDEXES = {"first": "First", "second": "Second", "third": "Third", "fourth": "Fourth", "last": "Last"}
_MONTHS = (
    *("January", "February", "March", "April", "May", "June"),
    *("July", "August", "September", "October", "November", "December"),
)
_RESPONSES = {
    "accepted": "accepted",
    "declined": "declined",
    "tentativelyAccepted": "tentative",
    "organizer": "organizer",
    "notResponded": "not_responded",
    "none": "unknown",
}
_SHOW_AS: dict[str, ShowAs] = {
    "free": "free",
    "tentative": "tentative",
    "busy": "busy",
    "oof": "oof",
    "workingElsewhere": "working_elsewhere",
}
_UTC_NAMES = frozenset({"UTC", "tzone://Microsoft/Utc", "Etc/UTC", "Coordinated Universal Time"})


def to_appointment(event: dict[str, Any]) -> Appointment:
    """The Appointment for a single event or a series master (with ``exceptionOccurrences`` expanded)."""
    recurrence_json = event.get("recurrence")
    all_day = read_bool(_text(event.get("isAllDay", False)), "isAllDay") if "isAllDay" in event else False
    zone = _zone(event, needed=all_day or recurrence_json is not None)
    day_zone = zone if all_day else None
    start = _when(event.get("start"), "start", day_zone)
    end = _when(event.get("end"), "end", day_zone)
    if end < start:
        raise Unreadable("end", _raw(event.get("end")), "before start")
    body = event.get("body") or {}
    organizer = ((event.get("organizer") or {}).get("emailAddress")) or {}
    appointment = Appointment(
        item_id=str(event["id"]),
        change_key=event.get("changeKey"),
        subject=event.get("subject"),
        start=start,
        end=end,
        start_tz=zone,
        end_tz=_end_zone(event, zone),
        all_day=all_day,
        location=((event.get("location") or {}).get("displayName")) or None,
        body=body.get("content"),
        organizer_email=organizer.get("address"),
        organizer_name=organizer.get("name"),
        attendees=tuple(a for a in (_attendee(x) for x in event.get("attendees") or ()) if a is not None),
        status="cancelled" if event.get("isCancelled") else "confirmed",
        private=event.get("sensitivity") in ("private", "confidential"),
        show_as=_SHOW_AS.get(event.get("showAs") or "", "unknown"),
        categories=tuple(event.get("categories") or ()),
        uid=event.get("iCalUId"),
        recurrence=None if recurrence_json is None else _recurrence(recurrence_json, zone),
        last_modified=_last_modified(event),
        extra={
            "item_type": "RecurringMaster" if recurrence_json is not None else "Single",
            "body_type": "HTML" if str(body.get("contentType", "")).lower() == "html" else "Text",
        },
    )
    if appointment.recurrence is None:
        return appointment
    return place(
        appointment,
        [_changed(appointment, x) for x in event.get("exceptionOccurrences") or ()],
        [_cancelled(appointment, oid) for oid in event.get("cancelledOccurrences") or ()],
    )


# --- values ------------------------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _raw(value: Any) -> str | None:
    return None if value is None else str(value)[:200]


def _when(value: Any, field: str, day_zone: str | None = None) -> datetime:
    """A dateTimeTimeZone: its dateTime (no zone written) in its timeZone. With ``day_zone`` (an all-day event):
    midnight of its date in that zone, the event's own; Graph writes all-day events midnight to midnight whatever
    zone it shows them in."""
    if not isinstance(value, dict):
        raise Unreadable(field, _raw(value), "missing" if value is None else "not a dateTimeTimeZone")
    zone_name = str(value.get("timeZone") or "UTC")
    if zone_name not in _UTC_NAMES and not is_known(zone_name):
        raise Unreadable(f"{field}/timeZone", zone_name, "not a time zone calsync knows")
    zone = zone_for("UTC" if zone_name in _UTC_NAMES else zone_name)
    moment = read_datetime(value.get("dateTime"), f"{field}/dateTime", zone)
    if day_zone is None:
        return moment
    own = zone_for(day_zone)
    written = moment.astimezone(zone)
    if written.time() == time(0):  # midnight as written: that date (Graph's form)
        return datetime.combine(written.date(), time(0), own)
    local = moment.astimezone(own)
    if local.time() == time(0):  # the instant of midnight in the event's zone
        return datetime.combine(local.date(), time(0), own)
    raise Unreadable(f"{field}/dateTime", _raw(value.get("dateTime")), "an all-day event's time is not midnight")


def _zone(event: dict[str, Any], *, needed: bool) -> str:
    """The event's zone: its originalStartTimeZone when calsync knows it, else (a series) the recurrence's zone.
    A timed single event is placed by its instants alone, so an unknown zone name is kept as it is."""
    name = str(event.get("originalStartTimeZone") or "")
    if name in _UTC_NAMES:
        return "UTC"
    if name and is_known(name):
        return name
    recurrence_zone = str(((event.get("recurrence") or {}).get("range") or {}).get("recurrenceTimeZone") or "")
    if recurrence_zone and (recurrence_zone in _UTC_NAMES or is_known(recurrence_zone)):
        return "UTC" if recurrence_zone in _UTC_NAMES else recurrence_zone
    if needed:
        raise Unreadable("originalStartTimeZone", name or None, "a zone calsync does not know, and no other given")
    return name or "UTC"


def _end_zone(event: dict[str, Any], start_zone: str) -> str:
    name = str(event.get("originalEndTimeZone") or "")
    if name in _UTC_NAMES:
        return "UTC"
    return name if name and is_known(name) else start_zone


def _last_modified(event: dict[str, Any]) -> datetime | None:
    raw = event.get("lastModifiedDateTime")
    try:
        return None if raw is None else read_datetime(str(raw), "lastModifiedDateTime")
    except Unreadable:
        return None  # not a value that decides the calendar


def _attendee(value: Any) -> Attendee | None:
    address = ((value or {}).get("emailAddress")) or {}
    email = address.get("address")
    if not email:
        return None
    response = ((value.get("status") or {}).get("response")) or "none"
    return Attendee(
        email=email,
        name=address.get("name"),
        response=_RESPONSES.get(response, "unknown"),
        optional=value.get("type") == "optional",
    )


# --- recurrence --------------------------------------------------------------------------------------------------


def _recurrence(value: dict[str, Any], zone: str) -> Recurrence:
    pattern = value.get("pattern") or {}
    rng = value.get("range") or {}
    kind = _PATTERNS.get(str(pattern.get("type")))
    if kind is None:
        raise Unreadable("recurrence/pattern/type", _raw(pattern.get("type")), "not a recurrence pattern")
    range_kind = _RANGES.get(str(rng.get("type")))
    if range_kind is None:
        raise Unreadable("recurrence/range/type", _raw(rng.get("type")), "not a recurrence range")
    fields: dict[str, Any] = {"pattern": kind, "range": range_kind}
    if kind not in ("AbsoluteYearly", "RelativeYearly"):
        fields["interval"] = read_int(_text(pattern.get("interval", 1)), "recurrence/pattern/interval", 1, 999)
    if kind in ("Weekly", "RelativeMonthly", "RelativeYearly"):
        fields["days_of_week"] = _days(pattern.get("daysOfWeek"), relative=kind != "Weekly")
    if kind == "Weekly":
        first = str(pattern.get("firstDayOfWeek") or "sunday").lower()
        if first not in _DAYS:
            raise Unreadable("recurrence/pattern/firstDayOfWeek", first, "not a day name")
        fields["first_day_of_week"] = first.capitalize()
    if kind in ("RelativeMonthly", "RelativeYearly"):
        index = _INDEXES.get(str(pattern.get("index") or "first"))
        if index is None:
            raise Unreadable("recurrence/pattern/index", _raw(pattern.get("index")), "not first..last")
        fields["index"] = index
    if kind in ("AbsoluteMonthly", "AbsoluteYearly"):
        fields["day_of_month"] = read_int(_text(pattern.get("dayOfMonth")), "recurrence/pattern/dayOfMonth", 1, 31)
    if kind in ("AbsoluteYearly", "RelativeYearly"):
        month = read_int(_text(pattern.get("month")), "recurrence/pattern/month", 1, 12)
        fields["month"] = _MONTHS[month - 1]
    tz = zone_for(zone)
    fields["start_date"] = read_date(_opt(rng.get("startDate")), "recurrence/range/startDate", tz)
    if range_kind == "EndDate":
        fields["end_date"] = read_date(_opt(rng.get("endDate")), "recurrence/range/endDate", tz)
        if fields["end_date"] < fields["start_date"]:
            raise Unreadable("recurrence/range/endDate", _raw(rng.get("endDate")), "before startDate")
    elif range_kind == "Numbered":
        count = _text(rng.get("numberOfOccurrences"))
        fields["count"] = read_int(count, "recurrence/range/numberOfOccurrences", 1, 999)
    return Recurrence(**fields)


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)


def _days(value: Any, *, relative: bool) -> tuple[str, ...]:
    names = [str(d).lower() for d in value or ()]
    if not names or any(n not in _DAYS for n in names):
        raise Unreadable("recurrence/pattern/daysOfWeek", _raw(value), "not a list of day names")
    chosen = set(names)
    if relative and chosen == set(_DAYS):
        return ("Day",)
    if relative and chosen == _WEEKDAYS:
        return ("Weekday",)
    if relative and chosen == {"saturday", "sunday"}:
        return ("WeekendDay",)
    return tuple(d.capitalize() for d in _DAYS if d in chosen)


def _changed(series: Appointment, exception: dict[str, Any]) -> Changed:
    """An exception occurrence: placed by its originalStart, what differs from the series kept."""
    original = exception.get("originalStart")
    candidate = None if original is None else read_datetime(str(original), "exceptionOccurrences/originalStart")

    def differs(value: Any, series_value: Any) -> Any:
        return None if value == series_value else value

    location = ((exception.get("location") or {}).get("displayName")) or None
    cancelled = bool(exception.get("isCancelled"))
    day_zone = series.start_tz if exception.get("isAllDay", series.all_day) is True else None
    return Changed(
        candidates=[candidate],
        start=_when(exception.get("start"), "exceptionOccurrences/start", day_zone),
        end=_when(exception.get("end"), "exceptionOccurrences/end", day_zone),
        subject=differs(exception.get("subject"), series.subject),
        location=differs(location, series.location),
        cancelled=differs(cancelled, series.status == "cancelled"),
        field="exceptionOccurrences/originalStart",
    )


def _cancelled(series: Appointment, occurrence_id: str) -> Deleted:
    """A cancelled occurrence, ``OID.<master id>.<yyyy-mm-dd>``: the occurrence on that local day."""
    day_text = str(occurrence_id).rsplit(".", 1)[-1]
    try:
        day = date.fromisoformat(day_text)
    except ValueError:
        raise Unreadable("cancelledOccurrences", _raw(occurrence_id), "not OID.<id>.<yyyy-mm-dd>") from None
    midnight = datetime.combine(day, time(0), zone_for(series.start_tz))
    return Deleted([midnight], "cancelledOccurrences", raw=str(occurrence_id))

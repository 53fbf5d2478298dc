"""Events as Graph clients send them (POST, PATCH): what each property means for the shared mailbox model, checked
before anything is stored. Read-only properties a client echoes back (``id``, ``changeKey``, ``iCalUId``,
``@odata.*``, ...) are ignored as Graph ignores them; properties Graph has and the emulator does not keep
(``locations``, online meetings, ``transactionId``, extensions, ...) are refused with a message naming them, so that
no client mistakes a gap for success; anything else is not an event property and is refused too.
"""

from __future__ import annotations

from datetime import time
from typing import Any

from .. import timezones
from ..errors import EwsError
from ..ews.itemxml import settle
from ..model import SUBJECT_MAX, Attendee, CalendarItem
from . import recurrence
from .datetimes import read
from .errors import GraphError, bad_request
from .event_json import RESPONSES, SHOW_AS

READ_ONLY = frozenset(
    {
        "id",
        "changeKey",
        "createdDateTime",
        "lastModifiedDateTime",
        "iCalUId",
        "type",
        "seriesMasterId",
        "originalStart",
        "originalStartTimeZone",
        "originalEndTimeZone",
        "isOrganizer",
        "responseStatus",
        "hasAttachments",
        "bodyPreview",
        "webLink",
        "isCancelled",
        "isDraft",
        "cancelledOccurrences",
        "onlineMeetingUrl",
        "onlineMeeting",
    }
)
NOT_EMULATED = frozenset(
    {
        "locations",
        "isOnlineMeeting",
        "onlineMeetingProvider",
        "hideAttendees",
        "transactionId",
        "organizer",
        "attachments",
        "extensions",
        "singleValueExtendedProperties",
        "multiValueExtendedProperties",
        "exceptionOccurrences",
        "instances",
        "calendar",
    }
)
SERIES_SHAPE = frozenset({"start", "end", "isAllDay", "recurrence"})
ATTENDEE_TYPES = {"required": "required", "optional": "optional", "resource": "resources"}
_FROM_GRAPH = {"show_as": {v: k for k, v in SHOW_AS.items()}, "response": {v: k for k, v in RESPONSES.items()}}
_LEVELS = {"sensitivity": ("normal", "personal", "private", "confidential"), "importance": ("low", "normal", "high")}


def check_properties(data: dict[str, Any]) -> None:
    for name in data:
        if name.startswith("@odata.") or name in READ_ONLY or name in _APPLY:
            continue
        if name in NOT_EMULATED:
            raise bad_request(f"The emulator does not keep the event property '{name}'; leave it out.")
        raise bad_request(
            f"The property '{name}' does not exist on type 'microsoft.graph.event'. Make sure to only use property "
            "names that are defined by the type.",
            "RequestBodyRead",
        )


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise bad_request(f"{field} must be a string.")
    return value


def _bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise bad_request(f"{field} must be true or false.")
    return value


def _enum(value: Any, allowed: tuple[str, ...] | dict[str, str], field: str) -> str:
    if value not in allowed:
        raise bad_request(f"{field}: {value!r} is not one of {', '.join(allowed)}.")
    return str(value)


def _subject(item: CalendarItem, value: Any) -> None:
    item.subject = None if value is None else _text(value, "subject")[:SUBJECT_MAX]


def _body(item: CalendarItem, value: Any) -> None:
    if value is None:
        item.body = None
        return
    if not isinstance(value, dict):
        raise bad_request('body must be an itemBody: {"contentType": "text"|"html", "content": "..."}.')
    kind = _enum(value.get("contentType", "text"), ("text", "html"), "body.contentType")
    item.body = ("HTML" if kind == "html" else "Text", _text(value.get("content") or "", "body.content"))


def _start(item: CalendarItem, value: Any) -> None:
    item.start, item.start_tz = read(value, "start")


def _end(item: CalendarItem, value: Any) -> None:
    item.end, item.end_tz = read(value, "end")


def _location(item: CalendarItem, value: Any) -> None:
    if value is None:
        item.location = None
        return
    if not isinstance(value, dict):
        raise bad_request('location must be a location: {"displayName": "..."}.')
    item.location = _text(value.get("displayName") or "", "location.displayName") or None


def _categories(item: CalendarItem, value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise bad_request("categories must be a list of strings.")
    item.categories = tuple(value)


def _attendees(item: CalendarItem, value: Any) -> None:
    if not isinstance(value, list):
        raise bad_request("attendees must be a list of attendees.")
    groups: dict[str, list[Attendee]] = {"required": [], "optional": [], "resources": []}
    for a in value:
        address = a.get("emailAddress", {}).get("address") if isinstance(a, dict) else None
        if not isinstance(address, str) or "@" not in address:
            raise bad_request("attendees: each attendee needs emailAddress.address.")
        kind = _enum(a.get("type", "required"), ATTENDEE_TYPES, "attendees.type")
        status = a.get("status") or {}
        response = _enum(status.get("response", "none"), _FROM_GRAPH["response"], "attendees.status.response")
        name = a["emailAddress"].get("name") or address
        groups[ATTENDEE_TYPES[kind]].append(Attendee(str(name), address, _FROM_GRAPH["response"][response]))
    item.required, item.optional, item.resources = (tuple(groups[k]) for k in ("required", "optional", "resources"))


def _recurrence(item: CalendarItem, value: Any) -> None:
    if item.kind in ("Occurrence", "Exception"):
        raise bad_request("An occurrence has the recurrence of its series; change it on the series master.")
    item.recurrence = None if value is None else recurrence.read(value, item.start_tz)


def _reminder_minutes(item: CalendarItem, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise bad_request("reminderMinutesBeforeStart must be a non-negative integer.")
    item.reminder_minutes = value


def _simple(attr: str, convert: Any) -> Any:
    def apply(item: CalendarItem, value: Any) -> None:
        setattr(item, attr, convert(value))

    return apply


# In the order they apply: the zone and start come before the recurrence whose dates are read in that zone.
_APPLY = {
    "subject": _subject,
    "body": _body,
    "start": _start,
    "end": _end,
    "isAllDay": _simple("is_all_day", lambda v: _bool(v, "isAllDay")),
    "showAs": _simple("fb_status", lambda v: _FROM_GRAPH["show_as"][_enum(v, _FROM_GRAPH["show_as"], "showAs")]),
    "sensitivity": _simple("sensitivity", lambda v: _enum(v, _LEVELS["sensitivity"], "sensitivity").title()),
    "importance": _simple("importance", lambda v: _enum(v, _LEVELS["importance"], "importance").title()),
    "categories": _categories,
    "location": _location,
    "attendees": _attendees,
    "isReminderOn": _simple("reminder_is_set", lambda v: _bool(v, "isReminderOn")),
    "reminderMinutesBeforeStart": _reminder_minutes,
    "responseRequested": _simple("is_response_requested", lambda v: _bool(v, "responseRequested")),
    "allowNewTimeProposals": _simple("allow_new_time_proposal", lambda v: _bool(v, "allowNewTimeProposals")),
    "recurrence": _recurrence,
}


def _check_all_day(item: CalendarItem) -> None:
    for moment, tz_id, name in ((item.start, item.start_tz, "start"), (item.end, item.end_tz, "end")):
        if moment.astimezone(timezones.zone(tz_id)).time() != time():
            raise GraphError(
                400,
                "ErrorPropertyValidationFailure",
                f"{name} of an all-day event must be at midnight in its time zone.",
            )


def apply(item: CalendarItem, data: dict[str, Any], *, creating: bool) -> None:
    """Apply a request body to an item (a fresh one, a working copy of a stored one, or an occurrence)."""
    check_properties(data)
    if creating and not ("start" in data and "end" in data):
        raise bad_request("An event needs a start and an end.")
    for name, setter in _APPLY.items():
        if name in data:
            setter(item, data[name])
    if item.is_all_day and SERIES_SHAPE & set(data):
        _check_all_day(item)
    if item.kind == "Single" and (item.exceptions or item.deleted) and SERIES_SHAPE & set(data):
        item.exceptions.clear()  # changing the series' time or pattern drops its exceptions, as Outlook does
        item.deleted = frozenset()
    try:
        settle(item, creating=creating, moved=bool({"start", "recurrence"} & set(data)))
    except EwsError as exc:
        raise GraphError.from_exchange(exc) from exc

"""Events as Graph writes them (the ``microsoft.graph.event`` of Microsoft's samples): ids and change keys shared
with EWS, ``iCalUId`` equal to EWS's UID, start and end as dateTimeTimeZone in UTC or in the zone a Prefer header
asked for, the series' pattern as a patternedRecurrence, occurrences and exceptions with their series master's id
and original start, and on request (``$select``/``$expand`` on a series master) ``cancelledOccurrences`` and
``exceptionOccurrences``. Also the ``$select`` of properties and the ``@removed`` entry of a delta answer.
"""

from __future__ import annotations

import re
from datetime import datetime, time
from typing import Any
from urllib.parse import quote

from .. import timezones
from ..model import Attendee, CalendarItem, ItemRef, Mailbox, Person, rest_id
from . import recurrence
from .datetimes import stamp, write
from .errors import bad_request

EVENT_TYPE = {"Single": "singleInstance", "RecurringMaster": "seriesMaster", "Occurrence": "occurrence"}
EVENT_TYPE["Exception"] = "exception"
SHOW_AS = {"Free": "free", "Tentative": "tentative", "Busy": "busy", "OOF": "oof"}
SHOW_AS |= {"WorkingElsewhere": "workingElsewhere", "NoData": "unknown"}
RESPONSES = {"Unknown": "none", "Organizer": "organizer", "Tentative": "tentativelyAccepted"}
RESPONSES |= {"Accept": "accepted", "Decline": "declined", "NoResponseReceived": "notResponded"}
NEVER = "0001-01-01T00:00:00Z"  # what Graph writes for a response never given
PREVIEW_LENGTH = 255
# Every property write_event writes (originalStart only for occurrences and exceptions).
PROPERTIES = frozenset(
    {
        *("@odata.etag", "id", "createdDateTime", "lastModifiedDateTime", "changeKey", "categories"),
        *("transactionId", "originalStartTimeZone", "originalEndTimeZone", "iCalUId", "reminderMinutesBeforeStart"),
        *("isReminderOn", "hasAttachments", "subject", "bodyPreview", "importance", "sensitivity", "isAllDay"),
        *("isCancelled", "isOrganizer", "responseRequested", "seriesMasterId", "showAs", "type", "webLink"),
        *("onlineMeetingUrl", "isOnlineMeeting", "onlineMeetingProvider", "allowNewTimeProposals", "isDraft"),
        *("hideAttendees", "responseStatus", "body", "start", "end", "location", "locations", "recurrence"),
        *("attendees", "organizer", "onlineMeeting", "originalStart"),
    }
)
# Properties written only when $select names them (on a series master fetched by id), as Graph does.
ON_REQUEST = ("cancelledOccurrences",)
EXPANDABLE = ("exceptionOccurrences",)


def event_id(item: CalendarItem) -> str:
    return rest_id(item.item_id)


def master_id(item: CalendarItem) -> str:
    return rest_id(ItemRef(item.mailbox, item.number).encode())


def _kind(item: CalendarItem) -> str:
    return item.kind if item.kind in ("Occurrence", "Exception") else item.series_kind()


def _person(person: Person | Attendee) -> dict[str, Any]:
    return {"emailAddress": {"name": person.name, "address": person.email}}


def _attendees(item: CalendarItem) -> list[dict[str, Any]]:
    out = []
    for kind, people in (("required", item.required), ("optional", item.optional), ("resource", item.resources)):
        for a in people:
            when = stamp(a.last_response).replace(".0000000", "") if a.last_response else NEVER
            out.append({"type": kind, "status": {"response": RESPONSES[a.response], "time": when}, **_person(a)})
    return out


def _location(item: CalendarItem) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    if not item.location:
        return {"displayName": "", "locationType": "default", "uniqueIdType": "unknown", "address": {}}, []
    place = {"displayName": item.location, "locationType": "default", "uniqueIdType": "unknown"}
    return {**place, "uniqueId": item.location, "uniqueIdType": "private"}, [place]


def _preview(item: CalendarItem) -> str:
    if item.body is None:
        return ""
    text = item.body[1]
    if item.body[0] == "HTML":
        text = re.sub(r"(?is)<(head|style|script)\b.*?</\1>", " ", text)
        text = re.sub(r"<[^>]+>", " ", text)
    return " ".join(text.split())[:PREVIEW_LENGTH]


def _times(item: CalendarItem, zone: str | None) -> tuple[dict[str, str], dict[str, str]]:
    label = zone or "UTC"
    if not item.is_all_day:
        return write(item.start, label), write(item.end, label)
    # All-day events are whole days of their own zone: midnight to midnight in whatever zone they are shown in.
    days = []
    for moment, tz_id in ((item.start, item.start_tz), (item.end, item.end_tz)):
        day = moment.astimezone(timezones.zone(tz_id)).date()
        days.append(
            {"dateTime": datetime.combine(day, time()).strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": label}
        )
    return days[0], days[1]


def occurrence_id(master: CalendarItem, original_start: datetime) -> str:
    """``OID.{seriesMasterId}.{yyyy-mm-dd}``: an occurrence named by its series and its original day."""
    day = original_start.astimezone(timezones.zone(master.start_tz)).date()
    return f"OID.{master_id(master)}.{day.isoformat()}"


def cancelled_occurrences(master: CalendarItem) -> list[str]:
    out = []
    for index in sorted(master.deleted):
        original = master.original_start_at(index)
        if original is not None:
            out.append(occurrence_id(master, original))
    return out


def write_event(item: CalendarItem, mbx: Mailbox, zone: str | None = None) -> dict[str, Any]:
    """Every property of an event Graph writes by default, in the order of Microsoft's samples."""
    kind = _kind(item)
    start, end = _times(item, zone)
    location, locations = _location(item)
    organizer = item.organizer or Person(mbx.display_name, mbx.address)
    out: dict[str, Any] = {
        "@odata.etag": f'W/"{item.change_key}"',
        "id": event_id(item),
        "createdDateTime": stamp(item.created),
        "lastModifiedDateTime": stamp(item.modified),
        "changeKey": item.change_key,
        "categories": list(item.categories),
        "transactionId": None,
        "originalStartTimeZone": item.start_tz,
        "originalEndTimeZone": item.end_tz,
        "iCalUId": item.uid,
        "reminderMinutesBeforeStart": item.reminder_minutes,
        "isReminderOn": item.reminder_is_set,
        "hasAttachments": False,
        "subject": item.subject or "",
        "bodyPreview": _preview(item),
        "importance": item.importance.lower(),
        "sensitivity": item.sensitivity.lower(),
        "isAllDay": item.is_all_day,
        "isCancelled": item.is_cancelled,
        "isOrganizer": item.my_response == "Organizer",
        "responseRequested": item.is_meeting if item.is_response_requested is None else item.is_response_requested,
        "seriesMasterId": master_id(item) if kind in ("Occurrence", "Exception") else None,
        "showAs": SHOW_AS[item.fb_status],
        "type": EVENT_TYPE[kind],
        "webLink": "https://outlook.office365.com/owa/?itemid="
        f"{quote(event_id(item), safe='')}&exvsurl=1&path=/calendar/item",
        "onlineMeetingUrl": None,
        "isOnlineMeeting": False,
        "onlineMeetingProvider": "unknown",
        "allowNewTimeProposals": item.allow_new_time_proposal,
        "isDraft": False,
        "hideAttendees": False,
        "responseStatus": {"response": RESPONSES[item.my_response], "time": NEVER},
        "body": {
            "contentType": "html" if item.body and item.body[0] == "HTML" else "text",
            "content": item.body[1] if item.body else "",
        },
        "start": start,
        "end": end,
        "location": location,
        "locations": locations,
        "recurrence": recurrence.write(item),
        "attendees": _attendees(item),
        "organizer": _person(organizer),
        "onlineMeeting": None,
    }
    if kind in ("Occurrence", "Exception") and item.original_start is not None:
        out["originalStart"] = stamp(item.original_start).replace(".0000000", "")
    return out


def select(event: dict[str, Any], names: list[str] | None) -> dict[str, Any]:
    """Only the properties ``$select`` names (with ``@odata.etag`` and ``id``, which Graph always writes)."""
    if names is None:
        return event
    return {k: v for k, v in event.items() if k in ("@odata.etag", "id") or k in names}


def selection(raw: str | None, on_request: tuple[str, ...] = ()) -> list[str] | None:
    """The property names of a ``$select`` (None when there is none); an unknown one is refused as Graph does.
    ``on_request``: properties that may be selected here beyond those written by default."""
    if raw is None:
        return None
    names = [n.strip() for n in raw.split(",") if n.strip()]
    for name in names:
        if name not in PROPERTIES and name not in on_request:
            raise bad_request(
                f"Could not find a property named '{name}' on type 'microsoft.graph.event'.", "BadRequest"
            )
    return names


def removed(graph_id: str) -> dict[str, Any]:
    """A delta entry for an event that is gone from the view (deleted, or moved out of the window)."""
    return {"@odata.type": "#microsoft.graph.event", "id": graph_id, "@removed": {"reason": "deleted"}}

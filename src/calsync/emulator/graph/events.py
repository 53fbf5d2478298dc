"""The event operations of ``/v1.0/users/{id}`` (also under ``/calendar``): ``GET /calendar``, ``GET /events``
(paged with ``$top``/``$skip``), ``GET /events/{id}`` (``$select``, ``$expand=exceptionOccurrences``),
``POST /events``, ``PATCH /events/{id}`` and ``DELETE /events/{id}`` (both honouring ``If-Match`` with the
event's ``@odata.etag``, 412 on a mismatch; on an occurrence: an exception, or a deleted occurrence), and
``POST /events/{id}/cancel``. Every change goes through the organisation's mutations, as a change over EWS does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.responses import Response

from ..model import CalendarItem, Mailbox, ews_id, rest_id
from . import event_input
from .endpoint import Call, answer
from .errors import GraphError, bad_request
from .event_json import EXPANDABLE, ON_REQUEST, cancelled_occurrences, select, selection, write_event

# Query options Graph has for event lists and the emulator does not (it answers 501 NotImplemented).
UNSUPPORTED_OPTIONS = ("$filter", "$orderby", "$search", "$expand", "$count")


def context(call: Call, mbx: Mailbox, what: str) -> str:
    return f"{call.base}/v1.0/$metadata#users('{mbx.guid}')/{what}"


def find(call: Call, mbx: Mailbox) -> CalendarItem:
    """The event (a single item, series master, occurrence or exception) the path's id names in the mailbox."""
    return call.exchange.resolve_item(mbx, ews_id(call.path_params["event"]))


def _check_if_match(call: Call, item: CalendarItem) -> None:
    expected = call.headers.get("if-match")
    if expected is None or expected.strip() == "*":
        return
    if expected.strip().removeprefix("W/").strip('"') != item.change_key:
        raise GraphError(
            412,
            "ErrorIrresolvableConflict",
            "The send or update operation could not be performed because the change key passed in the request does "
            "not match the current change key for the item.",
        )


def _is_organizer_meeting(item: CalendarItem) -> bool:
    return item.is_meeting and item.my_response == "Organizer"


def get_calendar(call: Call) -> Response:
    mbx = call.user()
    with call.exchange.lock:
        folder = mbx.calendar
        return answer(
            {
                "@odata.context": context(call, mbx, "calendar/$entity"),
                "id": rest_id(mbx.folder_id(folder.distinguished)),
                "name": folder.display_name,
                "color": "auto",
                "hexColor": "",
                "isDefaultCalendar": True,
                "changeKey": folder.change_key,
                "canShare": True,
                "canViewPrivateItems": True,
                "canEdit": True,
                "allowedOnlineMeetingProviders": ["teamsForBusiness"],
                "defaultOnlineMeetingProvider": "teamsForBusiness",
                "isTallyingResponses": True,
                "isRemovable": False,
                "owner": {"name": mbx.display_name, "address": mbx.address},
            }
        )


def listing(call: Call, mbx: Mailbox, found: Sequence[CalendarItem], what: str) -> Response:
    """A page of events (``$select``, ``$top``, ``$skip``, the preferred zone) with its ``@odata.nextLink``."""
    names = selection(call.query.get("$select"))
    zone = call.zone()
    chunk, next_link = call.page(found)
    body: dict[str, Any] = {
        "@odata.context": context(call, mbx, what),
        "value": [select(write_event(i, mbx, zone), names) for i in chunk],
    }
    if next_link:
        body["@odata.nextLink"] = next_link
    return answer(body)


def list_events(call: Call) -> Response:
    call.refuse_options(*UNSUPPORTED_OPTIONS)
    mbx = call.user()
    with call.exchange.lock:
        return listing(call, mbx, sorted(mbx.calendar.items.values(), key=lambda i: i.number), "events")


def get_event(call: Call) -> Response:
    mbx = call.user()
    names = selection(call.query.get("$select"), ON_REQUEST)
    expand = call.query.get("$expand")
    if expand is not None and expand not in EXPANDABLE:
        raise bad_request(f"$expand supports {', '.join(EXPANDABLE)} on an event, not '{expand}'.", "BadRequest")
    zone = call.zone()
    with call.exchange.lock:
        item = find(call, mbx)
        event = select(write_event(item, mbx, zone), names)
        is_master = item.kind == "Single" and item.recurrence is not None
        if names is not None and "cancelledOccurrences" in names:
            event["cancelledOccurrences"] = cancelled_occurrences(item) if is_master else []
        if expand is not None:
            exceptions = [item.occurrence(i) for i in sorted(item.exceptions)] if is_master else []
            event["exceptionOccurrences"] = [write_event(o, mbx, zone) for o in exceptions if o is not None]
    return answer({"@odata.context": context(call, mbx, "events/$entity"), **event})


def create_event(call: Call) -> Response:
    mbx = call.user()
    data = call.json()
    zone = call.zone()
    with call.exchange.lock:
        item = call.exchange.new_item(mbx)
        event_input.apply(item, data, creating=True)
        item.meeting_request_was_sent = item.is_meeting
        call.exchange.insert(mbx, item, notify_attendees=item.is_meeting)
        return answer({"@odata.context": context(call, mbx, "events/$entity"), **write_event(item, mbx, zone)}, 201)


def update_event(call: Call) -> Response:
    mbx = call.user()
    data = call.json()
    zone = call.zone()
    exchange = call.exchange
    with exchange.lock:
        item = find(call, mbx)
        _check_if_match(call, item)
        if item.kind in ("Occurrence", "Exception"):
            master = exchange.master_of(mbx, item)
            item = exchange.modify_occurrence(
                mbx, master, item.index, lambda occ: event_input.apply(occ, data, creating=False)
            )
        else:
            exchange.modify(mbx, item, lambda work: event_input.apply(work, data, creating=False))
            if _is_organizer_meeting(item):
                item.sequence += 1
                exchange.propagate_meeting(mbx, item)
        return answer({"@odata.context": context(call, mbx, "events/$entity"), **write_event(item, mbx, zone)})


def _remove(call: Call, mbx: Mailbox, item: CalendarItem) -> None:
    """Delete as Exchange Online does for Graph: an occurrence leaves its series; anything else goes to Deleted
    Items, the organizer's meeting sending its cancellation first."""
    exchange = call.exchange
    if item.kind in ("Occurrence", "Exception"):
        exchange.delete_occurrence(mbx, exchange.master_of(mbx, item), item.index)
        return
    if _is_organizer_meeting(item):
        exchange.propagate_meeting(mbx, item, cancelled=True)
    exchange.remove(mbx, item, "MoveToDeletedItems")


def delete_event(call: Call) -> Response:
    mbx = call.user()
    with call.exchange.lock:
        item = find(call, mbx)
        _check_if_match(call, item)
        _remove(call, mbx, item)
    return answer(status=204)


def cancel_event(call: Call) -> Response:
    mbx = call.user()
    comment = call.json().get("Comment", "")
    if not isinstance(comment, str):
        raise bad_request("Comment must be a string.")
    with call.exchange.lock:
        item = find(call, mbx)
        if item.my_response != "Organizer":
            raise bad_request("Your request can't be completed. You need to be an organizer to cancel a meeting.")
        _remove(call, mbx, item)
    return answer(status=202)

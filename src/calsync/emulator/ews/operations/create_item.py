"""CreateItem: new calendar items (meetings send their invitations to attendees in this organisation), and
the meeting response objects: CancelCalendarItem, AcceptItem, TentativelyAcceptItem, DeclineItem.
"""

from __future__ import annotations

from lxml import etree

from ...model import CALENDAR, CalendarItem, Mailbox
from ..itemxml import apply_draft, read_fields
from ..service import Request
from ..soap import EwsError, m, sub, t
from .common import children, find_item, resolve_folder, respond

INVITATION_MODES = ("SendToNone", "SendOnlyToAll", "SendToAllAndSaveCopy")
RESPONSES = {"AcceptItem": "Accept", "TentativelyAcceptItem": "Tentative", "DeclineItem": "Decline"}


def handle(req: Request, body: etree._Element) -> etree._Element:
    exchange = req.exchange
    saved = body.find(m("SavedItemFolderId"))
    folder_ref = children(saved)[0] if saved is not None and children(saved) else None
    items = children(body.find(m("Items")))
    send = body.get("SendMeetingInvitations")

    def each(holder: etree._Element, elem: etree._Element) -> None:
        kind = etree.QName(elem).localname
        if kind == "CalendarItem":
            mbx, folder = resolve_folder(req, folder_ref) if folder_ref is not None else (req.mailbox(), CALENDAR)
            if folder != CALENDAR:
                raise EwsError(
                    "ErrorCannotCreateCalendarItemInNonCalendarFolder",
                    "Calendar items can only be created in a calendar folder.",
                )
            if send is None:
                raise EwsError(
                    "ErrorSendMeetingInvitationsRequired",
                    "The SendMeetingInvitations attribute is required for calendar items.",
                )
            if send not in INVITATION_MODES:
                raise EwsError(
                    "ErrorSchemaValidation",
                    f"SendMeetingInvitations '{send}' is not one of {', '.join(INVITATION_MODES)}.",
                )
            draft = read_fields(elem)
            if draft.start_raw is None or draft.end_raw is None:
                raise EwsError("ErrorMissingArgument", "A calendar item needs Start and End.")
            item = exchange.new_item(mbx)
            apply_draft(item, draft, creating=True)
            notify = send != "SendToNone" and item.is_meeting
            item.meeting_request_was_sent = notify
            exchange.insert(mbx, item, notify_attendees=notify)
            out = sub(holder, m("Items"))
            sub(sub(out, t("CalendarItem")), t("ItemId"), Id=item.item_id, ChangeKey=item.change_key)
        elif kind == "CancelCalendarItem":
            _cancel(req, elem)
            sub(holder, m("Items"))
        elif kind in RESPONSES:
            _respond(req, elem, RESPONSES[kind])
            sub(holder, m("Items"))
        else:
            raise EwsError(
                "ErrorInvalidItemForOperationCreateItem",
                f"CreateItem here accepts calendar items and meeting responses, not '{kind}'.",
            )

    return respond("CreateItem", items, each)


def _reference(req: Request, elem: etree._Element) -> tuple[Mailbox, CalendarItem]:
    """The item a response object (cancel, accept, ...) refers to; Exchange requires ReferenceItemId."""
    ref = elem.find(t("ReferenceItemId"))
    if ref is None:
        raise EwsError(
            "ErrorMissingInformationReferenceItemId",
            f"{etree.QName(elem).localname} needs a ReferenceItemId naming the calendar item it responds to.",
        )
    return find_item(req, ref.get("Id", ""))


def _cancel(req: Request, elem: etree._Element) -> None:
    mbx, item = _reference(req, elem)
    if item.kind in ("Occurrence", "Exception"):
        master = req.exchange.master_of(mbx, item)
        req.exchange.delete_occurrence(mbx, master, item.index)
        return
    if item.my_response != "Organizer":
        raise EwsError("ErrorInvalidOperation", "Only the organizer can cancel a meeting.")
    req.exchange.propagate_meeting(mbx, item, cancelled=True)
    req.exchange.remove(mbx, item, "MoveToDeletedItems")


def _respond(req: Request, elem: etree._Element, response: str) -> None:
    mbx, item = _reference(req, elem)
    if item.my_response == "Organizer":
        raise EwsError("ErrorInvalidOperation", "The organizer cannot respond to their own meeting.")
    item.my_response = response
    item.fb_status = {"Accept": "Busy", "Tentative": "Tentative", "Decline": "Free"}[response]
    req.exchange.touch(mbx, item)
    organizer = req.exchange.mailboxes.get(item.organizer.email.lower()) if item.organizer else None
    if organizer is None:
        return
    original = next((i for i in organizer.calendar.items.values() if i.uid == item.uid), None)
    if original is None:
        return
    for attendee in [*original.required, *original.optional]:
        if attendee.email.lower() == mbx.address.lower():
            attendee.response = response
            attendee.last_response = req.exchange.now()
    req.exchange.touch(organizer, original)
    if response == "Decline":
        req.exchange.remove(mbx, item, "MoveToDeletedItems")

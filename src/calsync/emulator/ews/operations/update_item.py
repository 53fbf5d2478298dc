"""UpdateItem: set, append to and delete properties of items and occurrences, guarded by change keys."""

from __future__ import annotations

from lxml import etree

from ...model import CalendarItem, Mailbox
from ..itemxml import apply_draft, delete_field, field_name, read_fields, settle
from ..service import Request
from ..soap import EwsError, m, sub, t
from .common import check_change_key, children, item_target, respond

CONFLICT_MODES = ("NeverOverwrite", "AutoResolve", "AlwaysOverwrite")
INVITATION_MODES = (
    "SendToNone",
    "SendOnlyToAll",
    "SendOnlyToChanged",
    "SendToAllAndSaveCopy",
    "SendToChangedAndSaveCopy",
)
_SERIES_SHAPE = ("Start", "End", "Recurrence", "StartTimeZone", "EndTimeZone", "MeetingTimeZone", "IsAllDayEvent")


def handle(req: Request, body: etree._Element) -> etree._Element:
    conflict = body.get("ConflictResolution", "AutoResolve")
    if conflict not in CONFLICT_MODES:
        raise EwsError(
            "ErrorSchemaValidation", f"ConflictResolution '{conflict}' is not one of {', '.join(CONFLICT_MODES)}."
        )
    send = body.get("SendMeetingInvitationsOrCancellations")
    changes = children(body.find(m("ItemChanges")))

    def each(holder: etree._Element, change: etree._Element) -> None:
        parts = children(change)
        if len(parts) != 2 or etree.QName(parts[1]).localname != "Updates":
            raise EwsError("ErrorSchemaValidation", "ItemChange needs an item id followed by Updates.")
        ref, updates = parts
        mbx, item = item_target(req, ref)
        if conflict != "AlwaysOverwrite":
            check_change_key(ref, item)
        if send is None:
            raise EwsError(
                "ErrorSendMeetingInvitationsOrCancellationsRequired",
                "The SendMeetingInvitationsOrCancellations attribute is required for calendar items.",
            )
        if send not in INVITATION_MODES:
            raise EwsError(
                "ErrorSchemaValidation",
                f"SendMeetingInvitationsOrCancellations '{send}' is not one of {', '.join(INVITATION_MODES)}.",
            )
        if item.kind in ("Occurrence", "Exception"):
            result = _update_occurrence(req, mbx, item, children(updates))
        else:
            result = _update_item(req, mbx, item, children(updates))
            if send != "SendToNone" and result.is_meeting and result.my_response == "Organizer":
                result.sequence += 1
                req.exchange.propagate_meeting(mbx, result)
        items = sub(holder, m("Items"))
        sub(sub(items, t("CalendarItem")), t("ItemId"), Id=result.item_id, ChangeKey=result.change_key)
        sub(sub(holder, m("ConflictResults")), t("Count"), 0)

    return respond("UpdateItem", changes, each)


def _apply(item: CalendarItem, updates: list[etree._Element]) -> set[str]:
    touched: set[str] = set()
    for update in updates:
        kind = etree.QName(update).localname
        parts = children(update)
        if not parts:
            raise EwsError("ErrorSchemaValidation", f"{kind} needs a property path.")
        path = parts[0]
        path_kind = etree.QName(path).localname
        if path_kind != "FieldURI":
            raise EwsError(
                "ErrorInvalidPropertyRequest", f"{path_kind} is not a property calendar items carry here; use FieldURI."
            )
        name = field_name(path.get("FieldURI", ""))
        touched.add(name)
        if kind == "DeleteItemField":
            delete_field(item, name)
            continue
        if kind not in ("SetItemField", "AppendToItemField"):
            raise EwsError("ErrorSchemaValidation", f"'{kind}' is not an item update.")
        if len(parts) != 2 or etree.QName(parts[1]).localname not in ("CalendarItem", "Item"):
            raise EwsError("ErrorSchemaValidation", f"{kind} needs a CalendarItem with the new value.")
        values = children(parts[1])
        if len(values) != 1 or etree.QName(values[0]).localname != name:
            raise EwsError(
                "ErrorIncorrectUpdatePropertyCount",
                "An object within a change description must contain one and only one property to modify.",
            )
        if kind == "AppendToItemField" and name not in (
            "Body",
            "Categories",
            "RequiredAttendees",
            "OptionalAttendees",
            "Resources",
        ):
            raise EwsError("ErrorInvalidPropertyAppend", f"The property '{name}' cannot be appended to.")
        draft = read_fields(parts[1], append=kind == "AppendToItemField")
        if kind == "AppendToItemField" and name == "Body" and item.body is not None:
            appended = draft.values["body"]
            assert isinstance(appended, tuple)
            draft.values["body"] = (item.body[0], item.body[1] + str(appended[1]))
        apply_draft(item, draft, creating=False, settle_now=False)
    # Start and End often change in one request: check and align them once every update is in.
    settle(item, creating=False, moved=bool(touched & {"Start", "Recurrence", "StartTimeZone", "MeetingTimeZone"}))
    return touched


def _update_item(req: Request, mbx: Mailbox, item: CalendarItem, updates: list[etree._Element]) -> CalendarItem:
    def change(work: CalendarItem) -> None:  # all or nothing: the real item changes only if every update applies
        touched = _apply(work, updates)
        if item.recurrence is not None and touched & set(_SERIES_SHAPE):
            work.exceptions.clear()  # changing the series' time or pattern drops its exceptions, as in Outlook
            work.deleted = frozenset()

    return req.exchange.modify(mbx, item, change)


def _update_occurrence(req: Request, mbx: Mailbox, view: CalendarItem, updates: list[etree._Element]) -> CalendarItem:
    master = req.exchange.master_of(mbx, view)

    def change(work: CalendarItem) -> None:
        series_uid = work.uid
        _apply(work, updates)
        # A full save of a fetched occurrence sends the series' UID back and clears Recurrence: both are no-ops.
        if work.recurrence is not None or work.uid != series_uid:
            raise EwsError(
                "ErrorInvalidPropertySet",
                "An occurrence has the recurrence and UID of its series; change them on the recurring master.",
            )

    return req.exchange.modify_occurrence(mbx, master, view.index, change)

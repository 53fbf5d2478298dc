"""MoveItem: move items to another folder (Deleted Items and back, for example). Like Exchange, a moved item
gets a new id; the calendar sees it leave or arrive."""

from __future__ import annotations

from lxml import etree

from ..service import Request
from ..soap import EwsError, m, sub, t
from .common import children, item_target, resolve_folder, respond


def handle(req: Request, body: etree._Element) -> etree._Element:
    target = children(body.find(m("ToFolderId")))
    if len(target) != 1:
        raise EwsError("ErrorSchemaValidation", "ToFolderId must name one folder.")
    refs = children(body.find(m("ItemIds")))

    def each(holder: etree._Element, ref: etree._Element) -> None:
        mbx, item = item_target(req, ref)
        dest_mbx, folder = resolve_folder(req, target[0])
        if dest_mbx is not mbx:
            raise EwsError("ErrorCrossMailboxMoveCopy", "Items cannot be moved to another mailbox.")
        if item.kind in ("Occurrence", "Exception"):
            raise EwsError("ErrorCalendarCannotMoveOrCopyOccurrence", "An occurrence cannot be moved on its own.")
        moved = req.exchange.move(mbx, item, folder)
        items = sub(holder, m("Items"))
        sub(sub(items, t("CalendarItem")), t("ItemId"), Id=moved.item_id, ChangeKey=moved.change_key)

    return respond("MoveItem", refs, each)

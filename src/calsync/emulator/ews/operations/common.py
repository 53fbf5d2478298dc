"""Pieces every EWS operation uses: folder and item id resolution, response shapes, and the pattern of
"one response message per requested thing, each succeeding or failing on its own".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from lxml import etree

from ...model import FOLDER_LAYOUT, CalendarItem, ItemRef, Mailbox, decode_folder_id
from ..itemxml import ALL_PROPERTIES, DEFAULT_SHAPE, field_name
from ..service import Request
from ..soap import EwsError, el, m, response_message, sub, t, text_of

X = TypeVar("X")

# What Exchange puts after the response code of an error message, where the schema requires it.
ERROR_TAIL: dict[str, tuple[tuple[str, object], ...]] = {
    "CreateItem": (("Items", None),),
    "GetItem": (("Items", None),),
    "UpdateItem": (("Items", None),),
    "MoveItem": (("Items", None),),
    "SyncFolderItems": (("SyncState", None), ("IncludesLastItemInRange", True)),
}


def respond(operation: str, things: Iterable[X], each: Callable[[etree._Element, X], None]) -> etree._Element:
    """``m:<operation>Response`` with one ``<operation>ResponseMessage`` per thing; errors stay per message."""
    root = el(m(f"{operation}Response"))
    messages = etree.SubElement(root, m("ResponseMessages"))
    for thing in things:
        try:
            holder = etree.Element("holder")
            each(holder, thing)
        except EwsError as err:
            msg = response_message(messages, f"{operation}ResponseMessage", err)
            for tag, text in ERROR_TAIL.get(operation, ()):
                sub(msg, m(tag), text)
            continue
        msg = response_message(messages, f"{operation}ResponseMessage")
        for child in holder:
            msg.append(child)
    return root


def resolve_folder(req: Request, ref: etree._Element) -> tuple[Mailbox, str]:
    """A ``t:DistinguishedFolderId`` or ``t:FolderId`` -> (mailbox, distinguished folder name)."""
    tag = etree.QName(ref).localname
    if tag == "DistinguishedFolderId":
        name = ref.get("Id", "")
        explicit = text_of(ref.find(t("Mailbox")), t("EmailAddress"))
        mbx = req.mailbox(explicit)
        if name not in FOLDER_LAYOUT:
            raise EwsError("ErrorFolderNotFound", f"The folder '{name}' does not exist in this mailbox.")
        return mbx, name
    if tag == "FolderId":
        guid, name = decode_folder_id(ref.get("Id", ""))
        owner = req.exchange.by_guid.get(guid)
        if owner is None or name not in owner.folders:
            raise EwsError("ErrorFolderNotFound", "The specified folder could not be found in the store.")
        if owner is not req.mailbox():
            req.mailbox(owner.address)  # access check
        return owner, name
    raise EwsError("ErrorInvalidRequest", f"'{tag}' is not a folder id.")


def folder_refs(container: etree._Element | None) -> list[etree._Element]:
    if container is None:
        return []
    return [c for c in container if isinstance(c.tag, str)]


def shape_fields(shape: etree._Element | None) -> list[str]:
    """The properties an ItemShape asks for."""
    if shape is None:
        raise EwsError("ErrorSchemaValidation", "ItemShape is required.")
    base = text_of(shape, t("BaseShape"), "Default")
    if base == "IdOnly":
        fields: list[str] = ["ItemId"]
    elif base == "Default":
        fields = list(DEFAULT_SHAPE)
    elif base == "AllProperties":
        fields = list(ALL_PROPERTIES)
    else:
        raise EwsError("ErrorSchemaValidation", f"BaseShape '{base}' is not IdOnly, Default or AllProperties.")
    extra = shape.find(t("AdditionalProperties"))
    if extra is not None:
        for prop in extra:
            if not isinstance(prop.tag, str):
                continue
            if etree.QName(prop).localname == "FieldURI":
                fields.append(field_name(prop.get("FieldURI", "")))
            # IndexedFieldURI and ExtendedFieldURI name properties calendar items here do not carry.
    return fields


def owner_of(req: Request, item_id: str) -> Mailbox:
    """The mailbox an item id belongs to, after checking that the caller may act on it.

    Exchange finds an item's mailbox from the id itself (X-AnchorMailbox only routes the request), so an
    account with rights on another mailbox reaches its items by id without naming the mailbox."""
    ref = ItemRef.decode(item_id)
    owner = req.exchange.by_guid.get(ref.mailbox)
    if owner is None:
        raise EwsError("ErrorItemNotFound", "The specified object was not found in the store.")
    if req.impersonated is not owner:
        req.mailbox(owner.address)  # access check: impersonation rights, or the caller's own mailbox
    return owner


def find_item(req: Request, item_id: str) -> tuple[Mailbox, CalendarItem]:
    """An item (or occurrence view) by ItemId, in whichever mailbox the id belongs to."""
    mbx = owner_of(req, item_id)
    return mbx, req.exchange.resolve_item(mbx, item_id)


def item_target(req: Request, ref: etree._Element) -> tuple[Mailbox, CalendarItem]:
    """``t:ItemId``, ``t:OccurrenceItemId`` or ``t:RecurringMasterItemId`` -> (mailbox, item or occurrence)."""
    tag = etree.QName(ref).localname
    if tag == "ItemId":
        return find_item(req, ref.get("Id", ""))
    if tag == "OccurrenceItemId":
        mbx, master = find_item(req, ref.get("RecurringMasterId", ""))
        try:
            index = int(ref.get("InstanceIndex", ""))
        except ValueError as exc:
            raise EwsError("ErrorInvalidIdMalformed", "InstanceIndex must be a positive integer.") from exc
        if master.recurrence is None:
            raise EwsError("ErrorItemNotFound", "The item is not a recurring master.")
        if index in master.deleted:
            raise EwsError(
                "ErrorCalendarOccurrenceIsDeletedFromRecurrence", "The occurrence was deleted from the recurrence."
            )
        occ = master.occurrence(index) if index >= 1 else None
        if occ is None:
            raise EwsError(
                "ErrorCalendarOccurrenceIndexIsOutOfRecurrenceRange",
                "The occurrence index is out of the recurrence range.",
            )
        return mbx, occ
    if tag == "RecurringMasterItemId":
        mbx, view = find_item(req, ref.get("OccurrenceId", ""))
        master = req.exchange.master_of(mbx, view)
        if master.recurrence is None:
            raise EwsError("ErrorItemNotFound", "The item is not an occurrence of a recurring series.")
        return mbx, master
    raise EwsError("ErrorInvalidRequest", f"'{tag}' is not an item id.")


def check_change_key(ref: etree._Element, item: CalendarItem) -> None:
    key = ref.get("ChangeKey")
    if key and key != item.change_key:
        raise EwsError(
            "ErrorIrresolvableConflict",
            "The send or update operation could not be performed because the change key passed in the "
            "request does not match the current change key for the item.",
        )


def children(elem: etree._Element | None) -> list[etree._Element]:
    return [] if elem is None else [c for c in elem if isinstance(c.tag, str)]

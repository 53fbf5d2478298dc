"""SyncFolderItems: every change to a folder since a sync state, in batches of MaxChangesReturned (1..512).

Like Exchange, it reports items (single items and recurring masters), not occurrences; a change to an
occurrence is an Update of its master. Changes come oldest first; a batch ends the state at its last change,
so a client that follows the states until IncludesLastItemInRange sees every change exactly once.
"""

from __future__ import annotations

from lxml import etree

from ...model import CalendarItem, ItemRef, Mailbox
from ..itemxml import RenderContext, render
from ..service import Request
from ..soap import EwsError, m, sub, t, text_of
from ..syncstate import SyncState
from .common import children, resolve_folder, respond, shape_fields


def _max_changes(value: str | None) -> int:
    try:
        number = int(value or "")
    except ValueError as exc:
        raise EwsError(
            "ErrorInvalidArgument", f"MaxChangesReturned '{value}' must be an integer from 1 to 512."
        ) from exc
    if not 1 <= number <= 512:
        raise EwsError("ErrorInvalidArgument", f"MaxChangesReturned {number} is outside the allowed range 1..512.")
    return number


def _ignored(mbx: Mailbox, refs: list[etree._Element]) -> set[int]:
    """Item numbers to leave out. An id this mailbox never issued (malformed, foreign) cannot match a change,
    so it is skipped: one bad id must not fail the whole call and make the client start its sync over."""
    numbers = set()
    for ref in refs:
        try:
            decoded = ItemRef.decode(ref.get("Id", ""))
        except EwsError:
            continue
        if decoded.mailbox == mbx.guid:
            numbers.add(decoded.number)
    return numbers


def handle(req: Request, body: etree._Element) -> etree._Element:
    fields = shape_fields(body.find(m("ItemShape")))
    folder_ref = children(body.find(m("SyncFolderId")))

    def each(holder: etree._Element, ref: etree._Element) -> None:
        limit = _max_changes(text_of(body, m("MaxChangesReturned")))
        mbx, folder_name = resolve_folder(req, ref)
        folder = mbx.folders[folder_name]
        raw_state = text_of(body, m("SyncState"))
        if raw_state:
            state = req.exchange.sync_codec.decode(raw_state)
            if state.folder != folder_name or state.generation != mbx.sync_generation:
                raise EwsError(
                    "ErrorInvalidSyncStateData", "Synchronization state data is corrupt or otherwise invalid."
                )
        else:
            state = SyncState(folder_name, mbx.sync_generation, 0, frozenset())
        ignore = _ignored(mbx, children(body.find(m("Ignore"))))
        # (seq, kind, item number, item or None)
        changes: list[tuple[int, str, int, CalendarItem | None]] = []
        for number, current in folder.items.items():
            if number in ignore:
                continue
            if number not in state.known:
                changes.append((current.seq, "Create", number, current))
            elif current.seq > state.seq:
                changes.append((current.seq, "Update", number, current))
        for number in state.known:
            if number not in folder.items:
                changes.append((folder.tombstones.get(number, state.seq + 1), "Delete", number, None))
        changes.sort(key=lambda c: (c[0], c[2]))
        batch = changes[:limit]
        known = set(state.known)
        new_seq = state.seq
        for seq, kind, number, _ in batch:
            new_seq = max(new_seq, seq)
            if kind == "Delete":
                known.discard(number)
            else:
                known.add(number)
        if len(batch) == len(changes):
            new_seq = max(new_seq, mbx.seq)
        new_state = SyncState(folder_name, mbx.sync_generation, new_seq, frozenset(known))
        sub(holder, m("SyncState"), req.exchange.sync_codec.encode(new_state))
        sub(holder, m("IncludesLastItemInRange"), len(batch) == len(changes))
        out = sub(holder, m("Changes"))
        ctx = RenderContext(mbx, req.is_2007, req.exchange.faults.dialects())
        for _, kind, number, changed in batch:
            change = sub(out, t(kind))
            if changed is None:
                sub(change, t("ItemId"), Id=ItemRef(mbx.guid, number).encode())
            else:
                render(change, changed, fields, ctx)
        req.exchange.count("sync_changes", len(batch))

    return respond("SyncFolderItems", folder_ref[:1], each)

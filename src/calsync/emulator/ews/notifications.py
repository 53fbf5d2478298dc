"""Notifications as Exchange writes them, for push (SendNotification), pull (GetEvents) and streaming
(GetStreamingEvents): a subscription id, the previous watermark, and the events, each with its watermark.
"""

from __future__ import annotations

from lxml import etree

from ..journal import Event, encode_watermark
from ..model import Mailbox
from .soap import el, m, sub, t
from .subscriptions import Subscription

MAX_EVENTS_PER_NOTIFICATION = 50


def _folder_ref(parent: etree._Element, tag: str, mbx: Mailbox, name: str) -> None:
    folder = mbx.folders.get(name)
    sub(parent, t(tag), Id=mbx.folder_id(name), ChangeKey=folder.change_key if folder else None)


def render_notification(
    parent: etree._Element, subscription: Subscription, mbx: Mailbox, events: list[Event], more: bool, cursor_after: int
) -> etree._Element:
    """Append ``m:Notification``; with no events it carries a StatusEvent (a heartbeat)."""
    note = sub(parent, m("Notification"))
    sub(note, t("SubscriptionId"), subscription.id)
    sub(note, t("PreviousWatermark"), encode_watermark(mbx.guid, subscription.cursor))
    sub(note, t("MoreEvents"), more)
    if not events:
        status = sub(note, t("StatusEvent"))
        sub(status, t("Watermark"), encode_watermark(mbx.guid, cursor_after))
        return note
    for event in events:
        ev = sub(note, t(event.kind))
        sub(ev, t("Watermark"), encode_watermark(mbx.guid, event.seq))
        sub(ev, t("TimeStamp"), event.time)
        if event.item_id is not None:
            sub(ev, t("ItemId"), Id=event.item_id)
        else:
            _folder_ref(ev, "FolderId", mbx, event.folder or "")
        _folder_ref(ev, "ParentFolderId", mbx, event.parent_folder)
        if event.kind in ("MovedEvent", "CopiedEvent"):
            if event.old_item_id is not None:
                sub(ev, t("OldItemId"), Id=event.old_item_id)
            _folder_ref(ev, "OldParentFolderId", mbx, event.old_parent_folder or event.parent_folder)
        if event.kind == "ModifiedEvent" and event.unread_count is not None:
            sub(ev, t("UnreadCount"), event.unread_count)
    return note


def pending(subscription: Subscription, events: list[Event]) -> tuple[list[Event], bool, int]:
    """The events a subscriber gets next (at most one notification's worth), whether more wait, and the
    journal position after them."""
    matching = [e for e in events if subscription.matches(e)]
    batch = matching[:MAX_EVENTS_PER_NOTIFICATION]
    more = len(matching) > len(batch)
    after = batch[-1].seq if more else (events[-1].seq if events else subscription.cursor)
    return batch, more, after


def send_notification(
    subscription: Subscription, mbx: Mailbox, events: list[Event], more: bool, cursor_after: int
) -> etree._Element:
    """The body of a push: ``m:SendNotification``."""
    root = el(m("SendNotification"))
    messages = sub(root, m("ResponseMessages"))
    msg = sub(messages, m("SendNotificationResponseMessage"), ResponseClass="Success")
    sub(msg, m("ResponseCode"), "NoError")
    render_notification(msg, subscription, mbx, events, more, cursor_after)
    return root

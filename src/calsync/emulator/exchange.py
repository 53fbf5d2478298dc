"""The emulated Exchange organisation: accounts, mailboxes, subscriptions and every change to a calendar.

All state lives here behind one lock. Every change goes through :class:`Exchange`'s mutation methods,
which is what keeps items, sync sequence numbers and the event journal consistent: an item changed by a
SOAP request and one changed "as an Outlook user would" through the control API produce the same
notifications.
"""

from __future__ import annotations

import secrets
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from .clock import Clock
from .errors import EwsError
from .ews.subscriptions import Subscription
from .ews.syncstate import SyncStateCodec
from .faults import Faults
from .journal import Event, Journal
from .model import (
    CALENDAR,
    DELETED_ITEMS,
    EXCEPTION_FIELDS,
    MSG_FOLDER_ROOT,
    RECOVERABLE_DELETIONS,
    Attendee,
    CalendarItem,
    Folder,
    ItemRef,
    Mailbox,
    OccurrenceChange,
    Person,
    new_change_key,
)
from .versions import ExchangeVersion
from .versions import get as get_version

DELETE_MODES = ("HardDelete", "SoftDelete", "MoveToDeletedItems")


@dataclass
class Account:
    username: str
    password: str
    impersonation: bool = True


class Exchange:
    def __init__(self, version: str = "Exchange2016", clock: Clock | None = None) -> None:
        self.version: ExchangeVersion = get_version(version)
        self.clock = clock or Clock()
        self.lock = threading.RLock()
        self.accounts: dict[str, Account] = {}
        self.mailboxes: dict[str, Mailbox] = {}
        self.by_guid: dict[uuid.UUID, Mailbox] = {}
        self.journals: dict[uuid.UUID, Journal] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self.faults = Faults()
        self.sync_codec = SyncStateCodec(secrets.token_bytes(32))
        self._listeners: list[Callable[[uuid.UUID], None]] = []
        self._subscribe_listeners: list[Callable[[Subscription], None]] = []
        self.stats: dict[str, int] = {}
        self.violations: list[dict[str, object]] = []  # strict mode: schema-invalid documents sent

    # --- directory ---------------------------------------------------------------------------

    def add_account(self, username: str, password: str, impersonation: bool = True) -> Account:
        if not username or not password:
            raise ValueError("an account needs a user name and a password (USER:PASSWORD)")
        with self.lock:
            account = Account(username, password, impersonation)
            self.accounts[username.lower()] = account
            return account

    def add_mailbox(self, address: str, display_name: str | None = None) -> Mailbox:
        address = address.strip()
        local, _, domain = address.partition("@")
        if not local or "." not in domain or " " in address:
            raise ValueError(f"'{address}' is not an e-mail address (expected name@domain.tld)")
        with self.lock:
            existing = self.mailboxes.get(address.lower())
            if existing is not None:
                return existing
            name = display_name or local.replace(".", " ").title()
            mbx = Mailbox(address=address, display_name=name)
            self.mailboxes[address.lower()] = mbx
            self.by_guid[mbx.guid] = mbx
            self.journals[mbx.guid] = Journal()
            return mbx

    def mailbox(self, address: str) -> Mailbox:
        mbx = self.mailboxes.get(address.strip().lower())
        if mbx is None:
            raise EwsError("ErrorNonExistentMailbox", "The SMTP address has no mailbox associated with it.")
        return mbx

    def on_change(self, listener: Callable[[uuid.UUID], None]) -> None:
        """Call ``listener(mailbox_guid)`` after every journal append (push delivery wakes on it)."""
        self._listeners.append(listener)

    def count(self, name: str, n: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + n

    # --- item lookup -------------------------------------------------------------------------

    def resolve_item(self, mbx: Mailbox, item_id: str) -> CalendarItem:
        """The item (or occurrence view) an ItemId names, within the mailbox being accessed."""
        ref = ItemRef.decode(item_id)
        if ref.mailbox != mbx.guid:
            raise EwsError("ErrorItemNotFound", "The specified object was not found in the store.")
        item = mbx.find(ref.number)
        if item is None:
            raise EwsError("ErrorItemNotFound", "The specified object was not found in the store.")
        if ref.index:
            occ = item.occurrence(ref.index)
            if occ is None:
                raise EwsError("ErrorItemNotFound", "The specified object was not found in the store.")
            return occ
        return item

    def master_of(self, mbx: Mailbox, view: CalendarItem) -> CalendarItem:
        master = mbx.find(view.number)
        if master is None:
            raise EwsError("ErrorItemNotFound", "The specified object was not found in the store.")
        return master

    # --- mutations ---------------------------------------------------------------------------

    def now(self) -> datetime:
        return self.clock.now()

    def _emit(self, mbx: Mailbox, events: list[Event]) -> None:
        journal = self.journals[mbx.guid]
        for event in events:
            journal.append(event)
        journal.prune(self.now())
        for listener in self._listeners:
            listener(mbx.guid)

    def _folder_event(self, mbx: Mailbox, folder: Folder, seq: int) -> Event:
        folder.change_key = new_change_key()
        return Event(
            seq,
            "ModifiedEvent",
            self.now(),
            parent_folder=folder.parent or MSG_FOLDER_ROOT,
            folder=folder.distinguished,
            unread_count=0,
        )

    def new_item(self, mbx: Mailbox, folder: str = CALENDAR, **fields: Any) -> CalendarItem:
        now = self.now()
        start: datetime = fields.pop("start", now)
        end: datetime = fields.pop("end", start)
        item = CalendarItem(
            number=mbx.allocate_number(),
            mailbox=mbx.guid,
            folder=folder,
            uid=str(fields.pop("uid", None) or uuid.uuid4()).upper(),
            change_key=new_change_key(),
            created=now,
            modified=now,
            start=start,
            end=end,
            organizer=Person(mbx.display_name, mbx.address),
        )
        for name, value in fields.items():
            setattr(item, name, value)
        return item

    def insert(self, mbx: Mailbox, item: CalendarItem, *, notify_attendees: bool = False) -> CalendarItem:
        with self.lock:
            folder = mbx.folders[item.folder]
            seq = mbx.next_seq()
            item.seq = seq
            folder.items[item.number] = item
            self._emit(
                mbx,
                [
                    Event(seq, "CreatedEvent", self.now(), parent_folder=folder.distinguished, item_id=item.item_id),
                    self._folder_event(mbx, folder, seq),
                ],
            )
            if notify_attendees:
                self.propagate_meeting(mbx, item)
            return item

    def touch(self, mbx: Mailbox, item: CalendarItem) -> None:
        """Record that ``item`` (a master or single item, already changed in place) was modified."""
        with self.lock:
            folder = mbx.folders[item.folder]
            seq = mbx.next_seq()
            item.seq = seq
            item.change_key = new_change_key()
            item.modified = self.now()
            self._emit(
                mbx,
                [
                    Event(seq, "ModifiedEvent", self.now(), parent_folder=folder.distinguished, item_id=item.item_id),
                    self._folder_event(mbx, folder, seq),
                ],
            )

    def modify(self, mbx: Mailbox, item: CalendarItem, change: Callable[[CalendarItem], object]) -> CalendarItem:
        """Change a single item or a series master all or nothing: ``change`` works on a copy, and only when it
        raises nothing does the item take the copy's fields and the change get recorded."""
        with self.lock:
            work = replace(item, extra=dict(item.extra), exceptions=dict(item.exceptions))
            change(work)
            for slot in CalendarItem.__slots__:
                if slot not in ("number", "mailbox", "folder", "change_key", "created", "seq"):
                    setattr(item, slot, getattr(work, slot))
            self.touch(mbx, item)
            return item

    def modify_occurrence(
        self, mbx: Mailbox, master: CalendarItem, index: int, change: Callable[[CalendarItem], object]
    ) -> CalendarItem:
        """Change one occurrence of a series, all or nothing: ``change`` works on the occurrence as it is now (its
        exception included); whatever then differs from the plain occurrence becomes the exception."""
        with self.lock:
            view = master.occurrence(index)
            plain = master.occurrence(index, plain=True)
            if view is None or plain is None:
                raise EwsError("ErrorItemNotFound", "The specified object was not found in the store.")
            work = replace(plain, kind="Occurrence")
            for name in EXCEPTION_FIELDS:
                setattr(work, name, getattr(view, name))
            change(work)
            overrides = {n: getattr(work, n) for n in EXCEPTION_FIELDS if getattr(work, n) != getattr(plain, n)}
            self.change_occurrence(mbx, master, index, overrides)
            result = master.occurrence(index)
            assert result is not None
            return result

    def change_occurrence(self, mbx: Mailbox, master: CalendarItem, index: int, overrides: dict[str, object]) -> None:
        with self.lock:
            # ``overrides`` is the whole exception: every field that differs from the series.
            master.exceptions[index] = OccurrenceChange(dict(overrides), new_change_key(), self.now())
            self.touch(mbx, master)

    def delete_occurrence(self, mbx: Mailbox, master: CalendarItem, index: int) -> None:
        with self.lock:
            master.deleted = master.deleted | {index}
            master.exceptions.pop(index, None)
            self.touch(mbx, master)

    def remove(self, mbx: Mailbox, item: CalendarItem, mode: str) -> CalendarItem | None:
        """Delete an item the way ``mode`` says; returns the item where it now lives, if anywhere."""
        if mode not in DELETE_MODES:
            raise EwsError("ErrorInvalidRequest", f"DeleteType '{mode}' is not one of {', '.join(DELETE_MODES)}.")
        with self.lock:
            if mode == "HardDelete" or (mode == "SoftDelete" and not self.version.soft_delete_moves):
                folder = mbx.folders[item.folder]
                seq = mbx.next_seq()
                del folder.items[item.number]
                folder.tombstones[item.number] = seq
                self._emit(
                    mbx,
                    [
                        Event(
                            seq, "DeletedEvent", self.now(), parent_folder=folder.distinguished, item_id=item.item_id
                        ),
                        self._folder_event(mbx, folder, seq),
                    ],
                )
                return None
            target = DELETED_ITEMS if mode == "MoveToDeletedItems" else RECOVERABLE_DELETIONS
            return self.move(mbx, item, target)

    def move(self, mbx: Mailbox, item: CalendarItem, target: str) -> CalendarItem:
        """Move an item to another folder; like Exchange, the moved item gets a new id."""
        if target not in mbx.folders:
            raise EwsError("ErrorFolderNotFound", f"The folder '{target}' does not exist.")
        with self.lock:
            source = mbx.folders[item.folder]
            dest = mbx.folders[target]
            seq = mbx.next_seq()
            del source.items[item.number]
            source.tombstones[item.number] = seq
            moved = replace(
                item,
                number=mbx.allocate_number(),
                folder=target,
                change_key=new_change_key(),
                seq=seq,
                exceptions=dict(item.exceptions),
                deleted=item.deleted,
            )
            dest.items[moved.number] = moved
            dest.tombstones.pop(moved.number, None)
            events = [
                Event(
                    seq,
                    "MovedEvent",
                    self.now(),
                    parent_folder=dest.distinguished,
                    item_id=moved.item_id,
                    old_item_id=item.item_id,
                    old_parent_folder=source.distinguished,
                ),
                self._folder_event(mbx, source, seq),
            ]
            if dest.parent is not None:
                events.append(self._folder_event(mbx, dest, seq))
            self._emit(mbx, events)
            return moved

    # --- meetings across mailboxes -----------------------------------------------------------

    def propagate_meeting(self, organizer: Mailbox, item: CalendarItem, *, cancelled: bool = False) -> None:
        """Give attendees that live in this organisation their copy of a meeting (or its cancellation)."""
        with self.lock:
            for attendee in [*item.required, *item.optional]:
                mbx = self.mailboxes.get(attendee.email.lower())
                if mbx is None or mbx is organizer:
                    continue
                copy = next((i for i in mbx.calendar.items.values() if i.uid == item.uid), None)
                if cancelled:
                    if copy is not None and not copy.is_cancelled:
                        copy.is_cancelled = True
                        copy.subject = f"Canceled: {item.subject or ''}".strip()
                        copy.fb_status = "Free"
                        self.touch(mbx, copy)
                    continue
                fields = _meeting_fields(item)
                if copy is None:
                    copy = self.new_item(mbx, uid=item.uid, my_response="NoResponseReceived", **fields)
                    copy.fb_status = "Tentative"
                    self.insert(mbx, copy)
                else:
                    for name, value in fields.items():
                        setattr(copy, name, value)
                    self.touch(mbx, copy)

    # --- sync and subscriptions --------------------------------------------------------------

    def on_subscribe(self, listener: Callable[[Subscription], None]) -> None:
        """Call ``listener(subscription)`` for every new subscription (push delivery starts on it)."""
        self._subscribe_listeners.append(listener)

    def add_subscription(self, subscription: Subscription) -> None:
        with self.lock:
            self.subscriptions[subscription.id] = subscription
        for listener in self._subscribe_listeners:
            listener(subscription)

    def subscription(self, subscription_id: str, req: object | None = None) -> Subscription:
        """A live subscription by id; pull subscriptions not read within their timeout have expired."""
        found = self.subscriptions.get(subscription_id)
        if found is not None and found.kind == "pull" and found.state == "active":
            idle = self.clock.seconds() - found.last_activity
            if idle > found.timeout * 60:
                self.end_subscription(found, "dead")
        if found is None or found.state in ("dead", "unsubscribed"):
            raise EwsError("ErrorSubscriptionNotFound", "The specified subscription was not found.")
        return found

    def end_subscription(self, subscription: Subscription, state: str) -> None:
        with self.lock:
            subscription.state = state  # type: ignore[assignment]
            subscription.wakeup.set()

    def expire_sync_states(self, mbx: Mailbox) -> None:
        with self.lock:
            mbx.sync_generation += 1

    def expire_watermarks(self, mbx: Mailbox) -> None:
        """Every watermark handed out so far becomes invalid (new ones start after this point)."""
        with self.lock:
            self.journals[mbx.guid].expire(mbx.next_seq())


def _meeting_fields(item: CalendarItem) -> dict[str, Any]:
    return {
        "subject": item.subject,
        "body": item.body,
        "location": item.location,
        "start": item.start,
        "end": item.end,
        "start_tz": item.start_tz,
        "end_tz": item.end_tz,
        "is_all_day": item.is_all_day,
        "organizer": item.organizer,
        "sequence": item.sequence,
        "sensitivity": item.sensitivity,
        "required": tuple(Attendee(a.name, a.email, a.response) for a in item.required),
        "optional": tuple(Attendee(a.name, a.email, a.response) for a in item.optional),
        "recurrence": item.recurrence,
        "exceptions": dict(item.exceptions),
        "deleted": item.deleted,
    }

"""Event subscriptions (push, pull, streaming): which mailbox and folders they watch, which event types,
and how far their subscriber has read the mailbox journal.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from typing import Literal

from ..journal import Event

ALL_EVENT_TYPES = (
    "CopiedEvent",
    "CreatedEvent",
    "DeletedEvent",
    "ModifiedEvent",
    "MovedEvent",
    "NewMailEvent",
    "FreeBusyChangedEvent",
)

SubscriptionKind = Literal["push", "pull", "streaming"]


_ID_PREFIX = b"\x10\x00"
_ID_BYTES = 42


def new_subscription_id() -> str:
    # Real ids are long base64 strings; keep that shape so clients do not assume GUIDs.
    return base64.b64encode(_ID_PREFIX + secrets.token_bytes(_ID_BYTES - len(_ID_PREFIX))).decode()


def is_well_formed(subscription_id: str) -> bool:
    """Whether ``subscription_id`` has the shape of an id this server issues (known or not)."""
    try:
        raw = base64.b64decode(subscription_id.encode(), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return False
    return len(raw) == _ID_BYTES and raw.startswith(_ID_PREFIX)


@dataclass
class Subscription:
    id: str
    kind: SubscriptionKind
    mailbox: uuid.UUID
    address: str
    folders: frozenset[str]  # distinguished folder names; empty with all_folders
    all_folders: bool
    event_types: frozenset[str]
    cursor: int  # last journal seq the subscriber has been given
    created: float  # emulated seconds
    url: str | None = None
    status_frequency: int = 30  # minutes (push)
    timeout: int = 30  # minutes (pull): unread for longer than this, the subscription expires
    last_activity: float = 0.0  # emulated seconds of the last delivery or GetEvents
    state: Literal["active", "retrying", "dead", "unsubscribed"] = "active"
    deliveries: int = 0
    failures: int = 0
    wakeup: threading.Event = field(default_factory=threading.Event)

    def matches(self, event: Event) -> bool:
        if event.kind not in self.event_types:
            return False
        if self.all_folders:
            return True
        return (
            event.parent_folder in self.folders
            or (event.old_parent_folder is not None and event.old_parent_folder in self.folders)
            or (event.folder is not None and event.folder in self.folders)
        )

"""Each mailbox's event journal: what changed, in order, as subscriptions report it, and the watermarks
that let a subscriber resume from any point of it (for about 30 days, as on Exchange).
"""

from __future__ import annotations

import base64
import binascii
import struct
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta

from .errors import EwsError

WATERMARK_LIFETIME = timedelta(days=30)
_WM_MAGIC = b"CSW1"


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    kind: str  # CreatedEvent, ModifiedEvent, DeletedEvent, MovedEvent, CopiedEvent, NewMailEvent
    time: datetime
    parent_folder: str  # distinguished name of the folder holding the item (or the folder's parent)
    item_id: str | None = None  # None for a folder event
    folder: str | None = None  # the folder itself, for a folder event
    old_item_id: str | None = None
    old_parent_folder: str | None = None
    unread_count: int | None = None


def encode_watermark(mailbox: uuid.UUID, seq: int) -> str:
    return base64.b64encode(_WM_MAGIC + mailbox.bytes + struct.pack(">Q", seq)).decode()


def decode_watermark(value: str) -> tuple[uuid.UUID, int]:
    try:
        raw = base64.b64decode(value.strip().encode(), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise EwsError("ErrorInvalidWatermark", "The watermark is invalid.") from exc
    if len(raw) != 28 or not raw.startswith(_WM_MAGIC):
        raise EwsError("ErrorInvalidWatermark", "The watermark is invalid.")
    return uuid.UUID(bytes=raw[4:20]), struct.unpack(">Q", raw[20:])[0]


class Journal:
    """Events of one mailbox, oldest first. Events older than the watermark lifetime are dropped."""

    def __init__(self) -> None:
        self.events: deque[Event] = deque()
        self.floor = 0  # watermarks below this sequence number are no longer valid

    def append(self, event: Event) -> None:
        self.events.append(event)

    def prune(self, now: datetime) -> None:
        while self.events and now - self.events[0].time > WATERMARK_LIFETIME:
            self.floor = self.events.popleft().seq

    def expire(self, up_to_seq: int) -> None:
        """Forget everything up to ``up_to_seq`` (a fault injection: watermarks before it become invalid)."""
        while self.events and self.events[0].seq <= up_to_seq:
            self.events.popleft()
        self.floor = max(self.floor, up_to_seq)

    def check(self, seq: int, current: int, now: datetime) -> None:
        self.prune(now)
        if seq < self.floor or seq > current:
            raise EwsError("ErrorInvalidWatermark", "The watermark is invalid or has expired.")

    def after(self, seq: int) -> list[Event]:
        if not self.events or self.events[-1].seq <= seq:
            return []
        # Events are few per subscriber cursor in practice; scan from the newest end.
        out: list[Event] = []
        for event in reversed(self.events):
            if event.seq <= seq:
                break
            out.append(event)
        out.reverse()
        return out

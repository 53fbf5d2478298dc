"""The listener's interface to the protocols: what its front doors need from each one, so that the listener
itself imports no source. A protocol wing (``sources/ews/notifications.py``, ``sources/graph/notifications.py``)
implements :class:`PushReader`: it turns a request body into :class:`Notification` values, or refuses it with
:class:`NotificationRejected`, writes the answer the protocol expects, and recognises the protocol's validation
handshake (Graph checks a notification URL by sending a token it wants echoed).

Every body is at most :data:`MAX_BODY_BYTES`: the listener checks the declared and the read length before a
reader sees it, and readers check again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

MAX_BODY_BYTES = 256 * 1024  # real pushes are a few KB; Exchange sends at most 50 events per notification
Status = Literal["OK", "Unsubscribe"]  # keep the subscription, or end it


class NotificationRejected(Exception):
    """A body that is not a notification we can trust.

    ``reason`` says why (safe to log: it never quotes the body); ``status`` is the HTTP status to answer:
    400 (malformed, or not a notification), 413 (too large), 415 (the Content-Type is not the protocol's).
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Event:
    """One item or folder event of a notification."""

    kind: str  # CreatedEvent, ModifiedEvent, DeletedEvent, MovedEvent, CopiedEvent, NewMailEvent, FreeBusyChangedEvent
    watermark: str | None
    timestamp: datetime | None  # aware, UTC
    item_id: str | None  # ItemId/@Id; None for a folder event
    folder_id: str | None  # FolderId/@Id, for a folder event
    parent_folder_id: str | None
    old_item_id: str | None = None  # MovedEvent/CopiedEvent of an item
    old_parent_folder_id: str | None = None  # MovedEvent/CopiedEvent
    old_folder_id: str | None = None  # MovedEvent/CopiedEvent of a folder


@dataclass(frozen=True)
class Notification:
    """One ``m:Notification``: a subscription's events since ``previous_watermark``."""

    subscription_id: str
    previous_watermark: str | None
    more_events: bool
    events: tuple[Event, ...]  # item and folder events, in document order
    status_only: bool  # only StatusEvent(s): a heartbeat
    last_watermark: str | None  # watermark of the last event (StatusEvent included) that has one
    client_state: str | None = None  # Graph: the subscription's secret, sent back with every notification
    lifecycle: str | None = None  # Graph lifecycle notification: reauthorizationRequired, subscriptionRemoved, missed
    # Stored on its own when it is ours, whatever else its body holds (Graph puts notifications of several
    # subscriptions in one POST); False (EWS): a body is stored whole only if every notification in it is ours.
    independent: bool = False


@dataclass(frozen=True)
class Reply:
    """An answer to a push: body, media type and HTTP status."""

    body: bytes
    media_type: str
    status: int = 200


class PushReader(Protocol):
    """A protocol's reading of push bodies and writing of answers. ``door`` names its listener paths:
    ``/<door>/notifications/<secret>`` and, with ``lifecycle``, ``/<door>/lifecycle/<secret>``."""

    door: str
    lifecycle: bool  # whether the protocol also sends lifecycle notifications (Graph)

    def read(self, body: bytes, content_type: str | None) -> list[Notification]:
        """The notifications of a request body, in order; raises NotificationRejected."""

    def answer(self, status: Status) -> Reply:
        """The answer for a stored push (``OK``) or a refused one (``Unsubscribe``)."""

    def validation_token(self, query: Mapping[str, str]) -> str | None:
        """The token of a validation handshake in the request's query, to echo back as text; None otherwise."""

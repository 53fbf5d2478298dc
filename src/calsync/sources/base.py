"""The source interface: what the sync engine and the jobs need from Exchange, whatever the protocol.

Words (see DESIGN.md): a *mailbox* is an operator's Exchange mailbox, named by its address; a *sync state*
is the opaque cursor the source returns with each page of changes (EWS SyncFolderItems state, Graph
deltaLink); reading from it returns every change since. A *subscription* asks Exchange to notify a
callback URL about one mailbox's calendar.

A backend is a small subclass of :class:`Source` (one module each: ``ews.py``, later ``graph.py``); the
engine never imports a backend directly, it receives a ``Source``.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from calsync.calendar.model import Appointment


class Unreadable(Exception):
    """A value that decides where an appointment lies (start, end, all-day, zone, recurrence, a changed or
    deleted occurrence) was missing or could not be read. ``field`` names it as the server does
    (``Recurrence/EndDateRecurrence/EndDate``), ``raw`` is the text sent (None when missing)."""

    def __init__(self, field: str, raw: str | None, reason: str) -> None:
        super().__init__(f"{field}: {reason}" + ("" if raw is None else f" ({raw[:200]!r})"))
        self.field = field
        self.raw = raw
        self.reason = reason


@dataclass(frozen=True)
class UnreadableItem:
    """An item that was not stored because a value deciding its place could not be read (code
    ``unreadable_item``); the application keeps its last readable version, if any."""

    item_id: str
    field: str
    raw: str | None
    reason: str
    subject: str | None = None

    @classmethod
    def of(cls, item_id: str, problem: Unreadable, subject: str | None = None) -> UnreadableItem:
        return cls(item_id, problem.field, None if problem.raw is None else problem.raw[:500], problem.reason, subject)


@dataclass(frozen=True)
class ChangePage:
    """One page of changes (at most the batch size), and the sync state that covers it.

    ``upserts`` are created or changed items, fully read (for EWS: SyncFolderItems then GetItem);
    ``deletes`` are ids of items that left the calendar (deleted, or moved out of the folder);
    ``unreadable`` are changed items that could not be read and are not stored.
    ``done`` is true when the source says there are no more changes after ``sync_state``.
    """

    upserts: tuple[Appointment, ...]
    deletes: tuple[str, ...]
    sync_state: str
    done: bool
    requests: int = 0  # how many requests to Exchange this page cost (for cost accounting)
    unreadable: tuple[UnreadableItem, ...] = ()
    # The source started reading from scratch with this page (its cursor expired, or it moved its window): what
    # the pass does not see from here to the end is gone, as after a full sync.
    restart: bool = False


@dataclass(frozen=True)
class ItemsRead:
    """Items read again by id (:meth:`Source.read_items`): read well, gone, or still unreadable."""

    upserts: tuple[Appointment, ...] = ()
    gone: tuple[str, ...] = ()
    unreadable: tuple[UnreadableItem, ...] = ()


@dataclass(frozen=True)
class Subscription:
    """A subscription as the source made (or renewed) it. ``expires_at``: when Exchange ends it unless renewed
    (Graph); None: it lives until it falls silent or is ended (EWS push). ``client_state``: the secret the source
    gave Exchange to send back with every notification (Graph), checked by the listener."""

    subscription_id: str
    watermark: str | None
    expires_at: datetime | None = None
    client_state: str | None = None


@dataclass(frozen=True)
class MailboxCheck:
    """The answer to "is this address a mailbox the service account may use?"."""

    ok: bool
    code: str | None = None  # a catalogue code when not ok: mailbox_not_found, impersonation_denied, ...
    message: str | None = None
    display_name: str | None = None


class SourceError(Exception):
    """A failure talking to Exchange, classified.

    ``kind`` is ``transient`` (worth retrying: timeouts, resets, 5xx, server busy), ``permanent``
    (needs a person: bad credentials, no such mailbox, impersonation denied), ``sync_state_invalid``
    (start a full sync of the window) or ``watermark_invalid`` (subscribe afresh).
    ``code`` is a stable catalogue code; ``back_off`` the seconds Exchange asked us to wait, if it did.
    """

    def __init__(
        self,
        kind: Literal["transient", "permanent", "sync_state_invalid", "watermark_invalid"],
        code: str,
        message: str,
        *,
        back_off: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code
        self.message = message
        self.back_off = back_off


@dataclass
class SourceStats:
    requests: int = 0
    by_operation: dict[str, int] = field(default_factory=dict)


class Source(abc.ABC):
    """One way of reading and watching Exchange calendars.

    ``name`` is the source's name as operators carry it (``ews``, ``graph``). ``heartbeats``: whether its
    subscriptions send a heartbeat while idle (EWS push does, every StatusFrequency; Graph does not), so that
    silence means trouble. ``door``: the listener path its notifications arrive at
    (``/<door>/notifications/<secret>``)."""

    name: str = "source"
    heartbeats: bool = True
    door: str = "ews"

    @abc.abstractmethod
    def changes(self, mailbox: str, sync_state: str | None, batch_size: int) -> Iterator[ChangePage]:
        """Pages of changes since ``sync_state`` (None: everything, an initial sync), until one is ``done``.
        Raises SourceError."""

    @abc.abstractmethod
    def subscribe(
        self, mailbox: str, callback_url: str, status_frequency: int, watermark: str | None = None
    ) -> Subscription:
        """Ask Exchange to push calendar changes of ``mailbox`` to ``callback_url``. Raises SourceError."""

    @abc.abstractmethod
    def check_mailbox(self, mailbox: str) -> MailboxCheck:
        """Whether ``mailbox`` resolves to a mailbox the service account may act on. Never raises for
        the answer "no"; raises SourceError only when Exchange cannot be asked (transient)."""

    def renew(self, mailbox: str, subscription: Subscription) -> Subscription:
        """Extend a subscription that expires (see ``Subscription.expires_at``); SourceError when it cannot be
        (then the caller subscribes afresh). A source whose subscriptions do not expire never gets asked."""
        raise SourceError("permanent", "renew_not_supported", f"{self.name} subscriptions do not expire")

    def unsubscribe(self, mailbox: str, subscription_id: str) -> None:  # noqa: B027 - optional hook
        """End a subscription now. EWS push subscriptions cannot be ended by request (the listener answers
        Unsubscribe to their next notification), so the default does nothing."""

    def read_items(self, mailbox: str, item_ids: list[str]) -> ItemsRead:
        """Read these items again (those reported unreadable before). A source that cannot says so by
        reading nothing; raises SourceError."""
        return ItemsRead()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

"""What the emulated Exchange holds: mailboxes, their folders, calendar items and recurrence exceptions,
and the identifiers Exchange hands out for them (ItemId, ChangeKey, FolderId).

Items keep only what calendar semantics need as typed fields; any other writable property a client sets is
kept verbatim as XML (``extra``) and returned when asked for, as Exchange would.
"""

from __future__ import annotations

import base64
import binascii
import struct
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from itertools import count
from typing import Literal

from . import recurrence as rec
from . import timezones
from .errors import EwsError

# Folders every mailbox has. The calendar is where appointments live; the others receive what is deleted.
CALENDAR = "calendar"
DELETED_ITEMS = "deleteditems"
RECOVERABLE_DELETIONS = "recoverableitemsdeletions"
ROOT = "root"
MSG_FOLDER_ROOT = "msgfolderroot"
INBOX = "inbox"

FOLDER_LAYOUT: dict[str, tuple[str, str | None, str]] = {
    # distinguished id: (display name, parent, folder class); Exchange gives the roots no class and the
    # sync-issue subfolders plain "IPF"
    ROOT: ("", None, ""),
    MSG_FOLDER_ROOT: ("Top of Information Store", ROOT, ""),
    CALENDAR: ("Calendar", MSG_FOLDER_ROOT, "IPF.Appointment"),
    INBOX: ("Inbox", MSG_FOLDER_ROOT, "IPF.Note"),
    "sentitems": ("Sent Items", MSG_FOLDER_ROOT, "IPF.Note"),
    "drafts": ("Drafts", MSG_FOLDER_ROOT, "IPF.Note"),
    "outbox": ("Outbox", MSG_FOLDER_ROOT, "IPF.Note"),
    "junkemail": ("Junk Email", MSG_FOLDER_ROOT, "IPF.Note"),
    DELETED_ITEMS: ("Deleted Items", MSG_FOLDER_ROOT, "IPF.Note"),
    "contacts": ("Contacts", MSG_FOLDER_ROOT, "IPF.Contact"),
    "tasks": ("Tasks", MSG_FOLDER_ROOT, "IPF.Task"),
    "notes": ("Notes", MSG_FOLDER_ROOT, "IPF.StickyNote"),
    "journal": ("Journal", MSG_FOLDER_ROOT, "IPF.Journal"),
    "syncissues": ("Sync Issues", MSG_FOLDER_ROOT, "IPF.Note"),
    "conflicts": ("Conflicts", "syncissues", "IPF"),
    "localfailures": ("Local Failures", "syncissues", "IPF"),
    "serverfailures": ("Server Failures", "syncissues", "IPF"),
    "recoverableitemsroot": ("Recoverable Items", ROOT, ""),
    RECOVERABLE_DELETIONS: ("Deletions", "recoverableitemsroot", ""),
    "recoverableitemsversions": ("Versions", "recoverableitemsroot", ""),
    "recoverableitemspurges": ("Purges", "recoverableitemsroot", ""),
}
# The element a folder of each class is written as.
FOLDER_ELEMENT = {"IPF.Appointment": "CalendarFolder", "IPF.Contact": "ContactsFolder", "IPF.Task": "TasksFolder"}

_ID_MAGIC = b"CSX1"
_CK_MAGIC = b"\x0f\x00\x00\x00"
_change_counter = count(1)

ItemKind = Literal["Single", "RecurringMaster", "Occurrence", "Exception"]


def new_change_key() -> str:
    return base64.b64encode(_CK_MAGIC + struct.pack(">Q", next(_change_counter))).decode()


@dataclass(frozen=True)
class ItemRef:
    """A decoded ItemId: which mailbox, which item, and for an occurrence its 1-based index."""

    mailbox: uuid.UUID
    number: int
    index: int = 0

    def encode(self) -> str:
        raw = _ID_MAGIC + self.mailbox.bytes + struct.pack(">QI", self.number, self.index)
        return base64.b64encode(raw).decode()

    @classmethod
    def decode(cls, item_id: str) -> ItemRef:
        try:
            raw = base64.b64decode(item_id.encode(), validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
            raise EwsError("ErrorInvalidIdMalformed", "Id is malformed.") from exc
        if len(raw) != 32 or not raw.startswith(_ID_MAGIC):
            raise EwsError("ErrorInvalidIdMalformed", "Id is malformed.")
        number, index = struct.unpack(">QI", raw[20:])
        return cls(uuid.UUID(bytes=raw[4:20]), number, index)


def rest_id(item_id: str) -> str:
    """An ItemId as Exchange Online's REST API (Microsoft Graph) writes it: URL-safe base64, '-' for '+' and '_'
    for '/'. The same item has the same identity in both protocols; only the alphabet differs."""
    return item_id.replace("+", "-").replace("/", "_")


def ews_id(any_id: str) -> str:
    """An ItemId from its REST (URL-safe) form; an id already in EWS form is returned unchanged."""
    return any_id.replace("-", "+").replace("_", "/")


def folder_id(mailbox: uuid.UUID, distinguished: str) -> str:
    raw = b"CSF1" + mailbox.bytes + distinguished.encode()
    return base64.b64encode(raw).decode()


def decode_folder_id(value: str) -> tuple[uuid.UUID, str]:
    try:
        raw = base64.b64decode(value.encode(), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise EwsError("ErrorInvalidIdMalformed", "Id is malformed.") from exc
    if len(raw) < 21 or not raw.startswith(b"CSF1"):
        raise EwsError("ErrorInvalidIdMalformed", "Id is malformed.")
    return uuid.UUID(bytes=raw[4:20]), raw[20:].decode(errors="replace")


@dataclass(slots=True)
class Person:
    name: str
    email: str


@dataclass(slots=True)
class Attendee:
    name: str
    email: str
    response: str = "Unknown"  # Unknown, Organizer, Tentative, Accept, Decline, NoResponseReceived
    last_response: datetime | None = None


@dataclass(slots=True)
class Recurrence:
    pattern: rec.Pattern
    range: rec.Range


# Exchange keeps at most this many characters of a subject and drops the rest.
SUBJECT_MAX = 255

# Fields an occurrence may override in an exception.
EXCEPTION_FIELDS = (
    "subject",
    "location",
    "body",
    "start",
    "end",
    "is_all_day",
    "fb_status",
    "categories",
    "sensitivity",
    "required",
    "optional",
    "is_cancelled",
    "reminder_minutes",
    "reminder_is_set",
)


@dataclass(slots=True)
class OccurrenceChange:
    """A modified occurrence (an exception): the fields that differ from the master."""

    overrides: dict[str, object]
    change_key: str
    modified: datetime


@dataclass(slots=True)
class CalendarItem:
    number: int
    mailbox: uuid.UUID
    folder: str
    uid: str
    change_key: str
    created: datetime
    modified: datetime
    start: datetime
    end: datetime
    start_tz: str = timezones.UTC_ID
    end_tz: str = timezones.UTC_ID
    subject: str | None = None
    body: tuple[str, str] | None = None  # (BodyType, text)
    location: str | None = None
    categories: tuple[str, ...] = ()
    sensitivity: str = "Normal"
    importance: str = "Normal"
    fb_status: str = "Busy"
    reminder_is_set: bool = True
    reminder_minutes: int = 15
    is_all_day: bool = False
    is_cancelled: bool = False
    organizer: Person | None = None
    # Immutable containers: the empty ones are shared, which keeps a million items small.
    required: tuple[Attendee, ...] = ()
    optional: tuple[Attendee, ...] = ()
    resources: tuple[Attendee, ...] = ()
    my_response: str = "Organizer"
    meeting_request_was_sent: bool = False
    is_response_requested: bool | None = None  # None: never set (Exchange then says true for meetings)
    allow_new_time_proposal: bool = True
    conference_type: int = 0  # 0 NetMeeting, 1 NetShow, 2 Chat
    culture: str = "en-US"
    sequence: int = 0
    recurrence: Recurrence | None = None
    exceptions: dict[int, OccurrenceChange] = field(default_factory=dict)
    deleted: frozenset[int] = frozenset()
    extra: dict[str, bytes] = field(default_factory=dict)
    seq: int = 0  # mailbox change sequence number of the last change (drives SyncFolderItems)
    # Set on views of one occurrence of a series:
    kind: ItemKind = "Single"
    index: int = 0
    original_start: datetime | None = None

    @property
    def item_id(self) -> str:
        return ItemRef(self.mailbox, self.number, self.index).encode()

    @property
    def is_meeting(self) -> bool:
        return bool(self.required or self.optional or self.resources)

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    def series_kind(self) -> ItemKind:
        return "RecurringMaster" if self.recurrence else "Single"

    # --- recurrence ----------------------------------------------------------------------------

    def local_start(self) -> datetime:
        return self.start.astimezone(timezones.zone(self.start_tz)).replace(tzinfo=None)

    def _expand_args(self) -> tuple[rec.Pattern, rec.Range, datetime, timedelta, object]:
        assert self.recurrence is not None
        return (
            self.recurrence.pattern,
            self.recurrence.range,
            self.local_start(),
            self.duration,
            timezones.zone(self.start_tz),
        )

    def occurrence(self, index: int, *, plain: bool = False) -> CalendarItem | None:
        """The occurrence with this index as an item of its own (None if out of range or deleted);
        ``plain`` leaves out the changes of an exception."""
        if self.recurrence is None or index in self.deleted:
            return None
        pattern, rng, local, duration, tz = self._expand_args()
        occ = rec.occurrence_by_index(pattern, rng, local, duration, tz, index)  # type: ignore[arg-type]
        return None if occ is None else self._view(occ, apply_exception=not plain)

    def original_start_at(self, index: int) -> datetime | None:
        """When the occurrence with this index starts unmodified, deleted or not (None if out of range)."""
        if self.recurrence is None:
            return None
        pattern, rng, local, duration, tz = self._expand_args()
        occ = rec.occurrence_by_index(pattern, rng, local, duration, tz, index)  # type: ignore[arg-type]
        return None if occ is None else occ.original_start

    def occurrences(self, start: datetime, end: datetime) -> list[CalendarItem]:
        """Occurrences overlapping [start, end), exceptions at their modified time, deleted ones left out."""
        if self.recurrence is None:
            return []
        pattern, rng, local, duration, tz = self._expand_args()
        # An exception may have moved far from its original slot: look at all exceptions explicitly.
        views: dict[int, CalendarItem] = {}
        for occ in rec.expand(pattern, rng, local, duration, tz, start - timedelta(days=1), end + timedelta(days=1)):  # type: ignore[arg-type]
            if occ.index not in self.deleted and occ.index not in self.exceptions:
                views[occ.index] = self._view(occ)
        for index in self.exceptions:
            if index not in self.deleted:
                view = self.occurrence(index)
                if view is not None:
                    views[index] = view
        return [v for _, v in sorted(views.items()) if v.start < end and v.end > start]

    def first_last(self) -> tuple[CalendarItem | None, CalendarItem | None]:
        if self.recurrence is None:
            return None, None
        pattern, rng, local, duration, tz = self._expand_args()
        first, last = rec.first_and_last(pattern, rng, local, duration, tz)  # type: ignore[arg-type]
        return self._view(first), (self._view(last) if last is not None else None)

    def _view(self, occ: rec.Occurrence, apply_exception: bool = True) -> CalendarItem:
        end = occ.end
        if self.is_all_day:
            # All-day occurrences are whole local days, however long a day is across a clock change.
            tz = timezones.zone(self.start_tz)
            days = (self.end.astimezone(tz).date() - self.start.astimezone(tz).date()).days
            end = datetime.combine(occ.start.astimezone(tz).date() + timedelta(days=days), time(), tz).astimezone(UTC)
        view = replace(
            self,
            start=occ.start,
            end=end,
            kind="Occurrence",
            index=occ.index,
            original_start=occ.original_start,
            recurrence=None,
            exceptions={},
            deleted=frozenset(),
        )
        change = self.exceptions.get(occ.index) if apply_exception else None
        if change is not None:
            for name, value in change.overrides.items():
                setattr(view, name, value)
            view.kind = "Exception"
            view.change_key = change.change_key
            view.modified = change.modified
        return view


def in_view(item: CalendarItem, start: datetime, end: datetime) -> bool:
    """Exchange's calendar view rule: the item starts before the view ends and ends at or after the view starts
    (so an item ending exactly at the view's start is in it); a zero-length item at the view's start counts too."""
    return (item.start < end and item.end >= start) or item.start == item.end == start


def calendar_view(items: Iterable[CalendarItem], start: datetime, end: datetime) -> list[CalendarItem]:
    """Single items and occurrences of series in the view [start, end), exceptions at their new time, deleted
    occurrences absent, in time order: what EWS's CalendarView and Graph's calendarView both list."""
    found: list[CalendarItem] = []
    for item in items:
        # occurrences() keeps to an overlap of [start, end); look a day earlier for those ending exactly at start.
        candidates = [item] if item.recurrence is None else item.occurrences(start - timedelta(days=1), end)
        found.extend(c for c in candidates if in_view(c, start, end))
    found.sort(key=lambda i: (i.start, i.end, i.number, i.index))
    return found


@dataclass(slots=True)
class Folder:
    distinguished: str
    display_name: str
    parent: str | None
    folder_class: str
    change_key: str = field(default_factory=new_change_key)
    items: dict[int, CalendarItem] = field(default_factory=dict)
    tombstones: dict[int, int] = field(default_factory=dict)  # item number -> seq of its removal


@dataclass
class Mailbox:
    address: str
    display_name: str
    guid: uuid.UUID = field(default_factory=uuid.uuid4)
    folders: dict[str, Folder] = field(default_factory=dict)
    seq: int = 0  # last change sequence number
    sync_generation: int = 0  # bumped to invalidate every outstanding sync state
    next_number: int = 1
    # False: Graph cannot reach it (on premises, no Exchange Online licence): MailboxNotEnabledForRESTAPI
    graph_enabled: bool = True

    def __post_init__(self) -> None:
        if not self.folders:
            for name, (display, parent, cls) in FOLDER_LAYOUT.items():
                self.folders[name] = Folder(name, display, parent, cls)

    @property
    def calendar(self) -> Folder:
        return self.folders[CALENDAR]

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def allocate_number(self) -> int:
        n = self.next_number
        self.next_number += 1
        return n

    def find(self, number: int) -> CalendarItem | None:
        for f in self.folders.values():
            item = f.items.get(number)
            if item is not None:
                return item
        return None

    def folder_id(self, name: str) -> str:
        return folder_id(self.guid, name)


def utcnow() -> datetime:
    return datetime.now(UTC)

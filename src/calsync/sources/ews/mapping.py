"""An EWS calendar item (a single item or a series master) as the application's Appointment.

What decides the item's place comes from calsync's own reading of the XML
(:class:`~calsync.sources.ews.reading.ItemTimes`); the rest (subject, body, people, categories, flags) from
exchangelib's item. Times are aware UTC datetimes; ``start_tz``/``end_tz`` are zone ids as
:mod:`calsync.sources.ews.timezones` names them. An all-day item runs from local midnight of its first day to
local midnight after its last day (exclusive end), which is what Exchange stores.

A series keeps Exchange's pattern and range, its modified occurrences as overrides (subject, location and
cancelled only where they differ from the series, else None) and its deleted occurrences as their original
UTC starts. Each modified or deleted occurrence must name one occurrence of the series: by its original start
as the series lists it, else as the fetched exception says it (OriginalStart, RecurrenceId), else the one
occurrence on the same local day (a server that gives the day at midnight). One that names none makes the
item :class:`~calsync.sources.base.Unreadable`: an override the calendar would silently drop, or a deleted
occurrence that would stay, is a wrong calendar.

A series' ``series_end`` is the end of its last occurrence (Exchange's LastOccurrence, else computed from the
pattern; the later of that and any moved exception; None for a series without end), so the engine can apply the
past window without expanding. ``extra["body_type"]`` is ``Text``
or ``HTML``: the body is kept as Exchange gave it. ``extra["item_type"]`` is ``Single`` or ``RecurringMaster``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from exchangelib.properties import HTMLBody

from calsync.calendar.model import Appointment, Attendee, ShowAs
from calsync.sources.occurrences import Changed, Deleted, place

from .reading import ItemTimes, OccurrenceRef

__all__ = ["EXCEPTION_FIELDS", "ITEM_FIELDS", "to_appointment"]

log = logging.getLogger(__name__)

# What is asked for of a single item or a series master, and of an exception (exchangelib field names). The
# fields that decide the calendar are read by calsync itself from the same answer.
ITEM_FIELDS = (
    *("subject", "body", "sensitivity", "categories", "last_modified_time", "uid", "start", "end", "is_all_day"),
    *("legacy_free_busy_status", "location", "is_cancelled", "type", "organizer", "required_attendees"),
    *("optional_attendees", "recurrence", "first_occurrence", "last_occurrence", "modified_occurrences"),
    *("deleted_occurrences", "_start_timezone", "_end_timezone"),
)
EXCEPTION_FIELDS = (
    *("subject", "location", "is_cancelled", "start", "end", "original_start", "is_all_day"),
    *("_start_timezone", "_end_timezone"),
)

_RESPONSES = {
    "Accept": "accepted",
    "Decline": "declined",
    "Tentative": "tentative",
    "Organizer": "organizer",
    "NoResponseReceived": "not_responded",
    "Unknown": "unknown",
}
_SHOW_AS: dict[str, ShowAs] = {
    "Free": "free",
    "Tentative": "tentative",
    "Busy": "busy",
    "OOF": "oof",
    "WorkingElsewhere": "working_elsewhere",
}

Exceptions = Mapping[str, tuple[Any, ItemTimes]]  # occurrence item id -> (exchangelib item, what calsync read)


def _attendee(att: Any, optional: bool) -> Attendee | None:
    mailbox = getattr(att, "mailbox", None)
    email = getattr(mailbox, "email_address", None)
    if not email:
        return None
    return Attendee(
        email=email,
        name=getattr(mailbox, "name", None),
        response=_RESPONSES.get(getattr(att, "response_type", None) or "Unknown", "unknown"),
        optional=optional,
    )


def to_appointment(item: Any, times: ItemTimes, exceptions: Exceptions | None = None) -> Appointment:
    """The Appointment for an exchangelib CalendarItem and what calsync read of it. ``exceptions`` are the
    series' modified occurrences as fetched (for their subject, location and cancelled flag). Raises
    Unreadable when a modified or deleted occurrence names no occurrence of the series."""
    if times.last_modified_raw is not None:
        log.warning("item %s: LastModifiedTime %r could not be read; left empty", item.id, times.last_modified_raw)
    organizer = item.organizer
    attendees = [_attendee(a, False) for a in item.required_attendees or ()]
    attendees += [_attendee(a, True) for a in item.optional_attendees or ()]
    appointment = Appointment(
        item_id=item.id,
        change_key=item.changekey,
        subject=item.subject,
        start=times.start,
        end=times.end,
        start_tz=times.start_tz,
        end_tz=times.end_tz,
        all_day=times.all_day,
        location=item.location,
        body=None if item.body is None else str(item.body),
        organizer_email=getattr(organizer, "email_address", None),
        organizer_name=getattr(organizer, "name", None),
        attendees=tuple(a for a in attendees if a is not None),
        status="cancelled" if item.is_cancelled else "confirmed",
        private=item.sensitivity in ("Private", "Confidential"),
        show_as=_SHOW_AS.get(item.legacy_free_busy_status or "", "unknown"),
        categories=tuple(item.categories or ()),
        uid=item.uid,
        recurrence=times.recurrence,
        last_modified=times.last_modified,
        extra={
            "item_type": "RecurringMaster" if times.recurrence is not None else "Single",
            "body_type": "HTML" if isinstance(item.body, HTMLBody) else "Text",
        },
    )
    if times.recurrence is None:
        return appointment
    return _with_occurrences(appointment, item, times, exceptions or {})


def _with_occurrences(app: Appointment, master: Any, times: ItemTimes, exceptions: Exceptions) -> Appointment:
    changed = [_changed(master, ref, exceptions.get(ref.item_id or "")) for ref in times.modified]
    deleted = [Deleted([original], "DeletedOccurrences/DeletedOccurrence/Start") for original in times.deleted]
    return place(app, changed, deleted, times.last.end if times.last is not None else None)


def _changed(master: Any, ref: OccurrenceRef, fetched: tuple[Any, ItemTimes] | None) -> Changed:
    """A modified occurrence as the master lists it, with what the fetched exception says (its original start
    as the exception gives it, then as the master does; its subject, location and cancelled flag)."""
    occ, occ_times = fetched if fetched is not None else (None, None)
    start, end = (occ_times.start, occ_times.end) if occ_times is not None else (ref.start, ref.end)

    def differs(name: str) -> Any:
        if occ is None:
            return None
        value = getattr(occ, name, None)
        return None if value == getattr(master, name, None) else value

    cancelled = differs("is_cancelled")
    return Changed(
        candidates=[ref.original_start, occ_times.original_start if occ_times is not None else None],
        start=start,
        end=end,
        subject=differs("subject"),
        location=differs("location"),
        cancelled=None if cancelled is None else bool(cancelled),
        field="ModifiedOccurrences/Occurrence/OriginalStart",
    )

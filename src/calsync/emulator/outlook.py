"""Changes made "as an Outlook user would", and the ground truth of a calendar.

The control API and the Python API both come here. Appointments are described by plain dictionaries
(JSON-friendly); every change goes through :class:`~calsync.emulator.exchange.Exchange`, so it produces the
same events and sync changes as the same change made over EWS.

An appointment description::

    {"subject": "Standup", "start": "2026-12-01T09:00:00", "end": "2026-12-01T09:15:00",
     "timezone": "W. Europe Standard Time",          # Windows id or IANA name; times are local to it
     "all_day": false, "location": "Room 1", "body": "text", "categories": ["Team"],
     "private": false, "show_as": "Busy",
     "attendees": [{"email": "b@example.com", "name": "B", "optional": false, "response": "Accept"}],
     "recurrence": {"pattern": "Weekly", "interval": 1, "days": ["Monday"], "first_day_of_week": "Monday",
                    "day_of_month": null, "index": null, "month": null,
                    "range": "NoEnd" | "EndDate" | "Numbered", "end_date": "2027-06-30", "count": 10}}

Times with an offset or ``Z`` are taken as given; without, they are local to ``timezone`` (UTC if none).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from . import recurrence as rec
from . import timezones
from .errors import EwsError
from .ews.itemxml import FREE_BUSY, RESPONSES, settle
from .exchange import Exchange
from .model import SUBJECT_MAX, Attendee, CalendarItem, ItemRef, Mailbox, Recurrence, ews_id


class SpecError(ValueError):
    """An appointment description the emulator cannot accept; the message says what is wrong."""


def _tz_id(value: Any) -> str:
    if value in (None, ""):
        return timezones.UTC_ID
    try:
        tz_id = timezones.windows_id(str(value))
    except ValueError as exc:
        raise SpecError(f"timezone: '{value}' is not a Windows or IANA time zone name") from exc
    return tz_id


def _when(value: Any, tz_id: str, name: str) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError as exc:
            raise SpecError(f"{name}: '{value}' is not an ISO 8601 date-time") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezones.zone(tz_id))
    return parsed.astimezone(UTC).replace(microsecond=0)  # Exchange keeps whole seconds


def _recurrence(spec: dict[str, Any], start: datetime, tz_id: str) -> Recurrence:
    local_day = start.astimezone(timezones.zone(tz_id)).date()
    try:
        pattern = rec.Pattern(
            kind=str(spec.get("pattern", "")),
            interval=int(spec.get("interval", 1)),
            days_of_week=tuple(spec.get("days") or ()),
            first_day_of_week=str(spec.get("first_day_of_week", "Sunday")),
            day_of_month=spec.get("day_of_month"),
            day_of_week_index=spec.get("index"),
            month=spec.get("month"),
        )
        kind = str(spec.get("range", "NoEnd"))
        end_date = date.fromisoformat(spec["end_date"]) if spec.get("end_date") else None
        rng = rec.Range(kind, local_day, end_date=end_date, count=spec.get("count"))
        rec.validate(pattern, rng)
    except (rec.RecurrenceError, ValueError, TypeError) as exc:
        raise SpecError(f"recurrence: {exc}") from exc
    return Recurrence(pattern, rng)


def _apply(item: CalendarItem, spec: dict[str, Any], *, creating: bool) -> None:
    known = {
        "subject",
        "start",
        "end",
        "timezone",
        "all_day",
        "location",
        "body",
        "categories",
        "private",
        "show_as",
        "attendees",
        "recurrence",
        "sensitivity",
    }
    unknown = set(spec) - known
    if unknown:
        raise SpecError(f"unknown field(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(known))}")
    if "timezone" in spec:
        item.start_tz = item.end_tz = _tz_id(spec["timezone"])
    if "subject" in spec:
        item.subject = None if spec["subject"] is None else str(spec["subject"])[:SUBJECT_MAX]
    if "location" in spec:
        item.location = spec["location"]
    if "body" in spec:
        item.body = None if spec["body"] is None else ("Text", str(spec["body"]))
    if "categories" in spec:
        item.categories = tuple(str(c) for c in spec["categories"] or ())
    if "private" in spec:
        item.sensitivity = "Private" if spec["private"] else "Normal"
    if "sensitivity" in spec:
        if spec["sensitivity"] not in ("Normal", "Personal", "Private", "Confidential"):
            raise SpecError("sensitivity: allowed values are Normal, Personal, Private, Confidential")
        item.sensitivity = spec["sensitivity"]
    if "show_as" in spec:
        if spec["show_as"] not in FREE_BUSY:
            raise SpecError(f"show_as: allowed values are {', '.join(FREE_BUSY)}")
        item.fb_status = spec["show_as"]
    if "all_day" in spec:
        item.is_all_day = bool(spec["all_day"])
    tz_id = item.start_tz
    duration = item.end - item.start  # moving the start alone keeps the length, as dragging in Outlook does
    if "start" in spec:
        if item.is_all_day and len(str(spec["start"])) == 10:
            item.start = datetime.combine(date.fromisoformat(str(spec["start"])), time(), timezones.zone(tz_id))
        else:
            item.start = _when(spec["start"], tz_id, "start")
    if "end" in spec:
        if item.is_all_day and len(str(spec["end"])) == 10:
            item.end = datetime.combine(date.fromisoformat(str(spec["end"])), time(), timezones.zone(tz_id))
        else:
            item.end = _when(spec["end"], tz_id, "end")
    elif "start" in spec:
        item.end = item.start + (timedelta(hours=1) if creating else duration)
    if "attendees" in spec:
        required: list[Attendee] = []
        optional: list[Attendee] = []
        for a in spec["attendees"] or ():
            if not isinstance(a, dict) or "@" not in str(a.get("email", "")):
                raise SpecError("attendees: each attendee needs an 'email' address")
            response = a.get("response", "NoResponseReceived")
            if response not in RESPONSES:
                raise SpecError(f"attendees: response must be one of {', '.join(RESPONSES)}")
            attendee = Attendee(str(a.get("name") or a["email"]), str(a["email"]), response)
            (optional if a.get("optional") else required).append(attendee)
        item.required, item.optional = tuple(required), tuple(optional)
    if "recurrence" in spec:
        item.recurrence = None if spec["recurrence"] is None else _recurrence(spec["recurrence"], item.start, tz_id)
        item.exceptions.clear()
        item.deleted = frozenset()
    try:
        settle(item, creating=creating, moved="start" in spec or "recurrence" in spec)
    except EwsError as exc:
        raise SpecError(exc.message) from exc


class Outlook:
    """One user's hands on their own calendar."""

    def __init__(self, exchange: Exchange, address: str) -> None:
        self.exchange = exchange
        try:
            self.mailbox: Mailbox = exchange.mailbox(address)
        except EwsError as exc:
            raise SpecError(f"no mailbox '{address}'") from exc

    def _item(self, item_id: str) -> CalendarItem:
        item_id = ews_id(item_id)  # paths carry ids in URL-safe base64
        try:
            item = self.exchange.resolve_item(self.mailbox, item_id)
        except EwsError as exc:
            raise SpecError(f"no item '{item_id}' in {self.mailbox.address}") from exc
        return item

    def create(self, spec: dict[str, Any], *, send_invitations: bool = True) -> CalendarItem:
        if "start" not in spec:
            raise SpecError("start: required")
        with self.exchange.lock:
            item = self.exchange.new_item(self.mailbox)
            _apply(item, spec, creating=True)
            item.meeting_request_was_sent = send_invitations and item.is_meeting
            return self.exchange.insert(self.mailbox, item, notify_attendees=item.meeting_request_was_sent)

    def update(self, item_id: str, spec: dict[str, Any]) -> CalendarItem:
        with self.exchange.lock:
            item = self._item(item_id)
            if item.kind in ("Occurrence", "Exception"):
                raise SpecError("use update_occurrence for one occurrence of a series")
            _apply(item, spec, creating=False)
            self.exchange.touch(self.mailbox, item)
            if item.is_meeting and item.my_response == "Organizer":
                item.sequence += 1
                self.exchange.propagate_meeting(self.mailbox, item)
            return item

    def update_occurrence(self, item_id: str, index: int, spec: dict[str, Any]) -> CalendarItem:
        with self.exchange.lock:
            master = self._item(item_id)
            if master.occurrence(index) is None:
                raise SpecError(f"series '{item_id}' has no occurrence {index}")
            return self.exchange.modify_occurrence(
                self.mailbox, master, index, lambda occ: _apply(occ, spec, creating=False)
            )

    def delete_occurrence(self, item_id: str, index: int) -> None:
        with self.exchange.lock:
            master = self._item(item_id)
            if master.occurrence(index) is None:
                raise SpecError(f"series '{item_id}' has no occurrence {index}")
            self.exchange.delete_occurrence(self.mailbox, master, index)

    def delete(self, item_id: str, mode: str = "MoveToDeletedItems", *, cancel: bool = True) -> None:
        with self.exchange.lock:
            item = self._item(item_id)
            if cancel and item.is_meeting and item.my_response == "Organizer":
                self.exchange.propagate_meeting(self.mailbox, item, cancelled=True)
            try:
                self.exchange.remove(self.mailbox, item, mode)
            except EwsError as exc:
                raise SpecError(exc.message) from exc

    def move(self, item_id: str, folder: str) -> CalendarItem:
        with self.exchange.lock:
            item = self._item(item_id)
            try:
                return self.exchange.move(self.mailbox, item, folder)
            except EwsError as exc:
                raise SpecError(exc.message) from exc

    def items(self) -> list[CalendarItem]:
        return list(self.mailbox.calendar.items.values())


def describe(item: CalendarItem) -> dict[str, Any]:
    """An occurrence or item as the ground truth reports it."""
    tz = timezones.zone(item.start_tz)
    master_id = ItemRef(item.mailbox, item.number).encode()
    out: dict[str, Any] = {
        "id": item.item_id,
        "series_id": master_id if item.kind in ("Occurrence", "Exception") else None,
        "uid": item.uid,
        "index": item.index or None,
        "kind": item.kind if item.index else item.series_kind(),
        "subject": item.subject,
        "start": item.start.isoformat(),
        "end": item.end.isoformat(),
        "timezone": item.start_tz,
        "all_day": item.is_all_day,
        "location": item.location,
        "body": item.body[1] if item.body else None,
        "cancelled": item.is_cancelled,
        "sensitivity": item.sensitivity,
        "show_as": item.fb_status,
        "categories": list(item.categories),
        "organizer": item.organizer.email if item.organizer else None,
        "attendees": [
            {"email": a.email, "name": a.name, "response": a.response, "optional": False} for a in item.required
        ]
        + [{"email": a.email, "name": a.name, "response": a.response, "optional": True} for a in item.optional],
        "change_key": item.change_key,
    }
    if item.is_all_day:
        out["start_date"] = item.start.astimezone(tz).date().isoformat()
        out["end_date"] = item.end.astimezone(timezones.zone(item.end_tz)).date().isoformat()
    return out


def truth(exchange: Exchange, address: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Every occurrence in the calendar overlapping [start, end), series expanded, sorted by start."""
    with exchange.lock:
        mbx = exchange.mailbox(address)
        out: list[CalendarItem] = []
        for item in mbx.calendar.items.values():
            if item.recurrence is not None:
                out.extend(item.occurrences(start, end))
            elif item.start < end and item.end > start:
                out.append(item)
        out.sort(key=lambda i: (i.start, i.number, i.index))
        return [describe(i) for i in out]

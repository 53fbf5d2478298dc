"""The application calendar in the database: appointments stored by (operator, Exchange item id), written
by upsert so that replaying a batch gives the same calendar, and read back for a time range.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from calsync.calendar.model import Appointment, Attendee, OccurrenceOverride, Recurrence

from .tables import AppointmentRow, utcnow


def _iso(value: datetime) -> str:
    return value.isoformat()


def _recurrence_json(rec: Recurrence | None) -> dict[str, Any] | None:
    if rec is None:
        return None
    data = dataclasses.asdict(rec)
    data["days_of_week"] = list(rec.days_of_week)
    for key in ("start_date", "end_date"):
        if data[key] is not None:
            data[key] = data[key].isoformat()
    return data


def _recurrence(data: dict[str, Any] | None) -> Recurrence | None:
    if not data:
        return None
    values = dict(data)
    values["days_of_week"] = tuple(values.get("days_of_week") or ())
    for key in ("start_date", "end_date"):
        if values.get(key):
            values[key] = date.fromisoformat(values[key])
    return Recurrence(**values)


def _override_json(o: OccurrenceOverride) -> dict[str, Any]:
    return {
        "original_start": _iso(o.original_start),
        "start": _iso(o.start),
        "end": _iso(o.end),
        "subject": o.subject,
        "location": o.location,
        "cancelled": o.cancelled,
    }


def _override(data: dict[str, Any]) -> OccurrenceOverride:
    return OccurrenceOverride(
        datetime.fromisoformat(data["original_start"]),
        datetime.fromisoformat(data["start"]),
        datetime.fromisoformat(data["end"]),
        data.get("subject"),
        data.get("location"),
        data.get("cancelled"),
    )


def span(appointment: Appointment) -> tuple[datetime, datetime | None]:
    """The earliest start and latest end any occurrence can have (None: the series never ends, as far as the
    source could say: ``Appointment.ends_at``)."""
    start = min([appointment.start, *(o.start for o in appointment.overrides)])
    return start, appointment.ends_at


def _apply(row: AppointmentRow, a: Appointment) -> None:
    row.change_key, row.uid, row.subject, row.body, row.location = (a.change_key, a.uid, a.subject, a.body, a.location)
    row.start_utc, row.end_utc, row.start_tz, row.end_tz, row.all_day = a.start, a.end, a.start_tz, a.end_tz, a.all_day
    row.organizer_email, row.organizer_name = a.organizer_email, a.organizer_name
    row.attendees = [dataclasses.asdict(x) for x in a.attendees]
    row.status, row.private, row.show_as, row.categories = a.status, a.private, a.show_as, list(a.categories)
    row.recurrence = _recurrence_json(a.recurrence)
    row.overrides = [_override_json(o) for o in a.overrides]
    row.deleted_occurrences = [_iso(d) for d in a.deleted_occurrences]
    row.range_start, row.range_end = span(a)
    row.last_modified = a.last_modified
    row.synced_at = utcnow()


def to_appointment(row: AppointmentRow) -> Appointment:
    return Appointment(
        item_id=row.item_id,
        app_id=row.app_id,
        change_key=row.change_key,
        subject=row.subject,
        start=row.start_utc,
        end=row.end_utc,
        start_tz=row.start_tz,
        end_tz=row.end_tz,
        all_day=row.all_day,
        location=row.location,
        body=row.body,
        organizer_email=row.organizer_email,
        organizer_name=row.organizer_name,
        attendees=tuple(Attendee(**x) for x in row.attendees or ()),
        status=row.status,  # type: ignore[arg-type]
        private=row.private,
        show_as=row.show_as,  # type: ignore[arg-type]
        categories=tuple(row.categories or ()),
        uid=row.uid,
        recurrence=_recurrence(row.recurrence),
        overrides=tuple(_override(o) for o in row.overrides or ()),
        deleted_occurrences=tuple(datetime.fromisoformat(d) for d in row.deleted_occurrences or ()),
        last_modified=row.last_modified,
        series_end=row.range_end if row.recurrence is not None else None,
    )


def existing_ids(session: Session, operator_id: int, item_ids: Iterable[str]) -> set[str]:
    ids = list(item_ids)
    if not ids:
        return set()
    found = session.scalars(
        select(AppointmentRow.item_id).where(AppointmentRow.operator_id == operator_id, AppointmentRow.item_id.in_(ids))
    )
    return set(found)


def upsert(
    session: Session, operator_id: int, appointments: Iterable[Appointment], *, adopt_since: datetime | None = None
) -> int:
    """Insert or replace appointments by item id; returns how many were written.

    ``adopt_since`` (during a move to another source): an appointment whose item id is not stored takes over the
    stored row with the same UID that has not been seen since then (its old source's id), so the row keeps its
    ``app_id`` and the application sees the same appointment, not a delete and a create."""
    items = {a.item_id: a for a in appointments}  # the last version of an item in a batch wins
    if not items:
        return 0
    rows = {
        r.item_id: r
        for r in session.scalars(
            select(AppointmentRow).where(
                AppointmentRow.operator_id == operator_id, AppointmentRow.item_id.in_(list(items))
            )
        )
    }
    if adopt_since is not None:
        rows |= _adoptable(session, operator_id, [a for i, a in items.items() if i not in rows], adopt_since)
    for item_id, appointment in items.items():
        row = rows.get(item_id)
        if row is None:
            row = AppointmentRow(operator_id=operator_id, item_id=item_id)
            session.add(row)
        row.item_id = item_id
        _apply(row, appointment)
    return len(items)


def _adoptable(
    session: Session, operator_id: int, newcomers: list[Appointment], not_seen_since: datetime
) -> dict[str, AppointmentRow]:
    """Stored rows not seen since ``not_seen_since`` that newcomers name by UID, keyed by the newcomer's item id;
    only where a UID names exactly one newcomer and one such row (anything ambiguous is stored anew)."""
    uids = {a.uid for a in newcomers if a.uid}
    if not uids:
        return {}
    candidates: dict[str, list[AppointmentRow]] = {}
    for row in session.scalars(
        select(AppointmentRow).where(
            AppointmentRow.operator_id == operator_id,
            AppointmentRow.uid.in_(list(uids)),
            AppointmentRow.synced_at < not_seen_since,
        )
    ):
        candidates.setdefault(row.uid or "", []).append(row)
    per_uid = Counter(a.uid for a in newcomers)
    return {
        a.item_id: candidates[a.uid][0]
        for a in newcomers
        if a.uid and per_uid[a.uid] == 1 and len(candidates.get(a.uid, ())) == 1
    }


def delete_items(session: Session, operator_id: int, item_ids: Iterable[str]) -> int:
    ids = list(item_ids)
    if not ids:
        return 0
    result = session.execute(
        delete(AppointmentRow).where(AppointmentRow.operator_id == operator_id, AppointmentRow.item_id.in_(ids))
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def keep(session: Session, operator_id: int, item_ids: Iterable[str]) -> None:
    """These items were seen but could not be read: keep their last readable version through a full sync's
    sweep (it removes only what a full sync did not see)."""
    ids = list(item_ids)
    if ids:
        session.execute(
            update(AppointmentRow)
            .where(AppointmentRow.operator_id == operator_id, AppointmentRow.item_id.in_(ids))
            .values(synced_at=utcnow())
        )


def sweep(session: Session, operator_id: int, not_seen_since: datetime) -> int:
    """Delete appointments a full sync did not see (they are gone from Exchange)."""
    result = session.execute(
        delete(AppointmentRow).where(
            AppointmentRow.operator_id == operator_id, AppointmentRow.synced_at < not_seen_since
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def in_range(session: Session, operator_id: int, start: datetime, end: datetime) -> list[Appointment]:
    """Appointments that may have an occurrence in [start, end) (expand them to know exactly)."""
    rows = session.scalars(
        select(AppointmentRow)
        .where(
            AppointmentRow.operator_id == operator_id,
            AppointmentRow.range_start < end,
            or_(AppointmentRow.range_end.is_(None), AppointmentRow.range_end >= start),
        )
        .order_by(AppointmentRow.range_start)
    )
    return [to_appointment(r) for r in rows]


def all_for(session: Session, operator_id: int) -> list[Appointment]:
    rows = session.scalars(
        select(AppointmentRow).where(AppointmentRow.operator_id == operator_id).order_by(AppointmentRow.range_start)
    )
    return [to_appointment(r) for r in rows]


def count(session: Session, operator_id: int) -> int:
    from sqlalchemy import func

    return int(
        session.scalar(
            select(func.count()).select_from(AppointmentRow).where(AppointmentRow.operator_id == operator_id)
        )
        or 0
    )

"""Items a sync pass could not read, per operator: listed until they read well (see ``UnreadableItemRow``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from . import calendar
from .tables import UnreadableItemRow, utcnow


class Problem(Protocol):
    """What a source says of an item it could not read (``calsync.sources.base.UnreadableItem`` is one)."""

    @property
    def item_id(self) -> str: ...
    @property
    def field(self) -> str: ...
    @property
    def raw(self) -> str | None: ...
    @property
    def reason(self) -> str: ...
    @property
    def subject(self) -> str | None: ...


@dataclass(frozen=True)
class Listed:
    """A listed item, as stored."""

    item_id: str
    field: str
    raw: str | None
    reason: str
    subject: str | None = None


def settle(session: Session, operator_id: int, settled: Iterable[str], problems: Iterable[Problem]) -> None:
    """After reading items: those read well or gone leave the list; unreadable ones join it, and their last
    readable version stays in the calendar (through a full sync's sweep too)."""
    clear(session, operator_id, settled)
    problems = list(problems)
    if problems:
        record(session, operator_id, problems)
        calendar.keep(session, operator_id, [p.item_id for p in problems])


def record(session: Session, operator_id: int, items: Iterable[Problem], *, now: datetime | None = None) -> None:
    """List these items (again): what could not be read, as it was last tried."""
    now = now or utcnow()
    for item in items:
        row = session.get(UnreadableItemRow, (operator_id, item.item_id))
        if row is None:
            row = UnreadableItemRow(operator_id=operator_id, item_id=item.item_id, first_seen_at=now)
            session.add(row)
        row.subject, row.field, row.raw, row.reason, row.last_tried_at = (
            item.subject,
            item.field,
            item.raw,
            item.reason,
            now,
        )


def clear(session: Session, operator_id: int, item_ids: Iterable[str]) -> int:
    """These items read well, or are gone: no longer listed."""
    ids = list(item_ids)
    if not ids:
        return 0
    result = session.execute(
        delete(UnreadableItemRow).where(
            UnreadableItemRow.operator_id == operator_id, UnreadableItemRow.item_id.in_(ids)
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def listed(session: Session, operator_id: int) -> list[Listed]:
    """The operator's unreadable items, oldest first."""
    rows = session.scalars(
        select(UnreadableItemRow)
        .where(UnreadableItemRow.operator_id == operator_id)
        .order_by(UnreadableItemRow.first_seen_at, UnreadableItemRow.item_id)
    )
    return [Listed(r.item_id, r.field, r.raw, r.reason, r.subject) for r in rows]


def last_tries(session: Session, operator_id: int) -> dict[str, datetime]:
    """Each listed item's id and when it was last read."""
    rows = session.execute(
        select(UnreadableItemRow.item_id, UnreadableItemRow.last_tried_at).where(
            UnreadableItemRow.operator_id == operator_id
        )
    )
    return {item_id: tried for item_id, tried in rows}


def tried(session: Session, operator_id: int, item_ids: Iterable[str], *, now: datetime | None = None) -> None:
    ids = list(item_ids)
    if ids:
        session.execute(
            update(UnreadableItemRow)
            .where(UnreadableItemRow.operator_id == operator_id, UnreadableItemRow.item_id.in_(ids))
            .values(last_tried_at=now or utcnow())
        )

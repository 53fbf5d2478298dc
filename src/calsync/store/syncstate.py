"""The per-mailbox sync state: the cursor every sync pass starts from."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from .tables import SyncStateRow, utcnow


def get(session: Session, operator_id: int) -> SyncStateRow:
    row = session.get(SyncStateRow, operator_id)
    if row is None:
        row = SyncStateRow(operator_id=operator_id)
        session.add(row)
        session.flush()
    return row


def save(session: Session, operator_id: int, state: str, *, now: datetime | None = None) -> None:
    row = get(session, operator_id)
    row.state = state
    row.updated_at = now or utcnow()


def start_full(session: Session, operator_id: int, *, now: datetime | None = None) -> datetime:
    """Begin a full sync of the window: forget the cursor; remember when, to sweep what is not seen again."""
    row = get(session, operator_id)
    row.state = None
    if row.full_sync_started_at is None:
        row.full_sync_started_at = now or utcnow()
    return row.full_sync_started_at


def complete(session: Session, operator_id: int) -> datetime | None:
    """A pass reached the end of the changes: returns the full-sync start to sweep from, if one was running (a
    move to another source ends with it)."""
    row = get(session, operator_id)
    started = row.full_sync_started_at
    row.full_sync_started_at = None
    row.initial_done = True
    if started is not None:
        row.moving_from = None
    return started


def start_move(session: Session, operator_id: int, from_source: str, *, now: datetime | None = None) -> None:
    """The operator moves from ``from_source`` to another source: a full read with the new one follows, which
    adopts the stored appointments by UID (see :func:`adopting_since`) and sweeps what it does not find."""
    start_full(session, operator_id, now=now)
    get(session, operator_id).moving_from = from_source


def adopting_since(session: Session, operator_id: int) -> datetime | None:
    """During a move: the start of its full read (rows not seen since then may be adopted); else None."""
    row = get(session, operator_id)
    return row.full_sync_started_at if row.moving_from else None


def moving(session: Session) -> dict[int, str]:
    """Operators in the middle of a move: operator id -> the source they move from."""
    query = select(SyncStateRow.operator_id, SyncStateRow.moving_from).where(SyncStateRow.moving_from.is_not(None))
    return {operator_id: str(source) for operator_id, source in session.execute(query)}

"""The per-mailbox sync state: the cursor every sync pass starts from."""

from __future__ import annotations

from datetime import datetime

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
    """A pass reached the end of the changes: returns the full-sync start to sweep from, if one was running."""
    row = get(session, operator_id)
    started = row.full_sync_started_at
    row.full_sync_started_at = None
    row.initial_done = True
    return started

"""Whether the listener URL comes back to this deployment's listener: the latest check per URL."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from .tables import ListenerCheckRow, utcnow


def record(session: Session, url: str, ok: bool, detail: str, *, now: datetime | None = None) -> ListenerCheckRow:
    row = latest(session, url)
    if row is None:
        row = ListenerCheckRow(url=url)
        session.add(row)
    row.ok, row.detail, row.checked_at = ok, detail, now or utcnow()
    return row


def latest(session: Session, url: str) -> ListenerCheckRow | None:
    return session.scalar(select(ListenerCheckRow).where(ListenerCheckRow.url == url).limit(1))

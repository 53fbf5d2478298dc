"""The audit log: every change made through the admin API, with who made it and when."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .tables import AuditRow

MAX_LISTING = 1000


def record(session: Session, actor: str, action: str, target: str | None, detail: dict[str, Any] | None = None) -> None:
    session.add(
        AuditRow(
            actor=actor[:256], action=action[:64], target=None if target is None else target[:512], detail=detail or {}
        )
    )


def listing(session: Session, limit: int = 100, action: str | None = None) -> list[AuditRow]:
    """The newest entries first."""
    query = select(AuditRow).order_by(AuditRow.id.desc()).limit(max(1, min(limit, MAX_LISTING)))
    if action:
        query = query.where(AuditRow.action == action)
    return list(session.scalars(query))

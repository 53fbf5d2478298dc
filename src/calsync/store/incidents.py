"""Failure streaks and incidents per operator, and the claiming of the e-mails about them.

A row is a *streak*: consecutive failures of one operator, from the first failure until a success ends it.
It becomes an *incident* when ``opened_at`` is set (the policy lives in ``calsync.alerts.tracker``). The
e-mails are claimed here: a node sets ``notified_at`` (or ``recovery_notified_at``) in a transaction before it
sends, and on PostgreSQL skips rows another node has locked, so two nodes never send the same notice; a send
that fails gives its claim back (:func:`unclaim`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from .tables import IncidentRow, Operator


@dataclass(frozen=True)
class Notice:
    """What an e-mail about one incident needs, read out of the session."""

    id: int
    email: str
    code: str
    kind: str
    origin: str
    message: str
    first_failure_at: datetime
    opened_at: datetime
    last_failure_at: datetime
    failures: int
    resolved_at: datetime | None


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def lock_operator(session: Session, operator_id: int) -> bool:
    """Serialise streak updates for one operator across nodes (PostgreSQL row lock; SQLite writers are
    serialised already). False if the operator no longer exists."""
    query = select(Operator.id).where(Operator.id == operator_id)
    if _postgres(session):
        query = query.with_for_update()
    return session.scalar(query) is not None


def open_streaks(session: Session, operator_id: int) -> list[IncidentRow]:
    """The operator's unresolved streaks, oldest first (one per scope at most)."""
    return list(
        session.scalars(
            select(IncidentRow)
            .where(IncidentRow.operator_id == operator_id, IncidentRow.resolved_at.is_(None))
            .order_by(IncidentRow.id)
        )
    )


def open_by_operator(session: Session) -> dict[int, list[str]]:
    """Codes of the unresolved streaks of every operator that has one."""
    out: dict[int, list[str]] = {}
    rows = session.execute(
        select(IncidentRow.operator_id, IncidentRow.code).where(IncidentRow.resolved_at.is_(None))
    ).all()
    for operator_id, code in rows:
        out.setdefault(int(operator_id), []).append(str(code))
    return out


def start(
    session: Session, operator_id: int, code: str, kind: str, origin: str, message: str, now: datetime
) -> IncidentRow:
    row = IncidentRow(
        operator_id=operator_id,
        code=code,
        kind=kind,
        origin=origin,
        message=message,
        first_failure_at=now,
        last_failure_at=now,
        failures=1,
    )
    session.add(row)
    session.flush()
    return row


def forget(session: Session, row: IncidentRow) -> None:
    """Drop a streak that ended before it became an incident: nobody was told, nothing to keep."""
    session.execute(delete(IncidentRow).where(IncidentRow.id == row.id))


def open_incident(session: Session, operator_id: int) -> IncidentRow | None:
    """The operator's oldest open incident (a streak that was opened and is not resolved), if any."""
    return session.scalar(
        select(IncidentRow)
        .where(
            IncidentRow.operator_id == operator_id,
            IncidentRow.opened_at.is_not(None),
            IncidentRow.resolved_at.is_(None),
        )
        .order_by(IncidentRow.opened_at)
        .limit(1)
    )


def history(session: Session, operator_id: int | None = None) -> list[IncidentRow]:
    query = select(IncidentRow).order_by(IncidentRow.id)
    if operator_id is not None:
        query = query.where(IncidentRow.operator_id == operator_id)
    return list(session.scalars(query))


def failures(
    session: Session,
    *,
    email: str | None = None,
    code: str | None = None,
    state: Literal["open", "resolved", "all"] = "all",
    limit: int = 100,
) -> list[tuple[IncidentRow, str]]:
    """Failure streaks with their operator's address, newest failure first, filtered."""
    query = select(IncidentRow, Operator.email).join(Operator, Operator.id == IncidentRow.operator_id)
    if email:
        query = query.where(Operator.email == email.strip().lower())
    if code:
        query = query.where(IncidentRow.code == code.strip().lower())
    if state == "open":
        query = query.where(IncidentRow.resolved_at.is_(None))
    elif state == "resolved":
        query = query.where(IncidentRow.resolved_at.is_not(None))
    query = query.order_by(IncidentRow.last_failure_at.desc(), IncidentRow.id.desc()).limit(limit)
    return [(row, address) for row, address in session.execute(query)]


# --- notices ---------------------------------------------------------------------------------------


NoticeKind = Literal["failure", "recovery"]


def claim(session: Session, which: NoticeKind, now: datetime, hold: timedelta) -> list[Notice]:
    """Claim every notice of this kind that is due, once the oldest of them has waited ``hold`` (so that
    incidents opening or resolving together go out together); [] while it has not, or when none is due.

    failure: opened, not resolved, not notified. recovery: notified, resolved, no recovery notice yet.
    (An incident resolved before its failure e-mail went out gets neither.)"""
    if which == "failure":
        stamp, column = IncidentRow.opened_at, IncidentRow.notified_at
        conditions = [
            IncidentRow.opened_at.is_not(None),
            IncidentRow.notified_at.is_(None),
            IncidentRow.resolved_at.is_(None),
        ]
    else:
        stamp, column = IncidentRow.resolved_at, IncidentRow.recovery_notified_at
        conditions = [
            IncidentRow.notified_at.is_not(None),
            IncidentRow.resolved_at.is_not(None),
            IncidentRow.recovery_notified_at.is_(None),
        ]
    query = (
        select(IncidentRow, Operator.email)
        .join(Operator, Operator.id == IncidentRow.operator_id)
        .where(*conditions)
        .order_by(stamp, IncidentRow.id)
    )
    if _postgres(session):
        query = query.with_for_update(skip_locked=True, of=IncidentRow)
    rows = session.execute(query).all()
    if not rows:
        return []
    oldest = getattr(rows[0][0], stamp.key)
    if oldest is not None and oldest > now - hold:
        return []
    ids = [row.id for row, _ in rows]
    session.execute(update(IncidentRow).where(IncidentRow.id.in_(ids)).values({column.key: now}))
    return [
        Notice(
            id=row.id,
            email=email,
            code=row.code,
            kind=row.kind,
            origin=row.origin,
            message=row.message,
            first_failure_at=row.first_failure_at,
            opened_at=row.opened_at or row.first_failure_at,
            last_failure_at=row.last_failure_at,
            failures=row.failures,
            resolved_at=row.resolved_at,
        )
        for row, email in rows
    ]


def unclaim(session: Session, which: NoticeKind, ids: Iterable[int]) -> None:
    """The e-mail could not be sent: the notices are due again."""
    column = "notified_at" if which == "failure" else "recovery_notified_at"
    session.execute(update(IncidentRow).where(IncidentRow.id.in_(list(ids))).values({column: None}))


def notified_since(session: Session, which: NoticeKind, since: datetime) -> int:
    """How many incidents had a notice of this kind sent after ``since`` (for storm detection)."""
    column = IncidentRow.notified_at if which == "failure" else IncidentRow.recovery_notified_at
    return int(session.scalar(select(func.count()).select_from(IncidentRow).where(column > since)) or 0)

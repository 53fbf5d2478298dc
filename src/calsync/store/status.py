"""What `calsync status` and the admin views show per operator, read in one go."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .tables import AppointmentRow, MailboxWork, NotificationRow, Operator, SubscriptionRow, SyncStateRow


@dataclass(frozen=True)
class OperatorStatus:
    email: str
    enabled: bool
    subscribed: bool
    last_heartbeat: datetime | None
    last_sync: datetime | None
    initial_sync_done: bool
    pending_notifications: int
    dirty: bool
    appointments: int
    last_error_code: str | None
    last_error_message: str | None
    last_error_at: datetime | None


def operator_statuses(session: Session) -> list[OperatorStatus]:
    pending = (
        select(NotificationRow.operator_id, func.count().label("n"))
        .where(NotificationRow.processed.is_(False))
        .group_by(NotificationRow.operator_id)
        .subquery()
    )
    stored = select(AppointmentRow.operator_id, func.count().label("n")).group_by(AppointmentRow.operator_id).subquery()
    rows = session.execute(
        select(Operator, SubscriptionRow, SyncStateRow, MailboxWork, pending.c.n, stored.c.n)
        .outerjoin(SubscriptionRow, SubscriptionRow.operator_id == Operator.id)
        .outerjoin(SyncStateRow, SyncStateRow.operator_id == Operator.id)
        .outerjoin(MailboxWork, MailboxWork.operator_id == Operator.id)
        .outerjoin(pending, pending.c.operator_id == Operator.id)
        .outerjoin(stored, stored.c.operator_id == Operator.id)
        .order_by(Operator.email)
    )
    out = []
    for op, sub, state, work, n_pending, n_stored in rows:
        out.append(
            OperatorStatus(
                email=op.email,
                enabled=op.sync_enabled,
                subscribed=sub is not None,
                last_heartbeat=None if sub is None else sub.last_heard_at,
                last_sync=op.last_sync_at,
                initial_sync_done=bool(state and state.initial_done),
                pending_notifications=int(n_pending or 0),
                dirty=bool(work and (work.dirty_gen > work.done_gen or work.full_sync)),
                appointments=int(n_stored or 0),
                last_error_code=op.last_error_code,
                last_error_message=op.last_error_message,
                last_error_at=op.last_error_at,
            )
        )
    return out

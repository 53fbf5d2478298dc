"""What `calsync status` and the admin views show per operator, read in one go."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .tables import (
    AppointmentRow,
    IncidentRow,
    MailboxWork,
    NotificationRow,
    Operator,
    SubscriptionRow,
    SyncStateRow,
)


@dataclass(frozen=True)
class OperatorStatus:
    email: str
    enabled: bool
    subscribed: bool
    last_heartbeat: datetime | None  # the last heartbeat (StatusEvent) that came; None: none yet
    last_sync: datetime | None
    initial_sync_done: bool
    pending_notifications: int
    dirty: bool
    appointments: int
    last_error_code: str | None
    last_error_message: str | None
    last_error_at: datetime | None
    incident_code: str | None = None  # the open incident's catalogue code (calsync.alerts.catalogue), if any
    incident_since: datetime | None = None  # when its failures began
    incident_message: str | None = None
    incident_kind: str | None = None  # transient | permanent (a permanent one waits for a person, not a retry)
    display_name: str | None = None
    subscription_frequency: int | None = None  # the subscription's StatusFrequency (minutes)
    dirty_since: datetime | None = None  # when the oldest change not yet synced was noticed (None: nothing waits)
    subscribed_at: datetime | None = None  # when the current subscription was made
    last_heard: datetime | None = None  # the last push (event or heartbeat) on it; None: not yet heard from
    source: str = "ews"  # the source the mailbox is read through (ews, graph)
    moving_from: str | None = None  # set while a move from that source is not complete
    subscription_expires: datetime | None = None  # Graph: when the subscription ends unless renewed


def operator_statuses(session: Session, email: str | None = None) -> list[OperatorStatus]:
    """Every operator's status (or just the one with this address), ordered by address."""
    return _statuses(session, email)


def notifications_since(session: Session, since: datetime) -> list[datetime]:
    """When each notification received since ``since`` arrived (for per-minute counts)."""
    return list(session.scalars(select(NotificationRow.received_at).where(NotificationRow.received_at >= since)))


def open_incident_count(session: Session) -> int:
    query = select(func.count()).select_from(IncidentRow)
    return int(session.scalar(query.where(IncidentRow.opened_at.is_not(None), IncidentRow.resolved_at.is_(None))) or 0)


def _statuses(session: Session, email: str | None) -> list[OperatorStatus]:
    pending = (
        select(NotificationRow.operator_id, func.count().label("n"))
        .where(NotificationRow.processed.is_(False))
        .group_by(NotificationRow.operator_id)
        .subquery()
    )
    stored = select(AppointmentRow.operator_id, func.count().label("n")).group_by(AppointmentRow.operator_id).subquery()
    open_incident = (
        select(IncidentRow.id)
        .where(
            IncidentRow.operator_id == Operator.id,
            IncidentRow.opened_at.is_not(None),
            IncidentRow.resolved_at.is_(None),
        )
        .order_by(IncidentRow.opened_at, IncidentRow.id)
        .limit(1)
        .correlate(Operator)
        .scalar_subquery()
    )
    query = (
        select(Operator, SubscriptionRow, SyncStateRow, MailboxWork, pending.c.n, stored.c.n, open_incident)
        .outerjoin(SubscriptionRow, SubscriptionRow.operator_id == Operator.id)
        .outerjoin(SyncStateRow, SyncStateRow.operator_id == Operator.id)
        .outerjoin(MailboxWork, MailboxWork.operator_id == Operator.id)
        .outerjoin(pending, pending.c.operator_id == Operator.id)
        .outerjoin(stored, stored.c.operator_id == Operator.id)
        .order_by(Operator.email)
    )
    if email is not None:
        query = query.where(Operator.email == email)
    rows = session.execute(query)
    out = []
    found = list(rows)
    incident_ids = [incident_id for *_, incident_id in found if incident_id is not None]
    opened = {row.id: row for row in session.scalars(select(IncidentRow).where(IncidentRow.id.in_(incident_ids)))}
    for op, sub, state, work, n_pending, n_stored, incident_id in found:
        incident = opened.get(incident_id) if incident_id is not None else None
        dirty = bool(work and (work.dirty_gen > work.done_gen or work.full_sync))
        out.append(
            OperatorStatus(
                email=op.email,
                enabled=op.sync_enabled,
                subscribed=sub is not None,
                last_heartbeat=None if sub is None else sub.last_heartbeat_at,
                last_sync=op.last_sync_at,
                initial_sync_done=bool(state and state.initial_done),
                pending_notifications=int(n_pending or 0),
                dirty=dirty,
                appointments=int(n_stored or 0),
                last_error_code=op.last_error_code,
                last_error_message=op.last_error_message,
                last_error_at=op.last_error_at,
                incident_code=None if incident is None else incident.code,
                incident_since=None if incident is None else incident.first_failure_at,
                incident_message=None if incident is None else incident.message,
                incident_kind=None if incident is None else incident.kind,
                display_name=op.display_name,
                subscription_frequency=None if sub is None else sub.status_frequency,
                dirty_since=work.dirty_since if dirty and work is not None else None,
                subscribed_at=None if sub is None else sub.created_at,
                last_heard=sub.last_heard_at if sub is not None and sub.heartbeats + sub.events > 0 else None,
                source=op.source,
                moving_from=None if state is None else state.moving_from,
                subscription_expires=None if sub is None else sub.expires_at,
            )
        )
    return out

"""The reads behind calsync's monitoring: what the Prometheus collector (``calsync.metrics``) shows at scrape
time, the latency start of a pass, and the trivial query ``/readyz`` asks the database.

Everything here only reads. The scrape-time read (:func:`snapshot`) is a handful of small queries over the
enabled operators, their subscriptions and their ``mailbox_work`` rows; the states (healthy or dying
subscription, running or retrying mailbox) are worked out in Python, so SQLite and PostgreSQL agree without
dialect-specific interval arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, literal, select
from sqlalchemy.orm import Session

from .tables import IncidentRow, MailboxWork, NotificationRow, Operator, SubscriptionRow, utcnow

SUBSCRIPTION_STATES = ("healthy", "dying", "missing")
DIRTY_STATES = ("waiting", "running", "retrying")


@dataclass(frozen=True)
class Snapshot:
    """The database's side of the metrics, read in one transaction."""

    operators_enabled: int
    subscriptions: dict[str, int] = field(default_factory=dict)  # by SUBSCRIPTION_STATES
    dirty_mailboxes: dict[str, int] = field(default_factory=dict)  # by DIRTY_STATES
    oldest_dirty_seconds: float = 0.0  # how long the longest-waiting mailbox that can sync has waited; 0: none
    failing_permanently: int = 0  # enabled operators with an open permanent incident (they wait for a person)
    notifications_pending: int = 0
    incidents_open: int = 0


def subscription_state(last_heard_at: datetime | None, status_frequency: int | None, now: datetime) -> str:
    """``healthy`` when heard from within its StatusFrequency, ``dying`` when silent for longer (it is
    recreated after twice that), ``missing`` when there is none."""
    if last_heard_at is None or status_frequency is None:
        return "missing"
    return "dying" if now - last_heard_at > timedelta(minutes=status_frequency) else "healthy"


def snapshot(session: Session, now: datetime | None = None) -> Snapshot:
    now = now or utcnow()
    enabled = Operator.sync_enabled.is_(True)
    subs = dict.fromkeys(SUBSCRIPTION_STATES, 0)
    operators_enabled = 0
    for last_heard_at, status_frequency in session.execute(
        select(SubscriptionRow.last_heard_at, SubscriptionRow.status_frequency)
        .select_from(Operator)
        .outerjoin(SubscriptionRow, SubscriptionRow.operator_id == Operator.id)
        .where(enabled)
    ):
        operators_enabled += 1
        subs[subscription_state(last_heard_at, status_frequency, now)] += 1
    # A mailbox that failed for a permanent reason (no such mailbox, access denied) cannot sync until a person acts:
    # it is counted apart and left out of the lag, which describes the mailboxes that can sync.
    stuck = set(
        session.scalars(
            select(IncidentRow.operator_id)
            .join(Operator, Operator.id == IncidentRow.operator_id)
            .where(enabled, IncidentRow.kind == "permanent", IncidentRow.resolved_at.is_(None))
        )
    )
    dirty = dict.fromkeys(DIRTY_STATES, 0)
    oldest: datetime | None = None
    for operator_id, lease_until, not_before, dirty_since in session.execute(
        select(MailboxWork.operator_id, MailboxWork.lease_until, MailboxWork.not_before, MailboxWork.dirty_since)
        .join(Operator, Operator.id == MailboxWork.operator_id)
        .where(enabled, (MailboxWork.dirty_gen > MailboxWork.done_gen) | MailboxWork.full_sync.is_(True))
    ):
        if lease_until is not None and lease_until > now:
            dirty["running"] += 1
        elif not_before is not None and not_before > now:
            dirty["retrying"] += 1
        else:
            dirty["waiting"] += 1
        if operator_id not in stuck and dirty_since is not None and (oldest is None or dirty_since < oldest):
            oldest = dirty_since
    pending = session.scalar(
        select(func.count()).select_from(NotificationRow).where(NotificationRow.processed.is_(False))
    )
    incidents = session.scalar(
        select(func.count())
        .select_from(IncidentRow)
        .where(IncidentRow.opened_at.is_not(None), IncidentRow.resolved_at.is_(None))
    )
    return Snapshot(
        operators_enabled=operators_enabled,
        subscriptions=subs,
        dirty_mailboxes=dirty,
        oldest_dirty_seconds=0.0 if oldest is None else max(0.0, (now - oldest).total_seconds()),
        notifications_pending=int(pending or 0),
        incidents_open=int(incidents or 0),
        failing_permanently=len(stuck),
    )


def oldest_pending_notification(session: Session, operator_id: int, up_to_id: int) -> datetime | None:
    """When the oldest unprocessed notification of the operator with an id up to ``up_to_id`` (those a claimed
    pass covers, :attr:`calsync.store.work.Claim.last_notification_id`) was received; None when there is none."""
    if up_to_id <= 0:
        return None
    value: datetime | None = session.scalar(
        select(func.min(NotificationRow.received_at)).where(
            NotificationRow.operator_id == operator_id,
            NotificationRow.processed.is_(False),
            NotificationRow.id <= up_to_id,
        )
    )
    return value


def ping(session: Session) -> None:
    """The trivial query of a readiness check (raises when the database does not answer)."""
    session.execute(select(literal(1)))

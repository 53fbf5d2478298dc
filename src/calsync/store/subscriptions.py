"""Exchange subscriptions we hold, one per operator: id, watermark, when we last heard from it."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from .tables import NotificationRow, Operator, SubscriptionRow, utcnow


def for_operator(session: Session, operator_id: int) -> SubscriptionRow | None:
    return session.scalar(select(SubscriptionRow).where(SubscriptionRow.operator_id == operator_id))


def save(
    session: Session,
    operator_id: int,
    subscription_id: str,
    watermark: str | None,
    status_frequency: int,
    callback_url: str,
    *,
    now: datetime | None = None,
) -> SubscriptionRow:
    """Record a (new) subscription for the operator, replacing the previous one."""
    now = now or utcnow()
    session.execute(delete(SubscriptionRow).where(SubscriptionRow.operator_id == operator_id))
    session.flush()
    row = SubscriptionRow(
        operator_id=operator_id,
        subscription_id=subscription_id,
        watermark=watermark,
        status_frequency=status_frequency,
        callback_url=callback_url,
        created_at=now,
        last_heard_at=now,
    )
    session.add(row)
    return row


def drop(session: Session, operator_id: int) -> bool:
    """Forget the operator's subscription; the listener then answers Unsubscribe to Exchange's next push."""
    result = session.execute(delete(SubscriptionRow).where(SubscriptionRow.operator_id == operator_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def with_operators(session: Session) -> list[tuple[Operator, SubscriptionRow | None]]:
    rows = session.execute(
        select(Operator, SubscriptionRow)
        .outerjoin(SubscriptionRow, SubscriptionRow.operator_id == Operator.id)
        .order_by(Operator.email)
    )
    return [(op, sub) for op, sub in rows]


def is_silent(sub: SubscriptionRow, now: datetime | None = None) -> bool:
    """Silent for twice its StatusFrequency: Exchange has given up on it (or never reaches us)."""
    return (now or utcnow()) - sub.last_heard_at > timedelta(minutes=2 * sub.status_frequency)


def any_heard(session: Session, source: str) -> bool:
    """Whether Exchange has ever reached us for this source: a subscription of one of its operators that had a
    push, or a notification still kept."""
    heard = (
        select(SubscriptionRow.id)
        .join(Operator, Operator.id == SubscriptionRow.operator_id)
        .where(Operator.source == source, SubscriptionRow.heartbeats + SubscriptionRow.events > 0)
        .limit(1)
    )
    if session.scalar(heard) is not None:
        return True
    kept = (
        select(NotificationRow.id)
        .join(Operator, Operator.id == NotificationRow.operator_id)
        .where(Operator.source == source)
        .limit(1)
    )
    return session.scalar(kept) is not None

"""Exchange subscriptions we hold, one per operator: id, watermark, when we last heard from it."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from . import work
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
    expires_at: datetime | None = None,
    client_state: str | None = None,
    source: str = "ews",
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
        expires_at=expires_at,
        client_state=client_state,
        source=source,
    )
    session.add(row)
    return row


def made(
    session: Session,
    *,
    operator_id: int,
    subscription_id: str,
    watermark: str | None,
    status_frequency: int,
    callback_url: str,
    expires_at: datetime | None = None,
    client_state: str | None = None,
    source: str = "ews",
) -> SubscriptionRow:
    """A new subscription replaces the operator's, and the mailbox is marked for a pass (its initial sync, or a
    catch-up after a gap). The mailbox's work row is locked first, in the order a sync pass locks rows."""
    work.mark_dirty(session, operator_id)
    return save(
        session,
        operator_id,
        subscription_id,
        watermark,
        status_frequency,
        callback_url,
        expires_at=expires_at,
        client_state=client_state,
        source=source,
    )


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


def renewed(session: Session, subscription_id: str, expires_at: datetime | None) -> None:
    """The subscription was extended (Graph) or reauthorized: its new end; any lifecycle event is dealt with."""
    row = session.scalar(select(SubscriptionRow).where(SubscriptionRow.subscription_id == subscription_id))
    if row is not None:
        row.expires_at, row.lifecycle_event = expires_at, None


def lifecycle(session: Session, subscription_id: str, event: str, *, now: datetime | None = None) -> int | None:
    """Exchange told us something about the subscription (Graph lifecycle notification: reauthorizationRequired,
    subscriptionRemoved, missed): remember it for ManagePushSubscriptions; it also counts as hearing from it.
    Returns the operator's id, or None for a subscription we do not hold."""
    row = session.scalar(select(SubscriptionRow).where(SubscriptionRow.subscription_id == subscription_id))
    if row is None:
        return None
    # "missed" asks only for a catch-up pass (the inbox marks the mailbox); a removal outranks a reauthorization.
    if event != "missed" and row.lifecycle_event != "subscriptionRemoved":
        row.lifecycle_event = event
    row.last_heard_at = now or utcnow()
    return row.operator_id

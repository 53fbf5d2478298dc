"""The listener's inbox: notifications recorded durably, with the mailbox marked dirty, in the same
transaction as the listener's answer depends on (invariant 2)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from . import work
from .tables import NotificationRow, Operator, SubscriptionRow, utcnow


@dataclass(frozen=True)
class InboxEvent:
    kind: str
    item_id: str | None
    watermark: str | None


@dataclass(frozen=True)
class Delivery:
    """What the listener learnt about a subscription id: who it belongs to and whether they are enabled."""

    operator_id: int
    email: str
    enabled: bool


def lookup(session: Session, subscription_id: str) -> Delivery | None:
    found = session.execute(
        select(SubscriptionRow.operator_id, Operator.email, Operator.sync_enabled)
        .join(Operator, Operator.id == SubscriptionRow.operator_id)
        .where(SubscriptionRow.subscription_id == subscription_id)
    ).first()
    return None if found is None else Delivery(found[0], found[1], bool(found[2]))


def record(
    session: Session,
    operator_id: int,
    subscription_id: str,
    events: Iterable[InboxEvent],
    watermark: str | None,
    *,
    now: datetime | None = None,
) -> int:
    """Store a notification's events (a heartbeat when there are none) and mark the mailbox dirty if any
    event may have changed the calendar. Returns the number of events stored."""
    now = now or utcnow()
    # Core statements, not ORM objects: this runs for every push, and each statement is a round trip.
    rows = [
        {
            "operator_id": operator_id,
            "subscription_id": subscription_id,
            "received_at": now,
            "kind": e.kind,
            "item_id": e.item_id,
            "watermark": e.watermark,
            "processed": False,
        }
        for e in events
    ]
    if rows:
        session.execute(insert(NotificationRow), rows)
    values: dict[str, object] = {"last_heard_at": now}
    if watermark:
        values["watermark"] = watermark
    if rows:
        values["events"] = SubscriptionRow.events + len(rows)
    else:
        values["heartbeats"] = SubscriptionRow.heartbeats + 1
    session.execute(update(SubscriptionRow).where(SubscriptionRow.subscription_id == subscription_id).values(**values))
    if rows:
        work.mark_dirty(session, operator_id, now=now)
    return len(rows)


def pending_count(session: Session, operator_id: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(NotificationRow)
            .where(NotificationRow.operator_id == operator_id, NotificationRow.processed.is_(False))
        )
        or 0
    )


def prune(session: Session, older_than: datetime) -> int:
    """Forget processed notifications older than ``older_than``."""
    result = session.execute(
        delete(NotificationRow).where(NotificationRow.processed.is_(True), NotificationRow.received_at < older_than)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]

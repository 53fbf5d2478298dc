"""The listener's inbox: notifications recorded durably, with the mailbox marked dirty, in the same
transaction as the listener's answer depends on (invariant 2).

Two ways to record a push. :func:`record` writes one push at once (its statements go through the ORM session,
so objects already loaded in that session see the change). For the listener's group commit, :func:`record`
with ``batch=`` only adds the push to a :class:`Batch`, and :meth:`Batch.write` then stores every push of the
group in the caller's transaction: on SQLite in three statements (the event rows, then one UPDATE per
subscription heard and one per mailbox made dirty, each an ``executemany`` in key order), on PostgreSQL in one
(data-modifying CTEs over arrays: one round trip, whatever the size of the group). :func:`lookup_many` answers
the subscription lookups of a whole group in one query.

Locks on PostgreSQL: a group locks the subscription and ``mailbox_work`` rows of its pushes until it commits.
Two transactions that lock two of the same rows in opposite orders (two nodes' groups with pushes for the same
two mailboxes at once, which Exchange, sending one push per subscription at a time, hardly ever causes; or the
reconciliation marking mailboxes dirty) deadlock, and PostgreSQL fails one of them after ``deadlock_timeout``;
the listener then stores that group's pushes again one by one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import BigInteger, Integer, Table, Text, bindparam, delete, func, insert, select, text, update
from sqlalchemy.orm import Session

from . import subscriptions, work
from .tables import MailboxWork, NotificationRow, Operator, SubscriptionRow, UtcDateTime, utcnow


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
    client_state: str | None = None  # Graph: what every notification of this subscription must carry


def lookup(session: Session, subscription_id: str) -> Delivery | None:
    found = session.execute(
        select(SubscriptionRow.operator_id, Operator.email, Operator.sync_enabled, SubscriptionRow.client_state)
        .join(Operator, Operator.id == SubscriptionRow.operator_id)
        .where(SubscriptionRow.subscription_id == subscription_id)
    ).first()
    return None if found is None else Delivery(found[0], found[1], bool(found[2]), found[3])


def lookup_many(session: Session, subscription_ids: Iterable[str]) -> dict[str, Delivery]:
    """:func:`lookup` for several subscription ids in one query: the ids we hold, each with its delivery.
    A Core query on the session's connection (cheaper; it does not flush the session's pending ORM changes)."""
    ids = sorted(set(subscription_ids))
    if not ids:
        return {}
    if len(ids) == 1:  # the usual case; an expanding IN costs more to render each time
        rows = session.connection().execute(_DELIVERY, {"b_id": ids[0]})
    else:
        rows = session.connection().execute(_DELIVERIES, {"b_ids": ids})
    return {sid: Delivery(op, email, bool(enabled), state) for sid, op, email, enabled, state in rows}


@dataclass
class _Heard:
    """What a group of pushes did to one subscription."""

    at: datetime
    events: int = 0
    heartbeats: int = 0
    watermark: str | None = None
    heartbeat_at: datetime | None = None  # the latest heartbeat (StatusEvent) among them


def _event_rows(
    operator_id: int, subscription_id: str, events: Iterable[InboxEvent], now: datetime
) -> list[dict[str, object]]:
    """The ``notifications`` rows of one push, for a Core insert."""
    return [
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


@dataclass
class Batch:
    """Pushes recorded with ``record(..., batch=)``, to be stored together by :meth:`write`.

    The end state is the one storing them one by one, in the order they were added, would give: every event row
    (ids in that order), each subscription's counts summed, its last non-empty watermark and latest
    ``last_heard_at``, each mailbox's ``dirty_gen`` bumped once per push that made it dirty.
    """

    now: datetime = field(default_factory=utcnow)
    rows: list[dict[str, Any]] = field(default_factory=list)
    heard: dict[str, _Heard] = field(default_factory=dict)
    dirty: dict[int, tuple[int, datetime]] = field(default_factory=dict)  # operator -> (pushes, first dirty at)

    def add(
        self,
        operator_id: int,
        subscription_id: str,
        events: Iterable[InboxEvent],
        watermark: str | None,
        now: datetime | None = None,
    ) -> int:
        now = now or self.now
        rows = _event_rows(operator_id, subscription_id, events, now)
        self.rows += rows
        heard = self.heard.setdefault(subscription_id, _Heard(now))
        heard.at = max(heard.at, now)
        if watermark:
            heard.watermark = watermark
        if rows:
            heard.events += len(rows)
            pushes, since = self.dirty.get(operator_id, (0, now))
            self.dirty[operator_id] = (pushes + 1, min(since, now))
        else:
            heard.heartbeats += 1
            heard.heartbeat_at = max(heard.heartbeat_at or now, now)
        return len(rows)

    def write(self, session: Session) -> None:
        """Store everything added, in ``session``'s transaction (Core statements on its connection: ORM objects
        already loaded in that session are not refreshed). PostgreSQL: one statement (one round trip)."""
        if not self.heard:
            return
        connection = session.connection()
        heard = sorted(self.heard.items())
        dirty = sorted(self.dirty.items())
        if connection.dialect.name == "postgresql":
            columns = ("operator_id", "subscription_id", "received_at", "kind", "item_id", "watermark")
            params: dict[str, Any] = {f"n_{c}": [r[c] for r in self.rows] for c in columns}
            params |= {
                "s_sid": [sid for sid, _ in heard],
                "s_at": [h.at for _, h in heard],
                "s_hbat": [h.heartbeat_at for _, h in heard],
                "s_wm": [h.watermark for _, h in heard],
                "s_ev": [h.events for _, h in heard],
                "s_hb": [h.heartbeats for _, h in heard],
                "w_op": [op for op, _ in dirty],
                "w_n": [n for _, (n, _) in dirty],
                "w_since": [since for _, (_, since) in dirty],
            }
            connection.execute(_PG_WRITE, params)
            return
        if self.rows:
            connection.execute(_INSERT, self.rows)
        connection.execute(
            _HEARD,
            [
                {
                    "b_sid": sid,
                    "b_at": h.at,
                    "b_hbat": h.heartbeat_at,
                    "b_wm": h.watermark,
                    "b_ev": h.events,
                    "b_hb": h.heartbeats,
                }
                for sid, h in heard
            ],
        )
        if dirty:
            connection.execute(_DIRTY, [{"b_op": op, "b_n": n, "b_since": since} for op, (n, since) in dirty])


_NOTIFICATIONS = cast(Table, NotificationRow.__table__)
_SUBSCRIPTIONS = cast(Table, SubscriptionRow.__table__)
_MAILBOX_WORK = cast(Table, MailboxWork.__table__)
_OPERATORS = cast(Table, Operator.__table__)
_subs, _work, _ops = _SUBSCRIPTIONS.c, _MAILBOX_WORK.c, _OPERATORS.c
# Statements built once: SQLAlchemy keeps their cache keys, so each execution skips building and keying them.
_DELIVERY_OF = select(
    _subs.subscription_id, _subs.operator_id, _ops.email, _ops.sync_enabled, _subs.client_state
).join_from(_SUBSCRIPTIONS, _OPERATORS, _ops.id == _subs.operator_id)
_DELIVERY = _DELIVERY_OF.where(_subs.subscription_id == bindparam("b_id"))
_DELIVERIES = _DELIVERY_OF.where(_subs.subscription_id.in_(bindparam("b_ids", expanding=True)))
_INSERT = insert(_NOTIFICATIONS)
_HEARD = (
    update(_SUBSCRIPTIONS)
    .where(_subs.subscription_id == bindparam("b_sid"))
    .values(
        last_heard_at=bindparam("b_at", type_=UtcDateTime()),
        last_heartbeat_at=func.coalesce(bindparam("b_hbat", type_=UtcDateTime()), _subs.last_heartbeat_at),
        watermark=func.coalesce(bindparam("b_wm", type_=Text()), _subs.watermark),
        events=_subs.events + bindparam("b_ev", type_=Integer()),
        heartbeats=_subs.heartbeats + bindparam("b_hb", type_=Integer()),
    )
)
# As work.mark_dirty, for several mailboxes and by several generations at once.
_DIRTY = (
    update(_MAILBOX_WORK)
    .where(_work.operator_id == bindparam("b_op"))
    .values(
        dirty_gen=_work.dirty_gen + bindparam("b_n", type_=BigInteger()),
        dirty_since=func.coalesce(_work.dirty_since, bindparam("b_since", type_=UtcDateTime())),
    )
)


# PostgreSQL: the three writes of a Batch in one statement (data-modifying CTEs run to completion even when
# unreferenced), its values passed as arrays. Same effect as _HEARD, _DIRTY and the INSERT above.
_PG_WRITE = text(
    """
    WITH heard AS (
        UPDATE subscriptions AS s
        SET last_heard_at = v.at, last_heartbeat_at = coalesce(v.hbat, s.last_heartbeat_at),
            watermark = coalesce(v.wm, s.watermark), events = s.events + v.ev, heartbeats = s.heartbeats + v.hb
        FROM unnest(
            CAST(:s_sid AS text[]), CAST(:s_at AS timestamptz[]), CAST(:s_hbat AS timestamptz[]),
            CAST(:s_wm AS text[]), CAST(:s_ev AS integer[]), CAST(:s_hb AS integer[])
        ) AS v (sid, at, hbat, wm, ev, hb)
        WHERE s.subscription_id = v.sid
    ), dirty AS (
        UPDATE mailbox_work AS w
        SET dirty_gen = w.dirty_gen + v.n, dirty_since = coalesce(w.dirty_since, v.since)
        FROM unnest(CAST(:w_op AS integer[]), CAST(:w_n AS bigint[]), CAST(:w_since AS timestamptz[]))
            AS v (op, n, since)
        WHERE w.operator_id = v.op
    )
    INSERT INTO notifications (operator_id, subscription_id, received_at, kind, item_id, watermark, processed)
    SELECT v.*, false FROM unnest(
        CAST(:n_operator_id AS integer[]), CAST(:n_subscription_id AS text[]), CAST(:n_received_at AS timestamptz[]),
        CAST(:n_kind AS text[]), CAST(:n_item_id AS text[]), CAST(:n_watermark AS text[])
    ) AS v
    """
)


def record(
    session: Session,
    operator_id: int,
    subscription_id: str,
    events: Iterable[InboxEvent],
    watermark: str | None,
    *,
    now: datetime | None = None,
    batch: Batch | None = None,
) -> int:
    """Store a notification's events (a heartbeat when there are none) and mark the mailbox dirty if any
    event may have changed the calendar. Returns the number of events stored. With ``batch``, nothing is
    written yet: the push is added to the batch, which the caller writes (:meth:`Batch.write`) before commit."""
    if batch is not None:
        return batch.add(operator_id, subscription_id, events, watermark, now)
    now = now or utcnow()
    # Core statements, not ORM objects: this runs for every push, and each statement is a round trip.
    rows = _event_rows(operator_id, subscription_id, events, now)
    if rows:
        session.execute(insert(NotificationRow), rows)
    values: dict[str, object] = {"last_heard_at": now}
    if watermark:
        values["watermark"] = watermark
    if rows:
        values["events"] = SubscriptionRow.events + len(rows)
    else:
        values["heartbeats"] = SubscriptionRow.heartbeats + 1
        values["last_heartbeat_at"] = now
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


LIFECYCLE_NEEDING_A_PASS = ("missed", "subscriptionRemoved")  # notifications may have been lost


def lifecycle(
    session: Session, operator_id: int, subscription_id: str, event: str, *, now: datetime | None = None
) -> bool:
    """A Graph lifecycle notification: kept on the subscription for ManagePushSubscriptions; after ``missed`` or
    ``subscriptionRemoved`` the mailbox is marked for a catch-up pass. True when it was marked."""
    subscriptions.lifecycle(session, subscription_id, event, now=now)
    if event not in LIFECYCLE_NEEDING_A_PASS:
        return False
    work.mark_dirty(session, operator_id, now=now)
    return True

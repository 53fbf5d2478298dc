"""Which mailboxes need a sync pass, and who may run it.

A notification bumps a mailbox's ``dirty_gen``; a pass claims the mailbox (a lease with an expiry and a
fencing token), remembers the generation it started from, and when it finishes records that generation
as done. Notifications that arrive during a pass leave ``dirty_gen`` ahead, so exactly one more pass
follows, however many arrived. A worker whose lease expired and was taken over has an old fence: every
commit it attempts checks the fence first and fails with :class:`LeaseLost` (invariant 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, literal, or_, select, update
from sqlalchemy.orm import Session

from .tables import MailboxWork, NotificationRow, Operator, SyncStateRow, utcnow

FOLLOW_UP_HOLD = timedelta(milliseconds=300)  # how long a mailbox marked dirty during its pass waits for the next


class LeaseLost(Exception):
    """Another worker holds this mailbox now; this worker's results must not be committed."""


@dataclass(frozen=True)
class Claim:
    operator_id: int
    email: str
    fence: int
    generation: int  # dirty_gen when the pass started
    full_sync: bool
    sync_state: str | None
    owner: str
    last_notification_id: int  # notifications up to this id are covered by the pass
    source: str = "ews"  # the operator's source (calsync.sources.registry)


def mark_dirty(session: Session, operator_id: int, *, full_sync: bool = False, now: datetime | None = None) -> None:
    values: dict[str, object] = {
        "dirty_gen": MailboxWork.dirty_gen + 1,
        # typed as the column, so the value is stored as UTC (a bare datetime would reach SQLite unconverted)
        "dirty_since": func.coalesce(MailboxWork.dirty_since, literal(now or utcnow(), MailboxWork.dirty_since.type)),
    }
    if full_sync:
        values["full_sync"] = True
    session.execute(update(MailboxWork).where(MailboxWork.operator_id == operator_id).values(**values))


def take_over(session: Session, operator_id: int, *, full_sync: bool = False, now: datetime | None = None) -> None:
    """End the current lease on the mailbox, if any (its holder's next commit fails with LeaseLost), and mark it
    dirty: the next pass, by whoever claims it, starts over (from no sync state with ``full_sync``)."""
    session.execute(
        update(MailboxWork)
        .where(MailboxWork.operator_id == operator_id)
        .values(fence=MailboxWork.fence + 1, lease_owner=None, lease_until=None, not_before=None)
    )
    mark_dirty(session, operator_id, full_sync=full_sync, now=now)


def _due(now: datetime):
    return and_(
        or_(MailboxWork.dirty_gen > MailboxWork.done_gen, MailboxWork.full_sync.is_(True)),
        or_(MailboxWork.lease_until.is_(None), MailboxWork.lease_until < now),
        or_(MailboxWork.not_before.is_(None), MailboxWork.not_before <= now),
    )


def claim(
    session: Session, owner: str, lease_seconds: float, *, operator_id: int | None = None, now: datetime | None = None
) -> Claim | None:
    """Take the longest-waiting dirty mailbox of an enabled operator (or the given one), if any is free."""
    now = now or utcnow()
    query = (
        select(MailboxWork, Operator.email, Operator.source)
        .join(Operator, Operator.id == MailboxWork.operator_id)
        .where(Operator.sync_enabled.is_(True))
    )
    if operator_id is not None:
        query = query.where(
            MailboxWork.operator_id == operator_id,
            or_(MailboxWork.lease_until.is_(None), MailboxWork.lease_until < now),
        )
    else:
        query = query.where(_due(now))
    query = query.order_by(MailboxWork.dirty_since.asc().nulls_first()).limit(1)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=MailboxWork)
    found = session.execute(query).first()
    if found is None:
        return None
    work, email, source = found
    work.fence += 1
    work.lease_owner = owner
    work.lease_until = now + timedelta(seconds=lease_seconds)
    work.last_pass_started = now
    state = session.get(SyncStateRow, work.operator_id)
    last_id = (
        session.scalar(
            select(func.max(NotificationRow.id)).where(
                NotificationRow.operator_id == work.operator_id, NotificationRow.processed.is_(False)
            )
        )
        or 0
    )
    return Claim(
        work.operator_id,
        email,
        work.fence,
        work.dirty_gen,
        work.full_sync,
        None if work.full_sync or state is None else state.state,
        owner,
        int(last_id),
        source,
    )


def check_fence(
    session: Session, claim: Claim, *, renew_seconds: float | None = None, now: datetime | None = None
) -> None:
    """Raise LeaseLost unless ``claim`` still holds the mailbox; optionally extend the lease."""
    query = select(MailboxWork).where(MailboxWork.operator_id == claim.operator_id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    work = session.scalar(query)
    if work is None or work.fence != claim.fence or work.lease_owner != claim.owner:
        raise LeaseLost(f"the lease on {claim.email} was taken over (fence {claim.fence})")
    if renew_seconds is not None:
        work.lease_until = (now or utcnow()) + timedelta(seconds=renew_seconds)


def finish(session: Session, claim: Claim, *, now: datetime | None = None) -> None:
    """The pass is complete: the generation it started from is done; release the mailbox. If it was marked
    dirty again during the pass, the next pass waits :data:`FOLLOW_UP_HOLD`, so that a burst of changes that
    is still arriving is read by one more pass rather than by one pass per change."""
    now = now or utcnow()
    check_fence(session, claim)
    work = session.get(MailboxWork, claim.operator_id)
    assert work is not None
    work.done_gen = max(work.done_gen, claim.generation)
    work.full_sync = False if claim.full_sync else work.full_sync
    work.dirty_since = None if work.dirty_gen <= work.done_gen else work.dirty_since
    work.lease_owner, work.lease_until = None, None
    work.last_pass_finished = now
    work.passes += 1
    work.attempts = 0
    work.not_before = now + FOLLOW_UP_HOLD if work.dirty_gen > work.done_gen else None
    session.execute(
        update(NotificationRow)
        .where(
            NotificationRow.operator_id == claim.operator_id,
            NotificationRow.processed.is_(False),
            NotificationRow.id <= claim.last_notification_id,
        )
        .values(processed=True)
    )


def next_due_in(session: Session, *, now: datetime | None = None) -> float | None:
    """Seconds until the earliest mailbox that waits for its ``not_before`` (a follow-up hold or a retry) comes
    due; None when none waits."""
    now = now or utcnow()
    earliest = session.scalar(
        select(func.min(MailboxWork.not_before)).where(
            or_(MailboxWork.dirty_gen > MailboxWork.done_gen, MailboxWork.full_sync.is_(True)),
            MailboxWork.not_before > now,
        )
    )
    return None if earliest is None else max(0.0, (earliest - now).total_seconds())


def release(session: Session, claim: Claim, *, retry_at: datetime | None = None) -> None:
    """Give the mailbox back without finishing (the pass failed); it stays dirty, retried after ``retry_at``."""
    work = session.get(MailboxWork, claim.operator_id)
    if work is None or work.fence != claim.fence:
        return
    work.lease_owner, work.lease_until = None, None
    work.attempts += 1
    work.not_before = retry_at


def pending(session: Session, *, now: datetime | None = None) -> int:
    """Mailboxes waiting for a pass (dirty, enabled, not leased)."""
    now = now or utcnow()
    return int(
        session.scalar(
            select(func.count())
            .select_from(MailboxWork)
            .join(Operator, Operator.id == MailboxWork.operator_id)
            .where(Operator.sync_enabled.is_(True), _due(now))
        )
        or 0
    )


def get(session: Session, operator_id: int) -> MailboxWork | None:
    return session.get(MailboxWork, operator_id)


def attempts(session: Session, operator_id: int) -> int:
    """Failed passes in a row for this mailbox."""
    row = session.get(MailboxWork, operator_id)
    return 0 if row is None else row.attempts


def mark_stale(session: Session, not_synced_since: datetime, *, now: datetime | None = None) -> int:
    """Reconciliation: mark dirty every enabled mailbox whose last pass finished before ``not_synced_since``
    (a slow safety net behind the notifications). Returns how many were marked."""
    stale = list(
        session.scalars(
            select(MailboxWork.operator_id)
            .join(Operator, Operator.id == MailboxWork.operator_id)
            .where(
                Operator.sync_enabled.is_(True),
                MailboxWork.dirty_gen <= MailboxWork.done_gen,
                MailboxWork.last_pass_finished.is_not(None),
                MailboxWork.last_pass_finished < not_synced_since,
            )
        )
    )
    for operator_id in stale:
        mark_dirty(session, operator_id, now=now)
    return len(stale)

"""The jobs' schedule and state in the database, so that every node sees a change at once and a scheduled
run happens on one node only. Jobs: ProcessPushNotifications, ManagePushSubscriptions and Reconciliation."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .tables import JobRow, utcnow

PROCESS_NOTIFICATIONS = "ProcessPushNotifications"
MANAGE_SUBSCRIPTIONS = "ManagePushSubscriptions"
RECONCILIATION = "Reconciliation"
JOB_NAMES = (PROCESS_NOTIFICATIONS, MANAGE_SUBSCRIPTIONS, RECONCILIATION)
MAX_INTERVAL = 86400


class JobError(ValueError):
    """A job request that cannot be carried out; the message says why and what is allowed."""


def ensure(session: Session, defaults: dict[str, int]) -> None:
    """Create the job rows that do not exist yet, with their default intervals. Safe when several nodes
    start at once: a row another node has just created is left alone (INSERT ... ON CONFLICT DO NOTHING)."""
    postgres = session.get_bind().dialect.name == "postgresql"
    for name, interval in defaults.items():
        insert = postgresql.insert(JobRow) if postgres else sqlite.insert(JobRow)
        values = insert.values(name=name, interval_seconds=interval, enabled=True, next_run_at=utcnow())
        session.execute(values.on_conflict_do_nothing(index_elements=[JobRow.name]))


def require(session: Session, name: str) -> JobRow:
    for candidate in JOB_NAMES:
        if candidate.lower() == name.lower():
            row = session.get(JobRow, candidate)
            if row is not None:
                return row
    raise JobError(f"no job '{name}'; jobs are: {', '.join(JOB_NAMES)}")


def listing(session: Session) -> list[JobRow]:
    return list(session.scalars(select(JobRow).order_by(JobRow.name)))


def set_enabled(session: Session, name: str, enabled: bool) -> JobRow:
    row = require(session, name)
    row.enabled = enabled
    return row


def set_interval(session: Session, name: str, seconds: int) -> JobRow:
    if not 1 <= seconds <= MAX_INTERVAL:
        raise JobError(f"interval {seconds} s is out of range; allowed: 1..{MAX_INTERVAL} seconds")
    row = require(session, name)
    row.interval_seconds = seconds
    row.next_run_at = min(row.next_run_at, utcnow() + timedelta(seconds=seconds))
    return row


def request_run(session: Session, name: str) -> JobRow:
    row = require(session, name)
    row.run_requested = True
    return row


def is_requested(session: Session, name: str) -> bool:
    """Whether someone asked for a run now (read before :func:`take_due`, which clears the request)."""
    row = session.get(JobRow, name)
    return bool(row is not None and row.run_requested)


def take_due(session: Session, name: str, *, now: datetime | None = None) -> bool:
    """Claim this job's next run if it is due (or was requested): true on exactly one node."""
    now = now or utcnow()
    row = session.get(JobRow, name)
    if row is None or not row.enabled:
        return False
    if not row.run_requested and row.next_run_at > now:
        return False
    result = session.execute(
        update(JobRow)
        .where(
            JobRow.name == name,
            JobRow.next_run_at == row.next_run_at,
            JobRow.run_requested == row.run_requested,
        )
        .values(next_run_at=now + timedelta(seconds=row.interval_seconds), run_requested=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def record_run(session: Session, name: str, outcome: str, duration_ms: int, *, now: datetime | None = None) -> None:
    row = session.get(JobRow, name)
    if row is not None:
        row.last_run_at = now or utcnow()
        row.last_outcome = outcome[:2000]
        row.last_duration_ms = duration_ms
        row.runs += 1


def is_enabled(session: Session, name: str) -> bool:
    """Whether the job may run (a job not yet in the table counts as enabled)."""
    row = session.get(JobRow, name)
    return True if row is None else bool(row.enabled)

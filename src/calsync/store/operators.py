"""Operators: the application's users whose Exchange calendars are synced, their sync flag, and the source each
one's mailbox is read through (``ews`` or ``graph``), including the move from one to the other."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from calsync.addresses import is_email_address

from . import syncstate, work
from .tables import MailboxWork, Operator, SyncStateRow, utcnow

SOURCES = ("ews", "graph")


class OperatorError(ValueError):
    """A request about operators that cannot be carried out; the message says why."""


def normalise_email(email: str) -> str:
    value = email.strip().lower()
    if not is_email_address(value):
        raise OperatorError(f"'{email}' is not an e-mail address (expected name@domain.tld)")
    return value


def get(session: Session, email: str) -> Operator | None:
    return session.scalar(select(Operator).where(Operator.email == normalise_email(email)))


def require(session: Session, email: str) -> Operator:
    found = get(session, email)
    if found is None:
        raise OperatorError(f"no operator '{email}'; add it with `calsync operators add {email}`")
    return found


def check_source(source: str) -> str:
    value = source.strip().lower()
    if value not in SOURCES:
        raise OperatorError(f"'{source}' is not a source; allowed: {', '.join(SOURCES)}")
    return value


def add(
    session: Session, email: str, display_name: str | None = None, enabled: bool = False, source: str = "ews"
) -> Operator:
    address = normalise_email(email)
    source = check_source(source)
    if get(session, address) is not None:
        raise OperatorError(f"operator '{address}' exists already")
    operator = Operator(email=address, display_name=display_name, sync_enabled=enabled, source=source)
    session.add(operator)
    session.flush()
    session.add(MailboxWork(operator_id=operator.id))
    session.add(SyncStateRow(operator_id=operator.id))
    return operator


def listing(session: Session, enabled: bool | None = None) -> list[Operator]:
    query = select(Operator).order_by(Operator.email)
    if enabled is not None:
        query = query.where(Operator.sync_enabled == enabled)
    return list(session.scalars(query))


def set_enabled(session: Session, email: str, enabled: bool) -> Operator:
    operator = require(session, email)
    operator.sync_enabled = enabled
    return operator


def move(session: Session, email: str, to: str, *, now: datetime | None = None) -> Operator:
    """Read the operator's mailbox through ``to`` from now on. The application calendar stays as it is: the next
    pass is a full read through the new source that adopts each stored appointment (its calsync id kept) by its
    UID, and sweeps what it does not find. A pass still running through the old source is cut off (its lease is
    taken over, so nothing it reads is stored); ManagePushSubscriptions replaces the subscription (the new one
    is made before the old one is ended), and marks the mailbox for one more pass then."""
    operator = require(session, email)
    target = check_source(to)
    if target == operator.source:
        raise OperatorError(f"operator '{operator.email}' already uses the {target} source")
    # The mailbox's work row first: a pass commits in that order too (its fence check locks it, then the rest).
    work.take_over(session, operator.id, full_sync=True, now=now)
    syncstate.start_move(session, operator.id, operator.source, now=now)
    operator.source = target
    return operator


def remove(session: Session, email: str) -> None:
    session.delete(require(session, email))


def by_id(session: Session, operator_id: int) -> Operator:
    found = session.get(Operator, operator_id)
    if found is None:
        raise OperatorError(f"no operator with id {operator_id}")
    return found


def record_success(session: Session, operator_id: int, when: datetime | None = None) -> None:
    operator = by_id(session, operator_id)
    operator.last_sync_at = when or utcnow()
    operator.last_error_code = operator.last_error_message = None


def record_error(session: Session, operator_id: int, code: str, message: str) -> None:
    operator = by_id(session, operator_id)
    operator.last_error_code, operator.last_error_message, operator.last_error_at = code, message, utcnow()


def count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Operator)) or 0)

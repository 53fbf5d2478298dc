"""The sync pass: for one claimed mailbox, read every change since the stored sync state, page by page, and
write each page's appointments together with the sync state that covers them, in one transaction
(invariant 4), after checking that this worker still holds the mailbox (invariant 3).

The engine knows the store and a :class:`~calsync.sources.base.Source`; it knows nothing of EWS, Graph or
HTTP. The past window is applied here: an item is stored if any of it lies after now - window (a series:
if it has no end or ends after that); an item already stored is kept up to date whatever its age.

During a move to another source (``sync_states.moving_from``) the full read with the new source adopts each
stored appointment by UID, so its calsync id (``app_id``) stays and the application sees no delete and create.

A page marked ``restart`` (the source's cursor expired, or it moved its window, and it reads from scratch) turns
the pass into a full sync from there: what the pass does not see again is swept at its end.

Items the source could not read (``ChangePage.unreadable``) are not stored: they are listed (``unreadable_items``)
with the field and raw value, the application keeps their last readable version (a full sync's sweep spares
them), and every pass that starts :data:`REREAD_AFTER` after the last try reads them again by id, until they
read well or are gone. ``PassResult.unreadable`` is the list after the pass, for the operator's incident.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from calsync.calendar.model import Appointment
from calsync.sources.base import ChangePage, ItemsRead, Source, SourceError
from calsync.store import calendar, operators, syncstate, unreadable, work
from calsync.store.db import Database
from calsync.store.tables import utcnow
from calsync.store.work import Claim

log = logging.getLogger("calsync.engine")

Progress = Callable[[int, int], None]  # (items written so far, pages so far)
REREAD_AFTER = timedelta(minutes=15)  # how often an unreadable item is read again by id


@dataclass
class PassResult:
    email: str
    pages: int = 0
    upserts: int = 0
    deletes: int = 0
    skipped_old: int = 0
    requests: int = 0
    full_sync: bool = False
    seconds: float = 0.0
    item_ids: list[str] = field(default_factory=list)
    unreadable: list[unreadable.Listed] = field(default_factory=list)  # still listed when the pass ended
    listed_at_start: int = 0  # unreadable items listed when the pass began

    @property
    def unreadable_changed(self) -> bool:
        """Whether the operator's unreadable items may differ from before the pass (else nothing to report)."""
        return bool(self.unreadable or self.listed_at_start)


def window_start(past_window_days: int, now: datetime | None = None) -> datetime:
    return (now or utcnow()) - timedelta(days=past_window_days)


def in_window(appointment: Appointment, start: datetime) -> bool:
    ends = appointment.ends_at
    return ends is None or ends > start  # a series without end (or whose end the source cannot say) is kept


def run_pass(
    db: Database,
    source: Source,
    claim: Claim,
    *,
    batch_size: int,
    past_window_days: int,
    lease_seconds: float,
    progress: Progress | None = None,
) -> PassResult:
    """Run one sync pass for a claimed mailbox. Raises SourceError or LeaseLost; on a SourceError of kind
    ``sync_state_invalid`` the caller starts a full sync (see :func:`restart_full`)."""
    started = time.monotonic()
    result = PassResult(claim.email, full_sync=claim.full_sync or claim.sync_state is None)
    oldest = window_start(past_window_days)
    if result.full_sync:
        with db.transaction() as session:
            work.check_fence(session, claim, renew_seconds=lease_seconds)
            syncstate.start_full(session, claim.operator_id)
    listed = _read_unreadable_again(db, source, claim, oldest, lease_seconds, result)
    for page in source.changes(claim.email, claim.sync_state if not claim.full_sync else None, batch_size):
        _commit_page(db, claim, page, oldest, lease_seconds, result, listed)
        if progress is not None:
            progress(result.upserts, result.pages)
        if page.done:
            break
    result.seconds = time.monotonic() - started
    log.info(
        "sync pass done",
        extra={
            "operator": claim.operator_id,
            "mailbox": claim.email,
            "pages": result.pages,
            "upserts": result.upserts,
            "deletes": result.deletes,
            "requests": result.requests,
            "full_sync": result.full_sync,
            "seconds": round(result.seconds, 3),
        },
    )
    return result


def _commit_page(
    db: Database,
    claim: Claim,
    page: ChangePage,
    oldest: datetime,
    lease_seconds: float,
    result: PassResult,
    listed: set[str],
) -> None:
    """Write one page with its sync state. ``listed``: the ids on the unreadable list (kept up to date here), so
    that a mailbox without unreadable items pays no statement for them."""
    with db.transaction() as session:
        work.check_fence(session, claim, renew_seconds=lease_seconds)
        if page.restart:  # the source reads from scratch from here: sweep what it does not see again
            syncstate.start_full(session, claim.operator_id)
            result.full_sync = True
        ids = [a.item_id for a in page.upserts]
        stored = calendar.existing_ids(session, claim.operator_id, ids)
        keep = [a for a in page.upserts if a.item_id in stored or in_window(a, oldest)]
        result.skipped_old += len(page.upserts) - len(keep)
        adopt = syncstate.adopting_since(session, claim.operator_id)
        result.upserts += calendar.upsert(session, claim.operator_id, keep, adopt_since=adopt)
        result.deletes += calendar.delete_items(session, claim.operator_id, page.deletes)
        result.item_ids.extend(a.item_id for a in keep)
        settled = [i for i in (*ids, *page.deletes) if i in listed]
        if settled or page.unreadable:
            unreadable.settle(session, claim.operator_id, settled, page.unreadable)
            listed.difference_update(settled)
            listed.update(u.item_id for u in page.unreadable)
        syncstate.save(session, claim.operator_id, page.sync_state)
        result.pages += 1
        result.requests += page.requests
        if page.done:
            sweep_from = syncstate.complete(session, claim.operator_id)
            if sweep_from is not None:
                result.deletes += calendar.sweep(session, claim.operator_id, sweep_from)
            operators.record_success(session, claim.operator_id)
            result.unreadable = unreadable.listed(session, claim.operator_id) if listed else []
            work.finish(session, claim)


def _read_unreadable_again(
    db: Database, source: Source, claim: Claim, oldest: datetime, lease_seconds: float, result: PassResult
) -> set[str]:
    """Read the listed items not tried for :data:`REREAD_AFTER` again, by id (before the pass's changes, so that
    anything newer the changes bring wins). Returns the ids still listed."""
    with db.read() as session:
        tries = unreadable.last_tries(session, claim.operator_id)
    result.listed_at_start = len(tries)
    due = sorted((i for i, tried in tries.items() if tried < utcnow() - REREAD_AFTER), key=tries.__getitem__)[:100]
    if not due:
        return set(tries)
    read: ItemsRead = source.read_items(claim.email, due)
    with db.transaction() as session:
        work.check_fence(session, claim, renew_seconds=lease_seconds)
        ids = [a.item_id for a in read.upserts]
        stored = calendar.existing_ids(session, claim.operator_id, ids)
        keep = [a for a in read.upserts if a.item_id in stored or in_window(a, oldest)]
        result.upserts += calendar.upsert(session, claim.operator_id, keep)
        result.deletes += calendar.delete_items(session, claim.operator_id, read.gone)
        unreadable.settle(session, claim.operator_id, ids + list(read.gone), read.unreadable)
        unreadable.tried(session, claim.operator_id, due)
    still = set(tries) - set(ids) - set(read.gone) | {u.item_id for u in read.unreadable}
    log.info(
        "unreadable items read again",
        extra={
            "operator": claim.operator_id,
            "mailbox": claim.email,
            "tried": len(due),
            "read": len(read.upserts),
            "gone": len(read.gone),
            "still_unreadable": len(read.unreadable),
        },
    )
    return still


def restart_full(db: Database, claim: Claim) -> None:
    """The sync state expired: the next pass reads the whole window again (and sweeps what is gone)."""
    with db.transaction() as session:
        syncstate.start_full(session, claim.operator_id)
        work.mark_dirty(session, claim.operator_id, full_sync=True)


__all__ = ["PassResult", "SourceError", "in_window", "restart_full", "run_pass", "window_start"]

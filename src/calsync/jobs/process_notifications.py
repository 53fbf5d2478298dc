"""ProcessPushNotifications: claim dirty mailboxes, one worker per mailbox, and run a sync pass for each.

It wakes the moment a notification is stored (:meth:`NotificationProcessor.wake`: called directly in the
same process, or from a PostgreSQL NOTIFY across processes); its scheduled interval is only the safety net.
Several worker threads run passes for different mailboxes at once; the database lease makes sure no two
workers, in this process or any other, run the same mailbox.

Failures: a pass that fails gives the mailbox back with a retry time. Transient failures are retried with
exponential back-off and jitter (2, 4, 8 ... seconds, at most 60 s, never sooner than Exchange's
BackOffMilliseconds); permanent ones after 5 minutes; an expired sync state starts a full re-sync at once.
With a :class:`~calsync.alerts.tracker.FailureTracker` (``calsync serve`` and ``worker`` always have one),
every failure and success is recorded there: once the operator's failure is an incident (it lasted
StatusFrequency minutes, or it is permanent) the tracker's slower pace applies instead (5 minutes by default).
Items a successful pass could not read keep the operator's ``unreadable_item`` incident up to date.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from calsync.engine.sync import PassResult, Progress, restart_full, run_pass
from calsync.sources.base import Source, SourceError
from calsync.sources.registry import Sources
from calsync.store import jobs as job_store
from calsync.store import metrics as store_metrics
from calsync.store import operators, work
from calsync.store.db import Database
from calsync.store.tables import utcnow
from calsync.store.work import LeaseLost

if TYPE_CHECKING:
    from calsync.alerts.tracker import FailureTracker
    from calsync.metrics import Metrics

log = logging.getLogger("calsync.jobs.process")

LEASE_SECONDS = 120.0
IDLE_SECONDS = 5.0
PERMANENT_RETRY = timedelta(minutes=5)
MAX_BACK_OFF = 60.0


def back_off(attempts: int, asked: float | None = None, *, jitter: float | None = None) -> timedelta:
    """The wait before retrying a transient failure after ``attempts`` failed passes in a row: exponential
    (1, 2, 4 ... s) capped at 60 s, with "equal jitter" (half fixed, half random, so mailboxes that failed
    together do not retry together), and never less than what Exchange asked for (``asked`` seconds)."""
    base = min(MAX_BACK_OFF, 2.0 ** min(attempts, 6))
    spread = random.random() if jitter is None else jitter
    return timedelta(seconds=max(asked or 0.0, base / 2 + base / 2 * spread))


@dataclass
class ProcessorSettings:
    batch_size: int
    past_window_days: int


class NotificationProcessor:
    def __init__(
        self,
        db: Database,
        sources: Sources | Source,
        settings: Callable[[], ProcessorSettings],
        *,
        threads: int = 4,
        owner: str | None = None,
        on_pass: Callable[[PassResult], None] | None = None,
        tracker: FailureTracker | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.db = db
        self.sources = sources if isinstance(sources, Sources) else Sources.only(sources)
        self.settings = settings
        self.threads = threads
        self.owner = owner or f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}"
        self.on_pass = on_pass
        self.tracker = tracker
        self.metrics = metrics
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self.passes = 0

    # --- control -------------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._stop.clear()
        for i in range(self.threads):
            t = threading.Thread(target=self._loop, name=f"calsync-pass-{i}", daemon=True)
            t.start()
            self._workers.append(t)

    def alive(self) -> bool:
        """Whether the worker threads are running (started, not stopped, none died)."""
        return bool(self._workers) and all(t.is_alive() for t in self._workers)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._workers:
            t.join(timeout=LEASE_SECONDS)
        self._workers.clear()

    # --- work ----------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                ran = self.run_available()
            except Exception:  # the database went away, for example: keep the worker alive and try again
                log.exception("processor loop failed; retrying")
                ran = False
            if not ran:
                # Idle: a notification or the scheduler wakes us; the timeout catches a follow-up pass or a
                # retry coming due (no later than IDLE_SECONDS, the safety net).
                self._wake.wait(timeout=self._idle_seconds())
                self._wake.clear()

    def _idle_seconds(self) -> float:
        try:
            with self.db.read() as session:
                due_in = work.next_due_in(session)
        except Exception:  # the database went away: the loop's own retry handles it
            return IDLE_SECONDS
        return IDLE_SECONDS if due_in is None else min(IDLE_SECONDS, due_in + 0.01)

    def run_available(self) -> bool:
        """Run passes until no mailbox is waiting; true if at least one pass ran."""
        ran = False
        while not self._stop.is_set():
            with self.db.transaction() as session:
                if not job_store.is_enabled(session, job_store.PROCESS_NOTIFICATIONS):
                    return ran
                claim = work.claim(session, self.owner, LEASE_SECONDS)
            if claim is None:
                return ran
            # Others may be waiting too: let another worker look while this one works.
            self._wake.set()
            self.run_claim(claim)
            ran = True
        return ran

    def run_claim(self, claim: work.Claim, progress: Progress | None = None) -> PassResult | None:
        settings = self.settings()
        about = {"operator": claim.operator_id, "mailbox": claim.email}
        received_at = self._oldest_notification(claim)
        log.info("sync pass started", extra={**about, "full_sync": claim.full_sync or claim.sync_state is None})
        started = time.monotonic()
        try:
            result = run_pass(
                self.db,
                self.sources.for_operator(claim.source),
                claim,
                batch_size=settings.batch_size,
                past_window_days=settings.past_window_days,
                lease_seconds=LEASE_SECONDS,
                progress=progress,
            )
        except LeaseLost as exc:
            self._count("lease_lost", started)
            log.warning("lease lost", extra={**about, "error": str(exc)})
            return None
        except SourceError as exc:
            self._count("failed", started)
            self._failed(claim, exc)
            return None
        except Exception as exc:  # keep the worker alive; the mailbox is retried
            self._count("failed", started)
            log.exception("sync pass crashed", extra=about)
            self._failed(claim, SourceError("transient", "internal_error", f"{type(exc).__name__}: {exc}"))
            return None
        self._count("ok", started)
        if self.metrics is not None and received_at is not None:
            self.metrics.change_committed(received_at)
        self.passes += 1
        if self.tracker is not None:
            try:
                self.tracker.record_success(claim.operator_id)
                if result.unreadable_changed:
                    self.tracker.record_unreadable(claim.operator_id, result.unreadable)
            except Exception:  # the pass is committed; a tracker hiccup must not turn it into a failure
                log.exception("could not record the successful pass", extra=about)
        if self.on_pass is not None:
            self.on_pass(result)
        return result

    def _oldest_notification(self, claim: work.Claim) -> datetime | None:
        """When the oldest notification this pass covers was received (for the latency metric only)."""
        if self.metrics is None:
            return None
        try:
            with self.db.read() as session:
                return store_metrics.oldest_pending_notification(session, claim.operator_id, claim.last_notification_id)
        except Exception:  # a metric must never stop a pass
            log.warning("could not read the notification time", exc_info=True, extra={"operator": claim.operator_id})
            return None

    def _count(self, outcome: str, started: float) -> None:
        if self.metrics is not None:
            self.metrics.pass_finished(outcome, time.monotonic() - started)

    def _failed(self, claim: work.Claim, exc: SourceError) -> None:
        about = {"operator": claim.operator_id, "mailbox": claim.email}
        log.warning("sync pass failed", extra={**about, "code": exc.code, "kind": exc.kind, "error": exc.message})
        outcome = None
        if self.tracker is not None:
            try:
                outcome = self.tracker.record_failure(claim.operator_id, exc)
            except Exception:  # the mailbox must still be given back
                log.exception("could not record the failure", extra=about)
        if exc.kind == "sync_state_invalid":
            with self.db.transaction() as session:
                work.release(session, claim)
            restart_full(self.db, claim)
            self.wake()
            return
        if outcome is not None and outcome.retry_after is not None:  # an open incident: the slower pace
            delay = max(outcome.retry_after, timedelta(seconds=exc.back_off or 0.0))
        elif exc.kind == "permanent":
            delay = PERMANENT_RETRY
        else:
            with self.db.read() as session:
                attempts = work.attempts(session, claim.operator_id)
            delay = back_off(attempts, exc.back_off)
        with self.db.transaction() as session:
            operators.record_error(session, claim.operator_id, exc.code, exc.message)
            work.release(session, claim, retry_at=utcnow() + delay)

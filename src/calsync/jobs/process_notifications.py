"""ProcessPushNotifications: claim dirty mailboxes, one worker per mailbox, and run a sync pass for each.

It wakes the moment a notification is stored (:meth:`NotificationProcessor.wake`: called directly in the
same process, or from a PostgreSQL NOTIFY across processes); its scheduled interval is only the safety net.
Several worker threads run passes for different mailboxes at once; the database lease makes sure no two
workers, in this process or any other, run the same mailbox.
"""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from calsync.engine.sync import PassResult, Progress, restart_full, run_pass
from calsync.sources.base import Source, SourceError
from calsync.store import jobs as job_store
from calsync.store import operators, work
from calsync.store.db import Database
from calsync.store.tables import utcnow
from calsync.store.work import LeaseLost

log = logging.getLogger("calsync.jobs.process")

LEASE_SECONDS = 120.0
IDLE_SECONDS = 5.0
PERMANENT_RETRY = timedelta(minutes=5)


@dataclass
class ProcessorSettings:
    batch_size: int
    past_window_days: int


class NotificationProcessor:
    def __init__(
        self,
        db: Database,
        source: Source,
        settings: Callable[[], ProcessorSettings],
        *,
        threads: int = 4,
        owner: str | None = None,
        on_pass: Callable[[PassResult], None] | None = None,
    ) -> None:
        self.db = db
        self.source = source
        self.settings = settings
        self.threads = threads
        self.owner = owner or f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}"
        self.on_pass = on_pass
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

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._workers:
            t.join(timeout=LEASE_SECONDS)
        self._workers.clear()

    # --- work ----------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self.run_available():
                # Idle: a notification or the scheduler wakes us; the timeout only catches retries coming due.
                self._wake.wait(timeout=IDLE_SECONDS)
                self._wake.clear()

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
        try:
            result = run_pass(
                self.db,
                self.source,
                claim,
                batch_size=settings.batch_size,
                past_window_days=settings.past_window_days,
                lease_seconds=LEASE_SECONDS,
                progress=progress,
            )
        except LeaseLost as exc:
            log.warning("lease lost", extra={"mailbox": claim.email, "error": str(exc)})
            return None
        except SourceError as exc:
            self._failed(claim, exc)
            return None
        except Exception as exc:  # keep the worker alive; the mailbox is retried
            log.exception("sync pass crashed", extra={"mailbox": claim.email})
            self._failed(claim, SourceError("transient", "internal_error", f"{type(exc).__name__}: {exc}"))
            return None
        self.passes += 1
        if self.on_pass is not None:
            self.on_pass(result)
        return result

    def _failed(self, claim: work.Claim, exc: SourceError) -> None:
        log.warning(
            "sync pass failed", extra={"mailbox": claim.email, "code": exc.code, "kind": exc.kind, "error": exc.message}
        )
        if exc.kind == "sync_state_invalid":
            with self.db.transaction() as session:
                work.release(session, claim)
            restart_full(self.db, claim)
            self.wake()
            return
        if exc.kind == "permanent":
            delay = PERMANENT_RETRY
        else:
            with self.db.read() as session:
                attempts = work.attempts(session, claim.operator_id)
            delay = timedelta(seconds=max(exc.back_off or 0.0, min(60.0, 2.0 ** min(attempts, 6))))
        with self.db.transaction() as session:
            operators.record_error(session, claim.operator_id, exc.code, exc.message)
            work.release(session, claim, retry_at=utcnow() + delay)

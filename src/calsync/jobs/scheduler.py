"""Runs the jobs on the schedule kept in the database: each tick, a job whose next run is due (or that was
asked to run now) is claimed by exactly one node and run.

- ProcessPushNotifications wakes the processor (which also wakes by itself on every notification) and
  forgets processed notifications older than a week.
- ManagePushSubscriptions runs here (see ``manage_subscriptions``).
- Reconciliation, the safety net behind all notifications, marks for a pass every enabled mailbox that has
  had none for ``reconcile_interval_hours`` (0 turns the scheduled runs off); run now, it marks every
  enabled mailbox.

Each tick also calls the ``on_tick`` hooks (the runtime applies settings changed at run time there).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from calsync.store import inbox, work
from calsync.store import jobs as job_store
from calsync.store.db import Database
from calsync.store.tables import utcnow

log = logging.getLogger("calsync.jobs.scheduler")

TICK_SECONDS = 1.0
NOTIFICATION_RETENTION = timedelta(days=7)  # processed notifications are kept this long for status and metrics


class Scheduler:
    def __init__(
        self,
        db: Database,
        *,
        wake_processor: Callable[[], None],
        manage: Callable[[], str],
        tick: float = TICK_SECONDS,
        reconcile_hours: Callable[[], int] = lambda: 6,
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        self.reconcile_hours = reconcile_hours
        self.on_tick = on_tick
        self.db = db
        self.wake_processor = wake_processor
        self.manage = manage
        self.tick = tick
        self._stop = threading.Event()
        self._poke = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="calsync-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._poke.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._thread = None

    def alive(self) -> bool:
        """Whether the scheduler's thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def poke(self) -> None:
        """Look at the schedule now (after a run was requested or an operator enabled)."""
        self._poke.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.on_tick is not None:
                    self.on_tick()
                self.run_due()
            except Exception:  # the scheduler must survive a database hiccup
                log.exception("scheduler tick failed")
            self._poke.wait(timeout=self.tick)
            self._poke.clear()

    def run_due(self) -> None:
        with self.db.transaction() as session:
            process_due = job_store.take_due(session, job_store.PROCESS_NOTIFICATIONS)
            manage_due = job_store.take_due(session, job_store.MANAGE_SUBSCRIPTIONS)
            reconcile_asked = job_store.is_requested(session, job_store.RECONCILIATION)
            reconcile_due = job_store.take_due(session, job_store.RECONCILIATION)
        if process_due:
            with self.db.transaction() as session:
                inbox.prune(session, utcnow() - NOTIFICATION_RETENTION)
                waiting = work.pending(session)
            self.wake_processor()
            with self.db.transaction() as session:
                job_store.record_run(
                    session, job_store.PROCESS_NOTIFICATIONS, f"woke the processor; {waiting} mailbox(es) waiting", 0
                )
        if reconcile_due:
            self.reconcile(everything=reconcile_asked)
        if manage_due:
            started = time.monotonic()
            try:
                outcome = self.manage()
            except Exception as exc:
                log.exception("ManagePushSubscriptions failed")
                outcome = f"failed: {type(exc).__name__}: {exc}"
            with self.db.transaction() as session:
                job_store.record_run(
                    session, job_store.MANAGE_SUBSCRIPTIONS, outcome, int((time.monotonic() - started) * 1000)
                )

    def reconcile(self, *, everything: bool) -> None:
        started, now = time.monotonic(), utcnow()
        hours = self.reconcile_hours()
        with self.db.transaction() as session:
            if everything:
                marked = work.mark_stale(session, now)
                outcome = f"marked all {marked} synced mailbox(es) for a pass (run on request)"
            elif hours:
                marked = work.mark_stale(session, now - timedelta(hours=hours))
                outcome = f"marked {marked} mailbox(es) without a pass for {hours} h"
            else:
                outcome = "off (reconcile_interval_hours is 0)"
            job_store.record_run(
                session, job_store.RECONCILIATION, outcome, int((time.monotonic() - started) * 1000), now=now
            )
        if everything or hours:
            self.wake_processor()

"""Runs the jobs on the schedule kept in the database: each tick, a job whose next run is due (or that was
asked to run now) is claimed by exactly one node and run. ProcessPushNotifications' run only wakes the
processor (it also wakes by itself on every notification); ManagePushSubscriptions runs here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from calsync.store import jobs as job_store
from calsync.store import work
from calsync.store.db import Database

log = logging.getLogger("calsync.jobs.scheduler")

TICK_SECONDS = 1.0


class Scheduler:
    def __init__(
        self, db: Database, *, wake_processor: Callable[[], None], manage: Callable[[], str], tick: float = TICK_SECONDS
    ) -> None:
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

    def poke(self) -> None:
        """Look at the schedule now (after a run was requested or an operator enabled)."""
        self._poke.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_due()
            except Exception:  # the scheduler must survive a database hiccup
                log.exception("scheduler tick failed")
            self._poke.wait(timeout=self.tick)
            self._poke.clear()

    def run_due(self) -> None:
        with self.db.transaction() as session:
            process_due = job_store.take_due(session, job_store.PROCESS_NOTIFICATIONS)
            manage_due = job_store.take_due(session, job_store.MANAGE_SUBSCRIPTIONS)
        if process_due:
            with self.db.read() as session:
                waiting = work.pending(session)
            self.wake_processor()
            with self.db.transaction() as session:
                job_store.record_run(
                    session, job_store.PROCESS_NOTIFICATIONS, f"woke the processor; {waiting} mailbox(es) waiting", 0
                )
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

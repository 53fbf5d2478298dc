"""The chaos suite: calsync on PostgreSQL as several processes (one `calsync serve --no-jobs` listener, three
`calsync worker`s) against the strict in-process emulator, while a driver makes a stream of random calendar
changes through exchangelib and a chaos loop SIGKILLs workers, restarts the listener, makes Exchange busy,
answers 503, drops push deliveries and expires sync states; plus one deliberate incident (one mailbox
throttled for longer than StatusFrequency). At quiescence the application calendar equals the emulator's
truth for every operator, and every incident produced exactly one failure e-mail and one recovery notice.

Decisions, so that it fits in a few minutes of wall-clock time:

- StatusFrequency is 1 minute (the minimum), so the deliberate incident opens after about 60 s of failures.
- The tracker's 60 s gathering window is a constant of the child processes. The test process runs one more
  *alert node* (a FailureTracker on the same database, gathering for 3 s): every node runs a dispatcher and the
  database claims keep each e-mail single, so this node simply sends first; the children are given the SMTP
  server too, so a doubled e-mail from any node would show.
- The listener is restarted at most every 40 s (see RESTART_SPACING).
- A SIGKILLed worker keeps its mailbox leased until the lease (120 s) runs out, so kills happen early in the
  run and the wait for quiescence allows a lease period after the last kill.
- During an incident a mailbox is retried every 5 minutes. After the outage the administrator's
  `calsync sync <mailbox>` runs the catch-up at once; the next pass by a worker (the final change) records the
  success and resolves the incident.
- While the deliberate incident lasts, the throttled mailbox's changes are made through the emulator's Outlook
  (its user keeps working; exchangelib would be refused like calsync).

Figures are printed at the end (``pytest -s``) and repeated in every assertion message. ``CHAOS_SEED`` sets
the random seed (the timing is not reproducible, the choices are).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from exchangelib import CalendarItem, EWSDateTime, EWSTimeZone
from exchangelib.recurrence import DailyPattern, Recurrence

from calsync.alerts.mailer import Mailer
from calsync.alerts.tracker import FailureTracker
from calsync.api.calendar import occurrences
from calsync.emulator import Emulator
from calsync.store import incidents, operators
from calsync.store import jobs as job_store
from calsync.store.db import Database
from calsync.store.status import operator_statuses
from calsync.store.tables import MailboxWork

from .conftest import SERVICE_PASSWORD, SERVICE_USER, ews_account, start_emulator
from .test_alerts import SmtpServer, free_port, start_smtp
from .test_sync_end_to_end import _key_app, _key_truth

pytestmark = [pytest.mark.timeout(480)]

UTC = EWSTimeZone("UTC")
BERLIN = EWSTimeZone("Europe/Berlin")
MAILBOXES = [f"{name}@example.com" for name in ("ann", "bob", "cyd", "dan", "eve", "fay")]
POPULATED = {"ann@example.com": 40, "bob@example.com": 25, "cyd@example.com": 15}
THROTTLED = "eve@example.com"  # the deliberate incident
RECIPIENTS = ("ops@example.com",)
SECRET = "chaos-" + "s" * 26
WORKERS = 3

WARM_UP = 12.0  # seconds of chaos (every kind of fault) before the deliberate incident starts
INCIDENT_MIN = 75.0  # the throttled mailbox stays throttled at least this long (> StatusFrequency) ...
INCIDENT_MAX = 200.0  # ... and until its failure e-mail arrived, at most this long
KILL_UNTIL = 40.0  # no worker kills after this many seconds of chaos (a killed worker's lease lasts 120 s)
RESTART_UNTIL = 75.0
# Exchange (the emulator) retries a failed push at once, then after 30 s, and gives up on the subscription 60 s
# after the first failure; restarts closer together than that could kill subscriptions, which calsync recreates
# only after 2 x StatusFrequency of silence (tested elsewhere; too slow for this run).
RESTART_SPACING = 40.0
LEASE = 120.0
SETTLE = 120.0


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- figures --------------------------------------------------------------------------------------


@dataclass
class Figures:
    seed: int
    changes: Counter[str] = field(default_factory=Counter)
    change_errors: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    worker_kills: int = 0
    listener_restarts: int = 0
    mails: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def text(self) -> str:
        lines = [
            f"chaos seed {self.seed}",
            f"changes made: {sum(self.changes.values())} {dict(sorted(self.changes.items()))}",
            f"changes refused by the faults: {sum(self.change_errors.values())} {dict(self.change_errors)}",
            f"faults injected: {sum(self.faults.values())} {dict(sorted(self.faults.items()))}",
            f"worker kills (SIGKILL): {self.worker_kills}; listener restarts: {self.listener_restarts}",
            f"e-mails received: {len(self.mails)} {self.mails}",
            "timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in self.timings.items()),
        ]
        return "\n".join(lines)


# --- the calsync processes ------------------------------------------------------------------------


class Fleet:
    """The calsync child processes: one listener (`serve --no-jobs`) and the workers."""

    def __init__(self, env: dict[str, str], workdir: Path, port: int) -> None:
        self.env, self.workdir, self.port = env, workdir, port
        self.listener: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.everything: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = self.workdir / f"{name}-{len(self.everything)}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "calsync", *args],
                env=self.env,
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.everything.append(proc)
        return proc

    def start_listener(self) -> None:
        self.listener = self._spawn(
            "listener",
            "serve",
            "--create-database",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--threads",
            "1",
            "--no-jobs",
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.listener.poll() is None, f"the listener exited: {self.tail()}"
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"the listener did not start: {self.tail()}")

    def restart_listener(self) -> None:
        assert self.listener is not None
        _kill(self.listener)
        self.start_listener()

    def start_worker(self) -> None:
        self.workers.append(self._spawn("worker", "worker", "--create-database", "--threads", "2"))

    def kill_worker(self, rng: random.Random) -> None:
        victim = rng.choice(self.workers)
        self.workers.remove(victim)
        _kill(victim)
        self.start_worker()

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "calsync", *args],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def check_alive(self) -> None:
        for proc in [p for p in (self.listener, *self.workers) if p is not None]:
            assert proc.poll() is None, f"a calsync process died on its own ({proc.args!r}): {self.tail()}"

    def stop(self) -> None:
        for proc in self.everything:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.everything:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _kill(proc)

    def tail(self, chars: int = 3000) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-chars:]}" for log in self.logs[-6:])


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=15)


def child_env(database_url: str, emulator: Emulator, listener_port: int, smtp_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CALSYNC_")}
    env.update(
        CALSYNC_DATABASE_URL=database_url,
        CALSYNC_EXCHANGE_URL=emulator.url,
        CALSYNC_USERNAME=SERVICE_USER,
        CALSYNC_PASSWORD=SERVICE_PASSWORD,
        CALSYNC_LISTENER_URL=f"http://127.0.0.1:{listener_port}",
        CALSYNC_LISTENER_SECRET=SECRET,
        CALSYNC_STATUS_FREQUENCY="1",
        CALSYNC_BATCH_SIZE="20",  # several pages per pass, so that kills land mid-pass
        CALSYNC_FAILURE_RECIPIENTS=";".join(RECIPIENTS),
        CALSYNC_SMTP_HOST="127.0.0.1",
        CALSYNC_SMTP_PORT=str(smtp_port),
        CALSYNC_PROCESS_NOTIFICATIONS_INTERVAL_SECONDS="5",
        CALSYNC_MANAGE_SUBSCRIPTIONS_INTERVAL_SECONDS="20",
        CALSYNC_LOG_LEVEL="WARNING",
    )
    return env


# --- the driver: random calendar changes ----------------------------------------------------------


class Driver:
    """Random changes, one at a time, through exchangelib (through the emulator's Outlook for a mailbox that
    Exchange refuses to serve at the moment). A change refused by a fault is counted and forgotten."""

    def __init__(self, emulator: Emulator, rng: random.Random, figures: Figures) -> None:
        self.emulator, self.rng, self.figures = emulator, rng, figures
        self.accounts = {m: ews_account(emulator, m) for m in MAILBOXES}
        self.singles: dict[str, list[CalendarItem]] = {m: [] for m in MAILBOXES}
        self.series: dict[str, list[CalendarItem]] = {m: [] for m in MAILBOXES}
        self.outlook_items: dict[str, list[str]] = {m: [] for m in MAILBOXES}
        self.blocked: str | None = None  # the mailbox Exchange refuses (changes go through Outlook)
        self.counter = 0
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.crashed: BaseException | None = None
        self.lock = threading.Lock()  # the driver thread and the test's own changes take turns

    def _start_at(self) -> EWSDateTime:
        day = (utcnow() + dt.timedelta(days=self.rng.randint(1, 60))).date()
        tz = self.rng.choice([UTC, BERLIN])
        return EWSDateTime(day.year, day.month, day.day, self.rng.randint(7, 18), self.rng.choice([0, 30]), tzinfo=tz)

    def _subject(self, what: str) -> str:
        self.counter += 1
        return f"{what} {self.counter}"

    def change(self, mailbox: str | None = None) -> None:
        with self.lock:
            self._change(mailbox or self.rng.choice(MAILBOXES))

    def _change(self, mailbox: str) -> None:
        if mailbox == self.blocked:
            self._outlook_change(mailbox)
            return
        account = self.accounts[mailbox]
        singles, series = self.singles[mailbox], self.series[mailbox]
        kinds = ["create", "create", "create_series"]
        if singles:
            kinds += ["update", "update", "delete"]
        if series:
            kinds += ["edit_occurrence", "edit_occurrence", "delete_occurrence", "delete_series"]
        kind = self.rng.choice(kinds)
        try:
            if kind == "create":
                start = self._start_at()
                item = CalendarItem(
                    account=account,
                    folder=account.calendar,
                    subject=self._subject("Chaos"),
                    start=start,
                    end=start + dt.timedelta(minutes=self.rng.choice([30, 60, 90])),
                    location=self.rng.choice([None, "Room 1", "Café"]),
                )
                item.save(send_meeting_invitations="SendToNone")
                singles.append(item)
            elif kind == "create_series":
                start = self._start_at()
                item = CalendarItem(
                    account=account,
                    folder=account.calendar,
                    subject=self._subject("Chaos series"),
                    start=start,
                    end=start + dt.timedelta(minutes=30),
                    recurrence=Recurrence(pattern=DailyPattern(interval=1), start=start.date(), number=5),
                )
                item.save(send_meeting_invitations="SendToNone")
                series.append(item)
            elif kind == "update":
                item = self.rng.choice(singles)
                singles.remove(item)  # back in the list only if the update went through
                item.subject = self._subject("Chaos moved")
                shift = dt.timedelta(hours=self.rng.choice([-2, 1, 3]))
                item.start, item.end = item.start + shift, item.end + shift
                item.save(update_fields=["subject", "start", "end"])
                singles.append(item)
            elif kind == "delete":
                item = self.rng.choice(singles)
                singles.remove(item)
                item.delete()
            elif kind in ("edit_occurrence", "delete_occurrence"):
                master = self.rng.choice(series)
                occurrence = master.occurrence(self.rng.randint(1, 5))
                occurrence.refresh()
                if kind == "delete_occurrence":
                    occurrence.delete()
                else:
                    occurrence.subject = self._subject("Chaos exception")
                    shift = dt.timedelta(minutes=self.rng.choice([-30, 45, 120]))
                    occurrence.start, occurrence.end = occurrence.start + shift, occurrence.end + shift
                    occurrence.save(update_fields=["subject", "start", "end"])
            else:
                master = self.rng.choice(series)
                series.remove(master)
                master.refresh()
                master.delete()
        except Exception as exc:  # ErrorServerBusy, 503, an occurrence deleted before: Exchange said no
            self.figures.change_errors[type(exc).__name__] += 1
            return
        self.figures.changes[kind] += 1

    def _outlook_change(self, mailbox: str) -> None:
        outlook = self.emulator.outlook(mailbox)
        mine = self.outlook_items[mailbox]
        kind = self.rng.choice(["create", "create", "update", "delete"] if mine else ["create"])
        if kind == "create":
            item = outlook.create({"subject": self._subject("Outlook"), "start": self._start_at().isoformat()})
            mine.append(item.item_id)
        elif kind == "update":
            outlook.update(self.rng.choice(mine), {"subject": self._subject("Outlook moved"), "location": "Room 9"})
        else:
            item_id = self.rng.choice(mine)
            mine.remove(item_id)
            outlook.delete(item_id, "HardDelete")
        self.figures.changes[f"outlook_{kind}"] += 1

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                self.change()
                self.stop.wait(self.rng.uniform(0.05, 0.4))
        except BaseException as exc:  # reported by the test
            self.crashed = exc

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="chaos-driver", daemon=True)
        self.thread.start()

    def halt(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=150)
            assert not self.thread.is_alive(), "the driver did not stop"

    def close(self) -> None:
        for account in self.accounts.values():
            account.protocol.close()


# --- comparing --------------------------------------------------------------------------------------


def window() -> tuple[dt.datetime, dt.datetime]:
    return utcnow() - dt.timedelta(days=179), utcnow() + dt.timedelta(days=400)


def differences(db: Database, emulator: Emulator) -> dict[str, tuple[list[Any], list[Any]]]:
    """Per mailbox whose application calendar differs from the truth: (missing, extra)."""
    start, end = window()
    out: dict[str, tuple[list[Any], list[Any]]] = {}
    for mailbox in MAILBOXES:
        mine = Counter(_key_app(o) for o in occurrences(db, mailbox, start, end))
        truth = Counter(_key_truth(t) for t in emulator.truth(mailbox, start, end))
        if mine != truth:
            out[mailbox] = (list((truth - mine).elements())[:5], list((mine - truth).elements())[:5])
    return out


def settled(db: Database) -> str | None:
    """None when every operator is subscribed, initially synced, not dirty and not leased; else why not."""
    now = utcnow()
    with db.read() as session:
        statuses = [s for s in operator_statuses(session) if s.enabled]
        leased = [w.operator_id for w in session.query(MailboxWork).all() if w.lease_until and w.lease_until > now]
    waiting = [s.email for s in statuses if not (s.subscribed and s.initial_sync_done and not s.dirty)]
    if len(statuses) != len(MAILBOXES) or waiting or leased:
        return f"waiting: {waiting}, leased: {leased}, enabled: {len(statuses)}"
    return None


def wait_until(what: str, predicate: Callable[[], bool], timeout: float, figures: Figures) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.25)
    raise AssertionError(f"{what}: not reached within {timeout:.0f} s\n{figures.text()}")


# --- the test ---------------------------------------------------------------------------------------


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    controller, server = start_smtp()
    yield server
    controller.stop()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_chaos(schema_dir: Path, database_url: str, tmp_path: Path, smtp: SmtpServer) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or time.time_ns() % 1_000_000)
    rng = random.Random(seed)
    figures = Figures(seed)
    began = time.monotonic()

    emulator = start_emulator(schema_dir, mailboxes=[])
    for i, mailbox in enumerate(MAILBOXES):
        emulator.add_mailbox(mailbox, populate_count=POPULATED.get(mailbox, 0), seed=100 + i)
    db = Database(database_url)
    db.upgrade()
    with db.transaction() as session:
        job_store.ensure(session, {job_store.PROCESS_NOTIFICATIONS: 5, job_store.MANAGE_SUBSCRIPTIONS: 20})
    # The alert node of this test process: same database, a 3 s gathering window (see the module docstring).
    alerts = FailureTracker(
        db,
        Mailer(host="127.0.0.1", port=smtp.port, recipients=RECIPIENTS, timeout=10),
        status_frequency=1,
        gather=dt.timedelta(seconds=3),
        dispatch_seconds=1.0,
        storm_threshold=1000,
    )
    port = free_port()
    fleet = Fleet(child_env(database_url, emulator, port, smtp.port), tmp_path, port)
    driver = Driver(emulator, rng, figures)
    try:
        fleet.start_listener()
        for _ in range(WORKERS):
            fleet.start_worker()
        alerts.start()
        with db.transaction() as session:
            for mailbox in MAILBOXES:
                operators.add(session, mailbox, enabled=True)
            job_store.request_run(session, job_store.MANAGE_SUBSCRIPTIONS)
        wait_until("initial sync", lambda: settled(db) is None and not differences(db, emulator), 60, figures)
        figures.timings["setup"] = time.monotonic() - began

        # --- chaos ----------------------------------------------------------------------------
        chaos_began = time.monotonic()
        last_kill = chaos_began - LEASE
        last_restart = chaos_began - RESTART_SPACING
        incident_began: float | None = None
        driver.start()
        first = ["server_busy", "kill_worker", "restart_listener", "http_503", "lost_push", "expire_sync_state"]

        def throttled_mail() -> bool:
            figures.mails = smtp.subjects
            return any(f"failing for {THROTTLED}" in s for s in figures.mails)

        while True:
            now = time.monotonic()
            elapsed = now - chaos_began
            if incident_began is None and elapsed >= WARM_UP:
                emulator.set_faults(server_busy=-1, server_busy_mailbox=THROTTLED, server_busy_backoff_ms=500)
                driver.blocked = THROTTLED
                driver.change(THROTTLED)  # a notification now, so the failures begin now
                incident_began = now
                figures.faults["server_busy_incident"] += 1
            if incident_began is not None:
                held = now - incident_began
                if held >= INCIDENT_MIN and throttled_mail():
                    break
                if held >= INCIDENT_MAX:
                    raise AssertionError(f"no failure e-mail for {THROTTLED} after {held:.0f} s\n{figures.text()}")
            fleet.check_alive()
            assert driver.crashed is None, repr(driver.crashed)
            actions = ["http_503", "lost_push", "expire_sync_state"]
            if incident_began is None:
                actions += ["server_busy", "server_busy"]
            if elapsed < KILL_UNTIL:
                actions += ["kill_worker", "kill_worker"]
            if elapsed < RESTART_UNTIL and now - last_restart >= RESTART_SPACING:
                actions += ["restart_listener"]
            action = first.pop(0) if first else rng.choice(actions)
            if action == "kill_worker":
                fleet.kill_worker(rng)
                figures.worker_kills += 1
                last_kill = time.monotonic()
            elif action == "restart_listener":
                fleet.restart_listener()
                figures.listener_restarts += 1
                last_restart = time.monotonic()
            elif action == "server_busy":
                emulator.set_faults(server_busy=rng.randint(2, 8), server_busy_backoff_ms=rng.choice([200, 1000]))
            elif action == "http_503":
                emulator.set_faults(http_503=rng.randint(1, 6))
            elif action == "lost_push":
                emulator.set_faults(lost_push=rng.randint(1, 4))
            else:
                emulator.exchange.expire_sync_states(emulator.exchange.mailbox(rng.choice(MAILBOXES)))
            figures.faults[action] += 1
            time.sleep(rng.uniform(1.5, 4.0))
        driver.halt()
        emulator.clear_faults()
        driver.blocked = None
        figures.timings["chaos"] = time.monotonic() - chaos_began
        assert incident_began is not None
        figures.timings["throttled"] = time.monotonic() - incident_began

        # --- quiescence -----------------------------------------------------------------------
        # The administrator catches the throttled mailbox up at once instead of waiting for the incident pace.
        for _ in range(10):
            ran = fleet.run("sync", THROTTLED)
            if ran.returncode == 0:
                break
            time.sleep(2)
        assert ran.returncode == 0, f"calsync sync {THROTTLED}: {ran.stdout} {ran.stderr}\n{figures.text()}"
        for mailbox in MAILBOXES:  # one change per mailbox: every mailbox gets a notification
            before = sum(figures.changes.values())
            for _ in range(5):
                driver.change(mailbox)
                if sum(figures.changes.values()) > before:
                    break
        fleet.run("jobs", "run", job_store.PROCESS_NOTIFICATIONS)
        settle_for = max(SETTLE, last_kill + LEASE + 15 - time.monotonic())
        quiet_began = time.monotonic()
        diffs: dict[str, Any] = {}

        def quiet() -> bool:
            nonlocal diffs
            if settled(db) is not None:
                return False
            diffs = differences(db, emulator)
            return not diffs

        try:
            wait_until("quiescence", quiet, settle_for, figures)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nstill: {settled(db)}\ndifferences: {diffs}\n{fleet.tail()}") from None
        figures.timings["settle"] = time.monotonic() - quiet_began

        # --- e-mails --------------------------------------------------------------------------
        def notices_done() -> bool:
            figures.mails = smtp.subjects
            with db.read() as session:
                rows = incidents.history(session)
            return all(r.resolved_at is not None for r in rows if r.opened_at is not None) and all(
                r.recovery_notified_at is not None for r in rows if r.notified_at is not None
            )

        wait_until("recovery notices", notices_done, 30, figures)
        time.sleep(2)  # a doubled e-mail from a slower node would arrive now
        figures.mails = smtp.subjects
        figures.timings["total"] = time.monotonic() - began
        print("\n" + figures.text())

        assert not differences(db, emulator), figures.text()
        with db.read() as session:
            rows = incidents.history(session)
            email_of = {o.id: o.email for o in operators.listing(session)}
        opened = [r for r in rows if r.opened_at is not None]
        failure_mails = Counter(s.rsplit(" ", 1)[-1] for s in figures.mails if ": calendar sync failing for " in s)
        recovery_mails = Counter(s.rsplit(" ", 1)[-1] for s in figures.mails if "calendar sync works again for " in s)
        storms = [s for s in figures.mails if " operators" in s]
        assert not storms, figures.text()
        notified = Counter(email_of[r.operator_id] for r in opened if r.notified_at is not None)
        recovered = Counter(email_of[r.operator_id] for r in opened if r.recovery_notified_at is not None)
        assert failure_mails == notified == recovered == recovery_mails, (
            f"incidents {[(email_of[r.operator_id], r.code) for r in opened]}\n{figures.text()}"
        )
        assert failure_mails[THROTTLED] == 1 and recovery_mails[THROTTLED] == 1, figures.text()
        assert all(r.resolved_at is not None for r in opened), figures.text()
        assert len(figures.mails) == sum(failure_mails.values()) + sum(recovery_mails.values()), figures.text()
        assert emulator.violations == [], (emulator.violations[:2], figures.text())
        assert sum(figures.changes.values()) >= 50 and figures.worker_kills >= 1, figures.text()
    finally:
        driver.stop.set()
        fleet.stop()
        alerts.stop()
        driver.close()
        emulator.stop()
        db.dispose()

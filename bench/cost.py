"""Cost: EWS requests per changed appointment, and how long a change takes to be read, for calsync (push) beside a
polling peer that does what today's connectors do (every mailbox read with SyncFolderItems on a fixed cycle), on
the same stream of changes; plus the idle cost of each, and a burst on one mailbox.

    python -m bench.cost             # 10,000 mailboxes, 5 changes/s for 60 s, SQLite (10-20 minutes, see below)
    python -m bench.cost --quick     # 200 mailboxes, 5 changes/s for 20 s (about 2 minutes)
    python -m bench.cost --database postgresql

The emulator runs in this process with N mailboxes of 4 sample appointments each. Every request is counted by
the emulator itself (``Exchange.stats["op:<operation>"]``); the poller also counts its own (``EwsSource.stats``).
The stream: 5 changes per second at planned times, each in a random mailbox: 60 % creates, 40 % subject updates
of a pre-filled appointment that is not a meeting (so a change touches one mailbox only) and lies in the past
window (so calsync stores it). Each change has a unique subject. The same plan (times, mailboxes, targets) is
played twice: once for calsync, once for the poller, never both at once.

The poller is its own process (``python -m bench.cost --worker``) on 4 threads (calsync's processor thread
count); a visit of a mailbox is ``EwsSource.changes`` from its stored state: one SyncFolderItems, plus one GetItem
when something changed, plus one for a series' modified occurrences. ``calsync serve`` (listener and jobs, 4 sync
threads, default settings: StatusFrequency 30 min, reconcile every 6 h) runs with all N operators enabled.

1. Setup (timed, not counted): calsync subscribes and syncs every mailbox while the poller reads every mailbox
   to the end.
2. Idle: the poller makes one real cycle over all N mailboxes (requests, seconds and each visit's times are
   measured) while calsync idles beside it for at least 30 s; calsync's requests = the emulator's count less
   the poller's own.
3. calsync: the stream (requests and pushes counted from its start until every change is stored and no
   mailbox is dirty; latency = ``synced_at`` of the change's subject in the appointments table - the time it
   was made, read every 20 ms); the burst (20 creates on one mailbox within 200 ms; passes from
   ``mailbox_work.passes``); a reconciliation of a sample of mailboxes (marked dirty the way the scheduler's
   reconcile does), whose requests per mailbox give the reconcile cost. Then calsync stops and the emulator
   drops its push subscriptions.
4. The poller reads what changed during step 3 (one cycle, not counted), then runs live on a 60 s cycle, its
   first cycle at a random phase of the stream, until the first cycle that starts after the stream ended.
   Latency = the time the page holding the change's subject came back - the time the change was made. Then
   the burst, read by one visit made here.

The 300 s poller is NOT run live (a few cycles would take half an hour): its requests per hour are
(3600 / 300) x the measured idle cycle + a GetItem (+ the measured extra for series) per visit that finds a
change (the expected number of such visits for changes on random mailboxes, computed); its latency is
modelled from the idle cycle's measured visit times: a change is read at the end of the first visit of its
mailbox that starts after it, averaged over 100 phases of the cycle. The same model is shown for the 60 s
poller beside its live figures, as a check of the model. Per-hour figures at N mailboxes and the stream's rate
are computed from measured figures; the tables mark each figure [M] measured or [C] computed.
Most of the default run's time is step 1: calsync subscribes the 10,000 operators one after another and syncs
each, beside the poller's own setup (6 minutes on 2 quiet cores, 13 on busy ones); the live poller needs 2 to 3
minutes.
Results go to bench/results/cost.json (``cost-postgresql.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import queue
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.table import Table
from sqlalchemy import text

from bench.common import write_results
from bench.initial_sync import (
    BATCH,
    THREADS,
    calsync_serve,
    console,
    fill,
    output_path,
    parse_arguments,
    progress_bar,
    requests_since,
)
from bench.latency import PASSWORD, USER, Change, Poller, pct, spec, wait_settled
from bench.listener import clean_env
from calsync.emulator import Emulator
from calsync.sources.ews import EwsSource

CYCLES = (60.0, 300.0)
APPOINTMENTS = 4  # pre-filled per mailbox
BURST, BURST_SECONDS = 20, 0.2
RECONCILE_HOURS, STATUS_FREQUENCY_MINUTES = 6, 30  # calsync's defaults (reconcile_interval_hours, status_frequency)
PHASES = 100  # phases of the poll cycle the latency model averages over


# --- the stream -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    at: float  # seconds after the stream starts
    mailbox: str
    item_id: str | None  # None: a create; else the pre-filled appointment whose subject changes


def plan(emu: Emulator, mailboxes: list[str], rate: float, seconds: float) -> list[Step]:
    rnd = random.Random(5)
    recent = emu.exchange.now() - timedelta(days=150)  # well inside calsync's 180-day past window
    steps = []
    for seq in range(int(rate * seconds)):
        mailbox = rnd.choice(mailboxes)
        targets = [i.item_id for i in emu.outlook(mailbox).items() if not i.is_meeting and i.start > recent]
        target = rnd.choice(targets) if targets and rnd.random() < 0.4 else None
        steps.append(Step(seq / rate, mailbox, target))
    return steps


def play(emu: Emulator, steps: list[Step], prefix: str, registry: dict[str, Change]) -> list[Change]:
    """Make the planned changes on time; each gets a unique subject, registered for whoever reads it."""
    rnd = random.Random(9)
    changes = []
    start = time.perf_counter()
    for seq, step in enumerate(steps):
        delay = start + step.at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        subject = f"{prefix}-{seq:06d}"
        outlook = emu.outlook(step.mailbox)
        if step.item_id is None:
            item_id = outlook.create(spec(subject, rnd), send_invitations=False).item_id
        else:
            item_id = outlook.update(step.item_id, {"subject": subject}).item_id
        change = Change(seq, step.mailbox, "create" if step.item_id is None else "update", item_id, datetime.now(UTC))
        registry[subject] = change
        changes.append(change)
    return changes


def burst(emu: Emulator, mailbox: str, prefix: str, registry: dict[str, Change]) -> list[Change]:
    steps = [Step(i * BURST_SECONDS / BURST, mailbox, None) for i in range(BURST)]
    return play(emu, steps, prefix, registry)


def latencies(changes: list[Change]) -> list[float]:
    return [c.latency for c in changes if c.latency is not None]


# --- the poller (its own process: python -m bench.cost --worker SPEC) ------------------------------------------------


def poll_worker(spec_file: str) -> None:
    """Poll every mailbox with SyncFolderItems on a fixed cycle, as today's connectors do; report on stdout."""
    spec_ = json.loads(Path(spec_file).read_text())
    mailboxes: list[str] = spec_["mailboxes"]
    cycle_seconds, stream_seconds, phase = spec_["cycle"], spec_["stream_seconds"], spec_["phase"]
    source = EwsSource(spec_["url"], USER, PASSWORD, max_connections=THREADS)
    states: dict[str, str | None] = dict.fromkeys(mailboxes)
    reads: list[tuple[str, float]] = []  # (subject, epoch seconds when the page holding it came back)

    def emit(**message: Any) -> None:
        print(json.dumps(message), flush=True)

    def visit(mailbox: str, started: float) -> tuple[float, float, int, bool]:
        """Read one mailbox from its state; (start, end) seconds after ``started``, requests, found changes."""
        begin, requests = time.monotonic(), 0
        subjects = []
        for page in source.changes(mailbox, states[mailbox], BATCH):
            states[mailbox] = page.sync_state
            subjects += [a.subject or "" for a in page.upserts]
            requests += page.requests
        now = time.time()
        reads.extend((s, now) for s in subjects)
        return begin - started, time.monotonic() - started, requests, bool(subjects)

    def cycle(label: str) -> dict[str, Any]:
        started, before = time.monotonic(), source.stats.requests
        visits: dict[str, tuple[float, float]] = {}
        changed, extra = 0, 0
        with ThreadPoolExecutor(THREADS) as pool:
            for n, (mailbox, (begin, end, requests, found)) in enumerate(
                zip(mailboxes, pool.map(lambda m: visit(m, started), mailboxes), strict=True), 1
            ):
                visits[mailbox] = (begin, end)
                changed, extra = changed + found, extra + (requests - 1 if found else 0)
                if n % 500 == 0 or n == len(mailboxes):
                    emit(progress=label, done=n, total=len(mailboxes))
        return {
            "seconds": time.monotonic() - started,
            "requests": source.stats.requests - before,
            "changed_visits": changed,
            "extra_requests": extra,
            "visits": visits,
        }

    setup_started = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        for n, _ in enumerate(pool.map(lambda m: visit(m, setup_started), mailboxes), 1):
            if n % 500 == 0 or n == len(mailboxes):
                emit(progress="poller setup: reading every mailbox to the end", done=n, total=len(mailboxes))
    emit(setup={"seconds": time.monotonic() - setup_started, "requests": source.stats.requests})
    reads.clear()
    if sys.stdin.readline().strip() != "idle":
        return
    counted = dict(source.stats.by_operation)
    idle = cycle("poller: one idle cycle over every mailbox")
    idle["by_operation"] = {k: v - counted.get(k, 0) for k, v in source.stats.by_operation.items()}
    emit(idle=idle)
    if sys.stdin.readline().strip() != "catch up":
        return
    caught_up = cycle("poller: catching up with calsync's changes (not counted)")
    reads.clear()
    emit(caught_up={"seconds": caught_up["seconds"], "requests": caught_up["requests"]})
    if sys.stdin.readline().strip() != "go":
        return
    go = time.monotonic()
    cycles = []
    for k in range(int(stream_seconds // cycle_seconds) + 3):  # bounded: the stream, then one cycle after it
        start = go + phase + k * cycle_seconds
        time.sleep(max(0.0, start - time.monotonic()))
        result = cycle(f"poller: live cycle {k + 1}")
        result.pop("visits")
        cycles.append({"at": start - go, **result})
        if start - go >= stream_seconds:
            break
    emit(live={"cycles": cycles, "requests": sum(c["requests"] for c in cycles), "reads": reads})


class Worker:
    """The poller process, its JSON lines read by a thread so that this process can play the stream meanwhile."""

    def __init__(self, emu: Emulator, mailboxes: list[str], stream_seconds: float, tmp: str) -> None:
        self.phase = random.Random(3).uniform(0, CYCLES[0])  # the first live cycle, after the stream starts
        spec_file = Path(tmp) / "poller.json"
        spec_file.write_text(
            json.dumps(
                {
                    "url": emu.url,
                    "mailboxes": mailboxes,
                    "cycle": CYCLES[0],
                    "stream_seconds": stream_seconds,
                    "phase": self.phase,
                }
            )
        )
        env = clean_env()
        env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.cost", "--worker", str(spec_file)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.messages.put(json.loads(line))
        self.messages.put(None)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_for(self, key: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        with progress_bar() as progress:
            tasks: dict[str, Any] = {}
            while True:
                try:
                    message = self.messages.get(timeout=max(0.1, deadline - time.monotonic()))
                except queue.Empty:
                    raise RuntimeError(f"the poller sent no '{key}' in {timeout:.0f} s") from None
                if message is None:
                    raise RuntimeError(f"the poller exited (code {self.proc.wait()}) before sending '{key}'")
                if key in message:
                    return message[key]
                label = message["progress"]
                if label not in tasks:
                    tasks[label] = progress.add_task(label, total=message["total"])
                progress.update(tasks[label], completed=message["done"])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def poller_phase(emu: Emulator, worker: Worker, steps: list[Step], seconds: float) -> tuple[Any, list[Change]]:
    """The live 60 s poller on the stream, then the burst read by one visit (nothing else runs meanwhile). First
    the poller reads, uncounted, what changed during calsync's phase, so that the live cycles see only this stream."""
    worker.send("catch up")
    caught_up = worker.wait_for("caught_up", 1800)
    before = dict(emu.exchange.stats)
    registry: dict[str, Change] = {}
    worker.send("go")
    console.print(f"poller: live 60 s cycle, its first cycle {worker.phase:.1f} s after the stream starts")
    changes = play(emu, steps, "poll", registry)
    live = worker.wait_for("live", seconds + 3 * CYCLES[0] + 1800)
    live["emulator_requests"] = requests_since(emu, before)
    for subject, at in live.pop("reads"):
        change = registry.get(subject)
        if change is not None and change.synced_at is None:
            change.synced_at = datetime.fromtimestamp(at, UTC)
    source = EwsSource(emu.url, USER, PASSWORD)
    try:
        target = steps[0].mailbox
        state = None
        for page in source.changes(target, None, BATCH):
            state = page.sync_state
        burst(emu, target, "poll-burst", {})
        before, counted = dict(emu.exchange.stats), source.stats.requests
        pages = list(source.changes(target, state, BATCH))
        burst_result = {
            "passes": 1,
            "requests": source.stats.requests - counted,
            "emulator_requests": requests_since(emu, before),
            "read": sum(len(p.upserts) for p in pages),
        }
    finally:
        source.close()
    return {"phase": worker.phase, "caught_up": caught_up, "live": live, "burst": burst_result}, changes


# --- calsync ----------------------------------------------------------------------------------------------------------


def pushes_since(emu: Emulator, since: float) -> dict[str, int]:
    out: dict[str, int] = {}
    for delivery in list(emu.push.log):
        if delivery.at >= since:
            out[delivery.kind] = out.get(delivery.kind, 0) + 1
    return out


def settle(engine: Any, changes: list[Change], timeout: float) -> None:
    """Until every change was seen stored and no mailbox is dirty or leased."""
    deadline = time.monotonic() + timeout
    query = text("SELECT count(*) FROM mailbox_work WHERE dirty_gen > done_gen OR lease_owner IS NOT NULL")
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            busy = conn.execute(query).scalar_one()
        if busy == 0 and all(c.synced_at is not None for c in changes):
            return
        time.sleep(0.1)
    missing = sum(1 for c in changes if c.synced_at is None)
    raise RuntimeError(f"calsync did not settle in {timeout:.0f} s ({missing} changes not seen stored)")


def passes_of(engine: Any, mailbox: str | None = None) -> int:
    query = "SELECT sum(w.passes) FROM mailbox_work w JOIN operators o ON o.id = w.operator_id"
    with engine.connect() as conn:
        if mailbox is None:
            return int(conn.execute(text(query)).scalar_one())
        return int(conn.execute(text(query + " WHERE o.email = :e"), {"e": mailbox}).scalar_one())


def idle_phase(emu: Emulator, worker: Worker, seconds: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The poller's idle cycle over every mailbox, while calsync idles beside it (at least ``seconds``):
    calsync's requests are the emulator's count less the poller's own."""
    before, pushed, started = dict(emu.exchange.stats), emu.exchange.clock.seconds(), time.monotonic()
    worker.send("idle")
    idle = worker.wait_for("idle", 1800)
    time.sleep(max(0.0, seconds - (time.monotonic() - started)))
    total = requests_since(emu, before)
    idle["emulator_requests"] = total
    calsync = {k: v - idle["by_operation"].get(k, 0) for k, v in total.items()}
    console.print(
        f"poller: idle cycle over {len(idle['visits']):,} mailboxes: {idle['requests']:,} requests in "
        f"{idle['seconds']:.1f} s; calsync meanwhile: {sum(calsync.values())} requests"
    )
    waited = time.monotonic() - started
    return idle, {"seconds": waited, "requests": calsync, "pushes": pushes_since(emu, pushed)}


def calsync_phase(
    emu: Emulator, worker: Worker, mailboxes: list[str], steps: list[Step], args: argparse.Namespace, tmp: str
) -> tuple[dict[str, Any], dict[str, Any], list[Change]]:
    from calsync.store import work
    from calsync.store.db import Database

    out: dict[str, Any] = {}
    poll: dict[str, Any] = {}
    before = dict(emu.exchange.stats)
    with calsync_serve(emu, mailboxes, args.database, tmp, args.profile) as (url, engine, _, _):
        with console.status(f"calsync: subscribing and syncing {len(mailboxes):,} mailboxes"):
            out["setup_seconds"] = wait_settled(engine, len(mailboxes), 3600)
        out["setup_requests"] = requests_since(emu, before)
        console.print(f"calsync: {len(mailboxes):,} mailboxes subscribed and synced in {out['setup_seconds']:.1f} s")
        poll["setup"] = worker.wait_for("setup", 1800)

        poll["idle"], out["idle"] = idle_phase(emu, worker, args.idle_seconds)

        poller = Poller(engine, {})
        poller.start()
        passes_before = passes_of(engine)
        before, pushed = dict(emu.exchange.stats), emu.exchange.clock.seconds()
        with console.status("calsync: stream playing"):
            changes = play(emu, steps, "push", poller.changes)
            settle(engine, changes, 120)
        out["stream"] = {
            "requests": requests_since(emu, before),
            "pushes": pushes_since(emu, pushed),
            "passes": passes_of(engine) - passes_before,
        }

        target = steps[0].mailbox
        passes_before = passes_of(engine, target)
        before, pushed = dict(emu.exchange.stats), emu.exchange.clock.seconds()
        burst_changes = burst(emu, target, "push-burst", poller.changes)
        settle(engine, burst_changes, 60)
        out["burst"] = {
            "passes": passes_of(engine, target) - passes_before,
            "requests": requests_since(emu, before),
            "pushes": pushes_since(emu, pushed),
            "last_change_stored_after_ms": (
                max(c.synced_at for c in burst_changes if c.synced_at) - burst_changes[-1].made_at
            ).total_seconds()
            * 1000,
        }
        poller.stop.set()
        poller.join()

        # Reconciliation, as the scheduler's reconcile does it (mark dirty), for a sample of mailboxes.
        with engine.connect() as conn:
            ids = sorted(conn.execute(text("SELECT id FROM operators")).scalars())
        sample = random.Random(13).sample(ids, min(len(ids), args.reconcile))
        db = Database(url)
        before, started = dict(emu.exchange.stats), time.monotonic()
        with db.transaction() as session:
            for operator_id in sample:
                work.mark_dirty(session, operator_id)
            db.wake(session)
        db.dispose()
        with console.status(f"calsync: reconciling {len(sample)} mailboxes"):
            settle(engine, [], 600)
        requests = requests_since(emu, before)
        out["reconcile"] = {
            "mailboxes": len(sample),
            "requests": requests,
            "seconds": time.monotonic() - started,
            "requests_per_mailbox": sum(requests.values()) / len(sample),
        }
    # calsync has stopped: Exchange drops its push subscriptions, so the poller phase runs without them.
    for subscription in list(emu.exchange.subscriptions.values()):
        emu.exchange.end_subscription(subscription, "unsubscribed")
    emu.push.poke_all()
    return out, poll, changes + burst_changes


# --- figures ----------------------------------------------------------------------------------------------------------


def modelled_latency(
    steps: list[Step], visits: dict[str, tuple[float, float]], cycle: float, cycle_seconds: float
) -> list[float]:
    """When a poller with this cycle reads each planned change: at the end of the first visit of its mailbox that
    starts after the change, with the visit times of the measured idle cycle, over PHASES phases of the cycle.
    A cycle whose work takes longer than its period is run back to back (the period becomes the work time)."""
    period = max(cycle, cycle_seconds)
    out = []
    for step in steps:
        begin, end = visits[step.mailbox]
        for p in range(PHASES):
            first = p * period / PHASES + begin  # visits start at first + k * period
            k = math.ceil((step.at - first) / period)
            out.append(first + k * period + (end - begin) - step.at)
    return out


def changed_visits_per_hour(mailboxes: int, rate: float, cycle: float) -> float:
    """Expected visits that find a change, per hour, when changes fall on random mailboxes (computed)."""
    per_cycle = rate * cycle
    return 3600 / cycle * mailboxes * (1 - (1 - 1 / mailboxes) ** per_cycle)


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_s": statistics.median(values),
        "p95_s": pct(values, 0.95),
        "max_s": max(values),
        "mean_s": statistics.fmean(values),
    }


def figures(
    n: int, rate: float, poll: dict[str, Any], calsync: dict[str, Any], steps: list[Step], changes: int
) -> dict[str, Any]:
    idle_cycle = poll["idle"]
    live = poll["live"]
    changed = sum(c["changed_visits"] for c in live["cycles"])
    extra_per_changed_visit = sum(c["extra_requests"] for c in live["cycles"]) / max(1, changed)
    per_hour_changes = rate * 3600
    c_stream = sum(calsync["stream"]["requests"].values())
    c_per_change = c_stream / changes
    c_idle_measured = sum(calsync["idle"]["requests"].values()) * 3600 / calsync["idle"]["seconds"]
    c_idle = n / RECONCILE_HOURS * calsync["reconcile"]["requests_per_mailbox"] + c_idle_measured
    out: dict[str, Any] = {
        "calsync": {
            "requests_per_change": c_per_change,  # measured
            "idle_requests_per_hour_measured_window": c_idle_measured,
            "idle_requests_per_hour": c_idle,  # computed: reconcile (measured per mailbox) + measured idle rate
            "heartbeat_pushes_per_hour": n * 60 / STATUS_FREQUENCY_MINUTES,  # computed from StatusFrequency
            "requests_per_hour": c_per_change * per_hour_changes + c_idle,  # computed
        }
    }
    for cycle in CYCLES:
        period = max(cycle, idle_cycle["seconds"])
        idle_per_hour = 3600 / period * idle_cycle["requests"]
        per_hour = idle_per_hour + changed_visits_per_hour(n, rate, period) * (1 + extra_per_changed_visit)
        out[f"poller_{cycle:.0f}"] = {
            "period_s": period,
            "idle_requests_per_hour": idle_per_hour,  # computed from the measured idle cycle
            "requests_per_hour": per_hour,  # computed
            "requests_per_change": per_hour / per_hour_changes,  # computed
            "latency_modelled": summary(modelled_latency(steps, idle_cycle["visits"], cycle, idle_cycle["seconds"])),
        }
    out["poller_60"]["live_requests_per_change"] = live["requests"] / changes  # measured
    # Up to which change rate calsync makes fewer requests than the 300 s poller (its GetItems left out).
    spare = out["poller_300"]["idle_requests_per_hour"] - c_idle
    out["break_even_changes_per_second_vs_300"] = spare / (c_per_change * 3600) if c_per_change else None
    out["extra_requests_per_changed_visit"] = extra_per_changed_visit
    return out


def show(n: int, rate: float, seconds: float, poll: dict[str, Any], cal: dict[str, Any], fig: dict[str, Any]) -> None:
    changes = int(rate * seconds)
    p60, p300, cs = fig["poller_60"], fig["poller_300"], fig["calsync"]
    requests = Table(title=f"EWS requests, {n:,} mailboxes, {changes} changes ({rate:g}/s for {seconds:g} s)")
    for column in ("measure", "calsync (push)", "poller 60 s", "calsync / 60 s", "poller 300 s", "calsync / 300 s"):
        requests.add_column(column, justify="left" if column == "measure" else "right")

    def line(what: str, c: float, a: float | None, b: float | None, fmt: str = ",.0f") -> None:
        def cell(v: float | None) -> str:
            return "-" if v is None else format(v, fmt)

        def ratio(v: float | None) -> str:
            return "-" if not v else f"{c / v:.3f}"

        requests.add_row(what, cell(c), cell(a), ratio(a), cell(b), ratio(b))

    live = poll["live"]
    line("[M] requests in the stream window", sum(cal["stream"]["requests"].values()), live["requests"], None)
    line(
        "[M] requests per change, stream window",
        cs["requests_per_change"],
        p60["live_requests_per_change"],
        None,
        ".2f",
    )
    line("[C] requests per change, per hour", *(f["requests_per_change"] for f in (cs, p60, p300)), ".2f")
    line("[C] requests per hour at this rate", *(f["requests_per_hour"] for f in (cs, p60, p300)))
    idle = poll["idle"]["requests"]
    line("[M] idle: calsync's idle window / one poll cycle", sum(cal["idle"]["requests"].values()), idle, idle)
    line("[C] idle: requests per hour", *(f["idle_requests_per_hour"] for f in (cs, p60, p300)))
    line("[M] burst of 20 on one mailbox: passes", cal["burst"]["passes"], poll["burst"]["passes"], None)
    line(
        "[M] burst of 20 on one mailbox: requests",
        sum(cal["burst"]["requests"].values()),
        poll["burst"]["requests"],
        None,
    )
    console.print(requests)

    lat = Table(title="Latency: change made -> read by the poller / committed by calsync (seconds)")
    for column in ("reader", "figure", "n", "p50", "p95", "max", "p50 vs calsync"):
        lat.add_column(column, justify="left" if column in ("reader", "figure") else "right")
    base = cal["latency"]["p50_s"]
    for reader, figure, s in (
        ("calsync (push)", "[M]", cal["latency"]),
        ("poller 60 s", "[M] live", poll["latency"]),
        ("poller 60 s", "[C] model", p60["latency_modelled"]),
        ("poller 300 s", "[C] model", p300["latency_modelled"]),
    ):
        cells = [f"{s[k]:.3f}" for k in ("p50_s", "p95_s", "max_s")]
        lat.add_row(reader, figure, str(s["n"]), *cells, f"{s['p50_s'] / base:,.0f}x")
    console.print(lat)
    console.print(
        "[M] measured in this run; [C] computed from measured figures (per hour at this mailbox count and change "
        f"rate; the 300 s poller was not run live). Poller idle cycle over {n:,} mailboxes took "
        f"{poll['idle']['seconds']:.1f} s; calsync idle: {sum(cal['idle']['requests'].values())} requests in "
        f"{cal['idle']['seconds']:.0f} s; reconcile: {cal['reconcile']['requests_per_mailbox']:.2f} requests per "
        f"mailbox every {RECONCILE_HOURS} h; heartbeats: {cs['heartbeat_pushes_per_hour']:,.0f} pushes/h to the "
        f"listener, 0 EWS requests. The live poller never saw {poll['unread']} of the changes: the item changed "
        "again before its next visit."
    )
    be = fig["break_even_changes_per_second_vs_300"]
    aim_change = cs["requests_per_change"] <= 2
    aim_total = cs["requests_per_hour"] < p300["requests_per_hour"]
    by_operation = " + ".join(f"{v} {k}" for k, v in cal["stream"]["requests"].items())
    console.print(
        f"calsync's requests for the {changes} changes: {by_operation} ({cal['stream']['passes']} passes; a change to "
        "a series with modified occurrences costs one more GetItem, for them)"
    )
    console.print(
        f"aim <= 2 requests per change: {'met' if aim_change else 'missed'} ({cs['requests_per_change']:.2f}); "
        f"fewer requests than the 300 s poller at {n:,} mailboxes: {'met' if aim_total else 'missed'} "
        f"({cs['requests_per_hour']:,.0f} vs {p300['requests_per_hour']:,.0f} per hour); calsync stays below it "
        f"up to {be or 0:.1f} changes/s"
    )


def main() -> None:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--rate", type=float, default=5.0, help="changes per second")
        parser.add_argument("--seconds", type=float, default=None, help="seconds of changes (default 60)")
        parser.add_argument("--idle-seconds", type=float, default=None, help="idle window, at least (default 30)")
        parser.add_argument("--reconcile", type=int, default=500, help="mailboxes reconciled to measure its cost")

    args = parse_arguments(__doc__, "cost", "200 mailboxes, 20 s of changes (CI)", (200, 10_000), poll_worker, options)
    if args is None:
        return
    n = args.mailboxes
    seconds = args.seconds or (20.0 if args.quick else 60.0)
    args.idle_seconds = args.idle_seconds or (5.0 if args.quick else 30.0)
    args.reconcile = min(args.reconcile, 100) if args.quick else args.reconcile
    output = output_path(args, "cost")
    mailboxes = [f"user{i}@example.com" for i in range(1, n + 1)]

    console.print(f"[bold]cost[/bold]: {n:,} mailboxes, {args.rate:g} changes/s for {seconds:g} s, {args.database}")
    emu = Emulator(accounts={USER: PASSWORD}, mailboxes=mailboxes)
    fill(emu, mailboxes, APPOINTMENTS)
    steps = plan(emu, mailboxes, args.rate, seconds)
    emu.start()
    try:
        with tempfile.TemporaryDirectory(prefix="calsync-bench-") as tmp:
            worker = Worker(emu, mailboxes, seconds, tmp)  # its setup runs beside calsync's
            try:
                cal, poll, cal_changes = calsync_phase(emu, worker, mailboxes, steps, args, tmp)
                live, poll_changes = poller_phase(emu, worker, steps, seconds)
                poll.update(live)
            finally:
                worker.close()
    finally:
        emu.stop()
    poll["latency"] = summary(latencies(poll_changes))
    poll["unread"] = sum(1 for c in poll_changes if c.synced_at is None)
    cal["latency"] = summary(latencies(cal_changes[: len(steps)]))
    cal["burst"]["latency"] = summary(latencies(cal_changes[len(steps) :]))
    fig = figures(n, args.rate, poll, cal, steps, len(steps))
    show(n, args.rate, seconds, poll, cal, fig)
    poll["idle"].pop("visits")
    run = {"mailboxes": n, "database": args.database, "rate": args.rate, "seconds": seconds, "changes": len(steps)}
    run["threads"] = THREADS
    per_change = {
        name: [[c.seq, c.kind, c.mailbox, c.latency] for c in found]
        for name, found in (("calsync", cal_changes), ("poller_60", poll_changes))
    }
    legend = "measured: poller.idle/live/burst, calsync.*; computed: figures.* (per hour, models)"
    write_results(
        output, args.quick, console, **run, legend=legend, poller=poll, calsync=cal, figures=fig, per_change=per_change
    )


if __name__ == "__main__":
    main()

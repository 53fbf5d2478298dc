"""Sync throughput with 1, 2 and 4 ``calsync worker`` processes sharing one PostgreSQL database.

    python -m bench.scale_out            # 1,000 mailboxes x 20 appointments; 1, 2 and 4 workers
    python -m bench.scale_out --quick    # 200 mailboxes x 10 appointments (a few minutes)
    python -m bench.scale_out --profile  # then profile one worker's passes (pyinstrument), see below

For each worker count N, on a fresh emulator (in this process) and a fresh PostgreSQL schema, M enabled operators
are stored with ProcessPushNotifications switched off, and N ``calsync worker`` processes (4 sync threads each)
start and sit idle, so that their start-up (imports, connections) is neither measured nor competing. Then:

1. **initial**: every mailbox is marked dirty (as a new subscription does); the job is switched on (with a NOTIFY,
   so the workers wake at once) and the workers run every initial sync; measured until every mailbox is done.
2. **incremental**: with the job off again, C new appointments are created in every mailbox and every mailbox is
   marked dirty (what the listener does for a push); the job is switched on and the workers run one pass each.

Notifications are not delivered by push here: the listener's intake is measured by bench.listener, and
ManagePushSubscriptions is switched off so that the workers only run passes. Throughput is counted from the moment
the work is released to the last ``mailbox_work.last_pass_finished``. The CPU seconds used meanwhile by the
emulator (this process), the workers and PostgreSQL, and by the whole machine, show where the cores go: the
emulator shares them with the workers (as does anything else running on the machine), so the speed-up is a lower
bound of what separate machines would give; "if alone" (cores / CPU per pass) is computed from them. PostgreSQL's
own counters for mailbox_work give the scans and rows read per pass.

``--profile`` afterwards runs one pass loop (the worker's own code path: ``Runtime`` + ``run_available``, one
thread, the main one) in a child process under pyinstrument for both phases, and stores the text reports in
bench/results/scale_out-profile.json. Results go to bench/results/scale_out.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, select, text

from bench.common import write_results
from bench.latency import PASSWORD, USER, as_utc, prepare, settings_for
from bench.listener import clean_env, free_port, postgres_schema
from calsync.emulator import Emulator
from calsync.store import jobs as job_store
from calsync.store import work
from calsync.store.db import Database
from calsync.store.tables import Operator

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
console = Console()


# --- processes --------------------------------------------------------------------------------------------------------


def bench_env(settings: dict[str, str]) -> dict[str, str]:
    """The environment of a calsync child: only the given settings, and this tree importable (bench.* wrappers)."""
    env = clean_env(**settings)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


@contextlib.contextmanager
def processes(commands: list[list[str]], env: dict[str, str], cwd: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start each command (output to files in ``cwd``), yield them, then stop them (SIGTERM, then SIGKILL)."""
    procs: list[subprocess.Popen[bytes]] = []
    with contextlib.ExitStack() as files:
        try:
            for command in commands:
                log = files.enter_context(open(Path(cwd) / f"process-{time.monotonic_ns()}.log", "wb"))
                procs.append(subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT))
            yield procs
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


def logs(cwd: str) -> list[str]:
    return [path.read_text(errors="replace") for path in sorted(Path(cwd).glob("process-*.log"))]


def wait_ready(procs: list[subprocess.Popen[bytes]], cwd: str, marker: str, timeout: float = 120) -> None:
    """Until every child has printed ``marker`` (started and idle), or fail with what they wrote."""
    deadline = time.monotonic() + timeout
    while sum(marker in text for text in logs(cwd)) < len(procs):
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            raise RuntimeError("a calsync process did not start:\n" + "\n".join(t[-1500:] for t in logs(cwd)))
        time.sleep(0.1)


def cpu_seconds(proc: psutil.Process) -> float:
    try:
        times = proc.cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def postgres_cpu() -> dict[int, float]:
    """CPU seconds per PostgreSQL server process now running (other users of the server included)."""
    return {
        proc.pid: cpu_seconds(proc)
        for proc in psutil.process_iter(["name"])
        if (proc.info.get("name") or "").startswith("postgres")
    }


def machine_busy() -> float:
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


class CpuMeter:
    """CPU seconds used from now to :meth:`stop` by this process (the emulator), the given children and
    PostgreSQL (backends that exit meanwhile are missed; other clients of the server are counted)."""

    def __init__(self, children: list[int]) -> None:
        self.started = time.monotonic()
        self.children = {pid: cpu_seconds(psutil.Process(pid)) for pid in children}
        self.me = cpu_seconds(psutil.Process())
        self.postgres = postgres_cpu()
        self.busy = machine_busy()

    def stop(self) -> dict[str, float]:
        elapsed = time.monotonic() - self.started
        postgres = postgres_cpu()
        return {
            "emulator_s": cpu_seconds(psutil.Process()) - self.me,
            "calsync_s": sum(cpu_seconds(psutil.Process(pid)) - t for pid, t in self.children.items()),
            "postgres_s": sum(t - self.postgres.get(pid, 0.0) for pid, t in postgres.items()),
            "machine_busy_s": machine_busy() - self.busy,
            "machine_capacity_s": elapsed * (psutil.cpu_count() or 1),
        }


# --- the database -----------------------------------------------------------------------------------------------------


def prepare_paused(url: str, settings: dict[str, str], mailboxes: list[str], cwd: str) -> None:
    """Operators enabled, every mailbox dirty (owing its initial sync), ManagePushSubscriptions off (the workers
    only run passes) and ProcessPushNotifications paused until :func:`release_work`."""
    prepare(url, settings, mailboxes, cwd)
    with database(url) as db, db.transaction() as session:
        job_store.set_enabled(session, job_store.MANAGE_SUBSCRIPTIONS, False)
        job_store.set_enabled(session, job_store.PROCESS_NOTIFICATIONS, False)
    mark_all_dirty(url)


@contextlib.contextmanager
def database(url: str) -> Iterator[Database]:
    db = Database(url)
    try:
        yield db
    finally:
        db.dispose()


def mark_all_dirty(url: str) -> None:
    with database(url) as db, db.transaction() as session:
        for operator_id in session.scalars(select(Operator.id)).all():
            work.mark_dirty(session, operator_id)


def set_processing(url: str, enabled: bool) -> datetime:
    """Let the workers claim mailboxes (and wake them at once through NOTIFY), or stop them claiming."""
    with database(url) as db:
        with db.transaction() as session:
            job_store.set_enabled(session, job_store.PROCESS_NOTIFICATIONS, enabled)
            db.wake(session)
        return datetime.now(UTC)


def progress(engine: Any) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE dirty_gen > done_gen OR full_sync OR lease_owner IS NOT NULL), "
                "coalesce(sum(passes), 0), max(last_pass_finished) FROM mailbox_work"
            )
        ).one()
        appointments = conn.execute(text("SELECT count(*) FROM appointments")).scalar_one()
    return {"waiting": row[0], "passes": int(row[1]), "last": row[2], "appointments": appointments}


def work_table_reads(engine: Any) -> dict[str, int]:
    """PostgreSQL's counters for the mailbox_work table of this schema (flushed by each backend within a second
    or so of its transactions): sequential scans and the rows they read, index scans."""
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT seq_scan, seq_tup_read, coalesce(idx_scan, 0) FROM pg_stat_user_tables "
                "WHERE relname = 'mailbox_work' AND schemaname = current_schema()"
            )
        ).one()
    return {"seq_scans": int(row[0]), "seq_rows_read": int(row[1]), "index_scans": int(row[2])}


def errors_since(engine: Any, since: datetime) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT last_error_code, count(*) FROM operators WHERE last_error_at >= :since GROUP BY 1"),
            {"since": since.replace(tzinfo=None)},
        ).all()
    return {str(code): int(n) for code, n in rows}


# --- one phase --------------------------------------------------------------------------------------------------------


@dataclass
class Phase:
    workers: int
    threads: int
    phase: str  # initial or incremental
    mailboxes: int
    passes: int
    appointments: int  # stored (initial) or new ones synced (incremental)
    seconds: float  # work released .. last pass finished
    passes_per_second: float
    appointments_per_second: float
    errors: dict[str, int]
    cpu: dict[str, float]
    cpu_ms_per_pass: dict[str, float]  # emulator, calsync (all worker processes), PostgreSQL, total
    passes_per_second_cpu_bound: float  # computed: the cores / total CPU per pass, as if nothing else ran
    mailbox_work_per_pass: dict[str, float]  # PostgreSQL's scans of mailbox_work (this bench's polls taken out)
    speedup: float | None = None  # passes/s vs the same phase with 1 worker


def run_phase(name: str, procs: list[subprocess.Popen[bytes]], threads: int, url: str, count: int) -> Phase:
    """Release the work to the (idle, started) workers and wait until every mailbox has had its pass."""
    engine = create_engine(url)
    before, reads = progress(engine), work_table_reads(engine)
    meter = CpuMeter([p.pid for p in procs])
    released = set_processing(url, True)
    timeout = 120 + count * 2.0
    deadline = time.monotonic() + timeout
    polls = 0
    while True:
        polls += 1
        now = progress(engine)
        if now["waiting"] == 0 and now["passes"] - before["passes"] >= count:
            break
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            raise RuntimeError(f"{name}: a worker exited or not done in {timeout:.0f} s ({now['waiting']} waiting)")
        time.sleep(0.1)
    cpu = meter.stop()
    set_processing(url, False)
    errors = errors_since(engine, released)
    time.sleep(2)  # let the workers' backends flush their table counters
    after = work_table_reads(engine)
    engine.dispose()
    seconds = (as_utc(now["last"]) - released).total_seconds()
    passes = now["passes"] - before["passes"]
    items = now["appointments"] - before["appointments"]
    per_pass = {k.removesuffix("_s"): cpu[k] / passes * 1000 for k in ("emulator_s", "calsync_s", "postgres_s")}
    per_pass["total"] = sum(per_pass.values())
    cores = psutil.cpu_count() or 1
    polled = {"seq_scans": polls, "seq_rows_read": polls * count, "index_scans": 0}  # progress(): one seq scan each
    scans = {k: (after[k] - reads[k] - polled[k]) / passes for k in after}
    return Phase(
        len(procs),
        threads,
        name,
        count,
        passes,
        items,
        seconds,
        passes / seconds,
        items / seconds,
        errors,
        cpu,
        per_pass,
        cores * 1000 / per_pass["total"],
        scans,
    )


# --- the emulator -----------------------------------------------------------------------------------------------------


def emulator(mailboxes: list[str], appointments: int) -> Emulator:
    emu = Emulator(accounts={USER: PASSWORD})
    for n, address in enumerate(mailboxes):
        emu.add_mailbox(address, populate_count=appointments, seed=n)
    return emu.start()


def make_changes(emu: Emulator, mailboxes: list[str], per_mailbox: int, tag: str) -> int:
    start = (datetime.now(UTC) + timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    for address in mailboxes:
        hands = emu.outlook(address)
        for n in range(per_mailbox):
            when = start + timedelta(hours=n)
            spec = {"subject": f"scale-out {tag} {n}", "start": when, "end": when + timedelta(minutes=30)}
            hands.create(spec, send_invitations=False)
    return per_mailbox * len(mailboxes)


@contextlib.contextmanager
def paused_setup(mailboxes: list[str], appointments: int) -> Iterator[tuple[Emulator, str, dict[str, str], str]]:
    """A fresh emulator and PostgreSQL schema, every mailbox owing its initial sync, processing paused:
    yields the emulator, the database URL, the children's environment and a working directory."""
    emu = emulator(mailboxes, appointments)
    try:
        with tempfile.TemporaryDirectory(prefix="calsync-bench-") as tmp, postgres_schema() as url:
            settings = settings_for(url, emu.url, free_port())  # the listener URL is never called here
            prepare_paused(url, settings, mailboxes, tmp)
            yield emu, url, bench_env(settings), tmp
    finally:
        emu.stop()


def run_count(workers: int, args: argparse.Namespace, mailboxes: list[str]) -> list[Phase]:
    """Both phases with ``workers`` worker processes, on a fresh emulator and schema."""
    command = [sys.executable, "-m", "calsync", "worker", "--create-database", "--threads", str(args.threads)]
    with (
        paused_setup(mailboxes, args.appointments) as (emu, url, env, tmp),
        processes([command] * workers, env, tmp) as procs,
    ):
        wait_ready(procs, tmp, "calsync worker running")
        initial = run_phase("initial", procs, args.threads, url, len(mailboxes))
        report(initial)
        make_changes(emu, mailboxes, args.changes, f"w{workers}")
        mark_all_dirty(url)
        incremental = run_phase("incremental", procs, args.threads, url, len(mailboxes))
        report(incremental)
    return [initial, incremental]


def report(p: Phase) -> None:
    cpu = p.cpu
    console.print(
        f"  {p.phase:<11} {p.workers} worker(s): {p.passes} passes in {p.seconds:.1f} s = {p.passes_per_second:.1f}"
        f" passes/s, {p.appointments_per_second:.0f} appointments/s; CPU s: emulator {cpu['emulator_s']:.1f}, "
        f"calsync {cpu['calsync_s']:.1f}, PostgreSQL {cpu['postgres_s']:.1f}, machine {cpu['machine_busy_s']:.1f} "
        f"of {cpu['machine_capacity_s']:.1f}; per pass: {p.cpu_ms_per_pass['total']:.0f} ms CPU in all (calsync "
        f"{p.cpu_ms_per_pass['calsync']:.0f}), mailbox_work rows read by sequential scans "
        f"{p.mailbox_work_per_pass['seq_rows_read']:,.0f}" + (f"; errors {p.errors}" if p.errors else "")
    )


# --- profile ----------------------------------------------------------------------------------------------------------


def profiled_worker(output: Path) -> None:
    """In a child process: the worker's pass loop in the main thread under pyinstrument, until no work is left;
    also counts the SQL statements, the connection checkouts (each one a liveness ping: ``pool_pre_ping``) and
    the EWS requests per pass."""
    from pyinstrument import Profiler
    from sqlalchemy import event

    from calsync.runtime import Runtime
    from calsync.settings import load_settings

    runtime = Runtime(load_settings(require_credentials=True), threads=1)
    runtime.prepare()
    counts = {"statements": 0, "checkouts": 0}

    def statement(*_: object) -> None:
        counts["statements"] += 1

    def checkout(*_: object) -> None:
        counts["checkouts"] += 1

    event.listen(runtime.db.engine, "before_cursor_execute", statement)
    event.listen(runtime.db.engine, "checkout", checkout)
    source = runtime.sources.for_operator("ews")
    requests_before = source.stats.requests  # type: ignore[attr-defined]
    profiler = Profiler(interval=0.001)
    started = time.perf_counter()
    cpu = time.process_time()
    with profiler:
        runtime.processor.run_available()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    passes = runtime.processor.passes
    requests = source.stats.requests - requests_before  # type: ignore[attr-defined]
    runtime.close()
    output.write_text(
        json.dumps(
            {
                "passes": passes,
                "seconds": seconds,
                "cpu_seconds": cpu,
                "per_pass": {
                    "sql_statements": counts["statements"] / passes,
                    "connection_checkouts": counts["checkouts"] / passes,
                    "ews_requests": requests / passes,
                    "wall_ms": seconds / passes * 1000,
                    "cpu_ms": cpu / passes * 1000,
                },
                "tree": profiler.output_text(unicode=False, color=False),
                "flat": profiler.output_text(unicode=False, color=False, flat=True),
            }
        )
    )


def profile(args: argparse.Namespace) -> dict[str, Any]:
    count = min(args.mailboxes, args.profile_mailboxes)
    mailboxes = [f"user{i}@example.com" for i in range(1, count + 1)]
    console.print(f"[bold]profile[/bold]: the pass loop in one thread, {count} mailboxes, pyinstrument")
    out: dict[str, Any] = {}
    with paused_setup(mailboxes, args.appointments) as (emu, url, env, tmp):
        for phase in ("initial", "incremental"):
            if phase == "incremental":
                make_changes(emu, mailboxes, args.changes, "profile")
                mark_all_dirty(url)
            set_processing(url, True)
            result = Path(tmp) / f"profile-{phase}.json"
            command = [sys.executable, "-m", "bench.scale_out", "--profiled-worker", str(result)]
            subprocess.run(command, env=env, cwd=tmp, check=True, timeout=900)
            set_processing(url, False)
            out[phase] = json.loads(result.read_text())
            per = out[phase]["per_pass"]
            console.print(
                f"  {phase}: {out[phase]['passes']} passes in {out[phase]['seconds']:.1f} s under the profiler; per "
                f"pass: {per['wall_ms']:.0f} ms wall, {per['cpu_ms']:.0f} ms CPU, {per['sql_statements']:.1f} SQL "
                f"statements, {per['connection_checkouts']:.1f} connection checkouts (pings), "
                f"{per['ews_requests']:.1f} EWS requests"
            )
    return out


# --- main -------------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200 mailboxes x 10 appointments (CI)")
    parser.add_argument("--mailboxes", type=int, default=None, help="mailboxes (default 1,000; quick 200)")
    parser.add_argument("--appointments", type=int, default=None, help="appointments per mailbox (20; quick 10)")
    parser.add_argument("--changes", type=int, default=2, help="new appointments per mailbox before the second phase")
    parser.add_argument("--workers", default="1,2,4", help="worker process counts, comma separated")
    parser.add_argument("--threads", type=int, default=4, help="sync threads per worker (calsync's default: 4)")
    parser.add_argument("--profile", action="store_true", help="also profile one worker's pass loop (pyinstrument)")
    parser.add_argument("--profile-mailboxes", type=int, default=200, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=RESULTS / "scale_out.json")
    parser.add_argument("--profiled-worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profiled_worker is not None:
        profiled_worker(args.profiled_worker)
        return
    args.mailboxes = args.mailboxes or (200 if args.quick else 1000)
    args.appointments = args.appointments or (10 if args.quick else 20)
    counts = [int(n) for n in args.workers.split(",")]
    mailboxes = [f"user{i}@example.com" for i in range(1, args.mailboxes + 1)]
    cores = psutil.cpu_count() or 1

    console.print(
        f"[bold]scale-out[/bold]: {args.mailboxes} mailboxes x {args.appointments} appointments, "
        f"{', '.join(map(str, counts))} worker process(es) x {args.threads} threads, PostgreSQL; {cores} cores "
        "shared by the emulator, the workers and PostgreSQL"
    )
    phases: list[Phase] = []
    for workers in counts:
        console.print(f"[bold]{workers} worker(s)[/bold]")
        phases += run_count(workers, args, mailboxes)
    for p in phases:
        base = next((b for b in phases if b.phase == p.phase and b.workers == counts[0]), None)
        p.speedup = p.passes_per_second / base.passes_per_second if base else None

    table = Table(title=f"Scale-out on PostgreSQL, {args.mailboxes} mailboxes, {cores} cores shared with the emulator")
    columns = (
        "phase",
        "workers",
        "passes/s",
        "appointments/s",
        "vs 1 worker",
        "CPU ms/pass emu/calsync/pg",
        "machine busy",
        "passes/s if alone (computed)",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "phase" else "right")
    for p in phases:
        cpu, per = p.cpu, p.cpu_ms_per_pass
        table.add_row(
            p.phase,
            str(p.workers),
            f"{p.passes_per_second:.1f}",
            f"{p.appointments_per_second:.0f}",
            f"{p.speedup:.2f}" if p.speedup is not None else "",
            f"{per['emulator']:.0f} / {per['calsync']:.0f} / {per['postgres']:.0f}",
            f"{cpu['machine_busy_s'] / cpu['machine_capacity_s']:.0%}",
            f"{p.passes_per_second_cpu_bound:.0f}",
        )
    console.print(table)
    console.print(
        f"note: the machine has {cores} cores; the emulator (this process), the worker processes and PostgreSQL "
        "share them (and whatever else runs on the machine: 'machine busy'), so more workers mostly compete for the "
        "same CPU and the speed-up is a lower bound. 'if alone' = cores / CPU per pass: what this machine would do "
        "with nothing else running."
    )
    profiles = profile(args) if args.profile else None
    write_results(
        args.output,
        args.quick,
        console,
        mailboxes=args.mailboxes,
        appointments_each=args.appointments,
        changes_each=args.changes,
        threads_per_worker=args.threads,
        database="postgresql",
        note=f"{cores} cores shared by the in-process emulator, the worker processes and PostgreSQL",
        runs=[asdict(p) for p in phases],
    )
    if profiles is not None:
        write_results(args.output.with_name(args.output.stem + "-profile.json"), args.quick, console, **profiles)


if __name__ == "__main__":
    main()

"""Resident memory of ``calsync serve`` and of ``calsync worker`` with many subscribed mailboxes.

    python -m bench.memory              # 1,000 and 10,000 mailboxes (the aim: under 300 MB at 10,000)
    python -m bench.memory --quick      # 100 and 1,000 mailboxes, 10 s of changes
    python -m bench.memory --tracemalloc --sizes 10000 --roles serve   # what holds the memory (slower)

For each size M and each role, on a fresh emulator (in this process, M empty mailboxes) and a fresh
PostgreSQL schema, M enabled operators are stored and calsync is started as it runs in production:

- ``serve``: one ``calsync serve`` (listener, calendar API and both jobs);
- ``worker``: ``calsync serve --no-jobs`` (the listener) plus one ``calsync worker`` (the jobs).

calsync subscribes every mailbox and runs every initial sync (setup); then a light stream of changes flows
(``--rate`` changes per second for ``--seconds``, the same stream as bench.latency: creates and updates in
random mailboxes, pushed by the emulator to the listener). The resident set size (RSS) of each calsync process
is sampled every half second from its start: **peak** is the highest sample over the whole run (setup
included), **steady** the median of the samples while the changes flow. Results go to bench/results/memory.json.

At the end of the steady state each process's memory maps split its RSS into anonymous memory (the Python heap,
malloc arenas, thread stacks) and mapped files (the interpreter, C extensions, shared libraries), with its unique
set size (USS): that says how much of the figure is calsync's data and how much the code it loads.

``--tracemalloc`` runs the ``serve`` process under tracemalloc (through this module as a wrapper, keeping
``--frames`` frames per allocation: 1 by default, since deeper traces make the setup many times slower) and,
during the steady state, takes a snapshot: the biggest allocation sites by line and by package, and a census of
the live objects by type (bench/results/memory-tracemalloc.json). Its RSS is then not comparable (tracemalloc's
own bookkeeping), so it is a separate run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine

from bench.common import write_results
from bench.latency import PASSWORD, USER, Poller, prepare, settings_for, stream, wait_settled
from bench.listener import free_port, postgres_schema, server
from bench.scale_out import RESULTS, bench_env, processes
from calsync.emulator import Emulator

AIM_MB = 300.0
console = Console()


# --- sampling ---------------------------------------------------------------------------------------------------------


@dataclass
class Sample:
    seconds: float
    phase: str  # setup or steady
    rss_mb: dict[str, float]


@dataclass
class Sampler:
    """Samples the resident set size of named processes every ``interval`` seconds, in a thread."""

    pids: dict[str, int]
    interval: float = 0.5
    phase: str = "setup"
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        procs = {name: psutil.Process(pid) for name, pid in self.pids.items()}
        while not self._stop.is_set():
            rss: dict[str, float] = {}
            for name, proc in procs.items():
                with contextlib.suppress(psutil.Error):
                    rss[name] = proc.memory_info().rss / 2**20
            self.samples.append(Sample(time.monotonic() - self._started, self.phase, rss))
            self._stop.wait(self.interval)

    def summary(self, name: str) -> dict[str, float]:
        every = [s.rss_mb[name] for s in self.samples if name in s.rss_mb]
        setup = [s.rss_mb[name] for s in self.samples if name in s.rss_mb and s.phase == "setup"]
        steady = [s.rss_mb[name] for s in self.samples if name in s.rss_mb and s.phase == "steady"]
        if not steady:
            raise RuntimeError(f"no steady-state sample of {name}")
        return {
            "peak_mb": max(every),
            "setup_peak_mb": max(setup or [0.0]),
            "steady_mb": statistics.median(steady),
            "steady_max_mb": max(steady),
            "steady_growth_mb": steady[-1] - steady[0],
            "samples": len(every),
            "steady_from_s": round(next(s.seconds for s in self.samples if s.phase == "steady"), 1),
            "series": [[round(s.seconds, 1), round(s.rss_mb[name], 1)] for s in self.samples if name in s.rss_mb],
        }


def breakdown(pid: int) -> dict[str, Any]:
    """What the resident set of ``pid`` is made of, from its memory maps: anonymous memory (the Python heap,
    malloc arenas, thread stacks) beside mapped files (the interpreter, C extensions and shared libraries, partly
    shared with other processes); and its unique set size (USS: what ending it would give back)."""
    proc = psutil.Process(pid)
    kinds: dict[str, float] = {}
    biggest: list[tuple[float, str]] = []
    for m in proc.memory_maps(grouped=True):
        if not m.path or m.path.startswith("["):
            kind = "anonymous (Python objects, malloc arenas, thread stacks)"
        elif ".so" in Path(m.path).name:
            kind = "shared libraries and C extensions (.so)"
        else:
            kind = "other mapped files (interpreter, data)"
        kinds[kind] = kinds.get(kind, 0.0) + m.rss / 2**20
        biggest.append((m.rss / 2**20, m.path.split("site-packages/")[-1] or "[anonymous]"))
    biggest.sort(reverse=True)
    return {
        "uss_mb": proc.memory_full_info().uss / 2**20,
        "rss_by_kind_mb": {k: round(v, 1) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
        "biggest_mappings_mb": [{"path": path, "mb": round(mb, 1)} for mb, path in biggest[:8]],
    }


# --- tracemalloc ------------------------------------------------------------------------------------------------------


def traced(output: Path, frames: int, argv: list[str]) -> None:
    """Run the calsync command line under tracemalloc (``frames`` deep); SIGUSR1 writes a snapshot's biggest
    holders and a census of the live objects by type to ``output``."""
    import gc
    import tracemalloc

    tracemalloc.start(frames)
    src = str(Path(__file__).resolve().parent.parent / "src" / "calsync")

    def where(frame: tracemalloc.Frame) -> str:
        return f"{frame.filename.split('site-packages/')[-1].replace(src, 'calsync')}:{frame.lineno}"

    taken: list[tracemalloc.Snapshot] = []  # every snapshot so far: the first shows what grew since

    def dump(*_: object) -> None:
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        growth = [
            {"where": where(d.traceback[-1]), "mb": round(d.size_diff / 2**20, 3), "blocks": d.count_diff}
            for d in (snapshot.compare_to(taken[0], "lineno")[:20] if taken else [])
        ]
        taken.append(snapshot)
        by_package: dict[str, int] = {}
        by_calsync: dict[str, int] = {}
        for stat in snapshot.statistics("traceback"):
            innermost = stat.traceback[-1].filename
            package = innermost.split("site-packages/")[-1].split("/")[0] if "site-packages/" in innermost else None
            package = package or ("calsync" if innermost.startswith(src) else "python (stdlib, interpreter)")
            by_package[package] = by_package.get(package, 0) + stat.size
            ours = next((f for f in reversed(stat.traceback) if f.filename.startswith(src)), None)
            key = where(ours) if ours is not None else "(no calsync frame)"
            by_calsync[key] = by_calsync.get(key, 0) + stat.size
        current, peak = tracemalloc.get_traced_memory()
        census: dict[str, int] = {}
        for obj in gc.get_objects():
            name = f"{type(obj).__module__}.{type(obj).__qualname__}"
            census[name] = census.get(name, 0) + 1

        def top(counts: dict[str, int], n: int) -> list[dict[str, Any]]:
            ordered = sorted(counts.items(), key=lambda kv: -kv[1])[:n]
            return [{"where": k, "mb": round(v / 2**20, 2)} for k, v in ordered]

        output.write_text(
            json.dumps(
                {
                    "snapshot": len(taken),
                    "growth_since_first_snapshot": growth,
                    "traced_mb": round(current / 2**20, 1),
                    "traced_peak_mb": round(peak / 2**20, 1),
                    "tracemalloc_overhead_mb": round(tracemalloc.get_tracemalloc_memory() / 2**20, 1),
                    "rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
                    "frames": frames,
                    "objects_by_type": sorted(census.items(), key=lambda kv: -kv[1])[:30],
                    "by_package": top(by_package, 15),
                    "by_calsync_code": top(by_calsync, 25),
                    "by_line": [
                        {"where": where(s.traceback[-1]), "mb": round(s.size / 2**20, 2), "blocks": s.count}
                        for s in snapshot.statistics("lineno")[:30]
                    ],
                    "by_traceback": [
                        {"mb": round(s.size / 2**20, 2), "blocks": s.count, "stack": [where(f) for f in s.traceback]}
                        for s in snapshot.statistics("traceback")[:12]
                    ],
                },
                indent=1,
            )
        )

    signal.signal(signal.SIGUSR1, dump)
    from calsync.cli import app

    sys.argv = ["calsync", *argv]
    app()


def snapshot(pid: int, output: Path, number: int, timeout: float = 600) -> dict[str, Any]:
    """Ask the traced process for its ``number``-th snapshot and wait for it."""
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            found = dict(json.loads(output.read_text()))
            if found.get("snapshot") == number:
                return found
        time.sleep(0.5)
    raise RuntimeError(f"no tracemalloc snapshot from {pid} in {timeout:.0f} s")


# --- one run ----------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def calsync_processes(
    role: str, env: dict[str, str], tmp: str, port: int, trace: Path | None, frames: int
) -> Iterator[dict[str, int]]:
    """The processes of ``role`` running; yields their pids by name."""
    calsync = [sys.executable, "-m", "calsync"]
    if role == "serve":
        if trace is not None:
            calsync = [sys.executable, "-m", "bench.memory", "--traced", str(trace), str(frames)]
        with server([*calsync, "serve", "--create-database", "--port", str(port)], env, tmp, port) as proc:
            yield {"calsync serve": proc.pid}
        return
    with (
        server([*calsync, "serve", "--create-database", "--no-jobs", "--port", str(port)], env, tmp, port) as listener,
        processes([[*calsync, "worker", "--create-database"]], env, tmp) as (worker,),
    ):
        yield {"calsync worker": worker.pid, "calsync serve --no-jobs": listener.pid}


def run(role: str, count: int, args: argparse.Namespace) -> dict[str, Any]:
    mailboxes = [f"user{i}@example.com" for i in range(1, count + 1)]
    console.print(f"[bold]{role}[/bold], {count:,} mailboxes")
    emu = Emulator(accounts={USER: PASSWORD}, mailboxes=mailboxes).start()
    out: dict[str, Any] = {"role": role, "mailboxes": count}
    try:
        with tempfile.TemporaryDirectory(prefix="calsync-bench-") as tmp, postgres_schema() as url:
            port = free_port()
            settings = settings_for(url, emu.url, port)
            prepare(url, settings, mailboxes, tmp)
            engine = create_engine(url)
            trace = Path(tmp) / "tracemalloc.json" if args.tracemalloc else None
            with (
                calsync_processes(role, bench_env(settings), tmp, port, trace, args.frames) as pids,
                Sampler(pids) as sampler,
            ):
                out["setup_seconds"] = wait_settled(engine, count, 300 + count * 0.5)
                console.print(f"  subscribed and initially synced in {out['setup_seconds']:.1f} s")
                sampler.phase = "steady"
                if trace is not None:
                    snapshot(pids["calsync serve"], trace, 1)  # the steady state's start, to see what grows
                poller = Poller(engine, {})
                poller.start()
                try:
                    changes = stream(emu, mailboxes, args.rate, args.seconds, poller)
                    deadline = time.monotonic() + 60
                    while any(c.synced_at is None for c in changes) and time.monotonic() < deadline:
                        time.sleep(0.1)
                finally:
                    poller.stop.set()
                    poller.join()
                out["breakdown"] = {name: breakdown(pid) for name, pid in pids.items()}
                if trace is not None:
                    out["tracemalloc"] = snapshot(pids["calsync serve"], trace, 2)
            engine.dispose()
    finally:
        emu.stop()
    out["changes"] = len(changes)
    out["changes_seen_stored"] = sum(c.synced_at is not None for c in changes)
    out["processes"] = {name: sampler.summary(name) for name in pids}
    for name, figures in out["processes"].items():
        parts = ", ".join(f"{k.split(' (')[0]} {v:.0f}" for k, v in out["breakdown"][name]["rss_by_kind_mb"].items())
        console.print(
            f"  {name}: peak {figures['peak_mb']:.0f} MB, steady {figures['steady_mb']:.0f} MB "
            f"(growth over the steady phase {figures['steady_growth_mb']:+.1f} MB); at the end: "
            f"USS {out['breakdown'][name]['uss_mb']:.0f} MB; RSS MB by kind: {parts}"
        )
    return out


# --- main -------------------------------------------------------------------------------------------------------------


def main() -> None:
    if sys.argv[1:2] == ["--traced"]:
        traced(Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 mailboxes, 10 s of changes (CI)")
    parser.add_argument("--sizes", default=None, help="mailbox counts, comma separated (default 1000,10000)")
    parser.add_argument("--roles", default="serve,worker", help="serve, worker or both (comma separated)")
    parser.add_argument("--rate", type=float, default=2.0, help="changes per second in the steady state")
    parser.add_argument("--seconds", type=float, default=None, help="seconds of changes (default 30; quick 10)")
    parser.add_argument("--tracemalloc", action="store_true", help="snapshot what holds serve's memory (slower)")
    parser.add_argument("--frames", type=int, default=1, help="tracemalloc: frames kept per allocation (cost!)")
    parser.add_argument("--output", type=Path, default=None, help="default bench/results/memory.json")
    args = parser.parse_args()
    sizes = [int(n) for n in (args.sizes or ("100,1000" if args.quick else "1000,10000")).split(",")]
    roles = [r.strip() for r in args.roles.split(",")]
    if any(r not in ("serve", "worker") for r in roles):
        parser.error("--roles: serve and/or worker")
    if args.tracemalloc and "serve" not in roles:
        parser.error("--tracemalloc traces the serve role")
    args.seconds = args.seconds or (10.0 if args.quick else 30.0)
    output = args.output or RESULTS / ("memory-tracemalloc.json" if args.tracemalloc else "memory.json")

    console.print(
        f"[bold]memory[/bold]: {', '.join(f'{n:,}' for n in sizes)} mailboxes; {', '.join(roles)}; "
        f"{args.rate:g} changes/s for {args.seconds:g} s in the steady state; PostgreSQL"
    )
    results = [run(role, count, args) for count in sizes for role in roles]

    table = Table(title="Resident memory of calsync (MB)" + (" under tracemalloc" if args.tracemalloc else ""))
    for column in ("mailboxes", "process", "steady MB", "peak MB", "steady growth MB", "setup s", f"vs {AIM_MB:.0f}"):
        table.add_column(column, justify="left" if column == "process" else "right")
    for r in results:
        for name, f in r["processes"].items():
            table.add_row(
                f"{r['mailboxes']:,}",
                name,
                f"{f['steady_mb']:.0f}",
                f"{f['peak_mb']:.0f}",
                f"{f['steady_growth_mb']:+.1f}",
                f"{r['setup_seconds']:.0f}",
                f"{f['peak_mb'] / AIM_MB:.2f}",
            )
    console.print(table)
    if args.tracemalloc:
        for r in results:
            tm = r.get("tracemalloc") or {}
            console.print(f"tracemalloc, serve at {r['mailboxes']:,}: {tm.get('traced_mb')} MB traced")
            for entry in tm.get("by_calsync_code", [])[:10]:
                console.print(f"  {entry['mb']:8.1f} MB  {entry['where']}")
    write_results(
        output,
        args.quick,
        console,
        sizes=sizes,
        rate=args.rate,
        seconds=args.seconds,
        aim_mb=AIM_MB,
        database="postgresql",
        tracemalloc=args.tracemalloc,
        results=results,
    )


if __name__ == "__main__":
    main()

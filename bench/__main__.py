"""Run every benchmark, one after another, each as its own process; then a summary and the latency plot.

    python -m bench                       # everything at full size (hours on a 2-core machine)
    python -m bench --quick               # every benchmark's --quick variant
    python -m bench --only scale_out memory
    python -m bench --summary             # only the summary of the results already in bench/results

Each benchmark writes its figures to bench/results/*.json; the summary reads them back and shows each one's main
figure beside the figure it is compared with (measured in the same run), with the date it was measured.
A benchmark whose module does not exist yet is skipped with a message; one that fails does not stop the others
(the exit code is then 1).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
console = Console(width=None if sys.stdout.isatty() else 160)  # a wide summary table when piped

Row = tuple[str, str, str, str]  # figure, main value, comparison value, ratio


@dataclass
class Benchmark:
    name: str
    module: str
    result: str  # file name under the results directory
    summarise: Callable[[dict[str, Any]], list[Row]]
    args: list[str] = field(default_factory=list)


# --- summaries: one function per result file ----------------------------------------------------------------------


def row(figure: str, value: float, compared: float, fmt: str = ",.0f", *, shown: str | None = None) -> Row:
    """A summary row: ``value`` beside ``compared`` and their ratio (``shown`` replaces the value's text)."""
    ratio = f"{value / compared:.2f}" if compared else "-"
    return figure, shown or format(value, fmt), format(compared, fmt), ratio


def emulator(d: dict[str, Any]) -> list[Row]:
    ops = {r["operation"]: r["per_second"] for r in d["throughput"]}
    ceiling = ops["GetFolder (ceiling)"]
    rows = [row(f"{name} (req/s) vs GetFolder", value, ceiling) for name, value in ops.items() if "nothing new" in name]
    mem = d["memory"]
    what = f"RSS, {mem['mailboxes']:,} x {mem['appointments_each']} items (MB) vs empty"
    return [*rows, row(what, mem["full_mb"], mem["empty_mb"])]


def listener(d: dict[str, Any]) -> list[Row]:
    ceiling = {r["mode"]: r["per_second"] for r in d["results"] if r["target"] == "ceiling"}
    return [
        row(f"{r['target']} {r['mode']} (acknowledged/s) vs ceiling", r["per_second"], ceiling[r["mode"]])
        for r in d["results"]
        if r["target"] != "ceiling" and r["mode"] == "closed loop"
    ]


LATENCY_AIMS_MS = {"p50": 300.0, "p99": 1500.0}


def latency(d: dict[str, Any]) -> list[Row]:
    """EWS (the keys it always had) beside the floor and the aim; Graph (``graph``, same shape) beside EWS measured
    in the same run, or beside its own floor when EWS was not run."""
    where = f"{d['mailboxes']:,} mailboxes, {d['database']}"
    out: list[Row] = []
    ews: dict[str, Any] | None = None
    if "latency" in d:
        rows = {r["what"]: r for r in d["latency"]}
        ews = rows["change -> committed in calendar"]
        floor = next(r for what, r in rows.items() if what.startswith("floor"))
        out += [
            row(f"p50 change -> committed (ms), {where}, vs floor p50", ews["p50_ms"], floor["p50_ms"]),
            row("p99 change -> committed (ms) vs aim", ews["p99_ms"], LATENCY_AIMS_MS["p99"]),
        ]
    if "graph" in d:
        graph = {r["what"]: r for r in d["graph"]["latency"]}
        total = graph["change -> committed in calendar"]
        if ews is not None:
            out += [
                row(f"Graph p50 change -> committed (ms), {where}, vs EWS p50", total["p50_ms"], ews["p50_ms"]),
                row("Graph p99 change -> committed (ms) vs EWS p99", total["p99_ms"], ews["p99_ms"]),
            ]
        else:
            floor = next(r for what, r in graph.items() if what.startswith("floor"))
            out += [
                row(f"Graph p50 change -> committed (ms), {where}, vs floor p50", total["p50_ms"], floor["p50_ms"]),
                row("Graph p99 change -> committed (ms) vs aim", total["p99_ms"], LATENCY_AIMS_MS["p99"]),
            ]
        per_change = d["graph"]["requests"]["per_change"]
        if "requests" in d:
            ews_per_change = d["requests"]["per_change"]["ews"]
            what = "Graph requests per change (each in a $batch counted) vs EWS requests per change"
            out.append(row(what, per_change["graph"], ews_per_change, ".2f"))
        else:
            out.append(
                row("Graph requests per change (each in a $batch counted) vs aim", per_change["graph"], 2.0, ".2f")
            )
    return out


def initial_sync(d: dict[str, Any]) -> list[Row]:
    size = f"{d['mailboxes']:,} x {d['appointments_each']}, {d['database']}"
    out: list[Row] = []
    if "table" in d:
        r = next(r for r in d["table"] if r["what"] == "items read per second")
        out.append(row(f"items read/s, {size}, vs ceiling", r["calsync"], r["ceiling"]))
        r = next(r for r in d["table"] if r["what"] == "items read per CPU second of that process")
        out.append(row("items read per CPU s vs ceiling (exchangelib)", r["calsync"], r["ceiling"]))
    if "graph" in d:
        r = next(r for r in d["graph"]["table"] if r["what"] == "items read per CPU second of that process")
        out.append(row(f"Graph: items read per CPU s, {size}, vs ceiling (GraphSource)", r["calsync"], r["ceiling"]))
    if "graph_vs_ews" in d:
        f = d["graph_vs_ews"]["calsync_landed_per_cpu_second"]
        out.append(row("Graph: appointments landed per calsync CPU s vs EWS", f["graph"], f["ews"]))
    return out


def cost(d: dict[str, Any]) -> list[Row]:
    fig = d["figures"]
    what = f"EWS requests/hour, {d['mailboxes']:,} mailboxes, vs 300 s poller"
    return [
        row(what, fig["calsync"]["requests_per_hour"], fig["poller_300"]["requests_per_hour"]),
        row("EWS requests per change vs aim", fig["calsync"]["requests_per_change"], 2.0, ".2f"),
    ]


def scale_out(d: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    for phase in ("initial", "incremental"):
        runs = {r["workers"]: r["passes_per_second"] for r in d["runs"] if r["phase"] == phase}
        base = min(runs)
        for n in sorted(runs)[1:]:
            what = f"{phase} passes/s, {n} vs {base} worker(s), {d['mailboxes']:,} mailboxes"
            out.append(row(what, runs[n], runs[base], ",.1f"))
    return out


def memory(d: dict[str, Any]) -> list[Row]:
    largest = max(d["sizes"])
    aim = d.get("aim_mb", 300.0)
    return [
        row(
            f"{name} peak RSS (MB), {largest:,} mailboxes, vs aim",
            f["peak_mb"],
            aim,
            shown=f"{f['peak_mb']:,.0f} (steady {f['steady_mb']:,.0f})",
        )
        for r in d["results"]
        if r["mailboxes"] == largest
        for name, f in r["processes"].items()
        if name != "calsync serve --no-jobs"
    ]


BENCHMARKS = [
    Benchmark("emulator", "bench.emulator", "emulator.json", emulator),
    Benchmark("listener", "bench.listener", "listener.json", listener),
    Benchmark("latency", "bench.latency", "latency.json", latency),
    Benchmark(
        "latency-postgresql",
        "bench.latency",
        "latency-postgresql.json",
        latency,
        ["--database", "postgresql", "--output", str(RESULTS / "latency-postgresql.json")],
    ),
    Benchmark("initial_sync", "bench.initial_sync", "initial_sync.json", initial_sync),
    Benchmark("cost", "bench.cost", "cost.json", cost),
    Benchmark("scale_out", "bench.scale_out", "scale_out.json", scale_out),
    Benchmark("memory", "bench.memory", "memory.json", memory),
]


# --- running ----------------------------------------------------------------------------------------------------------


def selected(only: list[str] | None) -> list[Benchmark]:
    if not only:
        return BENCHMARKS
    known = {b.name for b in BENCHMARKS} | {b.module.removeprefix("bench.") for b in BENCHMARKS}
    unknown = [n for n in only if n not in known]
    if unknown:
        raise SystemExit(f"--only: unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [b for b in BENCHMARKS if b.name in only or b.module.removeprefix("bench.") in only]


def run(benchmark: Benchmark, quick: bool, timeout: float) -> str:
    """Run one benchmark as its own process; its outcome in a word or two."""
    if importlib.util.find_spec(benchmark.module) is None:
        console.print(f"[yellow]{benchmark.name}: {benchmark.module} does not exist yet; skipped[/yellow]")
        return "skipped (no module)"
    command = [sys.executable, "-m", benchmark.module, *benchmark.args, *(["--quick"] if quick else [])]
    console.rule(f"{benchmark.name}: {' '.join(command[1:])}")
    started = time.monotonic()
    try:
        code = subprocess.run(command, cwd=ROOT, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        console.print(f"[red]{benchmark.name}: stopped after {timeout:.0f} s[/red]")
        return "timed out"
    took = time.monotonic() - started
    if code != 0:
        console.print(f"[red]{benchmark.name}: failed (exit code {code}) after {took:.0f} s[/red]")
        return f"failed ({code})"
    return f"ran in {took:.0f} s"


def summary(benchmarks: list[Benchmark], outcomes: dict[str, str], results: Path = RESULTS) -> Table:
    table = Table(title=f"Benchmarks: main figure vs its comparison figure ({results})")
    for column in ("benchmark", "this run", "measured", "figure", "value", "compared with", "ratio"):
        table.add_column(column, justify="right" if column in ("value", "compared with", "ratio") else "left")
    for b in benchmarks:
        outcome = outcomes.get(b.name, "not run")
        path = results / b.result
        if not path.is_file():
            table.add_row(b.name, outcome, "-", f"no {path.name}", "", "", "")
            continue
        try:
            data = json.loads(path.read_text())
            rows = b.summarise(data)
        except (KeyError, ValueError, TypeError, StopIteration) as exc:
            table.add_row(b.name, outcome, "-", f"{path.name}: no summary ({type(exc).__name__}: {exc})", "", "", "")
            continue
        measured = f"{data.get('date', '?')[:16]}{' quick' if data.get('quick') else ''}"
        for n, (figure, value, compared, ratio) in enumerate(rows):
            first = n == 0
            table.add_row(
                b.name if first else "",
                outcome if first else "",
                measured if first else "",
                figure,
                value,
                compared,
                ratio,
            )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="run each benchmark's --quick variant")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these (names as in the summary)")
    parser.add_argument("--summary", action="store_true", help="run nothing; summarise bench/results")
    parser.add_argument("--no-plot", action="store_true", help="do not draw docs/benchmarks-latency.png")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per benchmark (4 h; quick 30 min)")
    args = parser.parse_args()
    benchmarks = selected(args.only)
    timeout = args.timeout or (1800.0 if args.quick else 4 * 3600.0)

    outcomes: dict[str, str] = {}
    if not args.summary:
        for b in benchmarks:
            outcomes[b.name] = run(b, args.quick, timeout)
    console.print(summary(benchmarks, outcomes))
    if not args.no_plot:
        from bench import plot

        try:
            console.print(f"latency plot written to {plot.draw()}")
        except FileNotFoundError as exc:
            console.print(f"[yellow]no latency plot: {exc}[/yellow]")
    if any(o.startswith(("failed", "timed out")) for o in outcomes.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()

"""CI smoke of the benchmarks (bench/): the scale-out and memory benchmarks, and the latency and initial sync
benchmarks through both sources (EWS and Graph), run end to end at tiny sizes and write result files of the
expected shape that the `python -m bench` summary can read.

This checks that the benchmarks still work against the current code (processes start, work gets done, figures
get written); it judges no figure: tiny sizes on a shared CI machine say nothing about performance. The first test
needs the local PostgreSQL the benchmarks use (bench.listener.POSTGRES); the two take about two or three minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def postgres_reachable() -> bool:
    import psycopg

    from bench.listener import POSTGRES

    try:
        with psycopg.connect(POSTGRES.replace("postgresql+psycopg", "postgresql"), connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def run_bench(*args: str, timeout: float) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALSYNC_")}
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.mark.timeout(600)
def test_smoke_quick_scale_out_and_memory_benchmarks_write_sane_results(tmp_path: Path) -> None:
    """Smoke, not a performance check: bench.scale_out (30 mailboxes, 1 and 2 workers) and bench.memory (30
    mailboxes, serve and worker) run with --quick and tiny sizes; their JSON has the fields the docs and the
    summary use, with sane values (throughput > 0, every pass done, RSS > 0, peak >= steady)."""
    if not postgres_reachable():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not reachable for the benchmarks (bench.listener.POSTGRES)")
        pytest.skip("PostgreSQL is not reachable for the benchmarks (bench.listener.POSTGRES)")
    scale_out, memory = tmp_path / "scale_out.json", tmp_path / "memory.json"
    run_bench(
        "bench.scale_out", "--quick", "--mailboxes", "30", "--appointments", "5", "--workers", "1,2",
        "--output", str(scale_out), timeout=300,
    )  # fmt: skip
    run_bench("bench.memory", "--quick", "--sizes", "30", "--seconds", "3", "--output", str(memory), timeout=300)

    s = json.loads(scale_out.read_text())
    assert s["quick"] is True and s["mailboxes"] == 30 and s["database"] == "postgresql"
    assert "cores" in s["note"]  # the report says the emulator shares the cores
    assert {(r["workers"], r["phase"]) for r in s["runs"]} == {
        (w, p) for w in (1, 2) for p in ("initial", "incremental")
    }
    for r in s["runs"]:
        assert r["passes"] >= 30 and r["errors"] == {}, r
        assert r["passes_per_second"] > 0 and r["appointments_per_second"] > 0 and r["seconds"] > 0, r
        assert r["speedup"] > 0 and (r["workers"] != 1 or r["speedup"] == 1.0), r
        assert r["cpu"]["calsync_s"] > 0 and r["cpu"]["machine_capacity_s"] > 0, r
        assert r["cpu_ms_per_pass"]["calsync"] > 0 and r["passes_per_second_cpu_bound"] > 0, r
        assert set(r["mailbox_work_per_pass"]) == {"seq_scans", "seq_rows_read", "index_scans"}, r
    assert next(r for r in s["runs"] if r["phase"] == "incremental")["appointments"] == 30 * 2  # --changes 2

    m = json.loads(memory.read_text())
    assert m["quick"] is True and m["sizes"] == [30] and m["aim_mb"] == 300
    assert {r["role"] for r in m["results"]} == {"serve", "worker"}
    for r in m["results"]:
        assert r["setup_seconds"] > 0 and r["changes"] > 0 and r["changes_seen_stored"] == r["changes"], r
        expected = {"calsync serve"} if r["role"] == "serve" else {"calsync worker", "calsync serve --no-jobs"}
        assert set(r["processes"]) == expected
        for name, figures in r["processes"].items():
            assert 0 < figures["steady_mb"] <= figures["peak_mb"] < 2000, figures
            assert figures["samples"] == len(figures["series"]) > 0
            assert r["breakdown"][name]["uss_mb"] > 0 and r["breakdown"][name]["rss_by_kind_mb"], r["breakdown"]

    from rich.console import Console

    from bench.__main__ import BENCHMARKS, summary

    console = Console(record=True, width=250)
    console.print(summary([b for b in BENCHMARKS if b.name in ("scale_out", "memory")], {}, tmp_path))
    text = console.export_text()
    assert "no summary" not in text and "passes/s" in text and "peak RSS" in text, text


@pytest.mark.timeout(300)
def test_smoke_quick_latency_and_initial_sync_through_ews_and_graph(tmp_path: Path) -> None:
    """Smoke, not a performance check: bench.latency (20 mailboxes, 3 s of changes) and bench.initial_sync (10 x 10)
    through EWS then Graph on SQLite; each source's figures are where the summary, the plot and the docs read them
    (EWS under the keys it always had, Graph under ``graph``), every change was seen stored, and the requests were
    counted (2 EWS requests and 1 Graph request per single-item change)."""
    latency, initial = tmp_path / "latency.json", tmp_path / "initial_sync.json"
    run_bench(
        "bench.latency", "--quick", "--mailboxes", "20", "--seconds", "3", "--floor-samples", "5",
        "--idle-seconds", "1", "--output", str(latency), timeout=150,
    )  # fmt: skip
    run_bench(
        "bench.initial_sync", "--quick", "--mailboxes", "10", "--appointments", "10", "--output", str(initial),
        timeout=150,
    )  # fmt: skip

    d = json.loads(latency.read_text())
    assert d["quick"] is True and d["sources"] == ["ews", "graph"] and d["mailboxes"] == 20
    for name, part in (("ews", d), ("graph", d["graph"])):
        assert part["missing"] == 0 and len(part["changes"]) == 15, name
        assert [r["what"] for r in part["latency"]][:3] == ["change -> committed in calendar", "  creates", "  updates"]
        assert part["latency"][-1]["what"].startswith("floor") and len(part["floor_s"]) == 5, name
        assert part["requests"]["calsync_cpu_seconds"] > 0, name
    assert d["requests"]["per_change"]["ews"] == 2.0 and d["floor_requests"] == [2] * 5
    assert d["graph"]["requests"]["per_change"]["graph"] == 1.0 and d["graph"]["floor_requests"] == [1] * 5
    assert d["graph"]["requests"]["graph_http_calls"] == {"delta": 15}
    assert set(d["graph_vs_ews"]) >= {"p50_ms", "p99_ms", "requests_per_change"}

    i = json.loads(initial.read_text())
    assert i["quick"] is True and i["sources"] == ["ews", "graph"] and i["emulator"]["items"] == 100
    assert i["ceiling"]["items"] == 100 and i["calsync"]["landed"] > 0
    assert i["graph"]["calsync"]["landed"] == i["graph"]["items_read"] == i["graph"]["ceiling"]["items"] > 0
    assert i["graph"]["calsync"]["requests"]["graph_http_calls"]["subscriptions"] == 10
    assert i["graph_vs_ews"]["calsync_landed_per_cpu_second"]["graph"] > 0

    from rich.console import Console

    from bench.__main__ import BENCHMARKS, summary

    console = Console(record=True, width=250)
    console.print(summary([b for b in BENCHMARKS if b.name in ("latency", "initial_sync")], {}, tmp_path))
    text = console.export_text()
    assert "no summary" not in text and "Graph p50" in text and "Graph: items read per CPU s" in text, text

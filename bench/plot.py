"""The latency plot for docs/benchmarks.md, from the results of bench.latency (bench/results/latency*.json).

    python -m bench.plot                        # writes docs/benchmarks-latency.png
    python -m bench.plot --output /tmp/x.png bench/results/latency.json

Left: the distribution (CDF) of end-to-end change latency, one curve per source (EWS, Graph) and result file
(SQLite, PostgreSQL), beside its floor (EWS: one SyncFolderItems + GetItem round trip; Graph: one delta round;
storing nothing) and the aims (p50 under 300 ms, p99 under 1.5 s) as reference lines. Right: the same latencies as
a histogram. The floor is drawn as a curve when the result file holds its raw samples (``floor_s``), else as its
p50 and p99 marks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
OUTPUT = ROOT / "docs" / "benchmarks-latency.png"
LOWER_MS = 1.0  # the plots' left edge (the Graph floor is a few ms)
AIMS_MS = {"p50": 300.0, "p99": 1500.0}  # the change latency aims (docs/benchmarks.md)


def label(data: dict[str, Any], source: str = "EWS") -> str:
    quick = ", --quick" if data.get("quick") else ""
    return f"{source}, {data.get('database', '?')}, {data.get('mailboxes', 0):,} mailboxes{quick}"


def curves(data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The runs one result file holds: EWS under the top-level keys (when it was run), Graph under ``graph``."""
    out = [(label(data), data)] if data.get("changes") else []
    if isinstance(data.get("graph"), dict):
        out.append((label(data, "Graph"), data["graph"]))
    return out


def cdf(values: list[float]) -> tuple[list[float], list[float]]:
    ordered = sorted(values)
    return ordered, [(n + 1) / len(ordered) for n in range(len(ordered))]


def draw(inputs: list[Path] | None = None, output: Path = OUTPUT) -> Path:
    """Draw the plot from ``inputs`` (default: every bench/results/latency*.json); returns the file written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = inputs if inputs is not None else sorted(RESULTS.glob("latency*.json"))
    runs = [(path, json.loads(path.read_text())) for path in files if path.is_file()]
    if not runs:
        raise FileNotFoundError(f"no latency results ({RESULTS}/latency*.json): run python -m bench.latency")

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    upper = AIMS_MS["p99"] * 1.3
    hists: list[tuple[list[float], str, str]] = []
    drawn = [(name, part) for _path, data in runs for name, part in curves(data)]
    for n, (name, data) in enumerate(drawn):
        colour = colours[n % len(colours)]
        latencies = [c["latency_s"] * 1000 for c in data.get("changes", []) if c.get("latency_s") is not None]
        if not latencies:
            continue
        xs, ys = cdf(latencies)
        left.step(xs, ys, where="post", color=colour, label=f"change -> committed ({name}), n={len(xs)}")
        upper = max(upper, max(latencies) * 1.1)
        hists.append((latencies, colour, name))
        floor_raw = data.get("floor_s")
        floor = next((r for r in data.get("latency", []) if str(r.get("what", "")).startswith("floor")), None)
        if floor_raw:
            fx, fy = cdf([v * 1000 for v in floor_raw])
            left.step(fx, fy, where="post", color=colour, linestyle=":", label=f"floor ({name})")
        elif floor is not None:
            left.plot(
                [floor["p50_ms"], floor["p99_ms"]],
                [0.5, 0.99],
                "o",
                color=colour,
                markerfacecolor="none",
                label=f"floor p50 / p99 ({name})",
            )
        if floor is not None:
            right.axvline(floor["p50_ms"], color=colour, linestyle=":", linewidth=1)
    bins = [LOWER_MS * (upper / LOWER_MS) ** (n / 60) for n in range(61)]  # log-spaced, as the axis
    for latencies, colour, name in hists:
        right.hist(latencies, bins=bins, alpha=0.5, color=colour, label=name)
    for name, value in AIMS_MS.items():
        for ax in (left, right):
            ax.axvline(value, color="grey", linestyle="--", linewidth=1)
            ax.text(value, 0.3, f" aim {name}", transform=ax.get_xaxis_transform(), fontsize=8, color="grey")
    left.axhline(0.5, color="lightgrey", linewidth=0.8)
    left.axhline(0.99, color="lightgrey", linewidth=0.8)
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlim(LOWER_MS, upper)
    left.set_ylim(0, 1.01)
    left.set_xlabel("latency, ms (log scale); dashed: aims p50 300 ms, p99 1.5 s")
    left.set_ylabel("fraction of changes committed")
    left.set_title("End-to-end change latency (CDF) beside the floor")
    left.legend(fontsize=7, loc="lower right")
    right.set_xlabel("latency, ms (log scale); dotted: floor p50; dashed: aims")
    right.set_ylabel("changes")
    right.set_title("Histogram")
    right.legend(fontsize=7)
    dates = sorted({str(d.get("date", "?"))[:10] for _, d in runs})
    cores = {d.get("machine", {}).get("cores") for _, d in runs} - {None}
    fig.suptitle(f"bench.latency, measured {', '.join(dates)} on {', '.join(map(str, cores)) or '?'} cores", fontsize=9)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", type=Path, help="latency result files (default bench/results/latency*)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    print(f"written {draw(args.inputs or None, args.output)}")


if __name__ == "__main__":
    main()

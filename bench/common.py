"""What every benchmark records beside its figures: when, on what machine, and whether it was --quick."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console


def run_header(quick: bool) -> dict[str, object]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        },
    }


def write_results(path: Path, quick: bool, console: Console, **fields: object) -> None:
    """Write a benchmark's figures as JSON, with the run header, and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**run_header(quick), **fields}, indent=2))
    console.print(f"results written to {path}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, all its threads (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

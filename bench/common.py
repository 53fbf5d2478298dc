"""What every benchmark records beside its figures: when, on what machine, and whether it was --quick."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime


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

"""How fast the EWS emulator answers and how much memory it needs, so later benchmarks know it is not their
bottleneck.

    python -m bench.emulator            # 1,000 mailboxes x 100 for throughput; 10,000 x 100 for memory
    python -m bench.emulator --quick    # small sizes, a few seconds per measurement (CI)

Throughput: client threads send prepared SOAP requests over keep-alive connections to `calsync emulator`
running as its own process, for a fixed time, and count answers. Each operation is shown beside GetFolder,
the cheapest request the same stack serves (the ceiling for that stack on this machine, in this run).
Memory: resident set size of an emulator process holding N mailboxes x M appointments, beside an empty one.
Results go to bench/results/emulator.json.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from bench.common import write_results
from calsync.emulator import EmulatorProcess

USER, PASSWORD = "bench", "bench-pw"
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"
console = Console()


def envelope(mailbox: str, body: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{SOAP}" xmlns:m="{M}" xmlns:t="{T}"><s:Header>'
        '<t:RequestServerVersion Version="Exchange2016"/><t:ExchangeImpersonation><t:ConnectingSID>'
        f"<t:PrimarySmtpAddress>{mailbox}</t:PrimarySmtpAddress></t:ConnectingSID></t:ExchangeImpersonation>"
        f"</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def get_folder() -> str:
    return (
        "<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:FolderIds>"
        '<t:DistinguishedFolderId Id="calendar"/></m:FolderIds></m:GetFolder>'
    )


def sync(state: str | None, shape: str = "AllProperties") -> str:
    state_el = f"<m:SyncState>{state}</m:SyncState>" if state else ""
    return (
        f"<m:SyncFolderItems><m:ItemShape><t:BaseShape>{shape}</t:BaseShape></m:ItemShape><m:SyncFolderId>"
        f'<t:DistinguishedFolderId Id="calendar"/></m:SyncFolderId>{state_el}'
        "<m:MaxChangesReturned>512</m:MaxChangesReturned></m:SyncFolderItems>"
    )


def get_item(ids: list[str]) -> str:
    refs = "".join(f'<t:ItemId Id="{i}"/>' for i in ids)
    return (
        f"<m:GetItem><m:ItemShape><t:BaseShape>AllProperties</t:BaseShape></m:ItemShape><m:ItemIds>{refs}"
        "</m:ItemIds></m:GetItem>"
    )


@dataclass
class Result:
    operation: str
    requests: int
    seconds: float
    per_second: float
    p50_ms: float
    p99_ms: float
    ratio_to_ceiling: float | None = None


def hammer(url: str, bodies: list[bytes], seconds: float, threads: int) -> tuple[int, list[float]]:
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    errors: list[str] = []

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        local: list[float] = []
        with httpx.Client(
            auth=(USER, PASSWORD), timeout=30, headers={"Content-Type": "text/xml; charset=utf-8"}
        ) as client:
            while time.monotonic() < stop:
                body = rnd.choice(bodies)
                started = time.perf_counter()
                response = client.post(url, content=body)
                local.append(time.perf_counter() - started)
                if response.status_code != 200 or b'ResponseClass="Error"' in response.content:
                    errors.append(response.text[:300])
                    return
        with lock:
            latencies.extend(local)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise RuntimeError(f"the emulator answered with an error: {errors[0]}")
    return len(latencies), latencies


def measure(name: str, url: str, bodies: list[bytes], seconds: float, threads: int) -> Result:
    count, latencies = hammer(url, bodies, seconds, threads)
    latencies.sort()
    return Result(
        name,
        count,
        seconds,
        count / seconds,
        statistics.median(latencies) * 1000,
        latencies[int(len(latencies) * 0.99) - 1] * 1000,
    )


def sync_states(url: str, mailboxes: list[str]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Run an initial sync of each mailbox once: its final sync state and its item ids."""
    states, ids = {}, {}
    with httpx.Client(auth=(USER, PASSWORD), timeout=60) as client:
        for mbx in mailboxes:
            state = None
            found: list[str] = []
            while True:
                text = client.post(url, content=envelope(mbx, sync(state, "IdOnly"))).text
                state = re.search(r"<m:SyncState>([^<]+)</m:SyncState>", text).group(1)  # type: ignore[union-attr]
                found += re.findall(r'<t:ItemId Id="([^"]+)"', text)
                if "<m:IncludesLastItemInRange>true" in text:
                    break
            states[mbx], ids[mbx] = state, found
    return states, ids


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def memory(mailboxes: int, appointments: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with EmulatorProcess("--account", f"{USER}:{PASSWORD}", startup_timeout=120) as empty:
        assert empty.process is not None
        out["empty_mb"] = rss_mb(empty.process.pid)
    started = time.monotonic()
    with EmulatorProcess(
        "--account",
        f"{USER}:{PASSWORD}",
        "--sample-mailboxes",
        str(mailboxes),
        "--sample-appointments",
        str(appointments),
        startup_timeout=900,
    ) as full:
        assert full.process is not None
        out["load_seconds"] = time.monotonic() - started
        out["full_mb"] = rss_mb(full.process.pid)
    out["mailboxes"], out["appointments_each"] = mailboxes, appointments
    out["per_1000_items_mb"] = (out["full_mb"] - out["empty_mb"]) / (mailboxes * appointments / 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes and short runs (CI)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per throughput measurement")
    parser.add_argument("--threads", type=int, default=4, help="client threads")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "emulator.json")
    args = parser.parse_args()
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    n_throughput, n_memory = (100, 1000) if args.quick else (1000, 10000)

    console.print(f"[bold]emulator throughput[/bold]: {n_throughput} mailboxes x 100 appointments")
    with EmulatorProcess(
        "--account", f"{USER}:{PASSWORD}", "--sample-mailboxes", str(n_throughput), "--sample-appointments", "100"
    ) as emu:
        mailboxes = [f"user{i}@example.com" for i in range(1, n_throughput + 1)]
        sample = mailboxes[: min(50, len(mailboxes))]
        states, ids = sync_states(emu.url, sample)
        rnd = random.Random(1)
        cases = {
            "GetFolder (ceiling)": [envelope(m, get_folder()) for m in sample],
            "SyncFolderItems, nothing new": [envelope(m, sync(states[m])) for m in sample],
            "SyncFolderItems, initial 100 items": [envelope(m, sync(None)) for m in sample[:10]],
            "GetItem, 1 item": [envelope(m, get_item([rnd.choice(ids[m])])) for m in sample for _ in range(5)],
            "GetItem, 10 items": [envelope(m, get_item(rnd.sample(ids[m], 10))) for m in sample],
        }
        results = [measure(name, emu.url, bodies, seconds, args.threads) for name, bodies in cases.items()]
    ceiling = results[0].per_second
    for r in results:
        r.ratio_to_ceiling = r.per_second / ceiling

    console.print(f"[bold]emulator memory[/bold]: {n_memory} mailboxes x 100 appointments")
    mem = memory(n_memory, 100)

    table = Table(title="EWS emulator, requests answered per second")
    for column in ("operation", "req/s", "p50 ms", "p99 ms", "vs GetFolder"):
        table.add_column(column, justify="right" if column != "operation" else "left")
    for r in results:
        table.add_row(
            r.operation, f"{r.per_second:,.0f}", f"{r.p50_ms:.1f}", f"{r.p99_ms:.1f}", f"{r.ratio_to_ceiling:.2f}"
        )
    console.print(table)
    console.print(
        f"memory: {mem['full_mb']:.0f} MB resident for {n_memory:,} x 100 appointments "
        f"(empty emulator {mem['empty_mb']:.0f} MB; {mem['per_1000_items_mb']:.2f} MB per 1,000 items; "
        f"loaded in {mem['load_seconds']:.0f} s)"
    )
    write_results(
        args.output,
        args.quick,
        console,
        client_threads=args.threads,
        seconds_each=seconds,
        throughput=[asdict(r) for r in results],
        memory=mem,
    )


if __name__ == "__main__":
    main()

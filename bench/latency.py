"""Change latency end to end: from a change made in Exchange to the appointment committed in the application
calendar, beside the floor (one read of the same kind of change through the source, storing nothing); through EWS
and through Microsoft Graph, one after the other in the same run.

    python -m bench.latency                     # 1,000 subscribed mailboxes, 5 changes/s for 30 s, SQLite, both
    python -m bench.latency --quick             # 100 mailboxes, 5 changes/s for 10 s
    python -m bench.latency --database postgresql
    python -m bench.latency --sources ews       # one source only (default: ews,graph)

For each source in turn, on a fresh emulator of the same kind (EWS over http, Graph over https beside it, M
mailboxes, ``bench.sources.BenchEmulator``) and a fresh database: the emulator runs in this process (changes are
made through ``Emulator.outlook(addr).create/update``, as a person in Outlook would); ``calsync serve`` (listener
and jobs) runs as its own process against a database in a temporary directory (or a fresh PostgreSQL schema), with
M operators of that source (``operators.source``); the emulator pushes to it over real HTTP (EWS push
notifications to ``/ews/notifications/...``, Graph change notifications to ``/graph/notifications/...``). Each
change gets a unique subject; a poller reads the appointments table every 20 ms and takes the ``synced_at`` calsync
wrote for that subject (set in the transaction that stores it, a moment before its commit). Latency = synced_at -
time the change was made. An update only ever targets an item whose current subject has been seen stored, so no
change is overwritten before it is measured (the two sources give an item different ids, so what has been seen is
kept by subject).

Setup is measured too: from starting calsync with M enabled operators to all of them subscribed and through
their initial sync, with the requests it took and the CPU calsync and this process (the emulator) used meanwhile.
The floor is measured after calsync has stopped and its subscriptions have ended, on the same emulator: for a
sample of mailboxes, sync to the end, make one change, time ``source.changes()`` from the previous sync state
(EWS: one SyncFolderItems + GetItem through ``EwsSource``; Graph: one delta round from the previous delta link
through ``GraphSource``).

Requests per change: the emulator's counters from the first change of the stream until every change was seen
stored and no mailbox is dirty or leased, divided by the changes (``bench.sources.requests_since``). EWS: SOAP
requests. Graph: requests as Graph's throttling counts them (each request inside a ``$batch`` counts, the outer
one not), and HTTP calls (a ``$batch`` is one); token requests apart. calsync's CPU during that window (from
/proc) per change is recorded too: it does not depend on the machine's other load as latency does.
Results go to bench/results/latency.json: the EWS figures under the keys they always had, Graph's under
``graph`` with the same shape, and the ratios under ``graph_vs_ews``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text

from bench.common import cpu_seconds, write_results
from bench.listener import clean_env, free_port, postgres_schema, server
from bench.sources import (
    SOURCES,
    BenchEmulator,
    end_subscriptions,
    graph_settings,
    graph_source,
    requests_since,
    snapshot,
)
from calsync.emulator import Emulator
from calsync.sources.base import Source
from calsync.sources.ews import EwsSource

USER, PASSWORD = "svc-bench", "bench-pw-1"
SECRET = "l" * 32
console = Console()
FLOOR = {
    "ews": "floor: SyncFolderItems + GetItem",
    "graph": "floor: one delta round (GraphSource)",
}
LABEL = {"ews": "EWS", "graph": "Graph"}


@dataclass
class Change:
    seq: int
    mailbox: str
    kind: str  # create or update
    item_id: str
    made_at: datetime
    synced_at: datetime | None = None

    @property
    def latency(self) -> float | None:
        return None if self.synced_at is None else (self.synced_at - self.made_at).total_seconds()


def settings_for(database_url: str, emulator_url: str, port: int) -> dict[str, str]:
    return {
        "database_url": database_url,
        "exchange_url": emulator_url,
        "username": USER,
        "password": PASSWORD,
        "listener_url": f"http://127.0.0.1:{port}",
        "listener_secret": SECRET,
        "log_level": "WARNING",
    }


def prepare(database_url: str, settings: dict[str, str], mailboxes: list[str], cwd: str, source: str = "ews") -> None:
    """Migrate a fresh database and add every mailbox as an enabled operator of ``source``."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.upper().startswith("CALSYNC_")}
    old = os.getcwd()
    os.chdir(cwd)
    try:
        from calsync.runtime import Runtime
        from calsync.settings import load_settings
        from calsync.store import jobs as job_store
        from calsync.store import operators

        runtime = Runtime(load_settings(**settings))
        runtime.prepare()
        with runtime.db.transaction() as session:
            for address in mailboxes:
                operators.add(session, address, enabled=True, source=source)
            job_store.request_run(session, job_store.MANAGE_SUBSCRIPTIONS)
        runtime.close()
    finally:
        os.chdir(old)
        os.environ.update(saved)


def as_utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


BUSY = "SELECT count(*) FROM mailbox_work WHERE dirty_gen > done_gen OR lease_owner IS NOT NULL"


def wait_settled(engine: Any, count: int, timeout: float) -> float:
    """Seconds until every operator has a subscription and has finished its initial sync."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with engine.connect() as conn:
            subscribed = conn.execute(text("SELECT count(*) FROM subscriptions")).scalar_one()
            synced = conn.execute(text("SELECT count(*) FROM sync_states WHERE initial_done")).scalar_one()
            dirty = conn.execute(text(BUSY)).scalar_one()
        if subscribed >= count and synced >= count and dirty == 0:
            return time.monotonic() - started
        time.sleep(0.5)
    raise RuntimeError(f"calsync did not settle in {timeout:.0f} s ({subscribed} subscribed, {synced} synced)")


def wait_quiet(engine: Any, timeout: float) -> None:
    """Until no mailbox is dirty or leased (the passes a stream caused are all over), at most ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.execute(text(BUSY)).scalar_one() == 0:
                return
        time.sleep(0.1)


class Poller(threading.Thread):
    """Reads newly stored appointments and stamps the change their subject names."""

    def __init__(self, engine: Any, changes: dict[str, Change]) -> None:
        super().__init__(daemon=True)
        self.engine, self.changes = engine, changes
        self.stop = threading.Event()
        self.since = datetime.now(UTC) - timedelta(seconds=1)
        # Subjects seen stored: an item's latest change has been stored when its subject is here. By subject, not
        # by item id: the stream knows EWS item ids, and calsync stores Graph's ids for operators read through Graph.
        self.seen: set[str] = set()
        self.lock = threading.Lock()

    def run(self) -> None:
        query = text("SELECT subject, synced_at FROM appointments WHERE synced_at >= :since")
        while not self.stop.is_set():
            with self.engine.connect() as conn:
                rows = conn.execute(query, {"since": self.since}).all()
            for subject, synced_at in rows:
                change = self.changes.get(subject or "")
                if change is not None and change.synced_at is None:
                    change.synced_at = as_utc(synced_at)
                    with self.lock:
                        self.seen.add(subject)
            self.stop.wait(0.02)


def spec(subject: str, rnd: random.Random) -> dict[str, Any]:
    start = (datetime.now(UTC) + timedelta(days=rnd.randint(1, 30))).replace(minute=0, second=0, microsecond=0)
    return {"subject": subject, "start": start, "end": start + timedelta(minutes=30)}


def stream(emu: Emulator, mailboxes: list[str], rate: float, seconds: float, poller: Poller) -> list[Change]:
    """``rate`` changes a second for ``seconds``: 60 % creates in a random mailbox, 40 % subject updates of an
    item whose latest change has been seen stored (when there is one)."""
    rnd = random.Random(7)
    changes: list[Change] = []
    items: dict[str, tuple[str, str]] = {}  # an item's latest subject -> (its EWS item id, its mailbox)
    start = time.perf_counter()
    for seq in range(int(rate * seconds)):
        delay = start + seq / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        subject = f"bench-change-{seq:06d}"
        with poller.lock:
            ready = sorted(s for s in poller.seen if s in items)
        if ready and rnd.random() < 0.4:
            previous = rnd.choice(ready)
            item_id, mailbox = items.pop(previous)
            with poller.lock:
                poller.seen.discard(previous)
            emu.outlook(mailbox).update(item_id, {"subject": subject})
            kind = "update"
        else:
            mailbox = rnd.choice(mailboxes)
            item_id = emu.outlook(mailbox).create(spec(subject, rnd), send_invitations=False).item_id
            kind = "create"
        items[subject] = (item_id, mailbox)
        change = Change(seq, mailbox, kind, item_id, datetime.now(UTC))
        poller.changes[subject] = change
        changes.append(change)
    return changes


def reader(emu: BenchEmulator, source: str) -> Source:
    if source == "graph":
        return graph_source(emu)
    return EwsSource(emu.url, USER, PASSWORD, version="Exchange2016")


def floor(emu: BenchEmulator, mailboxes: list[str], samples: int, source: str = "ews") -> tuple[list[float], list[int]]:
    """One read of one created item from the previous sync state through the source, storing nothing (EWS:
    SyncFolderItems + GetItem; Graph: one delta round from the previous delta link): seconds and requests each."""
    src = reader(emu, source)
    rnd = random.Random(11)
    out: list[float] = []
    requests: list[int] = []
    try:
        for n, mailbox in enumerate(rnd.sample(mailboxes, min(samples, len(mailboxes)))):
            state = None
            for page in src.changes(mailbox, None, 512):
                state = page.sync_state
            emu.outlook(mailbox).create(spec(f"floor-{n}", rnd), send_invitations=False)
            started = time.perf_counter()
            pages = list(src.changes(mailbox, state, 512))
            out.append(time.perf_counter() - started)
            requests.append(sum(p.requests for p in pages))
            assert sum(len(p.upserts) for p in pages) == 1, pages
    finally:
        src.close()
    return out, requests


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(len(ordered) * q) - 1))]


@dataclass
class Row:
    what: str
    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


def row(what: str, values: list[float]) -> Row:
    return Row(
        what,
        len(values),
        statistics.median(values) * 1000,
        pct(values, 0.95) * 1000,
        pct(values, 0.99) * 1000,
        max(values) * 1000,
    )


# --- one source -------------------------------------------------------------------------------------------------------


def measure(source: str, mailboxes: list[str], args: argparse.Namespace, seconds: float) -> dict[str, Any]:
    """The stream through ``source`` on a fresh emulator and a fresh database, then its floor: the figures, in the
    shape of the result file."""
    count = len(mailboxes)
    emu = BenchEmulator(USER, PASSWORD, mailboxes)
    emu.start()
    setup: dict[str, float] = {}
    load = [round(os.getloadavg()[0], 1)]
    try:
        with tempfile.TemporaryDirectory(prefix="calsync-bench-") as tmp:
            schema = postgres_schema() if args.database == "postgresql" else nullcontext(None)
            with schema as pg_url:
                url = pg_url or f"sqlite:///{Path(tmp) / 'calsync.sqlite3'}"
                port = free_port()
                settings = settings_for(url, emu.url, port)
                if source == "graph":
                    settings |= graph_settings(emu)
                t0 = time.monotonic()
                prepare(url, settings, mailboxes, tmp, source=source)
                setup["operators_seconds"] = time.monotonic() - t0
                engine = create_engine(url)
                command = [sys.executable, "-m", "calsync", "serve", "--create-database", "--port", str(port)]
                env = clean_env(**settings)
                t0 = time.monotonic()
                before = snapshot(emu)
                with server(command, env, tmp, port) as proc:
                    setup["start_seconds"] = time.monotonic() - t0
                    cpu, emulator_cpu = cpu_seconds(proc.pid), time.process_time()
                    setup["subscribe_and_initial_sync_seconds"] = wait_settled(engine, count, 1800)
                    setup["calsync_cpu_seconds"] = cpu_seconds(proc.pid) - cpu  # after its listener answered
                    setup["emulator_cpu_seconds"] = time.process_time() - emulator_cpu  # this process
                    setup_requests = requests_since(emu, before)
                    console.print(
                        f"{LABEL[source]}: {count} mailboxes subscribed and synced in "
                        f"{setup['subscribe_and_initial_sync_seconds']:.1f} s"
                    )
                    cpu = cpu_seconds(proc.pid)
                    with console.status(f"{LABEL[source]}: idle for {args.idle_seconds:g} s"):
                        time.sleep(args.idle_seconds)
                    idle_rate = (cpu_seconds(proc.pid) - cpu) / args.idle_seconds
                    poller = Poller(engine, {})
                    poller.start()
                    before, cpu, started = snapshot(emu), cpu_seconds(proc.pid), time.monotonic()
                    with console.status(f"{LABEL[source]}: stream playing"):
                        changes = stream(emu, mailboxes, args.rate, seconds, poller)
                        deadline = time.monotonic() + 60
                        while any(c.synced_at is None for c in changes) and time.monotonic() < deadline:
                            time.sleep(0.1)
                        wait_quiet(engine, 30)
                    requests = requests_since(emu, before)
                    requests["window_seconds"] = time.monotonic() - started
                    requests["calsync_cpu_seconds"] = cpu_seconds(proc.pid) - cpu
                    poller.stop.set()
                    poller.join()
                engine.dispose()
        end_subscriptions(emu)  # calsync has stopped: nothing pushes to its listener while the floor is measured
        console.print(f"[bold]{LABEL[source]} {FLOOR[source]}[/bold], no storage")
        floor_times, floor_requests = floor(emu, mailboxes, args.floor_samples, source)
    finally:
        emu.stop()
    load.append(round(os.getloadavg()[0], 1))

    measured = [c.latency for c in changes if c.latency is not None]
    n = len(changes)
    requests["per_change"] = {
        "ews": requests["ews_total"] / n,
        "graph": requests["graph"] / n,
        "graph_http_calls": requests["graph_http_total"] / n,
    }
    requests["calsync_cpu_ms_per_change"] = requests["calsync_cpu_seconds"] * 1000 / n
    requests["calsync_idle_cpu_per_second"] = idle_rate  # measured before the stream, nothing to do
    net = requests["calsync_cpu_seconds"] - idle_rate * requests["window_seconds"]
    requests["calsync_net_cpu_ms_per_change"] = net * 1000 / n  # computed: the stream window less the idle rate
    rows = [
        row("change -> committed in calendar", measured),
        row("  creates", [c.latency for c in changes if c.latency is not None and c.kind == "create"]),
        row("  updates", [c.latency for c in changes if c.latency is not None and c.kind == "update"] or [0.0]),
        row(FLOOR[source], floor_times),
    ]
    return {
        "setup": setup,
        "setup_requests": setup_requests,
        "missing": n - len(measured),
        "latency": [asdict(r) for r in rows],
        "changes": [{"seq": c.seq, "kind": c.kind, "latency_s": c.latency, "mailbox": c.mailbox} for c in changes],
        "floor_s": floor_times,
        "floor_requests": floor_requests,
        "requests": requests,
        "load_average": load,
    }


# --- report -----------------------------------------------------------------------------------------------------------


def requests_per_change(source: str, result: dict[str, Any]) -> float:
    """What the source's own limits count per change: EWS requests, or Graph requests with each in a $batch."""
    per: dict[str, float] = result["requests"]["per_change"]
    return per["graph"] if source == "graph" else per["ews"]


def show(source: str, result: dict[str, Any], count: int, database: str) -> None:
    table = Table(title=f"Change latency through {LABEL[source]}, {count} subscribed mailboxes, {database}")
    for column in ("measure", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    for r in result["latency"]:
        table.add_row(r["what"], str(r["count"]), *(f"{r[k]:.0f}" for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")))
    console.print(table)
    total, floor_row = result["latency"][0], result["latency"][-1]
    req = result["requests"]
    if source == "graph":
        kinds = " + ".join(f"{v} {k}" for k, v in req["graph_http_calls"].items()) or "none"
        what = (
            f"{req['graph']} Graph requests ({req['per_change']['graph']:.2f} per change, each in a $batch "
            f"counted); HTTP calls: {kinds} ({req['per_change']['graph_http_calls']:.2f} per change); "
            f"{req['graph_tokens_issued']} tokens issued"
        )
    else:
        what = " + ".join(f"{v} {k}" for k, v in req["ews"].items()) or "none"
        what = f"{req['ews_total']} EWS requests: {what} ({req['per_change']['ews']:.2f} per change)"
    console.print(
        f"p50 is {total['p50_ms'] / floor_row['p50_ms']:.1f}x the floor's p50; changes never seen stored: "
        f"{result['missing']}; setup {result['setup']['subscribe_and_initial_sync_seconds']:.1f} s for {count} "
        f"mailboxes. Stream window ({req['window_seconds']:.1f} s, until every change was stored and no mailbox "
        f"dirty): {what}; calsync CPU {req['calsync_cpu_ms_per_change']:.1f} ms per change, "
        f"{req['calsync_net_cpu_ms_per_change']:.1f} ms less its idle rate "
        f"({req['calsync_idle_cpu_per_second'] * 1000:.0f} ms per second); load average "
        f"{result['load_average']}"
    )


def ratios(ews: dict[str, Any], graph: dict[str, Any]) -> dict[str, float | None]:
    """Graph over EWS, measured in this run."""

    def divide(a: float, b: float) -> float | None:
        return a / b if b else None

    e, g = ews["latency"][0], graph["latency"][0]
    ef, gf = ews["latency"][-1], graph["latency"][-1]
    return {
        **{k: divide(g[k], e[k]) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")},
        "floor_p50_ms": divide(gf["p50_ms"], ef["p50_ms"]),
        "floor_p99_ms": divide(gf["p99_ms"], ef["p99_ms"]),
        "setup_seconds": divide(
            graph["setup"]["subscribe_and_initial_sync_seconds"], ews["setup"]["subscribe_and_initial_sync_seconds"]
        ),
        "requests_per_change": divide(requests_per_change("graph", graph), requests_per_change("ews", ews)),
        "calsync_cpu_ms_per_change": divide(
            graph["requests"]["calsync_cpu_ms_per_change"], ews["requests"]["calsync_cpu_ms_per_change"]
        ),
        "calsync_net_cpu_ms_per_change": divide(
            graph["requests"]["calsync_net_cpu_ms_per_change"], ews["requests"]["calsync_net_cpu_ms_per_change"]
        ),
    }


def show_ratios(ews: dict[str, Any], graph: dict[str, Any], ratio: dict[str, float | None], count: int) -> None:
    table = Table(title=f"Graph beside EWS, same run, {count} mailboxes")
    for column in ("measure", "EWS", "Graph", "Graph / EWS"):
        table.add_column(column, justify="left" if column == "measure" else "right")

    def line(what: str, e: float, g: float, key: str, fmt: str = ",.0f") -> None:
        r = ratio[key]
        table.add_row(what, format(e, fmt), format(g, fmt), "-" if r is None else f"{r:.2f}")

    e, g = ews["latency"][0], graph["latency"][0]
    for key, name in (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99"), ("max_ms", "max")):
        line(f"change -> committed, {name} ms", e[key], g[key], key)
    line("floor p50 ms", ews["latency"][-1]["p50_ms"], graph["latency"][-1]["p50_ms"], "floor_p50_ms", ",.1f")
    line("floor p99 ms", ews["latency"][-1]["p99_ms"], graph["latency"][-1]["p99_ms"], "floor_p99_ms", ",.1f")
    line(
        "requests per change (EWS requests; Graph requests, each in a $batch counted)",
        requests_per_change("ews", ews),
        requests_per_change("graph", graph),
        "requests_per_change",
        ".2f",
    )
    line(
        "calsync CPU ms per change (stream window)",
        ews["requests"]["calsync_cpu_ms_per_change"],
        graph["requests"]["calsync_cpu_ms_per_change"],
        "calsync_cpu_ms_per_change",
        ".1f",
    )
    line(
        "calsync CPU ms per change, its idle rate subtracted",
        ews["requests"]["calsync_net_cpu_ms_per_change"],
        graph["requests"]["calsync_net_cpu_ms_per_change"],
        "calsync_net_cpu_ms_per_change",
        ".1f",
    )
    line(
        "setup: subscribed and initially synced, s",
        ews["setup"]["subscribe_and_initial_sync_seconds"],
        graph["setup"]["subscribe_and_initial_sync_seconds"],
        "setup_seconds",
        ".1f",
    )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 mailboxes, 10 s of changes (CI)")
    parser.add_argument("--mailboxes", type=int, default=None, help="subscribed mailboxes (default 1,000)")
    parser.add_argument("--rate", type=float, default=5.0, help="changes per second")
    parser.add_argument("--seconds", type=float, default=None, help="seconds of changes (default 30)")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--sources", default=",".join(SOURCES), help="ews, graph or both, in that order (default)")
    parser.add_argument("--floor-samples", type=int, default=50)
    parser.add_argument("--idle-seconds", type=float, default=None, help="calsync's idle CPU window (default 10)")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "latency.json")
    args = parser.parse_args()
    count = args.mailboxes or (100 if args.quick else 1000)
    seconds = args.seconds or (10.0 if args.quick else 30.0)
    args.idle_seconds = args.idle_seconds or (5.0 if args.quick else 10.0)
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    if not sources or any(s not in SOURCES for s in sources):
        parser.error(f"--sources: a comma-separated list of {', '.join(SOURCES)}")
    sources = [s for s in SOURCES if s in sources]  # EWS first, as the figures of record always were
    mailboxes = [f"user{i}@example.com" for i in range(1, count + 1)]

    console.print(
        f"[bold]change latency[/bold]: {count} mailboxes, {args.rate:g} changes/s for {seconds:g} s, "
        f"{args.database}, through {' then '.join(LABEL[s] for s in sources)}"
    )
    results: dict[str, dict[str, Any]] = {}
    for source in sources:
        console.rule(LABEL[source])
        results[source] = measure(source, mailboxes, args, seconds)
    for source, result in results.items():
        show(source, result, count, args.database)
    fields: dict[str, Any] = {"sources": sources}
    if "ews" in results:  # the keys EWS figures always had (bench.__main__, bench.plot and the docs read them)
        fields |= results["ews"]
    if "graph" in results:
        fields["graph"] = results["graph"]
    if len(results) == 2:
        fields["graph_vs_ews"] = ratios(results["ews"], results["graph"])
        show_ratios(results["ews"], results["graph"], fields["graph_vs_ews"], count)
    write_results(
        args.output,
        args.quick,
        console,
        mailboxes=count,
        database=args.database,
        rate=args.rate,
        seconds=seconds,
        **fields,
    )


if __name__ == "__main__":
    main()

"""Initial sync: appointments per second that calsync reads from Exchange and lands in its calendar store when it
syncs every enabled operator for the first time, beside the ceiling (a plain EWS client reading the same items
with the same requests and the same concurrency, storing nothing); through EWS and then through Microsoft Graph on
the same emulator, in the same run.

    python -m bench.initial_sync                          # 1,000 mailboxes x 200 appointments, SQLite, both
    python -m bench.initial_sync --database postgresql
    python -m bench.initial_sync --quick                  # 50 x 50
    python -m bench.initial_sync --sources graph          # one source only (default: ews,graph)

The emulator runs in this process and is filled directly (``calsync.emulator.sample_data.populate``: singles,
all-day items, meetings and recurring series, some with moved or deleted occurrences, about a tenth older than
the 180-day past window). Then, each as its own process against that emulator:

* the ceiling: exchangelib, with the same 4 threads calsync's processor runs (``calsync serve --threads``
  default, ``NotificationProcessor(threads=4)``), reads every mailbox as calsync's EWS source does: one
  ``SyncFolderItems`` (IdOnly, MaxChangesReturned = batch size, 512) per page, ONE ``GetItem`` with the fields
  calsync maps (``calsync.sources.ews.ITEM_FIELDS``) for the page's items, and one more ``GetItem`` for the
  modified occurrences of the page's series. It parses the answers into exchangelib objects and drops them.
* calsync: ``calsync serve`` (listener and jobs, 4 sync threads, default settings) starts with the operators
  enabled in a fresh database (SQLite in a temporary directory, or a fresh PostgreSQL schema). Its
  ManagePushSubscriptions job subscribes each one and marks it for its initial sync; the processor syncs them.
  This process reads the database once a second for the progress bar; the end is the latest
  ``mailbox_work.last_pass_finished`` once every ``sync_states.initial_done`` is true.

Both are timed from starting their process to the last mailbox read (ceiling) or committed (calsync): the
wall-time ratio is ceiling time / calsync time, i.e. calsync's items per second over the ceiling's. The two run
one after the other, so on a shared machine that ratio also measures how the other load changed in between
(the load average is recorded); the CPU seconds each reading process used after its start-up (all its threads,
from /proc, or ``time.process_time`` in the worker; start-up = imports, and for calsync the migrations, until
its listener answers) do not depend on it, so the CPU ratio (items per CPU second, calsync over ceiling) is the
figure to compare; calsync's share includes its Subscribes and its listener. "Landed" counts the rows in the
store: fewer than the items read, since items wholly older than the past window are not stored. The emulator's
own request counters (``op:*``) give the requests each side made. After calsync's turn its CPU with nothing to do
is measured for 10 s; the tables also show its items per CPU second with that idle rate subtracted.

Graph (``--sources``, after EWS): the emulator has its Graph wing (``bench.sources.BenchEmulator``). The ceiling
is calsync's own ``GraphSource`` on the same 4 threads in its own process (a delta round of the window per
mailbox, series masters by id in ``$batch``es, mapped to appointments), storing nothing; then ``calsync serve``
with the operators added with ``source = graph`` in a fresh database. Graph lists only what lies in its delta
window, so "items read" is what GraphSource returned (the ceiling's count), not the emulator's; the figure that
compares the sources is appointments landed per CPU second of calsync (``graph_vs_ews``). Graph requests are
counted as Graph's throttling counts them (each request inside a ``$batch``) and as HTTP calls; see
``bench.sources``.
Results go to bench/results/initial_sync.json (``initial_sync-postgresql.json`` for PostgreSQL): EWS under the keys
it always had, Graph under ``graph``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import create_engine, text

from bench.common import cpu_seconds, write_results
from bench.latency import LABEL, PASSWORD, USER, as_utc, prepare, settings_for
from bench.listener import clean_env, contextmanager_or_sqlite, free_port, postgres_schema, server
from bench.sources import SOURCES, BenchEmulator, end_subscriptions, graph_settings, snapshot
from bench.sources import requests_since as all_requests_since
from calsync.emulator import Emulator
from calsync.emulator.sample_data import populate

THREADS = 4  # NotificationProcessor's default, and `calsync serve --threads`
BATCH = 512  # the batch_size (EWSBatchSize) default
IDLE_SECONDS = 10.0  # after the initial sync: how much CPU calsync uses with nothing to do
console = Console(width=None if sys.stdout.isatty() else 150)


# --- the emulator -----------------------------------------------------------------------------------------------------


def fill(emu: Emulator, mailboxes: list[str], appointments: int) -> dict[str, int]:
    """Populate every mailbox straight into the emulator's memory (no journal events, no requests)."""
    boxes = [emu.exchange.mailbox(m) for m in mailboxes]
    gc.disable()  # as `calsync emulator --sample-appointments` does: long-lived objects, nothing to collect
    try:
        with progress_bar() as progress:
            task = progress.add_task("filling the emulator", total=len(boxes))
            for mbx in boxes:
                populate(emu.exchange, mbx, appointments, seed=1, colleagues=boxes[:20])
                progress.advance(task)
    finally:
        gc.enable()
        gc.freeze()
    items = [i for mbx in boxes for i in mbx.calendar.items.values()]
    return {
        "items": len(items),
        "series": sum(1 for i in items if i.recurrence is not None),
        "series_with_exceptions": sum(1 for i in items if i.recurrence is not None and (i.exceptions or i.deleted)),
    }


def requests_since(emu: Emulator, before: dict[str, int]) -> dict[str, int]:
    """The EWS requests the emulator answered since ``before`` (a copy of its stats), by operation."""
    now = dict(emu.exchange.stats)
    return {k[3:]: v - before.get(k, 0) for k, v in sorted(now.items()) if k.startswith("op:") and v > before.get(k, 0)}


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


# --- the ceiling (run as its own process: python -m bench.initial_sync --worker SPEC) ------------------------------


def ceiling_worker(spec_file: str) -> None:
    """Read every mailbox with exchangelib as calsync's source does, store nothing; print progress and a result.
    A spec for Graph (``"source": "graph"``) runs :func:`graph_ceiling_worker` instead."""
    if json.loads(Path(spec_file).read_text()).get("source") == "graph":
        graph_ceiling_worker(spec_file)
        return
    from exchangelib import BASIC, IMPERSONATION, Account, Configuration, Credentials, Version
    from exchangelib.fields import FieldPath
    from exchangelib.items import ID_ONLY, CalendarItem
    from exchangelib.properties import DistinguishedFolderId, ItemId, Mailbox
    from exchangelib.services import GetItem, SyncFolderItems

    from calsync.sources.ews import BUILDS, EXCEPTION_FIELDS, ITEM_FIELDS

    spec = json.loads(Path(spec_file).read_text())
    config = Configuration(
        service_endpoint=spec["url"],
        credentials=Credentials(spec["user"], spec["password"]),
        auth_type=BASIC,
        version=Version(BUILDS["Exchange2016"]),
        max_connections=THREADS,
    )

    def paths(names: tuple[str, ...]) -> set[Any]:
        return {FieldPath(field=CalendarItem.get_field_by_fieldname(n)) for n in names}

    item_fields, exception_fields = paths(ITEM_FIELDS), paths(EXCEPTION_FIELDS)
    options = {"shape": ID_ONLY, "additional_fields": set(), "ignore": None, "max_changes_returned": BATCH}
    options["sync_scope"] = None

    def get(account: Account, ids: list[str], fields: set[Any]) -> list[Any]:
        service = GetItem(account=account, chunk_size=max(1, len(ids)))
        return list(service.call(items=[ItemId(id=i) for i in ids], additional_fields=fields, shape=ID_ONLY))

    def read(mailbox: str) -> int:
        account = Account(mailbox, config=config, autodiscover=False, access_type=IMPERSONATION)
        folder = DistinguishedFolderId(id="calendar", mailbox=Mailbox(email_address=mailbox))
        state, items = None, 0
        for _ in range(10_000):  # pages; bounded
            service = SyncFolderItems(account=account)
            found = service.call(folder=folder, sync_state=state, **options)
            ids = [obj.id for kind, obj in found if kind != SyncFolderItems.DELETE]
            fetched = [i for i in get(account, ids, item_fields) if isinstance(i, CalendarItem)] if ids else []
            occurrences = [o.id for i in fetched if i.recurrence for o in i.modified_occurrences or ()]
            if occurrences:
                get(account, occurrences, exception_fields)
            items += len(fetched)
            state = service.sync_state
            if service.includes_last_item_in_range:
                return items
        raise RuntimeError(f"{mailbox}: no end after 10,000 pages")

    retries: list[str] = []

    def read_again_if_cut(mailbox: str) -> int:
        """A connection the server dropped (or any failure) reads the mailbox again from the start, at most twice:
        what calsync does too, a second later (a transient failure retries the pass)."""
        return _again_if_cut(read, mailbox, retries)

    result = _read_all(read_again_if_cut, spec["mailboxes"])
    result["retries"] = retries
    print(json.dumps({"result": result}), flush=True)


def _again_if_cut(read: Callable[[str], int], mailbox: str, retries: list[str]) -> int:
    for attempt in range(3):
        try:
            return read(mailbox)
        except Exception as exc:
            if attempt == 2:
                raise
            retries.append(f"{mailbox}: {type(exc).__name__}")
    raise AssertionError("unreachable")


def _read_all(read: Callable[[str], int], mailboxes: list[str]) -> dict[str, Any]:
    """Every mailbox read on :data:`THREADS` threads, progress printed as JSON lines; the counts and times."""
    started, cpu_at_start = time.monotonic(), time.process_time()
    total = 0
    with ThreadPoolExecutor(THREADS) as pool:
        for n, items in enumerate(pool.map(read, mailboxes), 1):
            total += items
            print(json.dumps({"done": n, "items": total}), flush=True)
    result: dict[str, Any] = {"items": total, "read_seconds": time.monotonic() - started}
    result["cpu_seconds"] = time.process_time()
    result["start_cpu_seconds"] = cpu_at_start  # imports and set-up, before the first request
    return result


def graph_ceiling_worker(spec_file: str) -> None:
    """Read every mailbox through calsync's own ``GraphSource`` (delta of the window, series masters by $batch,
    mapped to appointments) on the same 4 threads, storing nothing; print progress and a result."""
    from calsync.sources.graph import GraphSource

    spec = json.loads(Path(spec_file).read_text())
    graph = spec["graph"]
    source = GraphSource(
        endpoint=graph["graph_endpoint"],
        authority=graph["graph_authority"],
        tenant_id=graph["graph_tenant_id"],
        client_id=graph["graph_client_id"],
        client_secret=graph["graph_client_secret"],
        ca_file=Path(graph["graph_ca_file"]),
    )
    retries: list[str] = []

    def read(mailbox: str) -> int:  # as calsync: a failed pass reads the mailbox again from the start
        return _again_if_cut(
            lambda m: sum(len(page.upserts) for page in source.changes(m, None, BATCH)), mailbox, retries
        )

    result = _read_all(read, spec["mailboxes"])
    result["retries"] = retries
    result["source_requests"] = {"http": source.stats.requests, "by_operation": source.stats.by_operation}
    source.close()
    print(json.dumps({"result": result}), flush=True)


def run_ceiling(emu: Emulator, mailboxes: list[str], tmp: str, source: str = "ews") -> dict[str, Any]:
    """The ceiling of ``source`` as its own process: exchangelib (EWS) or GraphSource (Graph), storing nothing."""
    spec = Path(tmp) / f"ceiling-{source}.json"
    what: dict[str, Any] = {"url": emu.url, "user": USER, "password": PASSWORD, "mailboxes": mailboxes}
    if source == "graph":
        assert isinstance(emu, BenchEmulator)
        what |= {"source": "graph", "graph": graph_settings(emu)}
    spec.write_text(json.dumps(what))
    env = clean_env()
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    before, load = dict(emu.exchange.stats), os.getloadavg()[0]
    counted = snapshot(emu) if isinstance(emu, BenchEmulator) else {}
    started, emulator_cpu = time.monotonic(), time.process_time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.initial_sync", "--worker", str(spec)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    result: dict[str, Any] = {}
    with progress_bar() as progress:
        reading = "GraphSource" if source == "graph" else "exchangelib"
        task = progress.add_task(f"ceiling: {reading} reading", total=len(mailboxes))
        for line in proc.stdout:  # ends when the worker exits
            message = json.loads(line)
            if "done" in message:
                progress.update(task, completed=message["done"])
            else:
                result = message["result"]
    seconds = time.monotonic() - started
    if proc.wait(60) != 0 or not result:
        raise RuntimeError(f"the ceiling worker failed (exit code {proc.returncode})")
    result["emulator_cpu_seconds"] = time.process_time() - emulator_cpu
    result["load_average"] = [round(load, 1), round(os.getloadavg()[0], 1)]
    if source == "graph":
        assert isinstance(emu, BenchEmulator)
        return {**result, "seconds": seconds, "requests": all_requests_since(emu, counted)}
    return {**result, "seconds": seconds, "requests": requests_since(emu, before)}


# --- calsync ----------------------------------------------------------------------------------------------------------


@contextmanager
def calsync_serve(
    emu: Emulator, mailboxes: list[str], database: str, tmp: str, profile: str | None, source: str = "ews"
) -> Iterator[tuple[str, Any, datetime, int]]:
    """A fresh database (SQLite file or PostgreSQL schema) with every operator enabled (read through ``source``),
    and ``calsync serve`` on it (4 sync threads), recorded by py-spy if asked. Yields the database URL, an engine
    on it, the time the server process was started and its pid."""
    schema = postgres_schema if database == "postgresql" else None
    with contextmanager_or_sqlite(schema, tmp) as url:
        port = free_port()
        settings = settings_for(url, emu.url, port)
        if source == "graph":
            assert isinstance(emu, BenchEmulator)
            settings |= graph_settings(emu)
        prepare(url, settings, mailboxes, tmp, source=source)
        engine = create_engine(url)
        command = [
            sys.executable,
            "-m",
            "calsync",
            "serve",
            "--create-database",
            "--port",
            str(port),
            "--threads",
            str(THREADS),
        ]
        spawned = datetime.now(UTC)
        try:
            with server(command, clean_env(**settings), tmp, port) as proc, profiled(proc.pid, profile):
                yield url, engine, spawned, proc.pid
        finally:
            engine.dispose()


def run_calsync(
    emu: Emulator, mailboxes: list[str], database: str, tmp: str, profile: str | None, source: str = "ews"
) -> dict[str, Any]:
    before, load, emulator_cpu = dict(emu.exchange.stats), os.getloadavg()[0], time.process_time()
    counted = snapshot(emu) if isinstance(emu, BenchEmulator) else {}
    serving = calsync_serve(emu, mailboxes, database, tmp, profile, source)
    with serving as (_, engine, spawned, pid), progress_bar() as progress:
        listening, start_cpu = (datetime.now(UTC) - spawned).total_seconds(), cpu_seconds(pid)
        label = f"calsync ({LABEL[source]})"
        synced_task = progress.add_task(f"{label}: operators through their initial sync", total=len(mailboxes))
        rows_task = progress.add_task(f"{label}: appointments landed", total=None)
        deadline = time.monotonic() + 3600
        while True:
            with engine.connect() as conn:
                done = conn.execute(text("SELECT count(*) FROM sync_states WHERE initial_done")).scalar_one()
                rows = conn.execute(text("SELECT max(id) FROM appointments")).scalar_one()  # cheaper than count
            progress.update(synced_task, completed=done)
            progress.update(rows_task, completed=rows)
            if done >= len(mailboxes):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"calsync did not finish the initial sync in an hour ({done} done)")
            time.sleep(1.0)
        with engine.connect() as conn:
            finished, first_pass, passes = conn.execute(
                text("SELECT max(last_pass_finished), min(last_pass_started), sum(passes) FROM mailbox_work")
            ).one()
            first_sub, last_sub = conn.execute(text("SELECT min(created_at), max(created_at) FROM subscriptions")).one()
            rows = conn.execute(text("SELECT count(*) FROM appointments")).scalar_one()
        cpu = cpu_seconds(pid)
        with console.status(f"{label}: idle for {IDLE_SECONDS:.0f} s (its CPU rate with nothing to do)"):
            time.sleep(IDLE_SECONDS)
        idle = (cpu_seconds(pid) - cpu) / IDLE_SECONDS
    return {
        "cpu_seconds": cpu,
        "idle_cpu_per_second": idle,  # scheduler, jobs, listener with nothing to do: CPU seconds per second
        "start_cpu_seconds": start_cpu,  # imports, migrations, until the listener answered
        "emulator_cpu_seconds": time.process_time() - emulator_cpu,
        "load_average": [round(load, 1), round(os.getloadavg()[0], 1)],
        "seconds": (as_utc(finished) - spawned).total_seconds(),
        "listening_after_seconds": listening,
        "first_pass_after_seconds": (as_utc(first_pass) - spawned).total_seconds(),
        "subscribed_between_seconds": [(as_utc(t) - spawned).total_seconds() for t in (first_sub, last_sub)],
        "passes": int(passes),
        "landed": int(rows),
        "requests": (
            all_requests_since(emu, counted)
            if source == "graph" and isinstance(emu, BenchEmulator)
            else requests_since(emu, before)
        ),
    }


@contextmanager
def profiled(pid: int, output: str | None) -> Iterator[None]:
    """Record a process with py-spy (every thread, 25 samples a second, idle waits left out) into ``output``, raw
    collapsed stacks; nothing when ``output`` is None. pyinstrument would only see calsync's main thread."""
    if output is None:
        yield
        return
    spy = str(Path(sys.executable).parent / "py-spy")
    command = [spy, "record", "--pid", str(pid), "--rate", "25", "--format", "raw", "--threads", "-o", output]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


# --- report -----------------------------------------------------------------------------------------------------------


@dataclass
class Row:
    what: str
    calsync: float
    ceiling: float | None
    unit: str

    @property
    def ratio(self) -> float | None:
        return None if not self.ceiling else self.calsync / self.ceiling


def parse_arguments(
    doc: str | None,
    name: str,
    quick: str,
    sizes: tuple[int, int],
    worker: Callable[[str], None],
    options: Callable[[argparse.ArgumentParser], None],
) -> argparse.Namespace | None:
    """The options initial_sync and cost share, then ``options``; ``args.mailboxes`` resolved from ``sizes``
    (quick, full). None when this process was started as a helper (``--worker SPEC``) and ran ``worker``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--mailboxes", type=int, default=None, help=f"mailboxes (default {sizes[1]:,})")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--profile", default=None, help="py-spy record calsync into this file (raw)")
    parser.add_argument("--output", type=Path, default=None, help=f"default bench/results/{name}[-DB].json")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    options(parser)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return None
    args.mailboxes = args.mailboxes or sizes[0 if args.quick else 1]
    return args


def output_path(args: argparse.Namespace, name: str) -> Path:
    suffix = "" if args.database == "sqlite" else f"-{args.database}"
    return args.output or Path(__file__).parent / "results" / f"{name}{suffix}.json"


def cell(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s/s":
        return f"{value:.3f}"
    return f"{value:,.1f}" if unit else f"{value:,.0f}"


def print_table(title: str, columns: tuple[str, str, str], rows: list[Row]) -> None:
    table = Table(title=title)
    for column in ("measure", *columns):
        table.add_column(column, justify="left" if column == "measure" else "right")
    for r in rows:
        table.add_row(
            r.what, cell(r.calsync, r.unit), cell(r.ceiling, r.unit), "-" if r.ratio is None else f"{r.ratio:.2f}"
        )
    console.print(table)


def verdict(value: float) -> str:
    return "[green]met[/green]" if value >= 0.8 else "[red]missed[/red]"


def work_cpu(side: dict[str, Any]) -> float:
    """CPU seconds of a reading process after its start-up."""
    return float(side["cpu_seconds"] - side["start_cpu_seconds"])


def net_cpu(calsync: dict[str, Any]) -> float:
    """calsync's CPU seconds after its start-up less what it would have used idle over the same time (its
    scheduler, jobs and listener, measured right after): the part the initial sync cost. The idle rate can be
    read only after the sync, so this is computed from two measured figures."""
    busy = calsync["seconds"] - calsync["listening_after_seconds"]
    return work_cpu(calsync) - calsync["idle_cpu_per_second"] * busy


def ews_figures(items: int, ceiling: dict[str, Any], calsync: dict[str, Any]) -> dict[str, Any]:
    """EWS: calsync beside exchangelib reading the same items (the figures of record, their keys unchanged)."""
    if ceiling["items"] != items:
        raise RuntimeError(f"the ceiling read {ceiling['items']} items, the emulator holds {items}")
    c_req, x_req = calsync["requests"], ceiling["requests"]
    cpu = [work_cpu(side) for side in (calsync, ceiling)]
    reads = ("SyncFolderItems", "GetItem")
    rows = [
        Row("seconds, process start to all mailboxes done", calsync["seconds"], ceiling["seconds"], "s"),
        Row("items read per second", items / calsync["seconds"], items / ceiling["seconds"], "/s"),
        Row("appointments landed per second (in the store)", calsync["landed"] / calsync["seconds"], None, "/s"),
        Row("SyncFolderItems + GetItem requests", sum(c_req.get(k, 0) for k in reads), sum(x_req.values()), ""),
        Row("Subscribe requests", c_req.get("Subscribe", 0), None, ""),
        Row("CPU seconds of the reading process after its start-up", cpu[0], cpu[1], "s"),
        Row("items read per CPU second of that process", items / cpu[0], items / cpu[1], "/s"),
        Row("appointments landed per CPU second of that process", calsync["landed"] / cpu[0], None, "/s"),
        Row("calsync's idle CPU, seconds per second (measured after)", calsync["idle_cpu_per_second"], None, "s/s"),
        Row("items read per CPU second, calsync's idle CPU subtracted", items / net_cpu(calsync), items / cpu[1], "/s"),
        Row(
            "emulator's CPU seconds (this process)",
            calsync["emulator_cpu_seconds"],
            ceiling["emulator_cpu_seconds"],
            "s",
        ),
    ]
    ratio = ceiling["seconds"] / calsync["seconds"]
    cpu_ratio = cpu[1] / cpu[0]
    return {
        "ratio_to_ceiling": ratio,
        "cpu_ratio_to_ceiling": cpu_ratio,
        "table": [{**asdict(r), "ratio": r.ratio} for r in rows],
        "rows": rows,
    }


def graph_figures(ceiling: dict[str, Any], calsync: dict[str, Any]) -> dict[str, Any]:
    """Graph: calsync beside GraphSource reading the same mailboxes, storing nothing. Items read = the events the
    source returns (single events and whole series in the delta window: Graph lists nothing outside it, so fewer
    than the emulator holds), counted by the ceiling; calsync reads the same through the same code."""
    items = ceiling["items"]
    c_req, x_req = calsync["requests"], ceiling["requests"]
    subscriptions = c_req["graph_http_calls"].get("subscriptions", 0)
    cpu = [work_cpu(side) for side in (calsync, ceiling)]
    rows = [
        Row("seconds, process start to all mailboxes done", calsync["seconds"], ceiling["seconds"], "s"),
        Row("items read per second", items / calsync["seconds"], items / ceiling["seconds"], "/s"),
        Row("appointments landed per second (in the store)", calsync["landed"] / calsync["seconds"], None, "/s"),
        Row("Graph requests, reads (each in a $batch counted)", c_req["graph"] - subscriptions, x_req["graph"], ""),
        Row(
            "HTTP calls, reads (delta + $batch)",
            c_req["graph_http_total"] - subscriptions,
            x_req["graph_http_total"],
            "",
        ),
        Row("subscriptions created (POST /subscriptions)", subscriptions, None, ""),
        Row("tokens issued", c_req["graph_tokens_issued"], x_req["graph_tokens_issued"], ""),
        Row("CPU seconds of the reading process after its start-up", cpu[0], cpu[1], "s"),
        Row("items read per CPU second of that process", items / cpu[0], items / cpu[1], "/s"),
        Row("appointments landed per CPU second of that process", calsync["landed"] / cpu[0], None, "/s"),
        Row("calsync's idle CPU, seconds per second (measured after)", calsync["idle_cpu_per_second"], None, "s/s"),
        Row("items read per CPU second, calsync's idle CPU subtracted", items / net_cpu(calsync), items / cpu[1], "/s"),
        Row(
            "emulator's CPU seconds (this process)",
            calsync["emulator_cpu_seconds"],
            ceiling["emulator_cpu_seconds"],
            "s",
        ),
    ]
    return {
        "items_read": items,
        "ratio_to_ceiling": ceiling["seconds"] / calsync["seconds"],
        "cpu_ratio_to_ceiling": cpu[1] / cpu[0],
        "table": [{**asdict(r), "ratio": r.ratio} for r in rows],
        "rows": rows,
    }


def compare(ews: dict[str, Any], graph: dict[str, Any], items: int) -> dict[str, Any]:
    """Graph beside EWS, same run, same emulator: per CPU second of calsync (and of each ceiling)."""

    def per_cpu(side: dict[str, Any], what: float) -> float:
        return what / work_cpu(side)

    e, g = ews["calsync"], graph["calsync"]
    figures = {
        "calsync_landed_per_cpu_second": [per_cpu(e, e["landed"]), per_cpu(g, g["landed"])],
        "calsync_items_read_per_cpu_second": [per_cpu(e, items), per_cpu(g, graph["items_read"])],
        "calsync_landed_per_net_cpu_second": [e["landed"] / net_cpu(e), g["landed"] / net_cpu(g)],
        "ceiling_items_read_per_cpu_second": [
            per_cpu(ews["ceiling"], items),
            per_cpu(graph["ceiling"], graph["items_read"]),
        ],
        "calsync_seconds": [e["seconds"], g["seconds"]],
        "landed": [e["landed"], g["landed"]],
        "emulator_cpu_seconds": [e["emulator_cpu_seconds"], g["emulator_cpu_seconds"]],
    }
    return {
        k: {"ews": v[0], "graph": v[1], "graph_over_ews": v[1] / v[0] if v[0] else None} for k, v in figures.items()
    }


def main() -> None:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--appointments", type=int, default=None, help="appointments per mailbox (default 200)")
        parser.add_argument("--sources", default=",".join(SOURCES), help="ews, graph or both (default), in that order")

    args = parse_arguments(__doc__, "initial_sync", "50 x 50 appointments (CI)", (50, 1000), ceiling_worker, options)
    if args is None:
        return
    count = args.mailboxes
    appointments = args.appointments or (50 if args.quick else 200)
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    if not sources or any(s not in SOURCES for s in sources):
        raise SystemExit(f"--sources: a comma-separated list of {', '.join(SOURCES)}")
    sources = [s for s in SOURCES if s in sources]
    output = output_path(args, "initial_sync")
    mailboxes = [f"user{i}@example.com" for i in range(1, count + 1)]

    console.print(
        f"[bold]initial sync[/bold]: {count:,} mailboxes x {appointments} appointments, {args.database}, "
        f"through {' then '.join(LABEL[s] for s in sources)}"
    )
    emu = BenchEmulator(USER, PASSWORD, mailboxes)
    t0 = time.monotonic()
    content: dict[str, Any] = dict(fill(emu, mailboxes, appointments))
    content["fill_seconds"] = round(time.monotonic() - t0, 1)
    console.print(
        f"emulator filled in {content['fill_seconds']} s: {content['items']:,} items, {content['series']:,} "
        f"recurring series ({content['series_with_exceptions']:,} with moved or deleted occurrences)"
    )
    runs: dict[str, dict[str, Any]] = {}
    emu.start()
    try:
        with tempfile.TemporaryDirectory(prefix="calsync-bench-") as top:
            for source in sources:
                console.rule(LABEL[source])
                tmp = str(Path(top) / source)  # a fresh database for each source
                Path(tmp).mkdir()
                profile = args.profile
                if profile and len(sources) > 1 and source != "ews":
                    profile = f"{profile}.{source}"
                ceiling = run_ceiling(emu, mailboxes, tmp, source)
                console.print(f"ceiling ({LABEL[source]}): {ceiling['items']:,} items in {ceiling['seconds']:.1f} s")
                calsync = run_calsync(emu, mailboxes, args.database, tmp, profile, source)
                console.print(
                    f"calsync ({LABEL[source]}): {calsync['landed']:,} appointments landed in "
                    f"{calsync['seconds']:.1f} s"
                )
                end_subscriptions(emu)  # calsync has stopped; nothing else runs meanwhile
                runs[source] = {"ceiling": ceiling, "calsync": calsync}
    finally:
        emu.stop()

    items = content["items"]
    size = {"mailboxes": count, "appointments_each": appointments, "database": args.database}
    size |= {"threads": THREADS, "batch_size": BATCH, "sources": sources}
    fields: dict[str, Any] = {"emulator": content}
    title = f"{count:,} mailboxes x {appointments} ({items:,} items), {args.database}"
    if "ews" in runs:
        ews = runs["ews"]
        figures = ews_figures(items, ews["ceiling"], ews["calsync"])
        print_table(
            f"Initial sync through EWS, {title}",
            ("calsync", "ceiling (exchangelib, no storage)", "calsync / ceiling"),
            figures.pop("rows"),
        )
        ratio, cpu_ratio = figures["ratio_to_ceiling"], figures["cpu_ratio_to_ceiling"]
        calsync, ceiling = ews["calsync"], ews["ceiling"]
        console.print(
            f"EWS: calsync reads at {cpu_ratio:.2f}x the ceiling's items per CPU second of the reading process (aim "
            f"0.80: {verdict(cpu_ratio)}) and at {ratio:.2f}x its items per second of wall time ({verdict(ratio)}). "
            "The two runs take turns, so the wall-time ratio also measures how the machine's other load changed "
            f"between them (load average, 1 min, at start and end: ceiling {ceiling['load_average']}, calsync "
            f"{calsync['load_average']}, {os.cpu_count()} cores); CPU seconds do not depend on it. First pass "
            f"{calsync['first_pass_after_seconds']:.1f} s after start; Subscribes from "
            f"{calsync['subscribed_between_seconds'][0]:.1f} s to {calsync['subscribed_between_seconds'][1]:.1f} s; "
            f"{items - calsync['landed']:,} items not stored (wholly before the past window)."
        )
        fields |= figures | {"ceiling": ceiling, "calsync": calsync}  # the keys the EWS figures always had
    if "graph" in runs:
        graph = runs["graph"]
        figures = graph_figures(graph["ceiling"], graph["calsync"])
        print_table(
            f"Initial sync through Graph, {title}",
            ("calsync", "ceiling (GraphSource, no storage)", "calsync / ceiling"),
            figures.pop("rows"),
        )
        calsync = graph["calsync"]
        ratio, cpu_ratio = figures["ratio_to_ceiling"], figures["cpu_ratio_to_ceiling"]
        console.print(
            f"Graph: calsync reads at {cpu_ratio:.2f}x the ceiling's items per CPU second ({verdict(cpu_ratio)}) and "
            f"at {ratio:.2f}x its items per second of wall time; {figures['items_read']:,} items read (single events "
            f"and series in the delta window), {calsync['landed']:,} landed; load average: ceiling "
            f"{graph['ceiling']['load_average']}, calsync {calsync['load_average']}. First pass "
            f"{calsync['first_pass_after_seconds']:.1f} s after start; subscriptions from "
            f"{calsync['subscribed_between_seconds'][0]:.1f} s to {calsync['subscribed_between_seconds'][1]:.1f} s."
        )
        fields["graph"] = figures | graph
    if len(runs) == 2:
        both = compare(runs["ews"], fields["graph"], items)
        fields["graph_vs_ews"] = both
        table = Table(title=f"Graph beside EWS, same run, {title}")
        for column in ("measure", "EWS", "Graph", "Graph / EWS"):
            table.add_column(column, justify="left" if column == "measure" else "right")
        names = {
            "calsync_landed_per_cpu_second": "calsync: appointments landed per CPU second",
            "calsync_items_read_per_cpu_second": "calsync: items read per CPU second (each source's own items)",
            "calsync_landed_per_net_cpu_second": "calsync: appointments landed per CPU second, idle CPU subtracted",
            "ceiling_items_read_per_cpu_second": "ceiling: items read per CPU second, no storage",
            "calsync_seconds": "calsync: seconds, start to all mailboxes done",
            "landed": "appointments landed",
            "emulator_cpu_seconds": "emulator's CPU seconds during calsync's turn",
        }
        for key, name in names.items():
            f = both[key]
            r = f["graph_over_ews"]
            table.add_row(name, f"{f['ews']:,.1f}", f"{f['graph']:,.1f}", "-" if r is None else f"{r:.2f}")
        console.print(table)
    write_results(output, args.quick, console, **size, **fields)


if __name__ == "__main__":
    main()

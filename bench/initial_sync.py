"""Initial sync: appointments per second that calsync reads from Exchange and lands in its calendar store when it
syncs every enabled operator for the first time, beside the ceiling (a plain EWS client reading the same items
with the same requests and the same concurrency, storing nothing).

    python -m bench.initial_sync                          # 1,000 mailboxes x 200 appointments, SQLite
    python -m bench.initial_sync --database postgresql
    python -m bench.initial_sync --quick                  # 50 x 50

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
own request counters (``op:*``) give the requests each side made.
Results go to bench/results/initial_sync.json (``initial_sync-postgresql.json`` for PostgreSQL).
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

from bench.common import write_results
from bench.latency import PASSWORD, USER, as_utc, prepare, settings_for
from bench.listener import clean_env, contextmanager_or_sqlite, free_port, postgres_schema, server
from calsync.emulator import Emulator
from calsync.emulator.sample_data import populate

THREADS = 4  # NotificationProcessor's default, and `calsync serve --threads`
BATCH = 512  # the batch_size (EWSBatchSize) default
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
    """Read every mailbox with exchangelib as calsync's source does, store nothing; print progress and a result."""
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
        for attempt in range(3):
            try:
                return read(mailbox)
            except Exception as exc:
                if attempt == 2:
                    raise
                retries.append(f"{mailbox}: {type(exc).__name__}")
        raise AssertionError("unreachable")

    started, cpu_at_start = time.monotonic(), time.process_time()
    total = 0
    with ThreadPoolExecutor(THREADS) as pool:
        for n, items in enumerate(pool.map(read_again_if_cut, spec["mailboxes"]), 1):
            total += items
            print(json.dumps({"done": n, "items": total}), flush=True)
    result = {"items": total, "read_seconds": time.monotonic() - started, "cpu_seconds": time.process_time()}
    result["start_cpu_seconds"] = cpu_at_start  # imports and set-up, before the first request
    result["retries"] = retries
    print(json.dumps({"result": result}), flush=True)


def run_ceiling(emu: Emulator, mailboxes: list[str], tmp: str) -> dict[str, Any]:
    spec = Path(tmp) / "ceiling.json"
    spec.write_text(json.dumps({"url": emu.url, "user": USER, "password": PASSWORD, "mailboxes": mailboxes}))
    env = clean_env()
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    before, load = dict(emu.exchange.stats), os.getloadavg()[0]
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
        task = progress.add_task("ceiling: exchangelib reading", total=len(mailboxes))
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
    return {**result, "seconds": seconds, "requests": requests_since(emu, before)}


# --- calsync ----------------------------------------------------------------------------------------------------------


@contextmanager
def calsync_serve(
    emu: Emulator, mailboxes: list[str], database: str, tmp: str, profile: str | None
) -> Iterator[tuple[str, Any, datetime, int]]:
    """A fresh database (SQLite file or PostgreSQL schema) with every operator enabled, and ``calsync serve`` on
    it (4 sync threads), recorded by py-spy if asked. Yields the database URL, an engine on it, the time the
    server process was started and its pid."""
    schema = postgres_schema if database == "postgresql" else None
    with contextmanager_or_sqlite(schema, tmp) as url:
        port = free_port()
        settings = settings_for(url, emu.url, port)
        prepare(url, settings, mailboxes, tmp)
        engine = create_engine(url)
        command = [sys.executable, "-m", "calsync", "serve", "--port", str(port), "--threads", str(THREADS)]
        spawned = datetime.now(UTC)
        try:
            with server(command, clean_env(**settings), tmp, port) as proc, profiled(proc.pid, profile):
                yield url, engine, spawned, proc.pid
        finally:
            engine.dispose()


def run_calsync(emu: Emulator, mailboxes: list[str], database: str, tmp: str, profile: str | None) -> dict[str, Any]:
    before, load, emulator_cpu = dict(emu.exchange.stats), os.getloadavg()[0], time.process_time()
    with calsync_serve(emu, mailboxes, database, tmp, profile) as (_, engine, spawned, pid), progress_bar() as progress:
        listening, start_cpu = (datetime.now(UTC) - spawned).total_seconds(), cpu_seconds(pid)
        synced_task = progress.add_task("calsync: operators through their initial sync", total=len(mailboxes))
        rows_task = progress.add_task("calsync: appointments landed", total=None)
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
    return {
        "cpu_seconds": cpu,
        "start_cpu_seconds": start_cpu,  # imports, migrations, until the listener answered
        "emulator_cpu_seconds": time.process_time() - emulator_cpu,
        "load_average": [round(load, 1), round(os.getloadavg()[0], 1)],
        "seconds": (as_utc(finished) - spawned).total_seconds(),
        "listening_after_seconds": listening,
        "first_pass_after_seconds": (as_utc(first_pass) - spawned).total_seconds(),
        "subscribed_between_seconds": [(as_utc(t) - spawned).total_seconds() for t in (first_sub, last_sub)],
        "passes": int(passes),
        "landed": int(rows),
        "requests": requests_since(emu, before),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, all its threads (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def main() -> None:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--appointments", type=int, default=None, help="appointments per mailbox (default 200)")

    args = parse_arguments(__doc__, "initial_sync", "50 x 50 appointments (CI)", (50, 1000), ceiling_worker, options)
    if args is None:
        return
    count = args.mailboxes
    appointments = args.appointments or (50 if args.quick else 200)
    output = output_path(args, "initial_sync")
    mailboxes = [f"user{i}@example.com" for i in range(1, count + 1)]

    console.print(f"[bold]initial sync[/bold]: {count:,} mailboxes x {appointments} appointments, {args.database}")
    emu = Emulator(accounts={USER: PASSWORD}, mailboxes=mailboxes)
    t0 = time.monotonic()
    content = fill(emu, mailboxes, appointments)
    content["fill_seconds"] = round(time.monotonic() - t0, 1)
    console.print(
        f"emulator filled in {content['fill_seconds']} s: {content['items']:,} items, {content['series']:,} "
        f"recurring series ({content['series_with_exceptions']:,} with moved or deleted occurrences)"
    )
    emu.start()
    try:
        with tempfile.TemporaryDirectory(prefix="calsync-bench-") as tmp:
            ceiling = run_ceiling(emu, mailboxes, tmp)
            console.print(f"ceiling: {ceiling['items']:,} items in {ceiling['seconds']:.1f} s")
            calsync = run_calsync(emu, mailboxes, args.database, tmp, args.profile)
            console.print(f"calsync: {calsync['landed']:,} appointments landed in {calsync['seconds']:.1f} s")
    finally:
        emu.stop()

    items = content["items"]
    if ceiling["items"] != items:
        raise RuntimeError(f"the ceiling read {ceiling['items']} items, the emulator holds {items}")
    c_req, x_req = calsync["requests"], ceiling["requests"]
    work_cpu = [side["cpu_seconds"] - side["start_cpu_seconds"] for side in (calsync, ceiling)]
    reads = ("SyncFolderItems", "GetItem")
    rows = [
        Row("seconds, process start to all mailboxes done", calsync["seconds"], ceiling["seconds"], "s"),
        Row("items read per second", items / calsync["seconds"], items / ceiling["seconds"], "/s"),
        Row("appointments landed per second (in the store)", calsync["landed"] / calsync["seconds"], None, "/s"),
        Row("SyncFolderItems + GetItem requests", sum(c_req.get(k, 0) for k in reads), sum(x_req.values()), ""),
        Row("Subscribe requests", c_req.get("Subscribe", 0), None, ""),
        Row("CPU seconds of the reading process after its start-up", *work_cpu, "s"),
        Row("items read per CPU second of that process", items / work_cpu[0], items / work_cpu[1], "/s"),
        Row(
            "emulator's CPU seconds (this process)",
            calsync["emulator_cpu_seconds"],
            ceiling["emulator_cpu_seconds"],
            "s",
        ),
    ]
    table = Table(title=f"Initial sync, {count:,} mailboxes x {appointments} ({items:,} items), {args.database}")
    for column in ("measure", "calsync", "ceiling (exchangelib, no storage)", "calsync / ceiling"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    for r in rows:
        table.add_row(
            r.what,
            f"{r.calsync:,.1f}" if r.unit else f"{r.calsync:,.0f}",
            "-" if r.ceiling is None else (f"{r.ceiling:,.1f}" if r.unit else f"{r.ceiling:,.0f}"),
            "-" if r.ratio is None else f"{r.ratio:.2f}",
        )
    console.print(table)
    ratio = ceiling["seconds"] / calsync["seconds"]
    cpu_ratio = work_cpu[1] / work_cpu[0]

    def verdict(value: float) -> str:
        return "[green]met[/green]" if value >= 0.8 else "[red]missed[/red]"

    console.print(
        f"calsync reads at {cpu_ratio:.2f}x the ceiling's items per CPU second of the reading process (aim 0.80: "
        f"{verdict(cpu_ratio)}) and at {ratio:.2f}x its items per second of wall time ({verdict(ratio)}). The two "
        "runs take turns, so the wall-time ratio also measures how the machine's other load changed between them "
        f"(load average, 1 min, at start and end: ceiling {ceiling['load_average']}, calsync "
        f"{calsync['load_average']}, {os.cpu_count()} cores); CPU seconds do not depend on it. First pass "
        f"{calsync['first_pass_after_seconds']:.1f} s after start; Subscribes from "
        f"{calsync['subscribed_between_seconds'][0]:.1f} s to {calsync['subscribed_between_seconds'][1]:.1f} s; "
        f"{items - calsync['landed']:,} items not stored (wholly before the past window)."
    )
    size = {"mailboxes": count, "appointments_each": appointments, "database": args.database}
    size |= {"threads": THREADS, "batch_size": BATCH}
    figures = {"ratio_to_ceiling": ratio, "cpu_ratio_to_ceiling": cpu_ratio}
    figures["table"] = [{**asdict(r), "ratio": r.ratio} for r in rows]
    write_results(output, args.quick, console, **size, **figures, emulator=content, ceiling=ceiling, calsync=calsync)


if __name__ == "__main__":
    main()

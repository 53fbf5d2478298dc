"""Change latency end to end: from a change made in Exchange to the appointment committed in the application
calendar, beside the floor (one SyncFolderItems + GetItem round trip for the same kind of change, storing nothing).

    python -m bench.latency             # 1,000 subscribed mailboxes, 5 changes/s for 30 s, SQLite
    python -m bench.latency --quick     # 100 mailboxes, 5 changes/s for 10 s
    python -m bench.latency --database postgresql

The emulator runs in this process (changes are made through ``Emulator.outlook(addr).create/update``, as a
person in Outlook would). ``calsync serve`` (listener and jobs) runs as its own process against a database in a
temporary directory (or a fresh PostgreSQL schema); the emulator pushes to it over real HTTP. Each change gets a
unique subject; a poller reads the appointments table every 20 ms and takes the ``synced_at`` calsync wrote for
that subject (set in the transaction that stores it, a moment before its commit). Latency = synced_at - time
the change was made. An update only ever targets an item whose current subject has been seen stored, so no
change is overwritten before it is measured.

Setup is measured too: from starting calsync with M enabled operators to all of them subscribed and through
their initial sync. The floor is measured after calsync has stopped, on the same emulator: for a sample of
mailboxes, sync to the end, make one change, time ``EwsSource.changes()`` from the previous sync state.
Results go to bench/results/latency.json.
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

from bench.common import write_results
from bench.listener import clean_env, free_port, postgres_schema, server
from calsync.emulator import Emulator
from calsync.sources.ews import EwsSource

USER, PASSWORD = "svc-bench", "bench-pw-1"
SECRET = "l" * 32
console = Console()


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


def prepare(database_url: str, settings: dict[str, str], mailboxes: list[str], cwd: str) -> None:
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
                operators.add(session, address, enabled=True)
            job_store.request_run(session, job_store.MANAGE_SUBSCRIPTIONS)
        runtime.close()
    finally:
        os.chdir(old)
        os.environ.update(saved)


def as_utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def wait_settled(engine: Any, count: int, timeout: float) -> float:
    """Seconds until every operator has a subscription and has finished its initial sync."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with engine.connect() as conn:
            subscribed = conn.execute(text("SELECT count(*) FROM subscriptions")).scalar_one()
            synced = conn.execute(text("SELECT count(*) FROM sync_states")).scalar_one()
            dirty = conn.execute(
                text("SELECT count(*) FROM mailbox_work WHERE dirty_gen > done_gen OR lease_owner IS NOT NULL")
            ).scalar_one()
        if subscribed >= count and synced >= count and dirty == 0:
            return time.monotonic() - started
        time.sleep(0.5)
    raise RuntimeError(f"calsync did not settle in {timeout:.0f} s ({subscribed} subscribed, {synced} synced)")


class Poller(threading.Thread):
    """Reads newly stored appointments and stamps the change their subject names."""

    def __init__(self, engine: Any, changes: dict[str, Change]) -> None:
        super().__init__(daemon=True)
        self.engine, self.changes = engine, changes
        self.stop = threading.Event()
        self.since = datetime.now(UTC) - timedelta(seconds=1)
        self.seen: set[str] = set()  # item ids whose latest change has been stored
        self.lock = threading.Lock()

    def run(self) -> None:
        query = text("SELECT item_id, subject, synced_at FROM appointments WHERE synced_at >= :since")
        while not self.stop.is_set():
            with self.engine.connect() as conn:
                rows = conn.execute(query, {"since": self.since}).all()
            for item_id, subject, synced_at in rows:
                change = self.changes.get(subject or "")
                if change is not None and change.synced_at is None:
                    change.synced_at = as_utc(synced_at)
                    with self.lock:
                        self.seen.add(item_id)
            self.stop.wait(0.02)


def spec(subject: str, rnd: random.Random) -> dict[str, Any]:
    start = (datetime.now(UTC) + timedelta(days=rnd.randint(1, 30))).replace(minute=0, second=0, microsecond=0)
    return {"subject": subject, "start": start, "end": start + timedelta(minutes=30)}


def stream(emu: Emulator, mailboxes: list[str], rate: float, seconds: float, poller: Poller) -> list[Change]:
    rnd = random.Random(7)
    changes: list[Change] = []
    items: dict[str, str] = {}  # item id -> mailbox
    start = time.perf_counter()
    for seq in range(int(rate * seconds)):
        delay = start + seq / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        subject = f"bench-change-{seq:06d}"
        with poller.lock:
            ready = [i for i in poller.seen if i in items]
        if ready and rnd.random() < 0.4:
            item_id = rnd.choice(ready)
            mailbox = items[item_id]
            with poller.lock:
                poller.seen.discard(item_id)
            emu.outlook(mailbox).update(item_id, {"subject": subject})
            kind = "update"
        else:
            mailbox = rnd.choice(mailboxes)
            item_id = emu.outlook(mailbox).create(spec(subject, rnd), send_invitations=False).item_id
            items[item_id] = mailbox
            kind = "create"
        change = Change(seq, mailbox, kind, item_id, datetime.now(UTC))
        poller.changes[subject] = change
        changes.append(change)
    return changes


def floor(emu: Emulator, mailboxes: list[str], samples: int) -> list[float]:
    """One SyncFolderItems + GetItem round trip per change through the EWS source, storing nothing."""
    source = EwsSource(emu.url, USER, PASSWORD, version="Exchange2016")
    rnd = random.Random(11)
    out: list[float] = []
    try:
        for n, mailbox in enumerate(rnd.sample(mailboxes, min(samples, len(mailboxes)))):
            state = None
            for page in source.changes(mailbox, None, 512):
                state = page.sync_state
            emu.outlook(mailbox).create(spec(f"floor-{n}", rnd), send_invitations=False)
            started = time.perf_counter()
            pages = list(source.changes(mailbox, state, 512))
            out.append(time.perf_counter() - started)
            assert sum(len(p.upserts) for p in pages) == 1, pages
    finally:
        source.close()
    return out


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 mailboxes, 10 s of changes (CI)")
    parser.add_argument("--mailboxes", type=int, default=None, help="subscribed mailboxes (default 1,000)")
    parser.add_argument("--rate", type=float, default=5.0, help="changes per second")
    parser.add_argument("--seconds", type=float, default=None, help="seconds of changes (default 30)")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--floor-samples", type=int, default=50)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "latency.json")
    args = parser.parse_args()
    count = args.mailboxes or (100 if args.quick else 1000)
    seconds = args.seconds or (10.0 if args.quick else 30.0)
    mailboxes = [f"user{i}@example.com" for i in range(1, count + 1)]

    console.print(f"[bold]change latency[/bold]: {count} mailboxes, {args.rate:g} changes/s for {seconds:g} s")
    emu = Emulator(accounts={USER: PASSWORD}, mailboxes=mailboxes).start()
    setup: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="calsync-bench-") as tmp:
            schema = postgres_schema() if args.database == "postgresql" else nullcontext(None)
            with schema as pg_url:
                url = pg_url or f"sqlite:///{Path(tmp) / 'calsync.sqlite3'}"
                port = free_port()
                settings = settings_for(url, emu.url, port)
                t0 = time.monotonic()
                prepare(url, settings, mailboxes, tmp)
                setup["operators_seconds"] = time.monotonic() - t0
                engine = create_engine(url)
                command = [sys.executable, "-m", "calsync", "serve", "--port", str(port)]
                env = clean_env(**settings)
                t0 = time.monotonic()
                with server(command, env, tmp, port):
                    setup["start_seconds"] = time.monotonic() - t0
                    setup["subscribe_and_initial_sync_seconds"] = wait_settled(engine, count, 1800)
                    console.print(
                        f"setup: {count} mailboxes subscribed and synced in "
                        f"{setup['subscribe_and_initial_sync_seconds']:.1f} s"
                    )
                    poller = Poller(engine, {})
                    poller.start()
                    changes = stream(emu, mailboxes, args.rate, seconds, poller)
                    deadline = time.monotonic() + 60
                    while any(c.synced_at is None for c in changes) and time.monotonic() < deadline:
                        time.sleep(0.1)
                    poller.stop.set()
                    poller.join()
                engine.dispose()
        console.print("[bold]floor[/bold]: SyncFolderItems + GetItem through EwsSource, no storage")
        floor_times = floor(emu, mailboxes, args.floor_samples)
    finally:
        emu.stop()

    measured = [c.latency for c in changes if c.latency is not None]
    missing = len(changes) - len(measured)
    rows = [
        row("change -> committed in calendar", measured),
        row("  creates", [c.latency for c in changes if c.latency is not None and c.kind == "create"]),
        row("  updates", [c.latency for c in changes if c.latency is not None and c.kind == "update"] or [0.0]),
        row("floor: SyncFolderItems + GetItem", floor_times),
    ]
    table = Table(title=f"Change latency, {count} subscribed mailboxes, {args.database}")
    for column in ("measure", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    for r in rows:
        table.add_row(r.what, str(r.count), f"{r.p50_ms:.0f}", f"{r.p95_ms:.0f}", f"{r.p99_ms:.0f}", f"{r.max_ms:.0f}")
    console.print(table)
    console.print(
        f"p50 is {rows[0].p50_ms / rows[-1].p50_ms:.1f}x the floor's p50; changes never seen stored: {missing}; "
        f"setup {setup['subscribe_and_initial_sync_seconds']:.1f} s for {count} mailboxes"
    )
    write_results(
        args.output,
        args.quick,
        console,
        mailboxes=count,
        database=args.database,
        rate=args.rate,
        seconds=seconds,
        setup=setup,
        missing=missing,
        latency=[asdict(r) for r in rows],
        changes=[{"seq": c.seq, "kind": c.kind, "latency_s": c.latency, "mailbox": c.mailbox} for c in changes],
        floor_s=floor_times,
    )


if __name__ == "__main__":
    main()

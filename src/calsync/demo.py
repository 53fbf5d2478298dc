"""`calsync demo`: the product end to end with nothing to configure.

It starts the built-in Exchange emulator with three mailboxes of realistic calendars (served over EWS, and over
Microsoft Graph with a token endpoint and TLS, as a hybrid tenant is), runs calsync on a SQLite file (listener,
calendar API and the three jobs in this process), enables the three operators (two read through EWS, one through
Graph), waits for their initial sync, then makes live changes in Exchange as an Outlook user would and prints,
for each, how long it took to appear in the application calendar (read back through calsync's own HTTP API).
Then it moves one operator from EWS to Graph and shows that every appointment kept its id. It ends by checking
every calendar against Exchange's truth.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from calsync.emulator import Emulator
from calsync.emulator.server import bound_socket
from calsync.runtime import Runtime
from calsync.settings import listener_callback_url, load_settings, new_listener_secret
from calsync.store import jobs as job_store
from calsync.store import operators, tokens
from calsync.store.status import operator_statuses

OPERATORS = ("ann@example.com", "bob@example.com", "cyd@example.com")
SOURCES = {"ann@example.com": "ews", "bob@example.com": "ews", "cyd@example.com": "graph"}
APPOINTMENTS_EACH = 120
TIMEOUT = 30.0
TENANT, CLIENT = "demo.onmicrosoft.com", "c41c5ync-0000-4000-8000-00000000de70"


class Demo:
    def __init__(self, *, port: int, database: Path, console: Console) -> None:
        self.console = console
        graph_secret = new_listener_secret()  # any random text does for the demo app's secret
        # EWS over http as inside a company network; Graph and its token endpoint over https, as in the cloud
        self.emulator = Emulator(
            accounts={"svc": "secret"},
            mailboxes=[],
            https_port=0,
            graph_apps=[f"{TENANT}:{CLIENT}:{graph_secret}"],
            graph_allow_http=True,  # the demo's listener is plain http on the loopback address
        )
        for address in OPERATORS:
            self.emulator.add_mailbox(address, populate_count=APPOINTMENTS_EACH, seed=2026)
        self.emulator.add_mailbox("dan@example.com")
        self.emulator.start()
        self.sock = bound_socket("127.0.0.1", port)
        self.port = self.sock.getsockname()[1]
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        self.settings = load_settings(
            database_url=f"sqlite:///{database}",
            exchange_url=self.emulator.url,
            exchange_version="Exchange2016",
            username="svc",
            password="secret",
            listener_url=f"http://127.0.0.1:{self.port}",
            listener_secret=new_listener_secret(),
            status_frequency=1,
            batch_size=512,
            past_window_days=180,
            graph_tenant_id=TENANT,
            graph_client_id=CLIENT,
            graph_client_secret=graph_secret,
            graph_authority=self.emulator.https_base_url,
            graph_endpoint=self.emulator.graph_url,
            graph_ca_file=self.emulator.ca_file,
        )
        self.runtime = Runtime(self.settings)
        self.base = f"http://127.0.0.1:{self.port}"
        self.server: uvicorn.Server | None = None
        self.client = httpx.Client(base_url=self.base, timeout=10)
        self.token = ""

    # --- running -------------------------------------------------------------------------------

    def start(self) -> None:
        self.runtime.prepare()
        with self.runtime.db.transaction() as session:
            _, self.token = tokens.create(session, "admin", "calsync demo")
        self.client.headers["Authorization"] = f"Bearer {self.token}"
        config = uvicorn.Config(self.runtime.app(), log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True).start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
            time.sleep(0.3)
        self.client.close()
        self.runtime.close()
        self.emulator.stop()
        self.sock.close()

    # --- reading the application calendar -------------------------------------------------------

    def appointments(self, email: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        response = self.client.get(
            f"/api/v1/operators/{email}/appointments", params={"start": start.isoformat(), "end": end.isoformat()}
        )
        response.raise_for_status()
        return list(response.json()["appointments"])

    def wait(self, what: Callable[[], bool]) -> float:
        started = time.perf_counter()
        while time.perf_counter() - started < TIMEOUT:
            if what():
                return time.perf_counter() - started
            time.sleep(0.005)
        raise TimeoutError("the change did not reach the application calendar in time")

    # --- the story -----------------------------------------------------------------------------

    def initial_sync(self) -> None:
        with self.runtime.db.transaction() as session:
            for address in OPERATORS:
                operators.add(session, address, enabled=True, source=SOURCES[address])
            job_store.request_run(session, job_store.MANAGE_SUBSCRIPTIONS)  # subscribe them now
        self.runtime.scheduler.poke()
        started = time.monotonic()
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            console=self.console,
            transient=True,
        ) as progress:
            task = progress.add_task(
                "initial sync of 3 operators (2 through EWS, 1 through Graph)", total=len(OPERATORS)
            )
            while time.monotonic() - started < 120:
                with self.runtime.db.read() as session:
                    done = [s for s in operator_statuses(session) if s.initial_sync_done and not s.dirty]
                progress.update(task, completed=len(done))
                if len(done) == len(OPERATORS):
                    break
                time.sleep(0.05)
            else:
                raise TimeoutError("the initial sync did not finish within 120 s; see `calsync status`")
        with self.runtime.db.read() as session:
            statuses = operator_statuses(session)
        in_exchange = sum(len(self.emulator.outlook(a).items()) for a in OPERATORS)
        stored = sum(s.appointments for s in statuses)
        self.console.print(
            f"initial sync: {stored} appointments stored from {in_exchange} in Exchange "
            f"({in_exchange - stored} ended before the 180-day window and were skipped) "
            f"in {time.monotonic() - started:.1f} s; subscribed: "
            f"{sum(s.subscribed for s in statuses)}/3, EWS pushes to "
            f"{listener_callback_url(self.settings).rsplit('/', 1)[0]}/…, Graph notifications to "
            f"{listener_callback_url(self.settings, 'graph').rsplit('/', 1)[0]}/…"
        )

    def live_changes(self) -> list[tuple[str, float]]:
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        day = now + timedelta(days=2)
        window = (now - timedelta(days=1), now + timedelta(days=60))
        ann, bob, cyd = (self.emulator.outlook(a) for a in OPERATORS)
        timings: list[tuple[str, float]] = []

        def subjects(email: str) -> list[str]:
            return [a["subject"] for a in self.appointments(email, *window)]

        def step(label: str, change: Callable[[], Any], seen: Callable[[], bool]) -> Any:
            result = change()
            timings.append((label, self.wait(seen)))
            return result

        single = step(
            "ann creates 'Demo: budget review'",
            lambda: ann.create({"subject": "Demo: budget review", "start": day.isoformat(), "timezone": "UTC"}),
            lambda: "Demo: budget review" in subjects("ann@example.com"),
        )
        step(
            "ann renames it",
            lambda: ann.update(single.item_id, {"subject": "Demo: budget review (final)"}),
            lambda: "Demo: budget review (final)" in subjects("ann@example.com"),
        )
        series = step(
            "bob creates a weekly series in Berlin time",
            lambda: bob.create(
                {
                    "subject": "Demo: weekly sync",
                    "start": (day + timedelta(days=1)).replace(tzinfo=None).isoformat(),
                    "timezone": "Europe/Berlin",
                    "recurrence": {"pattern": "Weekly", "days": [day.strftime("%A")], "range": "Numbered", "count": 6},
                }
            ),
            lambda: subjects("bob@example.com").count("Demo: weekly sync") >= 6,
        )
        step(
            "bob moves the 2nd occurrence",
            lambda: bob.update_occurrence(series.item_id, 2, {"subject": "Demo: weekly sync (moved)"}),
            lambda: "Demo: weekly sync (moved)" in subjects("bob@example.com"),
        )
        step(
            "bob deletes the 3rd occurrence",
            lambda: bob.delete_occurrence(series.item_id, 3),
            lambda: subjects("bob@example.com").count("Demo: weekly sync") == 4,
        )
        step(
            "cyd (Exchange Online, Graph) adds an all-day event in Tokyo",
            lambda: cyd.create(
                {
                    "subject": "Demo: offsite",
                    "start": day.date().isoformat(),
                    "end": (day + timedelta(days=1)).date().isoformat(),
                    "all_day": True,
                    "timezone": "Asia/Tokyo",
                }
            ),
            lambda: "Demo: offsite" in subjects("cyd@example.com"),
        )
        meeting = step(
            "ann invites bob to a meeting",
            lambda: ann.create(
                {
                    "subject": "Demo: planning",
                    "start": (day + timedelta(hours=3)).isoformat(),
                    "attendees": [{"email": "bob@example.com"}],
                }
            ),
            lambda: "Demo: planning" in subjects("bob@example.com"),
        )
        step(
            "ann cancels the meeting (bob's copy is cancelled)",
            lambda: ann.delete(meeting.item_id),
            lambda: any(a["status"] == "cancelled" for a in self.appointments("bob@example.com", *window)),
        )
        step(
            "ann deletes 'budget review' for good",
            lambda: ann.delete(single.item_id, "HardDelete"),
            lambda: "Demo: budget review (final)" not in subjects("ann@example.com"),
        )
        return timings

    def move(self, email: str) -> tuple[int, int, float, float]:
        """Move ``email`` from EWS to Graph: (appointments before, ids kept, seconds until the move completed,
        milliseconds a change then took through Graph)."""
        window = (datetime.now(UTC) - timedelta(days=30), datetime.now(UTC) + timedelta(days=90))
        before = {a["id"] for a in self.appointments(email, *window)}
        started = time.perf_counter()
        moved = self.client.post(f"/api/v1/operators/{email}/move", json={"to": "graph"})
        moved.raise_for_status()

        def done() -> bool:
            op = self.client.get(f"/api/v1/operators/{email}").json()
            return bool(op["source"] == "graph" and op["moving_from"] is None and op["state"] == "synced")

        self.wait(done)
        took = time.perf_counter() - started
        after = {a["id"] for a in self.appointments(email, *window)}
        change_at = (datetime.now(UTC) + timedelta(days=5)).replace(minute=0, second=0, microsecond=0)
        self.emulator.outlook(email).create({"subject": "Demo: after the move", "start": change_at.isoformat()})
        seen = self.wait(lambda: any(a["subject"] == "Demo: after the move" for a in self.appointments(email, *window)))
        return len(before), len(before & after), took, seen * 1000

    def verify(self) -> list[tuple[str, int, bool]]:
        start, end = datetime.now(UTC) - timedelta(days=180), datetime.now(UTC) + timedelta(days=365)
        results = []
        for address in OPERATORS:
            truth = self.emulator.truth(address, start, end)
            mine = self.appointments(address, start, end)
            key_truth = sorted(
                (t["subject"] or "", t["start_date"] if t["all_day"] else _utc(t["start"]), t["cancelled"])
                for t in truth
            )
            key_mine = sorted(
                (a["subject"] or "", a["start"] if a["all_day"] else _utc(a["start"]), a["status"] == "cancelled")
                for a in mine
            )
            results.append((address, len(mine), key_truth == key_mine))
        return results


def _utc(value: str) -> str:
    return datetime.fromisoformat(value).astimezone(UTC).isoformat()


def run_demo(*, keep_running: bool, port: int, database: Path, console: Console) -> None:
    demo = Demo(port=port, database=database, console=console)
    console.print(
        f"[bold]calsync demo[/bold]: emulated Exchange in-process, calsync at {demo.base}, database {database}"
    )
    demo.start()
    try:
        demo.initial_sync()
        timings = demo.live_changes()
        table = Table(title="live changes: time from the change in Exchange to the application calendar")
        table.add_column("change")
        table.add_column("appeared after", justify="right")
        for label, seconds in timings:
            table.add_row(label, f"{seconds * 1000:.0f} ms")
        console.print(table)
        count, kept, took, seen_ms = demo.move("bob@example.com")
        console.print(
            f"bob@example.com moved from EWS to Graph in {took:.1f} s: {kept} of {count} appointment ids in the "
            f"next 90 days kept (the application sees no change); a new change then arrived through Graph in "
            f"{seen_ms:.0f} ms"
        )
        for address, count, same in demo.verify():
            mark = "[green]matches Exchange[/green]" if same else "[red]differs from Exchange[/red]"
            via = "Graph" if address != "ann@example.com" else "EWS"
            console.print(f"{address} (through {via}): {count} occurrences in the window, {mark}")
        if keep_running:
            console.print(
                f"\nExplore: the web admin at {demo.base}/admin/ and the API at {demo.base}/api/v1/ "
                f"(OpenAPI: /api/v1/openapi.json) with the admin token\n  {demo.token}\n"
                f"e.g. curl -H 'Authorization: Bearer {demo.token}' "
                f"{demo.base}/api/v1/operators/ann@example.com/calendar.ics\n"
                f"The emulator's control API: {demo.emulator.base_url}/emulator/  (Ctrl-C to stop)"
            )
            threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        demo.stop()

"""Listener intake: push notifications acknowledged per second with durable storage, beside the ceiling.

    python -m bench.listener            # 10 s per measurement
    python -m bench.listener --quick    # 3 s per measurement (CI)

`calsync serve --no-jobs` runs as its own process (SQLite in a temporary directory, then PostgreSQL in a fresh
schema), with 100 operators each holding a push subscription. Client threads in this process send valid
SendNotification bodies (one CreatedEvent, a random subscription) over keep-alive connections, written as raw
HTTP/1.1 on plain sockets so that the client costs as little CPU as possible:

* closed loop: each thread sends its next request as soon as the previous one is answered, for a fixed time
  (acknowledged per second, p50/p99 time to acknowledge);
* open loop: 500 notifications per second on a fixed schedule; latency is counted from the scheduled send
  time, so a server that falls behind is charged for the queue it builds.

The ceiling is the same stack (uvicorn + Starlette, same uvicorn options) answering the same body with the same
result envelope without parsing or storing it: a tiny app in this file, run the same way as its own process.
Beside it, "calsync, no database": calsync's own HTTP application (``Runtime.app``, as ``calsync serve --no-jobs``
builds it) with every check and the parsing of the listener, and its writer thread, but the storing replaced by an
immediate OK: what the listener could acknowledge if storing cost nothing.

For every server the CPU time its process used (user + system, all threads, from /proc) is divided by the
notifications it acknowledged: a figure that moves less than requests per second when other work shares the
machine. On PostgreSQL the database server's own CPU is not in it. Results go to bench/results/listener.json.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.common import write_results

SECRET = "b" * 32
PATH = f"/ews/notifications/{SECRET}"
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SUBSCRIPTIONS = 100
OPEN_RATE = 500.0
console = Console(width=150)


def subscription_id(i: int) -> str:
    return f"FwBiZW5jaC1zdWJzY3JpcHRpb24t{i:06d}AAAA"


def notification_body(sub: str, seq: int) -> bytes:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{SOAP}" xmlns:m="{M}" xmlns:t="{T}">'
        '<soap:Header><t:RequestServerVersion Version="Exchange2016"/></soap:Header><soap:Body>'
        '<m:SendNotification><m:ResponseMessages><m:SendNotificationResponseMessage ResponseClass="Success">'
        f"<m:ResponseCode>NoError</m:ResponseCode><m:Notification><t:SubscriptionId>{sub}</t:SubscriptionId>"
        f"<t:PreviousWatermark>AQAAAE{seq:010d}</t:PreviousWatermark><t:MoreEvents>false</t:MoreEvents>"
        f"<t:CreatedEvent><t:Watermark>AQAAAF{seq:010d}</t:Watermark><t:TimeStamp>{now}</t:TimeStamp>"
        f'<t:ItemId Id="AAMkAGJlbmNoLWl0ZW0t{seq:012d}AAA=" ChangeKey="DwAAABYAAAA{seq % 997:04d}"/>'
        '<t:ParentFolderId Id="AAMkAGJlbmNoLWNhbGVuZGFyAAA=" ChangeKey="AQAAAA=="/></t:CreatedEvent>'
        "</m:Notification></m:SendNotificationResponseMessage></m:ResponseMessages></m:SendNotification>"
        "</soap:Body></soap:Envelope>"
    ).encode()


def http_request(port: int, body: bytes) -> bytes:
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: text/xml; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


# --- the ceiling server -----------------------------------------------------------------------------------------------


def ceiling_server(port: int) -> None:
    """uvicorn + Starlette answering every POST with the OK envelope, reading but neither parsing nor storing."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from calsync.sources.ews.notifications import RESULT_CONTENT_TYPE, result_envelope

    async def receive(request: Request) -> Response:
        await request.body()
        return Response(result_envelope("OK"), media_type=RESULT_CONTENT_TYPE)

    app = Starlette(routes=[Route("/ews/notifications/{secret}", receive, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, proxy_headers=False)


def no_database_server(port: int) -> None:
    """calsync's HTTP application (settings from CALSYNC_*), the listener's storing replaced by an immediate OK."""
    import uvicorn

    from calsync.listener.app import Outcome
    from calsync.runtime import Runtime
    from calsync.settings import load_settings

    runtime = Runtime(load_settings(), threads=1)
    runtime.listener.writer.store = lambda bodies: [Outcome("OK") for _ in bodies]
    app = runtime.app(run_jobs=False)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, proxy_headers=False)


# --- processes --------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CALSYNC_")}
    env.update({f"CALSYNC_{k.upper()}": v for k, v in settings.items()})
    return env


def calsync_settings(database_url: str, port: int) -> dict[str, str]:
    return {
        "database_url": database_url,
        "exchange_url": "http://127.0.0.1:9/EWS/Exchange.asmx",  # never called: the listener does not talk to EWS
        "listener_url": f"http://127.0.0.1:{port}",
        "listener_secret": SECRET,
        "log_level": "WARNING",
    }


@contextmanager
def server(command: list[str], env: dict[str, str], cwd: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise RuntimeError(f"server did not start: {err[-2000:]}") from None
                time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def prepare_database(database_url: str, cwd: str) -> None:
    """Create the schema, the operators and one subscription each (done here, before the server starts)."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.upper().startswith("CALSYNC_")}
    old = os.getcwd()
    os.chdir(cwd)
    try:
        from calsync.runtime import Runtime
        from calsync.settings import load_settings
        from calsync.store import operators, subscriptions

        settings = load_settings(**calsync_settings(database_url, 1))
        runtime = Runtime(settings)
        runtime.prepare()
        with runtime.db.transaction() as session:
            for i in range(SUBSCRIPTIONS):
                op = operators.add(session, f"user{i}@example.com", enabled=True)
                session.flush()
                subscriptions.save(session, op.id, subscription_id(i), "AQAAAA==", 1, "http://127.0.0.1/x")
        runtime.close()
    finally:
        os.chdir(old)
        os.environ.update(saved)


@contextmanager
def postgres_schema() -> Iterator[str]:
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    plain = POSTGRES.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


# --- load -------------------------------------------------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection sending prepared requests and reading whole answers."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def exchange(self, request: bytes) -> bytes:
        self.sock.sendall(request)
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            rest += self._recv()
        self.buffer = rest[length:]
        if not head.startswith(b"HTTP/1.1 200") or b"<m:SubscriptionStatus>OK<" not in rest[:length]:
            raise RuntimeError(f"unexpected answer: {head[:80]!r} {rest[:300]!r}")
        return rest[:length]

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed")
        return chunk

    def close(self) -> None:
        self.sock.close()


def requests_for(port: int, count: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    return [
        http_request(port, notification_body(subscription_id(rnd.randrange(SUBSCRIPTIONS)), seed * 1_000_000 + n))
        for n in range(count)
    ]


def run_threads(target: object, count: int) -> None:
    pool = [threading.Thread(target=target, args=(i,)) for i in range(count)]  # type: ignore[arg-type]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


def closed_loop(port: int, seconds: float, threads: int) -> list[float]:
    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    prepared = [requests_for(port, 2000, 100 + i) for i in range(threads)]
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        local: list[float] = []
        conn = Connection(port)
        try:
            n = 0
            while time.monotonic() < stop:
                started = time.perf_counter()
                conn.exchange(prepared[i][n % len(prepared[i])])
                local.append(time.perf_counter() - started)
                n += 1
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            conn.close()
        with lock:
            latencies.extend(local)

    run_threads(worker, threads)
    if errors:
        raise RuntimeError(f"load generator failed: {errors[0]}")
    return latencies


def open_loop(port: int, seconds: float, rate: float, threads: int) -> tuple[list[float], float]:
    """Send at ``rate`` per second on a fixed schedule; latency from the scheduled time.

    Returns the latencies and the wall time it took (longer than planned when the server falls behind)."""
    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    total = int(seconds * rate)
    per_thread = rate / threads
    prepared = [requests_for(port, total // threads + 1, 200 + i) for i in range(threads)]
    conns = [Connection(port) for _ in range(threads)]
    start = time.perf_counter() + 0.2

    def worker(i: int) -> None:
        local: list[float] = []
        offset = i / rate  # interleave the threads' schedules
        try:
            for n in range(total // threads):
                due = start + offset + n / per_thread
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                conns[i].exchange(prepared[i][n])
                local.append(time.perf_counter() - due)
        except BaseException as exc:  # reported below
            errors.append(exc)
        with lock:
            latencies.extend(local)

    run_threads(worker, threads)
    elapsed = time.perf_counter() - start
    for c in conns:
        c.close()
    if errors:
        raise RuntimeError(f"load generator failed: {errors[0]}")
    return latencies, elapsed


@dataclass
class Result:
    target: str
    mode: str
    requests: int
    seconds: float
    per_second: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_ack: float | None = None  # CPU time of the server process per acknowledged notification
    ratio_to_ceiling: float | None = None
    ratio_to_no_database: float | None = None


def summarise(
    target: str, mode: str, latencies: list[float], seconds: float, cpu_seconds: float | None = None
) -> Result:
    latencies.sort()
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
    cpu = None if cpu_seconds is None else cpu_seconds * 1000 / len(latencies)
    return Result(
        target,
        mode,
        len(latencies),
        seconds,
        len(latencies) / seconds,
        statistics.median(latencies) * 1000,
        p99 * 1000,
        cpu,
    )


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) the process has used, or None where /proc is not there."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_between(pid: int, before: float | None) -> float | None:
    after = process_cpu(pid)
    return None if before is None or after is None else after - before


def measure(
    target: str, command: list[str], env: dict[str, str], cwd: str, port: int, args: argparse.Namespace
) -> list[Result]:
    out: list[Result] = []
    with server(command, env, cwd, port) as proc:
        closed_loop(port, 1.0, args.threads)  # warm up
        before = process_cpu(proc.pid)
        latencies = closed_loop(port, args.seconds, args.threads)
        out.append(summarise(target, "closed loop", latencies, args.seconds, cpu_between(proc.pid, before)))
        before = process_cpu(proc.pid)
        latencies, elapsed = open_loop(port, args.seconds, OPEN_RATE, 8)
        out.append(summarise(target, f"open loop {OPEN_RATE:.0f}/s", latencies, elapsed, cpu_between(proc.pid, before)))
    return out


def stored_count(database_url: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.connect() as conn:
        n = int(conn.execute(text("SELECT count(*) FROM notifications")).scalar_one())
    engine.dispose()
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 s runs (CI)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per measurement")
    parser.add_argument("--threads", type=int, default=8, help="client threads (closed loop)")
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "listener.json")
    parser.add_argument("--ceiling-server", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-database-server", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ceiling_server is not None:
        ceiling_server(args.ceiling_server)
        return
    if args.no_database_server is not None:
        no_database_server(args.no_database_server)
        return
    args.seconds = args.seconds or (3.0 if args.quick else 10.0)

    results: list[Result] = []
    stored: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="calsync-bench-") as tmp:
        port = free_port()
        console.print("[bold]ceiling[/bold]: uvicorn + Starlette, no parsing, no storage")
        ceiling_cmd = [sys.executable, "-m", "bench.listener", "--ceiling-server", str(port)]
        env = clean_env()
        env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
        results += measure("ceiling", ceiling_cmd, env, tmp, port, args)

        port = free_port()
        console.print("[bold]calsync, no database[/bold]: calsync's app and listener, storing replaced by an OK")
        plain_cmd = [sys.executable, "-m", "bench.listener", "--no-database-server", str(port)]
        plain_env = clean_env(**calsync_settings(f"sqlite:///{Path(tmp) / 'unused.sqlite3'}", port))
        plain_env["PYTHONPATH"] = env["PYTHONPATH"]
        results += measure("calsync, no database", plain_cmd, plain_env, tmp, port, args)

        targets: list[tuple[str, object]] = [("SQLite", None)]
        if not args.no_postgres:
            targets.append(("PostgreSQL", postgres_schema))
        for name, schema in targets:
            console.print(f"[bold]calsync serve --no-jobs[/bold] on {name}, {SUBSCRIPTIONS} subscriptions")
            with contextmanager_or_sqlite(schema, tmp) as url:
                prepare_database(url, tmp)
                port = free_port()
                cmd = [sys.executable, "-m", "calsync", "serve", "--create-database", "--no-jobs", "--port", str(port)]
                results += measure(name, cmd, clean_env(**calsync_settings(url, port)), tmp, port, args)
                stored[name] = stored_count(url)

    ceiling = {r.mode: r for r in results if r.target == "ceiling"}
    no_database = {r.mode: r for r in results if r.target == "calsync, no database"}
    for r in results:
        r.ratio_to_ceiling = r.per_second / ceiling[r.mode].per_second
        r.ratio_to_no_database = r.per_second / no_database[r.mode].per_second

    table = Table(title=f"Listener intake ({args.threads} closed-loop connections, {args.seconds:.0f} s each)")
    columns = ("server", "load", "acknowledged/s", "p50 ms", "p99 ms", "CPU ms/ack", "vs ceiling", "vs no database")
    for column in columns:
        table.add_column(column, justify="left" if column in ("server", "load") else "right")
    for r in results:
        table.add_row(
            r.target,
            r.mode,
            f"{r.per_second:,.0f}",
            f"{r.p50_ms:.1f}",
            f"{r.p99_ms:.1f}",
            "-" if r.cpu_ms_per_ack is None else f"{r.cpu_ms_per_ack:.3f}",
            f"{r.ratio_to_ceiling:.2f}",
            f"{r.ratio_to_no_database:.2f}",
        )
    console.print(table)
    console.print(f"notification rows stored: {stored}")
    write_results(
        args.output,
        args.quick,
        console,
        subscriptions=SUBSCRIPTIONS,
        client_threads=args.threads,
        seconds_each=args.seconds,
        open_loop_rate=OPEN_RATE,
        results=[asdict(r) for r in results],
        stored=stored,
    )


@contextmanager
def contextmanager_or_sqlite(schema: object, tmp: str) -> Iterator[str]:
    if schema is None:
        yield f"sqlite:///{Path(tmp) / 'calsync.sqlite3'}"
    else:
        with schema() as url:  # type: ignore[operator]
            yield url


if __name__ == "__main__":
    main()

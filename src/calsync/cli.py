"""The ``calsync`` command line. Thin: each command parses its options and calls the package that owns the work."""

from __future__ import annotations

import getpass
import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from calsync.emulator import cli as emulator_cli

CONFIG_OPTIONS = ("-c", "--config")


def config_first(args: Sequence[str]) -> list[str]:
    """The arguments with ``-c FILE`` / ``--config FILE`` / ``--config=FILE`` moved to the front, where the root
    command reads them: ``calsync status -c prod.toml`` means ``calsync -c prod.toml status``. The emulator has
    options of its own and is left as it is; so is everything after ``--``."""
    args = list(args)
    if not args or args[0] == "emulator":
        return args
    moved: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            rest.extend(args[index:])
            break
        if arg in CONFIG_OPTIONS and index + 1 < len(args):
            moved += [arg, args[index + 1]]
            index += 2
            continue
        if arg.startswith("--config="):
            moved.append(arg)
        else:
            rest.append(arg)
        index += 1
    return moved + rest


class CalsyncGroup(TyperGroup):
    """The root command: accepts the settings file option after the command too (see :func:`config_first`)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, config_first(args))


# Plain help (click's): options with their metavars, not rich's type column (which reads "<bool>" for flags).
app = typer.Typer(
    cls=CalsyncGroup,
    help="calsync: keep an application's calendar in step with Microsoft Exchange.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


def _group(help: str) -> typer.Typer:
    return typer.Typer(help=help, no_args_is_help=True, rich_markup_mode=None)


operators_app = _group("Operators: the users whose Exchange calendars are synced.")
jobs_app = _group("The jobs: ProcessPushNotifications, ManagePushSubscriptions, Reconciliation.")
tokens_app = _group("Admin API tokens: create, list, revoke.")
db_app = _group("The database.")
config_app = _group("The settings.")
app.add_typer(operators_app, name="operators")
app.add_typer(jobs_app, name="jobs")
app.add_typer(tokens_app, name="tokens")
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")
console = Console(stderr=True)
out = Console()

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", metavar="FILE", help="Settings file (default ./calsync.toml); before or after the command."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table (for scripts).")]
Email = Annotated[str, typer.Argument(metavar="EMAIL", help="The operator's e-mail address.")]
JobName = Annotated[
    str,
    typer.Argument(
        metavar="JOB", help="ProcessPushNotifications, ManagePushSubscriptions or Reconciliation (`calsync jobs list`)."
    ),
]


def version_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"calsync {version('calsync')}"
    except PackageNotFoundError:  # run from a source tree that was not installed
        return "calsync (version unknown: not installed)"


def _show_version(value: bool) -> None:
    if value:
        print(version_text())
        raise typer.Exit()


@app.callback()
def main_callback(
    ctx: typer.Context,
    config: ConfigOption = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print calsync's version and exit."),
    ] = False,
) -> None:
    """calsync: keep an application's calendar in step with Microsoft Exchange."""
    ctx.obj = {"config": config}


def _fail(message: str) -> typer.Exit:
    # one line whatever the terminal's width; messages quote user input: never read it as markup
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    return typer.Exit(2)


def _settings(ctx: typer.Context, *, require_credentials: bool = False, **overrides: Any) -> Any:
    from calsync.settings import SettingsError, load_settings

    try:
        return load_settings((ctx.obj or {}).get("config"), require_credentials=require_credentials, **overrides)
    except SettingsError as exc:
        console.print("[red]The settings are not valid:[/red]")
        for problem in exc.problems:
            console.print(f"  - {escape(problem)}")
        raise typer.Exit(2) from None


def _logging(level: str) -> None:
    from calsync.logs import configure

    configure(level)


def _quiet_logging() -> None:
    """For commands that report their own outcome (``sync``): only errors from the log reach the terminal, so a
    failure is said once, by the command, and not first as a stray warning line."""
    import logging

    root = logging.getLogger()
    if any(h.get_name() == "calsync-cli" for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name("calsync-cli")
    handler.setLevel(logging.ERROR)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)


@contextmanager
def _database_errors(hint: str = "") -> Iterator[None]:
    """A database that is not there or cannot be reached: one line (what, where, the fix; ``hint`` adds the way this
    command offers) and exit code 2, not a traceback."""
    from sqlalchemy.exc import OperationalError

    from calsync.store.db import DatabaseUnavailable

    try:
        yield
    except DatabaseUnavailable as exc:
        raise _fail(str(exc) + hint) from None
    except OperationalError as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0]
        raise _fail(f"the database failed: {reason}") from None


def _db(settings: Any, *, create: bool = False, hint: str = "") -> Any:
    """The database, its schema at the newest revision and the job rows in place. Only commands that set a
    deployment up pass ``create``: any other command refuses a database that is not there (a wrong path or working
    directory would otherwise make a new, empty one and show it as if it were the real one)."""
    from calsync.jobs.intervals import job_intervals
    from calsync.store import jobs as job_store
    from calsync.store.db import Database

    with _database_errors(hint):
        db = Database(settings.database_url, create=create)
        if create:
            db.create_if_missing()
        db.check()
        db.ensure_schema()
        with db.transaction() as session:
            job_store.ensure(session, job_intervals(settings))
    return db


def _actor() -> str:
    """How the audit log names a change made with this command line: "cli" and the system user."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        user = str(os.getuid())
    return f"cli ({user})"


def _audit(session: Any, action: str, target: str | None, detail: dict[str, Any] | None = None) -> None:
    from calsync.store import audit

    audit.record(session, _actor(), action, target, detail or {})


def _json(value: Any) -> None:
    """JSON on stdout, whole (never wrapped to the terminal): datetimes as ISO 8601."""
    sys.stdout.write(json.dumps(value, indent=2, default=_json_default, ensure_ascii=False) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table when it fits the terminal (or the 80 columns of a pipe) without cutting a word; else one block per
    row, the first cell as its heading and each other cell on its own line (two columns: ``name: value`` lines), so
    nothing is cut (``ann@e…``) at any width."""
    table = Table(title=escape(title))
    for column in columns:
        table.add_column(column, overflow="fold")
    for cells in rows:
        table.add_row(*cells)
    # A table when every word of every cell fits whole (rich then wraps only between words).
    if out.measure(table, options=out.options.update_width(100_000)).minimum <= out.width:
        out.print(table)
        return
    out.print(f"[bold]{escape(title)}[/bold]" + ("" if rows else ": none"))
    if len(columns) == 2:  # name and value: one line each
        for name, value in rows:
            out.print(f"{name}: {value}", soft_wrap=True)
        return
    width = max(len(c) for c in columns[1:]) if len(columns) > 1 else 0
    for cells in rows:
        out.print()
        out.print(cells[0], soft_wrap=True)
        for column, cell in zip(columns[1:], cells[1:], strict=True):
            out.print(f"  {column.ljust(width)}  {cell}", soft_wrap=True)


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _subscribed(status: Any) -> str:
    """yes (Exchange has pushed on it), not yet heard from (with its age; a warning past StatusFrequency), no."""
    if not status.subscribed:
        return "no"
    if status.source == "graph":  # Graph sends no heartbeats: its subscriptions expire unless renewed
        return "yes" if status.subscription_expires is None else f"yes (until {_when(status.subscription_expires)})"
    if status.last_heard is not None or status.subscribed_at is None:
        return "yes"
    minutes = int((datetime.now(UTC) - status.subscribed_at).total_seconds() // 60)
    text = f"not yet heard from ({minutes} min)"
    return f"[yellow]{text}[/yellow]" if minutes > (status.subscription_frequency or 30) else text


def _source(source: str, moving_from: str | None) -> str:
    return source if moving_from is None else f"{source} (moving from {moving_from})"


# --- setting up ---------------------------------------------------------------------------------


@app.command()
def init(
    ctx: typer.Context,
    database_url: Annotated[str | None, typer.Option(help="Database URL to write into the settings file.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing settings file.")] = False,
) -> None:
    """Write a settings file (with a fresh listener secret) and create the database."""
    from calsync.settings import new_listener_secret

    path: Path = (ctx.obj or {}).get("config") or Path("calsync.toml")
    if path.exists() and not force:
        console.print(f"{escape(str(path))} exists; keeping it (use --force to overwrite)")
    else:
        lines = [
            "# calsync settings: see docs/settings.md. Environment variables CALSYNC_<NAME> override these.",
            f'listener_secret = "{new_listener_secret()}"',
            'exchange_url = "http://127.0.0.1:8765/EWS/Exchange.asmx"',
            'exchange_version = "Exchange2016"',
            'listener_url = "http://127.0.0.1:8080"',
            "batch_size = 512",
            "status_frequency = 30",
            "past_window_days = 180",
        ]
        if database_url:
            lines.append(f'database_url = "{database_url}"')
        try:  # created 0600, never readable by others, not even for a moment (it holds the listener secret)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)  # an existing file (--force) keeps its mode through O_CREAT
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write("\n".join(lines) + "\n")
        except OSError as exc:
            raise _fail(f"cannot write the settings file {path}: {exc.strerror}") from None
        console.print(f"wrote {escape(str(path))}")
    settings = _settings(ctx)
    db = _db(settings, create=True)
    console.print(f"database ready: {escape(db.where())}")
    db.dispose()


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Bring the database schema to the newest version (creating the database if there is none)."""
    settings = _settings(ctx)
    db = _db(settings, create=True)
    console.print(f"schema at revision {db.schema_revision()}: {escape(db.where())}")
    db.dispose()


@config_app.command("check")
def config_check(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Print the effective settings (secrets masked); exit 2 if they are not valid."""
    from calsync.settings import effective_settings, setting_label

    settings = _settings(ctx)
    shown = effective_settings(settings)
    missing = settings.missing_credentials()
    if as_json:
        file = None if settings.config_file is None else str(settings.config_file)
        _json({"settings_file": file, "settings": shown, "problems": missing})
    else:
        rows = [[setting_label(name), "-" if value is None else escape(str(value))] for name, value in shown.items()]
        _table(f"calsync settings ({settings.config_file or 'no settings file'})", ("setting", "value"), rows)
    if missing:
        console.print("[yellow]Exchange credentials incomplete:[/yellow] " + escape("; ".join(missing)))
        raise typer.Exit(2)


# --- running ------------------------------------------------------------------------------------


CreateDatabase = Annotated[
    bool,
    typer.Option(
        "--create-database",
        help="Create the database if there is none (the first start of a new deployment; `calsync init` does the "
        "same). Without it, a database that is not there is an error.",
    ),
]


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything says that calsync listens (a port in use is one line, exit 2)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise _fail(
            f"cannot listen on {host}:{port}: {exc.strerror} (--host takes an address of this machine)"
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        hint = " (is another calsync serve running? pick another --port)" if exc.errno == 98 else ""
        raise _fail(f"cannot listen on {host}:{port}: {exc.strerror}{hint}") from None
    return sock


def _run_server(app_: Any, sock: socket.socket) -> None:
    """Serve ``app_`` on the bound socket until stopped (uvicorn)."""
    import uvicorn

    # proxy_headers off: the listener decides itself whether to trust X-Forwarded-For
    # (listener_trust_forwarded_for); uvicorn would otherwise take it from any local client.
    config = uvicorn.Config(app_, log_level="warning", access_log=False, proxy_headers=False)
    uvicorn.Server(config).run(sockets=[sock])


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    threads: Annotated[int, typer.Option(help="Sync passes run at once by this process.")] = 4,
    jobs: Annotated[bool, typer.Option("--jobs/--no-jobs", help="Also run the jobs in this process.")] = True,
    create_database: CreateDatabase = False,
) -> None:
    """Run the listener, the calendar API and (by default) the three jobs in one process."""
    from calsync.runtime import Runtime

    settings = _settings(ctx, require_credentials=True)
    if settings.listener_secret is None:
        raise _fail("listener_secret is not set: run `calsync init` (or set CALSYNC_LISTENER_SECRET)")
    db = _db(settings, create=create_database, hint="; or, for a new deployment, `calsync serve --create-database`")
    sock = _bind(host, port)
    _logging(settings.log_level)
    runtime = Runtime(settings, threads=threads, db=db)
    with _database_errors():
        runtime.prepare()
    shown_host = f"[{host}]" if ":" in host else host
    console.print(
        escape(
            f"calsync listening on http://{shown_host}:{sock.getsockname()[1]} (push callbacks: "
            f"{settings.listener_url}/ews/notifications/<secret>)"
        )
    )
    try:
        _run_server(runtime.app(run_jobs=jobs), sock)
    finally:
        sock.close()


@app.command()
def worker(
    ctx: typer.Context,
    threads: Annotated[int, typer.Option(help="Sync passes run at once by this process.")] = 4,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve /metrics, /healthz and /readyz on this port (default: no HTTP server).")
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Address the --metrics-port server listens on.")] = "127.0.0.1",
    create_database: CreateDatabase = False,
) -> None:
    """Run only the jobs (more workers on other machines share the work through the database)."""
    import time

    import uvicorn

    from calsync.runtime import Runtime

    settings = _settings(ctx, require_credentials=True)
    if settings.listener_secret is None:
        raise _fail(
            "listener_secret is not set: run `calsync init` (or set CALSYNC_LISTENER_SECRET); workers "
            "subscribe operators to the listener's URL, which carries it"
        )
    db = _db(settings, create=create_database, hint="; or, for a new deployment, `calsync worker --create-database`")
    _logging(settings.log_level)
    runtime = Runtime(settings, threads=threads, db=db)
    with _database_errors():
        runtime.prepare()
    server: uvicorn.Server | None = None
    server_thread: threading.Thread | None = None
    if metrics_port is not None:
        config = uvicorn.Config(
            runtime.health_app(), host=metrics_host, port=metrics_port, log_level="warning", access_log=False
        )
        server = uvicorn.Server(config)
        server_thread = threading.Thread(target=server.run, name="calsync-metrics-http", daemon=True)
        server_thread.start()
        deadline = time.monotonic() + 10
        while not server.started and server_thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not server.started:
            server.should_exit = True
            runtime.close()
            raise _fail(f"could not serve metrics on {metrics_host}:{metrics_port}")
        console.print(escape(f"metrics on http://{metrics_host}:{metrics_port}/metrics (also /healthz, /readyz)"))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    runtime.start_jobs()
    console.print("calsync worker running (Ctrl-C to stop)")
    stop.wait()
    runtime.stop_jobs()
    if server is not None and server_thread is not None:
        server.should_exit = True
        server_thread.join(timeout=10)
    runtime.close()


@app.command()
def sync(
    ctx: typer.Context,
    email: Email,
    full: Annotated[
        bool, typer.Option(help="Read the whole window again instead of the changes since last time.")
    ] = False,
) -> None:
    """Run a sync pass for one operator now, in this process, with a progress bar."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from calsync.jobs.process_notifications import LEASE_SECONDS, NotificationProcessor, ProcessorSettings
    from calsync.runtime import make_sources, make_tracker
    from calsync.store import operators, work
    from calsync.store.operators import OperatorError

    settings = _settings(ctx, require_credentials=True)
    db = _db(settings)
    _quiet_logging()
    try:
        with db.transaction() as session:
            operator = operators.require(session, email)
            if not operator.sync_enabled:
                raise _fail(f"sync is disabled for {operator.email}: `calsync operators enable {operator.email}`")
            work.mark_dirty(session, operator.id, full_sync=full)  # a full claim starts from no sync state
            claim = work.claim(session, "cli", LEASE_SECONDS, operator_id=operator.id)
            if claim is None:  # raising here rolls the transaction back: nothing changes
                raise _fail(f"a sync pass for {email} is running elsewhere; try again when it ends")
    except OperatorError as exc:
        raise _fail(str(exc)) from None
    processor = NotificationProcessor(
        db,
        make_sources(settings),
        lambda: ProcessorSettings(settings.batch_size, settings.past_window_days),
    )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[items]} items"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(f"syncing {claim.email}", total=None, items=0)
        result = processor.run_claim(claim, progress=lambda items, pages: progress.update(task, items=items))
    if result is None:
        with db.read() as session:
            op = operators.require(session, email)
            raise _fail(f"the sync pass failed: {op.last_error_code}: {op.last_error_message}")
    out.print(
        f"{result.email}: {result.upserts} written, {result.deletes} deleted, {result.skipped_old} older than "
        f"the window skipped, {result.pages} page(s), {result.requests} request(s), {result.seconds:.2f} s"
    )
    # Items that could not be read keep the operator's unreadable_item incident true (the service e-mails it).
    if result.unreadable_changed:
        make_tracker(settings, db).record_unreadable(claim.operator_id, result.unreadable)
    if result.unreadable:
        from calsync.alerts.tracker import describe_unreadable

        console.print(
            f"warning (unreadable_item): {describe_unreadable(result.unreadable)}", markup=False, style="yellow"
        )


def _subscription_state(status: Any, now: datetime) -> tuple[str, int | None]:
    """For ``status --json``: no | yes | not_yet_heard (with the subscription's age in minutes) | silent (past
    StatusFrequency without a word: a warning)."""
    if not status.subscribed:
        return "no", None
    if status.source == "graph" or status.last_heard is not None or status.subscribed_at is None:
        return "yes", None
    minutes = int((now - status.subscribed_at).total_seconds() // 60)
    return ("silent" if minutes > (status.subscription_frequency or 30) else "not_yet_heard"), minutes


@app.command()
def status(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Per operator: subscribed?, last heartbeat, last sync, pending notifications, last error, open incident."""
    from calsync.settings import listener_callback_url
    from calsync.store import listener_checks
    from calsync.store.status import operator_statuses

    settings = _settings(ctx)
    db = _db(settings)
    callback = listener_callback_url(settings) if settings.listener_secret is not None else None
    with db.read() as session:
        rows = operator_statuses(session)
        check = None if callback is None else listener_checks.latest(session, callback)
    if as_json:
        now = datetime.now(UTC)
        records = []
        for r in rows:
            state, age = _subscription_state(r, now)
            records.append(
                {
                    "operator": r.email,
                    "source": r.source,
                    "moving_from": r.moving_from,
                    "sync_enabled": r.enabled,
                    "subscribed": state,
                    "subscription_age_minutes": age,
                    "subscription_expires": _iso(r.subscription_expires),
                    "last_heartbeat": _iso(r.last_heartbeat),
                    "last_sync": _iso(r.last_sync),
                    "initial_sync_done": r.initial_sync_done,
                    "pending_notifications": r.pending_notifications,
                    "pass_due": r.dirty,
                    "appointments": r.appointments,
                    "last_error": None
                    if r.last_error_code is None
                    else {"code": r.last_error_code, "message": r.last_error_message, "at": _iso(r.last_error_at)},
                    "incident": None
                    if r.incident_code is None
                    else {"code": r.incident_code, "since": _iso(r.incident_since), "message": r.incident_message},
                }
            )
        listener = (
            None if check is None else {"ok": check.ok, "checked_at": _iso(check.checked_at), "detail": check.detail}
        )
        _json({"operators": records, "listener_url_check": listener})
        return
    cells = []
    for r in rows:
        error = "-" if r.last_error_code is None else escape(f"{r.last_error_code}: {r.last_error_message}")
        if r.source == "graph":
            heartbeat = "- (Graph has none)"
        else:
            heartbeat = _when(r.last_heartbeat) if r.last_heartbeat is not None or not r.subscribed else "none yet"
        cells.append(
            [
                r.email,
                _source(r.source, r.moving_from),
                "on" if r.enabled else "off",
                _subscribed(r),
                heartbeat,
                _when(r.last_sync) if r.initial_sync_done else "initial sync pending",
                str(r.pending_notifications) + (" (pass due)" if r.dirty else ""),
                str(r.appointments),
                error,
                "-" if r.incident_code is None else f"{r.incident_code} (failing since {_when(r.incident_since)})",
            ]
        )
    columns = (
        "operator",
        "source",
        "sync",
        "subscribed",
        "last heartbeat",
        "last sync",
        "pending",
        "appointments",
        "last error",
        "incident",
    )
    _table("calsync status", columns, cells)
    if check is None:
        out.print("listener URL: not checked yet (`calsync serve` checks it when it starts)")
    else:
        verdict = "ok" if check.ok else "[red]does not come back to this listener[/red]"
        out.print(f"listener URL: {verdict}, checked {_when(check.checked_at)}: {escape(check.detail)}")


# --- operators ----------------------------------------------------------------------------------


def _operators_call(ctx: typer.Context, action: Any, audit: tuple[str, str, dict[str, Any]] | None = None) -> Any:
    """Run a change to operators in one transaction, with its audit entry (action, target, detail) when given."""
    from calsync.store import jobs as job_store
    from calsync.store.operators import OperatorError

    settings = _settings(ctx)
    db = _db(settings)
    try:
        with db.transaction() as session:
            result = action(session)
            # Subscribing (and so the initial sync) is ManagePushSubscriptions' job: ask it to run now.
            job_store.request_run(session, job_store.MANAGE_SUBSCRIPTIONS)
            if audit is not None:
                _audit(session, *audit)
            return result
    except OperatorError as exc:
        raise _fail(str(exc)) from None


def _configured_source(settings: Any, source: str) -> str:
    """The source, checked against the deployment's connections: an operator on a source without one could not
    be synced."""
    from calsync.store.operators import OperatorError, check_source

    try:
        name = check_source(source)
    except OperatorError as exc:
        raise _fail(str(exc)) from None
    if name == "graph" and not settings.graph_configured:
        raise _fail(
            "this deployment has no Graph connection: set graph_tenant_id, graph_client_id and graph_client_secret "
            "(or graph_certificate) first (docs/user-guide.md, Exchange Online through Microsoft Graph)"
        )
    return name


@operators_app.command("add")
def operators_add(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The operator's e-mail address (their mailbox).")],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    enable: Annotated[bool, typer.Option(help="Enable sync at once.")] = False,
    source: Annotated[
        str | None,
        typer.Option(
            help="Read the mailbox through ews (Exchange Server, EWS) or graph (Exchange Online, Microsoft Graph); "
            "default: graph when exchange_version is Exchange365 and Graph is configured, else ews."
        ),
    ] = None,
) -> None:
    """Add an operator (sync stays off unless --enable)."""
    from calsync.store import operators

    settings = _settings(ctx)
    chosen = _configured_source(settings, source or settings.default_source)
    detail = {"email": email, "display_name": name, "sync_enabled": enable, "source": chosen}
    op = _operators_call(
        ctx, lambda s: operators.add(s, email, name, enable, chosen), ("operator.create", email.lower(), detail)
    )
    out.print(f"added {op.email} (source {op.source}, sync {'on' if op.sync_enabled else 'off'})")


@operators_app.command("move")
def operators_move(
    ctx: typer.Context,
    email: Email,
    to: Annotated[str, typer.Option("--to", help="The source to read the mailbox through from now on: ews or graph.")],
) -> None:
    """Move an operator to another source (EWS to Graph when the mailbox moved to Exchange Online). The
    application calendar and every appointment's id stay as they are; the next pass reads the whole window
    through the new source, and the subscription is replaced."""
    from calsync.store import operators

    settings = _settings(ctx)
    target = _configured_source(settings, to)
    op = _operators_call(
        ctx, lambda s: operators.move(s, email, target), ("operator.move", email.lower(), {"to": target})
    )
    out.print(
        f"moving {op.email} to {op.source}: the next pass reads its calendar through {op.source} and keeps every "
        "appointment's id; `calsync status` shows the move until that pass completes"
    )


@operators_app.command("list")
def operators_list(
    ctx: typer.Context,
    enabled: Annotated[
        bool | None, typer.Option("--enabled/--disabled", help="Only those with sync on (or off); default: all.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List operators."""
    from calsync.store import operators, syncstate

    settings = _settings(ctx)
    db = _db(settings)
    with db.read() as session:
        rows = operators.listing(session, enabled)
        moving = syncstate.moving(session)
    if as_json:
        _json(
            [
                {
                    "email": op.email,
                    "display_name": op.display_name,
                    "source": op.source,
                    "moving_from": moving.get(op.id),
                    "sync_enabled": op.sync_enabled,
                    "last_sync": _iso(op.last_sync_at),
                }
                for op in rows
            ]
        )
        return
    cells = [
        [
            op.email,
            escape(op.display_name) if op.display_name else "-",
            _source(op.source, moving.get(op.id)),
            "on" if op.sync_enabled else "off",
            _when(op.last_sync_at),
        ]
        for op in rows
    ]
    _table("operators", ("e-mail", "name", "source", "sync", "last sync"), cells)


@operators_app.command("enable")
def operators_enable(ctx: typer.Context, email: Email) -> None:
    """Turn sync on: the operator is subscribed and gets an initial sync."""
    from calsync.store import operators

    op = _operators_call(ctx, lambda s: operators.set_enabled(s, email, True), ("operator.enable", email.lower(), {}))
    out.print(f"sync on for {op.email}")


@operators_app.command("disable")
def operators_disable(ctx: typer.Context, email: Email) -> None:
    """Turn sync off: the subscription is dropped; synced appointments stay."""
    from calsync.store import operators

    op = _operators_call(ctx, lambda s: operators.set_enabled(s, email, False), ("operator.disable", email.lower(), {}))
    out.print(f"sync off for {op.email}")


@operators_app.command("remove")
def operators_remove(
    ctx: typer.Context,
    email: Email,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask: remove at once (for scripts).")] = False,
) -> None:
    """Remove an operator and every appointment synced for them from the application calendar (Exchange keeps
    its copy). Asks first, unless --yes."""
    from calsync.store import calendar, operators
    from calsync.store.operators import OperatorError

    if not yes:
        settings = _settings(ctx)
        db = _db(settings)
        try:
            with db.read() as session:
                op = operators.require(session, email)
                count = calendar.count(session, op.id)
        except OperatorError as exc:
            raise _fail(str(exc)) from None
        question = (
            f"Remove {op.email} and the {count} appointment(s) synced for them from the application calendar? "
            "Exchange keeps its copy"
        )
        try:
            confirmed = typer.confirm(question, default=False, err=True)
        except typer.Abort:  # no answer: stdin ended (a script without a terminal)
            raise _fail(f"not removed: no answer to '{question}?'; add --yes to remove without asking") from None
        if not confirmed:
            console.print("nothing removed")
            raise typer.Exit(1)
    _operators_call(ctx, lambda s: operators.remove(s, email), ("operator.delete", email.lower(), {}))
    out.print(f"removed {email.lower()}")


# --- jobs ---------------------------------------------------------------------------------------


def _jobs_call(ctx: typer.Context, action: Any, audit: tuple[str, dict[str, Any]] | None = None) -> Any:
    """Run ``action`` in one transaction; a change (``audit``: action and detail) is audited with the job's name."""
    from calsync.store import jobs as job_store

    settings = _settings(ctx)
    db = _db(settings)
    try:
        with db.transaction() as session:
            result = action(session)
            if audit is not None:
                _audit(session, audit[0], result.name, audit[1])
            return result
    except job_store.JobError as exc:
        raise _fail(str(exc)) from None


@jobs_app.command("list")
def jobs_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """The jobs with their state, interval, last run and outcome, and next run."""
    from calsync.store import jobs as job_store

    rows = _jobs_call(ctx, job_store.listing)
    if as_json:
        _json(
            [
                {
                    "name": row.name,
                    "enabled": row.enabled,
                    "interval_seconds": row.interval_seconds,
                    "last_run": _iso(row.last_run_at),
                    "last_outcome": row.last_outcome,
                    "run_requested": row.run_requested,
                    "next_run": _iso(row.next_run_at),
                }
                for row in rows
            ]
        )
        return
    cells = [
        [
            row.name,
            "yes" if row.enabled else "no",
            f"{row.interval_seconds} s",
            _when(row.last_run_at),
            escape(row.last_outcome or "-"),
            "now (requested)" if row.run_requested else _when(row.next_run_at),
        ]
        for row in rows
    ]
    _table("jobs", ("job", "enabled", "interval", "last run", "outcome", "next run"), cells)


@jobs_app.command("enable")
def jobs_enable(ctx: typer.Context, name: JobName) -> None:
    """Let a job run (takes effect on every node within a second)."""
    from calsync.store import jobs as job_store

    row = _jobs_call(ctx, lambda s: job_store.set_enabled(s, name, True), ("job.update", {"enabled": True}))
    out.print(f"{row.name} enabled")


@jobs_app.command("disable")
def jobs_disable(ctx: typer.Context, name: JobName) -> None:
    """Stop a job from running (takes effect on every node within a second)."""
    from calsync.store import jobs as job_store

    row = _jobs_call(ctx, lambda s: job_store.set_enabled(s, name, False), ("job.update", {"enabled": False}))
    out.print(f"{row.name} disabled")


@jobs_app.command("set-interval")
def jobs_set_interval(
    ctx: typer.Context,
    name: JobName,
    seconds: Annotated[int, typer.Argument(metavar="SECONDS", help="The new interval: 1..86400 seconds.")],
) -> None:
    """Change how often a job runs."""
    from calsync.store import jobs as job_store

    row = _jobs_call(
        ctx, lambda s: job_store.set_interval(s, name, seconds), ("job.update", {"interval_seconds": seconds})
    )
    out.print(f"{row.name} runs every {row.interval_seconds} s")


@jobs_app.command("run")
def jobs_run(ctx: typer.Context, name: JobName) -> None:
    """Ask a job to run now (a running `serve` or `worker` picks it up within a second)."""
    from calsync.store import jobs as job_store

    row = _jobs_call(ctx, lambda s: job_store.request_run(s, name), ("job.run", {}))
    out.print(f"{row.name} will run now")


# --- tokens -------------------------------------------------------------------------------------


def _tokens_call(ctx: typer.Context, action: Any, audit: str | None = None) -> Any:
    """Run ``action`` in one transaction; a change (``audit``: its action name) is audited with the token's id,
    name and role (never the token)."""
    from calsync.store.tokens import TokenError

    settings = _settings(ctx)
    db = _db(settings)
    try:
        with db.transaction() as session:
            result = action(session)
            if audit is not None:
                row = result[0] if isinstance(result, tuple) else result
                session.flush()
                _audit(session, audit, f"token {row.id}", {"name": row.name, "role": row.role})
            return result
    except TokenError as exc:
        raise _fail(str(exc)) from None


@tokens_app.command("create")
def tokens_create(
    ctx: typer.Context,
    role: Annotated[str, typer.Option(help="admin (everything), viewer (read all but calendars), calendar.")],
    name: Annotated[str | None, typer.Option(help="Who or what uses it (shown in the audit log).")] = None,
) -> None:
    """Create an API token. It is printed once; only its hash is stored."""
    from calsync.store import tokens

    label = name or f"{role} token"
    row, token = _tokens_call(ctx, lambda s: tokens.create(s, role, label), "token.create")
    console.print(f"created token {row.id} ({escape(row.name)}, role {row.role}); it is shown only now:")
    out.print(token, markup=False, highlight=False)


@tokens_app.command("list")
def tokens_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """The tokens (never the tokens themselves): id, name, role, created, last used, revoked."""
    from calsync.store import tokens

    rows = _tokens_call(ctx, tokens.listing)
    if as_json:
        _json(
            [
                {
                    "id": row.id,
                    "name": row.name,
                    "role": row.role,
                    "starts_with": row.prefix,
                    "created": _iso(row.created_at),
                    "last_used": _iso(row.last_used_at),
                    "revoked": _iso(row.revoked_at),
                }
                for row in rows
            ]
        )
        return
    cells = [
        [
            str(row.id),
            escape(row.name),
            row.role,
            escape(row.prefix) + "…",
            _when(row.created_at),
            _when(row.last_used_at),
            _when(row.revoked_at),
        ]
        for row in rows
    ]
    _table("API tokens", ("id", "name", "role", "starts with", "created", "last used", "revoked"), cells)


@tokens_app.command("revoke")
def tokens_revoke(
    ctx: typer.Context, token_id: Annotated[int, typer.Argument(metavar="ID", help="The id `tokens list` shows.")]
) -> None:
    """Revoke a token: it stops working at once, on every node."""
    from calsync.store import tokens

    row = _tokens_call(ctx, lambda s: tokens.revoke(s, token_id), "token.revoke")
    out.print(f"token {row.id} ({escape(row.name)}) revoked")


@app.command()
def demo(
    keep_running: Annotated[bool, typer.Option(help="Stay up after the demo to explore (Ctrl-C to stop).")] = False,
    port: Annotated[int, typer.Option(help="Port of calsync's listener and API (0: any free port).")] = 0,
    database: Annotated[Path, typer.Option(help="SQLite file for the demo.")] = Path("calsync-demo.sqlite3"),
) -> None:
    """The whole product in a minute: an emulated Exchange, three operators, live changes timed end to end."""
    from calsync.demo import run_demo

    run_demo(keep_running=keep_running, port=port, database=database, console=out)


app.command(name="emulator")(emulator_cli.command)


def main() -> None:
    app()

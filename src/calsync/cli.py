"""The ``calsync`` command line. Thin: each command parses its options and calls the package that owns the work."""

from __future__ import annotations

import os
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from calsync.emulator import cli as emulator_cli

app = typer.Typer(
    help="calsync: keep an application's calendar in step with Microsoft Exchange.",
    no_args_is_help=True,
    add_completion=False,
)
operators_app = typer.Typer(help="Operators: the users whose Exchange calendars are synced.", no_args_is_help=True)
jobs_app = typer.Typer(
    help="The jobs: ProcessPushNotifications, ManagePushSubscriptions, Reconciliation.", no_args_is_help=True
)
tokens_app = typer.Typer(help="Admin API tokens: create, list, revoke.", no_args_is_help=True)
db_app = typer.Typer(help="The database.", no_args_is_help=True)
config_app = typer.Typer(help="The settings.", no_args_is_help=True)
app.add_typer(operators_app, name="operators")
app.add_typer(jobs_app, name="jobs")
app.add_typer(tokens_app, name="tokens")
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")
console = Console(stderr=True)
out = Console()

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="Settings file (default ./calsync.toml).")]


@app.callback()
def main_callback(ctx: typer.Context, config: ConfigOption = None) -> None:
    """calsync: keep an application's calendar in step with Microsoft Exchange."""
    ctx.obj = {"config": config}


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {escape(message)}")  # messages quote user input: never read it as markup
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


def _db(settings: Any) -> Any:
    """The database, its schema at the newest revision and the job rows in place."""
    from calsync.runtime import job_intervals
    from calsync.store import jobs as job_store
    from calsync.store.db import Database

    db = Database(settings.database_url)
    db.upgrade()
    with db.transaction() as session:
        job_store.ensure(session, job_intervals(settings))
    return db


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
    _db(settings).dispose()
    console.print(f"database ready: {escape(settings.database_url.split('@')[-1])}")


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Bring the database schema to the newest version."""
    settings = _settings(ctx)
    _db(settings).dispose()
    from calsync.store.db import Database

    console.print(f"schema at revision {Database(settings.database_url).current_revision()}")


@config_app.command("check")
def config_check(ctx: typer.Context) -> None:
    """Print the effective settings (secrets masked); exit 2 if they are not valid."""
    from calsync.settings import effective_settings, setting_label

    settings = _settings(ctx)
    table = Table(title=escape(f"calsync settings ({settings.config_file or 'no settings file'})"))
    table.add_column("setting")
    table.add_column("value")
    for name, value in effective_settings(settings).items():
        table.add_row(setting_label(name), "-" if value is None else escape(str(value)))
    out.print(table)
    missing = settings.missing_credentials()
    if missing:
        console.print("[yellow]Exchange credentials incomplete:[/yellow] " + escape("; ".join(missing)))
        raise typer.Exit(2)


# --- running ------------------------------------------------------------------------------------


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    threads: Annotated[int, typer.Option(help="Sync passes run at once by this process.")] = 4,
    jobs: Annotated[bool, typer.Option(help="Also run the jobs in this process.")] = True,
) -> None:
    """Run the listener, the calendar API and (by default) both jobs in one process."""
    import uvicorn

    from calsync.runtime import Runtime

    settings = _settings(ctx, require_credentials=True)
    if settings.listener_secret is None:
        raise _fail("listener_secret is not set: run `calsync init` (or set CALSYNC_LISTENER_SECRET)")
    _logging(settings.log_level)
    runtime = Runtime(settings, threads=threads)
    runtime.prepare()
    console.print(
        escape(
            f"calsync listening on http://{host}:{port} (push callbacks: {settings.listener_url}"
            "/ews/notifications/<secret>)"
        )
    )
    # proxy_headers off: the listener decides itself whether to trust X-Forwarded-For
    # (listener_trust_forwarded_for); uvicorn would otherwise take it from any local client.
    uvicorn.run(
        runtime.app(run_jobs=jobs), host=host, port=port, log_level="warning", access_log=False, proxy_headers=False
    )


@app.command()
def worker(
    ctx: typer.Context,
    threads: Annotated[int, typer.Option(help="Sync passes run at once by this process.")] = 4,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve /metrics, /healthz and /readyz on this port (default: no HTTP server).")
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Address the --metrics-port server listens on.")] = "127.0.0.1",
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
    _logging(settings.log_level)
    runtime = Runtime(settings, threads=threads)
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
    email: Annotated[str, typer.Argument(help="The operator's e-mail address.")],
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


@app.command()
def status(ctx: typer.Context) -> None:
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
    table = Table(title="calsync status")
    for column in (
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
    ):
        table.add_column(column)
    for r in rows:
        error = "-" if r.last_error_code is None else escape(f"{r.last_error_code}: {r.last_error_message}")
        if r.source == "graph":
            heartbeat = "- (Graph has none)"
        else:
            heartbeat = _when(r.last_heartbeat) if r.last_heartbeat is not None or not r.subscribed else "none yet"
        table.add_row(
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
        )
    out.print(table)
    if check is None:
        out.print("listener URL: not checked yet (`calsync serve` checks it when it starts)")
    else:
        verdict = "ok" if check.ok else "[red]does not come back to this listener[/red]"
        out.print(f"listener URL: {verdict}, checked {_when(check.checked_at)}: {escape(check.detail)}")


# --- operators ----------------------------------------------------------------------------------


def _operators_call(ctx: typer.Context, action: Any) -> Any:
    from calsync.store import jobs as job_store
    from calsync.store.operators import OperatorError

    settings = _settings(ctx)
    db = _db(settings)
    try:
        with db.transaction() as session:
            result = action(session)
            # Subscribing (and so the initial sync) is ManagePushSubscriptions' job: ask it to run now.
            job_store.request_run(session, job_store.MANAGE_SUBSCRIPTIONS)
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
    email: Annotated[str, typer.Argument(help="The operator's e-mail address (their Exchange mailbox).")],
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
    op = _operators_call(ctx, lambda s: operators.add(s, email, name, enable, chosen))
    out.print(f"added {op.email} (source {op.source}, sync {'on' if op.sync_enabled else 'off'})")


@operators_app.command("move")
def operators_move(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The operator's e-mail address.")],
    to: Annotated[str, typer.Option("--to", help="The source to read the mailbox through from now on: ews or graph.")],
) -> None:
    """Move an operator to another source (EWS to Graph when the mailbox moved to Exchange Online). The
    application calendar and every appointment's id stay as they are; the next pass reads the whole window
    through the new source, and the subscription is replaced."""
    from calsync.store import operators

    settings = _settings(ctx)
    target = _configured_source(settings, to)
    op = _operators_call(ctx, lambda s: operators.move(s, email, target))
    out.print(
        f"moving {op.email} to {op.source}: the next pass reads its calendar through {op.source} and keeps every "
        "appointment's id; `calsync status` shows the move until that pass completes"
    )


@operators_app.command("list")
def operators_list(
    ctx: typer.Context,
    enabled: Annotated[bool | None, typer.Option("--enabled/--disabled", help="Only these.")] = None,
) -> None:
    """List operators."""
    from calsync.store import operators, syncstate

    settings = _settings(ctx)
    db = _db(settings)
    with db.read() as session:
        rows = operators.listing(session, enabled)
        moving = syncstate.moving(session)
    table = Table(title="operators")
    for column in ("e-mail", "name", "source", "sync", "last sync"):
        table.add_column(column)
    for op in rows:
        name = escape(op.display_name) if op.display_name else "-"
        source = _source(op.source, moving.get(op.id))
        table.add_row(op.email, name, source, "on" if op.sync_enabled else "off", _when(op.last_sync_at))
    out.print(table)


@operators_app.command("enable")
def operators_enable(ctx: typer.Context, email: Annotated[str, typer.Argument()]) -> None:
    """Turn sync on: the operator is subscribed and gets an initial sync."""
    from calsync.store import operators

    op = _operators_call(ctx, lambda s: operators.set_enabled(s, email, True))
    out.print(f"sync on for {op.email}")


@operators_app.command("disable")
def operators_disable(ctx: typer.Context, email: Annotated[str, typer.Argument()]) -> None:
    """Turn sync off: the subscription is dropped; synced appointments stay."""
    from calsync.store import operators

    op = _operators_call(ctx, lambda s: operators.set_enabled(s, email, False))
    out.print(f"sync off for {op.email}")


@operators_app.command("remove")
def operators_remove(ctx: typer.Context, email: Annotated[str, typer.Argument()]) -> None:
    """Remove an operator and their synced appointments."""
    from calsync.store import operators

    _operators_call(ctx, lambda s: operators.remove(s, email))
    out.print(f"removed {email.lower()}")


# --- jobs ---------------------------------------------------------------------------------------


def _jobs_call(ctx: typer.Context, action: Any) -> Any:
    from calsync.store import jobs as job_store

    settings = _settings(ctx)
    db = _db(settings)
    try:
        with db.transaction() as session:
            return action(session)
    except job_store.JobError as exc:
        raise _fail(str(exc)) from None


@jobs_app.command("list")
def jobs_list(ctx: typer.Context) -> None:
    """The jobs with their state, interval, last run and outcome, and next run."""
    from calsync.store import jobs as job_store

    rows = _jobs_call(ctx, job_store.listing)
    table = Table(title="jobs")
    for column in ("job", "enabled", "interval", "last run", "outcome", "next run"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.name,
            "yes" if row.enabled else "no",
            f"{row.interval_seconds} s",
            _when(row.last_run_at),
            escape(row.last_outcome or "-"),
            "now (requested)" if row.run_requested else _when(row.next_run_at),
        )
    out.print(table)


@jobs_app.command("enable")
def jobs_enable(ctx: typer.Context, name: Annotated[str, typer.Argument()]) -> None:
    """Let a job run (takes effect on every node within a second)."""
    from calsync.store import jobs as job_store

    row = _jobs_call(ctx, lambda s: job_store.set_enabled(s, name, True))
    out.print(f"{row.name} enabled")


@jobs_app.command("disable")
def jobs_disable(ctx: typer.Context, name: Annotated[str, typer.Argument()]) -> None:
    """Stop a job from running (takes effect on every node within a second)."""
    from calsync.store import jobs as job_store

    row = _jobs_call(ctx, lambda s: job_store.set_enabled(s, name, False))
    out.print(f"{row.name} disabled")


@jobs_app.command("set-interval")
def jobs_set_interval(
    ctx: typer.Context, name: Annotated[str, typer.Argument()], seconds: Annotated[int, typer.Argument(help="1..86400")]
) -> None:
    """Change how often a job runs."""
    from calsync.store import jobs as job_store

    row = _jobs_call(ctx, lambda s: job_store.set_interval(s, name, seconds))
    out.print(f"{row.name} runs every {row.interval_seconds} s")


@jobs_app.command("run")
def jobs_run(ctx: typer.Context, name: Annotated[str, typer.Argument()]) -> None:
    """Ask a job to run now (a running `serve` or `worker` picks it up within a second)."""
    from calsync.store import jobs as job_store

    row = _jobs_call(ctx, lambda s: job_store.request_run(s, name))
    out.print(f"{row.name} will run now")


# --- tokens -------------------------------------------------------------------------------------


def _tokens_call(ctx: typer.Context, action: Any) -> Any:
    from calsync.store.tokens import TokenError

    settings = _settings(ctx)
    db = _db(settings)
    try:
        with db.transaction() as session:
            return action(session)
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
    row, token = _tokens_call(ctx, lambda s: tokens.create(s, role, label))
    console.print(f"created token {row.id} ({escape(row.name)}, role {row.role}); it is shown only now:")
    out.print(token, markup=False, highlight=False)


@tokens_app.command("list")
def tokens_list(ctx: typer.Context) -> None:
    """The tokens (never the tokens themselves): id, name, role, created, last used, revoked."""
    from calsync.store import tokens

    rows = _tokens_call(ctx, tokens.listing)
    table = Table(title="API tokens")
    for column in ("id", "name", "role", "starts with", "created", "last used", "revoked"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row.id),
            escape(row.name),
            row.role,
            escape(row.prefix) + "…",
            _when(row.created_at),
            _when(row.last_used_at),
            _when(row.revoked_at),
        )
    out.print(table)


@tokens_app.command("revoke")
def tokens_revoke(
    ctx: typer.Context, token_id: Annotated[int, typer.Argument(help="The id `tokens list` shows.")]
) -> None:
    """Revoke a token: it stops working at once, on every node."""
    from calsync.store import tokens

    row = _tokens_call(ctx, lambda s: tokens.revoke(s, token_id))
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

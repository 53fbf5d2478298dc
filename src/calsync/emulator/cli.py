"""``calsync emulator``: start the built-in Exchange from the command line, check its options and say where it
listens. The options, their rules and the control API are documented in docs/emulator.md."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    """A bad option: say what is wrong and what is allowed, exit with code 2, start nothing."""
    console.print(f"[red]error:[/red] {escape(message)}")  # messages quote user input: never read it as markup
    return typer.Exit(2)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def command(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    account: Annotated[
        list[str] | None,
        typer.Option(help="Service account USER:PASSWORD with impersonation rights on every mailbox (repeatable)."),
    ] = None,
    mailbox: Annotated[list[str] | None, typer.Option(help="Create an empty mailbox (repeatable).")] = None,
    exchange_version: Annotated[
        str,
        typer.Option(help="Behaviour to emulate: Exchange2010, Exchange2013, Exchange2016, Exchange2019, Exchange365."),
    ] = "Exchange2016",
    sample_mailboxes: Annotated[
        int, typer.Option(help="Also create this many mailboxes user1@example.com... with realistic calendars.")
    ] = 0,
    sample_appointments: Annotated[
        int, typer.Option(help="Appointments in each --mailbox and sample mailbox (0 leaves --mailbox empty).")
    ] = 0,
    seed: Annotated[int, typer.Option(help="Seed for the sample calendars.")] = 0,
    clock_speed: Annotated[
        float,
        typer.Option(help="Run the emulator clock this many times faster than real time (60: a minute per second)."),
    ] = 1.0,
    strict_schema_dir: Annotated[
        Path | None,
        typer.Option(
            help="Validate every document sent against the EWS schemas in this folder (needs calsync[strict])."
        ),
    ] = None,
    dialect: Annotated[
        list[str] | None,
        typer.Option(help="Answer in a form other EWS servers write (repeatable; see docs/emulator.md, Dialects)."),
    ] = None,
    graph_app: Annotated[
        list[str] | None,
        typer.Option(
            help="A Graph app TENANT:CLIENT_ID:SECRET[:PERMISSION,...] (Calendars.Read, Calendars.ReadWrite; "
            "default Calendars.ReadWrite; a trailing ':' grants none) (repeatable)."
        ),
    ] = None,
    tls: Annotated[
        bool, typer.Option(help="Serve https with a certificate made at start; prints the CA file to trust.")
    ] = False,
    tls_dir: Annotated[
        Path | None, typer.Option(help="With --tls: write the CA and server certificate here (default: a temp folder).")
    ] = None,
    https_port: Annotated[
        int | None,
        typer.Option(
            help="Also serve https on this port (a certificate made at start), beside plain http on --port: "
            "EWS inside the network, Graph and its token endpoint over https."
        ),
    ] = None,
    graph_allow_http: Annotated[
        bool, typer.Option(help="Accept http notification URLs for Graph subscriptions (Graph requires https).")
    ] = False,
    graph_token_minutes: Annotated[
        int, typer.Option(help="Lifetime of the Graph access tokens the token endpoint issues, in minutes.")
    ] = 60,
) -> None:
    """Run the built-in Exchange emulator (EWS and Microsoft Graph) until interrupted."""
    from .clock import Clock
    from .exchange import Exchange
    from .graph import GraphWing
    from .sample_data import populate
    from .server import EWS_PATH, GRAPH_PATH, _schema_checker, bound_socket, build_app, serve_all, serve_configs
    from .versions import VERSIONS

    if exchange_version not in VERSIONS:
        raise _fail(f"--exchange-version '{exchange_version}' is unknown; allowed: {', '.join(VERSIONS)}")
    if not 0 <= sample_mailboxes <= 100_000:
        raise _fail("--sample-mailboxes must be from 0 to 100000")
    if not 0 <= sample_appointments <= 10_000:
        raise _fail("--sample-appointments must be from 0 to 10000")
    if clock_speed <= 0:
        raise _fail("--clock-speed must be greater than 0")
    if not 1 <= port <= 65535:
        raise _fail("--port must be from 1 to 65535")
    if not 1 <= graph_token_minutes <= 1440:
        raise _fail("--graph-token-minutes must be from 1 to 1440")
    if tls and https_port is not None:
        raise _fail("--tls (https only) and --https-port (https beside http) exclude each other; give one")
    if https_port is not None and not (1 <= https_port <= 65535 and https_port != port):
        raise _fail("--https-port must be from 1 to 65535 and differ from --port")
    secure = tls or https_port is not None
    if tls_dir is not None and not (secure and tls_dir.is_dir()):
        raise _fail(f"--tls-dir '{tls_dir}' must be an existing folder, and needs --tls or --https-port")
    exchange = Exchange(exchange_version, Clock(clock_speed))
    graph = GraphWing(exchange, allow_http=graph_allow_http, token_minutes=graph_token_minutes)
    try:
        for spec in graph_app or []:
            graph.add_app(spec)
        exchange.faults.update(dialect=list(dialect or []))
        for entry in account or []:
            user, sep, password = entry.partition(":")
            if not sep or not user or not password:
                raise _fail(f"--account '{entry}' must be USER:PASSWORD")
            exchange.add_account(user, password)
        addresses = list(mailbox or []) + [f"user{i}@example.com" for i in range(1, sample_mailboxes + 1)]
        boxes = [exchange.add_mailbox(a) for a in addresses]
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    if sample_appointments:
        import gc

        from rich.progress import Progress

        # Millions of long-lived objects: collecting garbage while they are made only costs time, and
        # freezing them afterwards keeps later collections from walking them again.
        gc.disable()
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("filling calendars", total=len(boxes))
            for mbx in boxes:
                populate(exchange, mbx, sample_appointments, seed=seed, colleagues=boxes[:20])
                progress.advance(task)
        gc.enable()
        gc.freeze()
    if strict_schema_dir is not None and not (strict_schema_dir / "messages.xsd").is_file():
        raise _fail(f"--strict-schema-dir '{strict_schema_dir}' holds no messages.xsd")
    app_, _ = build_app(exchange, graph, check=_schema_checker(exchange, strict_schema_dir))
    items = sum(len(m.calendar.items) for m in boxes)
    base = f"{'https' if tls else 'http'}://{host}:{port}"
    graph_base = f"https://{host}:{https_port}" if https_port is not None else base
    console.print(
        f"EWS at [bold]{base}{EWS_PATH}[/bold] ({exchange_version}), "
        f"{len(exchange.accounts)} account(s), {len(boxes)} mailbox(es), {items} appointment(s); "
        f"control API at {base}/emulator/"
    )
    tenants = graph.tenants()
    token_endpoints = ", ".join(f"{graph_base}/{t}/oauth2/v2.0/token" for t in tenants) or "none (no --graph-app yet)"
    console.print(
        f"Microsoft Graph at [bold]{graph_base}{GRAPH_PATH}[/bold], {len(graph.identity.apps)} app(s); "
        f"token endpoint(s): {escape(token_endpoints)}"
    )
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with contextlib.ExitStack() as cleanup:
        ssl: dict[str, str] = {}
        if secure:
            from .tls import make_tls_files

            # uvicorn re-raises SIGTERM once it has stopped: as an exception, so that the folder is removed.
            signal.signal(signal.SIGTERM, _exit_on_signal)
            folder = tls_dir or Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="calsync-emulator-tls-")))
            files = make_tls_files(folder, host)
            ssl = {"ssl_certfile": str(files.cert_file), "ssl_keyfile": str(files.key_file)}
            console.print(f"TLS: trust the CA file [bold]{escape(str(files.ca_file))}[/bold]")
        try:
            sockets = [bound_socket(host, port)] + ([bound_socket(host, https_port)] if https_port is not None else [])
        except OSError as exc:
            raise _fail(f"cannot listen on {host}: {exc.strerror or exc}") from exc
        configs = [ssl if tls else {}] + ([ssl] if https_port is not None else [])
        asyncio.run(serve_all(serve_configs(app_, configs), sockets))

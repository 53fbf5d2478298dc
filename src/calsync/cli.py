"""The ``calsync`` command line. Thin: each command parses its options and calls the package that owns the work."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    help="calsync: keep an application's calendar in step with Microsoft Exchange.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)


@app.callback()
def main_callback() -> None:
    """calsync: keep an application's calendar in step with Microsoft Exchange."""


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(2)


@app.command()
def emulator(
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
) -> None:
    """Run the built-in Exchange (EWS) emulator until interrupted."""
    from calsync.emulator.clock import Clock
    from calsync.emulator.exchange import Exchange
    from calsync.emulator.sample_data import populate
    from calsync.emulator.server import EWS_PATH, _schema_checker, build_app
    from calsync.emulator.versions import VERSIONS

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
    exchange = Exchange(exchange_version, Clock(clock_speed))
    try:
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
        from rich.progress import Progress

        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("filling calendars", total=len(boxes))
            for mbx in boxes:
                populate(exchange, mbx, sample_appointments, seed=seed, colleagues=boxes[:20])
                progress.advance(task)
    if strict_schema_dir is not None and not (strict_schema_dir / "messages.xsd").is_file():
        raise _fail(f"--strict-schema-dir '{strict_schema_dir}' holds no messages.xsd")
    app_, _ = build_app(exchange, check=_schema_checker(exchange, strict_schema_dir))
    items = sum(len(m.calendar.items) for m in boxes)
    console.print(
        f"EWS at [bold]http://{host}:{port}{EWS_PATH}[/bold] ({exchange_version}), "
        f"{len(exchange.accounts)} account(s), {len(boxes)} mailbox(es), {items} appointment(s); "
        f"control API at http://{host}:{port}/emulator/"
    )
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    uvicorn.run(app_, host=host, port=port, log_level="warning", access_log=False)


def main() -> None:
    app()

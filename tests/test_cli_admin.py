"""What a new administrator trips over on the command line, each said at once in one line with what to do:
a database that is not where the settings say, an unreachable PostgreSQL, a port in use, removing an operator
without being asked, ``-c`` after the command, ``--version``, output that stays readable at 80 columns and in
pipes, ``--json`` for scripts, and CLI changes in the audit log.

Commands run for real (Typer's CliRunner, or a ``calsync`` process where the terminal matters)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import select

from calsync.cli import config_first
from calsync.store import audit
from calsync.store.db import Database
from calsync.store.tables import Operator

from .conftest import POSTGRES_DEFAULT, POSTGRES_ENV
from .test_cli import db as db  # a SQLite database, its URL in CALSYNC_DATABASE_URL
from .test_cli import db_url as db_url
from .test_cli import fails, ok, output, row
from .test_cli import workdir as workdir  # the scratch directory and clean environment (autouse)

ANSI_FREE = {"NO_COLOR": "1", "TERM": "dumb"}


def calsync(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """The real command, as a shell runs it: output to a pipe (so rich sees no terminal), a clean environment."""
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("CALSYNC_") and k != "COLUMNS"}
    return subprocess.run(
        [sys.executable, "-m", "calsync", *args],
        cwd=cwd,
        env={**base, **ANSI_FREE, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


# --- 1. a wrong database path never makes a new, empty database ---------------------------------------------------


@pytest.mark.parametrize("command", [["status"], ["operators", "list"], ["jobs", "list"], ["tokens", "list"]])
def test_a_database_that_is_not_there_is_named_and_not_created(workdir: Path, command: list[str]) -> None:
    missing = workdir / "nonexistent" / "dir" / "x.sqlite3"
    result = calsync(*command, cwd=workdir, env={"CALSYNC_DATABASE_URL": f"sqlite:///{missing}"})
    line = one_line_error(result)
    assert f"there is no calsync database at {missing}" in line and "calsync init" in line
    assert not (workdir / "nonexistent").exists()  # neither the folder nor the file was made


def test_the_default_relative_database_is_named_with_the_working_directory(workdir: Path) -> None:
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    line = one_line_error(calsync("status", cwd=elsewhere))
    assert f"no calsync database at {elsewhere / 'calsync.sqlite3'}" in line
    assert f"relative to the working directory, {elsewhere}" in line
    assert list(elsewhere.iterdir()) == []


def test_only_init_db_upgrade_and_serve_when_asked_create_a_database(workdir: Path) -> None:
    url = f"sqlite:///{workdir / 'made' / 'calsync.sqlite3'}"
    env = {"CALSYNC_DATABASE_URL": url}
    assert calsync("db", "upgrade", cwd=workdir, env=env).returncode == 0
    made = workdir / "made" / "calsync.sqlite3"
    assert made.exists() and made.stat().st_mode & 0o777 == 0o600  # as private as the settings file
    assert calsync("status", cwd=workdir, env=env).returncode == 0  # now it is there


def test_serve_and_worker_refuse_a_missing_database_unless_asked(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALSYNC_DATABASE_URL", f"sqlite:///{workdir / 'none' / 'calsync.sqlite3'}")
    monkeypatch.setenv("CALSYNC_LISTENER_SECRET", "Listener-Secret-0123456789abcdef")
    monkeypatch.setenv("CALSYNC_PASSWORD", "secret")
    for command in ("serve", "worker"):
        text = fails(command)
        assert "there is no calsync database at" in text and "/none/calsync.sqlite3" in text
        assert "calsync init" in text and f"calsync {command} --create-database" in text
    assert not (workdir / "none").exists()


# --- 3. an unreachable or missing PostgreSQL database: one line, exit 2 -------------------------------------------


def _postgres_base() -> str:
    base = os.environ.get(POSTGRES_ENV, POSTGRES_DEFAULT)
    try:
        with psycopg.connect(base.replace("postgresql+psycopg", "postgresql"), connect_timeout=3):
            return base
    except psycopg.Error:
        pytest.skip(f"PostgreSQL is not reachable at {base}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_postgresql_is_one_line_not_a_traceback(workdir: Path) -> None:
    port = _free_port()  # nothing listens there
    url = f"postgresql+psycopg://calsync@127.0.0.1:{port}/calsync"
    line = one_line_error(calsync("status", cwd=workdir, env={"CALSYNC_DATABASE_URL": url}))
    assert f"cannot reach the PostgreSQL database 'calsync' on 127.0.0.1:{port}" in line
    assert "check that PostgreSQL runs there" in line


def test_init_creates_a_missing_postgresql_database_and_other_commands_name_it(workdir: Path) -> None:
    base = _postgres_base()
    name = f"calsync_t_{uuid.uuid4().hex[:10]}"
    server = base.rsplit("/", 1)[0]
    url = f"{server}/{name}"
    env = {"CALSYNC_DATABASE_URL": url}
    try:
        line = one_line_error(calsync("status", cwd=workdir, env=env))
        assert f"the PostgreSQL database '{name}'" in line and "does not exist" in line and "calsync init" in line
        result = calsync("init", cwd=workdir, env=env)
        assert result.returncode == 0, result.stderr
        assert f"database ready: PostgreSQL database '{name}'" in " ".join(result.stderr.split())
        assert calsync("status", cwd=workdir, env=env).returncode == 0
    finally:
        with psycopg.connect(base.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- 5. --version, and -c after the command ------------------------------------------------------------------------


def test_version() -> None:
    from importlib.metadata import version

    assert ok("--version").strip() == f"calsync {version('calsync')}"


def test_config_file_option_before_or_after_the_command(workdir: Path) -> None:
    (workdir / "conf").mkdir()
    settings = workdir / "conf" / "prod.toml"
    settings.write_text(f'database_url = "sqlite:///{workdir}/prod.sqlite3"\nbatch_size = 64\n')
    ok("-c", str(settings), "db", "upgrade")
    for args in (["config", "check", "-c", str(settings)], ["config", "check", f"--config={settings}"]):
        assert row(ok(*args), "batch_size (EWSBatchSize)")[1] == "64"  # a wide terminal: a table
    ok("operators", "add", "ann@example.com", "--config", str(settings))
    assert row(ok("-c", str(settings), "operators", "list"), "ann@example.com")


def test_config_first_moves_only_the_settings_file_option() -> None:
    assert config_first(["status", "-c", "f.toml"]) == ["-c", "f.toml", "status"]
    assert config_first(["operators", "add", "a@x.com", "--config=f.toml", "--enable"]) == [
        "--config=f.toml",
        "operators",
        "add",
        "a@x.com",
        "--enable",
    ]
    assert config_first(["emulator", "-c", "x"]) == ["emulator", "-c", "x"]  # the emulator's own options
    assert config_first(["sync", "a@x.com", "--", "-c", "x"]) == ["sync", "a@x.com", "--", "-c", "x"]


# --- 6. readable at 80 columns and in pipes; --json ---------------------------------------------------------------

LONG = "bob.with.a.long.name@subsidiary.example.com"


def test_status_and_config_check_are_whole_at_80_columns_and_in_a_pipe(workdir: Path) -> None:
    assert calsync("init", cwd=workdir).returncode == 0
    assert calsync("operators", "add", LONG, "--name", "Bob", cwd=workdir).returncode == 0
    for env in ({}, {"COLUMNS": "80"}):  # a pipe (rich assumes 80), and an 80-column terminal's width
        status = calsync("status", cwd=workdir, env=env)
        assert status.returncode == 0, status.stderr
        assert LONG in status.stdout  # never cut to "bob.with.a…"
        assert "…" not in status.stdout
        assert all(len(line) <= 80 or LONG in line for line in status.stdout.splitlines()), status.stdout
        check = calsync("config", "check", cwd=workdir, env=env)
        assert "…" not in check.stdout
        assert "listener_secret: ********" in check.stdout.splitlines()
        assert "batch_size (EWSBatchSize): 512" in check.stdout.splitlines()


def test_lists_print_json_for_scripts(workdir: Path) -> None:
    assert calsync("init", cwd=workdir).returncode == 0
    assert calsync("operators", "add", "ann@example.com", "--enable", cwd=workdir).returncode == 0
    assert calsync("tokens", "create", "--role", "viewer", "--name", "wall", cwd=workdir).returncode == 0

    status = json.loads(calsync("status", "--json", cwd=workdir).stdout)
    (ann,) = status["operators"]
    assert ann["operator"] == "ann@example.com" and ann["sync_enabled"] is True and ann["subscribed"] == "no"
    assert ann["initial_sync_done"] is False and status["listener_url_check"] is None

    listed = json.loads(calsync("operators", "list", "--json", cwd=workdir).stdout)
    assert listed == [
        {
            "email": "ann@example.com",
            "display_name": None,
            "source": "ews",
            "moving_from": None,
            "sync_enabled": True,
            "last_sync": None,
        }
    ]
    jobs = json.loads(calsync("jobs", "list", "--json", cwd=workdir).stdout)
    assert sorted(j["name"] for j in jobs) == ["ManagePushSubscriptions", "ProcessPushNotifications", "Reconciliation"]
    assert all(isinstance(j["interval_seconds"], int) for j in jobs)
    (token,) = json.loads(calsync("tokens", "list", "--json", cwd=workdir).stdout)
    assert token["name"] == "wall" and token["role"] == "viewer" and "hash" not in token
    config = json.loads(calsync("config", "check", "--json", cwd=workdir).stdout)
    assert config["settings"]["batch_size"] == 512
    assert config["settings"]["listener_secret"] == "********"  # secrets masked in JSON too
    assert config["problems"] == []


# --- 7. operators remove asks ---------------------------------------------------------------------------------------


def _stored(db: Database) -> list[str]:
    with db.read() as s:
        return list(s.scalars(select(Operator.email).order_by(Operator.email)))


def test_operators_remove_asks_first_and_says_what_goes(db_url: str) -> None:
    db = Database(db_url)
    try:
        ok("operators", "add", "ann@example.com")
        # no terminal and no answer: refused, with the way to do it
        text = fails("operators", "remove", "ann@example.com")
        assert "not removed" in text and "--yes" in text and "0 appointment(s)" in text
        assert _stored(db) == ["ann@example.com"]
        # answered no: nothing changes
        result = run_with_input(["operators", "remove", "ann@example.com"], "n\n")
        assert result.exit_code == 1 and "nothing removed" in output(result)
        assert _stored(db) == ["ann@example.com"]
        # answered yes, or --yes
        result = run_with_input(["operators", "remove", "ann@example.com"], "y\n")
        assert result.exit_code == 0 and "removed ann@example.com" in output(result)
        ok("operators", "add", "bob@example.com")
        assert "removed bob@example.com" in ok("operators", "remove", "bob@example.com", "--yes")
        assert _stored(db) == []
        assert "no operator" in fails("operators", "remove", "cyd@example.com")  # unknown: said before asking
    finally:
        db.dispose()


def run_with_input(args: list[str], answer: str) -> Any:
    from typer.testing import CliRunner

    from calsync.cli import app

    return CliRunner().invoke(app, args, input=answer)


# --- 8. CLI changes are audited -------------------------------------------------------------------------------------


def test_cli_changes_go_to_the_audit_log_with_the_system_user(db: Database) -> None:
    import getpass

    ok("operators", "add", "ann@example.com", "--name", "Ann")
    ok("operators", "enable", "ann@example.com")
    ok("operators", "disable", "ann@example.com")
    ok("jobs", "set-interval", "Reconciliation", "1200")
    ok("jobs", "disable", "Reconciliation")
    ok("jobs", "run", "ManagePushSubscriptions")
    ok("tokens", "create", "--role", "viewer", "--name", "wall")
    ok("tokens", "revoke", "1")
    ok("operators", "remove", "ann@example.com", "--yes")
    fails("jobs", "set-interval", "Reconciliation", "0")  # refused: not audited
    with db.read() as s:
        entries = audit.listing(s, limit=100)
    actor = f"cli ({getpass.getuser()})"
    seen = [(e.actor, e.action, e.target) for e in reversed(entries)]
    assert seen == [
        (actor, "operator.create", "ann@example.com"),
        (actor, "operator.enable", "ann@example.com"),
        (actor, "operator.disable", "ann@example.com"),
        (actor, "job.update", "Reconciliation"),
        (actor, "job.update", "Reconciliation"),
        (actor, "job.run", "ManagePushSubscriptions"),
        (actor, "token.create", "token 1"),
        (actor, "token.revoke", "token 1"),
        (actor, "operator.delete", "ann@example.com"),
    ]
    token_entries = [e for e in entries if e.action.startswith("token.")]
    assert all(e.detail == {"name": "wall", "role": "viewer"} for e in token_entries)  # never the token itself


# --- 9. smaller things ----------------------------------------------------------------------------------------------


def test_a_port_in_use_is_said_before_anything_claims_to_listen(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ok("init")
    monkeypatch.setenv("CALSYNC_PASSWORD", "secret")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        text = fails("serve", "--port", str(port), "--no-jobs")
    assert f"cannot listen on 127.0.0.1:{port}" in text and "Address already in use" in text
    assert "listening" not in text


def test_sync_says_a_failure_once(workdir: Path, monkeypatch: pytest.MonkeyPatch, emulator: Any) -> None:
    from .conftest import SERVICE_PASSWORD, SERVICE_USER

    ok("init")
    monkeypatch.setenv("CALSYNC_EXCHANGE_URL", emulator.url)
    monkeypatch.setenv("CALSYNC_USERNAME", SERVICE_USER)
    monkeypatch.setenv("CALSYNC_PASSWORD", SERVICE_PASSWORD)
    ok("operators", "add", "nobody@example.com", "--enable")
    result = calsync(
        "sync",
        "nobody@example.com",
        cwd=workdir,
        env={k: os.environ[k] for k in os.environ if k.startswith("CALSYNC_")},
    )
    assert result.returncode == 2
    said = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("syncing ")]
    assert len(said) == 1, result.stderr  # no stray "sync pass failed" warning before the real error
    assert said[0].startswith("error: the sync pass failed: mailbox_not_found: nobody@example.com is not a mailbox")


def test_help_shows_no_type_placeholders_and_describes_every_argument() -> None:
    from typer.main import get_command

    from calsync.cli import app

    root = get_command(app)

    def commands(group: Any, path: list[str]) -> list[tuple[list[str], Any]]:
        found = []
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                found += commands(command, [*path, name])
            else:
                found.append(([*path, name], command))
        return found

    for path, command in commands(root, []):
        text = ok(*path, "--help")
        assert "<bool>" not in text, (path, text)
        for param in command.params:
            if param.param_type_name == "argument":
                assert getattr(param, "help", None), f"calsync {' '.join(path)}: argument {param.name} has no help"


def test_read_commands_do_not_load_alembic_or_the_emulator_server(workdir: Path) -> None:
    # What made every command take about 1.6-2 s to start: the emulator's server imported by the CLI, and Alembic
    # run on each command although the schema was at its newest.
    assert calsync("init", cwd=workdir).returncode == 0
    probe = (
        "import sys\nfrom calsync.cli import main\nsys.argv = ['calsync', 'status']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('LOADED', 'alembic.command' in sys.modules, 'calsync.emulator.server' in sys.modules, file=sys.stderr)\n"
    )
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("CALSYNC_")}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=workdir, env=base, capture_output=True, text=True, timeout=60
    )
    assert "LOADED False False" in result.stderr, result.stderr


# --- 2. a subscription never heard from is not shown as "yes" ---------------------------------------------------


def test_status_says_not_yet_heard_from_with_its_age_and_warns_past_status_frequency(db: Database) -> None:
    import datetime as dt

    from calsync.store import operators as operator_store
    from calsync.store import subscriptions

    ok("operators", "add", "ann@example.com", "--enable")
    ok("operators", "add", "bob@example.com", "--enable")
    now = dt.datetime.now(dt.UTC)
    with db.transaction() as s:
        ann = operator_store.require(s, "ann@example.com")
        bob = operator_store.require(s, "bob@example.com")
        subscriptions.save(s, ann.id, "SUB-ANN", "WM0", 30, "http://x/ews/notifications/s", now=now)
        subscriptions.save(
            s, bob.id, "SUB-BOB", "WM0", 30, "http://x/ews/notifications/s", now=now - dt.timedelta(minutes=45)
        )
    text = ok("status")
    assert row(text, "ann@example.com")[3] == "not yet heard from (0 min)"
    assert row(text, "bob@example.com")[3] == "not yet heard from (45 min)"  # in yellow on a terminal
    records = {r["operator"]: r for r in json.loads(ok("status", "--json"))["operators"]}
    assert (records["ann@example.com"]["subscribed"], records["ann@example.com"]["subscription_age_minutes"]) == (
        "not_yet_heard",
        0,
    )
    assert (records["bob@example.com"]["subscribed"], records["bob@example.com"]["subscription_age_minutes"]) == (
        "silent",
        45,
    )

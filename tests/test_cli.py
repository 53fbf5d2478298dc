"""The ``calsync`` command line, driven for real (Typer's CliRunner) in a scratch directory, on SQLite.

Every command that takes bad input (invalid settings, a bad address, an unknown job, an out-of-range interval)
exits 2 with a message naming what is wrong and what is allowed, and changes nothing (invariant 7).
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from alembic.script import ScriptDirectory
from click.testing import Result
from sqlalchemy import select
from starlette.applications import Starlette
from typer.testing import CliRunner

from calsync import cli
from calsync.cli import app
from calsync.emulator import Emulator
from calsync.settings import CLASSIC_NAMES, load_settings
from calsync.store import inbox, operators, subscriptions, syncstate
from calsync.store.db import Database, alembic_config
from calsync.store.tables import AppointmentRow, JobRow, MailboxWork, Operator

from .conftest import SERVICE_PASSWORD, SERVICE_USER

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()  # the newest migration
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
ALL_VERSIONS = "Exchange2010, Exchange2013, Exchange2016, Exchange2019, Exchange365"
JOB_NAMES = "ProcessPushNotifications, ManagePushSubscriptions, Reconciliation"


@pytest.fixture(autouse=True)
def workdir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A scratch working directory; no CALSYNC_* or classic variable from the shell; wide, plain output."""
    classic = {name.lower() for name in CLASSIC_NAMES.values()}
    for key in list(os.environ):
        if key.upper().startswith("CALSYNC_") or key.lower() in classic:
            monkeypatch.delenv(key)
    for key in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("COLUMNS", "250")  # rich tables and messages on one line each
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def db_url(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{workdir / 'calsync.sqlite3'}"
    monkeypatch.setenv("CALSYNC_DATABASE_URL", url)
    return url


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def output(result: Result) -> str:
    """stdout and stderr, without colour codes."""
    return ANSI.sub("", result.output)


def flat(result: Result) -> str:
    """The output with every run of white space (line breaks included) as one space."""
    return " ".join(output(result).split())


def ok(*args: str) -> str:
    result = run(*args)
    assert result.exit_code == 0, (result.exit_code, output(result), result.exception)
    return output(result)


def fails(*args: str) -> str:
    """Run a command that must be refused with exit code 2 and a message; returns the flattened output."""
    result = run(*args)
    assert result.exit_code == 2, (result.exit_code, output(result), result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in output(result)
    return flat(result)


def row(text: str, first_cell: str) -> list[str]:
    """The cells of the table row that starts with ``first_cell``."""
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line)[1:-1]]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n{text}")


def has_row(text: str, first_cell: str) -> bool:
    try:
        row(text, first_cell)
    except AssertionError:
        return False
    return True


# --- init, db upgrade --------------------------------------------------------------------------------------------


def test_init_writes_a_private_settings_file_and_creates_the_database(workdir: Path) -> None:
    url = f"sqlite:///{workdir / 'data' / 'app.sqlite3'}"
    text = ok("init", "--database-url", url)
    path = workdir / "calsync.toml"
    assert "wrote calsync.toml" in text and "database ready" in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = tomllib.loads(path.read_text())
    secret = data["listener_secret"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{16,128}", secret) and len(secret) >= 40
    assert secret not in text  # the secret is written to the file, never printed
    assert data["database_url"] == url
    assert (workdir / "data" / "app.sqlite3").is_file()
    settings = load_settings()  # the file is valid settings, read from the working directory
    assert settings.listener_secret is not None and settings.listener_secret.get_secret_value() == secret
    assert settings.database_url == url
    assert Database(url).current_revision() == HEAD

    assert f"schema at revision {HEAD}" in ok("db", "upgrade")
    jobs = ok("jobs", "list")
    assert has_row(jobs, "ProcessPushNotifications") and has_row(jobs, "ManagePushSubscriptions")

    # A second init keeps the file (and so the secret); --force writes a new one, private again.
    assert "exists; keeping it" in ok("init")
    assert tomllib.loads(path.read_text())["listener_secret"] == secret
    path.chmod(0o644)
    ok("init", "--force", "--database-url", url)
    assert tomllib.loads(path.read_text())["listener_secret"] != secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_init_never_leaves_the_secret_readable_by_others(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # With a permissive umask and no chmod after the fact, the file must still be created private.
    monkeypatch.setattr(Path, "chmod", lambda self, mode, **kwargs: None)
    old = os.umask(0)
    try:
        ok("init", "--database-url", f"sqlite:///{workdir / 'calsync.sqlite3'}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((workdir / "calsync.toml").stat().st_mode) == 0o600


def test_init_with_config_option_and_database_from_the_environment(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{workdir / 'env.sqlite3'}"
    monkeypatch.setenv("CALSYNC_DATABASE_URL", url)
    (workdir / "etc").mkdir()
    config = workdir / "etc" / "site.toml"
    ok("--config", str(config), "init")
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert "database_url" not in tomllib.loads(config.read_text())
    assert not (workdir / "calsync.toml").exists()
    assert (workdir / "env.sqlite3").is_file()
    assert f"schema at revision {HEAD}" in ok("--config", str(config), "db", "upgrade")
    assert str(config) in flat(run("--config", str(config), "config", "check"))


def test_init_into_a_missing_directory_is_a_clear_error(workdir: Path) -> None:
    text = fails("--config", str(workdir / "no" / "such" / "dir.toml"), "init")
    assert "cannot write the settings file" in text and "No such file or directory" in text
    assert list(workdir.iterdir()) == []


# --- config check and invalid settings ---------------------------------------------------------------------------


def test_config_check_prints_the_settings_with_secrets_masked(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listener_secret = "Listener-Secret-0123456789abcdef"
    (workdir / "calsync.toml").write_text(f'listener_secret = "{listener_secret}"\nEWSBatchSize = 100\n')
    secrets = {
        "CALSYNC_PASSWORD": "Exchange-Pa55word!",
        "CALSYNC_SMTP_PASSWORD": "Smtp-Pa55word!",
        "CALSYNC_OAUTH_CLIENT_SECRET": "OAuth-Client-Secret!",
    }
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CALSYNC_SMTP_USERNAME", "mailer")
    monkeypatch.setenv("CALSYNC_DATABASE_URL", "postgresql+psycopg://calsync:Db-Pa55word@db.example.com/calsync")
    result = run("config", "check")
    text = output(result)
    assert result.exit_code == 0, text
    for secret in [listener_secret, "Db-Pa55word", *secrets.values()]:
        assert secret not in text
    assert row(text, "password")[1] == "********"
    assert row(text, "listener_secret")[1] == "********"
    assert row(text, "smtp_password")[1] == "********"
    assert row(text, "database_url")[1] == "postgresql+psycopg://calsync:********@db.example.com/calsync"
    assert row(text, "batch_size (EWSBatchSize)")[1] == "100"  # from the file, under its classic name
    assert row(text, "smtp_username")[1] == "mailer"
    assert "calsync.toml" in text


def test_config_check_reports_missing_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALSYNC_USERNAME", "")
    text = fails("config", "check")
    assert "credentials incomplete" in text
    assert "username: not set, but auth_type 'basic' requires it" in text


def test_config_check_shows_values_verbatim(monkeypatch: pytest.MonkeyPatch) -> None:
    # Values are printed as they are, even when they look like rich markup (an IPv6 literal, brackets).
    monkeypatch.setenv("CALSYNC_LISTENER_URL", "http://[fe80::1]:8080")
    monkeypatch.setenv("CALSYNC_SMTP_USERNAME", "[bold]mailer[/b]")
    monkeypatch.setenv("CALSYNC_SMTP_PASSWORD", "x")
    text = ok("config", "check")
    assert row(text, "listener_url (PushNotificationsListener)")[1] == "http://[fe80::1]:8080"
    assert row(text, "smtp_username")[1] == "[bold]mailer[/b]"


INVALID = [
    # environment variable, value, the same as a TOML line, the setting's label, the allowed values
    ("CALSYNC_BATCH_SIZE", "600", "batch_size = 600", "batch_size (EWSBatchSize)", "allowed: 1..512"),
    ("EWSBatchSize", "0", "EWSBatchSize = 0", "batch_size (EWSBatchSize)", "allowed: 1..512"),
    (
        "StatusFrequencyForEWSNotifications",
        "2000",
        "StatusFrequencyForEWSNotifications = 2000",
        "status_frequency (StatusFrequencyForEWSNotifications)",
        "allowed: 1..1440",
    ),
    (
        "NotifySyncFailureTo",
        "not-an-address",
        'NotifySyncFailureTo = "not-an-address"',
        "failure_recipients (NotifySyncFailureTo)",
        "allowed: e-mail addresses separated by ';'",
    ),
    (
        "PushNotificationsListener",
        "ftp://x",
        'PushNotificationsListener = "ftp://x"',
        "listener_url (PushNotificationsListener)",
        "allowed: an http:// or https:// base URL",
    ),
    (
        "ExchangeVersion",
        "Exchange2003",
        'ExchangeVersion = "Exchange2003"',
        "exchange_version (ExchangeVersion)",
        f"allowed: {ALL_VERSIONS}",
    ),
]


@pytest.fixture
def uvicorn_runs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """``serve`` without serving: uvicorn.run records its arguments and returns."""
    runs: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: runs.append({"app": app, **kwargs}))

    def bound(app: Any, sock: Any) -> None:  # serve binds its socket first, then hands it to uvicorn
        host, port = sock.getsockname()[:2]
        runs.append({"app": app, "host": host, "port": port})

    monkeypatch.setattr(cli, "_run_server", bound)
    monkeypatch.setattr(cli, "_logging", lambda level: None)  # keep pytest's log handlers
    return runs


@pytest.mark.parametrize("command", [("config", "check"), ("serve",)], ids=["config-check", "serve"])
@pytest.mark.parametrize("where", ["environment", "file"])
@pytest.mark.parametrize(
    ("env", "value", "toml", "label", "allowed"), INVALID, ids=[c[0] + "=" + c[1] for c in INVALID]
)
def test_invalid_settings_exit_2_naming_the_setting_and_the_allowed_values(
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
    uvicorn_runs: list[dict[str, Any]],
    command: tuple[str, ...],
    where: str,
    env: str,
    value: str,
    toml: str,
    label: str,
    allowed: str,
) -> None:
    secret = "Listener-Secret-0123456789abcdef"
    lines = [f'listener_secret = "{secret}"']
    if where == "environment":
        monkeypatch.setenv(env, value)
    else:
        lines.append(toml)
    (workdir / "calsync.toml").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("CALSYNC_DATABASE_URL", f"sqlite:///{workdir / 'calsync.sqlite3'}")
    text = fails(*command)
    assert "The settings are not valid" in text
    assert f"{label}: " in text and allowed in text
    assert secret not in text
    assert uvicorn_runs == []  # serve did not start
    assert not (workdir / "calsync.sqlite3").exists()  # nor touched the database


def test_serve_with_valid_settings_prepares_and_starts(
    workdir: Path, db_url: str, db: Database, uvicorn_runs: list[dict[str, Any]]
) -> None:
    ok("init")
    text = ok("serve", "--port", "8099", "--no-jobs")
    assert "calsync listening on http://127.0.0.1:8099" in text
    assert len(uvicorn_runs) == 1
    assert isinstance(uvicorn_runs[0]["app"], Starlette)
    assert uvicorn_runs[0]["port"] == 8099 and uvicorn_runs[0]["host"] == "127.0.0.1"
    assert db.current_revision() == HEAD


def test_serve_without_listener_secret_does_not_start(db_url: str, uvicorn_runs: list[dict[str, Any]]) -> None:
    text = fails("serve")
    assert "listener_secret is not set" in text and "calsync init" in text
    assert uvicorn_runs == []


def test_serve_requires_credentials(monkeypatch: pytest.MonkeyPatch, uvicorn_runs: list[dict[str, Any]]) -> None:
    monkeypatch.setenv("CALSYNC_LISTENER_SECRET", "Listener-Secret-0123456789abcdef")
    monkeypatch.setenv("CALSYNC_PASSWORD", "")
    text = fails("serve")
    assert "password: not set, but auth_type 'basic' requires it" in text
    assert uvicorn_runs == []


# --- operators -------------------------------------------------------------------------------------------------


def operator_rows(db: Database) -> list[tuple[str, str | None, bool]]:
    with db.read() as s:
        return [(o.email, o.display_name, o.sync_enabled) for o in s.scalars(select(Operator).order_by(Operator.email))]


def test_operators_add_list_enable_disable_remove(db: Database) -> None:
    assert "added ann@example.com (source ews, sync off)" in ok(
        "operators", "add", "Ann@Example.com", "--name", "Ann Smith"
    )
    assert "added bob@example.com (source ews, sync on)" in ok("operators", "add", "bob@example.com", "--enable")
    assert operator_rows(db) == [("ann@example.com", "Ann Smith", False), ("bob@example.com", None, True)]
    # Adding an operator asks ManagePushSubscriptions to run (it subscribes and starts the initial sync).
    assert row(ok("jobs", "list"), "ManagePushSubscriptions")[-1] == "now (requested)"

    listing = ok("operators", "list")
    assert row(listing, "ann@example.com")[1:4] == ["Ann Smith", "ews", "off"]
    assert row(listing, "bob@example.com")[1:4] == ["-", "ews", "on"]
    enabled = ok("operators", "list", "--enabled")
    assert has_row(enabled, "bob@example.com") and not has_row(enabled, "ann@example.com")
    disabled = ok("operators", "list", "--disabled")
    assert has_row(disabled, "ann@example.com") and not has_row(disabled, "bob@example.com")

    assert "sync on for ann@example.com" in ok("operators", "enable", "ANN@example.com")
    assert "sync off for bob@example.com" in ok("operators", "disable", "bob@example.com")
    assert operator_rows(db) == [("ann@example.com", "Ann Smith", True), ("bob@example.com", None, False)]

    assert "removed ann@example.com" in ok("operators", "remove", "ann@example.com", "--yes")
    assert operator_rows(db) == [("bob@example.com", None, False)]
    assert not has_row(ok("operators", "list"), "ann@example.com")


def test_operators_bad_input_exits_2_and_changes_nothing(db: Database) -> None:
    ok("operators", "add", "ann@example.com", "--name", "Ann")
    before = operator_rows(db)

    text = fails("operators", "add", "not-an-address")
    assert "'not-an-address' is not an e-mail address (expected name@domain.tld)" in text
    text = fails("operators", "add", "ANN@example.com", "--enable")
    assert "operator 'ann@example.com' exists already" in text
    for command in ("enable", "disable", "remove"):
        text = fails("operators", command, "nobody@example.com")
        assert "no operator 'nobody@example.com'" in text and "calsync operators add nobody@example.com" in text
        assert "is not an e-mail address" in fails("operators", command, "ann at example.com")
    # Input that looks like rich markup is shown as it is, not interpreted (and does not crash the command).
    assert "'[/x]' is not an e-mail address" in fails("operators", "add", "[/x]")
    assert operator_rows(db) == before


GRAPH_ENV = {
    "CALSYNC_GRAPH_TENANT_ID": "contoso.onmicrosoft.com",
    "CALSYNC_GRAPH_CLIENT_ID": "5f1c2a9e-0000-4000-8000-00000000c0de",
    "CALSYNC_GRAPH_CLIENT_SECRET": "graph-app-secret~42",
}


def operator_sources(db: Database) -> dict[str, tuple[str, str | None]]:
    with db.read() as s:
        moving = syncstate.moving(s)
        return {o.email: (o.source, moving.get(o.id)) for o in s.scalars(select(Operator))}


def test_operators_on_graph_and_the_move_between_sources(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    ok("operators", "add", "ann@example.com", "--enable")
    # no Graph connection yet: neither adding nor moving to Graph is accepted, and nothing changes
    text = fails("operators", "add", "cyd@example.com", "--source", "graph")
    assert "this deployment has no Graph connection" in text and "graph_client_id" in text
    assert "no Graph connection" in fails("operators", "move", "ann@example.com", "--to", "graph")
    assert "'imap' is not a source; allowed: ews, graph" in fails(
        "operators", "add", "cyd@example.com", "--source", "imap"
    )
    assert operator_sources(db) == {"ann@example.com": ("ews", None)}

    for key, value in GRAPH_ENV.items():
        monkeypatch.setenv(key, value)
    assert "(source graph, sync on)" in ok("operators", "add", "bob@example.com", "--source", "graph", "--enable")
    assert "(source ews" in ok("operators", "add", "cyd@example.com")  # Graph beside EWS: EWS stays the default
    monkeypatch.setenv("CALSYNC_EXCHANGE_VERSION", "Exchange365")  # ExchangeVersion=Exchange365 + Graph: Graph
    assert "(source graph" in ok("operators", "add", "dan@example.com")

    assert "moving ann@example.com to graph" in ok("operators", "move", "ANN@example.com", "--to", "graph")
    assert operator_sources(db)["ann@example.com"] == ("graph", "ews")
    assert row(ok("operators", "list"), "ann@example.com")[2] == "graph (moving from ews)"
    with db.read() as s:
        work_row = s.get(MailboxWork, operators.require(s, "ann@example.com").id)
        assert work_row is not None and work_row.full_sync  # the next pass reads the whole window anew
    assert "already uses the graph source" in fails("operators", "move", "ann@example.com", "--to", "graph")
    assert "no operator 'zed@example.com'" in fails("operators", "move", "zed@example.com", "--to", "ews")
    status = ok("status")
    assert row(status, "ann@example.com")[1] == "graph (moving from ews)"


def test_operators_display_names_are_shown_verbatim(db: Database) -> None:
    ok("operators", "add", "carl@example.com", "--name", "[bold]Carl[/bold] [/x]")
    assert row(ok("operators", "list"), "carl@example.com")[1] == "[bold]Carl[/bold] [/x]"


# --- jobs ------------------------------------------------------------------------------------------------------


def job_rows(db: Database) -> dict[str, tuple[bool, int, bool]]:
    with db.read() as s:
        return {j.name: (j.enabled, j.interval_seconds, j.run_requested) for j in s.scalars(select(JobRow))}


def test_jobs_list_disable_enable_set_interval_run(db: Database) -> None:
    listing = ok("jobs", "list")
    assert row(listing, "ProcessPushNotifications")[1:3] == ["yes", "60 s"]
    assert row(listing, "ManagePushSubscriptions")[1:3] == ["yes", "300 s"]

    assert "ProcessPushNotifications disabled" in ok("jobs", "disable", "ProcessPushNotifications")
    assert row(ok("jobs", "list"), "ProcessPushNotifications")[1] == "no"
    assert job_rows(db)["ProcessPushNotifications"][0] is False
    assert "ProcessPushNotifications enabled" in ok("jobs", "enable", "processpushnotifications")
    assert job_rows(db)["ProcessPushNotifications"][0] is True

    assert "ManagePushSubscriptions runs every 120 s" in ok("jobs", "set-interval", "ManagePushSubscriptions", "120")
    assert "ProcessPushNotifications runs every 1 s" in ok("jobs", "set-interval", "ProcessPushNotifications", "1")
    assert "runs every 86400 s" in ok("jobs", "set-interval", "ProcessPushNotifications", "86400")
    assert row(ok("jobs", "list"), "ManagePushSubscriptions")[2] == "120 s"

    assert "ManagePushSubscriptions will run now" in ok("jobs", "run", "ManagePushSubscriptions")
    assert row(ok("jobs", "list"), "ManagePushSubscriptions")[-1] == "now (requested)"
    assert job_rows(db) == {
        "ProcessPushNotifications": (True, 86400, False),
        "ManagePushSubscriptions": (True, 120, True),
        "Reconciliation": (True, 900, False),
    }


def test_jobs_bad_input_exits_2_with_the_allowed_values_and_changes_nothing(db: Database) -> None:
    ok("jobs", "list")
    before = job_rows(db)
    for args in (("enable", "Nope"), ("disable", "Nope"), ("run", "Nope"), ("set-interval", "Nope", "60")):
        text = fails("jobs", *args)
        assert f"no job 'Nope'; jobs are: {JOB_NAMES}" in text, args
    for seconds in ("0", "100000", "86401"):
        text = fails("jobs", "set-interval", "ProcessPushNotifications", seconds)
        assert f"interval {seconds} s is out of range; allowed: 1..86400 seconds" in text
    assert "Invalid value for 'SECONDS'" in fails("jobs", "set-interval", "ProcessPushNotifications", "often")
    assert job_rows(db) == before


# --- status ----------------------------------------------------------------------------------------------------


def test_status_prints_a_row_per_operator(db: Database) -> None:
    text = ok("status")
    assert "calsync status" in text and not has_row(text, "ann@example.com")

    ok("operators", "add", "ann@example.com", "--enable")
    ok("operators", "add", "bob@example.com")
    with db.transaction() as s:
        ann = s.scalar(select(Operator).where(Operator.email == "ann@example.com"))
        assert ann is not None
        subscriptions.save(s, ann.id, "SUB-ANN", "WM0", 30, "http://127.0.0.1:8080/ews/notifications/x")
        inbox.record(s, ann.id, "SUB-ANN", [inbox.InboxEvent("CreatedEvent", "ITEM-1", "WM1")], "WM1")
    text = ok("status")
    ann_row, bob_row = row(text, "ann@example.com"), row(text, "bob@example.com")
    assert ann_row[1:5] == ["ews", "on", "yes", "none yet"]  # a push came (an event), no heartbeat yet
    assert ann_row[5] == "initial sync pending"
    assert ann_row[6] == "1 (pass due)"
    assert ann_row[7:] == ["0", "-", "-"]  # appointments, last error, open incident
    assert bob_row[1:4] == ["ews", "off", "no"]
    assert bob_row[4] == "-" and bob_row[6] == "0"


# --- sync against the emulator -----------------------------------------------------------------------------------

SYNCED = re.compile(
    r"(?P<email>\S+): (?P<written>\d+) written, (?P<deleted>\d+) deleted, (?P<skipped>\d+) older than the window "
    r"skipped, (?P<pages>\d+) page\(s\), (?P<requests>\d+) request\(s\), [0-9.]+ s"
)


@pytest.fixture
def exchange(emulator: Emulator, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    emulator.add_mailbox("pop@example.com", populate_count=40, seed=1)
    monkeypatch.setenv("CALSYNC_EXCHANGE_URL", emulator.url)
    monkeypatch.setenv("CALSYNC_USERNAME", SERVICE_USER)
    monkeypatch.setenv("CALSYNC_PASSWORD", SERVICE_PASSWORD)
    monkeypatch.setenv("CALSYNC_BATCH_SIZE", "16")
    return emulator


def sync_counts(text: str) -> dict[str, int]:
    match = SYNCED.search(" ".join(text.split()))
    assert match is not None, text
    assert match["email"] == "pop@example.com"
    return {k: int(v) for k, v in match.groupdict().items() if k != "email"}


def appointments(db: Database) -> set[str]:
    with db.read() as s:
        return set(s.scalars(select(AppointmentRow.item_id)))


def test_sync_writes_appointments_and_prints_the_counts(exchange: Emulator, db: Database) -> None:
    ok("operators", "add", "pop@example.com", "--enable")
    text = ok("sync", "pop@example.com")
    assert SERVICE_PASSWORD not in text
    counts = sync_counts(text)
    items = {i.item_id for i in exchange.outlook("pop@example.com").items()}
    stored = appointments(db)
    assert counts["written"] == len(stored) > 0
    assert stored <= items
    assert counts["written"] + counts["skipped"] == len(items)  # every item is written or is older than the window
    assert counts["deleted"] == 0
    assert counts["pages"] >= 3  # 40 items in batches of 16
    assert counts["requests"] >= counts["pages"]

    status = row(ok("status"), "pop@example.com")
    assert status[5] != "initial sync pending" and status[7] == str(len(stored)) and status[8] == "-"

    # The next pass reads only what changed since.
    assert sync_counts(ok("sync", "pop@example.com"))["written"] == 0
    created = exchange.outlook("pop@example.com").create({"subject": "new", "start": "2030-01-07T09:00:00Z"})
    again = sync_counts(ok("sync", "pop@example.com"))
    assert again["written"] == 1 and again["deleted"] == 0
    assert appointments(db) == stored | {created.item_id}
    exchange.outlook("pop@example.com").delete(created.item_id)
    assert sync_counts(ok("sync", "pop@example.com"))["deleted"] == 1
    assert appointments(db) == stored


def test_sync_refuses_disabled_unknown_and_bad_operators(exchange: Emulator, db: Database) -> None:
    ok("operators", "add", "pop@example.com")
    text = fails("sync", "pop@example.com")
    assert "sync is disabled for pop@example.com" in text and "calsync operators enable pop@example.com" in text
    text = fails("sync", "nobody@example.com")
    assert "no operator 'nobody@example.com'" in text
    assert "is not an e-mail address" in fails("sync", "not-an-address")
    assert appointments(db) == set()
    assert exchange.exchange.subscriptions == {}


def test_sync_failure_exits_2_with_the_reason_and_the_next_sync_works(
    exchange: Emulator, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok("operators", "add", "pop@example.com", "--enable")
    monkeypatch.setenv("CALSYNC_PASSWORD", "wrong-password")
    text = fails("sync", "pop@example.com")
    assert "the sync pass failed:" in text
    assert "wrong-password" not in text
    assert appointments(db) == set()
    assert row(ok("status"), "pop@example.com")[8] != "-"  # the error is recorded for the operator
    monkeypatch.setenv("CALSYNC_PASSWORD", SERVICE_PASSWORD)
    assert sync_counts(ok("sync", "pop@example.com"))["written"] > 0  # the failed pass left no lease behind
    assert row(ok("status"), "pop@example.com")[8] == "-"


def test_sync_requires_credentials(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    ok("operators", "add", "pop@example.com", "--enable")
    monkeypatch.setenv("CALSYNC_USERNAME", "")
    text = fails("sync", "pop@example.com")
    assert "username: not set, but auth_type 'basic' requires it" in text


# --- the emulator command ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--exchange-version", "Exchange2003"),
            f"--exchange-version 'Exchange2003' is unknown; allowed: {ALL_VERSIONS}",
        ),
        (("--port", "0"), "--port must be from 1 to 65535"),
        (("--clock-speed", "0"), "--clock-speed must be greater than 0"),
        (("--account", "svc"), "--account 'svc' must be USER:PASSWORD"),
    ],
)
def test_emulator_refuses_bad_options(uvicorn_runs: list[dict[str, Any]], args: tuple[str, ...], message: str) -> None:
    assert message in fails("emulator", *args)
    assert uvicorn_runs == []

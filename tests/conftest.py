"""Shared fixtures: where the EWS reference material is, a strict in-process emulator, exchangelib accounts."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from calsync.emulator import Emulator

REFERENCE_ENV = "CALSYNC_EWS_REFERENCE"


def reference_dir() -> Path:
    override = os.environ.get(REFERENCE_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[1].parent / "shared" / "ews"


SCHEMA_DIR = reference_dir() / "schema"
SAMPLES_DIR = reference_dir() / "samples"
SERVICE_USER, SERVICE_PASSWORD = "svc-calsync", "S3cret!pw"


@pytest.fixture(scope="session")
def schema_dir() -> Path:
    if not (SCHEMA_DIR / "messages.xsd").is_file():
        pytest.skip(f"EWS schemas not found at {SCHEMA_DIR} (set {REFERENCE_ENV})")
    return SCHEMA_DIR


def start_emulator(schema_dir: Path, **kwargs: object) -> Emulator:
    kwargs.setdefault("accounts", {SERVICE_USER: SERVICE_PASSWORD})
    kwargs.setdefault("mailboxes", ["ann@example.com", "bob@example.com", "cyd@example.com"])
    return Emulator(strict_schema_dir=schema_dir, **kwargs).start()  # type: ignore[arg-type]


@pytest.fixture
def emulator_factory(schema_dir: Path) -> Iterator[Callable[..., Emulator]]:
    """Start strict emulators; each must have sent only schema-valid documents when the test ends."""
    started: list[Emulator] = []

    def make(**kwargs: object) -> Emulator:
        emu = start_emulator(schema_dir, **kwargs)
        started.append(emu)
        return emu

    yield make
    for emu in started:
        emu.stop()
    for emu in started:
        assert emu.violations == [], emu.violations[:2]


@pytest.fixture
def emulator(emulator_factory: Callable[..., Emulator]) -> Emulator:
    return emulator_factory()


def ews_account(
    emu: Emulator,
    address: str,
    *,
    user: str = SERVICE_USER,
    password: str = SERVICE_PASSWORD,
    build: tuple[int, ...] | None = (15, 1, 2507, 6),
):
    from exchangelib import BASIC, IMPERSONATION, Account, Build, Configuration, Credentials, Version
    from exchangelib.protocol import BaseProtocol

    BaseProtocol.USERAGENT = "calsync-tests"
    version = Version(Build(*build)) if build else None
    config = Configuration(
        service_endpoint=emu.url,
        credentials=Credentials(user, password),
        auth_type=BASIC,
        version=version,
        max_connections=4,
    )
    return Account(address, config=config, autodiscover=False, access_type=IMPERSONATION)


def save_item(account, subject: str, start, minutes: int = 60, **fields):
    """A calendar item saved through exchangelib (no invitations sent), ``minutes`` long."""
    import datetime as dt

    from exchangelib import CalendarItem

    item = CalendarItem(
        account=account,
        folder=account.calendar,
        subject=subject,
        start=start,
        end=start + dt.timedelta(minutes=minutes),
        **fields,
    )
    item.save(send_meeting_invitations="SendToNone")
    return item


@pytest.fixture
def account(emulator: Emulator):
    acc = ews_account(emulator, "ann@example.com")
    yield acc
    acc.protocol.close()


# --- databases ------------------------------------------------------------------------------------
# Tests that take `database_url` run on SQLite and on PostgreSQL. PostgreSQL comes from
# CALSYNC_TEST_POSTGRES (default: the local server with trust auth); each test gets a schema of its own.

POSTGRES_ENV = "CALSYNC_TEST_POSTGRES"
POSTGRES_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _postgres_available(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'calsync.sqlite3'}"
        return
    base = os.environ.get(POSTGRES_ENV, POSTGRES_DEFAULT)
    if not _postgres_available(base):
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {base} (set {POSTGRES_ENV})")
        pytest.skip(f"PostgreSQL is not reachable at {base} (set {POSTGRES_ENV})")
    import uuid

    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    plain = base.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in base else "?"
    yield f"{base}{separator}options=-csearch_path%3D{schema}"
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


# --- the browser tests ----------------------------------------------------------------------------
# tests/test_admin_browser.py drives Debian's chromium. Without it those tests are skipped with this reason, and
# the end of pytest's output says so, with the line that installs it (a skip alone is easy to overlook).

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_MISSING = (
    'chromium not found at {path}: install it with "apt-get install chromium" (Debian) to run the browser tests'
)


def chromium_missing(path: str = CHROMIUM) -> str | None:
    """Why the browser tests cannot run: None when ``path`` is an executable file, else the skip reason."""
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return None
    return CHROMIUM_MISSING.format(path=path)


def browser_skip_notice(reasons: Iterable[str]) -> str | None:
    """The warning for the end of the run, given the reasons of the tests that were skipped: None unless some
    were skipped because chromium is missing."""
    prefix = CHROMIUM_MISSING.split("{path}")[0]
    missing = [r for r in reasons if r.startswith(prefix)]
    if not missing:
        return None
    return f"{len(missing)} browser test(s) did not run: {missing[0]}"


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    notice = browser_skip_notice(_skip_reason(r) for r in terminalreporter.stats.get("skipped", []))
    if notice is not None:
        terminalreporter.write_sep("!", "browser tests skipped", yellow=True, bold=True)
        terminalreporter.write_line(notice, yellow=True, bold=True)

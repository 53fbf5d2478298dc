"""Connecting to the database: SQLite (one file, the embedded default) or PostgreSQL (shared by many
processes and machines), sessions with the right transaction behaviour for each, schema upgrades through
Alembic, and cross-process wake-ups (PostgreSQL NOTIFY; SQLite has one process, woken directly).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger("calsync.store")

MIGRATIONS = Path(__file__).parent / "migrations"
WAKE_CHANNEL = "calsync_wake"
# The newest migration: migrations are named NNNN_what.py with revision "NNNN" (tests/test_store.py checks this
# against Alembic's own idea of the head), so finding it needs no Alembic.
HEAD_REVISION = max(path.name[:4] for path in (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))
UPGRADE_LOCK = 0x63616C73796E63  # "calsync": the advisory lock schema upgrades take on PostgreSQL


def normalise_url(url: str) -> URL:
    """``postgresql://`` means psycopg 3 here (the driver calsync depends on)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


WriterConnection = Connection  # what Database.writer_connection hands out (its holder needs to know no more)
Transaction = Session  # what Database.transaction() and read() yield, for code outside the store to name it


T = TypeVar("T")
DEADLOCK = "40P01"  # PostgreSQL's deadlock_detected


class DatabaseUnavailable(Exception):
    """The database cannot be used: there is none at that place, or it cannot be reached. The message is one line
    that says what, where, and what to do."""


INVALID_CATALOG_NAME = "3D000"  # PostgreSQL: the database does not exist


class Database:
    """One database. ``create=False`` refuses to make one that does not exist (a SQLite file that is not there
    raises :class:`DatabaseUnavailable` at once, naming where it looked); only the commands that set a deployment
    up pass ``create=True``. A new SQLite file is made readable by its owner only, like the settings file."""

    def __init__(self, url: str, *, echo: bool = False, create: bool = True) -> None:
        self.url = normalise_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.is_postgres = self.url.get_backend_name() == "postgresql"
        if not (self.is_sqlite or self.is_postgres):
            raise ValueError(f"database URL '{self.url.render_as_string()}': only sqlite and postgresql are supported")
        kwargs: dict[str, Any] = {"echo": echo, "pool_pre_ping": True}
        if self.is_sqlite:
            database = self.url.database or ""
            if database and database != ":memory:":
                _sqlite_file(Path(database).expanduser(), create)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(pool_size=10, max_overflow=20)
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.is_sqlite:
            _sqlite_setup(self.engine)
        # Writers take SQLite's write lock at BEGIN (BEGIN IMMEDIATE), so two writers never deadlock
        # half-way through; readers stay deferred and never block in WAL mode.
        self._write_engine = self.engine.execution_options(calsync_write=True)
        self._sessions = sessionmaker(bind=self.engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(bind=self._write_engine, expire_on_commit=False)

    @contextmanager
    def transaction(self, connection: WriterConnection | None = None) -> Iterator[Session]:
        """A read-write transaction: committed when the block ends, rolled back if it raises. It runs on
        ``connection`` when given (one from :meth:`writer_connection`), else on a connection from the pool."""
        sessions = self._write_sessions if connection is None else partial(self._write_sessions, bind=connection)
        with sessions() as session, session.begin():
            yield session

    def retrying(self, work: Callable[[Session], T], attempts: int = 3) -> T:
        """``work`` in a :meth:`transaction`, run again (up to ``attempts`` times) when PostgreSQL picked it as
        the victim of a deadlock (SQLSTATE 40P01): rows locked in opposite orders by two transactions that each
        do nothing wrong (see ``store/inbox.py``), so trying again is all there is to do."""
        for attempt in range(1, attempts + 1):
            try:
                with self.transaction() as session:
                    return work(session)
            except OperationalError as exc:
                if getattr(exc.orig, "sqlstate", None) != DEADLOCK or attempt == attempts:
                    raise
                log.info("deadlock; the transaction runs again", extra={"attempt": attempt})
        raise AssertionError("unreachable")

    def writer_connection(self) -> WriterConnection:
        """A write connection for one thread that runs many short transactions in a row (the listener's writer):
        taken from the pool once, so its transactions skip the pool's checkout and liveness ping (a round trip
        on PostgreSQL). The caller closes it, and after an error takes a new one."""
        return self._write_engine.connect()

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    def wake(self, session: Session) -> None:
        """Tell other processes (at commit) that a mailbox became dirty."""
        if self.is_postgres:
            session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": WAKE_CHANNEL})

    def listen_for_wakes(self, stop: threading.Event, on_wake: Callable[[], None]) -> None:
        """Call ``on_wake`` whenever another process calls :meth:`wake` (PostgreSQL LISTEN), until ``stop`` is
        set; a lost connection is made again. Returns at once on SQLite (one process, woken directly)."""
        if not self.is_postgres:
            return
        import psycopg

        dsn = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not stop.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {WAKE_CHANNEL}")
                    while not stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            on_wake()
            except Exception:
                log.warning("LISTEN connection lost; reconnecting", exc_info=True)
                stop.wait(2.0)

    def upgrade(self) -> None:
        """Bring the schema to the newest migration. Nodes starting together take turns: the first migrates,
        the others then find the schema at head (PostgreSQL: an advisory lock; SQLite: BEGIN IMMEDIATE)."""
        from alembic import command

        with self._write_engine.begin() as connection:
            if self.is_postgres:
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": UPGRADE_LOCK})
            command.upgrade(alembic_config(connection), "head")

    def where(self) -> str:
        """Where the database is, for messages: the SQLite file's absolute path, or PostgreSQL's host, port and
        database (never the password)."""
        if self.is_sqlite:
            database = self.url.database or ":memory:"
            return database if database == ":memory:" else str(Path(database).expanduser().absolute())
        return f"PostgreSQL database '{self.url.database}' on {self.url.host or 'localhost'}:{self.url.port or 5432}"

    def check(self) -> None:
        """Connect once; raise :class:`DatabaseUnavailable` with one line (what, where, the fix) if that fails."""
        try:
            with self.engine.connect():
                pass
        except OperationalError as exc:
            raise DatabaseUnavailable(self._explain(exc)) from None

    def create_if_missing(self) -> bool:
        """PostgreSQL: create the database when the server has none of that name (connecting to the server's
        ``postgres`` database to do it). True when it was created. SQLite files are created by the constructor."""
        if not self.is_postgres:
            return False
        try:
            self.check()
            return False
        except DatabaseUnavailable:
            if not self._database_missing():
                raise
        import psycopg
        from psycopg import sql

        name = self.url.database or ""
        dsn = self.url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise DatabaseUnavailable(
                f"the {self.where()} does not exist and could not be created ({_first_line(exc)}): create it "
                f"(createdb {name}) or give calsync's role the CREATEDB right"
            ) from None
        log.info("database created", extra={"database": name})
        return True

    def _database_missing(self) -> bool:
        try:
            with self.engine.connect():
                return False
        except OperationalError as exc:
            return getattr(exc.orig, "sqlstate", None) == INVALID_CATALOG_NAME or "does not exist" in str(exc.orig)

    def _explain(self, exc: OperationalError) -> str:
        reason = _first_line(exc.orig)
        if self.is_postgres and (
            getattr(exc.orig, "sqlstate", None) == INVALID_CATALOG_NAME or "does not exist" in reason
        ):
            return (
                f"the {self.where()} does not exist: `calsync init` (or `calsync db upgrade`) creates it, or check "
                "database_url"
            )
        if self.is_postgres:
            return (
                f"cannot reach the {self.where()}: {reason}; check that PostgreSQL runs there and that database_url "
                "(CALSYNC_DATABASE_URL) is right"
            )
        return f"cannot open the SQLite database {self.where()}: {reason}"

    def ensure_schema(self) -> None:
        """:meth:`upgrade` when the schema is not at :data:`HEAD_REVISION` (one query when it is: a command that
        only reads does not load Alembic)."""
        if self.schema_revision() != HEAD_REVISION:
            self.upgrade()

    def schema_revision(self) -> str | None:
        """The schema's revision, read with one query (None for a database without calsync's tables)."""
        from sqlalchemy import inspect

        with self.engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(connection: Any = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _first_line(exc: BaseException | None) -> str:
    text_ = str(exc or "").strip()
    return text_.splitlines()[0] if text_ else type(exc).__name__


def _sqlite_file(path: Path, create: bool) -> None:
    """The SQLite file: it must exist unless ``create``; a new one (and its folder) is its owner's alone."""
    if path.exists():
        return
    where = path.absolute()
    if not create:
        hint = "" if path.is_absolute() else f" (database_url is relative to the working directory, {Path.cwd()})"
        raise DatabaseUnavailable(
            f"there is no calsync database at {where}{hint}: run `calsync init` to make one there, or point "
            "database_url (CALSYNC_DATABASE_URL, or -c FILE) at the existing database"
        )
    try:
        where.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(where, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise DatabaseUnavailable(f"cannot create the SQLite database {where}: {exc.strerror}") from None


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy's "begin" event say how to begin
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection: Any) -> None:
        write = connection.get_execution_options().get("calsync_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

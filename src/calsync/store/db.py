"""Connecting to the database: SQLite (one file, the embedded default) or PostgreSQL (shared by many
processes and machines), sessions with the right transaction behaviour for each, schema upgrades through
Alembic, and cross-process wake-ups (PostgreSQL NOTIFY; SQLite has one process, woken directly).
"""

from __future__ import annotations

import logging
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


class Database:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = normalise_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.is_postgres = self.url.get_backend_name() == "postgresql"
        if not (self.is_sqlite or self.is_postgres):
            raise ValueError(f"database URL '{self.url.render_as_string()}': only sqlite and postgresql are supported")
        kwargs: dict[str, Any] = {"echo": echo, "pool_pre_ping": True}
        if self.is_sqlite:
            database = self.url.database or ""
            if database and database != ":memory:":
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
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

"""Putting calsync together: the database, the source, the listener, the calendar API and the jobs.

``calsync serve`` runs everything in one process (the embedded default); ``calsync worker`` runs only the
jobs. Across processes, a notification stored by one process wakes the processors of the others through
PostgreSQL LISTEN/NOTIFY; within a process the listener wakes the processor directly.

Settings changed at run time (``calsync.store.overrides``, written by the admin API) are applied by every
runtime within a scheduler tick: :meth:`Runtime.refresh_settings` rebuilds ``runtime.settings`` from the
start-up settings and the overrides, validated as at start-up.

Every runtime has a failure tracker (``calsync.alerts``): the processor and ManagePushSubscriptions report
failures and successes to it, and its dispatcher thread sends the failure e-mails and recovery notices
(every node runs one; the database keeps each e-mail single).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

from starlette.applications import Starlette

from calsync import logs
from calsync.admin.pages import routes as admin_pages
from calsync.alerts.catalogue import CATALOGUE
from calsync.alerts.mailer import Mailer
from calsync.alerts.tracker import FailureTracker
from calsync.api import health
from calsync.api.app import build as build_api
from calsync.api.context import AdminContext
from calsync.jobs.intervals import job_intervals
from calsync.jobs.manage_subscriptions import manage
from calsync.jobs.process_notifications import NotificationProcessor, ProcessorSettings
from calsync.jobs.scheduler import Scheduler
from calsync.listener import reachability
from calsync.listener.app import Listener
from calsync.listener.reachability import Reachability
from calsync.metrics import Metrics
from calsync.settings import (
    Settings,
    SettingsError,
    api_tokens_of,
    listener_callback_url,
    listener_secrets,
    with_changes,
)
from calsync.sources.base import Source
from calsync.sources.registry import Sources, push_readers
from calsync.store import jobs as job_store
from calsync.store import listener_checks
from calsync.store import overrides as override_store
from calsync.store.db import Database

log = logging.getLogger("calsync")


def make_sources(settings: Settings) -> Sources:
    """The deployment's sources, each made when first used (a listener-only process never loads exchangelib)."""

    def ews() -> Source:
        from calsync.sources.ews import EwsSource

        oauth = None
        if settings.auth_type == "oauth":
            oauth = (
                settings.oauth_tenant_id or "",
                settings.oauth_client_id or "",
                _secret(settings.oauth_client_secret),
            )
        return EwsSource(
            settings.exchange_url,
            settings.username or "",
            _secret(settings.password),
            version=settings.exchange_version,
            auth_type=settings.auth_type,
            oauth=oauth,
        )

    def graph() -> Source:
        from calsync.sources.graph import GraphSource

        return GraphSource(
            endpoint=settings.graph_endpoint,
            authority=settings.graph_authority,
            tenant_id=settings.graph_tenant_id or "",
            client_id=settings.graph_client_id or "",
            client_secret=_secret(settings.graph_client_secret) or None,
            certificate=settings.graph_certificate,
            ca_file=settings.graph_ca_file,
            past_window_days=settings.past_window_days,
            future_days=settings.graph_future_days,
            subscription_minutes=settings.graph_subscription_minutes,
        )

    makers: dict[str, Callable[[], Source]] = {"ews": ews}
    if settings.graph_configured:
        makers["graph"] = graph
    return Sources(makers, default=settings.default_source)


def _secret(value: Any) -> str:
    return value.get_secret_value() if value is not None else ""


def secrets_of(settings: Settings) -> list[str]:
    """Every secret in the settings, to be kept out of e-mails and stored messages."""
    names = (
        "password",
        "oauth_client_secret",
        "graph_client_secret",
        "smtp_password",
        "listener_secret",
        "listener_previous_secret",
    )
    values = [getattr(settings, name, None) for name in names]
    found = [value.get_secret_value() for value in values if value is not None]
    if settings.api_tokens is not None:
        found += [token for _, token in api_tokens_of(settings.api_tokens.get_secret_value())]
    return found


def make_tracker(settings: Settings, db: Database, status_frequency: Callable[[], int] | None = None) -> FailureTracker:
    return FailureTracker(
        db,
        Mailer.from_settings(settings),
        status_frequency=status_frequency or (lambda: settings.status_frequency),
        secrets=secrets_of(settings),
    )


class Runtime:
    def __init__(
        self,
        settings: Settings,
        *,
        source: Source | Sources | None = None,
        threads: int = 4,
        db: Database | None = None,
        tracker: FailureTracker | None = None,
        check_listener_url: bool = True,
    ) -> None:
        self.settings = settings
        self.check_listener_url = check_listener_url  # serve checks the public listener URL when it starts
        self.startup_settings = settings  # what the file and environment say; runtime overrides apply on top
        self._applied_overrides: dict[str, Any] = {}
        self.db = db or Database(settings.database_url)
        logs.mask(secrets_of(settings))  # log lines never show a configured secret (calsync.logs)
        # this runtime's own registry (calsync.metrics), served at /metrics
        self.metrics = Metrics(self.db, error_codes=CATALOGUE)
        # The sources: the deployment's (one per protocol), or the one given (tests, tools) for every operator.
        if source is None:
            self.sources = make_sources(settings)
        else:
            self.sources = source if isinstance(source, Sources) else Sources.only(source)
        self.tracker = tracker or make_tracker(settings, self.db, lambda: self.settings.status_frequency)
        if self.tracker.metrics is None:
            self.tracker.metrics = self.metrics
        self.processor = NotificationProcessor(
            self.db,
            self.sources,
            lambda: ProcessorSettings(self.settings.batch_size, self.settings.past_window_days),
            threads=threads,
            tracker=self.tracker,
            metrics=self.metrics,
        )
        self.scheduler = Scheduler(
            self.db,
            wake_processor=self.processor.wake,
            manage=self.manage_subscriptions,
            reconcile_hours=lambda: self.settings.reconcile_interval_hours,
            on_tick=self.refresh_settings,
        )
        self.listener = Listener(
            self.db,
            self._secrets,
            on_dirty=self.processor.wake,
            readers=list(push_readers().values()),
            allowed_networks=settings.listener_allowed_networks,
            trust_forwarded_for=settings.listener_trust_forwarded_for,
            metrics=self.metrics,
        )
        self._pg_thread: threading.Thread | None = None
        self._pg_stop = threading.Event()
        self._checked_url: str | None = None  # the listener URL last checked (check_listener)
        self._closed = threading.Event()

    # --- setup ---------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Upgrade the schema (when it is behind) and create the job rows with the configured intervals."""
        self.db.ensure_schema()
        with self.db.transaction() as session:
            job_store.ensure(session, job_intervals(self.settings))

    def refresh_settings(self) -> None:
        """Apply the settings changed at run time (all nodes do this every scheduler tick)."""
        with self.db.read() as session:
            wanted = override_store.current(session)
        if wanted == self._applied_overrides:
            return
        try:
            changed = with_changes(self.startup_settings, wanted)
        except SettingsError as exc:  # stored overrides were valid when stored; a new file may disagree
            log.error("settings changed at run time cannot be applied", extra={"problems": exc.problems})
            self._applied_overrides = wanted
            return
        self.settings = changed
        self.tracker.mailer.recipients = tuple(changed.failure_recipients)
        self._applied_overrides = wanted
        if self._checked_url is not None and listener_callback_url(changed) != self._checked_url:
            self._check_listener_later()
        log.info("settings changed at run time applied", extra={"changed": sorted(wanted)})

    def check_listener(self, *, attempts: int = 3, pause: float = 2.0) -> Reachability:
        """Check that the listener URL comes back to this listener and store the result (see
        :mod:`calsync.listener.reachability`); a few attempts, since the server may still be starting."""
        url = listener_callback_url(self.settings)
        self._checked_url = url
        secret = self._secrets()[0]
        result = Reachability(False, "not checked")
        for attempt in range(attempts):
            result = reachability.check(url, secret)
            if result.ok:
                break
            if attempt + 1 < attempts:
                time.sleep(pause)
        with self.db.transaction() as session:
            listener_checks.record(session, url, result.ok, result.detail)
        safe_url = url.rsplit("/", 1)[0] + "/***"
        if result.ok:
            log.info("listener URL checked", extra={"url": safe_url})
        else:
            log.warning(
                "listener URL does not come back to this listener", extra={"url": safe_url, "detail": result.detail}
            )
        return result

    def _check_listener_later(self) -> None:
        def run() -> None:
            if self._closed.wait(1.0):  # let the server start accepting; nothing to do once closed
                return
            try:
                self.check_listener()
            except Exception:  # a check must never take serve down
                if not self._closed.is_set():
                    log.exception("the listener URL check failed")

        threading.Thread(target=run, name="calsync-listener-check", daemon=True).start()

    def _secrets(self) -> list[str]:
        return listener_secrets(self.settings)  # the current secret; during a rotation's grace also the previous one

    def manage_subscriptions(self) -> str:
        result = manage(
            self.db,
            self.sources,
            callback_url=lambda door: listener_callback_url(self.settings, door),
            status_frequency=self.settings.status_frequency,
            renew_before=timedelta(minutes=self.settings.graph_renew_before_minutes),
            tracker=self.tracker,
            on_dirty=self.processor.wake,
        )
        return result.summary()

    # --- jobs ----------------------------------------------------------------------------------

    def start_jobs(self) -> None:
        self.processor.start()
        self.scheduler.start()
        self.tracker.start()
        if self.db.is_postgres:
            self._pg_stop.clear()
            self._pg_thread = threading.Thread(target=self._listen_postgres, name="calsync-pg-listen", daemon=True)
            self._pg_thread.start()

    def jobs_running(self) -> bool:
        """Whether this process's jobs are alive: the processor's workers and the scheduler (for /readyz)."""
        return self.processor.alive() and self.scheduler.alive()

    def stop_jobs(self) -> None:
        self._pg_stop.set()
        self.scheduler.stop()
        self.processor.stop()
        self.tracker.stop()
        if self._pg_thread is not None:
            self._pg_thread.join(timeout=5)
            self._pg_thread = None

    def _listen_postgres(self) -> None:
        """Wake the processor whenever another process stores a notification (PostgreSQL NOTIFY)."""
        self.db.listen_for_wakes(self._pg_stop, self.processor.wake)

    # --- HTTP ----------------------------------------------------------------------------------

    def app(self, *, run_jobs: bool = True) -> Starlette:
        """The HTTP application: the listener, health and the admin pages first, then the API (admin and
        calendar, a FastAPI application with its OpenAPI document). Pushes are routed to the listener before
        FastAPI's own request handling, which would cost the hot path about a third of its throughput."""

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            if run_jobs:
                self.start_jobs()
            if self.check_listener_url and self.settings.listener_secret is not None:
                self._check_listener_later()
            try:
                yield
            finally:
                if run_jobs:
                    self.stop_jobs()
                self.listener.close()

        api = build_api(self.admin_context())
        health_routes = health.routes(self.db, self.metrics, self.jobs_running if run_jobs else None)
        app = Starlette(routes=[*self.listener.routes(), *health_routes, *admin_pages()], lifespan=lifespan)
        app.router.default = api  # everything else (not a Mount: its pattern would not match every path)
        return app

    def health_app(self, *, run_jobs: bool = True) -> Starlette:
        """Only /metrics, /healthz and /readyz (``calsync worker --metrics-port``); starts nothing."""
        return Starlette(routes=health.routes(self.db, self.metrics, self.jobs_running if run_jobs else None))

    def admin_context(self) -> AdminContext:
        return AdminContext(
            db=self.db,
            sources=self.sources,
            settings=lambda: self.settings,
            startup_settings=lambda: self.startup_settings,
            poke_scheduler=self.scheduler.poke,
            apply_settings=self.refresh_settings,
        )

    def close(self) -> None:
        self._closed.set()
        self.listener.close()
        self.sources.close()
        self.db.dispose()

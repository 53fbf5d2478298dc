"""Prometheus metrics: what calsync counts, the small calls the code makes to count it, and the collector
that reads the database's side (subscriptions, dirty mailboxes, ...) when Prometheus scrapes.

**One registry per runtime.** A :class:`Metrics` object owns its own :class:`~prometheus_client.CollectorRegistry`
with every metric in it; :class:`calsync.runtime.Runtime` creates one and hands it to the listener, the
processor and the failure tracker (each takes ``metrics=None`` by default: no metrics, as in ``calsync sync``
and most tests). ``/metrics`` serves that registry (``calsync.api.health``). The process-global default
registry is not used: tests (and the demo) create several runtimes in one process, and module-level counters
would both double-register the database collector of a second runtime and mix the counts of all of them.
With a registry per runtime, creating a second one registers nothing globally, and each ``/metrics`` shows
exactly its own runtime. The process and Python collectors (``process_*``, ``python_gc_*``, ``python_info``)
are added to each registry too; they read the process at scrape time, so they cost nothing in between.

**Counted where it happens** (counters and histograms, this process only since it started):

- ``calsync_notifications_received_total{kind}``: pushes the listener stored and answered OK; ``kind`` is
  ``event`` (item events: the mailbox became dirty) or ``status`` (a heartbeat only).
- ``calsync_notifications_refused_total{reason}``: requests the listener refused, by :data:`REFUSAL_REASONS`
  (answered with a 4xx or 429, or Unsubscribe for ``unknown_subscription`` / ``operator_disabled``).
- ``calsync_sync_passes_total{outcome}`` and ``calsync_sync_pass_duration_seconds{outcome}``: sync passes run by
  the processor, ``ok``, ``failed`` or ``lease_lost`` (another worker took the mailbox over).
- ``calsync_sync_latency_seconds``: from the receipt of the oldest notification a pass covered to the commit of
  that pass; passes that cover no notification (initial sync, catch-up, reconciliation) are not observed.
- ``calsync_errors_total{code}``: failures reported to the failure tracker, by catalogue code
  (``calsync.alerts.catalogue``): failed passes, failed subscribes, subscriptions found silent.

**Read from the database at scrape time** (:class:`DatabaseCollector`; the same for every node sharing the
database): ``calsync_subscriptions{state}`` (healthy / dying / missing, enabled operators only),
``calsync_dirty_mailboxes{state}`` (waiting / running / retrying), ``calsync_sync_lag_seconds`` (how long the
longest-waiting dirty mailbox has waited), ``calsync_notifications_pending``, ``calsync_operators_enabled``,
``calsync_incidents_open``, and ``calsync_database_up`` (0 when that read failed; the other gauges are then
left out of the scrape rather than shown as zeros).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import datetime

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from calsync.store import metrics as store_metrics
from calsync.store.db import Database
from calsync.store.tables import utcnow

log = logging.getLogger("calsync.metrics")

CONTENT_TYPE = CONTENT_TYPE_LATEST

PUSH_KINDS = ("event", "status")
REFUSAL_REASONS = (
    "not_allowed_network",  # 403: the source address is outside listener_allowed_networks
    "bad_secret",  # 404: the path secret is not one we accept
    "too_large",  # 413
    "unsupported_media_type",  # 415
    "malformed",  # 400: not a safe, well-formed SendNotification (or ids longer than the store keeps)
    "rate_limited",  # 429: the address used up its refusals
    "unknown_subscription",  # answered Unsubscribe: a subscription id we do not hold
    "operator_disabled",  # answered Unsubscribe: the subscription's operator is no longer enabled
    "other",  # any other refusal status
)
_REFUSAL_BY_STATUS = {
    403: "not_allowed_network",
    404: "bad_secret",
    413: "too_large",
    415: "unsupported_media_type",
    400: "malformed",
    429: "rate_limited",
}
PASS_OUTCOMES = ("ok", "failed", "lease_lost")

# Both histograms span 10 ms to 10 min: a pass of one page takes tens of milliseconds, a notification waits at
# least one pass, and more than a few minutes means retries or a backlog.
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def refusal_reason(status: int) -> str:
    """The ``reason`` label of a refusal answered with HTTP ``status``."""
    return _REFUSAL_BY_STATUS.get(status, "other")


class Metrics:
    """The metrics of one runtime, in a registry of their own (see the module docstring)."""

    def __init__(
        self, db: Database | None = None, *, error_codes: Iterable[str] = (), process_collectors: bool = True
    ) -> None:
        """``error_codes``: the failure codes to show (at 0) before any happened (the runtime passes the
        catalogue's)."""
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "calsync_notifications_received",
            "Push notifications the listener stored and answered OK, by kind (event: item events; status: heartbeat).",
            ["kind"],
            registry=r,
        )
        self.refused = Counter(
            "calsync_notifications_refused",
            "Requests to the push listener that were refused, by reason.",
            ["reason"],
            registry=r,
        )
        self.passes = Counter(
            "calsync_sync_passes",
            "Sync passes run by this process's processor, by outcome (ok, failed, lease_lost).",
            ["outcome"],
            registry=r,
        )
        self.pass_duration = Histogram(
            "calsync_sync_pass_duration_seconds",
            "How long sync passes took, by outcome.",
            ["outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "calsync_sync_latency_seconds",
            "From the receipt of the oldest notification a sync pass covered to the commit of that pass.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "calsync_errors",
            "Failures reported to the failure tracker (passes, subscribes, silent subscriptions), by catalogue code.",
            ["code"],
            registry=r,
        )
        # Every known label value starts at 0, so rate() and alerts see a series before the first event.
        for kind in PUSH_KINDS:
            self.received.labels(kind)
        for reason in REFUSAL_REASONS:
            self.refused.labels(reason)
        for outcome in PASS_OUTCOMES:
            self.passes.labels(outcome)
            self.pass_duration.labels(outcome)
        for code in error_codes:
            self.errors.labels(code)
        if db is not None:
            r.register(DatabaseCollector(db))
        if process_collectors:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)

    # --- the calls the code makes ------------------------------------------------------------------

    def notification_received(self, kind: str) -> None:
        self.received.labels(kind).inc()

    def notification_refused(self, reason: str) -> None:
        self.refused.labels(reason).inc()

    def request_refused(self, status: int) -> None:
        """The listener refused a request with HTTP ``status`` (429: rate limited)."""
        self.refused.labels(refusal_reason(status)).inc()

    def pass_finished(self, outcome: str, seconds: float) -> None:
        self.passes.labels(outcome).inc()
        self.pass_duration.labels(outcome).observe(max(0.0, seconds))

    def change_committed(self, received_at: datetime, committed_at: datetime | None = None) -> None:
        """A pass committed the changes notified at ``received_at`` (clamped at 0: nodes' clocks may differ)."""
        seconds = ((committed_at or utcnow()) - received_at).total_seconds()
        self.latency.observe(max(0.0, seconds))

    def error(self, code: str) -> None:
        self.errors.labels(code).inc()

    # --- exposition --------------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format (reads the database: call it off the event loop)."""
        return generate_latest(self.registry)


class DatabaseCollector(Collector):
    """Gauges read from the database at scrape time (one read transaction per scrape)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def describe(self) -> Iterable[Metric]:
        # Names only, so that registering never touches the database (the schema may not exist yet).
        return list(self._families(None))

    def collect(self) -> Iterable[Metric]:
        try:
            with self.db.read() as session:
                snap = store_metrics.snapshot(session)
        except Exception as exc:
            log.warning("metrics: could not read the database", extra={"error": f"{type(exc).__name__}: {exc}"})
            return [_gauge("calsync_database_up", "1 if the metrics could read the database at this scrape.", 0)]
        return list(self._families(snap))

    def _families(self, snap: store_metrics.Snapshot | None) -> Iterator[Metric]:
        yield _gauge(
            "calsync_database_up",
            "1 if the metrics could read the database at this scrape.",
            None if snap is None else 1,
        )
        subs = GaugeMetricFamily(
            "calsync_subscriptions",
            "Enabled operators by subscription state: healthy (heard from within its StatusFrequency), dying "
            "(silent for longer), missing (none).",
            labels=["state"],
        )
        dirty = GaugeMetricFamily(
            "calsync_dirty_mailboxes",
            "Mailboxes of enabled operators that owe a sync pass: waiting (due), running (leased), retrying "
            "(waiting for a retry after a failure).",
            labels=["state"],
        )
        if snap is not None:
            for state in store_metrics.SUBSCRIPTION_STATES:
                subs.add_metric([state], snap.subscriptions.get(state, 0))
            for state in store_metrics.DIRTY_STATES:
                dirty.add_metric([state], snap.dirty_mailboxes.get(state, 0))
        yield subs
        yield dirty
        yield _gauge(
            "calsync_sync_lag_seconds",
            "How long the longest-waiting dirty mailbox has waited for its pass (0 when none waits); mailboxes "
            "failing for a permanent reason are left out (calsync_operators_failing_permanently counts them).",
            None if snap is None else snap.oldest_dirty_seconds,
        )
        yield _gauge(
            "calsync_operators_failing_permanently",
            "Enabled operators whose sync failed for a permanent reason (an open incident such as "
            "mailbox_not_found): they wait for an administrator, not for a retry.",
            None if snap is None else snap.failing_permanently,
        )
        yield _gauge(
            "calsync_notifications_pending",
            "Stored notifications no pass has covered yet.",
            None if snap is None else snap.notifications_pending,
        )
        yield _gauge(
            "calsync_operators_enabled",
            "Operators whose sync is enabled.",
            None if snap is None else snap.operators_enabled,
        )
        yield _gauge(
            "calsync_incidents_open",
            "Open incidents (failure streaks that became incidents and are not resolved).",
            None if snap is None else snap.incidents_open,
        )


def _gauge(name: str, documentation: str, value: float | None) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation)
    if value is not None:
        family.add_metric([], value)
    return family


__all__ = ["CONTENT_TYPE", "DatabaseCollector", "Metrics", "refusal_reason"]

"""Operations, on SQLite and PostgreSQL: the Prometheus metrics at ``/metrics`` after real syncs against the
emulator (notifications over HTTP, passes by the jobs), refusals and failures counted by reason and catalogue
code, ``/healthz`` and ``/readyz`` (and which check fails), and the JSON logs: lines about a mailbox carry
``operator`` and ``mailbox``, and no configured secret ever appears in them."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from calsync import logs
from calsync.api import health
from calsync.listener.protocol import MAX_BODY_BYTES
from calsync.metrics import Metrics
from calsync.settings import listener_callback_url
from calsync.store import operators, subscriptions, work
from calsync.store.db import Database

from .conftest import SERVICE_PASSWORD, start_emulator
from .test_sync_end_to_end import ANN, Harness, _push_body

with warnings.catch_warnings():  # starlette 1.x nudges towards httpx2; httpx is what is installed
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

NOBODY = "nobody@example.com"  # enabled in calsync, but no mailbox on the emulator
LISTENER_SECRET = "s" * 32  # what Harness configures
XML = "text/xml; charset=utf-8"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, keyed by (sample name, sorted labels)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(base: str) -> Samples:
    response = httpx.get(f"{base}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    return parse(response.text)


def scrape_until(base: str, condition: Callable[[Samples], bool], timeout: float = 15.0) -> Samples:
    """Scrape until ``condition`` holds (the counters move just after the commit that ``quiet`` waits for)."""
    deadline = time.monotonic() + timeout
    samples = scrape(base)
    while not condition(samples):
        if time.monotonic() > deadline:
            raise AssertionError({k: v for k, v in samples.items() if k[0].startswith("calsync_")})
        time.sleep(0.05)
        samples = scrape(base)
    return samples


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The process's logs as ``calsync serve`` writes them (``logs.configure``), captured at DEBUG."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    noisy = {name: logging.getLogger(name).level for name in ("exchangelib", "httpx", "httpcore", "uvicorn.access")}
    stream = io.StringIO()
    logs.configure("DEBUG", stream=stream)
    yield stream
    root.handlers[:], level = saved
    root.setLevel(level)
    for name, old in noisy.items():
        logging.getLogger(name).setLevel(old)


@pytest.fixture
def harness(schema_dir: Path, database_url: str, tmp_path: Path) -> Iterator[Harness]:
    emulator = start_emulator(schema_dir, mailboxes=[])
    emulator.add_mailbox(ANN, populate_count=20, seed=3)
    h = Harness(emulator, database_url, tmp_path)
    yield h
    h.stop()
    emulator.stop()
    assert emulator.violations == []


def operator_id(h: Harness, email: str) -> int:
    with h.runtime.db.read() as session:
        return operators.require(session, email).id


# --- metrics ------------------------------------------------------------------------------------------


def test_a_real_sync_moves_the_counters_and_the_gauges(harness: Harness) -> None:
    before = scrape(harness.base)
    assert value(before, "calsync_database_up") == 1
    assert value(before, "calsync_sync_passes_total", outcome="ok") == 0
    assert value(before, "calsync_notifications_received_total", kind="event") == 0
    assert value(before, "calsync_subscriptions", state="missing") == 0

    harness.enable(ANN)
    harness.assert_matches(ANN)
    harness.emulator.outlook(ANN).create({"subject": "Pushed", "start": (utcnow() + dt.timedelta(days=2)).isoformat()})
    harness.assert_matches(ANN)

    after = scrape_until(
        harness.base,
        lambda s: (
            value(s, "calsync_sync_latency_seconds_count") >= 1
            and value(s, "calsync_notifications_received_total", kind="event") >= 1
        ),
    )
    passes = value(after, "calsync_sync_passes_total", outcome="ok")
    assert passes >= 2  # the initial sync and the pass for the pushed change
    assert value(after, "calsync_sync_pass_duration_seconds_count", outcome="ok") == passes
    assert value(after, "calsync_sync_pass_duration_seconds_sum", outcome="ok") > 0
    assert value(after, "calsync_sync_passes_total", outcome="failed") == 0
    # the latency histogram: one observation per pass that covered notifications, each within 10 ms .. 10 min
    latencies = value(after, "calsync_sync_latency_seconds_count")
    assert 1 <= latencies <= passes
    assert value(after, "calsync_sync_latency_seconds_bucket", le="600.0") == latencies
    assert 0 < value(after, "calsync_sync_latency_seconds_sum") < 30 * latencies
    # read from the database at scrape time
    assert value(after, "calsync_subscriptions", state="healthy") == 1
    assert value(after, "calsync_subscriptions", state="dying") == 0
    assert value(after, "calsync_subscriptions", state="missing") == 0
    assert value(after, "calsync_operators_enabled") == 1
    assert value(after, "calsync_incidents_open") == 0
    assert value(after, "calsync_notifications_pending") == 0
    assert sum(value(after, "calsync_dirty_mailboxes", state=s) for s in ("waiting", "running", "retrying")) == 0
    assert value(after, "calsync_sync_lag_seconds") == 0
    assert value(after, "calsync_errors_total", code="mailbox_not_found") == 0
    assert any(name == "process_cpu_seconds_total" for name, _ in after)  # the process collectors are there too

    # A silent subscription shows as dying before ManagePushSubscriptions recreates it.
    with harness.runtime.db.transaction() as session:
        sub = subscriptions.for_operator(session, operator_id(harness, ANN))
        assert sub is not None
        sub.last_heard_at = utcnow() - dt.timedelta(minutes=1, seconds=30)  # StatusFrequency is 1 minute here
    silent = scrape(harness.base)
    assert value(silent, "calsync_subscriptions", state="dying") == 1
    assert value(silent, "calsync_subscriptions", state="healthy") == 0


def test_each_metrics_registry_belongs_to_one_runtime(harness: Harness, tmp_path: Path) -> None:
    """A second runtime in the same process registers nothing globally and counts on its own."""
    from calsync.runtime import Runtime

    other = Runtime(harness.settings, threads=1)
    try:
        assert other.metrics.registry is not harness.runtime.metrics.registry
        other.metrics.request_refused(404)
        assert (
            value(
                parse(other.metrics.exposition().decode()), "calsync_notifications_refused_total", reason="bad_secret"
            )
            == 1
        )
        assert value(scrape(harness.base), "calsync_notifications_refused_total", reason="bad_secret") == 0
    finally:
        other.close()


def test_refused_pushes_are_counted_by_reason(harness: Harness) -> None:
    harness.enable(ANN)
    harness.quiet()
    url = listener_callback_url(harness.settings)
    with harness.runtime.db.read() as session:
        sub = subscriptions.for_operator(session, operator_id(harness, ANN))
        assert sub is not None
        sid = sub.subscription_id
    good = _push_body(sid, [("ModifiedEvent", "AAMkAGl0ZW0=")])
    refusals: list[tuple[str, int, dict[str, Any]]] = [
        ("bad_secret", 404, {"url": url.rsplit("/", 1)[0] + "/" + "w" * 32, "content": good}),
        ("malformed", 400, {"content": b"<not-a-notification/>"}),
        ("unsupported_media_type", 415, {"content": good, "headers": {"Content-Type": "application/json"}}),
        ("too_large", 413, {"content": good + b" " * (MAX_BODY_BYTES + 1)}),
        (
            "unknown_subscription",
            200,
            {"content": _push_body("FwB1bmtub3duLXN1YnNjcmlwdGlvbg==", [("CreatedEvent", "AAMkAHg=")])},
        ),
    ]
    before = scrape(harness.base)
    for reason, status, request in refusals:
        response = httpx.post(
            request.get("url", url), content=request["content"], headers=request.get("headers", {"Content-Type": XML})
        )
        assert response.status_code == status, (reason, response.text)
        if reason == "unknown_subscription":
            assert b"<m:SubscriptionStatus>Unsubscribe<" in response.content
    ok = httpx.post(url, content=good, headers={"Content-Type": XML})
    assert ok.status_code == 200 and b"<m:SubscriptionStatus>OK<" in ok.content
    after = scrape(harness.base)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    for reason, _, _ in refusals:
        assert moved("calsync_notifications_refused_total", reason=reason) == 1, reason
    assert moved("calsync_notifications_refused_total", reason="rate_limited") == 0
    assert moved("calsync_notifications_refused_total", reason="operator_disabled") == 0
    assert moved("calsync_notifications_received_total", kind="event") == 1  # only the good one was received

    # A disabled operator's subscription is told to unsubscribe: its own reason.
    with harness.runtime.db.transaction() as session:
        operators.set_enabled(session, ANN, False)
    response = httpx.post(url, content=good, headers={"Content-Type": XML})
    assert b"<m:SubscriptionStatus>Unsubscribe<" in response.content
    assert value(scrape(harness.base), "calsync_notifications_refused_total", reason="operator_disabled") == 1


def test_a_failure_is_counted_by_its_catalogue_code(harness: Harness, json_logs: io.StringIO) -> None:
    harness.enable(NOBODY)  # ManagePushSubscriptions: Exchange says there is no such mailbox (permanent)
    samples = scrape_until(harness.base, lambda s: value(s, "calsync_errors_total", code="mailbox_not_found") >= 1)
    assert value(samples, "calsync_errors_total", code="timeout") == 0
    samples = scrape_until(harness.base, lambda s: value(s, "calsync_incidents_open") == 1)  # permanent: at once
    assert value(samples, "calsync_subscriptions", state="missing") == 1
    assert value(samples, "calsync_operators_enabled") == 1
    nobody = operator_id(harness, NOBODY)
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    failed = [r for r in lines if r["message"] == "subscribe failed" and r.get("mailbox") == NOBODY]
    assert failed and failed[0]["operator"] == nobody and failed[0]["code"] == "mailbox_not_found"
    opened = [r for r in lines if r["message"] == "incident opened"]
    assert opened and opened[0]["operator"] == nobody and opened[0]["mailbox"] == NOBODY
    # The mailbox cannot sync until a person acts: it has its own gauge, and it does not grow the lag (which
    # would otherwise trip the lag alert the user guide suggests, hours after the incident e-mail).
    assert value(samples, "calsync_operators_failing_permanently") == 1
    with harness.runtime.db.transaction() as session:
        work.mark_dirty(session, nobody, now=utcnow() - dt.timedelta(hours=2))
    samples = scrape(harness.base)
    assert sum(value(samples, "calsync_dirty_mailboxes", state=s) for s in ("waiting", "running", "retrying")) == 1
    assert value(samples, "calsync_sync_lag_seconds") == 0
    assert value(samples, "calsync_operators_failing_permanently") == 1


# --- health -------------------------------------------------------------------------------------------


def test_healthz_and_readyz_when_all_is_well_and_when_the_jobs_stop(harness: Harness) -> None:
    assert httpx.get(f"{harness.base}/healthz").json() == {"ok": True}
    ready = httpx.get(f"{harness.base}/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"ok": True, "checks": {"database": "ok", "jobs": "ok"}, "failed": []}
    harness.runtime.stop_jobs()
    stopped = httpx.get(f"{harness.base}/readyz")
    assert stopped.status_code == 503
    assert stopped.json()["failed"] == ["jobs"] and stopped.json()["checks"]["database"] == "ok"
    assert httpx.get(f"{harness.base}/healthz").status_code == 200  # up, only not ready
    harness.runtime.start_jobs()
    assert httpx.get(f"{harness.base}/readyz").status_code == 200


@pytest.mark.parametrize("where", ["sqlite-directory", "postgresql-closed-port"])
def test_readyz_names_the_database_when_it_is_unreachable(where: str, tmp_path: Path) -> None:
    if where == "sqlite-directory":
        (tmp_path / "a-directory").mkdir()
        url = f"sqlite:///{tmp_path / 'a-directory'}"  # cannot be opened as a database file
    else:
        url = "postgresql://postgres@127.0.0.1:1/test"  # nothing listens on port 1
    db = Database(url)
    try:
        app = Starlette(routes=health.routes(db, Metrics(db), lambda: True))
        with TestClient(app) as client:
            ready = client.get("/readyz")
            assert ready.status_code == 503
            body = ready.json()
            assert body["ok"] is False and body["failed"] == ["database"], body
            assert body["checks"]["database"].startswith("unreachable (") and body["checks"]["jobs"] == "ok"
            assert client.get("/healthz").json() == {"ok": True}
            scraped = client.get("/metrics")  # the database's gauges are left out, not shown as zeros
            assert scraped.status_code == 200
            samples = parse(scraped.text)
            assert value(samples, "calsync_database_up") == 0
            assert not any(name == "calsync_subscriptions" for name, _ in samples)
    finally:
        db.dispose()


def test_readyz_does_not_ask_about_jobs_a_process_does_not_run(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'calsync.sqlite3'}")
    try:
        with TestClient(Starlette(routes=health.routes(db, None, None))) as client:
            ready = client.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["checks"] == {"database": "ok", "jobs": "not run here"}
            assert client.get("/metrics").status_code == 404  # no metrics given: no route
    finally:
        db.dispose()


# --- logs ---------------------------------------------------------------------------------------------


def test_a_sync_pass_logs_json_lines_about_its_mailbox_and_no_secret(harness: Harness, json_logs: io.StringIO) -> None:
    harness.enable(ANN)
    harness.assert_matches(ANN)
    harness.emulator.outlook(ANN).create({"subject": "Logged", "start": (utcnow() + dt.timedelta(days=3)).isoformat()})
    harness.assert_matches(ANN)
    scrape_until(harness.base, lambda s: value(s, "calsync_sync_passes_total", outcome="ok") >= 2)
    httpx.post(f"{harness.base}/ews/notifications/{'w' * 32}", content=b"<x/>", headers={"Content-Type": XML})
    # A secret that reaches a log call anyway (in a message, a field, a traceback) is masked.
    leak = logging.getLogger("calsync.test")
    leak.warning("the password is %s", SERVICE_PASSWORD, extra={"url": listener_callback_url(harness.settings)})
    try:
        raise RuntimeError(f"could not reach {listener_callback_url(harness.settings)}")
    except RuntimeError:
        leak.exception("failed")

    output = json_logs.getvalue()
    lines = [json.loads(line) for line in output.splitlines()]  # every line is one JSON object
    assert lines
    ann = operator_id(harness, ANN)
    about_ann = [r for r in lines if r.get("mailbox") == ANN]
    for message in ("subscribed", "sync pass started", "sync pass done"):
        found = [r for r in about_ann if r["message"] == message]
        assert found, (message, sorted({r["message"] for r in lines}))
        assert all(r["operator"] == ann for r in found), found
    assert len([r for r in about_ann if r["message"] == "sync pass done"]) >= 2
    for secret in (SERVICE_PASSWORD, LISTENER_SECRET):
        assert secret not in output
    masked = [r for r in lines if r["logger"] == "calsync.test"]
    assert masked[0]["message"] == "the password is ********" and "********" in masked[0]["url"]
    assert "********" in masked[1]["exception"]

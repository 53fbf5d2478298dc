"""The admin REST API against a real calsync (listener, jobs, API over HTTP) and the emulator, on SQLite and
PostgreSQL: who may do what (401/403 change nothing), operators from creation to first sync, verification
against Exchange, jobs under control, failures with their catalogue code, settings changed at run time on
every node, and the audit log of it all."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from calsync.api.app import build
from calsync.api.context import AdminContext
from calsync.runtime import Runtime
from calsync.sources.ews import EwsSource
from calsync.sources.registry import Sources
from calsync.store import jobs as job_store
from calsync.store import operators, tokens, work
from calsync.store.tables import utcnow

from .conftest import SERVICE_PASSWORD, SERVICE_USER, start_emulator
from .test_sync_end_to_end import ANN, BOB, CALENDAR_TOKEN, Harness

ADMIN_TOKEN = "admin-token-for-the-tests-0123456789"
VIEWER_TOKEN = "viewer-token-for-the-tests-0123456789"
TOKENS = f"admin:{ADMIN_TOKEN},viewer:{VIEWER_TOKEN},calendar:{CALENDAR_TOKEN}"
GHOST = "ghost@example.com"  # an address with no mailbox in the emulator


@pytest.fixture
def harness(schema_dir: Path, database_url: str, tmp_path: Path) -> Iterator[Harness]:
    emulator = start_emulator(schema_dir, mailboxes=[])
    emulator.add_mailbox(ANN, populate_count=20, seed=11)
    emulator.add_mailbox(BOB, populate_count=5, seed=12)
    h = Harness(emulator, database_url, tmp_path, api_tokens=TOKENS)
    yield h
    h.stop()
    emulator.stop()


class Api:
    def __init__(self, base: str, token: str | None) -> None:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        self.client = httpx.Client(base_url=f"{base}/api/v1", headers=headers, timeout=30)

    def __getattr__(self, method: str) -> Callable[..., httpx.Response]:
        return getattr(self.client, method)  # type: ignore[no-any-return]


@pytest.fixture
def admin(harness: Harness) -> Iterator[Api]:
    api = Api(harness.base, ADMIN_TOKEN)
    yield api
    api.client.close()


@pytest.fixture
def viewer(harness: Harness) -> Iterator[Api]:
    api = Api(harness.base, VIEWER_TOKEN)
    yield api
    api.client.close()


def eventually(check: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what} (last: {last!r})")


def audit_actions(api: Api) -> list[tuple[str, str, str | None]]:
    return [(e["actor"], e["action"], e["target"]) for e in api.get("/audit").json()]


# --- who may do what ------------------------------------------------------------------------------


def test_no_token_or_a_wrong_one_gets_401_and_changes_nothing(harness: Harness) -> None:
    anonymous, wrong = Api(harness.base, None), Api(harness.base, "x" * 40)
    for api in (anonymous, wrong):
        response = api.post("/operators", json={"email": ANN, "enabled": True})
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert "token" in response.json()["detail"]
        assert api.get("/operators").status_code == 401
        assert api.get("/jobs").status_code == 401
    with harness.runtime.db.read() as session:
        assert operators.listing(session) == []


def test_a_viewer_reads_everything_but_calendars_and_may_change_nothing(harness: Harness, viewer: Api) -> None:
    assert viewer.get("/me").json() == {"name": "api_tokens entry 2 (viewer)", "role": "viewer", "token_id": None}
    for path in ("/operators", "/jobs", "/failures", "/settings", "/audit", "/dashboard"):
        assert viewer.get(path).status_code == 200, path
    refused = [
        viewer.post("/operators", json={"email": ANN}),
        viewer.patch("/jobs/ManagePushSubscriptions", json={"enabled": False}),
        viewer.post("/jobs/ManagePushSubscriptions/run"),
        viewer.patch("/settings", json={"batch_size": 10}),
        viewer.get(f"/operators/{ANN}/appointments", params={"start": "2027-01-01", "end": "2027-02-01"}),
    ]
    for response in refused:
        assert response.status_code == 403, response.request.url
        assert "role 'viewer'" in response.json()["detail"]
    with harness.runtime.db.read() as session:
        assert operators.listing(session) == []
        assert job_store.require(session, "ManagePushSubscriptions").enabled
    assert harness.runtime.settings.batch_size == 512


def test_the_calendar_role_reads_calendars_only(harness: Harness) -> None:
    app = Api(harness.base, CALENDAR_TOKEN)
    assert app.get("/operators").status_code == 403
    assert app.get("/me").json()["role"] == "calendar"


def test_stored_tokens_work_until_revoked(harness: Harness) -> None:
    with harness.runtime.db.transaction() as session:
        row, token = tokens.create(session, "viewer", "dashboard screen")
    api = Api(harness.base, token)
    assert api.get("/me").json() == {"name": "dashboard screen", "role": "viewer", "token_id": row.id}
    with harness.runtime.db.read() as session:
        used = next(t for t in tokens.listing(session) if t.id == row.id)
    assert used.last_used_at is not None and used.token_hash != token and token not in used.token_hash
    with harness.runtime.db.transaction() as session:
        tokens.revoke(session, row.id)
    assert api.get("/me").status_code == 401


def test_the_listener_path_is_not_part_of_the_api(harness: Harness, admin: Api) -> None:
    document = admin.get("/openapi.json").json()
    assert "/api/v1/operators/{email}/verify" in document["paths"]
    assert all(path.startswith("/api/v1/") for path in document["paths"])
    # an API token opens nothing on the listener: it has its own secret
    pushed = httpx.post(f"{harness.base}/ews/notifications/{ADMIN_TOKEN}", content=b"<x/>", timeout=10)
    assert pushed.status_code in (403, 404)


# --- operators ------------------------------------------------------------------------------------


def test_an_operator_from_creation_to_first_sync(harness: Harness, admin: Api) -> None:
    created = admin.post("/operators", json={"email": "Ann@Example.com", "display_name": "Ann"})
    assert created.status_code == 201
    assert created.json()["email"] == ANN and created.json()["state"] == "disabled"
    assert created.json()["subscription"]["state"] == "missing"
    assert admin.post("/operators", json={"email": ANN}).status_code == 409
    bad = admin.post("/operators", json={"email": "not-an-address"})
    assert bad.status_code == 422 and "not an e-mail address" in bad.json()["detail"]
    assert admin.get("/operators/nobody@example.com").status_code == 404

    enabled = admin.post(f"/operators/{ANN}/enable")
    assert enabled.status_code == 200 and enabled.json()["enabled"] is True
    synced = eventually(
        lambda: (o := admin.get(f"/operators/{ANN}").json())["state"] == "synced" and o, what="first sync of ann"
    )
    # Subscribed, synced, and nothing pushed on the subscription yet: "not yet heard from", with its age.
    assert synced["subscription"]["state"] == "not_yet_heard" and synced["initial_sync_done"]
    assert synced["subscription"]["subscribed_at"] and synced["subscription"]["last_heard"] is None
    assert synced["subscription"]["last_heartbeat"] is None
    assert synced["appointments"] > 10 and synced["lag_seconds"] == 0.0 and synced["last_sync"]
    assert [o["email"] for o in admin.get("/operators", params={"state": "synced"}).json()] == [ANN]
    assert admin.get("/operators", params={"state": "failing"}).json() == []
    assert admin.get("/operators", params={"state": "nonsense"}).status_code == 422

    renamed = admin.patch(f"/operators/{ANN}", json={"display_name": "Ann A."})
    assert renamed.json()["display_name"] == "Ann A." and renamed.json()["enabled"] is True
    assert admin.post(f"/operators/{ANN}/disable").json()["state"] == "disabled"
    assert admin.delete(f"/operators/{ANN}").status_code == 204
    assert admin.get(f"/operators/{ANN}").status_code == 404

    actions = [(action, target) for _, action, target in audit_actions(admin)]
    assert actions == [
        ("operator.delete", ANN),
        ("operator.disable", ANN),
        ("operator.update", ANN),
        ("operator.enable", ANN),
        ("operator.create", ANN),
    ]
    assert {actor for actor, *_ in audit_actions(admin)} == {"api_tokens entry 1 (admin)"}
    assert all(action != "operator.create" or target != "not-an-address" for _, action, target in audit_actions(admin))


def test_verify_says_exactly_what_is_wrong(harness: Harness, admin: Api) -> None:
    good = admin.post(f"/operators/{ANN}/verify").json()
    assert good["ok"] is True and good["code"] is None
    missing = admin.post(f"/operators/{GHOST}/verify").json()
    assert missing["ok"] is False and missing["code"] == "mailbox_not_found" and missing["message"]
    assert ("api_tokens entry 1 (admin)", "operator.verify", GHOST) in audit_actions(admin)

    # a service account without the impersonation right
    harness.emulator.exchange.add_account("plain", "plain-pw-1", impersonation=False)
    source = EwsSource(harness.emulator.url, "plain", "plain-pw-1", version="Exchange2016")
    context = AdminContext(
        db=harness.runtime.db, sources=Sources.only(source), settings=lambda: harness.runtime.settings
    )
    with TestClient(build(context)) as client:
        denied = client.post(f"/api/v1/operators/{ANN}/verify", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    source.close()
    assert denied.json()["ok"] is False and denied.json()["code"] == "impersonation_denied"

    # the wrong service password
    source = EwsSource(harness.emulator.url, SERVICE_USER, SERVICE_PASSWORD + "x", version="Exchange2016")
    context = AdminContext(
        db=harness.runtime.db, sources=Sources.only(source), settings=lambda: harness.runtime.settings
    )
    with TestClient(build(context)) as client:
        rejected = client.post(f"/api/v1/operators/{ANN}/verify", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    source.close()
    assert rejected.json()["ok"] is False and rejected.json()["code"] == "credentials_rejected"


# --- jobs -----------------------------------------------------------------------------------------


def test_jobs_are_listed_changed_and_run(harness: Harness, admin: Api) -> None:
    names = [job["name"] for job in admin.get("/jobs").json()]
    assert sorted(names) == ["ManagePushSubscriptions", "ProcessPushNotifications", "Reconciliation"]

    too_long = admin.patch("/jobs/ManagePushSubscriptions", json={"interval_seconds": 100000})
    assert too_long.status_code == 422 and "1..86400" in too_long.json()["detail"]
    assert admin.get("/jobs/ManagePushSubscriptions").json()["interval_seconds"] == 300  # unchanged
    assert admin.patch("/jobs/nope", json={"enabled": False}).status_code == 404
    assert admin.patch("/jobs/ManagePushSubscriptions", json={}).status_code == 422

    changed = admin.patch("/jobs/managepushsubscriptions", json={"interval_seconds": 120})
    assert changed.status_code == 200 and changed.json()["interval_seconds"] == 120
    with harness.runtime.db.read() as session:  # in the database: every node sees it
        assert job_store.require(session, "ManagePushSubscriptions").interval_seconds == 120

    before = admin.get("/jobs/Reconciliation").json()["runs"]
    assert admin.post("/jobs/Reconciliation/run").status_code == 200
    ran = eventually(lambda: (j := admin.get("/jobs/Reconciliation").json())["runs"] > before and j, what="a run")
    assert ran["run_requested"] is False and "on request" in ran["last_outcome"]

    assert admin.patch("/jobs/Reconciliation", json={"enabled": False}).json()["enabled"] is False
    refused = admin.post("/jobs/Reconciliation/run")
    assert refused.status_code == 409 and "disabled" in refused.json()["detail"]
    assert [a for _, a, t in audit_actions(admin) if t == "Reconciliation"] == ["job.update", "job.run"]


def test_reconciliation_run_now_gives_every_synced_mailbox_a_pass(harness: Harness, admin: Api) -> None:
    harness.enable(ANN, BOB)
    harness.quiet()
    harness.passes.clear()
    admin.post("/jobs/Reconciliation/run")
    eventually(lambda: sorted(set(harness.passes)) == [ANN, BOB], what="a pass for each mailbox")


# --- failures -------------------------------------------------------------------------------------


def test_a_failure_shows_with_its_catalogue_code(harness: Harness, admin: Api) -> None:
    admin.post("/operators", json={"email": GHOST, "enabled": True})
    admin.post("/operators", json={"email": ANN, "enabled": True})
    failing = eventually(
        lambda: (o := admin.get(f"/operators/{GHOST}").json())["state"] == "failing" and o, what="ghost failing"
    )
    assert failing["last_error"]["code"] == "mailbox_not_found"
    found = eventually(lambda: admin.get("/failures", params={"state": "open"}).json(), what="an open failure")
    assert [(f["operator"], f["code"], f["open"]) for f in found] == [(GHOST, "mailbox_not_found", True)]
    assert found[0]["title"] == "The operator's mailbox does not exist on Exchange" and found[0]["failures"] >= 1
    assert admin.get("/failures", params={"operator": ANN}).json() == []
    assert admin.get("/failures", params={"code": "credentials_rejected"}).json() == []
    assert admin.get("/failures", params={"state": "resolved"}).json() == []
    assert admin.get("/failures", params={"state": "bogus"}).status_code == 422
    dashboard = admin.get("/dashboard").json()
    assert dashboard["operators"]["failing"] == 1 and dashboard["operators"]["total"] == 2
    assert len(dashboard["notifications_per_minute"]) == 60
    # no such mailbox is permanent: counted apart, and never the sync lag (it waits for a person, not a pass)
    assert dashboard["operators"]["failing_permanently"] == 1
    with harness.runtime.db.transaction() as session:
        ghost = operators.require(session, GHOST)
        work.mark_dirty(session, ghost.id, now=utcnow() - timedelta(hours=2))
    assert admin.get(f"/operators/{GHOST}").json()["lag_seconds"] >= 7000  # its own lag still shows
    assert admin.get("/dashboard").json()["sync_lag_seconds"]["max"] < 3600


# --- settings -------------------------------------------------------------------------------------


def test_settings_are_shown_masked_and_changed_on_every_node(harness: Harness, admin: Api) -> None:
    shown = admin.get("/settings").json()
    assert shown["settings"]["password"] == "********" and shown["settings"]["api_tokens"] == "********"
    assert ADMIN_TOKEN not in str(shown) and SERVICE_PASSWORD not in str(shown)
    assert "batch_size" in shown["changeable"] and shown["overrides"] == {}

    # another node on the same database (jobs not running: it applies changes when it refreshes)
    other = Runtime(harness.settings)
    try:
        changed = admin.patch("/settings", json={"EWSBatchSize": 100, "failure_recipients": "ops@example.com"})
        assert changed.status_code == 200
        assert changed.json()["settings"]["batch_size"] == 100
        assert changed.json()["overrides"] == {"batch_size": 100, "failure_recipients": ["ops@example.com"]}
        assert harness.runtime.settings.batch_size == 100  # this node: at once
        assert harness.runtime.tracker.mailer.recipients == ("ops@example.com",)
        other.refresh_settings()  # what its scheduler does every tick
        assert other.settings.batch_size == 100 and other.settings.failure_recipients == ("ops@example.com",)
    finally:
        other.close()

    for bad, problem in (
        ({"batch_size": 0}, "batch_size (EWSBatchSize): 0 is out of range; allowed: 1..512"),
        ({"status_frequency": "often"}, "status_frequency"),
        ({"database_url": "sqlite:///x"}, "cannot be changed while calsync runs"),
        ({"nope": 1}, "unknown setting 'nope'"),
        ({"failure_recipients": "not-an-address"}, "is not a valid e-mail address"),
    ):
        refused = admin.patch("/settings", json=bad)
        assert refused.status_code == 422, bad
        assert any(problem in p for p in refused.json()["problems"]), refused.json()
    both = admin.patch("/settings", json={"batch_size": 0, "password": "x"}).json()["problems"]  # all at once
    assert len(both) == 2 and "out of range" in both[1] and "password cannot be changed" in both[0]
    assert harness.runtime.settings.batch_size == 100  # nothing changed
    assert admin.get("/settings").json()["overrides"]["batch_size"] == 100

    reverted = admin.patch("/settings", json={"batch_size": None}).json()  # back to what the file says
    assert reverted["overrides"] == {"failure_recipients": ["ops@example.com"]}
    assert reverted["settings"]["batch_size"] == 512 and harness.runtime.settings.batch_size == 512
    changes = [e["detail"] for e in admin.get("/audit").json() if e["action"] == "settings.change"]
    assert changes == [{"batch_size": None}, {"batch_size": 100, "failure_recipients": ["ops@example.com"]}]


def test_the_dashboard_counts(harness: Harness, admin: Api) -> None:
    harness.enable(ANN, BOB)
    harness.quiet()
    outlook = harness.emulator.outlook(ANN)
    outlook.create({"subject": "Dashboard check", "start": "2027-03-01T09:00:00", "timezone": "UTC"})
    body = eventually(
        lambda: (
            (d := admin.get("/dashboard").json())["notifications_last_minute"] >= 1
            and d["subscriptions"]["healthy"] >= 1
            and d
        ),
        what="a notification, and the subscription it came on counted healthy",
    )
    # ann's subscription has pushed; bob's is heard from at its first heartbeat (after StatusFrequency, 1 minute)
    subs = body["subscriptions"]
    assert body["operators"]["total"] == 2 and subs["healthy"] >= 1 and subs["healthy"] + subs["not_yet_heard"] == 2
    assert body["subscriptions"]["missing"] == 0 and body["open_incidents"] == 0
    assert sum(m["count"] for m in body["notifications_per_minute"]) >= body["notifications_last_minute"]

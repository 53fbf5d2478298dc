"""The listener's Graph door (``/graph/notifications/<secret>`` and ``/graph/lifecycle/<secret>``), on SQLite and
PostgreSQL: Graph's validation handshake is echoed at once; a change notification whose subscription calsync holds
and whose clientState matches is stored and answered 202; anything else (another subscription, a forged or missing
clientState, an operator whose sync is off) stores nothing; lifecycle notifications are kept for
ManagePushSubscriptions; malformed bodies get a 4xx that names the problem. Microsoft's own notification sample is
read as Graph sends it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import select

from calsync.listener.protocol import MAX_BODY_BYTES
from calsync.store import operators, subscriptions
from calsync.store.tables import NotificationRow

from .conftest import reference_dir
from .test_listener_app import ANN, BOB, SECRET, Harness, TestClient
from .test_listener_app import harness as harness  # the fixture, by its name

GRAPH_SAMPLES = reference_dir().parent / "graph" / "samples" / "notifications"
ANN_GRAPH = "8d2a6b0e-3c4d-4e5f-9a0b-1c2d3e4f5a6b"
BOB_GRAPH = "0f1e2d3c-4b5a-4969-8877-665544332211"
ANN_STATE, BOB_STATE = "ann-client-state-" + "a" * 24, "bob-client-state-" + "b" * 24
JSON = "application/json"


@pytest.fixture
def graph(harness: Harness) -> Iterator[Harness]:
    """The listener harness with Graph subscriptions: Ann's (sync on) and Bob's (sync off), each with its own
    clientState."""
    with harness.db.transaction() as s:
        for email, sub, state in ((ANN, ANN_GRAPH, ANN_STATE), (BOB, BOB_GRAPH, BOB_STATE)):
            op = operators.require(s, email)
            op.source = "graph"
            subscriptions.save(
                s,
                op.id,
                sub,
                None,
                30,
                "https://calsync.example.com/graph/notifications/x",
                client_state=state,
                source="graph",
            )
    with TestClient(harness.runtime.app(run_jobs=False), raise_server_exceptions=False) as client:
        harness.client = client
        yield harness
        harness.client = None


def change(
    sub: str = ANN_GRAPH, state: str | None = ANN_STATE, kind: str = "updated", event: str = "AAMk-1"
) -> dict[str, Any]:
    found: dict[str, Any] = {
        "subscriptionId": sub,
        "subscriptionExpirationDateTime": "2026-12-07T18:23:45.9356913+00:00",
        "changeType": kind,
        "resource": f"Users/{ANN}/Events/{event}",
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.Event",
            "@odata.id": f"Users/{ANN}/Events/{event}",
            "@odata.etag": 'W/"DwAAABYAAAA"',
            "id": event,
        },
        "tenantId": "84bd8158-6d4d-4958-8b9f-9d6445542f95",
    }
    if state is not None:
        found["clientState"] = state
    return found


def post(h: Harness, body: Any, door: str = "notifications", content_type: str = JSON, **kwargs: Any) -> httpx.Response:
    assert h.client is not None
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return h.client.post(f"/graph/{door}/{SECRET}", content=content, headers={"Content-Type": content_type}, **kwargs)


def stored(h: Harness) -> list[tuple[str, str, str | None]]:
    with h.db.read() as s:
        rows = s.execute(select(NotificationRow.subscription_id, NotificationRow.kind, NotificationRow.item_id))
        return [tuple(r) for r in rows]  # type: ignore[misc]


def test_the_validation_handshake_is_echoed_at_once(graph: Harness) -> None:
    token = "Validation: Testing client application reachability for subscription Request-Id: 2b0f-77"
    for door in ("notifications", "lifecycle"):
        assert graph.client is not None
        answer = graph.client.post(f"/graph/{door}/{SECRET}?validationToken={quote(token, safe='')}", content=b"")
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
        assert answer.text == token  # URL-decoded, as Graph requires
    wrong = graph.client.post(f"/graph/notifications/{'y' * 32}?validationToken=abc", content=b"")
    assert wrong.status_code == 404  # only the secret path validates
    assert stored(graph) == []


def test_a_change_notification_is_stored_then_answered_202(graph: Harness) -> None:
    before = graph.work(graph.ann).dirty_gen
    answer = post(graph, {"value": [change(kind="created", event="E1"), change(kind="deleted", event="E2")]})
    assert answer.status_code == 202 and answer.content == b""
    assert stored(graph) == [(ANN_GRAPH, "CreatedEvent", "E1"), (ANN_GRAPH, "DeletedEvent", "E2")]
    assert graph.work(graph.ann).dirty_gen > before  # a pass is owed
    assert graph.subscription(ANN_GRAPH).events == 2


@pytest.mark.parametrize(
    "note",
    [
        change(state="forged-client-state"),
        change(state=None),
        change(state=BOB_STATE),  # another subscription's secret
        change(sub="3c9c1d3a-0000-4000-8000-000000000000"),  # a subscription calsync does not hold
        change(sub=BOB_GRAPH, state=BOB_STATE),  # Bob's sync is off
    ],
    ids=["forged", "missing", "someone-elses", "unknown", "disabled"],
)
def test_what_is_not_ours_is_not_stored(graph: Harness, note: dict[str, Any]) -> None:
    before = graph.snapshot()
    answer = post(graph, {"value": [note]})
    assert answer.status_code == 202  # Graph has no "unsubscribe" answer; anything else makes it retry
    assert graph.snapshot() == before


def test_of_a_mixed_body_only_our_notifications_are_stored(graph: Harness) -> None:
    body = {"value": [change(event="E1"), change(state="forged", event="E2"), change(sub=BOB_GRAPH, event="E3")]}
    assert post(graph, body).status_code == 202
    assert stored(graph) == [(ANN_GRAPH, "ModifiedEvent", "E1")]


def test_lifecycle_notifications_are_kept_for_the_subscription_job(graph: Harness) -> None:
    def lifecycle(event: str, state: str = ANN_STATE) -> httpx.Response:
        note = {"subscriptionId": ANN_GRAPH, "clientState": state, "lifecycleEvent": event, "tenantId": "t"}
        return post(graph, {"value": [note]}, door="lifecycle")

    before = graph.work(graph.ann).dirty_gen
    assert lifecycle("reauthorizationRequired").status_code == 202
    assert graph.subscription(ANN_GRAPH).lifecycle_event == "reauthorizationRequired"
    assert graph.work(graph.ann).dirty_gen == before  # nothing to read for that
    assert lifecycle("missed").status_code == 202  # notifications were lost: a catch-up pass
    assert graph.work(graph.ann).dirty_gen == before + 1
    assert graph.subscription(ANN_GRAPH).lifecycle_event == "reauthorizationRequired"
    assert lifecycle("subscriptionRemoved").status_code == 202
    assert graph.subscription(ANN_GRAPH).lifecycle_event == "subscriptionRemoved"
    assert graph.work(graph.ann).dirty_gen == before + 2
    assert lifecycle("reauthorizationRequired", state="forged").status_code == 202
    assert graph.subscription(ANN_GRAPH).lifecycle_event == "subscriptionRemoved"
    assert stored(graph) == []


@pytest.mark.parametrize(
    ("body", "content_type", "status", "words"),
    [
        (b"{not json", JSON, 400, "not JSON"),
        (b'{"value": []}', JSON, 400, "no 'value' list"),
        (b'{"value": [{"subscriptionId": "x", "changeType": "renamed"}]}', JSON, 400, "changeType"),
        (b'{"value": [{"changeType": "created"}]}', JSON, 400, "subscriptionId"),
        (b'{"value": [1]}', JSON, 400, "not an object"),
        (json.dumps({"value": [change()]}).encode(), "text/xml", 415, "application/json"),
        (b'{"value": [' + b'"x",' * (MAX_BODY_BYTES // 4) + b'"x"]}', JSON, 413, "larger than"),
    ],
    ids=["not-json", "empty", "bad-change-type", "no-subscription", "not-object", "xml", "too-large"],
)
def test_malformed_bodies_are_refused_and_change_nothing(
    graph: Harness, body: bytes, content_type: str, status: int, words: str
) -> None:
    before = graph.snapshot()
    answer = post(graph, body, content_type=content_type)
    assert answer.status_code == status and words in answer.text, answer.text
    assert graph.snapshot() == before


def test_microsofts_sample_is_read_as_graph_sends_it() -> None:
    from calsync.sources.graph.notifications import GraphNotificationReader

    sample = Path(GRAPH_SAMPLES / "change-notification-collection.message.created.json").read_bytes()
    [note] = GraphNotificationReader().read(sample, "application/json; charset=utf-8")
    assert (note.subscription_id, note.client_state) == ("{subscription_guid}", "secretClientValue")
    [event] = note.events
    assert (event.kind, event.item_id) == ("CreatedEvent", "{long_id_string}")

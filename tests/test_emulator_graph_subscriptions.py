"""Graph subscriptions against a real local receiver: the validation handshake (success, wrong answer, error,
timeout), https and lifetime rules, change notifications batched and driven by changes from Graph and EWS alike,
retries and giving up, expiry, lifecycle notifications (reauthorizationRequired with reauthorize,
subscriptionRemoved, missed), renewal, deletion and lost notifications."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from exchangelib import EWSDateTime, EWSTimeZone

from calsync.emulator import Emulator

from .conftest import ews_account, save_item
from .test_emulator_graph_events import sample
from .test_emulator_graph_setup import (  # noqa: F401 (fixtures)
    ANN,
    APPS,
    READER,
    READER_SECRET,
    Receiver,
    event_body,
    graph,
    graph_emulator_fixture,
    receiver_fixture,
    token,
)

CLIENT_STATE = "secretClientValue"


def subscription_body(emu: Emulator, receiver: Receiver, minutes: float = 60, **more: Any) -> dict[str, Any]:
    expiry = emu.exchange.now() + dt.timedelta(minutes=minutes)
    return {
        "changeType": "created,updated,deleted",
        "notificationUrl": receiver.url + "/notify",
        "resource": f"users/{ANN}/events",
        "expirationDateTime": expiry.isoformat().replace("+00:00", "Z"),
        "clientState": CLIENT_STATE,
        **more,
    }


def subscribe(client: httpx.Client, emu: Emulator, receiver: Receiver, **more: Any) -> dict[str, Any]:
    answer = client.post("/subscriptions", json=subscription_body(emu, receiver, **more))
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def add_event(client: httpx.Client, subject: str = "x") -> dict[str, Any]:
    return dict(
        client.post(
            f"/users/{ANN}/events", json=event_body(subject, "2026-12-01T09:00:00", "2026-12-01T10:00:00")
        ).json()
    )


def log(emu: Emulator) -> list[dict[str, Any]]:
    return list(httpx.get(f"{emu.base_url}/emulator/graph/notification-log").json())


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def fast_emulator(emulator_factory: Callable[..., Emulator]) -> Emulator:
    """An emulator whose clock runs 60 times faster: retry delays and timeouts pass in a blink."""
    return emulator_factory(graph_apps=APPS, graph_allow_http=True, clock_speed=60)


def test_a_subscription_is_created_after_the_validation_handshake(graph_emulator: Emulator, receiver: Receiver) -> None:
    with graph(graph_emulator) as client:
        created = subscribe(client, graph_emulator, receiver, lifecycleNotificationUrl=receiver.url + "/lifecycle")
        validations = receiver.validations()
        assert [v.path for v in validations] == ["/notify", "/lifecycle"]
        assert validations[0].query["validationToken"][0].startswith("Validation: ")  # URL-decoded by the receiver
        assert validations[0].headers["Content-Type"].startswith("text/plain")
        published = sample("subscriptions/create-response.201.full-property-set.contrib.json")
        assert set(published) == set(created)
        assert created["changeType"] == "created,updated,deleted" and created["clientState"] == CLIENT_STATE
        assert client.get(f"/subscriptions/{created['id']}").json()["id"] == created["id"]
        assert [s["id"] for s in client.get("/subscriptions").json()["value"]] == [created["id"]]
    with graph(graph_emulator, token(graph_emulator, READER, READER_SECRET)) as other_app:
        assert other_app.get(f"/subscriptions/{created['id']}").status_code == 404
        assert other_app.get("/subscriptions").json()["value"] == []


@pytest.mark.parametrize(
    ("validation", "words"),
    [("wrong", "must exactly match validationToken"), ("500", "must respond with 200 OK"), ("silent", "timed out")],
)
def test_a_failed_handshake_refuses_the_subscription(
    fast_emulator: Emulator, receiver: Receiver, validation: str, words: str
) -> None:
    receiver.validation = validation
    with graph(fast_emulator) as client:
        answer = client.post("/subscriptions", json=subscription_body(fast_emulator, receiver))
        assert answer.status_code == 400 and words in answer.json()["error"]["message"]
        assert client.get("/subscriptions").json()["value"] == []


def test_https_lifetime_and_resource_rules(emulator_factory: Callable[..., Emulator], receiver: Receiver) -> None:
    strict = emulator_factory(graph_apps=APPS)  # notification URLs must be https
    with graph(strict) as client:
        answer = client.post("/subscriptions", json=subscription_body(strict, receiver))
        assert answer.status_code == 400 and "must use https" in answer.json()["error"]["message"]
    relaxed = emulator_factory(graph_apps=APPS, graph_allow_http=True)
    with graph(relaxed) as client:
        too_long = client.post("/subscriptions", json=subscription_body(relaxed, receiver, minutes=4231))
        observed = sample("errors/observed/400-ExtensionError.subscription-expiration-too-far.excerpt.json")["error"]
        assert too_long.status_code == 400
        assert (too_long.json()["error"]["code"], too_long.json()["error"]["message"]) == (
            observed["code"],
            observed["message"],
        )
        short = subscribe(client, relaxed, receiver, minutes=10)
        expiry = dt.datetime.fromisoformat(short["expirationDateTime"].replace("Z", "+00:00"))
        assert expiry - relaxed.exchange.now() > dt.timedelta(minutes=44)
        messages = client.post("/subscriptions", json=subscription_body(relaxed, receiver, resource="users/x/messages"))
        assert messages.status_code == 400 and "not supported" in messages.json()["error"]["message"]
        me = client.post("/subscriptions", json=subscription_body(relaxed, receiver, resource="/me/events"))
        assert me.status_code == 400


def test_changes_from_graph_and_ews_are_notified_in_batches(graph_emulator: Emulator, receiver: Receiver) -> None:
    with graph(graph_emulator) as client:
        created = subscribe(client, graph_emulator, receiver)
        outlook = graph_emulator.outlook(ANN)
        with graph_emulator.exchange.lock:  # three changes before the delivery task can look: one POST
            for n in range(3):
                outlook.create({"subject": f"o{n}", "start": "2026-12-01T09:00:00"})
        first = receiver.wait_for(1)[0].json()["value"]
        assert [n["changeType"] for n in first] == ["created"] * 3
        mailbox = graph_emulator.exchange.mailbox(ANN)
        note = first[0]
        published = sample("notifications/change-notification-collection.message.created.json")["value"][0]
        assert set(note) == set(published)
        assert note["subscriptionId"] == created["id"] and note["clientState"] == CLIENT_STATE
        assert note["resource"] == f"Users/{mailbox.guid}/Events/{note['resourceData']['id']}"
        assert note["resourceData"]["@odata.type"] == "#Microsoft.Graph.Event"
        assert note["resourceData"]["@odata.id"] == note["resource"]
        assert note["resourceData"]["@odata.etag"].startswith('W/"')

        event = add_event(client)
        client.patch(f"/users/{ANN}/events/{event['id']}", json={"subject": "changed"})
        client.delete(f"/users/{ANN}/events/{event['id']}")
        account = ews_account(graph_emulator, ANN)
        save_item(account, "over EWS", EWSDateTime(2026, 12, 5, 9, tzinfo=EWSTimeZone("UTC")))
        account.protocol.close()
        wait_until(lambda: sum(len(p.json()["value"]) for p in receiver.notifications()) >= 7)
        later = [n for p in receiver.notifications()[1:] for n in p.json()["value"]]
        assert [(n["changeType"], n["resourceData"]["id"] == event["id"]) for n in later] == [
            ("created", True),
            ("updated", True),
            ("deleted", True),
            ("created", False),
        ]


def test_unacknowledged_notifications_are_retried_then_dropped(fast_emulator: Emulator, receiver: Receiver) -> None:
    receiver.statuses = [500, 503]
    with graph(fast_emulator) as client:
        subscribe(client, fast_emulator, receiver, minutes=4000)  # outlives the 4 hours of retries
        event = add_event(client)
        posts = receiver.wait_for(3)
        assert [p.json()["value"][0]["resourceData"]["id"] for p in posts] == [event["id"]] * 3
        assert [e["outcome"] for e in log(fast_emulator)] == ["failed: HTTP 500", "failed: HTTP 503", "ok"]

        receiver.statuses = [500] * 1000
        lost = add_event(client, "never acknowledged")
        wait_until(lambda: len(receiver.notifications()) >= 5)
        fast_emulator.advance(4 * 3600 + 60)  # Graph gives up after 4 hours
        wait_until(lambda: any(e["outcome"] == "dropped" for e in log(fast_emulator)))
        receiver.statuses = []
    with graph(fast_emulator) as client:  # a new token: four hours have passed
        after = add_event(client, "after")
        wait_until(
            lambda: (
                after["id"] in {n["resourceData"]["id"] for p in receiver.notifications() for n in p.json()["value"]}
            )
        )
        assert receiver.notifications()[-1].json()["value"][0]["resourceData"]["id"] == after["id"]
        assert lost["id"] != after["id"]


def test_a_slow_answer_counts_as_a_failure(fast_emulator: Emulator, receiver: Receiver) -> None:
    receiver.delay = 3.3  # over the 3 seconds Graph waits
    with graph(fast_emulator) as client:
        subscribe(client, fast_emulator, receiver)
        add_event(client)
        wait_until(lambda: len(log(fast_emulator)) >= 1, timeout=10)
        receiver.delay = 0
        wait_until(lambda: any(e["outcome"] == "ok" for e in log(fast_emulator)))
        assert log(fast_emulator)[0]["outcome"] == "failed: ReadTimeout"


def test_a_subscription_ends_at_its_expiry(graph_emulator: Emulator, receiver: Receiver) -> None:
    with graph(graph_emulator) as client:
        created = subscribe(client, graph_emulator, receiver, minutes=50)
        graph_emulator.advance(51 * 60)
        assert client.get(f"/subscriptions/{created['id']}").status_code == 404
        add_event(client)
        time.sleep(0.5)  # bounded: nothing may arrive
        assert receiver.notifications() == []


def test_renewal_and_deletion(graph_emulator: Emulator, receiver: Receiver) -> None:
    with graph(graph_emulator) as client:
        created = subscribe(client, graph_emulator, receiver, minutes=50)
        later = (graph_emulator.exchange.now() + dt.timedelta(hours=2)).isoformat()
        renewed = client.patch(f"/subscriptions/{created['id']}", json={"expirationDateTime": later})
        assert renewed.status_code == 200 and renewed.json()["expirationDateTime"] != created["expirationDateTime"]
        graph_emulator.advance(55 * 60)  # past the first expiry, within the token's hour
        assert client.get(f"/subscriptions/{created['id']}").status_code == 200
        refused = client.patch(f"/subscriptions/{created['id']}", json={"lifecycleNotificationUrl": receiver.url})
        assert refused.status_code == 400
        assert client.delete(f"/subscriptions/{created['id']}").status_code == 204
        assert client.get(f"/subscriptions/{created['id']}").status_code == 404
        add_event(client)
        time.sleep(0.5)  # bounded: nothing may arrive
        assert receiver.notifications() == []


def lifecycle(emu: Emulator, subscription_id: str, event: str) -> httpx.Response:
    return httpx.post(f"{emu.base_url}/emulator/graph/subscriptions/{subscription_id}/lifecycle", json={"event": event})


def test_reauthorization_required_holds_notifications_until_reauthorized(
    graph_emulator: Emulator, receiver: Receiver
) -> None:
    with graph(graph_emulator) as client:
        created = subscribe(client, graph_emulator, receiver, lifecycleNotificationUrl=receiver.url + "/lifecycle")
        assert lifecycle(graph_emulator, created["id"], "reauthorizationRequired").status_code == 200
        note = receiver.wait_for(1, "/lifecycle")[0].json()["value"][0]
        assert set(note) == set(sample("lifecycle/reauthorizationRequired.json")["value"][0])
        assert note["lifecycleEvent"] == "reauthorizationRequired" and note["subscriptionId"] == created["id"]
        event = add_event(client)
        time.sleep(0.5)  # bounded: held back while reauthorization is required
        assert receiver.notifications() == []
        assert client.post(f"/subscriptions/{created['id']}/reauthorize").status_code == 204
        delivered = receiver.wait_for(1)[0].json()["value"]
        assert delivered[0]["resourceData"]["id"] == event["id"]


def test_subscription_removed_and_missed_lifecycle_events(graph_emulator: Emulator, receiver: Receiver) -> None:
    with graph(graph_emulator) as client:
        kept = subscribe(client, graph_emulator, receiver, lifecycleNotificationUrl=receiver.url + "/lifecycle")
        removed = subscribe(client, graph_emulator, receiver, lifecycleNotificationUrl=receiver.url + "/lifecycle")
        assert lifecycle(graph_emulator, kept["id"], "missed").status_code == 200
        assert lifecycle(graph_emulator, removed["id"], "subscriptionRemoved").status_code == 200
        notes = [p.json()["value"][0] for p in receiver.wait_for(2, "/lifecycle")]
        assert sorted((n["subscriptionId"], n["lifecycleEvent"]) for n in notes) == sorted(
            [(kept["id"], "missed"), (removed["id"], "subscriptionRemoved")]
        )
        wait_until(lambda: client.get(f"/subscriptions/{removed['id']}").status_code == 404)
        assert client.get(f"/subscriptions/{kept['id']}").status_code == 200
        assert lifecycle(graph_emulator, kept["id"], "earthquake").status_code == 400


def test_lost_notifications_fault(graph_emulator: Emulator, receiver: Receiver) -> None:
    graph_emulator.set_faults(graph_lost_notifications=1)
    with graph(graph_emulator) as client:
        subscribe(client, graph_emulator, receiver)
        add_event(client, "lost")
        wait_until(lambda: [e["outcome"] for e in log(graph_emulator)] == ["lost"])
        second = add_event(client, "delivered")
        assert receiver.wait_for(1)[0].json()["value"][0]["resourceData"]["id"] == second["id"]

"""Exchange Online through Microsoft Graph, end to end, on SQLite and PostgreSQL: calsync's Graph source (MSAL
tokens from the emulator's Entra ID over https, delta reads, $batch) against the Graph emulator, notifications
over real HTTP to the listener's Graph door, subscriptions managed by the job; changes made through Graph itself
(as Outlook on the web would) and through EWS, since both read one mailbox. At quiescence the application
calendar equals the emulator's truth, whatever happened on the way: throttling, lost notifications, an expired
delta token, a removed subscription, a revoked token."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from calsync.emulator import Emulator
from calsync.jobs.manage_subscriptions import manage
from calsync.settings import listener_callback_url
from calsync.store import jobs as job_store
from calsync.store import operators, subscriptions
from calsync.store.status import operator_statuses

from .conftest import start_emulator
from .test_emulator_graph_setup import event_body
from .test_sync_end_to_end import Harness

TENANT = "contoso.onmicrosoft.com"
CLIENT, SECRET = "5f1c2a9e-0000-4000-8000-00000000c0de", "graph-app-secret~42"
ANN, BOB = "ann@example.com", "bob@example.com"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def graph_emulator(schema_dir: Path, **kwargs: Any) -> Emulator:
    """EWS over http and Graph (with its token endpoint) over https on a second port, one mailbox model; http
    notification URLs allowed, since the test listener has no certificate."""
    return start_emulator(
        schema_dir,
        mailboxes=[],
        https_port=0,
        graph_apps=[f"{TENANT}:{CLIENT}:{SECRET}"],
        graph_allow_http=True,
        **kwargs,
    )


def graph_settings(emulator: Emulator) -> dict[str, Any]:
    assert emulator.https_base_url is not None and emulator.ca_file is not None
    return {
        "graph_tenant_id": TENANT,
        "graph_client_id": CLIENT,
        "graph_client_secret": SECRET,
        "graph_authority": emulator.https_base_url,
        "graph_endpoint": emulator.graph_url,
        "graph_ca_file": emulator.ca_file,
    }


class GraphHarness(Harness):
    """calsync with both connections, EWS and Graph, to one emulated tenant."""

    def enable(self, *emails: str, source: str = "graph") -> None:  # type: ignore[override]
        with self.runtime.db.transaction() as session:
            for email in emails:
                if operators.get(session, email) is None:
                    operators.add(session, email, enabled=True, source=source)
                else:
                    operators.set_enabled(session, email, True)
            job_store.request_run(session, job_store.MANAGE_SUBSCRIPTIONS)
        self.runtime.scheduler.poke()

    def graph(self) -> httpx.Client:
        """The emulated tenant's Graph, as another app (a user's client) changes calendars through it."""
        emu = self.emulator
        token = httpx.post(
            f"{emu.https_base_url}/{TENANT}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": CLIENT,
                "client_secret": SECRET,
                "scope": "https://graph.microsoft.com/.default",
            },
            verify=_trust(emu),
        ).json()["access_token"]
        return httpx.Client(
            base_url=emu.graph_url, headers={"Authorization": f"Bearer {token}"}, verify=_trust(emu), timeout=20
        )


def _trust(emu: Emulator) -> Any:
    import ssl

    return ssl.create_default_context(cafile=emu.ca_file)


@pytest.fixture
def gh(schema_dir: Path, database_url: str, tmp_path: Path) -> Iterator[GraphHarness]:
    emulator = graph_emulator(schema_dir)
    emulator.add_mailbox(ANN, populate_count=40, seed=21)
    emulator.add_mailbox(BOB, populate_count=20, seed=22)
    h = GraphHarness(emulator, database_url, tmp_path, exchange_version="Exchange365", **graph_settings(emulator))
    yield h
    h.stop()
    emulator.stop()
    assert emulator.violations == []


def _day(days: int, hour: int = 9) -> str:
    day = (utcnow() + dt.timedelta(days=days)).date()
    return f"{day.isoformat()}T{hour:02d}:00:00"


def test_initial_sync_and_every_kind_of_change_made_through_graph(gh: GraphHarness) -> None:
    gh.enable(ANN, BOB)
    gh.assert_matches(ANN, BOB)
    with gh.runtime.db.read() as session:
        by_email = {s.email: s for s in operator_statuses(session)}
    assert by_email[ANN].source == "graph" and by_email[ANN].subscribed and by_email[ANN].appointments > 0

    with gh.graph() as graph:
        user = f"/users/{ANN}"
        single = graph.post(f"{user}/events", json=event_body("One-off", _day(3), _day(3, 10))).json()
        series = graph.post(
            f"{user}/events",
            json=event_body(
                "Standup",
                _day(1),
                _day(1, 10),
                "W. Europe Standard Time",
                recurrence={
                    "pattern": {"type": "daily", "interval": 1},
                    "range": {"type": "numbered", "startDate": _day(1)[:10], "numberOfOccurrences": 10},
                },
            ),
        ).json()
        all_day = graph.post(
            f"{user}/events",
            json=event_body("Holiday", _day(5, 0), _day(6, 0), isAllDay=True, sensitivity="private"),
        ).json()
        meeting = graph.post(
            f"{user}/events",
            json=event_body(
                "Design review",
                _day(4, 13),
                _day(4, 14),
                attendees=[{"emailAddress": {"address": BOB}, "type": "required"}],
            ),
        ).json()
        gh.assert_matches(ANN, BOB)

        instances = graph.get(
            f"{user}/events/{series['id']}/instances",
            params={"startDateTime": _day(0, 0) + "Z", "endDateTime": _day(30, 0) + "Z", "$top": "20"},
        ).json()["value"]
        assert len(instances) == 10
        second, third = instances[1], instances[2]
        moved = graph.patch(
            f"{user}/events/{second['id']}",
            json={
                "subject": "Standup (late)",
                "start": {"dateTime": _day(2, 11), "timeZone": "UTC"},
                "end": {"dateTime": _day(2, 12), "timeZone": "UTC"},
            },
        )
        assert moved.status_code == 200, moved.text
        assert graph.delete(f"{user}/events/{third['id']}").status_code == 204
        assert graph.patch(f"{user}/events/{single['id']}", json={"location": {"displayName": "Room 7"}}).is_success
        assert graph.post(f"{user}/events/{meeting['id']}/cancel", json={"comment": "no"}).status_code == 202
        gh.assert_matches(ANN, BOB)

        assert graph.patch(f"{user}/events/{series['id']}", json={"subject": "Daily standup"}).is_success
        assert graph.delete(f"{user}/events/{all_day['id']}").status_code == 204
        assert graph.delete(f"{user}/events/{single['id']}").status_code == 204
        gh.assert_matches(ANN, BOB)

    # The same mailbox changed through EWS (an Outlook on the desktop): Graph's subscription sees it too.
    outlook = gh.emulator.outlook(ANN)
    made = outlook.create({"subject": "From Outlook", "start": _day(7, 8) + "Z", "timezone": "Europe/Berlin"})
    gh.assert_matches(ANN)
    outlook.delete(made.item_id)
    gh.assert_matches(ANN)


def test_graph_faults_lose_nothing(gh: GraphHarness) -> None:
    gh.enable(ANN)
    gh.assert_matches(ANN)
    outlook = gh.emulator.outlook(ANN)

    # 429 storms with Retry-After: passes retry after the wait Graph asked for
    gh.emulator.set_faults(graph_throttle=6, graph_retry_after=0.2)
    outlook.create({"subject": "During a storm", "start": _day(2, 8) + "Z"})
    gh.assert_matches(ANN, timeout=60)

    # notifications lost on the way: the next one (or the reconciliation) catches up
    gh.emulator.set_faults(graph_lost_notifications=1)
    lost = outlook.create({"subject": "Lost notification", "start": _day(3, 8) + "Z"})
    log = f"{gh.emulator.base_url}/emulator/graph/notification-log"
    gh.wait_for(lambda: any(n["outcome"] == "lost" for n in httpx.get(log).json()))
    outlook.create({"subject": "Next change", "start": _day(3, 10) + "Z"})
    gh.assert_matches(ANN)

    # an expired delta token: a full read of the window, sweeping what is gone
    outlook.delete(lost.item_id)
    httpx.post(f"{gh.emulator.base_url}/emulator/mailboxes/{ANN}/expire-sync-states").raise_for_status()
    outlook.create({"subject": "After expiry", "start": _day(4, 8) + "Z"})
    gh.assert_matches(ANN)

    # duplicated and reordered notifications: hints only, the delta decides
    with gh.runtime.db.read() as session:
        sub = subscriptions.for_operator(session, operators.require(session, ANN).id)
        assert sub is not None
        subscription_id, client_state = sub.subscription_id, sub.client_state
    late = outlook.create({"subject": "Reordered", "start": _day(4, 12) + "Z"})
    notes = [
        {
            "subscriptionId": subscription_id,
            "clientState": client_state,
            "changeType": kind,
            "resource": f"x/{i}",
            "resourceData": {"id": late.item_id},
        }
        for i, kind in enumerate(["updated", "created", "created", "updated"])
    ]
    door = listener_callback_url(gh.settings, "graph")
    assert httpx.post(door, json={"value": notes}).status_code == 202
    assert httpx.post(door, json={"value": notes[::-1]}).status_code == 202
    gh.assert_matches(ANN)

    # a revoked token: MSAL's cached token is refused once, a new one is fetched
    httpx.post(f"{gh.emulator.base_url}/emulator/graph/tokens/revoke", json={}).raise_for_status()
    outlook.create({"subject": "After revocation", "start": _day(5, 8) + "Z"})
    gh.assert_matches(ANN)


def test_subscriptions_are_renewed_recreated_and_deleted(gh: GraphHarness) -> None:
    gh.enable(ANN)
    gh.assert_matches(ANN)
    db, sources = gh.runtime.db, gh.runtime.sources

    def held() -> Any:
        with db.read() as session:
            op = operators.require(session, ANN)
            return subscriptions.for_operator(session, op.id)

    def url(door: str) -> str:
        return listener_callback_url(gh.settings, door)

    first = held()
    assert first.source == "graph" and first.client_state and first.expires_at > utcnow() + dt.timedelta(hours=60)
    # renewed ahead of its expiry: the same subscription, a later expiry
    result = manage(db, sources, callback_url=url, status_frequency=1, renew_before=dt.timedelta(days=5))
    assert result.renewed == [ANN], result.summary()
    assert held().subscription_id == first.subscription_id

    # Graph asks for reauthorization: the next run renews it (the same subscription)
    lifecycle_url = f"{gh.emulator.base_url}/emulator/graph/subscriptions/{first.subscription_id}/lifecycle"
    httpx.post(lifecycle_url, json={"event": "reauthorizationRequired"}).raise_for_status()
    gh.wait_for(lambda: held().lifecycle_event == "reauthorizationRequired")
    result = manage(db, sources, callback_url=url, status_frequency=1)
    assert result.renewed == [ANN] and held().lifecycle_event is None, result.summary()

    # Graph lost notifications (lifecycle missed): a catch-up pass reads what they were about
    gh.emulator.set_faults(graph_lost_notifications=1)
    outlook = gh.emulator.outlook(ANN)
    outlook.create({"subject": "Notification lost", "start": _day(2, 10) + "Z"})
    log = f"{gh.emulator.base_url}/emulator/graph/notification-log"
    gh.wait_for(lambda: any(n["outcome"] == "lost" for n in httpx.get(log).json()))
    passes = len(gh.passes)
    httpx.post(lifecycle_url, json={"event": "missed"}).raise_for_status()
    gh.wait_for(lambda: len(gh.passes) > passes)
    gh.assert_matches(ANN)

    # Graph removes it (lifecycle subscriptionRemoved): made anew, with a catch-up pass
    remote = httpx.get(f"{gh.emulator.base_url}/emulator/graph/subscriptions").json()
    [mine] = [s for s in remote if s["id"] == first.subscription_id]
    httpx.post(
        f"{gh.emulator.base_url}/emulator/graph/subscriptions/{first.subscription_id}/lifecycle",
        json={"event": "subscriptionRemoved"},
    ).raise_for_status()
    gh.wait_for(lambda: held().lifecycle_event == "subscriptionRemoved")
    result = manage(db, sources, callback_url=url, status_frequency=1)
    assert result.recreated == [ANN], result.summary()
    assert held().subscription_id != first.subscription_id
    gh.emulator.outlook(ANN).create({"subject": "After removal", "start": _day(2, 8) + "Z"})
    gh.assert_matches(ANN)

    # sync off: the subscription is deleted in Graph too
    second = held().subscription_id
    with db.transaction() as session:
        operators.set_enabled(session, ANN, False)
    result = manage(db, sources, callback_url=url, status_frequency=1)
    assert result.dropped == [ANN]
    remote = httpx.get(f"{gh.emulator.base_url}/emulator/graph/subscriptions").json()
    assert {s["id"]: s["state"] for s in remote if s["id"] in (second, mine["id"])} == {
        second: "deleted",
        mine["id"]: "removed",
    }


# --- both protocols, and the move -------------------------------------------------------------------------------

AS_APP = {"Authorization": "Bearer calendar-reader-token-0123456789"}  # the Harness's calendar token
SOURCE_FIELDS = ("item_id",)  # what may differ between the protocols: the source's own id


def _rich_calendar(outlook: Any) -> None:
    """What a calendar holds that the two protocols could render differently: series in a zone with a moved and
    a deleted occurrence, an all-day event, a private one, a cancelled meeting, a monthly series."""
    series = outlook.create(
        {
            "subject": "Standup",
            "start": _day(1, 9),
            "timezone": "Europe/Berlin",
            "recurrence": {"pattern": "Daily", "range": "Numbered", "count": 12},
        }
    )
    outlook.update_occurrence(series.item_id, 3, {"subject": "Standup (late)", "start": _day(3, 11) + "Z"})
    outlook.delete_occurrence(series.item_id, 5)
    outlook.create(
        {"subject": "Holiday", "all_day": True, "timezone": "Europe/Berlin", "start": _day(6)[:10], "end": _day(7)[:10]}
    )
    outlook.create({"subject": "Doctor", "start": _day(2, 15) + "Z", "sensitivity": "Private"})
    meeting = outlook.create({"subject": "Budget", "start": _day(4, 13) + "Z", "attendees": [{"email": BOB}]})
    outlook.delete(meeting.item_id)  # the organizer cancels: BOB keeps it, cancelled
    outlook.create(
        {
            "subject": "Monthly review",
            "start": _day(2, 16),
            "timezone": "America/New_York",
            "recurrence": {
                "pattern": "AbsoluteMonthly",
                "day_of_month": int(_day(2)[8:10]),
                "range": "Numbered",
                "count": 6,
            },
        }
    )


def _app_view(gh: GraphHarness, email: str) -> tuple[list[dict[str, Any]], str]:
    """The application's view: the appointments JSON of the next 200 days (without the source's own ids), and
    calendar.ics (without its time stamp)."""
    start, end = utcnow() - dt.timedelta(days=30), utcnow() + dt.timedelta(days=200)
    found = httpx.get(
        f"{gh.base}/api/v1/operators/{email}/appointments",
        params={"start": start.isoformat(), "end": end.isoformat()},
        headers=AS_APP,
    )
    assert found.status_code == 200, found.text
    appointments = [{k: v for k, v in a.items() if k not in SOURCE_FIELDS} for a in found.json()["appointments"]]
    ics = httpx.get(f"{gh.base}/api/v1/operators/{email}/calendar.ics", headers=AS_APP)
    assert ics.status_code == 200
    lines = [line for line in ics.text.splitlines() if not line.startswith("DTSTAMP")]
    return sorted(appointments, key=lambda a: (a["start"], a["id"])), "\n".join(sorted(lines))


def _move(gh: GraphHarness, email: str, to: str) -> None:
    with gh.runtime.db.transaction() as session:
        operators.move(session, email, to)
        job_store.request_run(session, job_store.MANAGE_SUBSCRIPTIONS)
    gh.runtime.scheduler.poke()
    gh.runtime.processor.wake()


def _source_of(gh: GraphHarness, email: str) -> tuple[str, str | None, str | None]:
    with gh.runtime.db.read() as session:
        [status] = [s for s in operator_statuses(session) if s.email == email]
        op = operators.require(session, email)
        sub = subscriptions.for_operator(session, op.id)
    return status.source, status.moving_from, None if sub is None else sub.source


def _moved(gh: GraphHarness, email: str, to: str, timeout: float = 30) -> None:
    """Wait until the move is complete: the operator, its finished full read and its subscription on ``to``."""
    try:
        gh.wait_for(lambda: _source_of(gh, email) == (to, None, to), timeout=timeout)
    except AssertionError:
        with gh.runtime.db.read() as session:
            [status] = [s for s in operator_statuses(session) if s.email == email]
        raise AssertionError(f"{email} did not move to {to}: {_source_of(gh, email)}, {status}") from None


def test_the_same_calendar_through_ews_and_graph_and_a_move_keeps_it(gh: GraphHarness) -> None:
    _rich_calendar(gh.emulator.outlook(ANN))
    gh.enable(ANN, BOB, source="ews")
    gh.assert_matches(ANN, BOB)
    ews_view = {email: _app_view(gh, email) for email in (ANN, BOB)}
    assert any(a["exception"] for a in ews_view[ANN][0]) and any(a["all_day"] for a in ews_view[ANN][0])
    assert any(a["private"] for a in ews_view[ANN][0])
    assert any(a["status"] == "cancelled" for a in ews_view[BOB][0])

    for email in (ANN, BOB):
        _move(gh, email, "graph")
    _moved(gh, ANN, "graph")
    _moved(gh, BOB, "graph")
    gh.assert_matches(ANN, BOB)
    for email in (ANN, BOB):
        appointments, ics = _app_view(gh, email)
        assert appointments == ews_view[email][0]  # same occurrences, same fields, same calsync ids
        assert ics == ews_view[email][1]

    # and back: an operator may return to EWS (a mailbox moved back on premises) just the same
    _move(gh, ANN, "ews")
    _moved(gh, ANN, "ews")
    gh.assert_matches(ANN)
    assert _app_view(gh, ANN) == ews_view[ANN]


def test_a_move_during_a_stream_of_changes_keeps_every_id_and_loses_nothing(gh: GraphHarness) -> None:
    import random
    import threading

    _rich_calendar(gh.emulator.outlook(ANN))
    gh.enable(ANN, source="ews")
    gh.assert_matches(ANN)
    before = {a["id"]: a for a in _app_view(gh, ANN)[0]}
    outlook, rng, stop = gh.emulator.outlook(ANN), random.Random(7), threading.Event()
    made: list[str] = []
    changed: set[str] = set()  # subjects of items changed or deleted during the stream

    def stream() -> None:
        number = 0
        while not stop.is_set():
            number += 1
            roll = rng.random()
            items = [i for i in outlook.items() if i.recurrence is None and i.subject and "Stream" in i.subject]
            if roll < 0.5 or not items:
                made.append(
                    outlook.create({"subject": f"Stream {number}", "start": _day(8 + number % 20, 8) + "Z"}).item_id
                )
            elif roll < 0.8:
                victim = rng.choice(items)
                changed.add(victim.subject)
                outlook.update(victim.item_id, {"subject": f"{victim.subject} (edited)"})
            else:
                victim = rng.choice(items)
                changed.add(victim.subject)
                outlook.delete(victim.item_id)
            stop.wait(0.05)

    worker = threading.Thread(target=stream)
    worker.start()
    try:
        stop.wait(1.0)
        _move(gh, ANN, "graph")
        stop.wait(3.0)
    finally:
        stop.set()
        worker.join(timeout=10)
    _moved(gh, ANN, "graph")
    gh.assert_matches(ANN, timeout=60)
    after = {a["id"]: a for a in _app_view(gh, ANN)[0]}
    # every appointment that existed before the move is still there under the same id, unchanged
    assert set(before) <= set(after), sorted(set(before) - set(after))[:5]
    assert all(after[i] == a for i, a in before.items())
    assert len(made) > 10

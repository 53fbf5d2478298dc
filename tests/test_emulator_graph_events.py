"""Events through Graph, with msgraph-sdk and httpx: create, read, list, change (If-Match), delete and cancel;
series with exceptions and cancelled occurrences in instances, calendarView, cancelledOccurrences and
exceptionOccurrences; the same items seen through EWS (exchangelib) and Graph; time zones; refused input; and the
shape of what is written, against Microsoft's samples."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from exchangelib import EWSDateTime, EWSTimeZone
from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone
from msgraph.generated.models.event import Event
from msgraph.generated.models.event_type import EventType
from msgraph.generated.models.o_data_errors.o_data_error import ODataError

from calsync.emulator import Emulator

from .conftest import ews_account, save_item
from .test_emulator_graph_setup import (
    ANN,
    BOB,
    event_body,
    graph,
    graph_emulator_fixture,  # noqa: F401 (fixture)
    run,
    sdk,
)

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "graph" / "samples"
WINDOW = {"startDateTime": "2026-11-01T00:00:00Z", "endDateTime": "2027-02-01T00:00:00Z"}
BERLIN = "W. Europe Standard Time"


def ews_id(graph_id: str) -> str:
    return graph_id.replace("-", "+").replace("_", "/")


def weekly_series(client: httpx.Client, count: int = 5) -> dict[str, Any]:
    body = event_body(
        "Standup",
        "2026-12-01T09:00:00",
        "2026-12-01T09:30:00",
        BERLIN,
        recurrence={
            "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["tuesday"], "firstDayOfWeek": "monday"},
            "range": {"type": "numbered", "startDate": "2026-12-01", "numberOfOccurrences": count},
        },
    )
    answer = client.post(f"/users/{ANN}/events", json=body)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def test_event_round_trip_through_the_sdk(graph_emulator: Emulator) -> None:
    client = sdk(graph_emulator)
    events = client.users.by_user_id(ANN).events

    async def scenario() -> None:
        created = await events.post(
            Event(
                subject="Review",
                start=DateTimeTimeZone(date_time="2026-12-01T09:00:00", time_zone=BERLIN),
                end=DateTimeTimeZone(date_time="2026-12-01T10:00:00", time_zone=BERLIN),
            )
        )
        assert created is not None and created.id
        assert created.type == EventType.SingleInstance
        assert created.start is not None and created.start.time_zone == "UTC"
        assert str(created.start.date_time).startswith("2026-12-01T08:00:00")
        assert created.original_start_time_zone == BERLIN
        got = await events.by_event_id(created.id).get()
        assert got is not None and got.subject == "Review" and got.change_key == created.change_key
        changed = await events.by_event_id(created.id).patch(Event(subject="Review (moved)"))
        assert changed is not None and changed.subject == "Review (moved)" and changed.change_key != created.change_key
        await events.by_event_id(created.id).delete()
        with pytest.raises(ODataError) as missing:
            await events.by_event_id(created.id).get()
        assert missing.value.response_status_code == 404
        assert missing.value.error is not None and missing.value.error.code == "ErrorItemNotFound"

    run(scenario())


def test_lists_page_with_absolute_next_links(graph_emulator: Emulator) -> None:
    with graph(graph_emulator) as client:
        for n in range(5):
            day = f"2026-12-0{n + 1}"
            client.post(f"/users/{ANN}/events", json=event_body(f"e{n}", f"{day}T09:00:00", f"{day}T10:00:00"))
        seen: list[str] = []
        url: str | None = f"{graph_emulator.graph_url}/users/{ANN}/events?$top=2"
        for _ in range(5):
            if url is None:
                break
            assert url.startswith(graph_emulator.graph_url)
            page = client.get(url).json()
            seen += [e["subject"] for e in page["value"]]
            url = page.get("@odata.nextLink")
        assert seen == ["e0", "e1", "e2", "e3", "e4"]
        view = client.get(f"/users/{ANN}/calendarView", params={**WINDOW, "$top": "3", "$select": "subject"}).json()
        assert [e["subject"] for e in view["value"]] == ["e0", "e1", "e2"]
        assert set(view["value"][0]) == {"@odata.etag", "id", "subject"}
        assert "$skip=3" in view["@odata.nextLink"]


def test_if_match_guards_changes_and_deletes(graph_emulator: Emulator) -> None:
    with graph(graph_emulator) as client:
        created = client.post(
            f"/users/{ANN}/events", json=event_body("x", "2026-12-01T09:00:00", "2026-12-01T10:00:00")
        ).json()
        url, etag = f"/users/{ANN}/events/{created['id']}", created["@odata.etag"]
        assert etag == f'W/"{created["changeKey"]}"'
        first = client.patch(url, json={"subject": "first"}, headers={"If-Match": etag})
        assert first.status_code == 200
        stale = client.patch(url, json={"subject": "second"}, headers={"If-Match": etag})
        assert stale.status_code == 412 and stale.json()["error"]["code"] == "ErrorIrresolvableConflict"
        assert client.get(url).json()["subject"] == "first"
        assert client.delete(url, headers={"If-Match": etag}).status_code == 412
        assert client.delete(url, headers={"If-Match": first.json()["@odata.etag"]}).status_code == 204
        assert client.get(url).status_code == 404


def test_a_series_with_an_exception_and_a_cancelled_occurrence(graph_emulator: Emulator) -> None:
    with graph(graph_emulator) as client:
        master = weekly_series(client)
        instances = client.get(f"/users/{ANN}/events/{master['id']}/instances", params=WINDOW).json()["value"]
        assert [i["type"] for i in instances] == ["occurrence"] * 5
        assert {i["seriesMasterId"] for i in instances} == {master["id"]}
        assert instances[1]["originalStart"] == "2026-12-08T08:00:00Z"
        moved = client.patch(
            f"/users/{ANN}/events/{instances[1]['id']}",
            json={
                "subject": "Standup (late)",
                "start": {"dateTime": "2026-12-08T11:00:00", "timeZone": BERLIN},
                "end": {"dateTime": "2026-12-08T11:30:00", "timeZone": BERLIN},
            },
        )
        assert moved.status_code == 200 and moved.json()["type"] == "exception"
        assert client.delete(f"/users/{ANN}/events/{instances[2]['id']}").status_code == 204

        after = client.get(f"/users/{ANN}/events/{master['id']}/instances", params=WINDOW).json()["value"]
        assert [(i["type"], i["start"]["dateTime"][:16]) for i in after] == [
            ("occurrence", "2026-12-01T08:00"),
            ("exception", "2026-12-08T10:00"),
            ("occurrence", "2026-12-22T08:00"),
            ("occurrence", "2026-12-29T08:00"),
        ]
        view = client.get(f"/users/{ANN}/calendarView", params=WINDOW).json()["value"]
        assert [i["id"] for i in view] == [i["id"] for i in after]

        detail = client.get(
            f"/users/{ANN}/events/{master['id']}",
            params={"$select": "subject,cancelledOccurrences", "$expand": "exceptionOccurrences"},
        ).json()
        assert detail["cancelledOccurrences"] == [f"OID.{master['id']}.2026-12-15"]
        assert [e["subject"] for e in detail["exceptionOccurrences"]] == ["Standup (late)"]
        assert "cancelledOccurrences" not in client.get(f"/users/{ANN}/events/{master['id']}").json()

    # The same series through EWS: one modified and one deleted occurrence.
    account = ews_account(graph_emulator, ANN)
    ews_master = account.calendar.get(id=ews_id(master["id"]))
    assert [o.start.isoformat() for o in ews_master.modified_occurrences] == ["2026-12-08T10:00:00+00:00"]
    assert [o.start.isoformat() for o in ews_master.deleted_occurrences] == ["2026-12-15T08:00:00+00:00"]
    account.protocol.close()


def test_changing_a_series_pattern_drops_its_exceptions(graph_emulator: Emulator) -> None:
    with graph(graph_emulator) as client:
        master = weekly_series(client)
        first = client.get(f"/users/{ANN}/events/{master['id']}/instances", params=WINDOW).json()["value"][0]
        client.delete(f"/users/{ANN}/events/{first['id']}")
        recurrence = {**master["recurrence"], "range": {**master["recurrence"]["range"], "numberOfOccurrences": 3}}
        assert client.patch(f"/users/{ANN}/events/{master['id']}", json={"recurrence": recurrence}).status_code == 200
        instances = client.get(f"/users/{ANN}/events/{master['id']}/instances", params=WINDOW).json()["value"]
        assert len(instances) == 3


def test_an_item_is_the_same_through_ews_and_graph(graph_emulator: Emulator) -> None:
    account = ews_account(graph_emulator, ANN)
    berlin = EWSTimeZone("Europe/Berlin")
    saved = save_item(account, "From EWS", EWSDateTime(2026, 12, 3, 14, tzinfo=berlin), location="Room 1")
    from_ews = account.calendar.get(id=saved.id)
    with graph(graph_emulator) as client:
        seen = client.get(f"/users/{ANN}/events/{from_ews.id.replace('+', '-').replace('/', '_')}").json()
        assert seen["subject"] == "From EWS" and seen["location"]["displayName"] == "Room 1"
        assert seen["iCalUId"] == from_ews.uid and seen["changeKey"] == from_ews.changekey
        assert seen["start"] == {"dateTime": "2026-12-03T13:00:00.0000000", "timeZone": "UTC"}
        assert seen["originalStartTimeZone"] == BERLIN

        from_graph = client.post(
            f"/users/{ANN}/events",
            json=event_body(
                "From Graph",
                "2026-12-04T09:00:00",
                "2026-12-04T09:45:00",
                "Pacific Standard Time",
                categories=["Team"],
                body={"contentType": "html", "content": "<p>Agenda</p>"},
            ),
        ).json()
        item = account.calendar.get(id=ews_id(from_graph["id"]))
        assert item.subject == "From Graph" and item.uid == from_graph["iCalUId"] and item.categories == ["Team"]
        assert item.start == EWSDateTime(2026, 12, 4, 17, tzinfo=EWSTimeZone("UTC"))
        assert item._start_timezone.ms_id == "Pacific Standard Time"
        assert from_graph["bodyPreview"] == "Agenda"

        item.subject = "Changed over EWS"
        item.save(send_meeting_invitations="SendToNone")
        again = client.get(f"/users/{ANN}/events/{from_graph['id']}").json()
        assert again["subject"] == "Changed over EWS" and again["changeKey"] == item.changekey
    account.protocol.close()


def test_prefer_outlook_timezone_is_applied_and_echoed(graph_emulator: Emulator) -> None:
    with graph(graph_emulator) as client:
        created = client.post(
            f"/users/{ANN}/events", json=event_body("tz", "2026-12-01T09:00:00", "2026-12-01T10:00:00", BERLIN)
        ).json()
        url = f"/users/{ANN}/events/{created['id']}"
        pacific = client.get(url, headers={"Prefer": 'outlook.timezone="Pacific Standard Time"'})
        assert pacific.headers["Preference-Applied"] == 'outlook.timezone="Pacific Standard Time"'
        assert pacific.json()["start"] == {
            "dateTime": "2026-12-01T00:00:00.0000000",
            "timeZone": "Pacific Standard Time",
        }
        iana = client.get(url, headers={"Prefer": 'outlook.timezone="Asia/Tokyo"'}).json()
        assert iana["start"] == {"dateTime": "2026-12-01T17:00:00.0000000", "timeZone": "Asia/Tokyo"}
        unknown = client.get(url, headers={"Prefer": 'outlook.timezone="Mars/Olympus"'})
        assert "Preference-Applied" not in unknown.headers and unknown.json()["start"]["timeZone"] == "UTC"


def test_all_day_events_are_whole_days(graph_emulator: Emulator) -> None:
    with graph(graph_emulator) as client:
        body = event_body("Holiday", "2026-12-24T00:00:00", "2026-12-26T00:00:00", BERLIN, isAllDay=True)
        created = client.post(f"/users/{ANN}/events", json=body)
        assert created.status_code == 201
        shown = client.get(
            f"/users/{ANN}/events/{created.json()['id']}", headers={"Prefer": 'outlook.timezone="Tokyo Standard Time"'}
        ).json()
        assert shown["isAllDay"] and shown["start"]["dateTime"] == "2026-12-24T00:00:00.0000000"
        assert shown["end"]["dateTime"] == "2026-12-26T00:00:00.0000000"
        bad = client.post(
            f"/users/{ANN}/events",
            json=event_body("x", "2026-12-24T09:00:00", "2026-12-25T00:00:00", BERLIN, isAllDay=True),
        )
        assert bad.status_code == 400 and "midnight" in bad.json()["error"]["message"]


@pytest.mark.parametrize(
    ("change", "code", "words"),
    [
        ({"colour": "red"}, "RequestBodyRead", "'colour' does not exist"),
        ({"locations": []}, "ErrorInvalidRequest", "does not keep the event property 'locations'"),
        ({"start": {"dateTime": "soon", "timeZone": "UTC"}}, "ErrorInvalidRequest", "not an ISO 8601"),
        ({"start": {"dateTime": "2026-12-01T09:00:00", "timeZone": "Mars"}}, "TimeZoneNotSupportedException", "Mars"),
        (
            {"end": {"dateTime": "2026-12-01T08:00:00", "timeZone": "UTC"}},
            "ErrorCalendarEndDateIsEarlierThanStartDate",
            "",
        ),
        ({"showAs": "away"}, "ErrorInvalidRequest", "showAs"),
        (
            {
                "recurrence": {
                    "pattern": {"type": "weekly", "interval": 1},
                    "range": {"type": "noEnd", "startDate": "2026-12-01"},
                }
            },
            "ErrorPropertyValidationFailure",
            "days_of_week",
        ),
        (
            {"recurrence": {"pattern": {"type": "hourly"}, "range": {"type": "noEnd", "startDate": "2026-12-01"}}},
            "ErrorInvalidRequest",
            "pattern.type",
        ),
    ],
)
def test_bad_input_is_refused_with_a_message(
    graph_emulator: Emulator, change: dict[str, Any], code: str, words: str
) -> None:
    with graph(graph_emulator) as client:
        answer = client.post(
            f"/users/{ANN}/events", json={**event_body("x", "2026-12-01T09:00:00", "2026-12-01T10:00:00"), **change}
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == code and words in answer.json()["error"]["message"]
        assert client.get(f"/users/{ANN}/events").json()["value"] == []  # nothing stored


def test_an_organizer_cancels_a_meeting_and_attendees_see_it(graph_emulator: Emulator) -> None:
    with graph(graph_emulator) as client:
        meeting = client.post(
            f"/users/{ANN}/events",
            json=event_body(
                "Planning",
                "2026-12-02T09:00:00",
                "2026-12-02T10:00:00",
                attendees=[{"emailAddress": {"address": BOB, "name": "Bob"}, "type": "required"}],
            ),
        ).json()
        assert meeting["attendees"][0]["status"]["response"] == "none"
        bobs = client.get(f"/users/{BOB}/events").json()["value"]
        assert [(e["iCalUId"], e["isOrganizer"]) for e in bobs] == [(meeting["iCalUId"], False)]
        refused = client.post(f"/users/{BOB}/events/{bobs[0]['id']}/cancel", json={"Comment": "no"})
        assert refused.status_code == 400 and "organizer" in refused.json()["error"]["message"]
        assert client.post(f"/users/{ANN}/events/{meeting['id']}/cancel", json={"Comment": "Sorry"}).status_code == 202
        assert client.get(f"/users/{ANN}/events").json()["value"] == []
        assert client.get(f"/users/{BOB}/events/{bobs[0]['id']}").json()["isCancelled"] is True


# --- Microsoft's samples -------------------------------------------------------------------------------


def sample(name: str) -> Any:
    path = SAMPLES / name
    if not path.is_file():
        pytest.skip(f"Graph samples not found at {SAMPLES}")
    text = path.read_text()
    # event.create-recurring.response.seriesMaster.json has a trailing comma, as published.
    return json.loads(re.sub(r",(\s*[}\]])", r"\1", text))


def test_events_have_the_properties_of_microsofts_samples(graph_emulator: Emulator) -> None:
    with graph(graph_emulator) as client:
        single = client.post(
            f"/users/{ANN}/events",
            json=event_body("s", "2026-12-01T09:00:00", "2026-12-01T10:00:00", location={"displayName": "Hall"}),
        ).json()
        master = weekly_series(client)
        occurrence = client.get(f"/users/{ANN}/events/{master['id']}/instances", params=WINDOW).json()["value"][0]
    for published, ours in (
        (sample("events/event.create.response.singleInstance.json"), single),
        (sample("events/event.create-recurring.response.seriesMaster.json"), master),
    ):
        assert set(published) <= set(ours), set(published) - set(ours)
        for key in ("location", "responseStatus", "body", "start", "organizer"):
            assert set(published[key]) <= set(ours[key]) | {"uniqueId"}, key
    recurring = sample("events/event.create-recurring.response.seriesMaster.json")["recurrence"]
    assert set(recurring["pattern"]) == set(master["recurrence"]["pattern"])
    assert set(recurring["range"]) == set(master["recurrence"]["range"])
    assert set(sample("events/event.instances.response.occurrence-exception.json")["value"][1]) <= set(occurrence)
    for name in ("events/event.resource-schema.json",):
        emulated = set(sample(name)) - {"attachments", "calendar", "extensions", "instances", "onlineMeeting"}
        emulated -= {"multiValueExtendedProperties", "singleValueExtendedProperties", "originalStart"}
        assert emulated <= set(single), emulated - set(single)

"""calendarView/delta: msgraph-sdk's first ``delta()`` request and its following of nextLinks to a deltaLink, page
sizes from ``Prefer: odata.maxpagesize``, what a second round reports (created, updated, ``@removed`` for deleted
events and events that left the window), and 410 SyncStateNotFound for expired or unknown tokens."""

from __future__ import annotations

from typing import Any

import httpx
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.users.item.calendar_view.delta.delta_request_builder import DeltaRequestBuilder

from calsync.emulator import Emulator

from .test_emulator_graph_setup import (
    ANN,
    BOB,
    event_body,
    graph,
    graph_emulator_fixture,  # noqa: F401 (fixture)
    run,
    sdk,
)

WINDOW = {"startDateTime": "2026-11-01T00:00:00Z", "endDateTime": "2027-01-01T00:00:00Z"}


def fill(client: httpx.Client) -> dict[str, str]:
    """Four single events and a series of three in the window, one event outside it: subject -> id."""
    ids = {}
    for n, day in enumerate(("2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04", "2027-03-01")):
        created = client.post(f"/users/{ANN}/events", json=event_body(f"e{n}", f"{day}T09:00:00", f"{day}T10:00:00"))
        ids[f"e{n}"] = created.json()["id"]
    series = event_body(
        "series",
        "2026-12-07T09:00:00",
        "2026-12-07T09:30:00",
        recurrence={
            "pattern": {"type": "daily", "interval": 7},
            "range": {"type": "numbered", "startDate": "2026-12-07", "numberOfOccurrences": 3},
        },
    )
    ids["series"] = client.post(f"/users/{ANN}/events", json=series).json()["id"]
    return ids


def rounds(client: httpx.Client, url: str, page_size: int | None = None) -> tuple[list[list[dict[str, Any]]], str]:
    """Follow a round's nextLinks to its deltaLink: (the pages' entries, the deltaLink)."""
    headers = {"Prefer": f"odata.maxpagesize={page_size}"} if page_size else {}
    pages: list[list[dict[str, Any]]] = []
    for _ in range(50):
        answer = client.get(url, headers=headers)
        assert answer.status_code == 200, answer.text
        if page_size:
            assert answer.headers["Preference-Applied"] == f"odata.maxpagesize={page_size}"
        body = answer.json()
        pages.append(body["value"])
        if "@odata.deltaLink" in body:
            return pages, body["@odata.deltaLink"]
        url = body["@odata.nextLink"]
        assert url.startswith(str(client.base_url)) and "$skiptoken=" in url
    raise AssertionError("no deltaLink after 50 pages")


def test_the_sdk_pages_through_a_first_round(graph_emulator: Emulator) -> None:
    with graph(graph_emulator) as client:
        ids = fill(client)
    users = sdk(graph_emulator).users.by_user_id(ANN)

    async def first_round() -> tuple[list[Any], str]:
        query = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(
            start_date_time=WINDOW["startDateTime"], end_date_time=WINDOW["endDateTime"]
        )
        config = RequestConfiguration(query_parameters=query)
        config.headers.add("Prefer", "odata.maxpagesize=3")
        page = await users.calendar_view.delta.get(config)  # sends .../calendarView/delta()?...
        events: list[Any] = []
        for _ in range(20):
            assert page is not None and page.value is not None
            events += page.value
            if page.odata_delta_link:
                return events, page.odata_delta_link
            assert page.odata_next_link and page.odata_next_link.startswith(graph_emulator.graph_url)
            page = await users.calendar_view.delta.with_url(page.odata_next_link).get(config)
        raise AssertionError("no deltaLink")

    events, delta_link = run(first_round())
    assert delta_link.startswith(f"{graph_emulator.graph_url}/users/{ANN}/calendarView/delta?$deltatoken=")
    subjects = sorted(e.subject for e in events)
    assert subjects == ["e0", "e1", "e2", "e3", "series", "series", "series", "series"]  # master and 3 occurrences
    assert ids["e4"] not in {e.id for e in events}  # outside the window


def test_a_second_round_reports_changes_and_removals(graph_emulator: Emulator) -> None:
    with graph(graph_emulator) as client:
        ids = fill(client)
        pages, delta_link = rounds(
            client,
            f"/users/{ANN}/calendarView/delta?startDateTime=2026-11-01T00:00:00Z&endDateTime=2027-01-01T00:00:00Z",
            page_size=2,
        )
        assert [len(p) for p in pages] == [2, 2, 2, 2]
        quiet, delta_link = rounds(client, delta_link)
        assert quiet == [[]]

        client.patch(f"/users/{ANN}/events/{ids['e0']}", json={"subject": "e0 changed"})
        client.delete(f"/users/{ANN}/events/{ids['e1']}")
        moved_out = {"dateTime": "2027-02-01T09:00:00", "timeZone": "UTC"}
        client.patch(
            f"/users/{ANN}/events/{ids['e2']}",
            json={"start": moved_out, "end": {**moved_out, "dateTime": "2027-02-01T10:00:00"}},
        )
        added = client.post(
            f"/users/{ANN}/events", json=event_body("new", "2026-12-20T09:00:00", "2026-12-20T10:00:00")
        )
        client.post(f"/users/{BOB}/events", json=event_body("bob's", "2026-12-20T09:00:00", "2026-12-20T10:00:00"))

        pages, _ = rounds(client, delta_link)
        entries = [e for page in pages for e in page]
        removed = {e["id"] for e in entries if "@removed" in e}
        assert removed == {ids["e1"], ids["e2"]}
        assert all(
            e["@removed"] == {"reason": "deleted"} and set(e) == {"@odata.type", "id", "@removed"}
            for e in entries
            if "@removed" in e
        )
        assert sorted(e["subject"] for e in entries if "@removed" not in e) == ["e0 changed", "new"]
        assert added.json()["id"] in {e["id"] for e in entries}


def test_delta_links_answer_410_once_sync_states_expire(graph_emulator: Emulator) -> None:
    with graph(graph_emulator) as client:
        fill(client)
        _, delta_link = rounds(
            client,
            f"/users/{ANN}/calendarView/delta()?startDateTime=2026-11-01T00:00:00Z&endDateTime=2027-01-01T00:00:00Z",
            page_size=3,
        )
        first_next = client.get(
            f"/users/{ANN}/calendarView/delta", params=WINDOW, headers={"Prefer": "odata.maxpagesize=3"}
        ).json()["@odata.nextLink"]
        expired = httpx.post(f"{graph_emulator.base_url}/emulator/mailboxes/{ANN}/expire-sync-states")
        assert expired.status_code == 200
        for link in (delta_link, first_next):
            gone = client.get(link)
            assert gone.status_code == 410 and gone.json()["error"]["code"] == "SyncStateNotFound"
            assert "startDateTime=" in gone.headers["Location"]
        restart, _ = rounds(client, gone.headers["Location"])
        assert len([e for page in restart for e in page]) == 8
        never = client.get(f"/users/{ANN}/calendarView/delta?$deltatoken=never-issued")
        assert never.status_code == 410
        bobs = client.get(delta_link.replace(ANN, BOB))
        assert bobs.status_code == 410


def test_delta_refuses_what_graph_does_not_support_there(graph_emulator: Emulator) -> None:
    with graph(graph_emulator) as client:
        answer = client.get(f"/users/{ANN}/calendarView/delta", params={**WINDOW, "$select": "subject"})
        assert answer.status_code == 501 and answer.json()["error"]["code"] == "NotImplemented"
        no_window = client.get(f"/users/{ANN}/calendarView/delta")
        assert no_window.status_code == 400 and "StartDateTime and EndDateTime" in no_window.json()["error"]["message"]

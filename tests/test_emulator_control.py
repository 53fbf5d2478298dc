"""The emulator as other programs use it: the `calsync emulator` command, its JSON control API, and
sample calendars; plus the real request samples, sent as they are."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import httpx
import pytest
from exchangelib import EWSDateTime, EWSTimeZone

from calsync.emulator import EmulatorProcess

from .conftest import SAMPLES_DIR, ews_account

UTC = EWSTimeZone("UTC")


@pytest.fixture(scope="module")
def process():
    with EmulatorProcess(
        "--account",
        "svc:secret",
        "--mailbox",
        "ann@example.com",
        "--mailbox",
        "bob@example.com",
        "--exchange-version",
        "Exchange2019",
    ) as proc:
        yield proc


def url_id(item_id: str) -> str:
    return item_id.replace("+", "-").replace("/", "_")


def test_command_line_setup_and_exchangelib_access(process):
    health = process.control("GET", "/health")
    assert health == {"ok": True, "version": "Exchange2019", "mailboxes": 2}
    from exchangelib import BASIC, IMPERSONATION, Account, Build, Configuration, Credentials, Version

    config = Configuration(
        service_endpoint=process.url,
        credentials=Credentials("svc", "secret"),
        auth_type=BASIC,
        version=Version(Build(15, 2, 1118, 7)),
    )
    ann = Account("ann@example.com", config=config, autodiscover=False, access_type=IMPERSONATION)
    assert ann.calendar.total_count == 0


def test_the_control_api_link_the_banner_prints_answers_with_an_index(process):
    # The start-up banner says "control API at http://HOST:PORT/emulator/": that link is an index, not a 404.
    response = httpx.get(process.base_url + "/emulator/", timeout=10)
    assert response.status_code == 200
    index = response.json()
    assert index["ews"] == "/EWS/Exchange.asmx" and index["mailboxes"] == 2
    routes = {route["path"]: route["methods"] for route in index["control_api"]}
    assert routes["/emulator/health"] == ["GET"]
    for path, methods in routes.items():  # every listed route without parameters answers GET when it lists GET
        if "{" not in path and "GET" in methods:
            assert httpx.get(process.base_url + path, timeout=10).status_code == 200, path


def test_control_api_acts_as_outlook_and_reports_the_truth(process):
    created = process.control(
        "POST",
        "/mailboxes/ann@example.com/items",
        json={
            "subject": "Weekly",
            "start": "2027-01-04T09:00:00",
            "end": "2027-01-04T09:30:00",
            "timezone": "Europe/Berlin",
            "location": "Room 1",
            "private": True,
            "attendees": [{"email": "bob@example.com", "response": "Accept"}],
            "recurrence": {
                "pattern": "Weekly",
                "days": ["Monday"],
                "first_day_of_week": "Monday",
                "range": "Numbered",
                "count": 4,
            },
        },
    )
    assert created["kind"] == "RecurringMaster"
    assert created["timezone"] == "W. Europe Standard Time"
    item = url_id(created["id"])
    process.control(
        "PATCH",
        f"/mailboxes/ann@example.com/items/{item}/occurrences/2",
        json={"subject": "Weekly (moved)", "start": "2027-01-12T10:00:00"},
    )
    process.control("DELETE", f"/mailboxes/ann@example.com/items/{item}/occurrences/3")
    truth = process.control(
        "GET",
        "/mailboxes/ann@example.com/calendar",
        params={"start": "2027-01-01T00:00:00Z", "end": "2027-02-01T00:00:00Z"},
    )
    assert [(o["subject"], o["start"], o["kind"]) for o in truth] == [
        ("Weekly", "2027-01-04T08:00:00+00:00", "Occurrence"),
        ("Weekly (moved)", "2027-01-12T09:00:00+00:00", "Exception"),
        ("Weekly", "2027-01-25T08:00:00+00:00", "Occurrence"),
    ]
    assert truth[0]["sensitivity"] == "Private"
    assert truth[0]["attendees"] == [
        {"email": "bob@example.com", "name": "bob@example.com", "response": "Accept", "optional": False}
    ]
    bob = process.control("GET", "/mailboxes/bob@example.com/items")
    assert [i["subject"] for i in bob] == ["Weekly"]  # the invitation reached the attendee
    process.control("DELETE", f"/mailboxes/ann@example.com/items/{item}")
    assert process.control("GET", "/mailboxes/ann@example.com/items") == []
    assert [(i["subject"], i["cancelled"]) for i in process.control("GET", "/mailboxes/bob@example.com/items")] == [
        ("Canceled: Weekly", True)
    ]


def test_control_api_faults_clock_and_subscriptions(process):
    faults = process.control("POST", "/faults", json={"http_503": 1})
    assert faults["http_503"] == 1
    assert httpx.post(process.url, content=b"<x/>", auth=("svc", "secret")).status_code == 503
    assert process.control("DELETE", "/faults")["http_503"] == 0
    before = process.control("GET", "/clock")["now"]
    after = process.control("POST", "/clock", json={"advance_seconds": 86400})["now"]
    assert dt.datetime.fromisoformat(after) - dt.datetime.fromisoformat(before) >= dt.timedelta(days=1)
    assert isinstance(process.control("GET", "/subscriptions"), list)
    assert process.control("GET", "/stats")["op:GetFolder"] >= 1


@pytest.mark.parametrize(
    ("method", "path", "payload", "message"),
    [
        ("POST", "/mailboxes", {"address": "not-an-address"}, "is not an e-mail address"),
        ("POST", "/mailboxes/ann@example.com/items", {"subject": "no start"}, "start: required"),
        ("POST", "/mailboxes/ann@example.com/items", {"start": "tomorrow"}, "not an ISO 8601"),
        (
            "POST",
            "/mailboxes/ann@example.com/items",
            {"start": "2027-01-01T09:00:00", "colour": "red"},
            "unknown field(s) colour",
        ),
        (
            "POST",
            "/mailboxes/ann@example.com/items",
            {"start": "2027-01-01T09:00:00", "recurrence": {"pattern": "Hourly"}},
            "recurrence:",
        ),
        ("POST", "/mailboxes/nobody@example.com/items", {"start": "2027-01-01T09:00:00"}, "no mailbox"),
        ("POST", "/faults", {"earthquake": 1}, "unknown fault 'earthquake'"),
        ("POST", "/faults", {"http_503": "many"}, "takes a int"),
        ("POST", "/accounts", {"username": "x"}, "needs a user name and a password"),
    ],
)
def test_control_api_rejects_bad_input_clearly(process, method, path, payload, message):
    before = process.control("GET", "/mailboxes")
    response = httpx.request(method, process.base_url + "/emulator" + path, json=payload)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert process.control("GET", "/mailboxes") == before  # nothing changed


def test_sample_calendars_are_realistic(emulator):
    emulator.add_mailbox("big@example.com", populate_count=300, seed=7)
    items = emulator.outlook("big@example.com").items()
    assert len(items) == 300
    now = dt.datetime.now(dt.UTC)
    assert any(i.recurrence is not None for i in items)
    assert any(i.exceptions for i in items) and any(i.deleted for i in items)
    assert any(i.is_all_day for i in items)
    assert len({i.start_tz for i in items}) >= 4
    assert any(i.required for i in items)
    assert any(i.sensitivity == "Private" for i in items)
    assert any(i.end < now - dt.timedelta(days=180) for i in items)  # older than the window
    assert any(i.start > now for i in items) and any(i.end < now for i in items)
    # Deterministic for a seed.
    emulator.add_mailbox("twin@example.com", populate_count=300, seed=7)
    twin = emulator.outlook("twin@example.com").items()
    assert [(i.subject, i.start) for i in twin] != [] and len(twin) == 300
    # exchangelib reads every one of them back through a CalendarView without error.
    acc = ews_account(emulator, "big@example.com")
    view = list(
        acc.calendar.view(
            start=EWSDateTime.from_datetime(now - dt.timedelta(days=30)),
            end=EWSDateTime.from_datetime(now + dt.timedelta(days=30)),
        )
    )
    truth = emulator.truth("big@example.com", now - dt.timedelta(days=30), now + dt.timedelta(days=30))
    assert len(view) == len(truth) > 0


def test_cli_rejects_bad_options():
    result = subprocess.run(
        [sys.executable, "-m", "calsync", "emulator", "--exchange-version", "Exchange2003"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Exchange2003" in result.stderr and "Exchange2010" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "calsync", "emulator", "--account", "nopassword"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "USER:PASSWORD" in result.stderr


REQUEST_SAMPLES = {
    # valid request samples: the emulator must understand them (they name ids from Microsoft's examples,
    # so the answer may be an error response message, but never a fault or a crash)
    "getitem-calendar-request.msdocs.xml": "GetItemResponse",
    "getevents-request.msdocs.xml": "GetEventsResponse",
    "pull-howto-getevents-request.msdocs.xml": "GetEventsResponse",
    "pull-howto-subscribe-request.msdocs.xml": "SubscribeResponse",
    "subscribe-pull-request.msdocs.xml": "SubscribeResponse",
    "syncfolderitems-request.msdocs.xml": "SyncFolderItemsResponse",
    "unsubscribe-0.msdocs.xml": "UnsubscribeResponse",
    "workmail-subscribe-push-request.xml": "SubscribeResponse",
}
BROKEN_REQUESTS = [
    "subscribe-push-request.msdocs.xml",
    "getstreamingevents-request.msdocs.xml",
    "syncfolderitems-initial-request.msdocs.xml",
    "syncfolderitems-next-request.msdocs.xml",
]


@pytest.mark.parametrize(("name", "response"), sorted(REQUEST_SAMPLES.items()))
def test_valid_request_samples_are_understood(emulator_factory, name, response):
    emu = emulator_factory(mailboxes=["ann@example.com", "user1@contoso.com", "user@example.com"])
    path = SAMPLES_DIR / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    answer = httpx.post(
        emu.url,
        content=path.read_bytes(),
        auth=("svc-calsync", "S3cret!pw"),
        headers={"X-AnchorMailbox": "ann@example.com"},
    )
    assert answer.status_code == 200, answer.text[:500]
    assert f"{response}".encode() in answer.content


@pytest.mark.parametrize("name", BROKEN_REQUESTS)
def test_schema_invalid_request_samples_are_refused(emulator, name):
    path = SAMPLES_DIR / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    answer = httpx.post(emulator.url, content=path.read_bytes(), auth=("svc-calsync", "S3cret!pw"))
    assert answer.status_code == 500
    assert b"<faultcode" in answer.content

"""Graph faults from the control API: 429 with Retry-After (as Microsoft's throttling sample), 503, slow answers;
msgraph-sdk riding out throttling by itself. (Expired delta tokens, removed subscriptions, revoked tokens and lost
notifications are tested with delta, subscriptions and identity.)"""

from __future__ import annotations

import time

import httpx

from calsync.emulator import Emulator

from .test_emulator_graph_events import sample
from .test_emulator_graph_setup import (
    ANN,
    graph,
    graph_emulator_fixture,  # noqa: F401 (fixture)
    run,
    sdk,
)


def faults(emu: Emulator, **changes: object) -> dict[str, object]:
    return dict(httpx.post(f"{emu.base_url}/emulator/faults", json=changes).json())


def test_throttling_answers_429_with_retry_after(graph_emulator: Emulator) -> None:
    assert faults(graph_emulator, graph_throttle=2, graph_retry_after=2.128)["graph_throttle"] == 2
    with graph(graph_emulator) as client:
        for _ in range(2):
            answer = client.get(f"/users/{ANN}/events")
            assert answer.status_code == 429 and answer.headers["Retry-After"] == "2.128"
            published = sample("errors/429-too-many-requests.json")["error"]
            assert answer.json()["error"]["code"] == published["code"]
            assert answer.json()["error"]["message"] == published["message"]
        assert client.get(f"/users/{ANN}/events").status_code == 200


def test_503_and_slow_answers(graph_emulator: Emulator) -> None:
    faults(graph_emulator, graph_503=1, graph_retry_after=1)
    with graph(graph_emulator) as client:
        unavailable = client.get(f"/users/{ANN}/events")
        assert unavailable.status_code == 503 and unavailable.headers["Retry-After"] == "1"
        faults(graph_emulator, graph_slow_seconds=0.4)
        started = time.monotonic()
        assert client.get(f"/users/{ANN}/events").status_code == 200
        assert time.monotonic() - started >= 0.4
    cleared = httpx.delete(f"{graph_emulator.base_url}/emulator/faults").json()
    assert cleared["graph_slow_seconds"] == 0.0 and cleared["graph_503"] == 0


def test_the_sdk_rides_out_throttling(graph_emulator: Emulator) -> None:
    faults(graph_emulator, graph_throttle=2, graph_retry_after=0.2)
    events = sdk(graph_emulator).users.by_user_id(ANN).events

    async def listing() -> int:
        page = await events.get()
        assert page is not None and page.value is not None
        return len(page.value)

    assert run(listing()) == 0
    assert graph_emulator.exchange.faults.graph_throttle == 0  # both 429s were answered, then retried

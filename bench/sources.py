"""What the benchmarks need to run calsync through either source, EWS or Microsoft Graph, against the emulator:
the emulator with its Graph wing (Graph and its token endpoint over https on a second port, http notification URLs
allowed, since the benchmark's listener has no certificate), calsync's settings for the Graph connection, a
``GraphSource`` on it, and the requests each side answered.

How requests are counted (``requests_since``):

* EWS: the emulator counts every SOAP request by operation (``Exchange.stats["op:<operation>"]``).
* Graph, as a throttling budget sees them: the emulator counts every ``/v1.0`` request its routes serve
  (``Exchange.stats["graph_requests"]``), and a ``$batch`` dispatches each of its inner requests to the same routes,
  so each inner request counts once and the outer ``POST /$batch`` not at all: Graph's limits count each request
  inside a batch. That is the figure reported as Graph *requests*.
* Graph, as HTTP calls: :class:`HttpCalls`, an ASGI middleware that :class:`BenchEmulator` adds to the emulator's
  app, counts each HTTP request by kind (``delta``, ``batch`` for the outer ``$batch``, ``events``,
  ``subscriptions``, ``token``, ``other``); a ``$batch`` is one call. Tokens (MSAL, ``/{tenant}/oauth2/v2.0/token``)
  are apart from both, and counted by the emulator too (``graph_tokens_issued``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from calsync.emulator import Emulator
from calsync.sources.graph import GraphSource

TENANT = "contoso.onmicrosoft.com"
CLIENT, CLIENT_SECRET = "5f1c2a9e-0000-4000-8000-0000000be4c4", "bench-graph-secret~42"
SOURCES = ("ews", "graph")


class HttpCalls:
    """ASGI middleware: counts the emulator's Graph HTTP calls by kind (runs on the server's event loop)."""

    def __init__(self, app: ASGIApp, counts: Counter[str]) -> None:
        self.app, self.counts = app, counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            kind = call_kind(scope["method"], scope["path"])
            if kind is not None:
                self.counts[kind] += 1
        await self.app(scope, receive, send)


def call_kind(method: str, path: str) -> str | None:
    """The kind of a Graph HTTP call (None: not a Graph call, e.g. EWS or the control API)."""
    if path.endswith("/oauth2/v2.0/token"):
        return "token"
    if not path.startswith("/v1.0"):
        return None
    if path == "/v1.0/$batch":
        return "batch"
    if "/calendarView/delta" in path:
        return "delta"
    if path.startswith("/v1.0/subscriptions"):
        return "subscriptions"
    if "/events" in path:
        return "events"
    return "other"


class BenchEmulator(Emulator):
    """The emulator both sources are measured on: EWS over http, Graph over https beside it, one app registered,
    http notification URLs allowed; its Graph HTTP calls counted in ``graph_calls`` (from before it starts)."""

    def __init__(self, user: str, password: str, mailboxes: list[str]) -> None:
        super().__init__(
            accounts={user: password},
            mailboxes=mailboxes,
            https_port=0,
            graph_apps=[f"{TENANT}:{CLIENT}:{CLIENT_SECRET}"],
            graph_allow_http=True,
        )
        self.graph_calls: Counter[str] = Counter()
        self.app.add_middleware(HttpCalls, counts=self.graph_calls)


def graph_settings(emu: BenchEmulator) -> dict[str, str]:
    """calsync's settings for the Graph connection to a started emulator (``load_settings`` or ``CALSYNC_*``)."""
    assert emu.https_base_url is not None and emu.ca_file is not None, "start the emulator first"
    return {
        "graph_tenant_id": TENANT,
        "graph_client_id": CLIENT,
        "graph_client_secret": CLIENT_SECRET,
        "graph_authority": emu.https_base_url,
        "graph_endpoint": emu.graph_url,
        "graph_ca_file": emu.ca_file,
    }


def graph_source(emu: BenchEmulator) -> GraphSource:
    assert emu.https_base_url is not None and emu.ca_file is not None, "start the emulator first"
    return GraphSource(
        endpoint=emu.graph_url,
        authority=emu.https_base_url,
        tenant_id=TENANT,
        client_id=CLIENT,
        client_secret=CLIENT_SECRET,
        ca_file=Path(emu.ca_file),
    )


def snapshot(emu: BenchEmulator) -> dict[str, int]:
    """The emulator's request counters now, to pass to :func:`requests_since` later."""
    return {**emu.exchange.stats, **{f"http:{k}": v for k, v in emu.graph_calls.items()}}


def requests_since(emu: BenchEmulator, before: dict[str, int]) -> dict[str, Any]:
    """The requests the emulator answered since ``before`` (a :func:`snapshot`): ``ews`` by operation and its
    total; ``graph``: the requests a throttling budget counts (each request inside a $batch counts), the HTTP
    calls by kind (a $batch is one) and their total without tokens, and the tokens issued."""
    now = snapshot(emu)

    def since(key: str) -> int:
        return now.get(key, 0) - before.get(key, 0)

    ews = {k[3:]: since(k) for k in sorted(now) if k.startswith("op:") and since(k) > 0}
    calls = {k[5:]: since(k) for k in sorted(now) if k.startswith("http:") and since(k) > 0}
    return {
        "ews": ews,
        "ews_total": sum(ews.values()),
        "graph": since("graph_requests"),
        "graph_http_calls": {k: v for k, v in calls.items() if k != "token"},
        "graph_http_total": sum(v for k, v in calls.items() if k != "token"),
        "graph_tokens_issued": since("graph_tokens_issued"),
    }


def end_subscriptions(emu: Emulator) -> None:
    """End every push and Graph subscription (what Exchange does once calsync has stopped and stays silent), so
    that the emulator does not keep trying a listener that is gone while something else is measured."""
    for subscription in list(emu.exchange.subscriptions.values()):
        emu.exchange.end_subscription(subscription, "unsubscribed")
    for graph_subscription in emu.graph.subscriptions.live():
        emu.graph.subscriptions.end(graph_subscription, "deleted")
    emu.push.poke_all()
    emu.graph.delivery.poke_all()

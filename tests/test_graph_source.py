"""calsync's Graph source against the Graph emulator, one failure at a time: each of Entra ID's and Graph's refusals
becomes its catalogue code with a message an administrator can act on (and never the secret); tokens come from MSAL
(a secret or a certificate), are cached, and a revoked one is replaced once; Retry-After is passed on as the
back-off; at most four requests per mailbox run at once; and a delta token Graph forgot starts a full read of the
window marked ``restart``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from calsync.emulator import Emulator
from calsync.sources.base import SourceError
from calsync.sources.graph import GraphSource
from calsync.sources.graph.client import PER_MAILBOX

from .test_emulator_graph_identity import self_signed

TENANT = "contoso.onmicrosoft.com"
APP, SECRET = "calsync-app", "app-secret-value~1"
ANN, OFF = "ann@example.com", "onprem@example.com"


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    apps = [f"{TENANT}:{APP}:{SECRET}", f"{TENANT}:no-consent:pw:", f"{TENANT}:reader:pw2:Calendars.Read"]
    with Emulator(mailboxes=[ANN, OFF], https_port=0, graph_apps=apps, graph_allow_http=True) as emulator:
        httpx.post(f"{emulator.base_url}/emulator/graph/mailboxes/{OFF}", json={"graph_enabled": False})
        yield emulator


def source(emu: Emulator, client: str = APP, secret: str | None = SECRET, **more: Any) -> GraphSource:
    assert emu.https_base_url is not None and emu.ca_file is not None
    return GraphSource(
        endpoint=more.pop("endpoint", emu.graph_url),
        authority=emu.https_base_url,
        tenant_id=more.pop("tenant_id", TENANT),
        client_id=client,
        client_secret=secret,
        ca_file=Path(emu.ca_file),
        **more,
    )


@pytest.mark.parametrize(
    ("case", "code", "words"),
    [
        ({"secret": "not-the-secret"}, "credentials_rejected", "graph_client_secret"),
        ({"client": "nobody-registered-this"}, "graph_app_not_found", "graph_client_id"),
        ({"tenant_id": "fabrikam.onmicrosoft.com"}, "graph_app_not_found", "tenant"),
        ({"client": "no-consent", "secret": "pw"}, "graph_consent_missing", "Calendars.ReadWrite"),
    ],
)
def test_entra_and_graph_refusals_have_their_codes(emu: Emulator, case: dict[str, Any], code: str, words: str) -> None:
    checked = source(emu, **case).check_mailbox(ANN)
    assert (checked.ok, checked.code) == (False, code)
    assert words in (checked.message or "")
    assert "not-the-secret" not in (checked.message or "")


def test_mailboxes_graph_cannot_reach(emu: Emulator) -> None:
    graph = source(emu)
    assert graph.check_mailbox(ANN).ok and graph.check_mailbox(ANN).display_name
    missing = graph.check_mailbox("zed@example.com")
    assert (missing.ok, missing.code) == (False, "mailbox_not_found")
    on_premises = graph.check_mailbox(OFF)
    assert (on_premises.ok, on_premises.code) == (False, "mailbox_not_licensed")
    with pytest.raises(SourceError) as raised:
        list(graph.changes(OFF, None, 100))
    assert raised.value.kind == "permanent" and raised.value.code == "mailbox_not_licensed"


def test_a_notification_url_graph_cannot_validate(emu: Emulator) -> None:
    with pytest.raises(SourceError) as raised:
        source(emu).subscribe(ANN, "http://127.0.0.1:9/graph/notifications/" + "s" * 32, 30)
    assert raised.value.code == "subscription_validation_failed"
    assert "https" in raised.value.message and "10 seconds" in raised.value.message


def test_a_certificate_credential(emu: Emulator, tmp_path: Path) -> None:
    key_pem, cert_pem = self_signed()
    httpx.post(
        f"{emu.base_url}/emulator/graph/apps",
        json={"tenant": TENANT, "client_id": "cert-app", "permissions": ["Calendars.ReadWrite"]},
    ).raise_for_status()
    httpx.post(
        f"{emu.base_url}/emulator/graph/apps/cert-app/certificates", json={"certificate": cert_pem}
    ).raise_for_status()
    pem = tmp_path / "calsync-app.pem"
    pem.write_text(key_pem + cert_pem)
    checked = source(emu, "cert-app", None, certificate=pem).check_mailbox(ANN)
    assert checked.ok, checked
    other_key, other_cert = self_signed()  # a certificate the app registration does not have
    pem.write_text(other_key + other_cert)
    refused = source(emu, "cert-app", None, certificate=pem).check_mailbox(ANN)
    assert (refused.ok, refused.code) == (False, "credentials_rejected")


def test_tokens_are_cached_and_a_revoked_one_is_replaced_once(emu: Emulator) -> None:
    graph = source(emu)

    def issued() -> int:
        return int(httpx.get(f"{emu.base_url}/emulator/stats").json().get("graph_tokens_issued", 0))

    before = issued()
    for _ in range(5):
        assert graph.check_mailbox(ANN).ok
    assert issued() - before == 1  # MSAL's cache: one token for every request
    httpx.post(f"{emu.base_url}/emulator/graph/tokens/revoke", json={"client_id": APP}).raise_for_status()
    assert graph.check_mailbox(ANN).ok  # a 401, a new token, the same request again
    assert issued() - before == 2


def test_throttling_is_passed_on_with_graphs_wait(emu: Emulator) -> None:
    emu.set_faults(graph_throttle=1, graph_retry_after=7.5)
    try:
        with pytest.raises(SourceError) as raised:
            list(source(emu).changes(ANN, None, 50))
    finally:
        emu.clear_faults()
    assert (raised.value.kind, raised.value.code, raised.value.back_off) == ("transient", "server_busy", 7.5)


def test_an_expired_delta_token_restarts_the_window(emu: Emulator) -> None:
    graph = source(emu)
    emu.outlook(ANN).create({"subject": "Kept", "start": "2027-01-05T09:00:00Z"})
    pages = list(graph.changes(ANN, None, 50))
    assert pages[0].restart and pages[-1].done
    state = pages[-1].sync_state
    assert [p.restart for p in graph.changes(ANN, state, 50)] == [False]
    httpx.post(f"{emu.base_url}/emulator/mailboxes/{ANN}/expire-sync-states").raise_for_status()
    again = list(graph.changes(ANN, state, 50))
    assert again[0].restart and "Kept" in [a.subject for p in again for a in p.upserts]


def test_at_most_four_requests_per_mailbox_at_once(emu: Emulator) -> None:
    """Eight threads read one mailbox through a Graph that answers slowly: never more than four at once."""
    running, most, lock = 0, 0, threading.Lock()

    class SlowGraph(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            nonlocal running, most
            with lock:
                running += 1
                most = max(most, running)
            time.sleep(0.15)
            with lock:
                running -= 1
            body = b'{"owner": {"name": "Ann", "address": "ann@example.com"}}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowGraph)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        graph = source(emu, endpoint=f"http://127.0.0.1:{server.server_port}/v1.0")
        threads = [threading.Thread(target=graph.check_mailbox, args=(ANN,)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert most == PER_MAILBOX == 4

"""What the Graph tests share (an emulator with registered apps, tokens, httpx and msgraph-sdk clients, a local
receiver of notifications), and the tests of starting the Graph wing: the command line's options and its TLS.

Other modules import the fixtures by their function names (``graph_emulator_fixture``, ``receiver_fixture``);
tests use them by their fixture names (``graph_emulator``, ``receiver``)."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    BaseBearerTokenAuthenticationProvider,
)
from msgraph import GraphRequestAdapter, GraphServiceClient

from calsync.emulator import Emulator, EmulatorProcess

TENANT = "contoso.onmicrosoft.com"
CLIENT, SECRET = "11111111-2222-3333-4444-555555555555", "app-s3cret~1"
READER, READER_SECRET = "reader-app", "reader-pw"
NOBODY, NOBODY_SECRET = "unconsented-app", "nobody-pw"
SCOPE = "https://graph.microsoft.com/.default"
APPS = [
    f"{TENANT}:{CLIENT}:{SECRET}",
    f"{TENANT}:{READER}:{READER_SECRET}:Calendars.Read",
    f"{TENANT}:{NOBODY}:{NOBODY_SECRET}:",
]
ANN, BOB = "ann@example.com", "bob@example.com"


def trust(ca_file: str | None) -> ssl.SSLContext | bool:
    """What httpx is given to trust an emulator: its CA with --tls, the system's otherwise."""
    return ssl.create_default_context(cafile=ca_file) if ca_file else True


def request_token(
    emu: Emulator | EmulatorProcess,
    client: str = CLIENT,
    secret: str = SECRET,
    ca_file: str | None = None,
    **extra: str,
) -> httpx.Response:
    """The token endpoint's answer to a client-credentials request with a secret."""
    form = {"grant_type": "client_credentials", "client_id": client, "client_secret": secret, "scope": SCOPE, **extra}
    verify = trust(ca_file or getattr(emu, "ca_file", None))
    return httpx.post(f"{emu.base_url}/{TENANT}/oauth2/v2.0/token", data=form, verify=verify, timeout=10)


def token(emu: Emulator, client: str = CLIENT, secret: str = SECRET) -> str:
    answer = request_token(emu, client, secret)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def graph(emu: Emulator, access_token: str | None = None) -> httpx.Client:
    """An httpx client for the emulator's Graph (base URL .../v1.0), with a token of the read-write app."""
    return httpx.Client(
        base_url=emu.graph_url,
        headers={"Authorization": f"Bearer {access_token or token(emu)}"},
        verify=trust(emu.ca_file),
        timeout=20,
    )


class _StaticToken(AccessTokenProvider):
    def __init__(self, access_token: str) -> None:
        self.access_token = access_token

    async def get_authorization_token(self, uri: str, additional_authentication_context: Any = None) -> str:
        return self.access_token

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return AllowedHostsValidator([])


def sdk(emu: Emulator, access_token: str | None = None) -> GraphServiceClient:
    """msgraph-sdk's client against the emulator, as the README's recipe builds it."""
    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(_StaticToken(access_token or token(emu))))
    adapter.base_url = emu.graph_url
    return GraphServiceClient(request_adapter=adapter)


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, timeout=60))


def event_body(subject: str, start: str, end: str, zone: str = "UTC", **more: Any) -> dict[str, Any]:
    return {
        "subject": subject,
        "start": {"dateTime": start, "timeZone": zone},
        "end": {"dateTime": end, "timeZone": zone},
        **more,
    }


@pytest.fixture(name="graph_emulator")
def graph_emulator_fixture(emulator_factory: Callable[..., Emulator]) -> Emulator:
    """A strict emulator (EWS answers checked against the schemas) with three Graph apps: read-write, read-only and
    one nobody consented to; http notification URLs allowed, for the local receiver."""
    return emulator_factory(graph_apps=APPS, graph_allow_http=True)


# --- a notification receiver ------------------------------------------------------------------------


@dataclass
class Post:
    at: float
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A subscriber's endpoint: answers Graph's validation requests (or not, as told), records every POST and answers
    notifications with the statuses it is given (then 202), after ``delay`` seconds."""

    validation: str = "echo"  # "echo", "wrong", "500", "silent"
    statuses: list[int] = field(default_factory=list)
    delay: float = 0.0
    posts: list[Post] = field(default_factory=list)
    url: str = ""

    def notifications(self, path: str = "/notify") -> list[Post]:
        return [p for p in self.posts if p.path == path and "validationToken" not in p.query]

    def validations(self) -> list[Post]:
        return [p for p in self.posts if "validationToken" in p.query]

    def wait_for(self, count: int, path: str = "/notify", timeout: float = 20.0) -> list[Post]:
        deadline = time.monotonic() + timeout
        while len(self.notifications(path)) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.notifications(path)


@pytest.fixture(name="receiver")
def receiver_fixture() -> Iterator[Receiver]:
    state = Receiver()
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            state.posts.append(Post(time.monotonic(), parts.path, query, dict(self.headers), body))
            if "validationToken" not in query:
                stop.wait(state.delay)
                self.answer(state.statuses.pop(0) if state.statuses else 202)
            elif state.validation == "silent":
                stop.wait(30)
            elif state.validation == "500":
                self.answer(500)
            else:
                echo = query["validationToken"][0] if state.validation == "echo" else "something else"
                self.answer(200, echo.encode())

        def answer(self, status: int, text: bytes = b"") -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_port}"
    yield state
    stop.set()
    server.shutdown()
    server.server_close()


# --- starting the wing --------------------------------------------------------------------------------


def test_the_command_line_serves_graph_over_tls_with_the_ca_it_writes(tmp_path) -> None:
    with EmulatorProcess(
        "--mailbox", ANN, "--tls", "--tls-dir", str(tmp_path), "--graph-app", f"{TENANT}:{CLIENT}:{SECRET}"
    ) as process:
        ca_file = tmp_path / "ca.pem"
        assert ca_file.is_file()
        answer = request_token(process, ca_file=str(ca_file))
        assert answer.status_code == 200, answer.text
        events = httpx.get(
            f"{process.base_url}/v1.0/users/{ANN}/events",
            headers={"Authorization": f"Bearer {answer.json()['access_token']}"},
            verify=trust(str(ca_file)),
        )
        assert events.status_code == 200 and events.json()["value"] == []
        with pytest.raises(httpx.ConnectError):  # not trusted without the CA
            httpx.get(f"{process.base_url}/emulator/health", verify=True)


def test_the_control_api_registers_apps_and_certificates() -> None:
    with EmulatorProcess("--mailbox", ANN) as process:
        app = process.control("POST", "/graph/apps", json={"tenant": TENANT, "client_id": "new-app", "secret": "pw"})
        assert app["permissions"] == ["Calendars.ReadWrite"] and app["has_secret"]
        assert request_token(process, "new-app", "pw").status_code == 200
        with pytest.raises(RuntimeError, match="unknown permission"):
            process.control("POST", "/graph/apps", json={"tenant": TENANT, "client_id": "x", "permissions": ["Mail"]})
        with pytest.raises(RuntimeError, match="not a PEM certificate"):
            process.control("POST", "/graph/apps/new-app/certificates", json={"certificate": "garbage"})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--graph-app", "contoso:only-two"], "TENANT:CLIENT_ID:SECRET"),
        (["--graph-app", "contoso:app:pw:Mail.Read"], "unknown permission"),
        (["--graph-token-minutes", "0"], "--graph-token-minutes"),
        (["--tls-dir", "/nonexistent"], "--tls-dir"),
    ],
)
def test_bad_graph_options_are_refused_by_name(args: list[str], message: str) -> None:
    from typer.testing import CliRunner

    from calsync.cli import app

    result = CliRunner().invoke(app, ["emulator", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())

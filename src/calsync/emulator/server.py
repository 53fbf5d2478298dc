"""The emulator as an HTTP server: EWS at ``/EWS/Exchange.asmx``, the control API under ``/emulator/``, Microsoft
Graph under ``/v1.0`` with its token endpoint under ``/{tenant}/``, push delivery and Graph notifications running
beside them (plain http, or https with ``tls``); plus :class:`Emulator`, which runs all that in-process (a background
thread) for tests and programs, and :class:`EmulatorProcess`, which runs ``calsync emulator`` as a child.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from . import control
from .clock import Clock
from .ews.operations import OPERATIONS
from .ews.push import PushDelivery
from .ews.service import Answer, EwsService
from .exchange import Exchange
from .graph import GraphWing
from .model import Mailbox
from .outlook import Outlook, truth
from .sample_data import populate
from .tls import TlsFiles, make_tls_files

log = logging.getLogger("calsync.emulator")

EWS_PATH = "/EWS/Exchange.asmx"
GRAPH_PATH = "/v1.0"


class _CutConnection(Response):
    """An answer whose connection is cut halfway, as a crashing front end or a flaky network does."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = self.body
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/xml; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": False})


def build_app(exchange: Exchange, graph: GraphWing, *, check: Any = None) -> tuple[Starlette, PushDelivery]:
    """EWS, the control API and the Graph wing in one app; push delivery and Graph notifications run in its
    lifespan."""
    service = EwsService(exchange, OPERATIONS, check=check)
    push = PushDelivery(exchange, check=check)
    # Enough threads to let more requests run at once than Exchange's concurrency limit (27).
    workers = ThreadPoolExecutor(max_workers=64, thread_name_prefix="ews")

    async def ews(request: Request) -> Response:
        if request.method == "GET":
            if service.authenticate(request.headers.get("authorization")) is None:
                return Response(status_code=401, headers={"WWW-Authenticate": 'Basic realm="calsync-emulator"'})
            return PlainTextResponse("Exchange Web Services (calsync emulator)")
        body = await request.body()
        answer: Answer = await asyncio.get_running_loop().run_in_executor(
            workers, service.handle, body, {k.lower(): v for k, v in request.headers.items()}
        )
        if answer.stream is not None:
            return StreamingResponse(_stream(answer.stream.documents()), headers=answer.headers)
        if answer.drop_connection:
            return _CutConnection(answer.body)
        return Response(answer.body, status_code=answer.status, headers=answer.headers)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await push.start()
        await graph.delivery.start()
        try:
            yield
        finally:
            await graph.delivery.stop()
            await push.stop()

    routes = [
        Route(EWS_PATH, ews, methods=["GET", "POST"]),
        Route(EWS_PATH.lower(), ews, methods=["GET", "POST"]),
        *control.routes(exchange, push, graph.delivery),
        *graph.routes(),
    ]
    return Starlette(routes=routes, lifespan=lifespan), push


async def _stream(documents: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for doc in documents:
        yield doc


def _schema_checker(exchange: Exchange, schema_dir: Path | None) -> Any:
    if schema_dir is None:
        return None
    from .ews.schema_check import EwsSchema

    schema = EwsSchema.cached(schema_dir)

    def check(document: bytes) -> None:
        errors = schema.errors(document)
        if errors:
            exchange.violations.append({"errors": errors, "document": document[:4000].decode(errors="replace")})
            log.error("emulator sent a schema-invalid document: %s", "; ".join(errors[:3]))

    return check


def serve_configs(app: Any, tls: list[dict[str, Any]]) -> list[uvicorn.Server]:
    """One uvicorn server per listening socket (``tls``: each one's ``ssl_certfile``/``ssl_keyfile``, or empty);
    only the first runs the app's lifespan (push delivery), the others share it."""
    return [
        uvicorn.Server(
            uvicorn.Config(
                app,
                log_level="warning",
                lifespan="on" if i == 0 else "off",
                access_log=False,
                timeout_graceful_shutdown=1,
                **extra,
            )
        )
        for i, extra in enumerate(tls)
    ]


async def serve_all(servers: list[uvicorn.Server], sockets: list[socket.socket]) -> None:
    """Run the servers, each on its socket, in one event loop: push delivery and every handler share it."""
    await asyncio.gather(*(server.serve(sockets=[sock]) for server, sock in zip(servers, sockets, strict=True)))


class Emulator:
    """An emulated Exchange running in this process (a server thread); a context manager.

    >>> with Emulator(accounts={"svc": "secret"}, mailboxes=["ann@example.com"]) as emu:
    ...     emu.url  # http://127.0.0.1:PORT/EWS/Exchange.asmx

    Graph: ``graph_apps`` in the ``--graph-app`` form (``TENANT:CLIENT_ID:SECRET[:PERMISSION,...]``), ``tls`` to
    serve https with a certificate made at start (its CA in ``ca_file``), ``graph_allow_http`` to accept http
    notification URLs, ``graph_token_minutes`` for the lifetime of access tokens.

    ``https_port`` (0: any free port) serves https on a second port beside plain http on ``port``, as a tenant
    with an on-premises Exchange (EWS over http inside the network) and Exchange Online (Graph over https) looks
    to calsync: ``url`` stays http, ``graph_url`` and ``authority`` are https.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        version: str = "Exchange2016",
        accounts: dict[str, str] | None = None,
        mailboxes: list[str] | None = None,
        clock_speed: float = 1.0,
        strict_schema_dir: Path | None = None,
        graph_apps: list[str] | None = None,
        tls: bool = False,
        graph_allow_http: bool = False,
        graph_token_minutes: float = 60,
        https_port: int | None = None,
    ) -> None:
        if tls and https_port is not None:
            raise ValueError("give tls (https only) or https_port (https beside http), not both")
        self.exchange = Exchange(version, Clock(clock_speed))
        for user, password in (accounts or {}).items():
            self.exchange.add_account(user, password)
        for address in mailboxes or []:
            self.exchange.add_mailbox(address)
        self.graph = GraphWing(self.exchange, allow_http=graph_allow_http, token_minutes=graph_token_minutes)
        for spec in graph_apps or []:
            self.graph.add_app(spec)
        self.app, self.push = build_app(
            self.exchange, self.graph, check=_schema_checker(self.exchange, strict_schema_dir)
        )
        self.tls = tls
        self._https_port = https_port
        self._https_socket: socket.socket | None = None
        self._servers: list[uvicorn.Server] = []
        self._tls_dir: str | None = None
        self.tls_files: TlsFiles | None = None
        self.host = host
        self._port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    # --- running -------------------------------------------------------------------------------

    def start(self) -> Emulator:
        sock = bound_socket(self.host, self._port)
        self._socket = sock
        self._port = sock.getsockname()[1]
        ssl: dict[str, Any] = {}
        if self.tls or self._https_port is not None:
            self._tls_dir = tempfile.mkdtemp(prefix="calsync-emulator-tls-")
            self.tls_files = make_tls_files(Path(self._tls_dir), self.host)
            ssl = {"ssl_certfile": str(self.tls_files.cert_file), "ssl_keyfile": str(self.tls_files.key_file)}
        listening = [(sock, ssl if self.tls else {})]
        if self._https_port is not None:
            self._https_socket = bound_socket(self.host, self._https_port)
            self._https_port = self._https_socket.getsockname()[1]
            listening.append((self._https_socket, ssl))
        self._servers = serve_configs(self.app, [extra for _, extra in listening])
        self._server = self._servers[0]
        self._thread = threading.Thread(
            target=asyncio.run,
            args=(serve_all(self._servers, [s for s, _ in listening]),),
            name="calsync-emulator",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not all(server.started for server in self._servers):
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the emulator did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        for sock in (self._socket, self._https_socket):
            if sock is not None:
                sock.close()
        if self._tls_dir is not None:
            shutil.rmtree(self._tls_dir, ignore_errors=True)
        self._server = self._thread = self._socket = self._https_socket = self._tls_dir = None
        self._servers = []

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self._port}"

    @property
    def url(self) -> str:
        return self.base_url + EWS_PATH

    @property
    def https_base_url(self) -> str | None:
        """With ``tls`` or ``https_port``: the https base URL; else None."""
        if self._https_port is not None:
            return f"https://{self.host}:{self._https_port}"
        return self.base_url if self.tls else None

    @property
    def graph_url(self) -> str:
        """Where Graph v1.0 is: the ``base_url`` of a Graph client (https when the emulator serves it)."""
        return (self.https_base_url or self.base_url) + GRAPH_PATH

    def authority(self, tenant: str) -> str:
        """The authority an MSAL application is given for ``tenant`` (https when the emulator serves it)."""
        return f"{self.https_base_url or self.base_url}/{tenant}"

    @property
    def ca_file(self) -> str | None:
        """With ``tls``: the CA certificate file clients trust the emulator with (``verify=``)."""
        return str(self.tls_files.ca_file) if self.tls_files else None

    # --- setting up and acting -------------------------------------------------------------------

    def add_account(self, username: str, password: str, impersonation: bool = True) -> None:
        self.exchange.add_account(username, password, impersonation)

    def add_mailbox(
        self, address: str, display_name: str | None = None, populate_count: int = 0, seed: int = 0
    ) -> Mailbox:
        mbx = self.exchange.add_mailbox(address, display_name)
        if populate_count:
            populate(
                self.exchange, mbx, populate_count, seed=seed, colleagues=list(self.exchange.mailboxes.values())[:20]
            )
        return mbx

    def outlook(self, address: str) -> Outlook:
        return Outlook(self.exchange, address)

    def truth(self, address: str, start: Any, end: Any) -> list[dict[str, Any]]:
        return truth(self.exchange, address, start, end)

    def set_faults(self, **faults: Any) -> None:
        self.exchange.faults.update(**faults)
        self._poke()

    def clear_faults(self) -> None:
        self.exchange.faults.clear()
        self._poke()

    def advance(self, seconds: float) -> None:
        self.exchange.clock.advance(seconds)
        self._poke()

    def _poke(self) -> None:
        self.push.poke_all()
        self.graph.delivery.poke_all()

    @property
    def violations(self) -> list[dict[str, Any]]:
        return self.exchange.violations


class EmulatorProcess:
    """``calsync emulator`` as a child process, driven through its control API."""

    def __init__(
        self, *args: str, host: str = "127.0.0.1", port: int | None = None, startup_timeout: float = 20.0
    ) -> None:
        self.host = host
        self.startup_timeout = startup_timeout
        self.port = port or _free_port(host)
        self.args = list(args)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def tls(self) -> bool:
        return "--tls" in self.args

    @property
    def https_base_url(self) -> str | None:
        """With ``--https-port N`` (or ``--tls``): the https base URL."""
        if "--https-port" in self.args:
            return f"https://{self.host}:{self.args[self.args.index('--https-port') + 1]}"
        return self.base_url if self.tls else None

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return self.base_url + EWS_PATH

    def start(self, timeout: float | None = None) -> EmulatorProcess:
        cmd = [sys.executable, "-m", "calsync", "emulator", "--host", self.host, "--port", str(self.port), *self.args]
        self.process = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + (timeout or self.startup_timeout)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"calsync emulator exited with {self.process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                # A liveness probe only: with --tls the CA is the child's, and this is the loopback address.
                if httpx.get(self.base_url + "/emulator/health", timeout=1, verify=False).status_code == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("calsync emulator did not answer in time")

    def control(self, method: str, path: str, **kwargs: Any) -> Any:
        kwargs.setdefault("verify", False)  # the control API of a child on the loopback address
        response = httpx.request(method, self.base_url + "/emulator" + path, timeout=30, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def bound_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket to hand to uvicorn. Declared as IPPROTO_TCP so that asyncio turns Nagle's
    algorithm off on its connections: a plain SOCK_STREAM socket makes every small answer wait ~40 ms."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])

"""The emulator as an HTTP server: EWS at ``/EWS/Exchange.asmx``, the control API under ``/emulator/``,
push delivery running beside them; plus :class:`Emulator`, which runs all that in-process (a background
thread) for tests and programs, and :class:`EmulatorProcess`, which runs ``calsync emulator`` as a child.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
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
from .exchange import Exchange
from .model import Mailbox
from .operations import OPERATIONS
from .outlook import Outlook, truth
from .push import PushDelivery
from .sample_data import populate
from .service import Answer, EwsService

log = logging.getLogger("calsync.emulator")

EWS_PATH = "/EWS/Exchange.asmx"


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


def build_app(exchange: Exchange, *, check: Any = None) -> tuple[Starlette, PushDelivery]:
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
        try:
            yield
        finally:
            await push.stop()

    routes = [
        Route(EWS_PATH, ews, methods=["GET", "POST"]),
        Route(EWS_PATH.lower(), ews, methods=["GET", "POST"]),
        *control.routes(exchange, push),
    ]
    return Starlette(routes=routes, lifespan=lifespan), push


async def _stream(documents: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for doc in documents:
        yield doc


def _schema_checker(exchange: Exchange, schema_dir: Path | None) -> Any:
    if schema_dir is None:
        return None
    from .schema_check import EwsSchema

    schema = EwsSchema.cached(schema_dir)

    def check(document: bytes) -> None:
        errors = schema.errors(document)
        if errors:
            exchange.violations.append({"errors": errors, "document": document[:4000].decode(errors="replace")})
            log.error("emulator sent a schema-invalid document: %s", "; ".join(errors[:3]))

    return check


class Emulator:
    """An emulated Exchange running in this process (a server thread); a context manager.

    >>> with Emulator(accounts={"svc": "secret"}, mailboxes=["ann@example.com"]) as emu:
    ...     emu.url  # http://127.0.0.1:PORT/EWS/Exchange.asmx
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
    ) -> None:
        self.exchange = Exchange(version, Clock(clock_speed))
        for user, password in (accounts or {}).items():
            self.exchange.add_account(user, password)
        for address in mailboxes or []:
            self.exchange.add_mailbox(address)
        self.app, self.push = build_app(self.exchange, check=_schema_checker(self.exchange, strict_schema_dir))
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
        config = uvicorn.Config(
            self.app, log_level="warning", lifespan="on", access_log=False, timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="calsync-emulator", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the emulator did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self._port}"

    @property
    def url(self) -> str:
        return self.base_url + EWS_PATH

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
        self.push.poke_all()

    def clear_faults(self) -> None:
        self.exchange.faults.clear()
        self.push.poke_all()

    def advance(self, seconds: float) -> None:
        self.exchange.clock.advance(seconds)
        self.push.poke_all()

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
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

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
                if httpx.get(self.base_url + "/emulator/health", timeout=1).status_code == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("calsync emulator did not answer in time")

    def control(self, method: str, path: str, **kwargs: Any) -> Any:
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
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])

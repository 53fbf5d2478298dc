"""Operations endpoints: ``/metrics`` (Prometheus), ``/healthz`` (the process is up) and ``/readyz`` (it can do
its work).

- ``GET /metrics``: the runtime's registry (:class:`calsync.metrics.Metrics`) in Prometheus' text format. A
  scrape reads the database (the gauges), so it runs in a worker thread, off the event loop.
- ``GET /healthz``: ``200 {"ok": true}`` as long as the process answers HTTP. Nothing else is checked: a
  failing database must not get the process restarted.
- ``GET /readyz``: ``200`` when the database answers a trivial query within :data:`DATABASE_TIMEOUT` seconds
  and, in a process that runs the jobs, the processor's workers and the scheduler are alive; otherwise
  ``503``. Both answers carry ``{"ok": ..., "checks": {"database": ..., "jobs": ...}, "failed": [...]}``,
  each check ``"ok"``, ``"not run here"`` or a short reason. The reason never quotes the database's error
  (these routes are not authenticated and an error may name hosts): that goes to the log.

At most one database probe runs at a time: while one hangs (a database that accepts connections but never
answers), further ``/readyz`` calls wait for the same probe rather than piling up threads and connections.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from calsync.metrics import CONTENT_TYPE, Metrics
from calsync.store import metrics as store_metrics
from calsync.store.db import Database

log = logging.getLogger("calsync.health")

DATABASE_TIMEOUT = 2.0  # seconds /readyz waits for the database's answer


class DatabaseProbe:
    """Runs the trivial query in a daemon thread of its own, one at a time (see the module docstring)."""

    def __init__(self, db: Database, timeout: float = DATABASE_TIMEOUT) -> None:
        self.db = db
        self.timeout = timeout
        self._lock = threading.Lock()
        self._running: concurrent.futures.Future[None] | None = None

    def _start(self) -> concurrent.futures.Future[None]:
        with self._lock:
            if self._running is not None and not self._running.done():
                return self._running
            future: concurrent.futures.Future[None] = concurrent.futures.Future()

            def run() -> None:
                try:
                    with self.db.read() as session:
                        store_metrics.ping(session)
                except BaseException as exc:  # handed to the waiting request
                    future.set_exception(exc)
                else:
                    future.set_result(None)

            self._running = future
            threading.Thread(target=run, name="calsync-readyz-db", daemon=True).start()
            return future

    async def check(self) -> str:
        """``ok`` or a short reason."""
        future = self._start()
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), self.timeout)
        except TimeoutError:
            log.warning("readiness: the database did not answer in time", extra={"seconds": self.timeout})
            return f"no answer within {self.timeout:g} s"
        except Exception as exc:
            log.warning("readiness: the database failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            return f"unreachable ({type(exc).__name__})"
        return "ok"


def routes(db: Database, metrics: Metrics | None, jobs_running: Callable[[], bool] | None = None) -> list[Route]:
    """``/metrics`` (when ``metrics`` is given), ``/healthz`` and ``/readyz``. ``jobs_running`` is None in a
    process that does not run the jobs (then ``/readyz`` does not ask about them)."""
    probe = DatabaseProbe(db)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def readyz(request: Request) -> JSONResponse:
        checks = {
            "database": await probe.check(),
            "jobs": "not run here" if jobs_running is None else ("ok" if jobs_running() else "not running"),
        }
        failed = [name for name, state in checks.items() if state not in ("ok", "not run here")]
        return JSONResponse({"ok": not failed, "checks": checks, "failed": failed}, status_code=503 if failed else 200)

    found = [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]
    if metrics is not None:
        registry_metrics = metrics

        async def scrape(request: Request) -> Response:
            body = await run_in_threadpool(registry_metrics.exposition)
            return Response(body, media_type=CONTENT_TYPE)

        found.insert(0, Route("/metrics", scrape, methods=["GET"]))
    return found

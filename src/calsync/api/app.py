"""The HTTP API as one FastAPI application, versioned under ``/api/v1``: administration (operators, jobs,
status, failures, settings, audit log) and the application calendar, with token authentication
(``calsync.api.auth``). Its OpenAPI document is ``/api/v1/openapi.json``.

Errors are JSON ``{"detail": "..."}``: what is wrong and what is allowed. Request bodies and parameters that
do not fit the schema get 422 with the problems listed.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from . import calendar, dashboard, failures, jobs, operators, schemas, settings_routes
from .auth import Authenticator
from .context import AdminContext

PREFIX = "/api/v1"
DESCRIPTION = """Administration of calsync and the application calendar it keeps.

Every request needs `Authorization: Bearer <token>`; tokens are made with `calsync tokens create --role ROLE`
(roles: `admin` everything, `viewer` read all but calendars, `calendar` read calendars). Every change is written
to the audit log."""


# Every operation may answer these, always as a Problem ({"detail", "problems"?}); FastAPI's own 422 shape is
# replaced by ours (see _invalid_request), so the document says what is really sent.
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.Problem, "description": "The body is not JSON."},
    401: {"model": schemas.Problem, "description": "No token, or not a valid one."},
    403: {"model": schemas.Problem, "description": "The token's role may not do this."},
    422: {"model": schemas.Problem, "description": "The request is not valid; nothing changed."},
}


def _problem_text(error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "request"
    return f"{where}: {error.get('msg', 'not valid')}"


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [_problem_text(e) for e in exc.errors()]
    return JSONResponse({"detail": "; ".join(problems) or "the request is not valid", "problems": problems}, 422)


def build(admin: AdminContext, *, lifespan: Any = None) -> FastAPI:
    """The FastAPI application with every API route; callers add their own (listener, health, pages)."""
    app = FastAPI(
        title="calsync",
        version="1",
        description=DESCRIPTION,
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=None,  # the interactive pages load scripts from a CDN; calsync serves no third-party assets
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.admin = admin
    app.state.authenticator = Authenticator(admin.db, admin.settings)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    for module in (dashboard, operators, calendar, jobs, failures, settings_routes):
        app.include_router(module.router, prefix=PREFIX, responses=COMMON_RESPONSES)
    return app

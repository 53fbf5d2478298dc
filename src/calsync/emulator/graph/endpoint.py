"""How every Graph request is served: injected faults first (a slow answer, 503, 429 with ``Retry-After``), then the
caller's access token and the permission the route needs, then the handler in a worker thread (the shared
mailboxes sit behind the organisation's lock). Answers carry Graph's ``request-id`` and ``client-request-id``
headers and ``Preference-Applied`` for the preferences honoured; errors are Graph's JSON error. Also what several
handlers share: the mailbox a ``/users/{id}`` path names, the body as JSON, ``$top``/``$skip`` paging with absolute
``@odata.nextLink``s, and the time zone of the answer.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ..errors import EwsError
from ..exchange import Exchange
from ..model import Mailbox
from .datetimes import preferences, preferred_zone
from .errors import GraphError, bad_request
from .identity import Identity, Principal

CONTENT_TYPE = "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8"
DEFAULT_PAGE = 10
MAX_PAGE = 1000
MAX_BODY = 4_000_000
X = TypeVar("X")


@dataclass
class Call:
    """One Graph request, as its handler sees it."""

    exchange: Exchange
    principal: Principal
    method: str
    path_params: dict[str, Any]
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    base: str  # scheme://host:port the client reached, for absolute links
    path: str
    applied: list[str] = field(default_factory=list)  # preferences honoured, for Preference-Applied

    @property
    def prefer(self) -> dict[str, str]:
        return preferences(self.headers.get("prefer"))

    def zone(self) -> str | None:
        """The zone answers are written in (None: UTC), noting the preference as applied."""
        zone = preferred_zone(self.prefer)
        if zone is not None:
            self.applied.append(f'outlook.timezone="{zone}"')
        return zone

    def user(self) -> Mailbox:
        return find_user(self.exchange, str(self.path_params["user"]))

    def json(self) -> dict[str, Any]:
        try:
            data = json.loads(self.body or b"{}")
        except ValueError as exc:
            raise bad_request(f"Unable to read JSON request payload: {exc}", "BadRequest") from exc
        if not isinstance(data, dict):
            raise bad_request("The request body must be a JSON object.", "BadRequest")
        return data

    def refuse_options(self, *names: str) -> None:
        for name in names:
            if name in self.query:
                raise GraphError(
                    501, "NotImplemented", f"The emulator does not support the query option '{name}' here."
                )

    def link(self, params: dict[str, str]) -> str:
        return f"{self.base}{self.path}?{urlencode(params, safe='$:,')}"

    def page(self, things: Sequence[X]) -> tuple[Sequence[X], str | None]:
        """``$top`` (default 10, at most 1000) and ``$skip``: this page and the link to the next one, if any."""
        top, skip = self._count("$top", DEFAULT_PAGE), self._count("$skip", 0)
        if not 1 <= top <= MAX_PAGE:
            raise GraphError(400, "ErrorInvalidParameter", f"$top must be from 1 to {MAX_PAGE}.")
        chunk = things[skip : skip + top]
        if skip + top >= len(things):
            return chunk, None
        return chunk, self.link({**self.query, "$top": str(top), "$skip": str(skip + top)})

    def _count(self, name: str, default: int) -> int:
        raw = self.query.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError as exc:
            raise GraphError(400, "ErrorInvalidParameter", f"{name} must be a number, got '{raw}'.") from exc
        if value < 0:
            raise GraphError(400, "ErrorInvalidParameter", f"{name} must not be negative.")
        return value


def find_user(exchange: Exchange, user: str) -> Mailbox:
    """The mailbox a Graph user id names: its object id (the mailbox's GUID) or userPrincipalName (its address)."""
    wanted = user.strip().lower()
    try:
        found = exchange.by_guid.get(uuid.UUID(wanted))
    except ValueError:
        found = exchange.mailboxes.get(wanted)
    if found is None:
        raise GraphError(404, "ErrorInvalidUser", f"The requested user '{user}' is invalid.")
    if not found.graph_enabled:
        raise GraphError(
            404, "MailboxNotEnabledForRESTAPI", "The mailbox is either inactive, soft-deleted, or is hosted on-premise."
        )
    return found


def answer(body: Any = None, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    content = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
    return Response(content, status_code=status, headers=headers, media_type=None if body is None else CONTENT_TYPE)


def error_answer(err: GraphError, request_id: str, client_request_id: str) -> Response:
    body = {
        "error": {
            "code": err.code,
            "message": err.message,
            "innerError": {
                "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": request_id,
                "client-request-id": client_request_id,
            },
        }
    }
    return answer(body, err.status, err.headers)


def _fault(exchange: Exchange) -> GraphError | None:
    faults = exchange.faults
    retry_after = f"{faults.graph_retry_after:g}"
    if faults.take("graph_503"):
        return GraphError(
            503,
            "serviceNotAvailable",
            "The service is temporarily unavailable for maintenance or is overloaded. You may repeat the request "
            "after a delay, which may be specified in a Retry-After header.",
            {"Retry-After": retry_after},
        )
    if faults.take("graph_throttle"):
        return GraphError(429, "TooManyRequests", "Please retry again later.", {"Retry-After": retry_after})
    return None


Handler = Callable[[Call], Response]


def endpoint(
    exchange: Exchange, identity: Identity, handler: Handler, *, write: bool = False
) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint serving ``handler`` for callers whose token grants read (or, with ``write``, write)
    access to calendars."""

    async def serve(request: Request) -> Response:
        request_id = str(uuid.uuid4())
        client_request_id = request.headers.get("client-request-id") or request_id
        ids = {"request-id": request_id, "client-request-id": client_request_id}
        exchange.count("graph_requests")
        if exchange.faults.graph_slow_seconds > 0:
            await asyncio.sleep(exchange.faults.graph_slow_seconds)
        try:
            fault = _fault(exchange)
            if fault is not None:
                raise fault
            principal = identity.principal(request.headers.get("authorization"))
            principal.require(write=write)
            body = await request.body()
            if len(body) > MAX_BODY:
                raise GraphError(413, "RequestEntityTooLarge", "The request body is too large.")
            call = Call(
                exchange,
                principal,
                request.method,
                dict(request.path_params),
                dict(request.query_params),
                {k.lower(): v for k, v in request.headers.items()},
                body,
                f"{request.url.scheme}://{request.url.netloc}",
                request.url.path,
            )
            response = await run_in_threadpool(_run, handler, call)
        except GraphError as err:
            response = error_answer(err, request_id, client_request_id)
        else:
            if call.applied:
                response.headers["Preference-Applied"] = ", ".join(dict.fromkeys(call.applied))
        response.headers.update(ids)
        return response

    return serve


def _run(handler: Handler, call: Call) -> Response:
    try:
        return handler(call)
    except EwsError as exc:
        raise GraphError.from_exchange(exc) from exc

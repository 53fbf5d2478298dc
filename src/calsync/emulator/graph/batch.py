"""JSON batching: ``POST /v1.0/$batch`` with ``{"requests": [{"id", "method", "url", "headers", "body"}, ...]}``
answers ``{"responses": [{"id", "status", "headers", "body"}, ...]}``, each request served by the same route, token
check and faults as if it came alone (so one of them can be throttled with its own 429 and ``Retry-After`` while
the others succeed), as Microsoft documents:

- at most 20 requests (more: 400 ``BadRequest``); every request needs a unique ``id``, a ``method`` and a ``url``
  relative to the version (``/users/...`` or ``users/...``); a request with a ``body`` needs a ``Content-Type``
  header; otherwise the whole batch is refused with 400 naming what is wrong;
- the outer request's ``Authorization`` applies to each request;
- ``dependsOn`` (sequencing) is not emulated: a batch using it is answered 501.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import Message, Scope

from .endpoint import answer
from .errors import GraphError, bad_request

MAX_REQUESTS = 20
VERSION = "/v1.0"


def _requests(body: bytes) -> list[dict[str, Any]]:
    try:
        document = json.loads(body or b"{}")
    except ValueError as exc:
        raise bad_request(f"Unable to read JSON request payload: {exc}", "BadRequest") from exc
    requests = document.get("requests") if isinstance(document, dict) else None
    if not isinstance(requests, list) or not requests:
        raise bad_request("A batch needs a non-empty 'requests' array.", "BadRequest")
    if len(requests) > MAX_REQUESTS:
        raise bad_request(f"Batch request exceeds the maximum number of {MAX_REQUESTS} requests.", "BadRequest")
    seen: set[str] = set()
    for number, one in enumerate(requests, start=1):
        if not isinstance(one, dict):
            raise bad_request(f"Request {number} of the batch is not an object.", "BadRequest")
        for name in ("id", "method", "url"):
            if not isinstance(one.get(name), str) or not one[name]:
                raise bad_request(f"Request {number} of the batch has no '{name}'.", "BadRequest")
        if one["id"] in seen:
            raise bad_request(f"The batch has two requests with the id '{one['id']}'.", "BadRequest")
        seen.add(one["id"])
        headers = one.get("headers") or {}
        if not isinstance(headers, dict):
            raise bad_request(f"The headers of request '{one['id']}' are not an object.", "BadRequest")
        if "body" in one and not any(k.lower() == "content-type" for k in headers):
            raise bad_request(f"Request '{one['id']}' has a body but no Content-Type header.", "BadRequest")
        if "dependsOn" in one:
            raise GraphError(501, "NotImplemented", "The calsync emulator does not sequence batches (dependsOn).")
    return requests


def batch_endpoint(routes: Callable[[], Sequence[BaseRoute]]) -> Callable[[Request], Awaitable[Response]]:
    """The ``$batch`` endpoint over ``routes`` (the Graph routes it dispatches to)."""

    async def serve(request: Request) -> Response:
        try:
            requests = _requests(await request.body())
        except GraphError as err:
            body = {"error": {"code": err.code, "message": err.message}}
            return answer(body, err.status, err.headers)
        responses = [await _one(request, one, routes()) for one in requests]
        return answer({"responses": responses})

    return serve


async def _one(outer: Request, one: dict[str, Any], routes: Sequence[BaseRoute]) -> dict[str, Any]:
    url = one["url"] if one["url"].startswith("/") else "/" + one["url"]
    path, _, query = url.partition("?")
    body = b"" if "body" not in one else json.dumps(one["body"]).encode()
    headers = {str(k).lower(): str(v) for k, v in (one.get("headers") or {}).items()}
    if "authorization" in outer.headers:
        headers.setdefault("authorization", outer.headers["authorization"])
    scope: Scope = {
        "type": "http",
        "method": one["method"].upper(),
        "path": VERSION + unquote(path),
        "raw_path": (VERSION + path).encode(),
        "query_string": query.encode(),
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
        "scheme": outer.url.scheme,
        "server": outer.scope.get("server"),
        "client": outer.scope.get("client"),
        "root_path": "",
        "app": outer.scope.get("app"),
    }
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            scope.update(child)
            break
    else:
        return {"id": one["id"], "status": 404, "body": {"error": {"code": "BadRequest", "message": "No such path."}}}

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    endpoint = getattr(route, "endpoint", None)
    if endpoint is None:
        return {"id": one["id"], "status": 501, "body": {"error": {"code": "NotImplemented", "message": url}}}
    response: Response = await endpoint(Request(scope, receive))
    content = bytes(response.body) if response.body else b""
    found: dict[str, Any] = {"id": one["id"], "status": response.status_code}
    kept = {k: v for k, v in response.headers.items() if k.lower() in ("retry-after", "location", "content-type")}
    if kept:
        found["headers"] = kept
    if content:
        found["body"] = json.loads(content)
    return found

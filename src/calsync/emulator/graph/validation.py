"""The validation handshake of a new subscription: Graph POSTs to the notification URL (and to the lifecycle
notification URL) with ``?validationToken=...`` and an empty ``text/plain`` body; the endpoint must answer within
10 seconds (of emulator clock) with 200, ``Content-Type: text/plain`` and the URL-decoded token as the body, or the
subscription is refused with 400.
"""

from __future__ import annotations

import threading
import uuid
from urllib.parse import quote

import httpx

from ..clock import Clock
from .errors import GraphError

TIMEOUT_SECONDS = 10.0


_client: httpx.Client | None = None
_client_lock = threading.Lock()


def _http() -> httpx.Client:
    """One client for every handshake (making one costs tens of milliseconds of CPU: its TLS context)."""
    global _client
    with _client_lock:
        if _client is None:
            _client = httpx.Client(follow_redirects=False)
        return _client


def new_token() -> str:
    # Graph's tokens read like this one: spaces and a colon, so a client has to URL-decode them.
    return f"Validation: Testing client application reachability for subscription Request-Id: {uuid.uuid4()}"


def handshake(url: str, clock: Clock) -> None:
    """Validate ``url`` as Graph does; GraphError 400 when the endpoint does not answer as it must."""
    token = new_token()
    separator = "&" if "?" in url else "?"
    try:
        response = _http().post(
            f"{url}{separator}validationToken={quote(token, safe='')}",
            content=b"",
            headers={"Content-Type": "text/plain; charset=utf-8"},
            timeout=max(clock.real_seconds(TIMEOUT_SECONDS), 0.2),
        )
    except httpx.TimeoutException as exc:
        raise GraphError(400, "InvalidRequest", f"Subscription validation request timed out: {url}") from exc
    except httpx.HTTPError as exc:
        raise GraphError(
            400, "InvalidRequest", f"Subscription validation request failed: {url} could not be reached ({exc})."
        ) from exc
    if response.status_code != 200:
        raise GraphError(
            400,
            "InvalidRequest",
            "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation "
            f"request (got {response.status_code} from {url}).",
        )
    if not response.headers.get("content-type", "").lower().startswith("text/plain"):
        raise GraphError(
            400, "InvalidRequest", "Subscription validation request failed. The response must be text/plain."
        )
    if response.text != token:
        raise GraphError(
            400,
            "InvalidRequest",
            "Subscription validation request failed. Response must exactly match validationToken query parameter.",
        )

"""Serving the web admin pages at ``/admin/``.

This module owns only the delivery of the static files in ``calsync/admin/static`` (package data): the
route, and the response headers that keep the pages safe to use (a strict Content-Security-Policy, no
framing, no referrer, no caching of stale pages after an upgrade). Everything the pages show or change
comes from the admin REST API (``/api/v1``), which the pages call from the browser with the bearer token
the user pasted; nothing here reads the database or checks a token.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PREFIX = "/admin"
STATIC_PACKAGE = ("calsync.admin", "static")

# Scripts, styles and fetch() only from calsync itself; no inline script, no plugins, no framing.
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class _WithHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response of the wrapped app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    key = name.lower().encode("latin-1")
                    if key not in present:
                        headers.append((key, value.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def routes() -> list[BaseRoute]:
    """The web admin's routes: the static pages at ``/admin/`` (``/admin`` redirects there)."""
    static = StaticFiles(packages=[STATIC_PACKAGE], html=True)
    return [Mount(PREFIX, app=_WithHeaders(static), name="admin")]

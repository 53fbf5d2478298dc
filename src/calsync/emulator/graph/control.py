"""The Graph part of the control API, under ``/emulator/graph/``: register apps and their certificates, revoke
tokens, list subscriptions, raise lifecycle events on one, and read what was delivered. (Graph faults are set with
the other faults, ``POST /emulator/faults``; delta tokens expire with ``POST
/emulator/mailboxes/{address}/expire-sync-states``.)

- ``GET, POST /emulator/graph/apps``: list; register ``{"tenant", "client_id", "secret"?, "permissions"?}``
- ``POST /emulator/graph/apps/{client_id}/certificates``: ``{"certificate": "-----BEGIN CERTIFICATE-----..."}``
- ``POST /emulator/graph/tokens/revoke``: ``{"client_id"?}``; every token issued so far (to that app) is refused
- ``GET /emulator/graph/subscriptions``; ``POST /emulator/graph/subscriptions/{id}/lifecycle`` ``{"event"}``
- ``GET /emulator/graph/notification-log``
- ``POST /emulator/graph/mailboxes/{address}`` ``{"graph_enabled": false}``: Graph answers for that mailbox as for
  one on premises or without an Exchange Online licence (404 ``MailboxNotEnabledForRESTAPI``); EWS is unaffected
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..control import BadRequest, guard, read_json
from .errors import GraphError
from .identity import WRITE, App

if TYPE_CHECKING:
    from .wing import GraphWing


def _app(app: App) -> dict[str, Any]:
    return {
        "tenant": app.tenant.name,
        "tenant_id": app.tenant.id,
        "client_id": app.client_id,
        "permissions": sorted(app.permissions),
        "has_secret": app.secret is not None,
        "certificates": sorted(app.certificates),
    }


def routes(wing: GraphWing) -> list[Route]:
    identity, subscriptions = wing.identity, wing.subscriptions

    async def list_apps(request: Request) -> Any:
        return [_app(a) for a in list(identity.apps.values())]

    async def add_app(request: Request) -> Any:
        data = await read_json(request)
        permissions = data.get("permissions", [WRITE])
        if not isinstance(permissions, list):
            raise BadRequest('permissions: a list such as ["Calendars.Read"]')
        app = identity.add_app(
            str(data.get("tenant", "")), str(data.get("client_id", "")), data.get("secret"), permissions
        )
        return JSONResponse(_app(app), status_code=201)

    async def add_certificate(request: Request) -> Any:
        data = await read_json(request)
        try:
            thumbprints = identity.add_certificate(request.path_params["client_id"], str(data.get("certificate", "")))
        except LookupError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        return JSONResponse(thumbprints, status_code=201)

    async def revoke(request: Request) -> Any:
        client_id = (await read_json(request)).get("client_id")
        identity.revoke(client_id)
        return {"revoked": client_id or "all"}

    async def list_subscriptions(request: Request) -> Any:
        return [
            {
                **s.describe(),
                "state": s.state,
                "mailbox": str(s.mailbox),
                "reauthorization_required": s.reauthorization_required,
                "deliveries": s.deliveries,
                "failures": s.failures,
            }
            for s in list(subscriptions.items.values())
        ]

    async def lifecycle(request: Request) -> Any:
        event = str((await read_json(request)).get("event", ""))
        try:
            subscription = subscriptions.raise_lifecycle(request.path_params["subscription"], event)
        except GraphError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        return {"subscription": subscription.id, "event": event, "state": subscription.state}

    async def set_mailbox(request: Request) -> Any:
        address = request.path_params["address"].lower()
        data = await read_json(request)
        mailbox = wing.exchange.mailboxes.get(address)
        if mailbox is None:
            return JSONResponse({"error": f"no mailbox {address}"}, status_code=404)
        if not isinstance(data.get("graph_enabled"), bool):
            return JSONResponse({"error": "give {'graph_enabled': true or false}"}, status_code=400)
        mailbox.graph_enabled = data["graph_enabled"]
        return {"mailbox": address, "graph_enabled": mailbox.graph_enabled}

    async def notification_log(request: Request) -> Any:
        return [asdict(n) for n in list(wing.delivery.log)]

    p = "/emulator/graph"
    return [
        Route(p + "/apps", guard(list_apps), methods=["GET"]),
        Route(p + "/apps", guard(add_app), methods=["POST"]),
        Route(p + "/apps/{client_id}/certificates", guard(add_certificate), methods=["POST"]),
        Route(p + "/tokens/revoke", guard(revoke), methods=["POST"]),
        Route(p + "/subscriptions", guard(list_subscriptions), methods=["GET"]),
        Route(p + "/subscriptions/{subscription}/lifecycle", guard(lifecycle), methods=["POST"]),
        Route(p + "/notification-log", guard(notification_log), methods=["GET"]),
        Route(p + "/mailboxes/{address}", guard(set_mailbox), methods=["POST"]),
    ]

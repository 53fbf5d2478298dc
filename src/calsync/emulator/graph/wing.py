"""The Microsoft Graph wing assembled: its state (the identity service, the subscriptions, the delta sync states),
its notification delivery, and its routes in the order they must be matched: the token endpoint and OpenID
configuration, the calendar operations under ``/v1.0/users/{id|userPrincipalName}`` (and again under
``/calendar``), the subscriptions, JSON batching (``/v1.0/$batch``, dispatching to those routes), ``/v1.0/me``
(refused for app-only tokens, as Graph refuses it), and last every other ``/v1.0`` path (501 NotImplemented,
naming what was asked).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..exchange import Exchange
from . import control, events
from .batch import batch_endpoint
from .calendar_view import list_calendar_view, list_instances
from .delivery import GraphDelivery
from .delta import DeltaStore, delta
from .endpoint import Call, Handler, endpoint
from .errors import GraphError, bad_request
from .identity import Identity, parse_app_spec
from .subscriptions import Subscriptions

ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def _me(call: Call) -> Response:
    raise bad_request("/me request is only valid with delegated authentication flow.", "BadRequest")


def _not_implemented(call: Call) -> Response:
    raise GraphError(501, "NotImplemented", f"The calsync emulator does not implement {call.method} {call.path}.")


class GraphWing:
    def __init__(self, exchange: Exchange, *, allow_http: bool = False, token_minutes: float = 60) -> None:
        self.exchange = exchange
        self.identity = Identity(exchange.clock, token_minutes, lambda: exchange.count("graph_tokens_issued"))
        self.subscriptions = Subscriptions(exchange, allow_http=allow_http)
        self.delivery = GraphDelivery(exchange, self.subscriptions)
        self.deltas = DeltaStore()

    def add_app(self, spec: str) -> None:
        """Register an app from ``TENANT:CLIENT_ID:SECRET[:PERMISSION,...]`` (the ``--graph-app`` form)."""
        tenant, client_id, secret, permissions = parse_app_spec(spec)
        self.identity.add_app(tenant, client_id, secret, permissions)

    def tenants(self) -> list[str]:
        return list(dict.fromkeys(app.tenant.name for app in self.identity.apps.values()))

    def routes(self) -> list[BaseRoute]:
        def serve(handler: Handler, write: bool = False) -> Callable[[Request], Awaitable[Response]]:
            return endpoint(self.exchange, self.identity, handler, write=write)

        user = "/v1.0/users/{user}"
        routes: list[BaseRoute] = [
            *self.identity.routes(),
            *control.routes(self),
            Route(user + "/calendar", serve(events.get_calendar), methods=["GET"]),
        ]
        for base in (user, user + "/calendar"):
            routes += [
                Route(base + "/events", serve(events.list_events), methods=["GET"]),
                Route(base + "/events", serve(events.create_event, write=True), methods=["POST"]),
                Route(base + "/events/{event}", serve(events.get_event), methods=["GET"]),
                Route(base + "/events/{event}", serve(events.update_event, write=True), methods=["PATCH"]),
                Route(base + "/events/{event}", serve(events.delete_event, write=True), methods=["DELETE"]),
                Route(base + "/events/{event}/cancel", serve(events.cancel_event, write=True), methods=["POST"]),
                Route(base + "/events/{event}/instances", serve(list_instances), methods=["GET"]),
                Route(base + "/calendarView", serve(list_calendar_view), methods=["GET"]),
                Route(base + "/calendarView/delta", serve(partial(delta, self.deltas)), methods=["GET"]),
                Route(base + "/calendarView/delta()", serve(partial(delta, self.deltas)), methods=["GET"]),
            ]
        subscriptions = self.subscriptions
        one = "/v1.0/subscriptions/{subscription}"
        routes += [
            Route("/v1.0/subscriptions", serve(subscriptions.list), methods=["GET"]),
            Route("/v1.0/subscriptions", serve(subscriptions.post), methods=["POST"]),
            Route(one, serve(subscriptions.get), methods=["GET"]),
            Route(one, serve(subscriptions.patch), methods=["PATCH"]),
            Route(one, serve(subscriptions.delete), methods=["DELETE"]),
            Route(one + "/reauthorize", serve(subscriptions.reauthorize), methods=["POST"]),
            Route("/v1.0/$batch", batch_endpoint(lambda: routes), methods=["POST"]),
            Route("/v1.0/me", serve(_me), methods=ALL_METHODS),
            Route("/v1.0/me/{rest:path}", serve(_me), methods=ALL_METHODS),
            Route("/v1.0/{rest:path}", serve(_not_implemented), methods=ALL_METHODS),
        ]
        return routes

"""Graph change-notification subscriptions on a mailbox's events: ``POST``, ``GET``, ``PATCH`` and ``DELETE`` of
``/v1.0/subscriptions`` and ``POST /v1.0/subscriptions/{id}/reauthorize``, and the subscriptions themselves.

A subscription watches ``users/{id}/events`` (or ``users/{id}/calendar/events``) for ``created``, ``updated`` and
``deleted``; it is created only after its notification URL (and lifecycle notification URL, which can only be set
then) passed the validation handshake; it must use https unless the emulator allows http; it lives at most 4,230
minutes and at least 45 (a shorter expiry is raised to 45, a longer one refused as Graph refuses it) and ends at its
expirationDateTime. An app sees only its own subscriptions. Lifecycle events (``reauthorizationRequired``,
``subscriptionRemoved``, ``missed``) are raised from the control API and delivered by :mod:`.delivery`.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from starlette.responses import Response

from ..exchange import Exchange
from .datetimes import stamp
from .endpoint import Call, answer, find_user
from .errors import GraphError, bad_request
from .identity import App
from .validation import handshake

MAX_MINUTES = 4230
MIN_MINUTES = 45
CHANGE_TYPES = ("created", "updated", "deleted")
LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")
_RESOURCE = re.compile(
    r"/?(?:users/(?P<user>[^/()']+)|users\('(?P<quoted>[^']+)'\)|(?P<me>me))(?:/calendar)?/events/?", re.IGNORECASE
)
State = Literal["active", "removed", "expired", "deleted"]


@dataclass
class GraphSubscription:
    id: str
    app: App
    resource: str
    mailbox: uuid.UUID
    change_types: frozenset[str]
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expiration: datetime
    cursor: int  # the journal position up to which changes were notified
    state: State = "active"
    reauthorization_required: bool = False
    lifecycle_queue: list[str] = field(default_factory=list)  # lifecycle events waiting to be delivered
    deliveries: int = 0
    failures: int = 0

    def describe(self) -> dict[str, Any]:
        """The subscription as Graph writes it (every property of Microsoft's full example)."""
        return {
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.app.client_id,
            "changeType": ",".join(t for t in CHANGE_TYPES if t in self.change_types),
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "notificationQueryOptions": None,
            "notificationContentType": None,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": stamp(self.expiration),
            "creatorId": self.app.service_principal,
            "includeResourceData": None,
            "latestSupportedTlsVersion": "v1_2",
            "encryptionCertificate": None,
            "encryptionCertificateId": None,
            "notificationUrlAppId": None,
        }


class Subscriptions:
    """Every Graph subscription of the organisation, and whom to tell when one is made or changed."""

    def __init__(self, exchange: Exchange, *, allow_http: bool = False) -> None:
        self.exchange = exchange
        self.allow_http = allow_http
        self.items: dict[str, GraphSubscription] = {}
        self._lock = threading.Lock()
        self._listeners: list[Callable[[GraphSubscription], None]] = []

    def on_change(self, listener: Callable[[GraphSubscription], None]) -> None:
        self._listeners.append(listener)

    def changed(self, subscription: GraphSubscription) -> None:
        for listener in self._listeners:
            listener(subscription)

    def live(self) -> list[GraphSubscription]:
        return [s for s in list(self.items.values()) if s.state == "active"]

    def find(self, subscription_id: str, app: App | None = None) -> GraphSubscription:
        """An active subscription (of ``app``, when given); 404 as Graph answers otherwise."""
        found = self.items.get(subscription_id)
        if found is not None and found.state == "active" and self.exchange.now() >= found.expiration:
            self.end(found, "expired")
        if found is None or found.state != "active" or (app is not None and found.app is not app):
            raise GraphError(404, "ResourceNotFound", f"The object '{subscription_id}' was not found.")
        return found

    def end(self, subscription: GraphSubscription, state: State) -> None:
        subscription.state = state
        self.changed(subscription)

    def raise_lifecycle(self, subscription_id: str, event: str) -> GraphSubscription:
        """A lifecycle event, as the control API injects it: queued for delivery to the lifecycle URL."""
        if event not in LIFECYCLE_EVENTS:
            raise ValueError(f"event: '{event}' is not one of {', '.join(LIFECYCLE_EVENTS)}")
        subscription = self.find(subscription_id)
        if subscription.lifecycle_url is None and event != "subscriptionRemoved":
            raise ValueError(f"subscription {subscription_id} has no lifecycleNotificationUrl to send '{event}' to")
        with self.exchange.lock:
            if event == "reauthorizationRequired":
                subscription.reauthorization_required = True
            if event == "missed":  # the notifications not sent so far are lost: the client must resync
                subscription.cursor = self.exchange.by_guid[subscription.mailbox].seq
            if subscription.lifecycle_url is None:
                self.end(subscription, "removed")
                return subscription
            subscription.lifecycle_queue.append(event)
        self.changed(subscription)
        return subscription

    # --- reading requests -----------------------------------------------------------------------

    def _url(self, value: Any, name: str) -> str:
        if not isinstance(value, str) or not value:
            raise bad_request(f"{name} is required.", "InvalidRequest")
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise bad_request(f"{name} '{value}' is not an absolute URL.", "InvalidRequest")
        if parts.scheme == "http" and not self.allow_http:
            raise bad_request(
                f"{name} must use https (start the emulator with --graph-allow-http to allow http): {value}",
                "InvalidRequest",
            )
        return value

    def _expiration(self, value: Any) -> datetime:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError as exc:
            raise bad_request(f"expirationDateTime '{value}' is not a date-time.", "InvalidRequest") from exc
        if moment.tzinfo is None:
            raise bad_request("expirationDateTime needs a time zone offset or Z.", "InvalidRequest")
        now = self.exchange.now()
        if moment <= now:
            raise bad_request("Subscription expiration must be in the future.", "InvalidRequest")
        if moment > now + timedelta(minutes=MAX_MINUTES):
            raise bad_request(
                f"Subscription expiration can only be {MAX_MINUTES} minutes in the future.", "ExtensionError"
            )
        return max(moment, now + timedelta(minutes=MIN_MINUTES))

    def _mailbox(self, resource: Any) -> tuple[str, uuid.UUID]:
        match = _RESOURCE.fullmatch(resource) if isinstance(resource, str) else None
        if match is None:
            raise bad_request(
                f"The resource '{resource}' is not supported by the emulator: subscribe to users/{{id}}/events.",
                "InvalidRequest",
            )
        if match["me"]:
            raise bad_request("/me request is only valid with delegated authentication flow.", "BadRequest")
        return resource.lstrip("/"), find_user(self.exchange, match["user"] or match["quoted"]).guid

    def create(self, app: App, data: dict[str, Any]) -> GraphSubscription:
        if data.get("includeResourceData"):
            raise bad_request("Rich notifications (includeResourceData) are not emulated.", "InvalidRequest")
        change_types = frozenset(str(data.get("changeType") or "").split(","))
        if not change_types or not change_types <= set(CHANGE_TYPES):
            raise bad_request(
                f"changeType '{data.get('changeType')}' must be a comma-separated list of {', '.join(CHANGE_TYPES)}.",
                "InvalidRequest",
            )
        resource, mailbox = self._mailbox(data.get("resource"))
        url = self._url(data.get("notificationUrl"), "notificationUrl")
        lifecycle = data.get("lifecycleNotificationUrl")
        lifecycle_url = None if lifecycle is None else self._url(lifecycle, "lifecycleNotificationUrl")
        expiration = self._expiration(data.get("expirationDateTime"))
        client_state = data.get("clientState")
        if client_state is not None and (not isinstance(client_state, str) or len(client_state) > 255):
            raise bad_request("clientState must be a string of at most 255 characters.", "InvalidRequest")
        for endpoint_url in dict.fromkeys(u for u in (url, lifecycle_url) if u):
            handshake(endpoint_url, self.exchange.clock)
        with self.exchange.lock:
            subscription = GraphSubscription(
                str(uuid.uuid4()),
                app,
                resource,
                mailbox,
                change_types,
                url,
                lifecycle_url,
                client_state,
                expiration,
                self.exchange.by_guid[mailbox].seq,
            )
            self.items[subscription.id] = subscription
        self.changed(subscription)
        return subscription

    def renew(self, subscription: GraphSubscription, data: dict[str, Any]) -> None:
        if "lifecycleNotificationUrl" in data:
            raise bad_request(
                "lifecycleNotificationUrl can only be set when the subscription is created.", "InvalidRequest"
            )
        unknown = set(data) - {"expirationDateTime", "notificationUrl"}
        if unknown:
            raise bad_request(f"Only expirationDateTime and notificationUrl can be updated, not {sorted(unknown)}.")
        expiration = self._expiration(data["expirationDateTime"]) if "expirationDateTime" in data else None
        url = self._url(data["notificationUrl"], "notificationUrl") if "notificationUrl" in data else None
        if url is not None:
            handshake(url, self.exchange.clock)
        with self.exchange.lock:
            subscription.expiration = expiration or subscription.expiration
            subscription.notification_url = url or subscription.notification_url
            subscription.reauthorization_required = False  # renewing reauthorizes, as the documentation says
        self.changed(subscription)

    # --- the routes' handlers -------------------------------------------------------------------

    def post(self, call: Call) -> Response:
        subscription = self.create(call.principal.app, call.json())
        return answer({"@odata.context": _context(call, "subscriptions/$entity"), **subscription.describe()}, 201)

    def list(self, call: Call) -> Response:
        mine = [s.describe() for s in self.live() if s.app is call.principal.app]
        return answer({"@odata.context": _context(call, "subscriptions"), "value": mine})

    def get(self, call: Call) -> Response:
        subscription = self.find(call.path_params["subscription"], call.principal.app)
        return answer({"@odata.context": _context(call, "subscriptions/$entity"), **subscription.describe()})

    def patch(self, call: Call) -> Response:
        subscription = self.find(call.path_params["subscription"], call.principal.app)
        self.renew(subscription, call.json())
        return answer({"@odata.context": _context(call, "subscriptions/$entity"), **subscription.describe()})

    def delete(self, call: Call) -> Response:
        self.end(self.find(call.path_params["subscription"], call.principal.app), "deleted")
        return answer(status=204)

    def reauthorize(self, call: Call) -> Response:
        subscription = self.find(call.path_params["subscription"], call.principal.app)
        subscription.reauthorization_required = False
        self.changed(subscription)
        return answer(status=204)


def _context(call: Call, what: str) -> str:
    return f"{call.base}/v1.0/$metadata#{what}"

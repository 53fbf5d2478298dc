"""Graph's change and lifecycle notifications, as the listener's :class:`~calsync.listener.protocol.PushReader`
for the ``graph`` door (``/graph/notifications/<secret>`` and ``/graph/lifecycle/<secret>``).

- Validation: Graph checks a notification URL (and the lifecycle URL) by POSTing ``?validationToken=...``; the
  listener echoes the token as text/plain at once (Graph allows 10 seconds).
- A change notification body is ``{"value": [{"subscriptionId", "clientState", "changeType", "resource",
  "resourceData": {"id", ...}, ...}, ...]}``; each becomes one notification with one event (``created`` ->
  CreatedEvent, ``updated`` -> ModifiedEvent, ``deleted`` -> DeletedEvent) naming the event's id. Graph
  batches several in one POST. The ``clientState`` is checked by the listener against the subscription's.
- A lifecycle notification carries ``lifecycleEvent`` (reauthorizationRequired, subscriptionRemoved, missed).
- Answer: 202 Accepted with no body, once stored (Graph retries anything else, and throttles an endpoint that
  answers slower than 3 seconds); a notification of a subscription calsync does not hold is not stored, and
  answered the same way (Graph has no "unsubscribe" answer; such a subscription expires by itself).

Safety: JSON only (``application/json``), at most :data:`~calsync.listener.protocol.MAX_BODY_BYTES`, nesting
bounded, every field checked for type and length; anything else is refused with a reason that never quotes the
body.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from calsync.listener.protocol import MAX_BODY_BYTES, Event, Notification, NotificationRejected, Reply, Status

__all__ = ["GraphNotificationReader"]

CHANGE_KINDS = {"created": "CreatedEvent", "updated": "ModifiedEvent", "deleted": "DeletedEvent"}
LIFECYCLE_EVENTS = frozenset({"reauthorizationRequired", "subscriptionRemoved", "missed"})
MAX_NOTIFICATIONS = 1000  # in one POST
MAX_TEXT = 1024  # characters of an id, a client state, a resource


class GraphNotificationReader:
    door = "graph"
    lifecycle = True

    def validation_token(self, query: Mapping[str, str]) -> str | None:
        return query.get("validationToken")

    def answer(self, status: Status) -> Reply:
        return Reply(b"", "text/plain", 202)

    def read(self, body: bytes, content_type: str | None) -> list[Notification]:
        media = (content_type or "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            raise NotificationRejected(f"Content-Type {media or 'none'!r} is not application/json", 415)
        if len(body) > MAX_BODY_BYTES:
            raise NotificationRejected(f"body is larger than {MAX_BODY_BYTES} bytes", 413)
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise NotificationRejected("body is not JSON") from None
        items = document.get("value") if isinstance(document, dict) else None
        if not isinstance(items, list) or not items:
            raise NotificationRejected("body holds no 'value' list of notifications")
        if len(items) > MAX_NOTIFICATIONS:
            raise NotificationRejected(f"more than {MAX_NOTIFICATIONS} notifications in one body")
        return [_notification(item) for item in items]


def _text(item: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = item.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise NotificationRejected(f"'{name}' is missing or not a short string")
    return value


def _notification(item: Any) -> Notification:
    if not isinstance(item, dict):
        raise NotificationRejected("a notification is not an object")
    subscription_id = _text(item, "subscriptionId")
    assert subscription_id is not None
    client_state = _text(item, "clientState", required=False)
    lifecycle = item.get("lifecycleEvent")
    if lifecycle is not None:
        if lifecycle not in LIFECYCLE_EVENTS:
            raise NotificationRejected("'lifecycleEvent' is not reauthorizationRequired, subscriptionRemoved or missed")
        return Notification(subscription_id, None, False, (), False, None, client_state, str(lifecycle), True)
    kind = CHANGE_KINDS.get(str(item.get("changeType")))
    if kind is None:
        raise NotificationRejected("'changeType' is not created, updated or deleted")
    data = item.get("resourceData")
    event_id = _text(data, "id") if isinstance(data, dict) else None
    if event_id is None:  # the event's id is also the last segment of its resource path
        resource = _text(item, "resource")
        assert resource is not None
        event_id = resource.rstrip("/").rsplit("/", 1)[-1].removeprefix("Events('").removesuffix("')")
    event = Event(kind, None, None, event_id, None, None)
    return Notification(subscription_id, None, False, (event,), False, None, client_state, independent=True)

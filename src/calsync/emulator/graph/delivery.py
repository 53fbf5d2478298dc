"""Graph change notifications, driven by the mailbox journals that drive EWS push. For each active subscription one
task turns the journal's item events in the calendar into ``changeNotification``s (``created``, ``updated``,
``deleted``; an event moved out of the calendar is deleted, one moved into it created), several in one POST
``{"value": [...]}`` to the notification URL, and sends queued lifecycle notifications to the lifecycle URL.

A POST not answered with 2xx within 3 seconds is retried after 10 seconds, then after doubling delays (at most 30
minutes apart), for up to 4 hours of emulator clock after the first failure; then it is dropped and the next one
goes out. While reauthorization is required, change notifications wait. A subscription ends at its
expirationDateTime; ``subscriptionRemoved`` ends it once delivered. The ``graph_lost_notifications`` fault makes
POSTs count as delivered without being sent.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from ..exchange import Exchange
from ..journal import Event
from ..model import CALENDAR, ItemRef, Mailbox, rest_id
from ..notifier import Notifier
from .datetimes import stamp
from .subscriptions import GraphSubscription, Subscriptions

REPLY_SECONDS = 3.0
FIRST_RETRY_SECONDS = 10.0
MAX_RETRY_SECONDS = 30 * 60.0
GIVE_UP_SECONDS = 4 * 3600.0
MAX_BATCH = 100


@dataclass(frozen=True)
class Notice:
    """One POST (or one that was due), kept for tests and the control API."""

    subscription_id: str
    at: float  # emulator clock seconds
    kind: str  # "changes", or the lifecycle event
    count: int
    outcome: str  # "ok", "lost", "failed: ...", "dropped"


@dataclass
class Outbox:
    """The next POST of a subscription, and what sending (or dropping) it settles."""

    url: str
    body: dict[str, Any]
    kind: str
    count: int
    settle: Callable[[], object]


def _change(event: Event) -> tuple[str, str] | None:
    """(changeType, EWS item id) for a journal event about an item entering, changing in or leaving the calendar."""
    if event.item_id is None:
        return None
    in_calendar, was_in_calendar = event.parent_folder == CALENDAR, event.old_parent_folder == CALENDAR
    if event.kind == "CreatedEvent" and in_calendar:
        return "created", event.item_id
    if event.kind == "ModifiedEvent" and in_calendar:
        return "updated", event.item_id
    if event.kind == "DeletedEvent" and in_calendar:
        return "deleted", event.item_id
    if event.kind == "MovedEvent" and was_in_calendar and not in_calendar and event.old_item_id:
        return "deleted", event.old_item_id
    if event.kind == "MovedEvent" and in_calendar and not was_in_calendar:
        return "created", event.item_id
    return None


def _notification(subscription: GraphSubscription, mbx: Mailbox, change: str, item_id: str) -> dict[str, Any]:
    graph_id = rest_id(item_id)
    resource = f"Users/{mbx.guid}/Events/{graph_id}"
    data: dict[str, Any] = {"@odata.type": "#Microsoft.Graph.Event", "@odata.id": resource}
    item = mbx.calendar.items.get(ItemRef.decode(item_id).number) if change != "deleted" else None
    if item is not None:
        data["@odata.etag"] = f'W/"{item.change_key}"'
    data["id"] = graph_id
    return {
        "id": str(uuid.uuid4()),
        "subscriptionId": subscription.id,
        "subscriptionExpirationDateTime": stamp(subscription.expiration),
        "changeType": change,
        "resource": resource,
        "resourceData": data,
        "clientState": subscription.client_state,
        "tenantId": subscription.app.tenant.id,
    }


class GraphDelivery(Notifier[GraphSubscription]):
    def __init__(self, exchange: Exchange, subscriptions: Subscriptions) -> None:
        super().__init__(exchange)
        self.subscriptions = subscriptions
        self.log: deque[Notice] = deque(maxlen=20000)
        subscriptions.on_change(self.schedule)

    def live(self) -> list[GraphSubscription]:
        return self.subscriptions.live()

    # --- what goes out next ---------------------------------------------------------------------

    def _lifecycle(self, subscription: GraphSubscription) -> Outbox:
        event = subscription.lifecycle_queue[0]
        body = {
            "value": [
                {
                    "subscriptionId": subscription.id,
                    "subscriptionExpirationDateTime": stamp(subscription.expiration),
                    "tenantId": subscription.app.tenant.id,
                    "clientState": subscription.client_state,
                    "lifecycleEvent": event,
                }
            ]
        }
        assert subscription.lifecycle_url is not None
        return Outbox(subscription.lifecycle_url, body, event, 1, lambda: subscription.lifecycle_queue.pop(0))

    def _changes(self, subscription: GraphSubscription) -> Outbox | None:
        mbx = self.exchange.by_guid[subscription.mailbox]
        notifications: list[dict[str, Any]] = []
        last = subscription.cursor
        for event in self.exchange.journals[mbx.guid].after(subscription.cursor):
            change = _change(event)
            if change is not None and change[0] in subscription.change_types:
                if len(notifications) == MAX_BATCH:
                    break
                notifications.append(_notification(subscription, mbx, *change))
            last = event.seq

        def settle() -> None:
            subscription.cursor = max(subscription.cursor, last)

        if not notifications:
            settle()
            return None
        return Outbox(subscription.notification_url, {"value": notifications}, "changes", len(notifications), settle)

    def _next(self, subscription: GraphSubscription) -> Outbox | None:
        with self.exchange.lock:
            if subscription.lifecycle_queue:
                return self._lifecycle(subscription)
            if subscription.reauthorization_required:
                return None
            return self._changes(subscription)

    # --- one subscription -----------------------------------------------------------------------

    async def run(self, subscription: GraphSubscription) -> None:
        clock = self.exchange.clock
        first_failure: float | None = None
        delay = FIRST_RETRY_SECONDS
        retry_at = 0.0
        while subscription.state == "active":
            if self.exchange.now() >= subscription.expiration:
                self.subscriptions.end(subscription, "expired")
                return
            now = clock.seconds()
            outbox = self._next(subscription)
            if outbox is None or now < retry_at:
                until_expiry = (subscription.expiration - self.exchange.now()).total_seconds()
                await self.nap(subscription, min(until_expiry, retry_at - now if outbox else math.inf))
                continue
            outcome = await self._send(outbox)
            if not outcome.startswith("failed"):
                self._done(subscription, outbox, outcome)
                first_failure, retry_at = None, 0.0
                continue
            subscription.failures += 1
            self.log.append(Notice(subscription.id, now, outbox.kind, outbox.count, outcome))
            if first_failure is None:
                first_failure, delay = now, FIRST_RETRY_SECONDS
            else:
                delay = min(delay * 2, MAX_RETRY_SECONDS)
            if now - first_failure >= GIVE_UP_SECONDS:
                self._done(subscription, outbox, "dropped")
                first_failure, retry_at = None, 0.0
            else:
                retry_at = now + delay

    def _done(self, subscription: GraphSubscription, outbox: Outbox, outcome: str) -> None:
        with self.exchange.lock:
            outbox.settle()
        if outcome == "ok":
            subscription.deliveries += 1
        self.log.append(Notice(subscription.id, self.exchange.clock.seconds(), outbox.kind, outbox.count, outcome))
        if outbox.kind == "subscriptionRemoved":
            self.subscriptions.end(subscription, "removed")

    async def _send(self, outbox: Outbox) -> str:
        if self.exchange.faults.take("graph_lost_notifications"):
            return "lost"
        started = time.monotonic()
        try:
            response = await self.client.post(
                outbox.url,
                json=outbox.body,
                timeout=REPLY_SECONDS,
                headers={"User-Agent": "Microsoft-Graph-Notifications (calsync emulator)"},
            )
        except httpx.HTTPError as exc:
            return f"failed: {type(exc).__name__}"
        finally:
            self.exchange.count("graph_notification_ms", int((time.monotonic() - started) * 1000))
        if not 200 <= response.status_code < 300:
            return f"failed: HTTP {response.status_code}"
        return "ok"

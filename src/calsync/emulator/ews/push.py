"""Push delivery, as Exchange does it: SendNotification POSTs to each push subscription's URL.

For every push subscription one task waits for events (or for StatusFrequency minutes of quiet, then sends
a StatusEvent). A delivery that gets no answer, an HTTP error or a body that is not a SendNotificationResult
is retried at once, after 30 seconds, then after doubling delays, until StatusFrequency minutes have
passed since the first failure: then the subscription is dead and Exchange sends nothing more. A
SubscriptionStatus of Unsubscribe ends it. All durations are on the emulator clock.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from ..exchange import Exchange
from ..notifier import Notifier
from . import dialect
from .notifications import pending, send_notification
from .soap import M_NS, SOAP_NS, envelope, parse_xml
from .subscriptions import Subscription

log = logging.getLogger("calsync.emulator.ews.push")

SOAP_ACTION = "http://schemas.microsoft.com/exchange/services/2006/messages/SendNotification"
FIRST_RETRY_SECONDS = 30.0


@dataclass(frozen=True)
class Delivery:
    """One delivery attempt, kept for tests and the control API."""

    subscription_id: str
    at: float  # emulator clock seconds
    kind: str  # "events" or "status"
    events: tuple[str, ...]
    outcome: str  # "ok", "unsubscribe", "failed: ...", "lost", "unreachable"


class PushDelivery(Notifier[Subscription]):
    def __init__(self, exchange: Exchange, check: Callable[[bytes], None] | None = None) -> None:
        super().__init__(exchange)
        self.check = check
        self.log: deque[Delivery] = deque(maxlen=20000)
        exchange.on_subscribe(self._subscribed)

    def live(self) -> list[Subscription]:
        return [
            s for s in self.exchange.subscriptions.values() if s.kind == "push" and s.state in ("active", "retrying")
        ]

    def _subscribed(self, subscription: Subscription) -> None:
        if subscription.kind == "push":
            self.schedule(subscription)

    # --- one subscription ----------------------------------------------------------------------

    async def _sleep_until(self, subscription: Subscription, until: float, *, wake_on_events: bool) -> None:
        clock = self.exchange.clock
        while subscription.state in ("active", "retrying"):
            remaining = until - clock.seconds()
            if remaining <= 0:
                return
            if wake_on_events and self._has_events(subscription):
                return
            await self.nap(subscription, remaining)

    def _has_events(self, subscription: Subscription) -> bool:
        journal = self.exchange.journals[subscription.mailbox]
        return any(subscription.matches(e) for e in journal.after(subscription.cursor))

    async def run(self, subscription: Subscription) -> None:
        clock = self.exchange.clock
        last_sent = clock.seconds()
        first_failure: float | None = None
        retry_delay = 0.0
        while subscription.state in ("active", "retrying"):
            frequency = subscription.status_frequency * 60
            if first_failure is None:
                await self._sleep_until(subscription, last_sent + frequency, wake_on_events=True)
            else:
                give_up_at = first_failure + frequency
                await self._sleep_until(
                    subscription, min(clock.seconds() + retry_delay, give_up_at), wake_on_events=False
                )
                if clock.seconds() >= give_up_at:
                    self.exchange.end_subscription(subscription, "dead")
                    log.info(
                        "push subscription %s is dead after %s min of failures",
                        subscription.id,
                        subscription.status_frequency,
                    )
                    return
            if subscription.state not in ("active", "retrying"):
                return
            outcome = await self._deliver_once(subscription)
            if outcome == "unsubscribe":
                self.exchange.end_subscription(subscription, "unsubscribed")
                return
            if outcome in ("ok", "lost"):
                last_sent = clock.seconds()
                first_failure = None
                subscription.state = "active"
                subscription.last_activity = last_sent
                continue
            subscription.failures += 1
            subscription.state = "retrying"
            if first_failure is None:
                first_failure = clock.seconds()
                retry_delay = 0.0  # the first retry goes out at once
            elif retry_delay == 0.0:
                retry_delay = FIRST_RETRY_SECONDS
            else:
                retry_delay *= 2

    async def _deliver_once(self, subscription: Subscription) -> str:
        exchange = self.exchange
        with exchange.lock:
            mbx = exchange.by_guid[subscription.mailbox]
            events, more, after = pending(subscription, exchange.journals[mbx.guid].after(subscription.cursor))
            body = dialect.rewrite(
                envelope(
                    send_notification(subscription, mbx, events, more, after),
                    None,
                    request_version=exchange.version.push_request_version,
                ),
                exchange.faults.dialects(),
            )
        if self.check is not None:
            self.check(body)
        kind = "events" if events else "status"
        names = tuple(e.kind for e in events)
        at = exchange.clock.seconds()
        if "never_push" in exchange.faults.dialects():  # accepted at Subscribe, never sent anything
            subscription.cursor = after
            self.log.append(Delivery(subscription.id, at, kind, names, "never sent"))
            return "lost"
        if exchange.faults.take("lost_push"):
            subscription.cursor = after
            self.log.append(Delivery(subscription.id, at, kind, names, "lost"))
            return "lost"
        if exchange.faults.listener_unreachable:
            self.log.append(Delivery(subscription.id, at, kind, names, "unreachable"))
            return "failed"
        outcome = await self._post(subscription, body)
        self.log.append(Delivery(subscription.id, at, kind, names, outcome))
        if outcome in ("ok", "unsubscribe"):
            subscription.cursor = after
            subscription.deliveries += 1
        return outcome if outcome in ("ok", "unsubscribe") else "failed"

    async def _post(self, subscription: Subscription, body: bytes) -> str:
        assert subscription.url is not None
        timeout = min(10.0, max(1.0, self.exchange.clock.real_seconds(30)))
        started = time.monotonic()
        try:
            response = await self.client.post(
                subscription.url,
                content=body,
                timeout=timeout,
                headers={
                    "Content-Type": "text/xml; charset=utf-8",
                    "SOAPAction": SOAP_ACTION,
                    "User-Agent": "ExchangeServicesClient/15.01.2507.006",
                },
            )
        except httpx.HTTPError as exc:
            return f"failed: {type(exc).__name__}"
        finally:
            self.exchange.count("push_seconds_ms", int((time.monotonic() - started) * 1000))
        if response.status_code != 200:
            return f"failed: HTTP {response.status_code}"
        return _result(response.content)


def _result(content: bytes) -> str:
    """``ok`` or ``unsubscribe`` from a SendNotificationResult; anything else is a failed delivery."""
    try:
        root = parse_xml(content)
    except Exception:
        return "failed: not a SendNotificationResult"
    body = root.find(f"{{{SOAP_NS}}}Body")
    result = body.find(f"{{{M_NS}}}SendNotificationResult") if body is not None else None
    status = result.findtext(f"{{{M_NS}}}SubscriptionStatus") if result is not None else None
    if status is None:
        return "failed: not a SendNotificationResult"
    status = status.strip()
    if status == "OK":
        return "ok"
    if status == "Unsubscribe":
        return "unsubscribe"
    return f"failed: SubscriptionStatus {status!r}"

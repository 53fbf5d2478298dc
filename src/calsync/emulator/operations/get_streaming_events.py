"""GetStreamingEvents: one long HTTP answer made of several SOAP documents. The first says the connection
is open; then one document per batch of notifications as events happen; after ConnectionTimeout minutes
(on the emulator clock) a last one says the connection is Closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from lxml import etree

from ..notifications import pending, render_notification
from ..service import Request
from ..soap import EwsError, SoapFault, el, envelope, m, sub, t
from ..subscriptions import Subscription
from .common import children, respond

POLL_SECONDS = 0.05


@dataclass
class StreamPlan:
    """What the server streams back; built by :func:`handle` once the request is validated."""

    req: Request
    subscriptions: list[Subscription]
    timeout_minutes: int

    def _document(self, notes: list[tuple[Subscription, list, bool, int]], status: str) -> bytes:
        exchange = self.req.exchange
        root = el(m("GetStreamingEventsResponse"))
        msg = sub(sub(root, m("ResponseMessages")), m("GetStreamingEventsResponseMessage"), ResponseClass="Success")
        sub(msg, m("ResponseCode"), "NoError")
        if notes:
            container = sub(msg, m("Notifications"))
            for subscription, events, more, after in notes:
                render_notification(
                    container, subscription, exchange.by_guid[subscription.mailbox], events, more, after
                )
                subscription.cursor = after
        sub(msg, m("ConnectionStatus"), status)
        return envelope(root, exchange.version.server_version)

    def _collect(self) -> list[tuple[Subscription, list, bool, int]]:
        exchange = self.req.exchange
        notes = []
        with exchange.lock:
            for subscription in self.subscriptions:
                if subscription.state != "active":
                    continue
                events, more, after = pending(
                    subscription, exchange.journals[subscription.mailbox].after(subscription.cursor)
                )
                if events:
                    notes.append((subscription, events, more, after))
                elif after != subscription.cursor:
                    subscription.cursor = after
            return notes

    async def documents(self) -> AsyncIterator[bytes]:
        clock = self.req.exchange.clock
        deadline = clock.seconds() + self.timeout_minutes * 60
        yield self._document([], "OK")
        while clock.seconds() < deadline:
            notes = self._collect()
            if notes:
                with self.req.exchange.lock:
                    yield self._document(notes, "OK")
                continue
            await asyncio.sleep(min(POLL_SECONDS, max(0.001, clock.real_seconds(deadline - clock.seconds()))))
        yield self._document([], "Closed")


def handle(req: Request, body: etree._Element) -> etree._Element | StreamPlan:
    id_elements = children(body.find(m("SubscriptionIds")))
    if any(e.tag != t("SubscriptionId") for e in id_elements):
        raise SoapFault(
            "ErrorSchemaValidation",
            "The request failed schema validation: SubscriptionIds holds t:SubscriptionId elements.",
        )
    ids = [(e.text or "").strip() for e in id_elements]
    try:
        timeout = int((body.findtext(m("ConnectionTimeout")) or "").strip())
    except ValueError:
        timeout = -1
    problem: EwsError | None = None
    found: list[Subscription] = []
    if not 1 <= timeout <= 30:
        problem = EwsError("ErrorInvalidArgument", "ConnectionTimeout must be an integer from 1 to 30 minutes.")
    elif not ids:
        problem = EwsError("ErrorInvalidSubscription", "SubscriptionIds must name at least one subscription.")
    else:
        try:
            for subscription_id in ids:
                subscription = req.exchange.subscription(subscription_id, req)
                if subscription.kind != "streaming":
                    raise EwsError(
                        "ErrorInvalidSubscription", "GetStreamingEvents is only for streaming subscriptions."
                    )
                found.append(subscription)
        except EwsError as exc:
            problem = exc
    if problem is not None:
        error = problem

        def fail(holder: etree._Element, _: object) -> None:
            raise error

        return respond("GetStreamingEvents", [None], fail)
    return StreamPlan(req, found, timeout)

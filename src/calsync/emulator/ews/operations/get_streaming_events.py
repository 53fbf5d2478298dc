"""GetStreamingEvents: one long HTTP answer made of several SOAP documents. The first says the connection
is open; then one document per batch of notifications as events happen; after ConnectionTimeout minutes
(on the emulator clock) a last one says the connection is Closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from lxml import etree

from .. import dialect
from ..notifications import pending, render_notification
from ..service import Request
from ..soap import EwsError, SoapFault, el, envelope, m, response_message, sub, t
from ..subscriptions import Subscription, is_well_formed
from .common import children

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
        return dialect.rewrite(envelope(root, exchange.version.server_version), exchange.faults.dialects())

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
    if not 1 <= timeout <= 30:
        return _refuse(EwsError("ErrorInvalidArgument", "ConnectionTimeout must be an integer from 1 to 30 minutes."))
    if not ids:
        return _refuse(EwsError("ErrorInvalidSubscription", "SubscriptionIds must name at least one subscription."))
    # Like Exchange, one bad id fails the whole request and the answer names every bad id.
    malformed = [i for i in ids if not is_well_formed(i)]
    if malformed:
        return _refuse(EwsError("ErrorInvalidSubscription", "Subscription is invalid."), malformed)
    found: list[Subscription] = []
    failures: dict[str, list[str]] = {}
    for subscription_id in ids:
        try:
            subscription = req.exchange.subscription(subscription_id, req)
        except EwsError as exc:
            failures.setdefault(exc.code, []).append(subscription_id)
            continue
        if subscription.kind == "streaming":
            found.append(subscription)
        else:
            failures.setdefault("ErrorInvalidSubscription", []).append(subscription_id)
    if "ErrorInvalidSubscription" in failures:
        return _refuse(
            EwsError("ErrorInvalidSubscription", "GetStreamingEvents is only for streaming subscriptions."),
            failures["ErrorInvalidSubscription"],
        )
    if failures:
        code, bad = next(iter(failures.items()))
        return _refuse(EwsError(code, "The specified subscription was not found."), bad)
    return StreamPlan(req, found, timeout)


def _refuse(error: EwsError, bad_ids: list[str] | None = None) -> etree._Element:
    """An error answer; ``ErrorSubscriptionIds`` lists the ids that caused it, and the connection is Closed."""
    root = el(m("GetStreamingEventsResponse"))
    msg = response_message(sub(root, m("ResponseMessages")), "GetStreamingEventsResponseMessage", error)
    if bad_ids:
        listed = sub(msg, m("ErrorSubscriptionIds"))
        for subscription_id in bad_ids:
            sub(listed, t("SubscriptionId"), subscription_id)
    sub(msg, m("ConnectionStatus"), "Closed")
    return root

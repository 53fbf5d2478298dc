"""Unsubscribe: end a pull or streaming subscription. A push subscription ends only when its subscriber answers
a notification with Unsubscribe; asking for it here is ErrorInvalidSubscription, as on Exchange."""

from __future__ import annotations

from lxml import etree

from ..service import Request
from ..soap import EwsError, m
from .common import respond


def handle(req: Request, body: etree._Element) -> etree._Element:
    ids = [(body.findtext(m("SubscriptionId")) or "").strip()]

    def each(holder: etree._Element, subscription_id: str) -> None:
        known = req.exchange.subscriptions.get(subscription_id)
        if known is not None and known.kind == "push":
            raise EwsError(
                "ErrorInvalidSubscription",
                "A push subscription cannot be ended with Unsubscribe: answer Unsubscribe to its next notification.",
            )
        subscription = req.exchange.subscription(subscription_id, req)
        req.exchange.end_subscription(subscription, "unsubscribed")

    return respond("Unsubscribe", ids, each)

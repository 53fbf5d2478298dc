"""Unsubscribe: end a pull or streaming subscription (push subscriptions end by answering Unsubscribe)."""

from __future__ import annotations

from lxml import etree

from ..service import Request
from ..soap import m
from .common import respond


def handle(req: Request, body: etree._Element) -> etree._Element:
    ids = [(body.findtext(m("SubscriptionId")) or "").strip()]

    def each(holder: etree._Element, subscription_id: str) -> None:
        subscription = req.exchange.subscription(subscription_id, req)
        req.exchange.end_subscription(subscription, "unsubscribed")

    return respond("Unsubscribe", ids, each)

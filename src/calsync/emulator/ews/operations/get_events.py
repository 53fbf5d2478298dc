"""GetEvents: a pull subscriber reads what happened since its last watermark."""

from __future__ import annotations

from lxml import etree

from ...journal import decode_watermark
from ..notifications import pending, render_notification
from ..service import Request
from ..soap import EwsError, m
from .common import respond


def handle(req: Request, body: etree._Element) -> etree._Element:
    subscription_id = (body.findtext(m("SubscriptionId")) or "").strip()
    watermark = (body.findtext(m("Watermark")) or "").strip()
    exchange = req.exchange

    def each(holder: etree._Element, _: object) -> None:
        subscription = exchange.subscription(subscription_id, req)
        if subscription.kind != "pull":
            raise EwsError("ErrorInvalidSubscription", "GetEvents is only for pull subscriptions.")
        mbx = exchange.by_guid[subscription.mailbox]
        guid, seq = decode_watermark(watermark)
        if guid != mbx.guid:
            raise EwsError("ErrorInvalidWatermark", "The watermark belongs to another mailbox.")
        exchange.journals[mbx.guid].check(seq, mbx.seq, exchange.now())
        subscription.cursor = seq
        events, more, after = pending(subscription, exchange.journals[mbx.guid].after(seq))
        render_notification(holder, subscription, mbx, events, more, after)
        subscription.cursor = after
        subscription.last_activity = exchange.clock.seconds()

    return respond("GetEvents", [None], each)

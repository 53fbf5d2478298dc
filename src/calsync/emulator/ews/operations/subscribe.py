"""Subscribe: push, pull and streaming subscriptions to a mailbox's folders, optionally resuming from a
watermark (which replays every event after it, or fails with ErrorInvalidWatermark when too old).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from lxml import etree

from ...journal import decode_watermark, encode_watermark
from ..service import Request
from ..soap import EwsError, m, parse_bool, sub, t
from ..subscriptions import ALL_EVENT_TYPES, Subscription, SubscriptionKind, new_subscription_id
from .common import children, resolve_folder, respond

KINDS: dict[str, SubscriptionKind] = {
    "PushSubscriptionRequest": "push",
    "PullSubscriptionRequest": "pull",
    "StreamingSubscriptionRequest": "streaming",
}


def _child(request: etree._Element, name: str) -> etree._Element | None:
    # exchangelib puts Watermark in the messages namespace where the schema says types: accept both.
    found = request.find(t(name))
    return found if found is not None else request.find(m(name))


def _int_between(request: etree._Element, name: str, low: int, high: int, default: int | None) -> int:
    node = _child(request, name)
    if node is None:
        if default is None:
            raise EwsError("ErrorSchemaValidation", f"{name} is required.")
        return default
    try:
        value = int((node.text or "").strip())
    except ValueError as exc:
        raise EwsError("ErrorSchemaValidation", f"{name} '{node.text}' is not an integer.") from exc
    if not low <= value <= high:
        code = "ErrorSchemaValidation"
        raise EwsError(code, f"{name} {value} is outside the allowed range {low}..{high}.")
    return value


def handle(req: Request, body: etree._Element) -> etree._Element:
    requests = children(body)[:1]
    exchange = req.exchange

    def each(holder: etree._Element, request: etree._Element) -> None:
        kind = KINDS.get(etree.QName(request).localname)
        if kind is None:
            raise EwsError(
                "ErrorSchemaValidation", f"'{etree.QName(request).localname}' is not a subscription request."
            )
        all_folders = parse_bool(request.get("SubscribeToAllFolders", "false"), "SubscribeToAllFolders")
        folders: set[str] = set()
        mbx = None
        for ref in children(_child(request, "FolderIds")):
            mbx, name = resolve_folder(req, ref)
            folders.add(name)
        if mbx is None:
            if not all_folders:
                raise EwsError("ErrorInvalidSubscriptionRequest", "FolderIds must name at least one folder.")
            mbx = req.mailbox()
        types_el = _child(request, "EventTypes")
        types = {(e.text or "").strip() for e in children(types_el)}
        if not types or not types <= set(ALL_EVENT_TYPES):
            raise EwsError(
                "ErrorSchemaValidation", f"EventTypes must list one or more of {', '.join(ALL_EVENT_TYPES)}."
            )
        journal = exchange.journals[mbx.guid]
        cursor = mbx.seq
        watermark = _child(request, "Watermark")
        if watermark is not None and (watermark.text or "").strip() and kind != "streaming":
            guid, seq = decode_watermark(watermark.text or "")
            if guid != mbx.guid:
                raise EwsError("ErrorInvalidWatermark", "The watermark belongs to another mailbox.")
            journal.check(seq, mbx.seq, exchange.now())
            cursor = seq
        subscription = Subscription(
            id=new_subscription_id(),
            kind=kind,
            mailbox=mbx.guid,
            address=mbx.address,
            folders=frozenset(folders),
            all_folders=all_folders,
            event_types=frozenset(types),
            cursor=cursor,
            created=exchange.clock.seconds(),
            last_activity=exchange.clock.seconds(),
        )
        if kind == "push":
            subscription.status_frequency = _int_between(request, "StatusFrequency", 1, 1440, None)
            url_el = _child(request, "URL")
            url = (url_el.text or "").strip() if url_el is not None else ""
            if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
                raise EwsError("ErrorInvalidPushSubscriptionUrl", f"The push subscription URL '{url}' is invalid.")
            subscription.url = url
        elif kind == "pull":
            subscription.timeout = _int_between(request, "Timeout", 1, 1440, None)
        exchange.add_subscription(subscription)
        sub(holder, m("SubscriptionId"), subscription.id)
        if kind != "streaming" and not (kind == "push" and "no_watermark" in exchange.faults.dialects()):
            sub(holder, m("Watermark"), encode_watermark(mbx.guid, cursor))

    return respond("Subscribe", requests, each)

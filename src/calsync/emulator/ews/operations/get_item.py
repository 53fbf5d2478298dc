"""GetItem: calendar items, occurrences and recurring masters, in the requested response shape."""

from __future__ import annotations

from lxml import etree

from ..itemxml import RenderContext, render
from ..service import Request
from ..soap import m, sub
from .common import children, item_target, respond, shape_fields


def handle(req: Request, body: etree._Element) -> etree._Element:
    fields = shape_fields(body.find(m("ItemShape")))
    refs = children(body.find(m("ItemIds")))

    def each(holder: etree._Element, ref: etree._Element) -> None:
        mbx, item = item_target(req, ref)
        render(sub(holder, m("Items")), item, fields, RenderContext(mbx, req.is_2007, req.exchange.faults.dialects()))

    return respond("GetItem", refs, each)

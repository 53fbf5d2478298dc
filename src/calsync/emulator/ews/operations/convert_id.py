"""ConvertId: convert item ids between formats. exchangelib also sends it as its first request to learn the
server's version from the ServerVersionInfo header, with a dummy id that Exchange rejects per item.
"""

from __future__ import annotations

import base64
import binascii

from lxml import etree

from ...model import ItemRef
from ..service import Request
from ..soap import EwsError, sub
from .common import children, respond

FORMATS = ("EwsLegacyId", "EwsId", "EntryId", "HexEntryId", "StoreId", "OwaId")


def _raw(value: str, fmt: str) -> bytes:
    try:
        if fmt == "HexEntryId":
            return bytes.fromhex(value)
        return base64.b64decode(value.encode(), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise EwsError("ErrorInvalidIdMalformed", "Id is malformed.") from exc


def handle(req: Request, body: etree._Element) -> etree._Element:
    dest = body.get("DestinationFormat", "")
    if dest not in FORMATS:
        raise EwsError("ErrorSchemaValidation", f"DestinationFormat '{dest}' is not one of {', '.join(FORMATS)}.")
    ids = children(body.find("{http://schemas.microsoft.com/exchange/services/2006/messages}SourceIds"))

    def each(holder: etree._Element, alt: etree._Element) -> None:
        fmt = alt.get("Format", "")
        if fmt not in FORMATS:
            raise EwsError("ErrorInvalidIdMalformed", f"Format '{fmt}' is not one of {', '.join(FORMATS)}.")
        raw = _raw(alt.get("Id", ""), fmt)
        ItemRef.decode(base64.b64encode(raw).decode())  # the id must name one of our items
        mailbox = alt.get("Mailbox", "")
        req.exchange.mailbox(mailbox)
        value = raw.hex().upper() if dest == "HexEntryId" else base64.b64encode(raw).decode()
        out = sub(holder, "{http://schemas.microsoft.com/exchange/services/2006/messages}AlternateId")
        out.set("{http://www.w3.org/2001/XMLSchema-instance}type", "t:AlternateIdType")
        out.set("Format", dest)
        out.set("Id", value)
        out.set("Mailbox", mailbox)

    return respond("ConvertId", ids, each)

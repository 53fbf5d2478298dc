"""EWS push notifications: reading the SendNotification Exchange POSTs to calsync's listener, and writing the
answer. :class:`SendNotificationReader` is the EWS implementation of the listener's
:class:`~calsync.listener.protocol.PushReader`.

Exchange delivers push events by POSTing a SOAP ``m:SendNotification`` to the URL given at Subscribe, and
expects a ``m:SendNotificationResult`` back whose ``m:SubscriptionStatus`` is ``OK`` (keep sending) or
``Unsubscribe`` (the only way to end a push subscription). This module is the pure layer under the HTTP
listener: no framework, no database, no I/O.

* :func:`parse_send_notification` turns a request body (and its Content-Type) into :class:`Notification`
  values, or raises :class:`NotificationRejected`, whose ``reason`` is safe to log (it names what is wrong,
  never quotes the body) and whose ``status`` is the HTTP status to answer (400, 413 or 415).
* :func:`result_envelope` is the answer, byte for byte the SOAP 1.1 envelope exchangelib and the EWS
  schema agree on.

Safety. The body comes from the network, so before anything else: the Content-Type must be XML, the body
at most :data:`MAX_BODY_BYTES` (checked before parsing) and not empty. Any ``<!DOCTYPE`` or ``<!ENTITY``
anywhere is refused by a byte scan before lxml sees the body (a billion-laughs body is refused in
microseconds, nothing is expanded; push bodies carry no free text, so even one inside a comment costs
nothing real), and again from the parsed tree's docinfo. The body is always decoded as UTF-8 (the
parser's encoding is forced), so that byte scan sees exactly what the parser parses; UTF-16/32 bodies,
a non-UTF-8 ``charset`` and an XML declaration naming another encoding are refused. The lxml parser loads
no DTD, resolves no entity, uses no network, keeps libxml2's size limits (``huge_tree=False``) and never
runs in recover mode.

Leniency, decided against the real bodies in the shared EWS samples:

* **The XML declaration is checked by hand, then replaced by a plain ``<?xml version="1.0"?>`` before
  parsing.** It can only carry the version, the encoding and ``standalone``; since the encoding is forced
  to UTF-8 and DTDs are refused, none of them changes how the rest is read. The check accepts a version
  that *starts* with ``1.<digits>`` and is followed by whitespace and anything, because Amazon WorkMail
  documents its push with ``<?xml version="1.0 (http://www.w3.org/TR/REC-xml/)" encoding="utf-8"?>``
  (libxml2 rejects that declaration, so a strict listener would fail every such push, and Exchange-style
  retries would then kill the subscription). Everything else in it stays
  strict: only the version/encoding/standalone pseudo-attributes, each at most once, properly quoted,
  an encoding that is UTF-8 (or US-ASCII), ``standalone`` yes/no. A declaration that fails the check is
  refused; libxml2's recover mode is never used (it silently drops content).
* Whitespace (and a UTF-8 BOM) before the XML declaration is skipped (WorkMail's documented answers
  start with a space).
* The SOAP Header is ignored entirely (``RequestServerVersion`` varies, and one producer puts it in the
  messages namespace). Any SOAP prefix, SOAP 1.1 or 1.2. Subscription ids, watermarks and ids of any shape.
* Several ``SendNotificationResponseMessage``/``Notification`` in one body give several notifications, in
  document order. A message with ``ResponseClass="Error"`` is skipped; the body is refused only when no
  usable notification is left (the reason then names the ResponseCodes; a code that is not a plain
  identifier token shows as ``?``).
  ``Warning`` (or a missing ResponseClass) counts as usable.
* Text values are stripped; whitespace inside elements that should be empty (``<t:FolderId Id="..">
  </t:FolderId>``) is ignored. Elements this module does not know (in a Notification, an event or the
  Body) are ignored, for forward compatibility; elements it does know must be well-formed: a known
  element twice, text-only elements holding elements, an ItemId/FolderId without Id, an event naming
  both or neither of ItemId/FolderId, a MoreEvents that is not an xs:boolean or a TimeStamp that is not an
  xs:dateTime make the body refused. An empty Watermark/PreviousWatermark reads as ``None``; a TimeStamp
  without zone is taken as UTC (Exchange always writes ``Z``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, NoReturn

from lxml import etree

from calsync.listener.protocol import MAX_BODY_BYTES, Event, Notification, NotificationRejected, Reply, Status

__all__ = [
    "RESULT_CONTENT_TYPE",
    "SendNotificationReader",
    "parse_send_notification",
    "result_envelope",
]

SOAP11_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_NS = "http://www.w3.org/2003/05/soap-envelope"
MESSAGES_NS = "http://schemas.microsoft.com/exchange/services/2006/messages"
TYPES_NS = "http://schemas.microsoft.com/exchange/services/2006/types"

XML_MEDIA_TYPES = frozenset({"text/xml", "application/xml", "application/soap+xml"})
RESULT_CONTENT_TYPE = "text/xml; charset=utf-8"  # what to send with result_envelope()

# Item and folder events (StatusEvent, the heartbeat, is counted apart).
EVENT_KINDS = frozenset(
    {
        "CreatedEvent",
        "ModifiedEvent",
        "DeletedEvent",
        "MovedEvent",
        "CopiedEvent",
        "NewMailEvent",
        "FreeBusyChangedEvent",
    }
)
_MOVED_KINDS = frozenset({"MovedEvent", "CopiedEvent"})
_UTF8_NAMES = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})


# --- answering ------------------------------------------------------------------------------------

_RESULT_TEMPLATE = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    f'<s:Envelope xmlns:s="{SOAP11_NS}" xmlns:m="{MESSAGES_NS}" xmlns:t="{TYPES_NS}">'
    "<s:Body><m:SendNotificationResult><m:SubscriptionStatus>{status}</m:SubscriptionStatus>"
    "</m:SendNotificationResult></s:Body></s:Envelope>"
)
_RESULTS = {status: _RESULT_TEMPLATE.format(status=status).encode() for status in ("OK", "Unsubscribe")}


def result_envelope(status: Status) -> bytes:
    """The SOAP 1.1 ``m:SendNotificationResult`` answering a push (send it as :data:`RESULT_CONTENT_TYPE`).

    ``OK`` keeps the subscription; ``Unsubscribe`` ends it (Exchange then sends nothing more).
    """
    try:
        return _RESULTS[status]
    except KeyError:
        raise ValueError("SubscriptionStatus must be 'OK' or 'Unsubscribe'") from None


# --- parsing --------------------------------------------------------------------------------------


def parse_send_notification(body: bytes, content_type: str | None = None) -> list[Notification]:
    """The notifications of a SendNotification POST body, in document order.

    ``content_type`` is the request's Content-Type header (``None`` when absent). Raises
    :class:`NotificationRejected` for anything that is not a well-formed, safe SendNotification.
    """
    if not isinstance(body, bytes | bytearray | memoryview):
        raise TypeError("body must be bytes")
    _check_content_type(content_type)
    if len(body) > MAX_BODY_BYTES:
        raise NotificationRejected(f"body is larger than {MAX_BODY_BYTES} bytes", status=413)
    root = _parse(_strip_prolog(bytes(body)))
    return _read_envelope(root)


def _reject(reason: str, status: int = 400) -> NoReturn:
    raise NotificationRejected(reason, status)


def _check_content_type(content_type: str | None) -> None:
    if content_type is None:
        return
    media, _, params = content_type.partition(";")
    if media.strip().lower() not in XML_MEDIA_TYPES:
        _reject("content type is not XML (text/xml, application/xml or application/soap+xml)", 415)
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip("\"'").lower() not in _UTF8_NAMES:
            _reject("content type names a charset other than UTF-8", 415)


_BOM = b"\xef\xbb\xbf"
_XML_WHITESPACE = b" \t\r\n"
_MAX_DECLARATION = 256
_PSEUDO_ATTRIBUTE = re.compile(rb"[ \t\r\n]+([A-Za-z]+)[ \t\r\n]*=[ \t\r\n]*(?:\"([^\"]*)\"|'([^']*)')")
_VERSION = re.compile(rb"1\.[0-9]+(?:[ \t\r\n]|\Z)")
_PLAIN_DECLARATION = b'<?xml version="1.0"?>'  # what a checked declaration is replaced with


def _strip_prolog(body: bytes) -> bytes:
    """The body without BOM and leading whitespace, its XML declaration checked and made plain; DTDs refused."""
    data = body.removeprefix(_BOM).lstrip(_XML_WHITESPACE)
    if not data:
        _reject("empty body")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data[:4]:
        _reject("body is not UTF-8 (UTF-16 and UTF-32 are not accepted)")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        _reject("DOCTYPE and entity declarations are not allowed")
    if data.startswith(b"<?xml") and data[5:6] in (b" ", b"\t", b"\r", b"\n", b"?"):
        end = data.find(b"?>", 5, _MAX_DECLARATION)
        if end < 0:
            _reject("malformed XML declaration (not closed)")
        _check_declaration(data[5:end])
        data = _PLAIN_DECLARATION + data[end + 2 :]
    return data


def _check_declaration(content: bytes) -> None:
    """Pseudo-attributes of ``<?xml ...?>``; see the module docstring for the one leniency (the version)."""
    attributes: dict[bytes, bytes] = {}
    pos = 0
    while (match := _PSEUDO_ATTRIBUTE.match(content, pos)) is not None:
        name, value = match.group(1), match.group(2) if match.group(2) is not None else match.group(3)
        if name not in (b"version", b"encoding", b"standalone") or name in attributes:
            _reject("malformed XML declaration (unknown or repeated pseudo-attribute)")
        attributes[name] = value
        pos = match.end()
    if content[pos:].strip(_XML_WHITESPACE):
        _reject("malformed XML declaration")
    version = attributes.get(b"version")
    if version is None or not _VERSION.match(version):
        _reject("malformed XML declaration (version is not 1.x)")
    encoding = attributes.get(b"encoding")
    if encoding is not None and encoding.decode("latin-1").lower() not in _UTF8_NAMES:
        _reject("XML declaration names an encoding other than UTF-8")
    if attributes.get(b"standalone", b"no") not in (b"yes", b"no"):
        _reject("malformed XML declaration (standalone is not yes or no)")


class _ThreadLocalParser(threading.local):
    """One safe lxml parser per thread (lxml parser objects must not be shared between threads)."""

    def __init__(self) -> None:
        self.parser = etree.XMLParser(
            encoding="utf-8",
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            recover=False,
            remove_comments=True,
            remove_pis=True,
            collect_ids=False,
        )


_PARSERS = _ThreadLocalParser()


def _parse(data: bytes) -> Any:
    try:
        root = etree.fromstring(data, _PARSERS.parser)
    except etree.XMLSyntaxError as exc:
        # libxml2's message may quote names from the body: keep only its error type and position.
        error: Any = exc
        type_name = error.error_log.last_error.type_name if error.error_log else "ERR"
        line, column = error.position if error.position else (0, 0)
        raise NotificationRejected(f"not well-formed XML ({type_name} at line {line}, column {column})") from None
    except (etree.LxmlError, ValueError):
        raise NotificationRejected("not well-formed XML") from None
    if root is None:  # pragma: no cover - only in recover mode
        _reject("not well-formed XML (no root element)")
    docinfo: Any = root.getroottree().docinfo  # lxml-stubs' DocInfo lacks .doctype
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        _reject("DOCTYPE and entity declarations are not allowed")
    return root


# --- reading the tree -----------------------------------------------------------------------------

_RESPONSE_CODE = re.compile(r"[A-Za-z][A-Za-z0-9]{0,63}")
_DATETIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?(Z|[+-][0-9]{2}:[0-9]{2})?"
)


def _m(name: str) -> str:
    return f"{{{MESSAGES_NS}}}{name}"


def _t(name: str) -> str:
    return f"{{{TYPES_NS}}}{name}"


def _read_envelope(root: Any) -> list[Notification]:
    tag = etree.QName(root)
    if tag.localname != "Envelope" or tag.namespace not in (SOAP11_NS, SOAP12_NS):
        _reject("root element is not a SOAP 1.1 or 1.2 Envelope")
    bodies = root.findall(f"{{{tag.namespace}}}Body")
    if len(bodies) != 1:
        _reject("SOAP Envelope has no Body" if not bodies else "SOAP Envelope has more than one Body")
    sends = bodies[0].findall(_m("SendNotification"))
    if not sends:
        _reject("SOAP Body holds no m:SendNotification")

    notifications: list[Notification] = []
    error_codes: list[str] = []
    for send in sends:
        for messages in send.findall(_m("ResponseMessages")):
            for message in messages.findall(_m("SendNotificationResponseMessage")):
                if (message.get("ResponseClass") or "").strip() == "Error":
                    code = _text(_one(message, _m("ResponseCode"))) or ""
                    error_codes.append(code if _RESPONSE_CODE.fullmatch(code) else "?")
                    continue
                notifications.extend(_read_notification(note) for note in message.findall(_m("Notification")))
    if not notifications:
        if error_codes:
            _reject(f"every SendNotification response message is an error ({', '.join(error_codes[:5])})")
        _reject("m:SendNotification holds no m:Notification")
    return notifications


def _read_notification(note: Any) -> Notification:
    subscription_id = _text(_one(note, _t("SubscriptionId")))
    if not subscription_id:
        _reject("notification without SubscriptionId")
    previous = _text(_one(note, _t("PreviousWatermark"))) or None
    more = _boolean(_text(_one(note, _t("MoreEvents"))), "MoreEvents")

    events: list[Event] = []
    statuses = 0
    last_watermark: str | None = None
    for child in note:
        if not isinstance(child.tag, str):
            continue
        tag = etree.QName(child)
        if tag.namespace != TYPES_NS:
            continue
        if tag.localname == "StatusEvent":
            statuses += 1
            watermark = _text(_one(child, _t("Watermark"))) or None
        elif tag.localname in EVENT_KINDS:
            event = _read_event(child, tag.localname)
            events.append(event)
            watermark = event.watermark
        else:
            continue
        if watermark is not None:
            last_watermark = watermark
    if not events and not statuses:
        _reject("notification without events")
    return Notification(
        subscription_id=subscription_id,
        previous_watermark=previous,
        more_events=more,
        events=tuple(events),
        status_only=not events,
        last_watermark=last_watermark,
    )


def _read_event(elem: Any, kind: str) -> Event:
    item_id = _id(elem, "ItemId")
    folder_id = _id(elem, "FolderId")
    if (item_id is None) == (folder_id is None):
        _reject(f"{kind} must name exactly one of ItemId and FolderId")
    moved = kind in _MOVED_KINDS
    timestamp = _text(_one(elem, _t("TimeStamp")))
    return Event(
        kind=kind,
        watermark=_text(_one(elem, _t("Watermark"))) or None,
        timestamp=_timestamp(timestamp) if timestamp is not None else None,
        item_id=item_id,
        folder_id=folder_id,
        parent_folder_id=_id(elem, "ParentFolderId"),
        old_item_id=_id(elem, "OldItemId") if moved else None,
        old_parent_folder_id=_id(elem, "OldParentFolderId") if moved else None,
        old_folder_id=_id(elem, "OldFolderId") if moved else None,
    )


def _one(parent: Any, tag: str) -> Any:
    """The one child ``tag`` of ``parent``, or None; a known element twice is ambiguous, so refused."""
    found = parent.findall(tag)
    if len(found) > 1:
        _reject(f"more than one {etree.QName(tag).localname} in {etree.QName(parent).localname}")
    return found[0] if found else None


def _text(elem: Any) -> str | None:
    """Stripped text of a text-only element; None when the element is absent."""
    if elem is None:
        return None
    if len(elem):
        _reject(f"{etree.QName(elem).localname} must hold text only")
    return str(elem.text or "").strip()


def _id(parent: Any, name: str) -> str | None:
    elem = _one(parent, _t(name))
    if elem is None:
        return None
    value = (elem.get("Id") or "").strip()
    if not value:
        _reject(f"{name} without Id")
    return value


def _boolean(value: str | None, name: str) -> bool:
    if value is None or value in ("false", "0"):
        return False
    if value in ("true", "1"):
        return True
    _reject(f"{name} is not an xs:boolean")


def _timestamp(value: str) -> datetime:
    match = _DATETIME.fullmatch(value)
    if match is None:
        _reject("TimeStamp is not an xs:dateTime")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, zone = match.group(7), match.group(8)
    microsecond = int((fraction or "")[:6].ljust(6, "0"))
    try:
        if zone is None or zone == "Z":
            tz = UTC
        else:
            offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
            tz = timezone(-offset if zone[0] == "-" else offset)
        return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=tz).astimezone(UTC)
    except (ValueError, OverflowError):
        _reject("TimeStamp is not a valid date and time")


class SendNotificationReader:
    """The listener's reader for EWS pushes (:class:`~calsync.listener.protocol.PushReader`)."""

    door = "ews"
    lifecycle = False

    def read(self, body: bytes, content_type: str | None) -> list[Notification]:
        return parse_send_notification(body, content_type)

    def answer(self, status: Status) -> Reply:
        return Reply(result_envelope(status), RESULT_CONTENT_TYPE)

    def validation_token(self, query: Mapping[str, str]) -> str | None:
        return None  # EWS has no handshake: Subscribe is answered directly

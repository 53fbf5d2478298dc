"""SOAP and EWS plumbing of the emulator: namespaces, a safe XML parser, element builders, and the two
kinds of failure Exchange reports.

Exchange reports a problem in one of two ways, and clients treat them differently:

* a *response code* inside a normal response message (``ResponseClass="Error"``), raised as
  :class:`~calsync.emulator.errors.EwsError` by an operation (or by the mailbox model) and turned into an error
  response message for that one item;
* a *SOAP fault* (HTTP 500) for problems with the whole request: the impersonation header, throttling,
  a malformed body. Raised as :class:`SoapFault`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from lxml import etree

from ..errors import EwsError

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
M_NS = "http://schemas.microsoft.com/exchange/services/2006/messages"
T_NS = "http://schemas.microsoft.com/exchange/services/2006/types"
E_NS = "http://schemas.microsoft.com/exchange/services/2006/errors"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
NSMAP = {"s": SOAP_NS, "m": M_NS, "t": T_NS}

MAX_REQUEST_BYTES = 10 * 1024 * 1024

_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_comments=True,
    remove_pis=True,
)


def t(name: str) -> str:
    return f"{{{T_NS}}}{name}"


def m(name: str) -> str:
    return f"{{{M_NS}}}{name}"


class SoapFault(Exception):
    """A request-level failure, answered with a SOAP fault and the given HTTP status."""

    def __init__(self, code: str, message: str, *, status: int = 500, details: dict[str, str] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.details = details or {}


def parse_xml(body: bytes) -> etree._Element:
    """Parse a request body; refuse DTDs, entities, oversized and malformed documents with a SOAP fault."""
    if len(body) > MAX_REQUEST_BYTES:
        raise SoapFault("ErrorInvalidRequest", f"The request is larger than {MAX_REQUEST_BYTES} bytes.", status=413)
    if not body.strip():
        raise SoapFault("ErrorInvalidRequest", "The request body is empty.", status=400)
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise SoapFault("ErrorSchemaValidation", f"The request is not well-formed XML: {exc}", status=500) from exc
    tree = root.getroottree()
    docinfo = tree.docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:  # type: ignore[union-attr]
        raise SoapFault("ErrorSchemaValidation", "Document type declarations are not allowed.", status=500)
    return root


@dataclass
class Envelope:
    """A parsed request: the SOAP headers by local name and the one body element."""

    headers: dict[str, etree._Element] = field(default_factory=dict)
    body: etree._Element | None = None


def split_envelope(root: etree._Element) -> Envelope:
    if root.tag != f"{{{SOAP_NS}}}Envelope":
        raise SoapFault("ErrorSchemaValidation", "The request is not a SOAP 1.1 Envelope.", status=500)
    env = Envelope()
    header = root.find(f"{{{SOAP_NS}}}Header")
    if header is not None:
        for child in header:
            if isinstance(child.tag, str):
                env.headers[etree.QName(child).localname] = child
    body = root.find(f"{{{SOAP_NS}}}Body")
    if body is None:
        raise SoapFault("ErrorSchemaValidation", "The SOAP envelope has no Body.", status=500)
    payload = [c for c in body if isinstance(c.tag, str)]
    if len(payload) != 1:
        raise SoapFault("ErrorSchemaValidation", "The SOAP Body must hold exactly one request element.", status=500)
    env.body = payload[0]
    return env


# --- building -----------------------------------------------------------------------------------


def sub(parent: etree._Element, tag: str, text: Any = None, **attrs: Any) -> etree._Element:
    """Append a child element; text and attribute values are formatted the EWS way."""
    el = etree.SubElement(parent, tag, {k: fmt(v) for k, v in attrs.items() if v is not None})
    if text is not None:
        el.text = fmt(text)
    return el


def el(tag: str, text: Any = None, **attrs: Any) -> etree._Element:
    e = etree.Element(tag, {k: fmt(v) for k, v in attrs.items() if v is not None}, nsmap=NSMAP)
    if text is not None:
        e.text = fmt(text)
    return e


def fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return format_utc(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def format_utc(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def envelope(
    payload: etree._Element, server_version: dict[str, str] | None, request_version: str | None = None
) -> bytes:
    """A response envelope (with ServerVersionInfo), or a request one (with RequestServerVersion)."""
    env = etree.Element(f"{{{SOAP_NS}}}Envelope", nsmap={"s": SOAP_NS})
    if server_version is not None or request_version is not None:
        header = etree.SubElement(env, f"{{{SOAP_NS}}}Header")
        if server_version is not None:
            etree.SubElement(header, t("ServerVersionInfo"), server_version, nsmap={"t": T_NS})
        if request_version is not None:
            etree.SubElement(header, t("RequestServerVersion"), {"Version": request_version}, nsmap={"t": T_NS})
    body = etree.SubElement(env, f"{{{SOAP_NS}}}Body")
    body.append(payload)
    return bytes(etree.tostring(env, xml_declaration=True, encoding="utf-8"))


def fault_envelope(fault: SoapFault, server_version: dict[str, str] | None) -> bytes:
    env = etree.Element(f"{{{SOAP_NS}}}Envelope", nsmap={"s": SOAP_NS})
    body = etree.SubElement(env, f"{{{SOAP_NS}}}Body")
    f = etree.SubElement(body, f"{{{SOAP_NS}}}Fault")
    code = etree.SubElement(f, "faultcode", nsmap={"a": T_NS})
    code.text = f"a:{fault.code}"
    string = etree.SubElement(f, "faultstring")
    string.set("{http://www.w3.org/XML/1998/namespace}lang", "en-US")
    string.text = fault.message
    detail = etree.SubElement(f, "detail")
    etree.SubElement(detail, f"{{{E_NS}}}ResponseCode", nsmap={"e": E_NS}).text = fault.code
    etree.SubElement(detail, f"{{{E_NS}}}Message", nsmap={"e": E_NS}).text = fault.message
    if fault.details:
        mx = etree.SubElement(detail, t("MessageXml"), nsmap={"t": T_NS})
        for name, value in fault.details.items():
            etree.SubElement(mx, t("Value"), Name=name).text = value
    return bytes(etree.tostring(env, xml_declaration=True, encoding="utf-8"))


def response_message(container: etree._Element, name: str, error: EwsError | None = None) -> etree._Element:
    """Append ``m:<name>`` with ResponseClass/ResponseCode; error messages carry MessageText and MessageXml."""
    msg = sub(container, m(name), ResponseClass="Error" if error else "Success")
    if error is None:
        sub(msg, m("ResponseCode"), "NoError")
        return msg
    sub(msg, m("MessageText"), error.message)
    sub(msg, m("ResponseCode"), error.code)
    sub(msg, m("DescriptiveLinkKey"), 0)
    if error.details:
        mx = sub(msg, m("MessageXml"))
        for key, value in error.details.items():
            sub(mx, t("Value"), value, Name=key)
    return msg


# --- reading ------------------------------------------------------------------------------------


def text_of(parent: etree._Element | None, tag: str, default: str | None = None) -> str | None:
    if parent is None:
        return default
    child = parent.find(tag)
    if child is None or child.text is None:
        return default
    return child.text.strip()


def parse_bool(value: str | None, where: str) -> bool:
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise EwsError("ErrorSchemaValidation", f"{where}: '{value}' is not a boolean (true or false).")


def parse_datetime(value: str | None, where: str, default_tz: Any = UTC) -> datetime:
    """xs:dateTime as EWS accepts it: with Z, with an offset, or without (then in ``default_tz``)."""
    if not value:
        raise EwsError("ErrorSchemaValidation", f"{where} is required.")
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise EwsError("ErrorSchemaValidation", f"{where}: '{value}' is not an xs:dateTime.") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=default_tz)
    return parsed.astimezone(UTC).replace(microsecond=0)  # Exchange keeps whole seconds


def parse_date(value: str | None, where: str) -> date:
    if not value:
        raise EwsError("ErrorSchemaValidation", f"{where} is required.")
    text = value.strip()
    # xs:date may carry a zone suffix ("2026-01-05Z", "2026-01-05+01:00"); the date part is what counts.
    for suffix in ("Z",):
        text = text.removesuffix(suffix)
    if len(text) > 10 and text[10] in "+-":
        text = text[:10]
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise EwsError("ErrorSchemaValidation", f"{where}: '{value}' is not an xs:date.") from exc

"""EWS schema checking of whole SOAP 1.1 envelopes.

This module owns one job: deciding whether an EWS SOAP envelope (a request a client sends, or a
response / push notification a server sends) conforms to the published EWS schemas
(``messages.xsd``, which imports ``types.xsd``). The emulator uses it in "strict" mode to check every
envelope it sends; tests use it to check fixtures and samples.

What is checked, by :meth:`EwsSchema.errors`:

* the bytes are well-formed XML, parsed with a safe lxml parser (no DTD loading, no entity
  expansion, no network); any DOCTYPE is itself an error;
* the root is a SOAP 1.1 ``Envelope`` (namespace ``http://schemas.xmlsoap.org/soap/envelope/``,
  any prefix) holding an optional ``Header`` followed by a ``Body``, and nothing else;
* every child of ``Header`` and of ``Body`` is validated with xmlschema against the global element
  of the same qualified name in the EWS schemas; a child without such a global element is an
  error ("unknown element {ns}name");
* a ``soap:Fault`` in the body is checked only for its SOAP 1.1 shape (``faultcode`` and
  ``faultstring`` present).

Loading the schemas takes about a second, so use :meth:`EwsSchema.cached` (one instance per schema
directory per process). Instances are thread-safe: parsing uses one lxml parser per thread, and the
xmlschema calls (pure Python, so serialised by the GIL anyway) run under a per-instance lock,
because xmlschema does not document its validators as safe for concurrent use.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from lxml import etree

try:
    import xmlschema
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "calsync.emulator.ews.schema_check needs the 'xmlschema' package: install calsync[strict]"
    ) from exc

__all__ = ["MESSAGES_NS", "SOAP11_NS", "TYPES_NS", "EwsSchema", "SchemaViolation"]

SOAP11_NS = "http://schemas.xmlsoap.org/soap/envelope/"
MESSAGES_NS = "http://schemas.microsoft.com/exchange/services/2006/messages"
TYPES_NS = "http://schemas.microsoft.com/exchange/services/2006/types"

# Prefixes used when rendering element paths in error messages (whatever prefixes the document used).
_PATH_PREFIXES = {SOAP11_NS: "soap", MESSAGES_NS: "m", TYPES_NS: "t"}

_ENVELOPE = f"{{{SOAP11_NS}}}Envelope"
_HEADER = f"{{{SOAP11_NS}}}Header"
_BODY = f"{{{SOAP11_NS}}}Body"
_FAULT = f"{{{SOAP11_NS}}}Fault"

# A DOCTYPE in the prolog (after an optional BOM, XML declaration, PIs, comments and whitespace).
# Checked before parsing, because libxml2 may reject an entity bomb with a generic "amplification"
# syntax error; the parsed tree's docinfo is checked too (for encodings this byte scan cannot read).
# Each alternative is unambiguous (comments cannot contain "--"), so matching stays linear.
_DOCTYPE_IN_PROLOG = re.compile(rb"\A(?:\xef\xbb\xbf)?(?:\s|<\?(?:[^?]|\?(?!>))*\?>|<!--(?:[^-]|-(?!-))*-->)*<!DOCTYPE")
_DOCTYPE_ERROR = "DOCTYPE is not allowed in a SOAP message (entities are never expanded)"

# Enough to diagnose a broken envelope without flooding a log with thousands of lines.
_MAX_ERRORS = 50
_MAX_REASON_CHARS = 400


class SchemaViolation(Exception):
    """An envelope does not conform to SOAP 1.1 + the EWS schemas; ``errors`` lists why."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__(self.errors)

    def __str__(self) -> str:
        count = len(self.errors)
        lines = [f"EWS schema violation ({count} error{'s' if count != 1 else ''}):"]
        lines.extend(f"  - {error}" for error in self.errors)
        return "\n".join(lines)


class _ThreadLocalParser(threading.local):
    """One safe lxml parser per thread (lxml parser objects must not be shared across threads)."""

    def __init__(self) -> None:
        self.parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            recover=False,
        )


_PARSERS = _ThreadLocalParser()

# xmlschema builds share meta-schema state; building two schemas at once in two threads can fail.
_BUILD_LOCK = threading.Lock()


def _clark(tag: str) -> str:
    """``{ns}name`` for a namespaced tag; ``name (no namespace)`` for an unqualified one."""
    return tag if tag.startswith("{") else f"{tag} (no namespace)"


def _display_name(tag: str) -> str:
    qname = etree.QName(tag)
    if qname.namespace is None:
        return qname.localname
    prefix = _PATH_PREFIXES.get(qname.namespace)
    return f"{prefix}:{qname.localname}" if prefix else f"{{{qname.namespace}}}{qname.localname}"


def _element_path(elem: Any) -> str:
    """Path from the envelope root to ``elem``, e.g. ``/soap:Envelope/soap:Body/m:GetItem/m:ItemIds``.

    Positions (1-based) are added only where siblings share the tag, e.g. ``t:CalendarItem[2]``.
    """
    steps: list[str] = []
    node = elem
    while node is not None:
        step = _display_name(node.tag)
        parent = node.getparent()
        if parent is not None:
            same = [sibling for sibling in parent if sibling.tag == node.tag]
            if len(same) > 1:
                step += f"[{same.index(node) + 1}]"
        steps.append(step)
        node = parent
    return "/" + "/".join(reversed(steps))


def _concise(reason: str) -> str:
    reason = re.sub(r"\s+", " ", reason).strip()
    if len(reason) > _MAX_REASON_CHARS:
        reason = reason[: _MAX_REASON_CHARS - 3] + "..."
    return reason


def _has_text(text: str | None) -> bool:
    return bool(text and text.strip())


class EwsSchema:
    """The EWS messages + types schemas, able to check whole SOAP 1.1 envelopes."""

    _cache: ClassVar[dict[Path, EwsSchema]] = {}
    _cache_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, schema_dir: Path) -> None:
        self.schema_dir = Path(schema_dir).resolve()
        messages = self.schema_dir / "messages.xsd"
        if not messages.is_file():
            raise FileNotFoundError(f"EWS schema not found: {messages}")
        with _BUILD_LOCK:
            # allow="local": types.xsd is imported from the same folder, never from the network;
            # defuse="always": the schema files themselves are parsed without entity expansion.
            self._schema = xmlschema.XMLSchema(str(messages), allow="local", defuse="always")
        self._validate_lock = threading.Lock()
        # Only the EWS namespaces count: the maps also hold the XSD meta-schema's global elements.
        self._globals: frozenset[str] = frozenset(
            tag for tag in self._schema.maps.elements if etree.QName(tag).namespace in (MESSAGES_NS, TYPES_NS)
        )
        self._by_local_name: dict[str, list[str]] = {}
        for tag in self._globals:
            self._by_local_name.setdefault(etree.QName(tag).localname, []).append(tag)

    @classmethod
    def cached(cls, schema_dir: Path) -> EwsSchema:
        """The process-wide instance for ``schema_dir`` (built on first use, thread-safe)."""
        key = Path(schema_dir).resolve()
        with cls._cache_lock:
            instance = cls._cache.get(key)
            if instance is None:
                instance = cls(key)
                cls._cache[key] = instance
            return instance

    def check(self, envelope: bytes) -> None:
        """Raise :class:`SchemaViolation` unless ``envelope`` is a schema-valid EWS SOAP envelope."""
        errors = self.errors(envelope)
        if errors:
            raise SchemaViolation(errors)

    def errors(self, envelope: bytes) -> list[str]:
        """Everything wrong with ``envelope`` (a whole SOAP 1.1 envelope); ``[]`` when it is valid."""
        if _DOCTYPE_IN_PROLOG.match(envelope):
            return [_DOCTYPE_ERROR]
        try:
            root = etree.fromstring(envelope, _PARSERS.parser)
        except etree.XMLSyntaxError as exc:
            return [f"not well-formed XML: {exc}"]
        if root is None:  # pragma: no cover - lxml raises for an empty document
            return ["not well-formed XML: no root element"]
        docinfo: Any = root.getroottree().docinfo  # lxml-stubs' DocInfo lacks .doctype
        if docinfo.doctype or docinfo.internalDTD is not None:
            return [_DOCTYPE_ERROR]

        errors: list[str] = []
        for error in self._iter_errors(root):
            if len(errors) == _MAX_ERRORS:
                errors.append(f"(more errors not shown; stopped after {_MAX_ERRORS})")
                break
            errors.append(error)
        return errors

    # -- internals -----------------------------------------------------------------------------

    def _iter_errors(self, root: Any) -> Iterator[str]:
        if root.tag != _ENVELOPE:
            yield f"root element is {_clark(root.tag)}, not a SOAP 1.1 Envelope ({{{SOAP11_NS}}}Envelope)"
            return
        if _has_text(root.text):
            yield "/soap:Envelope: unexpected text content"

        header = body = None
        for child in root.iterchildren("*"):
            if child.tag == _HEADER and header is None and body is None:
                header = child
            elif child.tag == _BODY and body is None:
                body = child
            else:
                yield f"{_element_path(child)}: unexpected element {_clark(child.tag)} in soap:Envelope"
            if _has_text(child.tail):
                yield f"{_element_path(child)}: unexpected text after element"
        if body is None:
            yield "/soap:Envelope: missing soap:Body"

        if header is not None:
            yield from self._check_container(header)
        if body is not None:
            if not any(True for _ in body.iterchildren("*")):
                yield f"{_element_path(body)}: soap:Body has no child element"
            yield from self._check_container(body)

    def _check_container(self, container: Any) -> Iterator[str]:
        """Checks the children of soap:Header or soap:Body."""
        if _has_text(container.text):
            yield f"{_element_path(container)}: unexpected text content"
        for child in container.iterchildren("*"):
            if _has_text(child.tail):
                yield f"{_element_path(child)}: unexpected text after element"
            if child.tag == _FAULT and container.tag == _BODY:
                yield from self._check_fault(child)
            else:
                yield from self._check_element(child)

    @staticmethod
    def _check_fault(fault: Any) -> Iterator[str]:
        # SOAP 1.1 section 4.4: faultcode and faultstring are mandatory, unqualified child elements.
        names = {child.tag for child in fault.iterchildren("*")}
        for required in ("faultcode", "faultstring"):
            if required not in names:
                yield f"{_element_path(fault)}: missing {required} (SOAP 1.1 Fault)"

    def _check_element(self, elem: Any) -> Iterator[str]:
        path = _element_path(elem)
        if elem.tag not in self._globals:
            message = f"{path}: unknown element {_clark(elem.tag)}"
            alternatives = [
                tag for tag in self._by_local_name.get(etree.QName(elem.tag).localname, []) if tag != elem.tag
            ]
            if alternatives:
                message += f" (the EWS schema has {', '.join(sorted(alternatives))})"
            yield message
            return
        with self._validate_lock:
            # The schema picks the global element matching elem's qualified name; elem's in-scope
            # namespaces (lxml nsmap, inherited ones included) are used for QName-typed values.
            found = list(self._schema.iter_errors(elem))
        for error in found:
            where = _element_path(error.elem) if isinstance(error.elem, etree._Element) else path
            yield f"{where}: {_concise(error.reason or str(error))}"

"""Restrictions and sort orders of FindItem and FindFolder: reading ``t:Restriction`` into a predicate and
``m:SortOrder`` into an ordering, over calendar items (``ITEM_FIELDS``) or folders (``FOLDER_FIELDS``), and
refusing what cannot be queried with the response code Exchange gives.

What is evaluated the way Exchange's store does it:

* ``And``, ``Or``, ``Not``; ``IsEqualTo``, ``IsNotEqualTo``, ``IsGreaterThan(OrEqualTo)``, ``IsLessThan(OrEqualTo)``
  against a ``FieldURIOrConstant/Constant``, whose value is read as the property's type (an unreadable value is
  ``ErrorInvalidValueForProperty``); strings compare without regard to case, choices (Sensitivity, Importance,
  LegacyFreeBusyStatus, MyResponseType) in the order of their stored numbers;
* a comparison with a property the item does not have is false (``Not`` makes it true), as in a MAPI property
  restriction; ``IsNotEqualTo`` is therefore true only for items that have the property with another value;
* a multi-valued property (item:Categories) matches when any of its values does;
* ``Contains`` with every ``ContainmentMode`` and ``ContainmentComparison`` (defaults FullString and Exact), on
  string properties only (``ErrorContainsFilterWrongType`` otherwise);
* ``Exists``: the property has a value.

Refused: a property outside the tables (``ErrorUnsupportedPathForQuery``, or ``ErrorUnsupportedPathForSortGroup``
in a sort order); ``Excludes``, ``IndexedFieldURI``, ``ExtendedFieldURI`` and comparing two properties
(``ErrorUnsupportedQueryFilter``); a malformed expression (``ErrorInvalidRestriction``).
"""

from __future__ import annotations

import operator
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Generic, NamedTuple, TypeVar

from lxml import etree

from ..model import CalendarItem, Folder, Mailbox
from .itemxml import FREE_BUSY, IMPORTANCE, RESPONSES, SENSITIVITY, local
from .soap import EwsError, parse_bool, parse_datetime, t

X = TypeVar("X")
Predicate = Callable[[X], bool]


class MailboxFolder(NamedTuple):
    """A folder as FindFolder sees it: its mailbox and distinguished name."""

    mailbox: Mailbox
    name: str

    @property
    def folder(self) -> Folder:
        return self.mailbox.folders[self.name]


# --- property types -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """How a property's values are read from a constant and compared."""

    name: str
    parse: Callable[[str], Any]  # a Constant's Value -> a comparable value (ValueError or EwsError if unreadable)
    comparable: Callable[[Any], Any]  # a stored value -> a comparable value
    textual: bool = False
    multi_valued: bool = False


def _same(value: Any) -> Any:
    return value


def _casefold(value: str) -> str:
    return value.casefold()


def _datetime(value: str) -> datetime:
    return parse_datetime(value, "Constant/@Value")


def _bool(value: str) -> bool:
    return parse_bool(value.strip(), "Constant/@Value")


def _choice(values: tuple[str, ...]) -> Kind:
    return Kind("choice", parse=values.index, comparable=values.index)


TEXT = Kind("string", parse=_casefold, comparable=_casefold, textual=True)
TEXTS = Kind("strings", parse=_casefold, comparable=_casefold, textual=True, multi_valued=True)
DATETIME = Kind("dateTime", parse=_datetime, comparable=_same)
BOOLEAN = Kind("boolean", parse=_bool, comparable=_same)
INTEGER = Kind("int", parse=int, comparable=_same)


@dataclass(frozen=True)
class Field(Generic[X]):
    """A queryable property: its FieldURI, how to read it from a thing (None when absent) and its type."""

    uri: str
    read: Callable[[X], Any]
    kind: Kind


def _table(*fields: Field[X]) -> Mapping[str, Field[X]]:
    return {f.uri: f for f in fields}


def _child_folder_count(f: MailboxFolder) -> int:
    return sum(1 for child in f.mailbox.folders.values() if child.parent == f.name)


ITEM_FIELDS: Mapping[str, Field[CalendarItem]] = _table(
    Field("item:Subject", lambda i: i.subject, TEXT),
    Field("item:Categories", lambda i: i.categories or None, TEXTS),
    Field("item:ItemClass", lambda i: "IPM.Appointment", TEXT),
    Field("item:Sensitivity", lambda i: i.sensitivity, _choice(SENSITIVITY)),
    Field("item:Importance", lambda i: i.importance, _choice(IMPORTANCE)),
    Field("item:DateTimeCreated", lambda i: i.created, DATETIME),
    Field("item:LastModifiedTime", lambda i: i.modified, DATETIME),
    Field("item:ReminderIsSet", lambda i: i.reminder_is_set, BOOLEAN),
    Field("item:ReminderMinutesBeforeStart", lambda i: i.reminder_minutes, INTEGER),
    Field("calendar:Start", lambda i: i.start, DATETIME),
    Field("calendar:End", lambda i: i.end, DATETIME),
    Field("calendar:Location", lambda i: i.location, TEXT),
    Field("calendar:IsAllDayEvent", lambda i: i.is_all_day, BOOLEAN),
    Field("calendar:LegacyFreeBusyStatus", lambda i: i.fb_status, _choice(FREE_BUSY)),
    # As rendered: a series' master is not "recurring" (on Exchange neither), its occurrences are.
    Field("calendar:IsRecurring", lambda i: i.kind in ("Occurrence", "Exception"), BOOLEAN),
    Field("calendar:MyResponseType", lambda i: i.my_response, _choice(RESPONSES)),
)

FOLDER_FIELDS: Mapping[str, Field[MailboxFolder]] = _table(
    Field("folder:DisplayName", lambda f: f.folder.display_name, TEXT),
    Field("folder:FolderClass", lambda f: f.folder.folder_class or None, TEXT),
    Field("folder:TotalCount", lambda f: len(f.folder.items), INTEGER),
    Field("folder:ChildFolderCount", _child_folder_count, INTEGER),
    Field("folder:UnreadCount", lambda f: 0, INTEGER),
)


def _raw_values(field: Field[X], thing: X) -> list[Any]:
    value = field.read(thing)
    if value is None:
        return []
    return list(value) if field.kind.multi_valued else [value]


def _values(field: Field[X], thing: X) -> list[Any]:
    return [field.kind.comparable(v) for v in _raw_values(field, thing)]


# --- reading expressions --------------------------------------------------------------------------

_PATHS = ("FieldURI", "IndexedFieldURI", "ExtendedFieldURI")
_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "IsEqualTo": operator.eq,
    "IsNotEqualTo": operator.ne,
    "IsGreaterThan": operator.gt,
    "IsGreaterThanOrEqualTo": operator.ge,
    "IsLessThan": operator.lt,
    "IsLessThanOrEqualTo": operator.le,
}


def _children(el: etree._Element) -> list[etree._Element]:
    return [c for c in el if isinstance(c.tag, str)]


def _supported(fields: Mapping[str, Field[Any]]) -> str:
    return ", ".join(fields)


def read_restriction(restriction: etree._Element | None, fields: Mapping[str, Field[X]]) -> Predicate[X]:
    """The predicate a ``t:Restriction`` (or its absence: everything) stands for."""
    if restriction is None:
        return lambda thing: True
    expressions = _children(restriction)
    if len(expressions) != 1:
        raise EwsError("ErrorInvalidRestriction", "A Restriction holds exactly one search expression.")
    return _expression(expressions[0], fields)


def _expression(el: etree._Element, fields: Mapping[str, Field[X]]) -> Predicate[X]:
    name = local(el)
    if name in ("And", "Or"):
        return _boolean(el, fields, all if name == "And" else any)
    if name == "Not":
        return _negation(el, fields)
    if name == "Exists":
        field = _field(el, fields)
        return lambda thing: bool(_raw_values(field, thing))
    if name == "Contains":
        return _contains(el, fields)
    if name in _COMPARISONS:
        return _comparison(el, fields, _COMPARISONS[name])
    if name == "Excludes":
        raise EwsError(
            "ErrorUnsupportedQueryFilter",
            "Excludes (bitmask) restrictions are not supported; use And, Or, Not, Exists, Contains, IsEqualTo, "
            "IsNotEqualTo, IsGreaterThan(OrEqualTo) or IsLessThan(OrEqualTo).",
        )
    raise EwsError("ErrorInvalidRestriction", f"'{name}' is not a search expression.")


def _boolean(el: etree._Element, fields: Mapping[str, Field[X]], combine: Callable[[Any], bool]) -> Predicate[X]:
    parts = [_expression(c, fields) for c in _children(el)]
    if not parts:
        raise EwsError("ErrorInvalidRestriction", f"{local(el)} needs at least one search expression.")
    return lambda thing: combine(part(thing) for part in parts)


def _negation(el: etree._Element, fields: Mapping[str, Field[X]]) -> Predicate[X]:
    inner = _children(el)
    if len(inner) != 1:
        raise EwsError("ErrorInvalidRestriction", "Not holds exactly one search expression.")
    part = _expression(inner[0], fields)
    return lambda thing: not part(thing)


def _field(el: etree._Element, fields: Mapping[str, Field[X]]) -> Field[X]:
    paths = [c for c in _children(el) if local(c) in _PATHS]
    if len(paths) != 1:
        raise EwsError("ErrorInvalidRestriction", f"{local(el)} names exactly one property.")
    path = paths[0]
    if local(path) != "FieldURI":
        raise EwsError(
            "ErrorUnsupportedQueryFilter",
            f"{local(path)} cannot be used in a restriction here; use a FieldURI: {_supported(fields)}.",
        )
    uri = path.get("FieldURI", "")
    field = fields.get(uri)
    if field is None:
        raise EwsError(
            "ErrorUnsupportedPathForQuery",
            f"The property '{uri}' cannot be used in a restriction. Supported: {_supported(fields)}.",
        )
    return field


def _constant(field: Field[X], text: str | None) -> Any:
    if text is None:
        raise EwsError("ErrorInvalidRestriction", f"The comparison with {field.uri} has no Constant Value.")
    try:
        return field.kind.parse(text)
    except (ValueError, EwsError) as exc:
        raise EwsError(
            "ErrorInvalidValueForProperty", f"'{text}' is not a valid {field.kind.name} value for {field.uri}."
        ) from exc


def _comparison(
    el: etree._Element, fields: Mapping[str, Field[X]], compare: Callable[[Any, Any], bool]
) -> Predicate[X]:
    field = _field(el, fields)
    operand = el.find(t("FieldURIOrConstant"))
    source = _children(operand)[0] if operand is not None and _children(operand) else None
    if source is not None and local(source) != "Constant":
        raise EwsError(
            "ErrorUnsupportedQueryFilter", "Comparing two properties is not supported; compare with a Constant."
        )
    wanted = _constant(field, None if source is None else source.get("Value"))
    if compare is operator.ne:
        return lambda thing: _differs(_values(field, thing), wanted)
    return lambda thing: any(compare(value, wanted) for value in _values(field, thing))


def _differs(values: list[Any], wanted: Any) -> bool:
    """IsNotEqualTo: the property is there and none of its values equals the constant."""
    return bool(values) and wanted not in values


# --- Contains ---------------------------------------------------------------------------------------


def _ignore_marks(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))


def _ignore_case_and_marks(text: str) -> str:
    return _ignore_marks(text).casefold()


_FOLDINGS: dict[str, Callable[[str], str]] = {
    "Exact": _same,
    "IgnoreCase": _casefold,
    "IgnoreNonSpacingCharacters": _ignore_marks,
    "IgnoreCaseAndNonSpacingCharacters": _ignore_case_and_marks,
    # "Loose" lets a match happen whenever it can: it ignores case and non-spacing characters.
    "Loose": _ignore_case_and_marks,
    "LooseAndIgnoreCase": _ignore_case_and_marks,
    "LooseAndIgnoreNonSpace": _ignore_case_and_marks,
    "LooseAndIgnoreCaseAndIgnoreNonSpace": _ignore_case_and_marks,
}


def _at_word_start(text: str, wanted: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(wanted), text) is not None


def _as_phrase(text: str, wanted: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(wanted) + r"(?!\w)", text) is not None


_MODES: dict[str, Callable[[str, str], bool]] = {
    "FullString": operator.eq,
    "Prefixed": str.startswith,
    "Substring": operator.contains,
    "PrefixOnWords": _at_word_start,
    "ExactPhrase": _as_phrase,
}


def _contains(el: etree._Element, fields: Mapping[str, Field[X]]) -> Predicate[X]:
    field = _field(el, fields)
    if not field.kind.textual:
        raise EwsError("ErrorContainsFilterWrongType", "The Contains filter can only be used for string properties.")
    mode = _MODES.get(el.get("ContainmentMode", "FullString"))
    fold = _FOLDINGS.get(el.get("ContainmentComparison", "Exact"))
    if mode is None or fold is None:
        raise EwsError("ErrorSchemaValidation", "ContainmentMode or ContainmentComparison has an unknown value.")
    constant = el.find(t("Constant"))
    text = None if constant is None else constant.get("Value")
    if text is None:
        raise EwsError("ErrorInvalidRestriction", f"Contains on {field.uri} has no Constant Value.")
    wanted = fold(text)
    return lambda thing: any(mode(fold(value), wanted) for value in _raw_values(field, thing))


# --- SortOrder --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldOrder(Generic[X]):
    field: Field[X]
    descending: bool


def read_sort_order(sort_order: etree._Element | None, fields: Mapping[str, Field[X]]) -> list[FieldOrder[X]]:
    """The ``t:FieldOrder`` entries of an ``m:SortOrder``, most significant first."""
    if sort_order is None:
        return []
    return [_field_order(el, fields) for el in _children(sort_order)]


def _field_order(el: etree._Element, fields: Mapping[str, Field[X]]) -> FieldOrder[X]:
    direction = el.get("Order")
    if direction not in ("Ascending", "Descending"):
        raise EwsError("ErrorSchemaValidation", f"FieldOrder/@Order '{direction}' is not Ascending or Descending.")
    paths = _children(el)
    uri = paths[0].get("FieldURI", "") if len(paths) == 1 and local(paths[0]) == "FieldURI" else ""
    field = fields.get(uri)
    if field is None or field.kind.multi_valued:
        sortable = ", ".join(u for u, f in fields.items() if not f.kind.multi_valued)
        named = uri or (local(paths[0]) if paths else "nothing")
        raise EwsError("ErrorUnsupportedPathForSortGroup", f"Items cannot be sorted by {named}. Supported: {sortable}.")
    return FieldOrder(field, direction == "Descending")


def sort_things(things: list[X], orders: list[FieldOrder[X]]) -> None:
    """Sort in place; items without the property come first in ascending order, last in descending order."""
    for order in reversed(orders):  # stable sorts, least significant key first
        things.sort(key=partial(_sort_key, order.field), reverse=order.descending)


def _sort_key(field: Field[X], thing: X) -> tuple[bool, Any]:
    values = _values(field, thing)
    return (True, values[0]) if values else (False, None)

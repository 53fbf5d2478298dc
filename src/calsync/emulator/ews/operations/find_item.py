"""FindItem in a calendar folder: a CalendarView (recurring series expanded into occurrences, exceptions at
their new time, deleted occurrences absent) or a paged list of the folder's items (masters, not occurrences),
which a Restriction filters and a SortOrder orders (see ``..restriction``).
"""

from __future__ import annotations

from lxml import etree

from ...model import CalendarItem, calendar_view
from ..itemxml import RenderContext, render
from ..restriction import ITEM_FIELDS, FieldOrder, Predicate, read_restriction, read_sort_order, sort_things
from ..service import Request
from ..soap import EwsError, m, parse_datetime, sub, t
from .common import children, resolve_folder, respond, shape_fields

MAX_VIEW_ENTRIES = 1000


def _int(value: str | None, name: str, default: int) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError as exc:
        raise EwsError("ErrorSchemaValidation", f"{name} '{value}' is not an integer.") from exc
    if number < 0:
        raise EwsError("ErrorInvalidArgument", f"{name} must not be negative.")
    return number


def _read_query(
    body: etree._Element, view: etree._Element | None
) -> tuple[Predicate[CalendarItem], list[FieldOrder[CalendarItem]]]:
    """The Restriction and SortOrder of the request, refused where Exchange refuses them."""
    if body.find(m("QueryString")) is not None:
        raise EwsError(
            "ErrorUnsupportedQueryFilter", "QueryString (AQS) searches are not supported; use a Restriction."
        )
    restriction = body.find(m("Restriction"))
    sort_order = body.find(m("SortOrder"))
    if view is not None and (restriction is not None or sort_order is not None):
        raise EwsError("ErrorInvalidOperation", "Restrictions and sort order may not be specified for a CalendarView.")
    return read_restriction(restriction, ITEM_FIELDS), read_sort_order(sort_order, ITEM_FIELDS)


def _calendar_view(items: list[CalendarItem], view: etree._Element) -> tuple[list[CalendarItem], int]:
    """The occurrences and single items in the view, in time order: (the page returned, how many there are)."""
    start = parse_datetime(view.get("StartDate"), "CalendarView/@StartDate")
    end = parse_datetime(view.get("EndDate"), "CalendarView/@EndDate")
    if end < start:
        raise EwsError("ErrorInvalidArgument", "CalendarView EndDate is earlier than StartDate.")
    limit = _int(view.get("MaxEntriesReturned"), "MaxEntriesReturned", MAX_VIEW_ENTRIES)
    found = calendar_view(items, start, end)
    return (found[:limit] if limit else found), len(found)


def _paged_view(
    items: list[CalendarItem],
    paged: etree._Element | None,
    matches: Predicate[CalendarItem],
    orders: list[FieldOrder[CalendarItem]],
) -> tuple[list[CalendarItem], int, int]:
    """The matching items in the requested order: (the page returned, how many match, the page's offset)."""
    found = [item for item in items if matches(item)]
    found.sort(key=lambda i: (i.start, i.number))
    sort_things(found, orders)
    total = len(found)
    offset = 0
    max_entries = MAX_VIEW_ENTRIES
    if paged is not None:
        offset = _int(paged.get("Offset"), "Offset", 0)
        max_entries = _int(paged.get("MaxEntriesReturned"), "MaxEntriesReturned", MAX_VIEW_ENTRIES) or 1
        if paged.get("BasePoint", "Beginning") == "End":
            offset = max(0, total - offset - max_entries)
    return found[offset : offset + max_entries], total, offset


def handle(req: Request, body: etree._Element) -> etree._Element:
    fields = shape_fields(body.find(m("ItemShape")))
    view = body.find(m("CalendarView"))
    paged = body.find(m("IndexedPageItemView"))
    refs = children(body.find(m("ParentFolderIds")))

    def each(holder: etree._Element, ref: etree._Element) -> None:
        matches, orders = _read_query(body, view)
        mbx, folder = resolve_folder(req, ref)
        items = list(mbx.folders[folder].items.values())
        if view is not None:
            page, total = _calendar_view(items, view)
            root = sub(holder, m("RootFolder"), TotalItemsInView=total, IncludesLastItemInRange=len(page) == total)
        else:
            page, total, offset = _paged_view(items, paged, matches, orders)
            root = sub(
                holder,
                m("RootFolder"),
                IndexedPagingOffset=offset + len(page),
                TotalItemsInView=total,
                IncludesLastItemInRange=offset + len(page) >= total,
            )
        ctx = RenderContext(mbx, req.is_2007, req.exchange.faults.dialects())
        container = sub(root, t("Items"))
        for item in page:
            render(container, item, fields, ctx)

    return respond("FindItem", refs, each)

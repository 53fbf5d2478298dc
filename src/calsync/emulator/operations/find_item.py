"""FindItem in a calendar folder: a CalendarView (recurring series expanded into occurrences, exceptions at
their new time, deleted occurrences absent) or a paged list of the folder's items (masters, not occurrences).
"""

from __future__ import annotations

from lxml import etree

from ..itemxml import RenderContext, render
from ..model import CalendarItem
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


def handle(req: Request, body: etree._Element) -> etree._Element:
    fields = shape_fields(body.find(m("ItemShape")))
    if body.find(m("Restriction")) is not None or body.find(m("QueryString")) is not None:
        raise EwsError(
            "ErrorUnsupportedQueryFilter",
            "The emulator supports FindItem with a CalendarView or a paged view, without restrictions.",
        )
    view = body.find(m("CalendarView"))
    paged = body.find(m("IndexedPageItemView"))
    refs = children(body.find(m("ParentFolderIds")))

    def each(holder: etree._Element, ref: etree._Element) -> None:
        mbx, folder = resolve_folder(req, ref)
        items = list(mbx.folders[folder].items.values())
        offset = 0
        if view is not None:
            start = parse_datetime(view.get("StartDate"), "CalendarView/@StartDate")
            end = parse_datetime(view.get("EndDate"), "CalendarView/@EndDate")
            if end < start:
                raise EwsError("ErrorInvalidArgument", "CalendarView EndDate is earlier than StartDate.")
            limit = _int(view.get("MaxEntriesReturned"), "MaxEntriesReturned", MAX_VIEW_ENTRIES)
            found: list[CalendarItem] = []
            for item in items:
                if item.recurrence is not None:
                    found.extend(item.occurrences(start, end))
                elif (item.start < end and item.end > start) or (item.start == item.end == start):
                    found.append(item)
            found.sort(key=lambda i: (i.start, i.end, i.number, i.index))
            total = len(found)
            page = found[:limit] if limit else found
            last = len(page) == total
        else:
            items.sort(key=lambda i: (i.start, i.number))
            total = len(items)
            max_entries = MAX_VIEW_ENTRIES
            if paged is not None:
                offset = _int(paged.get("Offset"), "Offset", 0)
                max_entries = _int(paged.get("MaxEntriesReturned"), "MaxEntriesReturned", MAX_VIEW_ENTRIES) or 1
                if paged.get("BasePoint", "Beginning") == "End":
                    offset = max(0, total - offset - max_entries)
            page = items[offset : offset + max_entries]
            last = offset + len(page) >= total
        ctx = RenderContext(mbx, req.is_2007)
        root = sub(
            holder,
            m("RootFolder"),
            TotalItemsInView=total,
            IncludesLastItemInRange=last,
            **({"IndexedPagingOffset": offset + len(page)} if view is None else {}),
        )
        container = sub(root, t("Items"))
        for item in page:
            render(container, item, fields, ctx)

    return respond("FindItem", refs, each)

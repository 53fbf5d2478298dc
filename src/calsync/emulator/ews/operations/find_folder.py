"""FindFolder: a folder's subfolders, one level (Shallow) or all the way down (Deep), filtered by a Restriction
on the folder properties of ``..restriction.FOLDER_FIELDS``."""

from __future__ import annotations

from lxml import etree

from ..restriction import FOLDER_FIELDS, MailboxFolder, read_restriction
from ..service import Request
from ..soap import EwsError, m, sub, t
from .common import children, resolve_folder, respond
from .get_folder import render_folder


def handle(req: Request, body: etree._Element) -> etree._Element:
    traversal = body.get("Traversal", "Shallow")
    if traversal not in ("Shallow", "Deep", "SoftDeleted"):
        raise EwsError("ErrorSchemaValidation", f"Traversal '{traversal}' is not Shallow, Deep or SoftDeleted.")
    paged = body.find(m("IndexedPageFolderView"))
    refs = children(body.find(m("ParentFolderIds")))

    def each(holder: etree._Element, ref: etree._Element) -> None:
        matches = read_restriction(body.find(m("Restriction")), FOLDER_FIELDS)
        mbx, top = resolve_folder(req, ref)
        below: list[str] = []
        level = [top]
        while level and traversal != "SoftDeleted":
            nxt = [f.distinguished for f in mbx.folders.values() if f.parent in level]
            below.extend(nxt)
            level = nxt if traversal == "Deep" else []
        found = [name for name in below if matches(MailboxFolder(mbx, name))]
        offset = int(paged.get("Offset", "0")) if paged is not None else 0
        limit = int(paged.get("MaxEntriesReturned", "1000")) if paged is not None else 1000
        page = found[offset : offset + limit]
        root = sub(
            holder,
            m("RootFolder"),
            IndexedPagingOffset=offset + len(page),
            TotalItemsInView=len(found),
            IncludesLastItemInRange=offset + len(page) >= len(found),
        )
        folders = sub(root, t("Folders"))
        for name in page:
            render_folder(folders, mbx, name)

    return respond("FindFolder", refs, each)

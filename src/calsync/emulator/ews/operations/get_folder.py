"""GetFolder: the distinguished folders (root, msgfolderroot, calendar, ...) and folders by id."""

from __future__ import annotations

from lxml import etree

from ...model import FOLDER_ELEMENT, Mailbox
from ..service import Request
from ..soap import m, sub, t
from .common import folder_refs, resolve_folder, respond


def render_folder(parent: etree._Element, mbx: Mailbox, name: str) -> None:
    folder = mbx.folders[name]
    tag = FOLDER_ELEMENT.get(folder.folder_class, "Folder")
    out = sub(parent, t(tag))
    sub(out, t("FolderId"), Id=mbx.folder_id(name), ChangeKey=folder.change_key)
    if folder.parent is not None:
        parent_folder = mbx.folders[folder.parent]
        sub(out, t("ParentFolderId"), Id=mbx.folder_id(folder.parent), ChangeKey=parent_folder.change_key)
    if folder.folder_class:
        sub(out, t("FolderClass"), folder.folder_class)
    sub(out, t("DisplayName"), folder.display_name)
    sub(out, t("TotalCount"), len(folder.items))
    children = [f for f in mbx.folders.values() if f.parent == name]
    sub(out, t("ChildFolderCount"), len(children))
    rights = sub(out, t("EffectiveRights"))
    for right, value in (
        ("CreateAssociated", True),
        ("CreateContents", True),
        ("CreateHierarchy", True),
        ("Delete", True),
        ("Modify", True),
        ("Read", True),
    ):
        sub(rights, t(right), value)
    if tag == "Folder":  # only plain folders carry an unread count
        sub(out, t("UnreadCount"), 0)


def handle(req: Request, body: etree._Element) -> etree._Element:
    refs = folder_refs(body.find(m("FolderIds")))

    def each(holder: etree._Element, ref: etree._Element) -> None:
        mbx, name = resolve_folder(req, ref)
        folders = sub(holder, m("Folders"))
        render_folder(folders, mbx, name)

    return respond("GetFolder", refs, each)

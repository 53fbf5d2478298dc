"""ResolveNames: find mailboxes by address or name (used to check that an address is a real mailbox); with
``ReturnFullContactData`` each match also comes back as a directory Contact."""

from __future__ import annotations

from lxml import etree

from ...model import Mailbox
from ..service import Request
from ..soap import EwsError, m, parse_bool, sub, t
from .common import respond


def _contact(resolution: etree._Element, mbx: Mailbox) -> None:
    """The directory entry of a mailbox as a Contact (``ReturnFullContactData``), in ContactItemType order."""
    given, _, surname = mbx.display_name.partition(" ")
    contact = sub(resolution, t("Contact"))
    sub(contact, t("DisplayName"), mbx.display_name)
    sub(contact, t("GivenName"), given)
    addresses = sub(contact, t("EmailAddresses"))
    sub(addresses, t("Entry"), f"SMTP:{mbx.address}", Key="EmailAddress1")
    sub(contact, t("ContactSource"), "ActiveDirectory")
    if surname:
        sub(contact, t("Surname"), surname)


def handle(req: Request, body: etree._Element) -> etree._Element:
    entry = (body.findtext(m("UnresolvedEntry")) or "").strip()
    needle = entry.lower().removeprefix("smtp:")
    full_contact = parse_bool(body.get("ReturnFullContactData", "false"), "ReturnFullContactData")

    def each(holder: etree._Element, _: object) -> None:
        if not needle:
            raise EwsError("ErrorNameResolutionNoResults", "No results were found.")
        found = [
            mbx
            for mbx in req.exchange.mailboxes.values()
            if mbx.address.lower() == needle
            or (len(needle) >= 3 and (mbx.address.lower().startswith(needle) or needle in mbx.display_name.lower()))
        ]
        if not found:
            raise EwsError("ErrorNameResolutionNoResults", "No results were found.")
        found.sort(key=lambda mbx: mbx.address.lower())
        resolution_set = sub(holder, m("ResolutionSet"), TotalItemsInView=len(found), IncludesLastItemInRange=True)
        for mbx in found[:100]:
            resolution = sub(resolution_set, t("Resolution"))
            mailbox = sub(resolution, t("Mailbox"))
            sub(mailbox, t("Name"), mbx.display_name)
            sub(mailbox, t("EmailAddress"), mbx.address)
            sub(mailbox, t("RoutingType"), "SMTP")
            sub(mailbox, t("MailboxType"), "Mailbox")
            if full_contact:
                _contact(resolution, mbx)

    root = respond("ResolveNames", [None], each)
    # Several matches is a warning on Exchange, not an error.
    msg = root[0][0]
    rs = msg.find(m("ResolutionSet"))
    if rs is not None and int(rs.get("TotalItemsInView", "1")) > 1:
        msg.set("ResponseClass", "Warning")
        msg.find(m("ResponseCode")).text = "ErrorNameResolutionMultipleResults"  # type: ignore[union-attr]
    return root

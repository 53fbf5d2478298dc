"""DeleteItem: hard delete, soft delete (into the dumpster) or move to Deleted Items; deleting an occurrence
adds it to the series' deleted occurrences; an organizer's delete can send cancellations to attendees.
"""

from __future__ import annotations

from lxml import etree

from ...exchange import DELETE_MODES
from ..service import Request
from ..soap import EwsError, m
from .common import children, item_target, respond

CANCELLATION_MODES = ("SendToNone", "SendOnlyToAll", "SendToAllAndSaveCopy")


def handle(req: Request, body: etree._Element) -> etree._Element:
    mode = body.get("DeleteType", "")
    if mode not in DELETE_MODES:
        raise EwsError("ErrorSchemaValidation", f"DeleteType '{mode}' is not one of {', '.join(DELETE_MODES)}.")
    send = body.get("SendMeetingCancellations")
    refs = children(body.find(m("ItemIds")))

    def each(holder: etree._Element, ref: etree._Element) -> None:
        mbx, item = item_target(req, ref)
        if send is None:
            raise EwsError(
                "ErrorSendMeetingCancellationsRequired",
                "The SendMeetingCancellations attribute is required for calendar items.",
            )
        if send not in CANCELLATION_MODES:
            raise EwsError(
                "ErrorSchemaValidation",
                f"SendMeetingCancellations '{send}' is not one of {', '.join(CANCELLATION_MODES)}.",
            )
        if item.kind in ("Occurrence", "Exception"):
            req.exchange.delete_occurrence(mbx, req.exchange.master_of(mbx, item), item.index)
            return
        if send != "SendToNone" and item.is_meeting and item.my_response == "Organizer":
            req.exchange.propagate_meeting(mbx, item, cancelled=True)
        req.exchange.remove(mbx, item, mode)

    return respond("DeleteItem", refs, each)

"""The push listener: ``POST /ews/notifications/<secret>``. It records and answers; it never calls Exchange.

A notification is answered OK only after its events are stored and the mailbox marked dirty, in one
transaction (invariant 2); a subscription we do not know, or one of an operator no longer enabled, gets
Unsubscribe. A StatusEvent only records the heartbeat. Bodies that are not a trustworthy SendNotification
(too large, not XML, DTDs or entities, not SOAP) get a 4xx and nothing is stored.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Literal

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from calsync.store import inbox
from calsync.store.db import Database

from .notifications import (
    MAX_BODY_BYTES,
    RESULT_CONTENT_TYPE,
    Notification,
    NotificationRejected,
    parse_send_notification,
    result_envelope,
)

log = logging.getLogger("calsync.listener")

PATH = "/ews/notifications/{secret}"


class Listener:
    def __init__(self, db: Database, secrets: Callable[[], list[str]], on_dirty: Callable[[], None]) -> None:
        self.db = db
        self.secrets = secrets  # the current secret, and during a rotation the previous one too
        self.on_dirty = on_dirty
        self.received = 0
        self.refused = 0

    def routes(self) -> list[Route]:
        return [Route(PATH, self.receive, methods=["POST"])]

    def _secret_ok(self, given: str) -> bool:
        return any(hmac.compare_digest(given.encode(), s.encode()) for s in self.secrets() if s)

    async def receive(self, request: Request) -> Response:
        if not self._secret_ok(request.path_params["secret"]):
            return PlainTextResponse("Not Found", status_code=404)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            self.refused += 1
            return PlainTextResponse(f"body larger than {MAX_BODY_BYTES} bytes", status_code=413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                self.refused += 1
                return PlainTextResponse(f"body larger than {MAX_BODY_BYTES} bytes", status_code=413)
        try:
            notes = parse_send_notification(bytes(body), request.headers.get("content-type"))
        except NotificationRejected as exc:
            self.refused += 1
            log.info("notification refused", extra={"reason": exc.reason, "status": exc.status})
            return PlainTextResponse(exc.reason, status_code=exc.status)
        status, dirty = await run_in_threadpool(self.record, notes)
        self.received += 1
        if dirty:
            self.on_dirty()
        return Response(result_envelope(status), media_type=RESULT_CONTENT_TYPE)

    def record(self, notes: list[Notification]) -> tuple[Literal["OK", "Unsubscribe"], bool]:
        """Store the notifications; returns the SubscriptionStatus to answer and whether a mailbox got dirty."""
        dirty = False
        with self.db.transaction() as session:
            for note in notes:
                delivery = inbox.lookup(session, note.subscription_id)
                if delivery is None or not delivery.enabled:
                    log.info(
                        "unsubscribing",
                        extra={"subscription": note.subscription_id[:16], "known": delivery is not None},
                    )
                    return "Unsubscribe", False
                events = [
                    inbox.InboxEvent(e.kind, e.item_id or e.folder_id, e.watermark)
                    for e in note.events
                    if e.kind != "StatusEvent"
                ]
                if inbox.record(session, delivery.operator_id, note.subscription_id, events, note.last_watermark):
                    dirty = True
            if dirty:
                self.db.wake(session)
        return "OK", dirty

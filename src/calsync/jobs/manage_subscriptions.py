"""ManagePushSubscriptions: every enabled operator's calendar is subscribed for push notifications to our
listener; disabled operators' subscriptions are dropped (the listener then answers Exchange's next push
with Unsubscribe); a subscription silent for twice its StatusFrequency is recreated and its mailbox marked
for a catch-up pass (invariant 6). A newly subscribed operator gets its initial sync the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from calsync.sources.base import Source, SourceError
from calsync.store import operators, subscriptions, work
from calsync.store.db import Database
from calsync.store.tables import utcnow

log = logging.getLogger("calsync.jobs.subscriptions")


@dataclass
class ManageResult:
    subscribed: list[str] = field(default_factory=list)
    recreated: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"subscribed {len(self.subscribed)}, recreated {len(self.recreated)}, dropped {len(self.dropped)}, "
            f"failed {len(self.failed)}"
        )


def manage(db: Database, source: Source, *, callback_url: str, status_frequency: int) -> ManageResult:
    result = ManageResult()
    now = utcnow()
    with db.read() as session:
        pairs = [
            (
                op.id,
                op.email,
                op.sync_enabled,
                None if sub is None else (sub.callback_url, sub.status_frequency, subscriptions.is_silent(sub, now)),
            )
            for op, sub in subscriptions.with_operators(session)
        ]
    for operator_id, email, enabled, sub in pairs:
        if not enabled:
            if sub is not None:
                with db.transaction() as session:
                    subscriptions.drop(session, operator_id)
                result.dropped.append(email)
            continue
        if sub is not None:
            url, frequency, silent = sub
            if not silent and url == callback_url and frequency == status_frequency:
                continue
        try:
            created = source.subscribe(email, callback_url, status_frequency)
        except SourceError as exc:
            log.warning("subscribe failed", extra={"mailbox": email, "code": exc.code, "error": exc.message})
            result.failed[email] = exc.code
            with db.transaction() as session:
                operators.record_error(session, operator_id, exc.code, exc.message)
            continue
        with db.transaction() as session:
            subscriptions.save(
                session, operator_id, created.subscription_id, created.watermark, status_frequency, callback_url
            )
            work.mark_dirty(session, operator_id)  # initial sync, or catch-up after a silence
            db.wake(session)
        (result.subscribed if sub is None else result.recreated).append(email)
        log.info("subscribed", extra={"mailbox": email, "recreated": sub is not None})
    return result

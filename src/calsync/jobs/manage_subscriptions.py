"""ManagePushSubscriptions: every enabled operator's calendar is subscribed for push notifications to our
listener; disabled operators' subscriptions are dropped (the listener then answers Exchange's next push
with Unsubscribe); a subscription silent for twice its StatusFrequency is recreated and its mailbox marked
for a catch-up pass (invariant 6). A newly subscribed operator gets its initial sync the same way.

With a :class:`~calsync.alerts.tracker.FailureTracker`: a failed subscribe is a failure of the operator
(``mailbox_not_found``, ``credentials_rejected``, ... are permanent: reported at once) and a successful one
ends a streak whose latest failure was a subscribe; a subscription recreated because it fell silent is a
failure with code ``listener_unreachable`` (Exchange could not reach the listener), or
``exchange_never_delivers`` when the listener URL checks out (:mod:`calsync.listener.reachability`) and no push
has ever come from this source; only a push heard on the new subscription (heartbeat or event, seen at a later
run) ends it. Operators whose sync is switched off have their streaks closed quietly.

A Subscribe that fails after the server may have made the subscription (a timeout, a lost answer) leaves
nothing to undo here: a push subscription ends only when its subscriber answers Unsubscribe, and the listener
answers Unsubscribe to any subscription calsync does not hold (invariant 2), at its first notification.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from calsync.sources.base import Source, SourceError
from calsync.store import listener_checks, operators, subscriptions, work
from calsync.store.db import Database
from calsync.store.tables import utcnow

if TYPE_CHECKING:
    from calsync.alerts.tracker import FailureTracker

log = logging.getLogger("calsync.jobs.subscriptions")

LISTENER_UNREACHABLE = "listener_unreachable"  # catalogue codes (calsync.alerts.catalogue)
EXCHANGE_NEVER_DELIVERS = "exchange_never_delivers"
SILENCE_CODES = (LISTENER_UNREACHABLE, EXCHANGE_NEVER_DELIVERS)


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


def manage(
    db: Database,
    source: Source,
    *,
    callback_url: str,
    status_frequency: int,
    tracker: FailureTracker | None = None,
    on_dirty: Callable[[], None] | None = None,
) -> ManageResult:
    """Subscribe, recreate or drop as the module docstring says. ``on_dirty`` wakes this process's processor
    when a mailbox was marked for its initial sync or a catch-up (other processes are woken by ``db.wake``)."""
    result = ManageResult()
    now = utcnow()
    with db.read() as session:
        pairs = [
            (
                op.id,
                op.email,
                op.sync_enabled,
                None
                if sub is None
                else (
                    sub.callback_url,
                    sub.status_frequency,
                    subscriptions.is_silent(sub, now),
                    sub.last_heard_at > sub.created_at,  # Exchange reached us since it was created
                ),
            )
            for op, sub in subscriptions.with_operators(session)
        ]
    streaks = _open_streaks(tracker)
    for operator_id, email, enabled, sub in pairs:
        codes = streaks.get(operator_id, [])
        if not enabled:
            if sub is not None:
                with db.transaction() as session:
                    subscriptions.drop(session, operator_id)
                result.dropped.append(email)
                log.info("subscription dropped", extra={"operator": operator_id, "mailbox": email})
            if codes and tracker is not None:
                _tracked(tracker.close_quietly, operator_id)
            continue
        silent, frequency = False, status_frequency
        if sub is not None:
            url, frequency, silent, heard = sub
            if heard and not silent and any(c in SILENCE_CODES for c in codes) and tracker is not None:
                _tracked(tracker.record_success, operator_id, origin="listener")  # pushes arrive again
            if not silent and url == callback_url and frequency == status_frequency:
                continue
        try:
            created = source.subscribe(email, callback_url, status_frequency)
        except SourceError as exc:
            log.warning(
                "subscribe failed",
                extra={"operator": operator_id, "mailbox": email, "code": exc.code, "error": exc.message},
            )
            result.failed[email] = exc.code
            with db.transaction() as session:
                operators.record_error(session, operator_id, exc.code, exc.message)
            if tracker is not None:
                _tracked(tracker.record_failure, operator_id, exc, origin="subscribe")
            continue
        if tracker is not None:
            if any(code not in SILENCE_CODES and code != "unreadable_item" for code in codes):
                _tracked(tracker.record_success, operator_id, origin="subscribe")  # Exchange answers again
            if silent:
                error = _silence(db, source, email, callback_url, frequency)
                _tracked(tracker.record_failure, operator_id, error, origin="listener")
        with db.transaction() as session:
            subscriptions.save(
                session, operator_id, created.subscription_id, created.watermark, status_frequency, callback_url
            )
            work.mark_dirty(session, operator_id)  # initial sync, or catch-up after a silence
            db.wake(session)
        if on_dirty is not None:
            on_dirty()
        (result.subscribed if sub is None else result.recreated).append(email)
        log.info(
            "subscribed",
            extra={"operator": operator_id, "mailbox": email, "recreated": sub is not None, "silent": silent},
        )
    return result


def _silence(db: Database, source: Source, email: str, callback_url: str, frequency: int) -> SourceError:
    """Why a subscription fell silent, as far as calsync can tell: the listener URL checks out (it comes back to
    this listener) and Exchange has never reached us on any subscription: Exchange does not deliver; otherwise the
    listener cannot be reached."""
    with db.read() as session:
        check = listener_checks.latest(session, callback_url)
        heard = subscriptions.any_heard(session, source.name)
    silence = f"The subscription for {email} was silent for more than {2 * frequency} minutes (twice StatusFrequency)"
    if check is not None and check.ok and not heard:
        return SourceError(
            "transient",
            EXCHANGE_NEVER_DELIVERS,
            f"{silence}, and no notification or heartbeat has ever arrived from Exchange on any subscription, "
            f"although the listener URL comes back to this listener (checked {check.checked_at:%Y-%m-%d %H:%M} UTC): "
            "Exchange accepts subscriptions but does not deliver. It was recreated.",
        )
    checked = "" if check is None else f" (listener URL check: {check.detail})"
    return SourceError(
        "transient",
        LISTENER_UNREACHABLE,
        f"{silence}: Exchange's pushes did not reach the listener{checked}, so it was recreated.",
    )


def _open_streaks(tracker: FailureTracker | None) -> dict[int, list[str]]:
    if tracker is None:
        return {}
    try:
        return tracker.open_streaks()
    except Exception:
        log.exception("could not read the open failure streaks")
        return {}


def _tracked(call: Callable[..., object], *args: object, **kwargs: object) -> None:
    """Tell the failure tracker; a tracker hiccup must not stop managing the other subscriptions."""
    try:
        call(*args, **kwargs)
    except Exception:
        log.exception("could not record a subscription outcome")

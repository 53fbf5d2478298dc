"""ManagePushSubscriptions: every enabled operator's calendar is subscribed for push notifications to our
listener, through the operator's own source (EWS or Graph, ``calsync.sources.registry``); disabled operators'
subscriptions are dropped (the listener answers an EWS push with Unsubscribe; a Graph subscription is deleted);
a subscription silent for twice its StatusFrequency (sources with heartbeats: EWS) is recreated and its mailbox
marked for a catch-up pass (invariant 6). A newly subscribed operator gets its initial sync the same way.

Subscriptions that expire (Graph) are renewed :data:`RENEW_BEFORE` ahead (or as told); one Exchange asked to
reauthorize (lifecycle ``reauthorizationRequired``) is renewed at the next run; one it removed
(``subscriptionRemoved``), one that expired, or one whose renewal fails is made anew, with a catch-up pass.

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
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from calsync.sources.base import Source, SourceError, Subscription
from calsync.sources.registry import Sources
from calsync.store import listener_checks, operators, subscriptions
from calsync.store.db import Database
from calsync.store.tables import SubscriptionRow, utcnow

if TYPE_CHECKING:
    from calsync.alerts.tracker import FailureTracker

log = logging.getLogger("calsync.jobs.subscriptions")

LISTENER_UNREACHABLE = "listener_unreachable"  # catalogue codes (calsync.alerts.catalogue)
EXCHANGE_NEVER_DELIVERS = "exchange_never_delivers"
SILENCE_CODES = (LISTENER_UNREACHABLE, EXCHANGE_NEVER_DELIVERS)
SUBSCRIPTION_REMOVED = "subscriptionRemoved"  # Graph lifecycle event: the subscription must be made anew
RENEW_BEFORE = timedelta(hours=6)  # Graph subscriptions are renewed this long before they expire


@dataclass
class ManageResult:
    subscribed: list[str] = field(default_factory=list)
    renewed: list[str] = field(default_factory=list)
    recreated: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"subscribed {len(self.subscribed)}, renewed {len(self.renewed)}, recreated {len(self.recreated)}, "
            f"dropped {len(self.dropped)}, failed {len(self.failed)}"
        )


@dataclass(frozen=True)
class _Held:
    """What ManagePushSubscriptions needs of a stored subscription."""

    subscription_id: str
    watermark: str | None
    callback_url: str
    status_frequency: int
    silent: bool
    heard: bool  # Exchange reached us since it was created
    expires_at: datetime | None
    client_state: str | None
    lifecycle_event: str | None
    source: str  # the source that made it: not the operator's after a move


def manage(
    db: Database,
    sources: Sources | Source,
    *,
    callback_url: str | Callable[[str], str],
    status_frequency: int,
    renew_before: timedelta = RENEW_BEFORE,
    tracker: FailureTracker | None = None,
    on_dirty: Callable[[], None] | None = None,
) -> ManageResult:
    """Subscribe, renew, recreate or drop as the module docstring says, each operator with its own source.
    ``callback_url``: the listener URL, or a function giving it for a source's door (``ews``, ``graph``: each
    protocol has its own path).
    ``renew_before``: how long before a subscription expires (Graph) it is renewed.
    ``on_dirty`` wakes this process's processor when a mailbox was marked for its initial sync or a catch-up
    (other processes are woken by ``db.wake``)."""
    if not isinstance(sources, Sources):
        sources = Sources.only(sources)
    result = ManageResult()
    now = utcnow()
    with db.read() as session:
        rows = [
            (op.id, op.email, op.sync_enabled, op.source, None if sub is None else _held(sub, now))
            for op, sub in subscriptions.with_operators(session)
        ]
    streaks = _open_streaks(tracker)
    for operator_id, email, enabled, source_name, held in rows:
        codes = streaks.get(operator_id, [])
        if not enabled:
            if held is not None:
                _drop(db, sources, operator_id, email, held)
                result.dropped.append(email)
            if codes and tracker is not None:
                _tracked(tracker.close_quietly, operator_id)
            continue
        try:
            source = sources.for_operator(source_name)
        except SourceError as exc:
            _subscribe_failed(db, tracker, result, operator_id, email, exc)
            continue
        url = callback_url if isinstance(callback_url, str) else callback_url(source.door)
        silent = held is not None and source.heartbeats and held.silent
        moved = held is not None and held.source != source_name  # made by the source the operator moved from
        if held is not None and not moved:
            if held.heard and not silent and any(c in SILENCE_CODES for c in codes) and tracker is not None:
                _tracked(tracker.record_success, operator_id, origin="listener")  # pushes arrive again
            if _still_good(source, held, url, status_frequency, now, renew_before):
                continue
            if _renewable(source, held, url, now) and _renew(db, source, email, held, result):
                continue
        try:
            created = source.subscribe(email, url, status_frequency)
        except SourceError as exc:
            _subscribe_failed(db, tracker, result, operator_id, email, exc)
            continue
        if held is not None and held.subscription_id != created.subscription_id:
            _end_held(sources, email, held)  # Graph: delete the old one (EWS: the listener answers Unsubscribe)
        if tracker is not None:
            if any(code not in SILENCE_CODES and code != "unreadable_item" for code in codes):
                _tracked(tracker.record_success, operator_id, origin="subscribe")  # Exchange answers again
            if silent and held is not None and not moved:
                error = _silence(db, source_name, email, url, held.status_frequency)
                _tracked(tracker.record_failure, operator_id, error, origin="listener")
        made = partial(
            subscriptions.made,
            operator_id=operator_id,
            subscription_id=created.subscription_id,
            watermark=created.watermark,
            status_frequency=status_frequency,
            callback_url=url,
            expires_at=created.expires_at,
            client_state=created.client_state,
            source=source_name,
        )
        with_wake = partial(_and_wake, db, made)
        db.retrying(with_wake)  # a pass or a push may lock the same rows: a deadlock victim runs again
        if on_dirty is not None:
            on_dirty()
        (result.subscribed if held is None else result.recreated).append(email)
        log.info(
            "subscribed",
            extra={
                "operator": operator_id,
                "mailbox": email,
                "source": source_name,
                "recreated": held is not None,
                "moved_from": held.source if moved and held is not None else None,
                "silent": silent,
            },
        )
    return result


def _and_wake(db: Database, store: Callable[[Any], object], session: Any) -> None:
    store(session)
    db.wake(session)


def _held(sub: SubscriptionRow, now: datetime) -> _Held:
    return _Held(
        subscription_id=sub.subscription_id,
        watermark=sub.watermark,
        callback_url=sub.callback_url,
        status_frequency=sub.status_frequency,
        silent=subscriptions.is_silent(sub, now),
        heard=sub.last_heard_at > sub.created_at,
        expires_at=sub.expires_at,
        client_state=sub.client_state,
        lifecycle_event=sub.lifecycle_event,
        source=sub.source,
    )


def _still_good(
    source: Source, held: _Held, url: str, status_frequency: int, now: datetime, renew_before: timedelta
) -> bool:
    """Nothing to do: the right URL, not silent, not ending soon, nothing Exchange asked for."""
    if held.callback_url != url or held.lifecycle_event is not None:
        return False
    if source.heartbeats and (held.silent or held.status_frequency != status_frequency):
        return False
    return held.expires_at is None or held.expires_at - now > renew_before


def _renewable(source: Source, held: _Held, url: str, now: datetime) -> bool:
    """Extend rather than replace: it expires (Graph), has not yet, goes to the right URL, was not removed."""
    alive = held.expires_at is not None and held.expires_at > now
    return alive and held.callback_url == url and held.lifecycle_event != SUBSCRIPTION_REMOVED


def _renew(db: Database, source: Source, email: str, held: _Held, result: ManageResult) -> bool:
    """Renew (or reauthorize) the subscription; False when that failed and it must be made anew."""
    try:
        renewed = source.renew(
            email, Subscription(held.subscription_id, held.watermark, held.expires_at, held.client_state)
        )
    except SourceError as exc:
        log.warning("renewing failed; subscribing anew", extra={"mailbox": email, "code": exc.code})
        return False
    with db.transaction() as session:
        subscriptions.renewed(session, held.subscription_id, renewed.expires_at)
    result.renewed.append(email)
    log.info("subscription renewed", extra={"mailbox": email, "expires_at": str(renewed.expires_at)})
    return True


def _drop(db: Database, sources: Sources, operator_id: int, email: str, held: _Held) -> None:
    """Sync is off: forget the subscription (the listener answers an EWS push with Unsubscribe) and end it where
    Exchange lets calsync (Graph)."""
    with db.transaction() as session:
        subscriptions.drop(session, operator_id)
    _end_held(sources, email, held)
    log.info("subscription dropped", extra={"operator": operator_id, "mailbox": email})


def _end_held(sources: Sources, email: str, held: _Held) -> None:
    """End a subscription calsync no longer holds, through the source that made it, if it can be ended (Graph);
    a failure only leaves it to expire (the listener does not store what it still sends)."""
    try:
        sources.for_operator(held.source).unsubscribe(email, held.subscription_id)
    except SourceError as exc:
        log.info("could not end a subscription", extra={"mailbox": email, "code": exc.code})


def _subscribe_failed(
    db: Database,
    tracker: FailureTracker | None,
    result: ManageResult,
    operator_id: int,
    email: str,
    exc: SourceError,
) -> None:
    log.warning(
        "subscribe failed",
        extra={"operator": operator_id, "mailbox": email, "code": exc.code, "error": exc.message},
    )
    result.failed[email] = exc.code
    with db.transaction() as session:
        operators.record_error(session, operator_id, exc.code, exc.message)
    if tracker is not None:
        _tracked(tracker.record_failure, operator_id, exc, origin="subscribe")


def _silence(db: Database, source_name: str, email: str, callback_url: str, frequency: int) -> SourceError:
    """Why a subscription fell silent, as far as calsync can tell: the listener URL checks out (it comes back to
    this listener) and Exchange has never reached us on any subscription: Exchange does not deliver; otherwise the
    listener cannot be reached."""
    with db.read() as session:
        check = listener_checks.latest(session, callback_url)
        heard = subscriptions.any_heard(session, source_name)
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

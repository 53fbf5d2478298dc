"""The failure policy: when a failing operator becomes an incident, how fast it is retried, and which e-mails
go out about it.

Words. A *streak* is an operator's run of failures without a success in between (one row of the
``incidents`` table). While it lasts, the operator is *failing*: transient failures (timeouts, resets, 5xx,
ErrorServerBusy, ...) are retried quietly with the processor's exponential back-off (at most 60 s, at least
what Exchange asked for). A streak becomes an *incident* when

- it has lasted StatusFrequency minutes (``status_frequency``; StatusFrequencyForEWSNotifications, 30 by
  default) from its first failure, or
- a failure is permanent (bad credentials, no such mailbox, impersonation or access denied): at once.

Then exactly one failure e-mail goes out, and the operator is retried at a slower pace
(:attr:`FailureTracker.incident_retry`, 5 minutes by default, never sooner than Exchange asked) instead of the
<= 60 s back-off. When a pass succeeds again the incident is *resolved* and exactly one recovery notice goes
out. A streak that ends before it became an incident leaves no trace and sends nothing.

Scopes. An operator can fail in two independent ways, each with its own streak:

- ``exchange``: talking to Exchange fails, in a sync pass (origin ``sync``) or when subscribing (origin
  ``subscribe``). A successful sync pass ends it. A successful subscribe ends it only when its latest failure
  was a subscribe: a subscription recreated while passes still fail proves nothing about the passes.
- ``listener``: Exchange's pushes do not arrive, seen as subscriptions that fall silent and have to be
  recreated (code ``listener_unreachable``, or ``exchange_never_delivers`` when the listener's own check passes
  and no push has ever arrived; origin ``listener``). Recreating succeeds, and so do the catch-up passes, so
  only a push heard on the new subscription (a heartbeat or an event) ends it. One silent recreation starts a
  streak; the next one, 2 x StatusFrequency later with nothing heard in between, makes it an incident.
- ``content``: items Exchange sent that calsync could not read (code ``unreadable_item``). Passes succeed, so
  it is kept by :meth:`FailureTracker.record_unreadable` after each pass: an incident at once (nothing will
  change by waiting), its message listing the items, resolved when a pass ends with none listed.

E-mails. Recording never sends; :meth:`FailureTracker.flush` does, every few seconds on every node (the
dispatcher thread). It waits until the oldest pending notice has waited ``gather`` (60 s) so that incidents
opening together travel together; then, when several are due and at least ``storm_threshold`` (5) incidents
were reported within ``storm_lookback`` (10 minutes) counting these, ONE summary e-mail lists them all instead
of one e-mail each; recoveries likewise. Notices are claimed in the database before they are sent (and given
back if the SMTP server refuses), so several nodes never send the same one. Time comes from ``clock`` (or the
``now`` arguments), so tests can move it.

Disabled operators: their open streaks are closed quietly (no recovery notice: sync was switched off, it did
not recover). Secrets (the passwords, the client secret, the listener secret) are replaced by ``***`` in every
message stored or sent.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from calsync.sources.base import SourceError
from calsync.store import incidents, operators
from calsync.store.db import Database
from calsync.store.incidents import Notice, NoticeKind
from calsync.store.tables import IncidentRow, utcnow
from calsync.store.unreadable import Problem

from .mailer import Mail, Mailer, MailError, failure_mail, recovery_mail, scrub, storm_mail, storm_recovery_mail

if TYPE_CHECKING:
    from calsync.metrics import Metrics

log = logging.getLogger("calsync.alerts")

Scope = Literal["exchange", "listener", "content"]
Origin = Literal["sync", "subscribe", "listener"]
LISTENER_UNREACHABLE = "listener_unreachable"
EXCHANGE_NEVER_DELIVERS = "exchange_never_delivers"
UNREADABLE_ITEM = "unreadable_item"
MAX_LISTED_ITEMS = 20  # unreadable items named in an incident's message

INCIDENT_RETRY = timedelta(minutes=5)
GATHER = timedelta(seconds=60)
STORM_THRESHOLD = 5
STORM_LOOKBACK = timedelta(minutes=10)
DISPATCH_SECONDS = 5.0
MAIL_RETRY = timedelta(minutes=1)  # after the SMTP server refused, wait this long before trying again
MAX_STORED_MESSAGE = 4000


def scope_of(code: str) -> Scope:
    if code in (LISTENER_UNREACHABLE, EXCHANGE_NEVER_DELIVERS):
        return "listener"
    return "content" if code == UNREADABLE_ITEM else "exchange"


def describe_unreadable(items: Sequence[Problem]) -> str:
    """The message of an ``unreadable_item`` incident: how many, then each item, field and raw value."""
    count = len(items)
    lines = [
        f"{count} item{'s' if count != 1 else ''} could not be read and {'are' if count != 1 else 'is'} not "
        "stored; the application calendar keeps the last readable version, if any:"
    ]
    for item in items[:MAX_LISTED_ITEMS]:
        raw = "missing" if item.raw is None else repr(item.raw[:80])
        subject = f"{item.subject!r} " if item.subject else ""
        lines.append(f"- {subject}(item {item.item_id[:40]}): {item.field} {raw}: {item.reason}")
    if count > MAX_LISTED_ITEMS:
        lines.append(f"- ... and {count - MAX_LISTED_ITEMS} more")
    return "\n".join(lines)


@dataclass(frozen=True)
class FailureOutcome:
    """What a recorded failure means for the caller."""

    state: Literal["failing", "incident"]
    code: str  # the streak's code (the first code it was opened with, once an incident)
    first_failure_at: datetime
    failures: int
    retry_after: timedelta | None  # the pace while an incident is open; None: the caller's usual back-off

    @property
    def incident(self) -> bool:
        return self.state == "incident"


class FailureTracker:
    def __init__(
        self,
        db: Database,
        mailer: Mailer | None = None,
        *,
        status_frequency: int | Callable[[], int] = 30,
        clock: Callable[[], datetime] = utcnow,
        incident_retry: timedelta = INCIDENT_RETRY,
        gather: timedelta = GATHER,
        storm_threshold: int = STORM_THRESHOLD,
        storm_lookback: timedelta = STORM_LOOKBACK,
        secrets: Iterable[str] | Callable[[], Iterable[str]] = (),
        dispatch_seconds: float = DISPATCH_SECONDS,
        metrics: Metrics | None = None,
    ) -> None:
        self.db = db
        self.metrics = metrics  # counts every failure recorded, by code (calsync.metrics)
        self.mailer = mailer or Mailer(host=None)
        self._status_frequency = status_frequency
        self.clock = clock
        self.incident_retry = incident_retry
        self.gather = gather
        self.storm_threshold = storm_threshold
        self.storm_lookback = storm_lookback
        self._secrets = secrets if callable(secrets) else tuple(secrets)
        self.dispatch_seconds = dispatch_seconds
        self._mail_paused_until: datetime | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.mails_sent = 0

    # --- settings --------------------------------------------------------------------------------

    @property
    def status_frequency(self) -> int:
        value = self._status_frequency
        return int(value() if callable(value) else value)

    @property
    def threshold(self) -> timedelta:
        """How long a transient streak lasts before it becomes an incident."""
        return timedelta(minutes=self.status_frequency)

    def secrets(self) -> tuple[str, ...]:
        values = self._secrets() if callable(self._secrets) else self._secrets
        return tuple(v for v in values if v)

    # --- recording -------------------------------------------------------------------------------

    def record_failure(
        self, operator_id: int, error: SourceError, now: datetime | None = None, *, origin: Origin = "sync"
    ) -> FailureOutcome:
        """One failed attempt for the operator (a sync pass, a subscribe, or a subscription found silent): start
        or extend its streak; open an incident when due."""
        now = now or self.clock()
        if self.metrics is not None:
            self.metrics.error(error.code)
        scope = scope_of(error.code)
        kind = "permanent" if error.kind == "permanent" else "transient"
        message = scrub(error.message, self.secrets())[:MAX_STORED_MESSAGE]
        with self.db.transaction() as session:
            if not incidents.lock_operator(session, operator_id):  # removed meanwhile: nothing to track
                return FailureOutcome("failing", error.code, now, 0, None)
            row = next((r for r in incidents.open_streaks(session, operator_id) if scope_of(r.code) == scope), None)
            if row is None:
                row = incidents.start(session, operator_id, error.code, kind, origin, message, now)
            else:
                row.failures += 1
                row.last_failure_at = max(row.last_failure_at, now)
                row.origin = origin
                if row.opened_at is None:  # until it is an incident, the streak shows its latest failure
                    row.code, row.kind, row.message = error.code, kind, message
            opened, mailbox = False, None
            if row.opened_at is None and (kind == "permanent" or now - row.first_failure_at >= self.threshold):
                row.opened_at = now
                opened = True
                mailbox = operators.by_id(session, operator_id).email
            outcome = FailureOutcome(
                "incident" if row.opened_at is not None else "failing",
                row.code,
                row.first_failure_at,
                row.failures,
                self.incident_retry if row.opened_at is not None else None,
            )
            operator_id_for_log = row.operator_id
        if opened:
            log.warning(
                "incident opened",
                extra={
                    "operator": operator_id_for_log,
                    "mailbox": mailbox,
                    "code": outcome.code,
                    "kind": kind,
                    "failures": outcome.failures,
                    "failing_since": outcome.first_failure_at.isoformat(),
                },
            )
        return outcome

    def record_success(self, operator_id: int, now: datetime | None = None, *, origin: Origin = "sync") -> bool:
        """A sync pass (``sync``), a subscribe (``subscribe``) succeeded, or a push was heard on a recreated
        subscription (``listener``): end the streak that this success answers (see the module docstring) and
        resolve its incident (a recovery notice is then due). True if a streak ended."""
        now = now or self.clock()

        def answered(row: IncidentRow) -> bool:
            if origin == "listener":
                return scope_of(row.code) == "listener"
            return scope_of(row.code) == "exchange" and (origin == "sync" or row.origin == "subscribe")

        with self.db.read() as session:  # the common case, nothing open, costs one read and no write lock
            if not any(answered(r) for r in incidents.open_streaks(session, operator_id)):
                return False
        ended = False
        with self.db.transaction() as session:
            if not incidents.lock_operator(session, operator_id):
                return False
            for row in incidents.open_streaks(session, operator_id):
                if not answered(row):
                    continue
                ended = True
                if row.opened_at is None:
                    incidents.forget(session, row)
                    continue
                row.resolved_at = now
                log.info(
                    "incident resolved",
                    extra={
                        "operator": operator_id,
                        "mailbox": operators.by_id(session, operator_id).email,
                        "code": row.code,
                        "failures": row.failures,
                    },
                )
        return ended

    def record_unreadable(self, operator_id: int, items: Sequence[Problem], now: datetime | None = None) -> None:
        """After a successful pass: open (or bring up to date) the operator's ``unreadable_item`` incident listing
        ``items``, or resolve it when there are none."""
        now = now or self.clock()

        def content(rows: Iterable[IncidentRow]) -> IncidentRow | None:
            return next((r for r in rows if scope_of(r.code) == "content"), None)

        if not items:
            with self.db.read() as session:  # the common case: nothing listed, nothing open, one read
                if content(incidents.open_streaks(session, operator_id)) is None:
                    return
        message = scrub(describe_unreadable(items), self.secrets())[:MAX_STORED_MESSAGE]
        with self.db.transaction() as session:
            if not incidents.lock_operator(session, operator_id):
                return
            row = content(incidents.open_streaks(session, operator_id))
            if not items:
                if row is not None:
                    row.resolved_at = now
                    log.info("incident resolved", extra={"operator": operator_id, "code": row.code})
                return
            if row is None:
                row = incidents.start(session, operator_id, UNREADABLE_ITEM, "permanent", "sync", message, now)
                row.opened_at = now
                if self.metrics is not None:
                    self.metrics.error(UNREADABLE_ITEM)
                log.warning("incident opened", extra={"operator": operator_id, "code": UNREADABLE_ITEM})
            else:
                row.message, row.last_failure_at = message, now
                row.failures += 1

    def close_quietly(self, operator_id: int, now: datetime | None = None) -> None:
        """Sync was switched off for the operator: close its streaks without a recovery notice."""
        now = now or self.clock()
        with self.db.transaction() as session:
            for row in incidents.open_streaks(session, operator_id):
                if row.opened_at is None:
                    incidents.forget(session, row)
                    continue
                row.resolved_at = now
                if row.notified_at is not None:
                    row.recovery_notified_at = now  # nothing to announce: it did not recover, it was switched off

    def open_streaks(self) -> dict[int, list[str]]:
        """Codes of the open streaks per operator (for ManagePushSubscriptions)."""
        with self.db.read() as session:
            return incidents.open_by_operator(session)

    # --- e-mails ---------------------------------------------------------------------------------

    def flush(self, now: datetime | None = None) -> int:
        """Send the failure e-mails and recovery notices that are due; the number of e-mails sent."""
        if not self.mailer.enabled:
            self.mailer.note_off()
            return 0
        now = now or self.clock()
        if self._mail_paused_until is not None and now < self._mail_paused_until:
            return 0
        sent = 0
        kinds: tuple[NoticeKind, ...] = ("failure", "recovery")
        for which in kinds:
            sent += self._flush(which, now)
            if self._mail_paused_until is not None and now < self._mail_paused_until:
                break
        return sent

    def _flush(self, which: NoticeKind, now: datetime) -> int:
        with self.db.transaction() as session:
            notices = incidents.claim(session, which, now, self.gather)
            if not notices:
                return 0
            earlier = incidents.notified_since(session, which, now - self.storm_lookback) - len(notices)
        mails = self._compose(which, notices, storm=len(notices) > 1 and len(notices) + earlier >= self.storm_threshold)
        sent = 0
        for i, mail in enumerate(mails):
            try:
                self.mailer.send(mail)
            except MailError as exc:
                unsent = [incident for m in mails[i:] for incident in m.incident_ids]
                with self.db.transaction() as session:
                    incidents.unclaim(session, which, unsent)
                self._mail_paused_until = now + MAIL_RETRY
                log.error("failure e-mail not sent; retrying in a minute: %s", exc)
                break
            sent += 1
        self.mails_sent += sent
        if sent:
            self._mail_paused_until = None
        return sent

    def _compose(self, which: NoticeKind, notices: list[Notice], *, storm: bool) -> list[Mail]:
        secrets = self.secrets()
        if which == "failure":
            if storm:
                return [storm_mail(notices, retry_every=self.incident_retry, secrets=secrets)]
            return [failure_mail(n, retry_every=self.incident_retry, secrets=secrets) for n in notices]
        if storm:
            return [storm_recovery_mail(notices, secrets=secrets)]
        return [recovery_mail(n, secrets=secrets) for n in notices]

    # --- the dispatcher --------------------------------------------------------------------------

    def start(self) -> None:
        """Flush every ``dispatch_seconds`` in a background thread (every node runs one; claims keep the
        e-mails single)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="calsync-alerts", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.flush()
            except Exception:  # a database hiccup must not end the dispatcher
                log.exception("failure e-mail dispatch failed")
            self._stop.wait(self.dispatch_seconds)

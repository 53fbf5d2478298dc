"""The Graph source: Exchange Online through Microsoft Graph v1.0, with an app's client credentials (application
permission Calendars.Read or Calendars.ReadWrite).

Reading: delta over a calendar view
    Graph's change tracking for calendars is ``/users/{id}/calendarView/delta`` between two dates: it reports the
    single events and the *occurrences* in that window, not series masters. calsync keeps series whole, so:

    - the window runs from ``past_window_days`` ago to ``future_days`` ahead (730 by default) and is moved
      forward ("re-baselined": a fresh delta from scratch, what is not seen again is swept) once less than half of
      its future is left, about once a year; a single event further ahead than the window appears when the window
      reaches it, a series by its master as soon as any of its occurrences is in the window;
    - delta results are hints: a single event is read from them; an occurrence or exception names its series
      master (``seriesMasterId``), which is read (``$expand=exceptionOccurrences``: the exceptions with their
      original starts; ``cancelledOccurrences``: the deleted ones), twenty to a JSON ``$batch``; when a delta
      result lacks the event's type, the event is read first;
    - a removed id is deleted; since a removed occurrence does not say its series, every series master this
      mailbox is known to have (kept in the sync state, a few ids) is read again then, and one that is gone is
      deleted;
    - the sync state is a small JSON document: the next link (a ``$skiptoken`` within a round, then the
      ``$deltatoken`` link), the window, the known masters. An expired token (410 SyncStateNotFound) starts a
      fresh delta marked ``restart``: the engine then sweeps what is not seen again, as after a full sync.

    Cost: one request per delta page (``Prefer: odata.maxpagesize`` = the batch size), one ``$batch`` per twenty
    series touched; an initial sync lists every occurrence in the window once (a daily series over the default
    window is about 900 of them, 2 pages of 512).

Subscriptions
    ``/subscriptions`` on ``users/{id}/events`` (created, updated, deleted), with a fresh ``clientState`` secret
    each, a lifecycle URL next to the notification URL (``/graph/lifecycle/...``), expiring after
    ``subscription_minutes`` (4,230 by default, the documented maximum for Outlook resources); renewed with a
    PATCH, ended with a DELETE. Graph subscriptions send no heartbeats (``heartbeats = False``).
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from calsync.calendar.model import Appointment
from calsync.sources.base import (
    ChangePage,
    ItemsRead,
    MailboxCheck,
    Source,
    SourceError,
    SourceStats,
    Subscription,
    Unreadable,
    UnreadableItem,
)

from .client import GraphClient, GraphError, Request
from .errors import classify
from .mapping import to_appointment

__all__ = ["GraphSource"]

log = logging.getLogger("calsync.sources.graph")

MAX_SUBSCRIPTION_MINUTES = 10_080  # newer notes allow a week; Microsoft's copies say 4,230
MASTER = "seriesMaster"
# What the mapping reads of an event: a series master is read with exactly these (Graph writes
# cancelledOccurrences only when $select names it) and its exceptions expanded.
SELECTED = ",".join(
    (
        *("id", "changeKey", "type", "seriesMasterId", "subject", "body", "location", "start", "end", "isAllDay"),
        *("originalStartTimeZone", "originalEndTimeZone", "organizer", "attendees", "isCancelled", "sensitivity"),
        *("showAs", "categories", "iCalUId", "recurrence", "lastModifiedDateTime", "cancelledOccurrences"),
    )
)
INSTANCE_TYPES = frozenset({"occurrence", "exception"})


@dataclass
class _State:
    """The Graph sync state: where the delta stands, its window, the series masters known."""

    link: str
    start: datetime
    end: datetime
    masters: set[str] = field(default_factory=set)

    def encode(self) -> str:
        return json.dumps(
            {
                "v": 1,
                "link": self.link,
                "start": self.start.isoformat(),
                "end": self.end.isoformat(),
                "masters": sorted(self.masters),
            }
        )

    @classmethod
    def decode(cls, text: str) -> _State:
        try:
            data = json.loads(text)
            return cls(
                data["link"],
                datetime.fromisoformat(data["start"]),
                datetime.fromisoformat(data["end"]),
                set(data.get("masters") or ()),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise SourceError(
                "sync_state_invalid", "sync_state_expired", "the stored sync state is not a Graph one"
            ) from exc


@dataclass
class _Page:
    upserts: dict[str, Appointment] = field(default_factory=dict)
    deletes: list[str] = field(default_factory=list)
    unreadable: list[UnreadableItem] = field(default_factory=list)


class GraphSource(Source):
    """Exchange Online through Microsoft Graph. Thread-safe."""

    name = "graph"
    heartbeats = False
    door = "graph"

    def __init__(
        self,
        *,
        endpoint: str,
        authority: str,
        tenant_id: str,
        client_id: str,
        client_secret: str | None = None,
        certificate: Path | None = None,
        ca_file: Path | None = None,
        past_window_days: int = 180,
        future_days: int = 730,
        subscription_minutes: int = 4230,
        timeout: float = 30.0,
    ) -> None:
        if not 45 <= subscription_minutes <= MAX_SUBSCRIPTION_MINUTES:
            raise ValueError(
                f"subscription_minutes: must be 45..{MAX_SUBSCRIPTION_MINUTES}, got {subscription_minutes}"
            )
        if future_days < 30:
            raise ValueError(f"future_days: must be at least 30, got {future_days}")
        self.client = GraphClient(
            endpoint=endpoint,
            authority=authority,
            tenant_id=tenant_id,
            client_id=client_id,
            client_secret=client_secret,
            certificate=certificate,
            ca_file=ca_file,
            timeout=timeout,
        )
        self.endpoint = endpoint
        self.past_window_days = past_window_days
        self.future_days = future_days
        self.subscription_minutes = subscription_minutes
        self._secrets = tuple(s for s in (client_secret,) if s)
        self.stats = SourceStats()

    def __repr__(self) -> str:
        return f"GraphSource(endpoint={self.endpoint!r})"

    def _error(self, exc: BaseException, mailbox: str | None) -> SourceError:
        return classify(exc, mailbox=mailbox, secrets=self._secrets)

    @staticmethod
    def _user(mailbox: str) -> str:
        return f"/users/{quote(mailbox.strip(), safe='@')}"

    # --- reading -----------------------------------------------------------------------------------------------

    def changes(self, mailbox: str, sync_state: str | None, batch_size: int) -> Iterator[ChangePage]:
        if not 1 <= batch_size <= 512:
            raise ValueError(f"batch_size: must be from 1 to 512, got {batch_size}")
        now = datetime.now(UTC)
        state = None if sync_state is None else _State.decode(sync_state)
        restart = state is None or state.end - now < timedelta(days=self.future_days / 2)
        if restart:
            state = self._fresh(mailbox, now, state)
        assert state is not None
        read: set[str] = set()  # series masters read in this pass: occurrences of one come on many pages
        while True:
            try:
                page, found = self._read_page(mailbox, state, batch_size, restart, read)
            except GraphError as exc:
                if exc.status != 410 or restart:
                    raise self._error(exc, mailbox) from exc
                log.info("delta token expired; reading the window afresh", extra={"mailbox": mailbox})
                state, restart = self._fresh(mailbox, now, state), True
                continue
            except SourceError:
                raise
            except Exception as exc:
                raise self._error(exc, mailbox) from exc
            yield page
            restart = False
            if page.done:
                return
            state = found

    def _fresh(self, mailbox: str, now: datetime, old: _State | None) -> _State:
        start = now - timedelta(days=self.past_window_days)
        end = now + timedelta(days=self.future_days)
        link = f"{self._user(mailbox)}/calendarView/delta?startDateTime={_iso(start)}&endDateTime={_iso(end)}"
        return _State(link, start, end, set() if old is None else set(old.masters))

    def _read_page(
        self, mailbox: str, state: _State, batch_size: int, restart: bool, read: set[str]
    ) -> tuple[ChangePage, _State]:
        before = self.client.requests
        answer = self.client.request(
            "GET", state.link, mailbox=mailbox, headers={"Prefer": f"odata.maxpagesize={batch_size}"}
        ).json()
        self._count("delta")
        values = answer.get("value") or []
        removed = [str(v["id"]) for v in values if "@removed" in v and v.get("id")]
        present = [v for v in values if "@removed" not in v and v.get("id")]
        masters = set(state.masters)
        page = _Page(deletes=list(removed))
        touched = self._sort(mailbox, present, page)
        masters |= touched
        # A removed occurrence does not say its series: then every known series is read again.
        wanted = (masters if removed else touched) - read
        self._read_masters(mailbox, sorted(wanted), page, masters)
        read |= wanted
        next_link = answer.get("@odata.nextLink") or answer.get("@odata.deltaLink")
        if not next_link:
            raise GraphError(502, "NoNextLink", "a delta page without @odata.nextLink or @odata.deltaLink")
        done = "@odata.deltaLink" in answer and "@odata.nextLink" not in answer
        found = _State(str(next_link), state.start, state.end, masters)
        return (
            ChangePage(
                upserts=tuple(page.upserts.values()),
                deletes=tuple(dict.fromkeys(page.deletes)),
                sync_state=found.encode(),
                done=done,
                requests=self.client.requests - before,
                unreadable=tuple(page.unreadable),
                restart=restart,
            ),
            found,
        )

    def _sort(self, mailbox: str, present: list[dict[str, Any]], page: _Page) -> set[str]:
        """Single events into the page; the ids of the series masters that occurrences (or the masters
        themselves) name, to be read whole. Events whose type the delta did not say are read first."""
        untyped = [v["id"] for v in present if "type" not in v]
        typed = [v for v in present if "type" in v]
        if untyped:
            fetched, gone = self._get_events(mailbox, untyped)
            typed.extend(fetched)
            page.deletes.extend(gone)
        touched: set[str] = set()
        for event in typed:
            kind = event.get("type")
            if kind in INSTANCE_TYPES and event.get("seriesMasterId"):
                touched.add(str(event["seriesMasterId"]))
            elif kind == MASTER:
                touched.add(str(event["id"]))
            else:
                self._map(event, page)
        return touched

    def _read_masters(self, mailbox: str, master_ids: Sequence[str], page: _Page, masters: set[str]) -> None:
        if not master_ids:
            return
        fetched, gone = self._get_events(mailbox, master_ids, expand=True)
        for master_id in gone:
            masters.discard(master_id)
            page.deletes.append(master_id)
        for event in fetched:
            self._map(event, page)

    def _get_events(
        self, mailbox: str, ids: Sequence[str], *, expand: bool = False
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """Read events by id ($batch): (the events, the ids that are gone)."""
        suffix = f"?$select={SELECTED}&$expand=exceptionOccurrences" if expand else ""
        requests = [Request("GET", f"{self._user(mailbox)}/events/{quote(i, safe='')}{suffix}") for i in ids]
        answers = self.client.batch(requests, mailbox=mailbox)
        self._count("batch")
        events, gone = [], []
        for event_id, (status, body) in zip(ids, answers, strict=True):
            if status == 404:
                gone.append(event_id)
            elif status >= 400:
                raise _batch_error(status, body)
            else:
                events.append(body)
        return events, gone

    def _map(self, event: dict[str, Any], page: _Page) -> None:
        event_id = str(event["id"])
        try:
            page.upserts[event_id] = to_appointment(event)
        except Unreadable as problem:
            log.warning(
                "item not stored: a value that decides its place could not be read",
                extra={"item": event_id, "field": problem.field, "raw": problem.raw, "reason": problem.reason},
            )
            page.upserts.pop(event_id, None)
            page.unreadable.append(UnreadableItem.of(event_id, problem, event.get("subject")))

    def read_items(self, mailbox: str, item_ids: list[str]) -> ItemsRead:
        try:
            fetched, gone = self._get_events(mailbox, item_ids, expand=True)
        except Exception as exc:
            raise self._error(exc, mailbox) from exc
        page = _Page()
        for event in fetched:
            self._map(event, page)
        return ItemsRead(tuple(page.upserts.values()), tuple(gone), tuple(page.unreadable))

    # --- subscriptions -----------------------------------------------------------------------------------------

    def subscribe(
        self, mailbox: str, callback_url: str, status_frequency: int, watermark: str | None = None
    ) -> Subscription:
        client_state = secrets.token_urlsafe(32)
        body = {
            "changeType": "created,updated,deleted",
            "notificationUrl": callback_url,
            "lifecycleNotificationUrl": lifecycle_url(callback_url),
            "resource": f"users/{mailbox.strip()}/events",
            "expirationDateTime": _iso(self._expiry()),
            "clientState": client_state,
        }
        try:
            made = self.client.request("POST", "/subscriptions", mailbox=mailbox, json=body).json()
        except Exception as exc:
            raise self._error(exc, mailbox) from exc
        self._count("subscribe")
        return Subscription(str(made["id"]), None, _expiry_of(made), client_state)

    def renew(self, mailbox: str, subscription: Subscription) -> Subscription:
        """A PATCH of the expiry, which also reauthorizes it (Graph's lifecycle reauthorizationRequired)."""
        body = {"expirationDateTime": _iso(self._expiry())}
        try:
            made = self.client.request(
                "PATCH", f"/subscriptions/{quote(subscription.subscription_id, safe='')}", mailbox=mailbox, json=body
            ).json()
        except Exception as exc:
            raise self._error(exc, mailbox) from exc
        self._count("renew")
        return Subscription(subscription.subscription_id, None, _expiry_of(made), subscription.client_state)

    def unsubscribe(self, mailbox: str, subscription_id: str) -> None:
        try:
            self.client.request("DELETE", f"/subscriptions/{quote(subscription_id, safe='')}", mailbox=mailbox)
        except GraphError as exc:
            if exc.status == 404:
                return  # already gone
            raise self._error(exc, mailbox) from exc
        except Exception as exc:
            raise self._error(exc, mailbox) from exc
        self._count("unsubscribe")

    def _expiry(self) -> datetime:
        return datetime.now(UTC) + timedelta(minutes=self.subscription_minutes)

    # --- mailboxes ---------------------------------------------------------------------------------------------

    def check_mailbox(self, mailbox: str) -> MailboxCheck:
        # The calendar, not the user: reading users needs User.Read.All, which calsync's app does not ask for.
        try:
            calendar = self.client.request("GET", f"{self._user(mailbox)}/calendar", mailbox=mailbox).json()
        except Exception as exc:
            error = self._error(exc, mailbox)
            if error.kind != "permanent":
                raise error from exc
            return MailboxCheck(False, error.code, error.message)
        return MailboxCheck(True, display_name=(calendar.get("owner") or {}).get("name"))

    def _count(self, operation: str) -> None:
        self.stats.requests = self.client.requests
        self.stats.by_operation[operation] = self.stats.by_operation.get(operation, 0) + 1

    def close(self) -> None:
        self.client.close()


def lifecycle_url(callback_url: str) -> str:
    """The lifecycle door next to the notification door: ``.../graph/lifecycle/<secret>``."""
    head, sep, tail = callback_url.rpartition("/notifications/")
    return f"{head}/lifecycle/{tail}" if sep else callback_url


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _expiry_of(made: dict[str, Any]) -> datetime | None:
    raw = made.get("expirationDateTime")
    try:
        return None if raw is None else datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        return None


def _batch_error(status: int, body: Any) -> GraphError:
    error = (body or {}).get("error") or {} if isinstance(body, dict) else {}
    return GraphError(status, str(error.get("code") or f"HTTP{status}"), str(error.get("message") or ""))

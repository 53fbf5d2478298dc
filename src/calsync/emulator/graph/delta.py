"""``GET /v1.0/users/{id}/calendarView/delta`` (also spelled ``delta()``, also under ``/calendar``): a round of pages
joined by ``@odata.nextLink`` (``$skiptoken``) that ends with an ``@odata.deltaLink`` (``$deltatoken``), both
absolute links to this emulator. The first round needs ``startDateTime`` and ``endDateTime`` and lists everything
in the window (single events, occurrences, exceptions and the masters of series in it); a round from a deltaLink
lists what was created or changed since, and as ``{"id", "@removed": {"reason": "deleted"}}`` what was deleted or
left the window. ``Prefer: odata.maxpagesize=N`` sets the page size (default 10).

Sync states live in the emulator, as they do in Exchange Online: a token names one. A token the emulator no longer
holds (the oldest are dropped past 10,000), or one of a mailbox whose sync states were expired (the control API's
``expire-sync-states``, which expires EWS sync states too), answers 410 ``SyncStateNotFound``.
"""

from __future__ import annotations

import secrets
import threading
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from starlette.responses import Response

from ..model import CalendarItem, ItemRef, Mailbox, calendar_view, rest_id
from .calendar_view import window
from .endpoint import Call, answer
from .errors import GraphError
from .event_json import removed, write_event

DEFAULT_PAGE = 10
MAX_PAGE = 1000
MAX_STATES = 100_000  # tokens kept (the newest): a deltaLink per mailbox of a 10,000-mailbox tenant, and spare
Key = tuple[int, int]  # (item number, occurrence index; 0 for a single event or a series master)


@dataclass(frozen=True)
class DeltaState:
    """What a client holds after a deltaLink: the window, and the events in it as of a mailbox change number."""

    mailbox: uuid.UUID
    start: datetime
    end: datetime
    generation: int
    seq: int
    known: frozenset[Key]


@dataclass(frozen=True)
class DeltaRound:
    """A round being paged through: what is left to send, and the state reached when it is all sent."""

    after: DeltaState
    pending: tuple[tuple[Key, bool], ...]  # (event, removed)
    offset: int = 0
    # the events as the round found them: an occurrence is worked out once, not again from its series' start
    # for every page (a round is a snapshot; what changes meanwhile is in the next round)
    events: Mapping[Key, CalendarItem] = field(default_factory=dict)


class DeltaStore:
    """The sync states and rounds behind the emulator's tokens, newest kept."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._things: OrderedDict[str, DeltaState | DeltaRound] = OrderedDict()

    def put(self, thing: DeltaState | DeltaRound) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._things[token] = thing
            while len(self._things) > MAX_STATES:
                self._things.popitem(last=False)
        return token

    def get(self, token: str) -> DeltaState | DeltaRound | None:
        with self._lock:
            return self._things.get(token)


def _view(mbx: Mailbox, start: datetime, end: datetime) -> dict[Key, CalendarItem]:
    """The events in the window, with the masters of the series that have occurrences in it."""
    out: dict[Key, CalendarItem] = {}
    for event in calendar_view(mbx.calendar.items.values(), start, end):
        out[(event.number, event.index)] = event
        if event.index:
            master = mbx.calendar.items[event.number]
            out.setdefault((master.number, 0), master)
    return out


def _new_round(mbx: Mailbox, state: DeltaState) -> DeltaRound:
    view = _view(mbx, state.start, state.end)
    changed = [(key, False) for key, event in view.items() if key not in state.known or event.seq > state.seq]
    gone = [(key, True) for key in sorted(state.known - view.keys())]
    after = replace(state, generation=mbx.sync_generation, seq=mbx.seq, known=frozenset(view))
    return DeltaRound(after, (*gone, *changed), events=view)


def _event(mbx: Mailbox, key: Key) -> CalendarItem | None:
    master = mbx.calendar.items.get(key[0])
    if master is None or not key[1]:
        return master
    return master.occurrence(key[1])


def _page_size(call: Call) -> int:
    raw = call.prefer.get("odata.maxpagesize")
    try:
        size = min(max(int(raw or ""), 1), MAX_PAGE)
    except ValueError:
        return DEFAULT_PAGE
    call.applied.append(f"odata.maxpagesize={size}")
    return size


def _gone(call: Call, link: str | None) -> GraphError:
    return GraphError(
        410,
        "SyncStateNotFound",
        "The sync state generation is not found; the sync state has expired or was never issued. Start a full "
        "synchronization of the window.",
        {"Location": link} if link else None,
    )


def delta(store: DeltaStore, call: Call) -> Response:
    call.refuse_options("$select", "$filter", "$orderby", "$expand", "$search", "$count", "$top")
    mbx = call.user()
    path = call.path.removesuffix("()")
    size = _page_size(call)
    zone = call.zone()
    with call.exchange.lock:
        found: Any
        if "$skiptoken" in call.query:
            found = store.get(call.query["$skiptoken"])
        elif "$deltatoken" in call.query:
            found = store.get(call.query["$deltatoken"])
        else:
            start, end = window(call)
            found = DeltaState(mbx.guid, start, end, mbx.sync_generation, -1, frozenset())
        state = found.after if isinstance(found, DeltaRound) else found
        if state is None or state.mailbox != mbx.guid:
            raise _gone(call, None)
        if state.generation != mbx.sync_generation:
            params = {"startDateTime": state.start.isoformat(), "endDateTime": state.end.isoformat()}
            raise _gone(call, f"{call.base}{path}?{urlencode(params)}")
        current = found if isinstance(found, DeltaRound) else _new_round(mbx, found)
        chunk = current.pending[current.offset : current.offset + size]
        value: list[dict[str, Any]] = []
        for key, is_removed in chunk:
            event = None if is_removed else (current.events.get(key) or _event(mbx, key))
            if event is None:
                value.append(removed(rest_id(ItemRef(mbx.guid, *key).encode())))
            else:
                value.append({"@odata.type": "#microsoft.graph.event", **write_event(event, mbx, zone)})
        body: dict[str, Any] = {"@odata.context": f"{call.base}/v1.0/$metadata#Collection(event)"}
        if current.offset + size < len(current.pending):
            token = store.put(replace(current, offset=current.offset + size))
            body["@odata.nextLink"] = f"{call.base}{path}?$skiptoken={token}"
        else:
            body["@odata.deltaLink"] = f"{call.base}{path}?$deltatoken={store.put(current.after)}"
    body["value"] = value
    return answer(body)

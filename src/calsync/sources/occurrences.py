"""Placing a series' changed and deleted occurrences, for every protocol: each must name one occurrence of the
series, or the series is :class:`~calsync.sources.base.Unreadable` (an override the calendar would silently drop,
or a deleted occurrence that would stay, is a wrong calendar). Servers name an occurrence differently (its
original start, a RecurrenceId, the day at midnight, Graph's ``OID.<master>.<date>``); each source hands over the
candidates it has, best first, and :meth:`calsync.calendar.expand.Series.fit` picks the slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from calsync.calendar.expand import Series
from calsync.calendar.model import Appointment, OccurrenceOverride

from .base import Unreadable

__all__ = ["Changed", "Deleted", "place"]


@dataclass(frozen=True)
class Changed:
    """A changed occurrence: where it is now, what differs from the series (None: as the series), and the
    candidates for its original start. ``field`` names where the candidates came from, for a report."""

    candidates: Sequence[datetime | None]
    start: datetime
    end: datetime
    subject: str | None = None
    location: str | None = None
    cancelled: bool | None = None
    field: str = "OriginalStart"


@dataclass(frozen=True)
class Deleted:
    """A deleted occurrence, by the candidates for its original start."""

    candidates: Sequence[datetime | None]
    field: str = "DeletedOccurrence"
    raw: str | None = None  # the value as the server sent it, for a report


def place(
    series: Appointment, changed: Sequence[Changed], deleted: Sequence[Deleted], last_end: datetime | None = None
) -> Appointment:
    """``series`` with its overrides, deleted occurrences and ``series_end`` set. ``last_end``: the end of the
    last occurrence as the server says it (EWS LastOccurrence), else computed from the pattern."""
    slots = Series.of(series)
    if slots.first_start() is None:
        raise Unreadable("Recurrence", None, "the pattern and range hold no occurrence")
    overrides = []
    for change in changed:
        original = slots.fit(change.candidates)
        if original is None:
            raise Unreadable(change.field, _raw(change.candidates), "names no occurrence of the series")
        overrides.append(
            OccurrenceOverride(original, change.start, change.end, change.subject, change.location, change.cancelled)
        )
    gone = []
    for deletion in deleted:
        original = slots.fit(deletion.candidates)
        if original is None:
            raw = deletion.raw or _raw(deletion.candidates)
            raise Unreadable(deletion.field, raw, "names no occurrence of the series")
        gone.append(original)
    if last_end is None:
        last_start = slots.last_start()
        last_end = None if last_start is None else slots.end_of(last_start)
    series_end = None if last_end is None else max([last_end, *(o.end for o in overrides)])  # None: no end
    return replace(
        series,
        overrides=tuple(sorted(overrides, key=lambda o: o.original_start)),
        deleted_occurrences=tuple(sorted(set(gone))),
        series_end=series_end,
    )


def _raw(candidates: Sequence[datetime | None]) -> str | None:
    return next((c.isoformat() for c in candidates if c is not None), None)

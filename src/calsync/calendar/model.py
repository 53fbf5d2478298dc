"""The application's calendar, as calsync keeps it: one :class:`Appointment` per Exchange item (a single
appointment or a whole recurring series), in a form that every source maps to and the store, the
calendar API and the iCalendar export read.

Times are aware UTC datetimes; ``start_tz``/``end_tz`` keep the Windows zone the organizer used, so a
series expands at the same wall-clock time across daylight-saving changes. An all-day appointment starts
and ends at local midnight of ``start_tz``; its end is exclusive (the day after its last day).

A recurring series keeps its pattern (``Recurrence``, EWS's model: pattern + range, dates local to
``start_tz``), the occurrences that were changed (``OccurrenceOverride``, keyed by original start) and the
ones that were deleted (their original starts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal

Status = Literal["confirmed", "cancelled"]
ShowAs = Literal["free", "tentative", "busy", "oof", "working_elsewhere", "unknown"]
PatternKind = Literal["Daily", "Weekly", "AbsoluteMonthly", "RelativeMonthly", "AbsoluteYearly", "RelativeYearly"]
RangeKind = Literal["NoEnd", "EndDate", "Numbered"]


@dataclass(frozen=True)
class Attendee:
    email: str
    name: str | None = None
    response: str = "unknown"  # unknown, organizer, tentative, accepted, declined, not_responded
    optional: bool = False


@dataclass(frozen=True)
class Recurrence:
    """EWS's recurrence model. ``days_of_week`` holds day names (Monday...) or Day/Weekday/WeekendDay;
    ``index`` is First..Last for relative patterns; ``month`` is January..December for yearly ones."""

    pattern: PatternKind
    interval: int = 1
    days_of_week: tuple[str, ...] = ()
    first_day_of_week: str = "Sunday"
    day_of_month: int | None = None
    index: str | None = None
    month: str | None = None
    range: RangeKind = "NoEnd"
    start_date: date | None = None
    end_date: date | None = None
    count: int | None = None


@dataclass(frozen=True)
class OccurrenceOverride:
    """A changed occurrence of a series: where it is now and what differs (None: as the series)."""

    original_start: datetime
    start: datetime
    end: datetime
    subject: str | None = None
    location: str | None = None
    cancelled: bool | None = None


@dataclass
class Appointment:
    item_id: str  # the source's id of the item (EWS ItemId, Graph event id)
    change_key: str | None
    subject: str | None
    start: datetime
    end: datetime
    start_tz: str = "UTC"
    end_tz: str = "UTC"
    all_day: bool = False
    location: str | None = None
    body: str | None = None
    organizer_email: str | None = None
    organizer_name: str | None = None
    attendees: tuple[Attendee, ...] = ()
    status: Status = "confirmed"
    private: bool = False
    show_as: ShowAs = "busy"
    categories: tuple[str, ...] = ()
    uid: str | None = None
    recurrence: Recurrence | None = None
    overrides: tuple[OccurrenceOverride, ...] = ()
    deleted_occurrences: tuple[datetime, ...] = ()
    last_modified: datetime | None = None
    # A series' end: the end of its last occurrence, so the past window applies without expanding; None for a
    # series without end (or when the source cannot say: such a series is kept). Unused for a single item.
    series_end: datetime | None = None
    # calsync's own id, what the application sees (set by the store; sources leave it None). It stays the same
    # when the source's id changes, as when an operator moves from EWS to Graph.
    app_id: str | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def is_series(self) -> bool:
        return self.recurrence is not None

    @property
    def ends_at(self) -> datetime | None:
        """When the last of it ends: the item's end, or the series' end (None: the series never ends)."""
        if self.recurrence is None:
            return self.end
        if self.series_end is None:
            return None
        return max([self.series_end, *(o.end for o in self.overrides)])


@dataclass(frozen=True)
class Occurrence:
    """One appearance of an appointment in a time range: what the calendar API returns."""

    appointment: Appointment
    start: datetime
    end: datetime
    original_start: datetime | None  # None for a single appointment
    subject: str | None
    location: str | None
    cancelled: bool
    is_exception: bool = False

"""Realistic calendars for demos, tests and benchmarks: past and future appointments, recurring series (with
moved and cancelled occurrences), all-day events, several time zones, meetings with attendees, private
items, and some items older than a 180-day window. Deterministic for a given seed.

Pre-population writes straight into the mailbox (no journal events): it describes the state a mailbox was
in before anyone subscribed, and it must be cheap enough for 10,000 mailboxes of 100 items.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta

from . import recurrence as rec
from . import timezones
from .ews.itemxml import settle
from .exchange import Exchange
from .model import Attendee, CalendarItem, Mailbox, OccurrenceChange, Person, Recurrence, new_change_key

ZONES = (
    "W. Europe Standard Time",
    "GMT Standard Time",
    "Eastern Standard Time",
    "Pacific Standard Time",
    "Tokyo Standard Time",
    "AUS Eastern Standard Time",
    "UTC",
    "India Standard Time",
)
SUBJECTS = (
    "Team sync",
    "Customer call",
    "Design review",
    "1:1",
    "Quarterly planning",
    "Lunch",
    "Dentist",
    "Budget review",
    "Sprint demo",
    "Interview",
    "Board meeting",
    "Site visit",
    "Training",
    "Retrospective",
    "Vendor meeting",
    "Release planning",
    "All hands",
    "Coffee chat",
)
LOCATIONS = (None, "Room 1.01", "Room 2.14", "Teams", "Head office", "Cafeteria", "Client site")
CATEGORIES = ((), (), ("Red category",), ("Blue category",), ("Customer",), ("Internal", "Green category"))
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")


def _local(day: date, hour: int, minute: int, tz_id: str) -> datetime:
    return datetime.combine(day, time(hour, minute), timezones.zone(tz_id)).astimezone(UTC)


def _recurrence(rng: random.Random, first_day: date) -> Recurrence:
    choice = rng.random()
    if choice < 0.25:
        pattern = rec.Pattern("Daily", interval=rng.choice((1, 1, 2)))
    elif choice < 0.6:
        days = tuple(
            sorted(
                set(rng.sample(WEEKDAYS, rng.choice((1, 1, 2)))) | {WEEKDAYS[first_day.weekday() % 5]},
                key=rec.DAY_NAMES.index,
            )
        )
        pattern = rec.Pattern("Weekly", interval=rng.choice((1, 1, 2)), days_of_week=days, first_day_of_week="Monday")
    elif choice < 0.75:
        pattern = rec.Pattern("AbsoluteMonthly", interval=1, day_of_month=first_day.day)
    elif choice < 0.9:
        pattern = rec.Pattern(
            "RelativeMonthly",
            interval=1,
            days_of_week=(rng.choice(WEEKDAYS),),
            day_of_week_index=rng.choice(("First", "Second", "Last")),
        )
    else:
        pattern = rec.Pattern(
            "AbsoluteYearly", day_of_month=min(first_day.day, 28), month=rec.MONTHS[first_day.month - 1]
        )
    end = rng.random()
    if end < 0.4:
        range_ = rec.Range("NoEnd", first_day)
    elif end < 0.7:
        range_ = rec.Range("Numbered", first_day, count=rng.randint(3, 40))
    else:
        range_ = rec.Range("EndDate", first_day, end_date=first_day + timedelta(days=rng.randint(30, 400)))
    try:
        rec.validate(pattern, range_)
    except rec.RecurrenceError:
        range_ = rec.Range("NoEnd", first_day)
    return Recurrence(pattern, range_)


def make_item(
    exchange: Exchange,
    mbx: Mailbox,
    rng: random.Random,
    now: datetime,
    colleagues: list[Mailbox],
    window_days: int = 180,
) -> CalendarItem:
    tz_id = rng.choice(ZONES) if rng.random() < 0.4 else ZONES[0]
    roll = rng.random()
    if roll < 0.1:
        offset = -rng.randint(window_days + 1, window_days + 400)  # older than the window
    elif roll < 0.45:
        offset = -rng.randint(0, window_days)
    else:
        offset = rng.randint(0, 365)
    day = (now + timedelta(days=offset)).date()
    item = exchange.new_item(mbx)
    item.start_tz = item.end_tz = tz_id
    item.subject = rng.choice(SUBJECTS)
    item.location = rng.choice(LOCATIONS)
    item.categories = rng.choice(CATEGORIES)
    item.created = item.modified = now
    if rng.random() < 0.3:
        item.body = ("Text", f"Agenda for {item.subject.lower()}: review, decisions, next steps.")
    kind = rng.random()
    if kind < 0.1:
        item.is_all_day = True
        item.start = _local(day, 0, 0, tz_id)
        item.end = _local(day + timedelta(days=rng.choice((1, 1, 1, 2, 3))), 0, 0, tz_id)
        item.fb_status = rng.choice(("Free", "OOF"))
        item.reminder_is_set = False
    else:
        hour, minute = rng.randint(7, 17), rng.choice((0, 0, 15, 30, 45))
        item.start = _local(day, hour, minute, tz_id)
        item.end = item.start + timedelta(minutes=rng.choice((15, 30, 30, 45, 60, 60, 90, 120)))
    if rng.random() < 0.08:
        item.sensitivity = "Private"
    if rng.random() < 0.3:
        people = rng.sample(colleagues, min(len(colleagues), rng.randint(1, 3))) if colleagues else []
        item.required = tuple(
            Attendee(p.display_name, p.address, rng.choice(("Accept", "Tentative", "NoResponseReceived", "Decline")))
            for p in people
        )
        if rng.random() < 0.5:
            item.optional = (Attendee("Guest Partner", f"guest{rng.randint(1, 99)}@partner.example", "Unknown"),)
        item.meeting_request_was_sent = bool(item.required or item.optional)
        if rng.random() < 0.05:
            item.is_cancelled = True
            item.subject = f"Canceled: {item.subject}"
    if not item.is_all_day and rng.random() < 0.2:
        local_day = item.start.astimezone(timezones.zone(tz_id)).date()
        item.recurrence = _recurrence(rng, local_day)
        settle(item, creating=True)
        if rng.random() < 0.5:
            _add_exceptions(item, rng, now)
    else:
        settle(item, creating=True)
    item.organizer = Person(mbx.display_name, mbx.address)
    return item


def _add_exceptions(item: CalendarItem, rng: random.Random, now: datetime) -> None:
    occurrences = item.occurrences(now - timedelta(days=30), now + timedelta(days=120))[:12]
    for occ in occurrences:
        roll = rng.random()
        if roll < 0.15:
            item.deleted = item.deleted | {occ.index}
        elif roll < 0.3:
            shift = timedelta(hours=rng.choice((-2, -1, 1, 2, 24)))
            item.exceptions[occ.index] = OccurrenceChange(
                {"start": occ.start + shift, "end": occ.end + shift, "location": "Moved: Room 3.02"},
                new_change_key(),
                now,
            )


def populate(
    exchange: Exchange,
    mbx: Mailbox,
    count: int,
    seed: int = 0,
    now: datetime | None = None,
    colleagues: list[Mailbox] | None = None,
) -> list[CalendarItem]:
    """Add ``count`` appointments to a mailbox's calendar (deterministic for ``seed``)."""
    rng = random.Random(f"{seed}:{mbx.address}")
    now = now or exchange.now()
    others = [m for m in (colleagues or []) if m is not mbx]
    made = []
    with exchange.lock:
        folder = mbx.calendar
        for _ in range(count):
            item = make_item(exchange, mbx, rng, now, others)
            item.seq = mbx.next_seq()
            folder.items[item.number] = item
            made.append(item)
    return made

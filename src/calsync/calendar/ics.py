"""iCalendar (RFC 5545) export of the application calendar.

This module owns the mapping of :class:`~calsync.calendar.model.Appointment` to VEVENTs: one per
appointment (a series as DTSTART at its first slot + RRULE + EXDATE), one more per override (same UID,
RECURRENCE-ID), and the VTIMEZONEs of the zones used. Recurrence rules come from
:mod:`calsync.calendar.expand`, so an RFC 5545 expansion of the output agrees with :func:`expand.occurrences`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from icalendar import Calendar, Event, vCalAddress

from .expand import Series, zone_for
from .model import Appointment, Attendee, OccurrenceOverride

__all__ = ["PRODID", "to_ics"]

log = logging.getLogger(__name__)

PRODID = "-//calsync//calsync calendar export//EN"
_PARTSTAT = {"accepted": "ACCEPTED", "declined": "DECLINED", "tentative": "TENTATIVE"}
_TZ_YEARS_AHEAD = 10  # VTIMEZONE transitions are written up to this many years after the last date used


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _when(dt: datetime, tz: tzinfo, all_day: bool) -> date | datetime:
    """A DATE (local day) for all-day appointments, else the time in tz (written with TZID, or Z for UTC)."""
    local = _utc(dt).astimezone(tz)
    return local.date() if all_day else local


def _address(email: str, name: str | None) -> vCalAddress:
    address = vCalAddress(f"mailto:{email}")
    if name:
        address.params["CN"] = name
    return address


def _attendee(attendee: Attendee) -> vCalAddress:
    address = _address(attendee.email, attendee.name)
    address.params["PARTSTAT"] = _PARTSTAT.get(attendee.response, "NEEDS-ACTION")
    address.params["ROLE"] = "OPT-PARTICIPANT" if attendee.optional else "REQ-PARTICIPANT"
    return address


def _event(app: Appointment, stamp: datetime, start: date | datetime, end: date | datetime, **props: Any) -> Event:
    """A VEVENT with the properties a series and its overrides share, then `props` (None values skipped)."""
    event = Event()
    event.add("uid", app.uid or app.item_id)
    event.add("dtstamp", stamp)
    event.add("dtstart", start)
    event.add("dtend", end)
    if app.last_modified is not None:
        event.add("last-modified", _utc(app.last_modified))
    if app.body:
        event.add("description", app.body)
    if app.private:
        event.add("class", "PRIVATE")
    event.add("transp", "TRANSPARENT" if app.show_as == "free" else "OPAQUE")
    if app.categories:
        event.add("categories", list(app.categories))
    if app.organizer_email:
        event.add("organizer", _address(app.organizer_email, app.organizer_name))
    for attendee in app.attendees:
        event.add("attendee", _attendee(attendee))
    for name, value in props.items():
        if value is not None:
            event.add(name.replace("_", "-"), value)
    return event


def _status(cancelled: bool) -> str:
    return "CANCELLED" if cancelled else "CONFIRMED"


def _rrule(series: Series) -> dict[str, Any]:
    p = series.pattern
    rule: dict[str, Any] = {"FREQ": p.freq}
    if p.interval != 1:
        rule["INTERVAL"] = p.interval
    if series.count is not None:
        rule["COUNT"] = series.count
    elif series.until is not None:  # inclusive last local date: UTC for a TZID start (RFC 5545 3.3.10)
        last = datetime.combine(series.until, time(23, 59, 59), tzinfo=series.tz).astimezone(UTC)
        rule["UNTIL"] = series.until if series.appointment.all_day else last
    for key, values in (("BYDAY", p.byday), ("BYMONTHDAY", p.bymonthday), ("BYMONTH", p.bymonth)):
        if values:
            rule[key] = list(values)
    if p.bysetpos:
        rule["BYSETPOS"] = list(p.bysetpos)
    if p.freq == "WEEKLY":
        rule["WKST"] = p.wkst
    return rule


def _single_events(app: Appointment, stamp: datetime) -> Iterator[Event]:
    tz = zone_for(app.start_tz)
    end_tz = tz if app.all_day else zone_for(app.end_tz)
    start, end = _when(app.start, tz, app.all_day), _when(app.end, end_tz, app.all_day)
    yield _event(app, stamp, start, end, **_texts(app.subject, app.location, app.status == "cancelled"))


def _texts(subject: str | None, location: str | None, cancelled: bool) -> dict[str, Any]:
    return {"summary": subject, "location": location, "status": _status(cancelled)}


def _series_events(app: Appointment, stamp: datetime) -> Iterator[Event]:
    series = Series.of(app)
    first = series.first_start()
    if first is None:  # the range holds no occurrence: nothing to show
        return
    tz, all_day = series.tz, app.all_day
    end_tz = tz if all_day else zone_for(app.end_tz)
    cancelled = app.status == "cancelled"
    deleted = sorted({_utc(d) for d in app.deleted_occurrences})
    master = _event(
        app,
        stamp,
        _when(first, tz, all_day),
        _when(series.end_of(first), end_tz, all_day),
        **_texts(app.subject, app.location, cancelled),
        rrule=_rrule(series),
    )
    if deleted:
        master.add("exdate", [_when(d, tz, all_day) for d in deleted])
    yield master
    for original, o in sorted((_utc(o.original_start), o) for o in app.overrides):
        if original not in deleted and series.contains(original):
            yield _override_event(app, stamp, series, original, o, end_tz)


def _override_event(
    app: Appointment, stamp: datetime, series: Series, original: datetime, o: OccurrenceOverride, end_tz: tzinfo
) -> Event:
    tz, all_day = series.tz, app.all_day
    subject = app.subject if o.subject is None else o.subject
    location = app.location if o.location is None else o.location
    texts = _texts(subject, location, (app.status == "cancelled") if o.cancelled is None else o.cancelled)
    start, end = _when(o.start, tz, all_day), _when(o.end, end_tz, all_day)
    return _event(app, stamp, start, end, recurrence_id=_when(original, tz, all_day), **texts)


def _dates(event: Event) -> Iterator[date]:
    for name in ("dtstart", "dtend", "recurrence-id"):
        if name in event:
            value = event.decoded(name)
            yield value.date() if isinstance(value, datetime) else value


def to_ics(appointments: Iterable[Appointment], *, calendar_name: str, now: datetime | None = None) -> bytes:
    """The appointments as an iCalendar file (UTF-8, CRLF). `now` is the DTSTAMP (default: the current time)."""
    stamp = _utc(now or datetime.now(UTC)).replace(microsecond=0)
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("name", calendar_name)
    cal.add("x-wr-calname", calendar_name)
    days = [stamp.date()]
    for app in appointments:
        try:
            found = list(_series_events(app, stamp) if app.is_series else _single_events(app, stamp))
        except OverflowError:  # an occurrence (or its end) near year 9999 cannot be represented
            log.warning("appointment %r is out of the representable date range; not exported", app.item_id)
            continue
        for event in found:
            cal.add_component(event)
            days.extend(_dates(event))
    first = date(min(days).year, 1, 1)
    last = date(min(max(days).year + _TZ_YEARS_AHEAD, 9998), 1, 1)
    cal.add_missing_timezones(first_date=first, last_date=max(last, first + timedelta(days=366)))
    return cal.to_ical()

"""The EWS source: Exchange Server 2010-2019 (and Exchange Online until its EWS is switched off), spoken
through exchangelib with a service account that impersonates each operator's mailbox.

What one sync page costs
    ``changes()`` reads a mailbox's calendar page by page. Each page is one ``SyncFolderItems`` (shape
    ``IdOnly``, no additional fields: ids and change keys only, ``MaxChangesReturned`` = batch size), then
    ONE ``GetItem`` for every item created or changed in the page, with just the fields the mapping needs,
    and — only when a fetched series has modified occurrences — ONE more ``GetItem`` for those exceptions.
    So a page costs 1 request when it only deletes, 2 when it has no exceptions, 3 at most; ``ChangePage.requests``
    says which. Read-flag changes are ignored; items that are not calendar items are skipped; an item
    that was created or changed and then deleted before the ``GetItem`` (``ErrorItemNotFound``) is a delete.
    A page whose sync state did not move, held nothing and still says "more to come" is reported as
    ``done`` (exchangelib's own loop stops there too), so a confused server cannot make a pass spin.

Mapping (``to_appointment``, ``exception_override``)
    Times are aware UTC datetimes; ``start_tz``/``end_tz`` are the Windows zone ids exactly as Exchange sent
    them. An all-day item runs from local midnight of its first day to local midnight of the day after its
    last day (exclusive end) in its start/end zones, which is what Exchange stores. A series keeps Exchange's
    pattern and range (``Recurrence``: day names, ``Day``/``Weekday``/``WeekendDay``, ``First``..``Last``, month
    names), its modified occurrences as ``OccurrenceOverride`` (subject/location/cancelled only where they
    differ from the series, else None) and its deleted occurrences as their original UTC starts.
    ``extra["series_end"]`` is the end of the last occurrence (the later of Exchange's ``LastOccurrence`` and any
    moved exception; None for a series without end; the item's own end for a single item), so the engine can
    apply the past window without expanding. ``extra["body_type"]`` is ``Text`` or ``HTML``: the body is kept
    as Exchange gave it. ``extra["item_type"]`` is ``Single`` or ``RecurringMaster``.

exchangelib shortcomings worked around here
    - It turns all-day Start/End into dates, subtracting 24 hours from End first: wrong on a day of 23 hours
      (an all-day item on the day clocks go forward ends "the day before it starts"). It also needs the time
      zone fields to do even that. The GetItem used here keeps the instants and the zone ids as sent.
    - It parses a recurrence ``StartDate``/``EndDate`` without offset (``2026-12-01``) as local midnight of the
      machine running calsync, converted to UTC: the date is recovered in that same local zone.
    - ``account.fetch()`` and ``account.calendar`` first read the folder hierarchy (GetFolder) per account, and
      GetItem is cut into chunks of 100; the services are called directly with the distinguished ``calendar``
      folder id, so nothing is sent that the page does not need.
    - With the fail-fast policy it re-raises a 503, a dropped connection or a timeout as ``ErrorServerBusy``
      with a back-off of its own (10 s) that Exchange never asked for, and ignores ``Retry-After``. ``classify()``
      follows the exception chain back to what happened and reports only a back-off Exchange asked for.
    - At DEBUG level it logs each request's headers, ``Authorization`` included: that header is redacted.

Errors
    Every failure leaves as :class:`~calsync.sources.base.SourceError` (see ``classify``); messages name the
    mailbox when there is one and never contain the password.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import requests
from exchangelib import (
    BASIC,
    IMPERSONATION,
    NTLM,
    OAUTH2,
    Account,
    Build,
    Configuration,
    Credentials,
    OAuth2Credentials,
    Version,
)
from exchangelib import errors as xerr
from exchangelib.ewsdatetime import EWSTimeZone
from exchangelib.fields import MONTHS, WEEK_NUMBERS, WEEKDAYS, FieldPath
from exchangelib.items import ID_ONLY, CalendarItem
from exchangelib.properties import DistinguishedFolderId, HTMLBody, ItemId, Mailbox
from exchangelib.protocol import FailFast
from exchangelib.recurrence import (
    AbsoluteMonthlyPattern,
    AbsoluteYearlyPattern,
    DailyPattern,
    EndDatePattern,
    NoEndPattern,
    NumberedPattern,
    RelativeMonthlyPattern,
    RelativeYearlyPattern,
    WeeklyPattern,
)
from exchangelib.services import GetFolder, GetItem, SubscribeToPush, SyncFolderItems
from exchangelib.util import TNS

from calsync.calendar.expand import zone_for
from calsync.calendar.model import Appointment, Attendee, OccurrenceOverride, Recurrence, ShowAs

from .base import ChangePage, MailboxCheck, Source, SourceError, SourceStats, Subscription

__all__ = ["BUILDS", "EwsSource", "RawTimes", "classify", "exception_override", "to_appointment"]

log = logging.getLogger(__name__)

# The server build each ExchangeVersion setting stands for (exchangelib derives RequestServerVersion from it).
BUILDS: dict[str, Build] = {
    "Exchange2010": Build(14, 3, 123, 4),  # 2010 SP3: RequestServerVersion Exchange2010_SP2
    "Exchange2013": Build(15, 0, 1497, 2),  # 2013 CU23: Exchange2013_SP1
    "Exchange2016": Build(15, 1, 2507, 6),  # Exchange2016
    "Exchange2019": Build(15, 2, 1118, 7),  # Exchange2016 (2019 speaks the 2016 schema)
    "Exchange365": Build(15, 20, 0, 0),  # Exchange Online: Exchange2016
}
AUTH_TYPES = {"basic": BASIC, "ntlm": NTLM}
MAX_BATCH = 512  # MaxChangesReturned allowed by Exchange (exchangelib does not check it)
# Calendar events worth a push; NewMail and FreeBusyChanged say nothing a calendar sync needs.
PUSH_EVENT_TYPES = ("CopiedEvent", "CreatedEvent", "DeletedEvent", "ModifiedEvent", "MovedEvent")

_UTC_EWS = EWSTimeZone("UTC")
# exchangelib keeps these enums as 1-based indexes into its own tuples: Monday..Sunday, Day, Weekday, WeekendDay;
# First..Last; January..December.
_DAY_NAMES: tuple[str, ...] = tuple(WEEKDAYS)
_INDEXES: tuple[str, ...] = tuple(WEEK_NUMBERS)
_MONTHS: tuple[str, ...] = tuple(MONTHS)
_RESPONSES = {
    "Accept": "accepted",
    "Decline": "declined",
    "Tentative": "tentative",
    "Organizer": "organizer",
    "NoResponseReceived": "not_responded",
    "Unknown": "unknown",
}
_SHOW_AS: dict[str, ShowAs] = {
    "Free": "free",
    "Tentative": "tentative",
    "Busy": "busy",
    "OOF": "oof",
    "WorkingElsewhere": "working_elsewhere",
}

# What the mapping reads from a single item or a series master, and from an exception.
ITEM_FIELDS = (
    *("subject", "body", "sensitivity", "categories", "last_modified_time", "uid", "start", "end", "is_all_day"),
    *("legacy_free_busy_status", "location", "is_cancelled", "type", "organizer", "required_attendees"),
    *("optional_attendees", "recurrence", "last_occurrence", "modified_occurrences", "deleted_occurrences"),
    *("_start_timezone", "_end_timezone"),
)
EXCEPTION_FIELDS = (
    *("subject", "location", "is_cancelled", "start", "end", "original_start", "is_all_day"),
    *("_start_timezone", "_end_timezone"),
)


def _field_paths(names: Iterable[str]) -> set[Any]:
    return {FieldPath(field=CalendarItem.get_field_by_fieldname(name)) for name in names}


# --- what exchangelib loses -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawTimes:
    """Start/End instants and zone ids of a ``t:CalendarItem`` exactly as Exchange sent them."""

    start: datetime | None = None
    end: datetime | None = None
    start_tz: str | None = None
    end_tz: str | None = None


def _parse_instant(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return (value.replace(tzinfo=UTC) if value.tzinfo is None else value).astimezone(UTC)


def _raw_times(elem: Any) -> RawTimes:
    def zone_id(tag: str, attr: str = "Id") -> str | None:
        found = elem.find(f"{{{TNS}}}{tag}")
        return None if found is None else (found.get(attr) or found.get("Name") or None)

    meeting = zone_id("MeetingTimeZone", "TimeZoneName")  # Exchange 2007-style answers
    return RawTimes(
        start=_parse_instant(elem.findtext(f"{{{TNS}}}Start")),
        end=_parse_instant(elem.findtext(f"{{{TNS}}}End")),
        start_tz=zone_id("StartTimeZone") or meeting,
        end_tz=zone_id("EndTimeZone") or meeting,
    )


class _GetCalendarItems(GetItem):
    """GetItem that yields ``(item, RawTimes)`` pairs (or the per-item error), in request order."""

    def _elem_to_obj(self, elem: Any) -> tuple[Any, RawTimes]:
        raw = _raw_times(elem)  # first: exchangelib clears the element once it has parsed it
        return super()._elem_to_obj(elem), raw


class _GetFolderIds(GetFolder):
    """GetFolder for distinguished folder ids: exchangelib can only parse folders it already holds objects for."""

    def _elems_to_objs(self, elems: Iterable[Any]) -> Iterator[Any]:
        yield from elems


class _FailFast(FailFast):
    """exchangelib's fail-fast policy, remembering a 503's ``Retry-After`` on the exception it raises."""

    def raise_response_errors(self, response: Any) -> None:
        try:
            super().raise_response_errors(response)
        except xerr.ErrorInternalServerTransientError as exc:
            if response.status_code != 503:
                raise
            raise _ServiceUnavailable(str(exc), _retry_after(response)) from None


class _ServiceUnavailable(xerr.ErrorInternalServerTransientError):
    def __init__(self, value: str, retry_after: float | None) -> None:
        super().__init__(value)
        self.retry_after = retry_after


def _retry_after(response: Any) -> float | None:
    try:
        seconds = float(response.headers.get("Retry-After", ""))
    except (TypeError, ValueError):
        return None
    return seconds if seconds > 0 else None


class _RedactAuthorization(logging.Filter):
    """exchangelib logs request headers at DEBUG level; never let an Authorization header through."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, Mapping) and "request_headers" in args:
            headers = args.get("request_headers")
            if isinstance(headers, Mapping) and any(str(k).lower() == "authorization" for k in headers):
                redacted = {k: ("[redacted]" if str(k).lower() == "authorization" else v) for k, v in headers.items()}
                record.args = {**args, "request_headers": redacted}
        return True


_redactor = _RedactAuthorization()
for _logger in ("exchangelib.util", "exchangelib.protocol", "exchangelib.services.common"):
    if _redactor not in logging.getLogger(_logger).filters:
        logging.getLogger(_logger).addFilter(_redactor)


# --- mapping ---------------------------------------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    """A plain aware UTC datetime (exchangelib's EWSDateTime/EWSTimeZone left behind)."""
    v = value
    plain = datetime(v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, tzinfo=v.tzinfo, fold=v.fold)
    return plain.replace(tzinfo=UTC) if plain.tzinfo is None else plain.astimezone(UTC)


def _local_midnight(day: date, tz_id: str) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone_for(tz_id)).astimezone(UTC)


def _zone_id(raw: str | None, tz: Any) -> str:
    if raw:
        return raw
    ms_id = getattr(tz, "ms_id", None)
    return str(ms_id) if ms_id else "UTC"


def _as_date(value: Any) -> date | None:
    """A recurrence StartDate/EndDate. exchangelib parses an offset-less date as local midnight of this machine
    converted to UTC; converting back to the local zone gives the date that was sent."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return _utc(value).astimezone().date()
    if isinstance(value, date):
        return date(value.year, value.month, value.day)
    return None


def _name(value: Any, names: Sequence[str]) -> str | None:
    """exchangelib keeps enums as 1-based numbers (or the name, for values set in code)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value if value in names else None
    try:
        return names[int(value) - 1]
    except (IndexError, TypeError, ValueError):
        return None


def _recurrence(rec: Any, fallback_start: date) -> Recurrence | None:
    pattern, boundary = getattr(rec, "pattern", None), getattr(rec, "boundary", None)
    start_date = _as_date(getattr(boundary, "start", None)) or fallback_start
    kwargs: dict[str, Any] = {"start_date": start_date}
    if isinstance(boundary, EndDatePattern):
        kwargs.update(range="EndDate", end_date=_as_date(boundary.end))
    elif isinstance(boundary, NumberedPattern):
        kwargs.update(range="Numbered", count=boundary.number)
    elif isinstance(boundary, NoEndPattern) or boundary is None:
        kwargs.update(range="NoEnd")
    if isinstance(pattern, DailyPattern):
        return Recurrence("Daily", interval=pattern.interval or 1, **kwargs)
    if isinstance(pattern, WeeklyPattern):
        days = tuple(d for d in (_name(v, _DAY_NAMES[:7]) for v in pattern.weekdays or ()) if d)
        first = _name(pattern.first_day_of_week, _DAY_NAMES[:7]) or "Monday"
        return Recurrence(
            "Weekly", interval=pattern.interval or 1, days_of_week=days, first_day_of_week=first, **kwargs
        )
    if isinstance(pattern, AbsoluteMonthlyPattern):
        return Recurrence(
            "AbsoluteMonthly", interval=pattern.interval or 1, day_of_month=pattern.day_of_month, **kwargs
        )
    if isinstance(pattern, RelativeMonthlyPattern):
        day = _name(pattern.weekday, _DAY_NAMES)
        return Recurrence(
            "RelativeMonthly",
            interval=pattern.interval or 1,
            days_of_week=(day,) if day else (),
            index=_name(pattern.week_number, _INDEXES),
            **kwargs,
        )
    if isinstance(pattern, AbsoluteYearlyPattern):
        return Recurrence(
            "AbsoluteYearly", day_of_month=pattern.day_of_month, month=_name(pattern.month, _MONTHS), **kwargs
        )
    if isinstance(pattern, RelativeYearlyPattern):
        day = _name(pattern.weekday, _DAY_NAMES)
        return Recurrence(
            "RelativeYearly",
            days_of_week=(day,) if day else (),
            index=_name(pattern.week_number, _INDEXES),
            month=_name(pattern.month, _MONTHS),
            **kwargs,
        )
    return None


def _times(item: Any, raw: RawTimes | None) -> tuple[datetime, datetime, str, str]:
    """UTC start and end, and the Windows zone ids, of an item or an exception."""
    raw = raw or RawTimes()
    start_tz = _zone_id(raw.start_tz, getattr(item, "_start_timezone", None))
    end_tz = _zone_id(raw.end_tz, getattr(item, "_end_timezone", None))
    start, end = raw.start, raw.end
    if start is None or end is None:
        s, e = item.start, item.end
        if getattr(item, "is_all_day", False) and not isinstance(s, datetime) and isinstance(s, date):
            # exchangelib's dates: the first day, and the LAST day (inclusive). The end is midnight after it.
            start = start or _local_midnight(s, start_tz)
            end = end or _local_midnight(e + timedelta(days=1), end_tz)
        else:
            start = start or _utc(s)
            end = end or _utc(e)
    return _utc(start), _utc(end), start_tz, end_tz


def _attendee(att: Any, optional: bool) -> Attendee | None:
    mailbox = getattr(att, "mailbox", None)
    email = getattr(mailbox, "email_address", None)
    if not email:
        return None
    return Attendee(
        email=email,
        name=getattr(mailbox, "name", None),
        response=_RESPONSES.get(getattr(att, "response_type", None) or "Unknown", "unknown"),
        optional=optional,
    )


def exception_override(occ: Any, master: Any | None = None, *, raw: RawTimes | None = None) -> OccurrenceOverride:
    """A modified occurrence as an override of its series.

    ``occ`` is either the exception fetched with GetItem (a CalendarItem with ``original_start``) or an entry of
    the master's ``ModifiedOccurrences`` (start, end, original start only). Subject, location and cancelled are
    set only where the exception differs from ``master`` (without a master: as the exception has them)."""
    if isinstance(occ, CalendarItem):
        start, end, _, _ = _times(occ, raw)
    else:
        start, end = _utc(occ.start), _utc(occ.end)
    original = occ.original_start or start

    def differs(name: str) -> Any:
        if not hasattr(occ, name) or not isinstance(occ, CalendarItem):
            return None
        value = getattr(occ, name)
        return None if master is not None and value == getattr(master, name, None) else value

    cancelled = differs("is_cancelled")
    return OccurrenceOverride(
        original_start=_utc(original),
        start=start,
        end=end,
        subject=differs("subject"),
        location=differs("location"),
        cancelled=None if cancelled is None else bool(cancelled),
    )


def to_appointment(
    item: Any, *, raw: RawTimes | None = None, overrides: Sequence[OccurrenceOverride] | None = None
) -> Appointment:
    """An exchangelib CalendarItem (single item or series master) as the application's Appointment.

    ``raw`` (from the GetItem used by ``EwsSource``) gives the exact instants and zone ids; without it the
    item's own fields are used. ``overrides`` replaces the overrides read from the master's
    ``ModifiedOccurrences`` (which know times only) with fuller ones made by ``exception_override``."""
    start, end, start_tz, end_tz = _times(item, raw)
    all_day = bool(item.is_all_day)
    recurrence = None
    extra: dict[str, object] = {
        "item_type": item.type or ("RecurringMaster" if item.recurrence else "Single"),
        "body_type": "HTML" if isinstance(item.body, HTMLBody) else "Text",
    }
    if item.recurrence is not None:
        recurrence = _recurrence(item.recurrence, start.astimezone(zone_for(start_tz)).date())
        if recurrence is None:
            log.warning(
                "item %s: recurrence pattern %r is not supported; kept as a single item", item.id, item.recurrence
            )
            extra["unsupported_recurrence"] = str(item.recurrence)
    if overrides is None:
        overrides = [exception_override(o) for o in item.modified_occurrences or ()] if recurrence else []
    deleted = tuple(sorted(_utc(d.start) for d in item.deleted_occurrences or () if d.start)) if recurrence else ()
    organizer = item.organizer
    attendees = [_attendee(a, False) for a in item.required_attendees or ()]
    attendees += [_attendee(a, True) for a in item.optional_attendees or ()]
    appointment = Appointment(
        item_id=item.id,
        change_key=item.changekey,
        subject=item.subject,
        start=start,
        end=end,
        start_tz=start_tz,
        end_tz=end_tz,
        all_day=all_day,
        location=item.location,
        body=None if item.body is None else str(item.body),
        organizer_email=getattr(organizer, "email_address", None),
        organizer_name=getattr(organizer, "name", None),
        attendees=tuple(a for a in attendees if a is not None),
        status="cancelled" if item.is_cancelled else "confirmed",
        private=item.sensitivity in ("Private", "Confidential"),
        show_as=_SHOW_AS.get(item.legacy_free_busy_status or "", "unknown"),
        categories=tuple(item.categories or ()),
        uid=item.uid,
        recurrence=recurrence,
        overrides=tuple(sorted(overrides, key=lambda o: o.original_start)) if recurrence else (),
        deleted_occurrences=deleted,
        last_modified=None if item.last_modified_time is None else _utc(item.last_modified_time),
        extra=extra,
    )
    extra["series_end"] = _series_end(appointment, item)
    return appointment


def _series_end(app: Appointment, item: Any) -> datetime | None:
    rec = app.recurrence
    if rec is None:
        return app.end
    if rec.range == "NoEnd":
        return None
    ends = [o.end for o in app.overrides]
    last = getattr(item, "last_occurrence", None)
    if last is not None and last.end is not None:
        ends.append(_utc(last.end))
    elif rec.range == "EndDate" and rec.end_date is not None:
        # No LastOccurrence: an upper bound, the series' length after midnight ending its last possible day.
        ends.append(_local_midnight(rec.end_date + timedelta(days=1), app.start_tz) + (app.end - app.start))
    else:
        return None  # Numbered without LastOccurrence: unknown, so treated as never ending (kept, not dropped)
    return max(ends)


def _overrides(master: Any, exceptions: Mapping[str, tuple[Any, RawTimes]]) -> list[OccurrenceOverride] | None:
    """The overrides of a fetched series: each modified occurrence as fetched (else as the master lists it),
    keyed by the original start the master's ModifiedOccurrences gives."""
    if master.recurrence is None or not master.modified_occurrences:
        return None
    out = []
    for modified in master.modified_occurrences:
        occ, occ_raw = exceptions.get(modified.id, (None, None))
        override = exception_override(occ, master, raw=occ_raw) if occ is not None else exception_override(modified)
        if modified.original_start is not None:
            override = replace(override, original_start=_utc(modified.original_start))
        out.append(override)
    return out


# --- errors ----------------------------------------------------------------------------------------------------

_CONNECTION_ERRORS = (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError, ConnectionError)
_TIMEOUTS = (requests.exceptions.Timeout, TimeoutError)


def _unwrap(exc: BaseException) -> BaseException:
    """exchangelib re-raises 503s, transient errors and lost connections as ``ErrorServerBusy('Reraised from
    ...')``, and connection errors as ``ErrorTimeoutExpired('Reraised from ...')``: the original is in the chain."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = exc.__cause__ or exc.__context__
        if inner is None or not str(exc).startswith("Reraised from"):
            return exc
        if not isinstance(exc, xerr.ErrorServerBusy | xerr.ErrorTimeoutExpired):
            return exc
        exc = inner
    return exc


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


def classify(exc: BaseException, *, mailbox: str | None = None, secrets: Iterable[str] = ()) -> SourceError:
    """What a failure talking to Exchange means for the caller, as a SourceError (see its ``kind``).

    ``mailbox`` is named in the message when given; every string in ``secrets`` (the password, ...) is
    replaced by ``***`` in the message."""
    secrets = tuple(secrets)

    def error(kind: Any, code: str, message: str, back_off: float | None = None) -> SourceError:
        return SourceError(kind, code, _scrub(message, secrets), back_off=back_off)

    if isinstance(exc, SourceError):
        return error(exc.kind, exc.code, exc.message, exc.back_off)
    who = f" for {mailbox}" if mailbox else ""
    cause = _unwrap(exc)
    name = type(cause).__name__
    detail = str(cause)[:300]
    if isinstance(cause, xerr.ErrorServerBusy):
        back_off = cause.back_off if cause.back_off and cause.back_off > 0 else None
        wait = f"; it asked to wait {back_off:g} s" if back_off else ""
        return error(
            "transient",
            "server_busy",
            f"Exchange is busy and refused the request{who}{wait} (ErrorServerBusy).",
            back_off,
        )
    if isinstance(cause, _ServiceUnavailable):
        return error(
            "transient",
            "service_unavailable",
            f"Exchange answered 503 Service Unavailable{who}.",
            cause.retry_after,
        )
    if isinstance(cause, xerr.ErrorTimeoutExpired):
        inner = cause.__cause__ or cause.__context__
        if isinstance(inner, _TIMEOUTS):
            return error("transient", "timeout", f"Exchange did not answer in time{who} ({type(inner).__name__}).")
        if isinstance(inner, _CONNECTION_ERRORS):
            return error(
                "transient",
                "connection_failed",
                f"The connection to Exchange broke{who} ({type(inner).__name__}: {str(inner)[:200]}).",
            )
        return error("transient", "timeout", f"Exchange timed out{who} (ErrorTimeoutExpired: {detail}).")
    if isinstance(cause, _TIMEOUTS):
        return error("transient", "timeout", f"Exchange did not answer in time{who} ({name}).")
    if isinstance(cause, _CONNECTION_ERRORS):
        return error("transient", "connection_failed", f"Could not talk to Exchange{who} ({name}: {detail}).")
    the_mailbox = f"the mailbox {mailbox}" if mailbox else "the mailbox"
    if isinstance(cause, xerr.ErrorMailboxMoveInProgress):
        return error("transient", "mailbox_move_in_progress", f"Exchange is moving {the_mailbox} to another database.")
    if isinstance(cause, xerr.ErrorMailboxStoreUnavailable):
        return error("transient", "mailbox_store_unavailable", f"The database holding {the_mailbox} is not available.")
    if isinstance(
        cause,
        xerr.ErrorInternalServerTransientError
        | xerr.ErrorConnectionFailedTransientError
        | xerr.ErrorTooManyObjectsOpened
        | xerr.CASError,
    ):
        return error("transient", "server_error", f"Exchange reported a temporary failure{who} ({name}: {detail}).")
    if isinstance(cause, xerr.UnauthorizedError):
        return error(
            "permanent",
            "credentials_rejected",
            "Exchange rejected the service account's user name or password (HTTP 401); "
            "check the EWS credentials in the settings.",
        )
    if isinstance(cause, xerr.ErrorNonExistentMailbox | xerr.ErrorNameResolutionNoResults):
        target = mailbox or "the address"
        return error("permanent", "mailbox_not_found", f"{target} is not a mailbox on this Exchange server ({name}).")
    if isinstance(cause, xerr.ErrorImpersonateUserDenied):
        target = mailbox or "this mailbox"
        return error(
            "permanent",
            "impersonation_denied",
            f"The service account may not impersonate {target}: it needs the ApplicationImpersonation role "
            "for this mailbox (ask an Exchange administrator).",
        )
    if isinstance(cause, xerr.ErrorAccessDenied):
        target = mailbox or "the mailbox"
        return error("permanent", "access_denied", f"Exchange denied the service account access to {target}: {detail}")
    if isinstance(cause, xerr.ErrorInvalidSyncStateData):
        return error(
            "sync_state_invalid",
            "sync_state_expired",
            f"Exchange no longer accepts the stored sync state{who}; the calendar must be read again in full.",
        )
    if isinstance(cause, xerr.ErrorInvalidWatermark):
        return error(
            "watermark_invalid",
            "watermark_expired",
            f"Exchange no longer accepts the stored watermark{who}; a new subscription is needed.",
        )
    return error("transient", "exchange_error", f"Unexpected failure talking to Exchange{who}: {name}: {detail}")


# --- the source ------------------------------------------------------------------------------------------------


class EwsSource(Source):
    """Exchange through EWS with an impersonating service account. Thread-safe: one instance serves every
    worker thread; connections are pooled (``max_connections``) and one exchangelib Account kept per mailbox."""

    name = "ews"

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        *,
        version: str = "Exchange2016",
        auth_type: str = "basic",
        max_connections: int = 8,
        timeout: float = 30.0,
        oauth: tuple[str, str, str] | None = None,
    ) -> None:
        """``oauth`` = (tenant id, client id, client secret) for auth_type "oauth": OAuth 2 client credentials
        (Exchange Online application impersonation); username and password are then unused."""
        if version not in BUILDS:
            raise ValueError(f"version: '{version}' is not supported; allowed: {', '.join(BUILDS)}")
        if auth_type.lower() not in (*AUTH_TYPES, "oauth"):
            raise ValueError(f"auth_type: '{auth_type}' is not supported; allowed: {', '.join(AUTH_TYPES)}, oauth")
        if auth_type.lower() == "oauth" and oauth is None:
            raise ValueError("auth_type oauth needs oauth=(tenant id, client id, client secret)")
        if max_connections < 1:
            raise ValueError(f"max_connections: must be at least 1, got {max_connections}")
        if timeout <= 0:
            raise ValueError(f"timeout: must be a positive number of seconds, got {timeout}")
        self.url = url
        self.username = username
        self.version = version
        self._secrets: tuple[str, ...] = (password, base64.b64encode(f"{username}:{password}".encode()).decode())
        credentials: Any = Credentials(username, password)
        exchangelib_auth = AUTH_TYPES.get(auth_type.lower())
        if oauth is not None and auth_type.lower() == "oauth":
            tenant_id, client_id, client_secret = oauth
            credentials = OAuth2Credentials(client_id=client_id, client_secret=client_secret, tenant_id=tenant_id)
            exchangelib_auth = OAUTH2
            self._secrets = (*self._secrets, client_secret)
        self._config = Configuration(
            service_endpoint=url,
            credentials=credentials,
            auth_type=exchangelib_auth,
            version=Version(BUILDS[version]),
            retry_policy=_FailFast(),
            max_connections=max_connections,
        )
        self._timeout = timeout
        self._accounts: dict[str, Account] = {}
        self._lock = threading.Lock()
        self.stats = SourceStats()

    def __repr__(self) -> str:  # never the password
        return f"EwsSource(url={self.url!r}, username={self.username!r}, version={self.version!r})"

    # --- plumbing ------------------------------------------------------------------------------------------------

    def _account(self, mailbox: str) -> Account:
        key = mailbox.strip().lower()
        if "@" not in key or " " in key:
            raise SourceError("permanent", "mailbox_not_found", f"'{mailbox}' is not an e-mail address.")
        with self._lock:
            account = self._accounts.get(key)
            if account is None:
                account = Account(
                    mailbox.strip(),
                    config=self._config,
                    autodiscover=False,
                    access_type=IMPERSONATION,
                    default_timezone=_UTC_EWS,
                )
                account.protocol.TIMEOUT = self._timeout  # per protocol instance; exchangelib's default is 120 s
                self._accounts[key] = account
            return account

    def _count(self, operation: str) -> None:
        with self._lock:
            self.stats.requests += 1
            self.stats.by_operation[operation] = self.stats.by_operation.get(operation, 0) + 1

    def _error(self, exc: BaseException, mailbox: str | None) -> SourceError:
        if not isinstance(exc, xerr.EWSError | requests.RequestException | OSError | SourceError):
            # Not a failure Exchange reported: most likely a bug here or in exchangelib. Keep the traceback.
            log.error("%s: unexpected %s while talking to Exchange", mailbox, type(exc).__name__, exc_info=exc)
        return classify(exc, mailbox=mailbox, secrets=self._secrets)

    @staticmethod
    def _calendar(mailbox: str) -> DistinguishedFolderId:
        return DistinguishedFolderId(id="calendar", mailbox=Mailbox(email_address=mailbox.strip()))

    def _fetch(self, account: Account, ids: Sequence[str], fields: Iterable[str]) -> list[Any]:
        """ONE GetItem for all ``ids``: ``(item, RawTimes)`` pairs or per-item errors, in the order asked."""
        service = _GetCalendarItems(account=account, chunk_size=max(1, len(ids)))
        self._count("GetItem")
        return list(
            service.call(items=[ItemId(id=i) for i in ids], additional_fields=_field_paths(fields), shape=ID_ONLY)
        )

    # --- Source ------------------------------------------------------------------------------------------------

    def changes(self, mailbox: str, sync_state: str | None, batch_size: int) -> Iterator[ChangePage]:
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size: must be from 1 to {MAX_BATCH}, got {batch_size}")
        account = self._account(mailbox)  # SourceError for something that is not an address
        state = sync_state
        while True:
            try:
                page = self._page(account, mailbox, state, batch_size)
            except SourceError:
                raise
            except Exception as exc:
                raise self._error(exc, mailbox) from exc
            yield page
            if page.done:
                return
            state = page.sync_state

    def _page(self, account: Account, mailbox: str, state: str | None, batch_size: int) -> ChangePage:
        service = SyncFolderItems(account=account)
        self._count("SyncFolderItems")
        found = list(
            service.call(
                folder=self._calendar(mailbox),
                shape=ID_ONLY,
                additional_fields=set(),
                sync_state=state,
                ignore=None,
                max_changes_returned=batch_size,
                sync_scope=None,
            )
        )
        requests_made = 1
        new_state, done = service.sync_state, bool(service.includes_last_item_in_range)
        wanted: dict[str, bool] = {}  # item id -> True: upsert, False: delete (the last change of an id wins)
        for change in found:
            if isinstance(change, Exception):
                raise change
            kind, obj = change
            if kind == SyncFolderItems.READ_FLAG_CHANGE:
                continue
            if kind == SyncFolderItems.DELETE:
                wanted.pop(obj.id, None)
                wanted[obj.id] = False
            elif isinstance(obj, CalendarItem):
                wanted.pop(obj.id, None)
                wanted[obj.id] = True
            else:
                log.debug("%s: skipping a %s in the calendar folder", mailbox, type(obj).__name__)
        if not found and new_state == state and not done:
            log.warning(
                "%s: SyncFolderItems returned the same state and no changes but more to come; stopping", mailbox
            )
            done = True
        upsert_ids = [i for i, up in wanted.items() if up]
        deletes = [i for i, up in wanted.items() if not up]
        fetched: list[tuple[Any, RawTimes]] = []
        if upsert_ids:
            requests_made += 1
            for item_id, got in zip(upsert_ids, self._fetch(account, upsert_ids, ITEM_FIELDS), strict=True):
                if isinstance(got, xerr.ErrorItemNotFound):
                    deletes.append(item_id)  # created or changed, then deleted before we asked
                elif isinstance(got, Exception):
                    raise got
                elif isinstance(got[0], CalendarItem):
                    fetched.append(got)
        exceptions = self._exceptions(account, [item for item, _ in fetched])
        if exceptions is not None:
            requests_made += 1
        upserts = [to_appointment(item, raw=raw, overrides=_overrides(item, exceptions or {})) for item, raw in fetched]
        return ChangePage(
            upserts=tuple(upserts),
            deletes=tuple(deletes),
            sync_state=new_state,
            done=done,
            requests=requests_made,
        )

    def _exceptions(self, account: Account, items: Sequence[Any]) -> dict[str, tuple[Any, RawTimes]] | None:
        """ONE GetItem for every modified occurrence of the fetched series; None when there is none."""
        ids = [
            occ.id for item in items if item.recurrence is not None for occ in item.modified_occurrences or () if occ.id
        ]
        if not ids:
            return None
        out: dict[str, tuple[Any, RawTimes]] = {}
        for occ_id, got in zip(ids, self._fetch(account, ids, EXCEPTION_FIELDS), strict=True):
            if isinstance(got, xerr.ErrorItemNotFound):
                continue  # changed again meanwhile: the master's next Update brings it
            if isinstance(got, Exception):
                raise got
            out[occ_id] = got
        return out

    def subscribe(
        self, mailbox: str, callback_url: str, status_frequency: int, watermark: str | None = None
    ) -> Subscription:
        if not 1 <= status_frequency <= 1440:
            raise ValueError(f"status_frequency: must be from 1 to 1440 minutes, got {status_frequency}")
        try:
            account = self._account(mailbox)
            self._count("Subscribe")
            subscription_id, new_watermark = SubscribeToPush(account=account).get(
                folders=[self._calendar(mailbox)],
                event_types=PUSH_EVENT_TYPES,
                watermark=watermark,
                status_frequency=status_frequency,  # exchangelib's default is 1 minute
                url=callback_url,
            )
        except Exception as exc:
            raise self._error(exc, mailbox) from exc
        return Subscription(subscription_id=subscription_id, watermark=new_watermark)

    def check_mailbox(self, mailbox: str) -> MailboxCheck:
        address = mailbox.strip()
        try:
            account = self._account(address)
            self._count("ResolveNames")
            resolved = account.protocol.resolve_names([f"smtp:{address}"])
            match = next(
                (r for r in resolved if isinstance(r, Mailbox) and (r.email_address or "").lower() == address.lower()),
                None,
            )
            if match is None:
                failure = next((r for r in resolved if isinstance(r, Exception)), None)
                raise failure or xerr.ErrorNameResolutionNoResults("No mailbox has this address.")
            self._count("GetFolder")
            folders = list(
                _GetFolderIds(account=account).call(
                    folders=[self._calendar(address)], additional_fields=[], shape=ID_ONLY
                )
            )
            for folder in folders:
                if isinstance(folder, Exception):
                    raise folder
        except Exception as exc:
            error = self._error(exc, address)
            if error.kind != "permanent":
                raise error from exc
            return MailboxCheck(False, error.code, error.message)
        return MailboxCheck(True, display_name=match.name or None)

    def close(self) -> None:
        with self._lock:
            accounts, self._accounts = list(self._accounts.values()), {}
        for protocol in {id(a.protocol): a.protocol for a in accounts}.values():
            protocol.close()

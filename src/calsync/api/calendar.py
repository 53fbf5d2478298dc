"""The application calendar over HTTP, as the application reads it:

- ``GET /api/v1/operators/{email}/appointments?start=...&end=...``: every occurrence overlapping the range
  as JSON (series expanded; moved occurrences at their new time; deleted ones absent; times in ISO 8601
  with the offset of the appointment's own time zone, plus that zone; all-day items as dates with an
  exclusive end date; cancelled meetings with status "cancelled"; private items flagged);
- ``GET /api/v1/operators/{email}/calendar.ics``: the whole synced calendar as RFC 5545.

It reads the store only; it never reaches into the jobs. Callers need a token with the ``calendar`` or
``admin`` role (``calsync.api.auth``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from calsync.calendar.expand import expand_all, zone_for
from calsync.calendar.ics import to_ics
from calsync.calendar.model import Occurrence
from calsync.store import calendar, operators
from calsync.store.db import Database
from calsync.store.operators import OperatorError

from . import schemas
from .auth import CalendarReader
from .context import Ctx

MAX_RANGE = timedelta(days=3 * 366)


class BadRequest(ValueError):
    pass


def _when(name: str, value: str) -> datetime:
    if not value:
        raise BadRequest(f"'{name}' is required: an ISO 8601 date or date-time, e.g. 2026-12-01T00:00:00Z")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadRequest(f"'{name}': '{value}' is not an ISO 8601 date or date-time") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def occurrence_json(o: Occurrence) -> dict[str, Any]:
    a = o.appointment
    tz = zone_for(a.start_tz)
    out: dict[str, Any] = {
        # calsync's id (kept when the operator moves between EWS and Graph); an occurrence adds its original start
        "id": (a.app_id or a.item_id) + ("" if o.original_start is None else f"/{o.original_start.isoformat()}"),
        "appointment_id": a.app_id or a.item_id,
        "item_id": a.item_id,  # the source's id (EWS ItemId or Graph event id): changes when the operator moves
        "series": a.recurrence is not None,
        "original_start": None if o.original_start is None else o.original_start.astimezone(tz).isoformat(),
        "exception": o.is_exception,
        "subject": o.subject,
        "all_day": a.all_day,
        "time_zone": a.start_tz,
        "time_zone_iana": getattr(tz, "key", str(tz)),
        "location": o.location,
        "status": "cancelled" if o.cancelled else "confirmed",
        "private": a.private,
        "show_as": a.show_as,
        "categories": list(a.categories),
        "organizer": None if a.organizer_email is None else {"email": a.organizer_email, "name": a.organizer_name},
        "attendees": [
            {"email": x.email, "name": x.name, "response": x.response, "optional": x.optional} for x in a.attendees
        ],
    }
    if a.all_day:
        out["start"] = o.start.astimezone(tz).date().isoformat()
        out["end"] = o.end.astimezone(tz).date().isoformat()
    else:
        out["start"] = o.start.astimezone(tz).isoformat()
        out["end"] = o.end.astimezone(tz).isoformat()
    return out


router = APIRouter(prefix="/operators", tags=["calendar"])
ISO_HELP = "An ISO 8601 date or date-time, e.g. 2026-12-01 or 2026-12-01T00:00:00Z (UTC when no offset)."


def occurrences(db: Database, email: str, start: datetime, end: datetime) -> list[Occurrence]:
    """Every occurrence of ``email``'s calendar overlapping [start, end); raises OperatorError for no such operator."""
    with db.read() as session:
        operator = operators.require(session, email)
        appointments = calendar.in_range(session, operator.id, start, end)
    return expand_all(appointments, start, end)


@router.get(
    "/{email}/appointments",
    summary="Every occurrence overlapping a range (series expanded)",
    responses={400: {"model": schemas.Problem}, 404: {"model": schemas.Problem}},
)
def appointments(
    email: str,
    ctx: Ctx,
    _: CalendarReader,
    start: Annotated[str, Query(description=ISO_HELP)],
    end: Annotated[str, Query(description=ISO_HELP)],
) -> dict[str, Any]:
    try:
        begin, finish = _when("start", start), _when("end", end)
        if finish <= begin:
            raise BadRequest("'end' must be after 'start'")
        if finish - begin > MAX_RANGE:
            raise BadRequest("the range may span at most 3 years")
        found = occurrences(ctx.db, email, begin, finish)
    except BadRequest as exc:
        raise HTTPException(400, str(exc)) from None
    except OperatorError as exc:
        raise HTTPException(404, str(exc)) from None
    return {
        "operator": email.strip().lower(),
        "start": begin.isoformat(),
        "end": finish.isoformat(),
        "appointments": [occurrence_json(o) for o in found],
    }


@router.get(
    "/{email}/calendar.ics",
    summary="The whole synced calendar as iCalendar (RFC 5545)",
    response_class=Response,
    responses={200: {"content": {"text/calendar": {}}}, 404: {"model": schemas.Problem}},
)
def ics(
    email: str,
    ctx: Ctx,
    _: CalendarReader,
) -> Response:
    try:
        with ctx.db.read() as session:
            operator = operators.require(session, email)
            stored = calendar.all_for(session, operator.id)
    except OperatorError as exc:
        raise HTTPException(404, str(exc)) from None
    body = to_ics(stored, calendar_name=f"{operator.email} (calsync)")
    return Response(body, media_type="text/calendar; charset=utf-8")

"""The application calendar over HTTP, as the application reads it:

- ``GET /api/v1/operators/{email}/appointments?start=...&end=...``: every occurrence overlapping the range
  as JSON (series expanded; moved occurrences at their new time; deleted ones absent; times in ISO 8601
  with the offset of the appointment's own time zone, plus that zone; all-day items as dates with an
  exclusive end date; cancelled meetings with status "cancelled"; private items flagged);
- ``GET /api/v1/operators/{email}/calendar.ics``: the whole synced calendar as RFC 5545.

It reads the store only; it never reaches into the jobs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from calsync.calendar.expand import expand_all, zone_for
from calsync.calendar.ics import to_ics
from calsync.calendar.model import Occurrence
from calsync.store import calendar, operators
from calsync.store.db import Database
from calsync.store.operators import OperatorError

MAX_RANGE = timedelta(days=3 * 366)


class BadRequest(ValueError):
    pass


def _when(request: Request, name: str) -> datetime:
    value = request.query_params.get(name)
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
        "id": a.item_id if o.original_start is None else f"{a.item_id}/{o.original_start.isoformat()}",
        "item_id": a.item_id,
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


class CalendarApi:
    def __init__(self, db: Database) -> None:
        self.db = db

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/operators/{email}/appointments", self.appointments, methods=["GET"]),
            Route("/api/v1/operators/{email}/calendar.ics", self.ics, methods=["GET"]),
        ]

    def occurrences(self, email: str, start: datetime, end: datetime) -> list[Occurrence]:
        with self.db.read() as session:
            operator = operators.require(session, email)
            appointments = calendar.in_range(session, operator.id, start, end)
        return expand_all(appointments, start, end)

    async def appointments(self, request: Request) -> Response:
        try:
            start, end = _when(request, "start"), _when(request, "end")
            if end <= start:
                raise BadRequest("'end' must be after 'start'")
            if end - start > MAX_RANGE:
                raise BadRequest("the range may span at most 3 years")
            found = await run_in_threadpool(self.occurrences, request.path_params["email"], start, end)
        except BadRequest as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except OperatorError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        return JSONResponse(
            {
                "operator": request.path_params["email"].lower(),
                "start": start.isoformat(),
                "end": end.isoformat(),
                "appointments": [occurrence_json(o) for o in found],
            }
        )

    def _ics(self, email: str) -> bytes:
        with self.db.read() as session:
            operator = operators.require(session, email)
            appointments = calendar.all_for(session, operator.id)
        return to_ics(appointments, calendar_name=f"{operator.email} (calsync)")

    async def ics(self, request: Request) -> Response:
        try:
            body = await run_in_threadpool(self._ics, request.path_params["email"])
        except OperatorError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        return Response(body, media_type="text/calendar; charset=utf-8")

"""``GET /v1.0/users/{id}/calendarView`` (also under ``/calendar``) and ``GET .../events/{id}/instances``, both with
the required ``startDateTime`` and ``endDateTime``: single events and occurrences in the window, series expanded,
exceptions at their new time, deleted occurrences absent (the same view EWS's CalendarView shows), in time order,
paged with ``$top``/``$skip``.
"""

from __future__ import annotations

from datetime import datetime

from starlette.responses import Response

from ..model import calendar_view
from .datetimes import query_time
from .endpoint import Call
from .events import UNSUPPORTED_OPTIONS, find, listing


def window(call: Call) -> tuple[datetime, datetime]:
    start = query_time(call.query.get("startDateTime"), "startDateTime")
    end = query_time(call.query.get("endDateTime"), "endDateTime")
    return start, end


def list_calendar_view(call: Call) -> Response:
    call.refuse_options(*UNSUPPORTED_OPTIONS)
    mbx = call.user()
    start, end = window(call)
    with call.exchange.lock:
        return listing(call, mbx, calendar_view(mbx.calendar.items.values(), start, end), "calendarView")


def list_instances(call: Call) -> Response:
    call.refuse_options(*UNSUPPORTED_OPTIONS)
    mbx = call.user()
    start, end = window(call)
    with call.exchange.lock:
        master = find(call, mbx)
        found = calendar_view([master], start, end) if master.recurrence is not None else []
        return listing(call, mbx, found, f"events('{call.path_params['event']}')/instances")

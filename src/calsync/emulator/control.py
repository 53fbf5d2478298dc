"""The emulator's control API: JSON over HTTP under ``/emulator/``, for scripts and programs that set the
emulator up, act as Outlook users, read the ground truth, inject faults and steer the clock.

Routes (all JSON; errors are ``{"error": "..."}`` with a 4xx status):

- ``GET /emulator/`` (an index of these routes); ``GET /emulator/health``; ``GET /emulator/stats`` (request counters)
- ``GET /emulator/mailboxes``; ``POST /emulator/mailboxes`` ``{"address", "display_name"?, "populate"?, "seed"?}``
- ``POST /emulator/accounts`` ``{"username", "password", "impersonation"?}``
- ``GET|POST /emulator/mailboxes/{address}/items``: list items; create an appointment (see outlook.py)
- ``PATCH|DELETE /emulator/mailboxes/{address}/items/{id}`` (``?mode=HardDelete|SoftDelete|MoveToDeletedItems``,
  ``&cancel=false`` to skip cancellations); ``POST .../items/{id}/move`` ``{"folder": "deleteditems"}``
- ``PATCH|DELETE /emulator/mailboxes/{address}/items/{id}/occurrences/{n}``: change or delete one occurrence
- ``GET /emulator/mailboxes/{address}/calendar?start=&end=``: ground truth, every occurrence in the range
- ``POST /emulator/mailboxes/{address}/expire-sync-states`` and ``.../expire-watermarks``
- ``GET|POST|DELETE /emulator/faults``: read, set (partial), clear
- ``GET|POST /emulator/clock`` ``{"speed"?, "advance_seconds"?}``
- ``GET /emulator/subscriptions``; ``GET /emulator/push-log``
- the Graph wing's routes under ``/emulator/graph/`` (:mod:`calsync.emulator.graph.control`)

Item ids are base64 and may hold ``/`` and ``+``: in paths, give them in URL-safe form (``-`` for ``+``,
``_`` for ``/``), which every route accepts.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .errors import EwsError
from .ews.push import PushDelivery
from .exchange import Exchange
from .notifier import Notifier
from .outlook import Outlook, SpecError, describe, truth
from .sample_data import populate


class BadRequest(Exception):
    pass


async def read_json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > 1_000_000:
        raise BadRequest("request body larger than 1 MB")
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


def guard(handler: Callable[[Request], Awaitable[Any]]) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def wrapped(request: Request) -> JSONResponse:
        try:
            result = await handler(request)
        except (BadRequest, SpecError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except EwsError as exc:
            status = 404 if exc.code in ("ErrorNonExistentMailbox", "ErrorItemNotFound") else 400
            return JSONResponse({"error": exc.message, "code": exc.code}, status_code=status)
        if isinstance(result, JSONResponse):
            return result
        return JSONResponse(result)

    return wrapped


def _range(request: Request) -> tuple[datetime, datetime]:
    def parse(name: str, default: datetime) -> datetime:
        value = request.query_params.get(name)
        if not value:
            return default
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise BadRequest(f"{name}: '{value}' is not an ISO 8601 date-time") from exc
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    now = datetime.now(UTC)
    start = parse("start", now - timedelta(days=180))
    end = parse("end", now + timedelta(days=365))
    if end <= start:
        raise BadRequest("end must be after start")
    return start, end


def routes(exchange: Exchange, push: PushDelivery, *also_woken: Notifier[Any]) -> list[Route]:
    """The routes; ``also_woken``: other deliveries to wake (besides EWS push) when faults or the clock change."""

    def poke() -> None:
        for notifier in (push, *also_woken):
            notifier.poke_all()

    def outlook(request: Request) -> Outlook:
        return Outlook(exchange, request.path_params["address"])

    async def health(request: Request) -> Any:
        return {"ok": True, "version": exchange.version.name, "mailboxes": len(exchange.mailboxes)}

    async def list_mailboxes(request: Request) -> Any:
        with exchange.lock:
            return [
                {
                    "address": m.address,
                    "display_name": m.display_name,
                    "items": len(m.calendar.items),
                    "graph_id": str(m.guid),  # the user's object id in Graph paths
                }
                for m in exchange.mailboxes.values()
            ]

    async def add_mailbox(request: Request) -> Any:
        data = await read_json(request)
        mbx = exchange.add_mailbox(str(data.get("address", "")), data.get("display_name"))
        count = int(data.get("populate", 0))
        if count < 0 or count > 10_000:
            raise BadRequest("populate: a number of appointments from 0 to 10000")
        if count:
            populate(
                exchange, mbx, count, seed=int(data.get("seed", 0)), colleagues=list(exchange.mailboxes.values())[:20]
            )
        return JSONResponse({"address": mbx.address, "items": len(mbx.calendar.items)}, status_code=201)

    async def add_account(request: Request) -> Any:
        data = await read_json(request)
        account = exchange.add_account(
            str(data.get("username", "")), str(data.get("password", "")), bool(data.get("impersonation", True))
        )
        return JSONResponse({"username": account.username, "impersonation": account.impersonation}, status_code=201)

    async def list_items(request: Request) -> Any:
        o = outlook(request)
        with exchange.lock:
            return [describe(i) for i in o.items()]

    async def create_item(request: Request) -> Any:
        data = await read_json(request)
        item = outlook(request).create(data)
        return JSONResponse(describe(item), status_code=201)

    async def update_item(request: Request) -> Any:
        data = await read_json(request)
        return describe(outlook(request).update(request.path_params["item_id"], data))

    async def delete_item(request: Request) -> Any:
        mode = request.query_params.get("mode", "MoveToDeletedItems")
        cancel = request.query_params.get("cancel", "true").lower() != "false"
        outlook(request).delete(request.path_params["item_id"], mode, cancel=cancel)
        return {"deleted": request.path_params["item_id"]}

    async def move_item(request: Request) -> Any:
        data = await read_json(request)
        return describe(outlook(request).move(request.path_params["item_id"], str(data.get("folder", ""))))

    async def update_occurrence(request: Request) -> Any:
        data = await read_json(request)
        index = int(request.path_params["index"])
        return describe(outlook(request).update_occurrence(request.path_params["item_id"], index, data))

    async def delete_occurrence(request: Request) -> Any:
        outlook(request).delete_occurrence(request.path_params["item_id"], int(request.path_params["index"]))
        return {"deleted": int(request.path_params["index"])}

    async def calendar(request: Request) -> Any:
        start, end = _range(request)
        return truth(exchange, request.path_params["address"], start, end)

    async def expire_sync(request: Request) -> Any:
        exchange.expire_sync_states(exchange.mailbox(request.path_params["address"]))
        return {"expired": "sync states"}

    async def expire_watermarks(request: Request) -> Any:
        exchange.expire_watermarks(exchange.mailbox(request.path_params["address"]))
        return {"expired": "watermarks"}

    async def faults(request: Request) -> Any:
        if request.method == "POST":
            exchange.faults.update(**await read_json(request))
            poke()
        elif request.method == "DELETE":
            exchange.faults.clear()
            poke()
        return exchange.faults.as_dict()

    async def clock(request: Request) -> Any:
        if request.method == "POST":
            data = await read_json(request)
            if "speed" in data:
                exchange.clock.set_speed(float(data["speed"]))
            if "advance_seconds" in data:
                exchange.clock.advance(float(data["advance_seconds"]))
            poke()
        return {
            "now": exchange.clock.now().isoformat(),
            "speed": exchange.clock.speed,
            "seconds": exchange.clock.seconds(),
        }

    async def subscriptions(request: Request) -> Any:
        with exchange.lock:
            return [
                {
                    "id": s.id,
                    "kind": s.kind,
                    "mailbox": s.address,
                    "state": s.state,
                    "url": s.url,
                    "status_frequency": s.status_frequency,
                    "deliveries": s.deliveries,
                    "failures": s.failures,
                }
                for s in exchange.subscriptions.values()
            ]

    async def push_log(request: Request) -> Any:
        return [asdict(d) for d in list(push.log)]

    async def stats(request: Request) -> Any:
        return dict(exchange.stats)

    async def index(request: Request) -> Any:
        # What the start-up banner links to: where everything is, so the link is never a 404.
        listed = [{"path": r.path, "methods": sorted(r.methods - {"HEAD"}) if r.methods else ["GET"]} for r in table]
        return {
            "emulator": "calsync's Exchange emulator",
            "ews": "/EWS/Exchange.asmx",
            "version": exchange.version.name,
            "mailboxes": len(exchange.mailboxes),
            "control_api": listed,
            "docs": "docs/emulator.md (Control API)",
        }

    p = "/emulator"
    item = p + "/mailboxes/{address}/items/{item_id}"
    table = [
        Route(p + "/health", guard(health)),
        Route(p + "/mailboxes", guard(list_mailboxes), methods=["GET"]),
        Route(p + "/mailboxes", guard(add_mailbox), methods=["POST"]),
        Route(p + "/accounts", guard(add_account), methods=["POST"]),
        Route(p + "/mailboxes/{address}/items", guard(list_items), methods=["GET"]),
        Route(p + "/mailboxes/{address}/items", guard(create_item), methods=["POST"]),
        Route(p + "/mailboxes/{address}/calendar", guard(calendar), methods=["GET"]),
        Route(p + "/mailboxes/{address}/expire-sync-states", guard(expire_sync), methods=["POST"]),
        Route(p + "/mailboxes/{address}/expire-watermarks", guard(expire_watermarks), methods=["POST"]),
        Route(
            p + "/mailboxes/{address}/items/{item_id}/occurrences/{index:int}",
            guard(update_occurrence),
            methods=["PATCH"],
        ),
        Route(
            p + "/mailboxes/{address}/items/{item_id}/occurrences/{index:int}",
            guard(delete_occurrence),
            methods=["DELETE"],
        ),
        Route(p + "/mailboxes/{address}/items/{item_id}/move", guard(move_item), methods=["POST"]),
        Route(item, guard(update_item), methods=["PATCH"]),
        Route(item, guard(delete_item), methods=["DELETE"]),
        Route(p + "/faults", guard(faults), methods=["GET", "POST", "DELETE"]),
        Route(p + "/clock", guard(clock), methods=["GET", "POST"]),
        Route(p + "/subscriptions", guard(subscriptions)),
        Route(p + "/push-log", guard(push_log)),
        Route(p + "/stats", guard(stats)),
    ]
    return [Route(p + "/", guard(index), methods=["GET"]), *table]

"""Admin API: operators (create, list by state, show, update, delete, enable/disable sync, move to another
source, verify against Exchange) and how an operator's status is presented (its state, subscription health and
lag)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response

from calsync.alerts.catalogue import entry
from calsync.settings import is_email_address
from calsync.sources.base import SourceError
from calsync.store import audit, operators
from calsync.store import jobs as job_store
from calsync.store.db import Transaction
from calsync.store.status import OperatorStatus, operator_statuses
from calsync.store.tables import utcnow

from . import schemas
from .auth import AdminReader, Changer, Principal
from .context import AdminContext, Ctx

router = APIRouter(prefix="/operators", tags=["operators"])
Email = Annotated[str, "an e-mail address"]


def state_of(status: OperatorStatus) -> schemas.OperatorState:
    if not status.enabled:
        return "disabled"
    failed_since_sync = status.last_error_at is not None and (
        status.last_sync is None or status.last_error_at > status.last_sync
    )
    if status.incident_code is not None or failed_since_sync:
        return "failing"
    if not status.initial_sync_done or status.dirty or status.pending_notifications:
        return "syncing"
    return "synced"


def subscription_state(status: OperatorStatus, now: datetime) -> schemas.SubscriptionState:
    """healthy: heard from within its StatusFrequency; not_yet_heard: made less than StatusFrequency ago and
    nothing came yet; dying: silent for longer, heard from before or not (ManagePushSubscriptions recreates it
    after twice that); missing: none."""
    since = status.last_heard or status.subscribed_at
    if not status.subscribed or since is None:
        return "missing"
    if status.source == "graph":  # no heartbeats: alive until it expires (it is renewed well before)
        expired = status.subscription_expires is not None and status.subscription_expires <= now
        return "dying" if expired else "healthy"
    frequency = status.subscription_frequency or 30
    if (now - since).total_seconds() > frequency * 60:
        return "dying"
    return "healthy" if status.last_heard is not None else "not_yet_heard"


def lag_seconds(status: OperatorStatus, now: datetime) -> float:
    return 0.0 if status.dirty_since is None else max(0.0, round((now - status.dirty_since).total_seconds(), 3))


def view(status: OperatorStatus, now: datetime) -> schemas.Operator:
    incident = None
    if status.incident_code is not None:
        incident = schemas.Incident(
            code=status.incident_code,
            title=entry(status.incident_code).title,
            message=status.incident_message,
            since=status.incident_since,
            opened=True,
        )
    last_error = None
    if status.last_error_code is not None:
        last_error = schemas.LastError(
            code=status.last_error_code, message=status.last_error_message, at=status.last_error_at
        )
    return schemas.Operator(
        email=status.email,
        display_name=status.display_name,
        enabled=status.enabled,
        source=_source_name(status.source),
        moving_from=None if status.moving_from is None else _source_name(status.moving_from),
        state=state_of(status),
        subscription=schemas.Subscription(
            state=subscription_state(status, now),
            subscribed_at=status.subscribed_at,
            last_heard=status.last_heard,
            last_heartbeat=status.last_heartbeat,
            expires_at=status.subscription_expires,
        ),
        last_sync=status.last_sync,
        initial_sync_done=status.initial_sync_done,
        pending_notifications=status.pending_notifications,
        lag_seconds=lag_seconds(status, now),
        appointments=status.appointments,
        incident=incident,
        last_error=last_error,
    )


def _source_name(name: str) -> schemas.SourceName:
    return "graph" if name == "graph" else "ews"


def _configured(ctx: AdminContext, source: str) -> None:
    """422 for a source this deployment has no connection for: its operators could not be synced."""
    if source == "graph" and not ctx.settings().graph_configured:
        raise HTTPException(
            422,
            "this deployment has no Graph connection: set graph_tenant_id, graph_client_id and graph_client_secret "
            "(or graph_certificate) first",
        )


def _address(email: str) -> str:
    value = email.strip().lower()
    if not is_email_address(value):
        raise HTTPException(422, f"'{email}' is not an e-mail address (expected name@domain.tld)")
    return value


def _one(ctx: AdminContext, email: str) -> schemas.Operator:
    address = _address(email)
    with ctx.db.read() as session:
        found = operator_statuses(session, address)
    if not found:
        raise HTTPException(404, f"no operator '{address}'; create it with POST /api/v1/operators")
    return view(found[0], utcnow())


def _change(
    ctx: AdminContext,
    who: Principal,
    email: str,
    action: str,
    detail: dict[str, object],
    change: Callable[[Transaction, str], object],
) -> None:
    address = _address(email)
    with ctx.db.transaction() as session:
        if operators.get(session, address) is None:
            raise HTTPException(404, f"no operator '{address}'; create it with POST /api/v1/operators")
        change(session, address)
        # Subscribing (and so the initial sync) is ManagePushSubscriptions' job: ask it to run now.
        job_store.request_run(session, job_store.MANAGE_SUBSCRIPTIONS)
        audit.record(session, who.actor, action, address, detail)
    ctx.poke_scheduler()


@router.get("", response_model=list[schemas.Operator], summary="List operators")
def list_operators(
    ctx: Ctx,
    _: AdminReader,
    state: Annotated[schemas.OperatorState | None, Query(description="Only operators in this state.")] = None,
) -> list[schemas.Operator]:
    with ctx.db.read() as session:
        statuses = operator_statuses(session)
    now = utcnow()
    views = [view(s, now) for s in statuses]
    return [v for v in views if state is None or v.state == state]


@router.post(
    "",
    response_model=schemas.Operator,
    status_code=201,
    summary="Create an operator",
    responses={409: {"model": schemas.Problem, "description": "The operator exists already."}},
)
def create_operator(
    body: schemas.OperatorCreate,
    ctx: Ctx,
    who: Changer,
) -> schemas.Operator:
    address = _address(body.email)
    source = body.source or ctx.settings().default_source
    _configured(ctx, source)
    with ctx.db.transaction() as session:
        if operators.get(session, address) is not None:
            raise HTTPException(409, f"operator '{address}' exists already")
        operators.add(session, address, body.display_name, body.enabled, source)
        if body.enabled:
            job_store.request_run(session, job_store.MANAGE_SUBSCRIPTIONS)
        audit.record(session, who.actor, "operator.create", address, body.model_dump() | {"source": source})
    ctx.poke_scheduler()
    return _one(ctx, address)


@router.get(
    "/{email}",
    response_model=schemas.Operator,
    summary="Show an operator and its sync status",
    responses={404: {"model": schemas.Problem}},
)
def show_operator(
    email: Email,
    ctx: Ctx,
    _: AdminReader,
) -> schemas.Operator:
    return _one(ctx, email)


@router.patch(
    "/{email}",
    response_model=schemas.Operator,
    summary="Change an operator's name or sync flag",
    responses={404: {"model": schemas.Problem}},
)
def update_operator(
    email: Email,
    body: schemas.OperatorUpdate,
    ctx: Ctx,
    who: Changer,
) -> schemas.Operator:
    changes = body.model_dump(exclude_unset=True)

    def change(session: Transaction, address: str) -> None:
        operator = operators.require(session, address)
        if "display_name" in changes:
            operator.display_name = changes["display_name"]
        if changes.get("enabled") is not None:
            operator.sync_enabled = bool(changes["enabled"])

    _change(ctx, who, email, "operator.update", changes, change)
    return _one(ctx, email)


@router.delete(
    "/{email}",
    status_code=204,
    summary="Delete an operator and its synced appointments",
    responses={404: {"model": schemas.Problem}},
)
def delete_operator(
    email: Email,
    ctx: Ctx,
    who: Changer,
) -> Response:
    _change(ctx, who, email, "operator.delete", {}, operators.remove)
    return Response(status_code=204)


def _switch(ctx: AdminContext, who: Principal, email: str, on: bool) -> schemas.Operator:
    action = "operator.enable" if on else "operator.disable"
    _change(ctx, who, email, action, {}, lambda session, address: operators.set_enabled(session, address, on))
    return _one(ctx, email)


@router.post(
    "/{email}/enable",
    response_model=schemas.Operator,
    summary="Turn sync on (subscribed within seconds)",
    responses={404: {"model": schemas.Problem}},
)
def enable_operator(email: Email, ctx: Ctx, who: Changer) -> schemas.Operator:
    return _switch(ctx, who, email, True)


@router.post(
    "/{email}/disable",
    response_model=schemas.Operator,
    summary="Turn sync off",
    responses={404: {"model": schemas.Problem}},
)
def disable_operator(email: Email, ctx: Ctx, who: Changer) -> schemas.Operator:
    return _switch(ctx, who, email, False)


@router.post(
    "/{email}/move",
    response_model=schemas.Operator,
    summary="Move an operator to another source (EWS to Graph), keeping its calendar and appointment ids",
    responses={
        404: {"model": schemas.Problem},
        409: {"model": schemas.Problem, "description": "The operator uses that source already."},
        422: {"model": schemas.Problem, "description": "The deployment has no connection for that source."},
    },
)
def move_operator(email: Email, body: schemas.OperatorMove, ctx: Ctx, who: Changer) -> schemas.Operator:
    _configured(ctx, body.to)
    address = _address(email)
    with ctx.db.read() as session:
        known = operators.get(session, address)
    if known is not None and known.source == body.to:
        raise HTTPException(409, f"operator '{address}' already uses the {body.to} source")
    detail: dict[str, object] = {"to": body.to, "from": None if known is None else known.source}
    try:
        _change(ctx, who, email, "operator.move", detail, lambda session, a: operators.move(session, a, body.to))
    except operators.OperatorError as exc:  # moved by somebody else meanwhile: nothing changed
        raise HTTPException(409, str(exc)) from None
    return _one(ctx, email)


@router.post(
    "/{email}/verify",
    response_model=schemas.Verification,
    summary="Check against Exchange that the address is a mailbox the service account may impersonate",
)
def verify_operator(
    email: Email,
    ctx: Ctx,
    who: Changer,
) -> schemas.Verification:
    address = _address(email)
    with ctx.db.read() as session:
        known = operators.get(session, address)
        source_name = None if known is None else known.source  # an address not added yet: the default source
    try:
        check = ctx.sources.for_operator(source_name).check_mailbox(address)
        result = schemas.Verification(
            ok=check.ok, code=check.code, message=check.message, display_name=check.display_name
        )
    except SourceError as exc:  # Exchange could not be asked: say so, it is not the operator's fault
        result = schemas.Verification(
            ok=False, code=exc.code, message=f"Exchange could not be asked: {exc.message}", display_name=None
        )
    with ctx.db.transaction() as session:
        audit.record(session, who.actor, "operator.verify", address, result.model_dump())
    return result

"""Admin API: the dashboard's numbers (operators by state, subscriptions by health, notifications per minute,
sync lag, mailboxes waiting, open incidents), the audit log, and who the caller is."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from calsync.store import audit, status
from calsync.store.tables import utcnow

from . import schemas
from .auth import ADMIN, CALENDAR, VIEWER, AdminReader, Principal, allow
from .context import Ctx
from .operators import view

router = APIRouter(tags=["status"])
MINUTES = 60


@router.get("/me", response_model=schemas.Me, summary="The caller's token: name and role")
def me(who: Annotated[Principal, Depends(allow(ADMIN, VIEWER, CALENDAR))]) -> schemas.Me:
    return schemas.Me(name=who.name, role=who.role, token_id=who.token_id)


@router.get("/dashboard", response_model=schemas.Dashboard, summary="Counts for the dashboard")
def dashboard(ctx: Ctx, _: AdminReader) -> schemas.Dashboard:
    now = utcnow()
    this_minute = now.replace(second=0, microsecond=0)
    first = this_minute - timedelta(minutes=MINUTES - 1)
    with ctx.db.read() as session:
        statuses = status.operator_statuses(session)
        arrivals = status.notifications_since(session, first)
        open_incidents = status.open_incident_count(session)
    views = [view(s, now) for s in statuses]
    states = Counter(v.state for v in views)
    subscriptions = Counter(v.subscription.state for v in views if v.enabled)
    per_minute = Counter(a.replace(second=0, microsecond=0) for a in arrivals)
    minutes = [first + timedelta(minutes=i) for i in range(MINUTES)]
    return schemas.Dashboard(
        operators=schemas.OperatorCounts(
            total=len(views),
            synced=states["synced"],
            syncing=states["syncing"],
            failing=states["failing"],
            disabled=states["disabled"],
            failing_permanently=sum(1 for s in statuses if s.enabled and s.incident_kind == "permanent"),
        ),
        subscriptions=schemas.SubscriptionCounts(
            healthy=subscriptions["healthy"],
            not_yet_heard=subscriptions["not_yet_heard"],
            dying=subscriptions["dying"],
            missing=subscriptions["missing"],
        ),
        notifications_per_minute=[schemas.MinuteCount(minute=m, count=per_minute[m]) for m in minutes],
        notifications_last_minute=sum(1 for a in arrivals if now - a <= timedelta(minutes=1)),
        # Lag describes the mailboxes that can sync: one failing for a permanent reason waits for a person.
        sync_lag_seconds=schemas.Lag(
            max=max(
                (v.lag_seconds for v, s in zip(views, statuses, strict=True) if s.incident_kind != "permanent"),
                default=0.0,
            )
        ),
        dirty_mailboxes=sum(1 for s in statuses if s.dirty),
        open_incidents=open_incidents,
    )


@router.get("/audit", response_model=list[schemas.AuditEntry], summary="The audit log, newest first")
def audit_log(
    ctx: Ctx,
    _: AdminReader,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    action: Annotated[str | None, Query(max_length=64, description="Only this action, e.g. operator.enable")] = None,
) -> list[schemas.AuditEntry]:
    with ctx.db.read() as session:
        return [
            schemas.AuditEntry(
                id=row.id, at=row.at, actor=row.actor, action=row.action, target=row.target, detail=row.detail
            )
            for row in audit.listing(session, limit, action)
        ]

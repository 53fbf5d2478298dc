"""Admin API: the jobs (ProcessPushNotifications, ManagePushSubscriptions, Reconciliation): their state,
interval, last run and outcome, next run; run now, enable/disable, change the interval. The schedule lives in
the database, so a change takes effect on every node within a scheduler tick, without a restart."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from calsync.store import audit
from calsync.store import jobs as job_store
from calsync.store.tables import JobRow

from . import schemas
from .auth import AdminReader, Changer
from .context import AdminContext, Ctx

router = APIRouter(prefix="/jobs", tags=["jobs"])


def view(row: JobRow) -> schemas.Job:
    return schemas.Job(
        name=row.name,
        enabled=row.enabled,
        interval_seconds=row.interval_seconds,
        last_run_at=row.last_run_at,
        last_outcome=row.last_outcome,
        last_duration_ms=row.last_duration_ms,
        next_run_at=row.next_run_at,
        run_requested=row.run_requested,
        runs=row.runs,
    )


def _one(ctx: AdminContext, name: str) -> schemas.Job:
    with ctx.db.read() as session:
        try:
            return view(job_store.require(session, name))
        except job_store.JobError as exc:
            raise HTTPException(404, str(exc)) from None


@router.get("", response_model=list[schemas.Job], summary="List the jobs")
def list_jobs(ctx: Ctx, _: AdminReader) -> list[schemas.Job]:
    with ctx.db.read() as session:
        return [view(row) for row in job_store.listing(session)]


@router.get("/{name}", response_model=schemas.Job, summary="Show a job", responses={404: {"model": schemas.Problem}})
def show_job(name: str, ctx: Ctx, _: AdminReader) -> schemas.Job:
    return _one(ctx, name)


@router.patch(
    "/{name}",
    response_model=schemas.Job,
    summary="Enable/disable a job or change its interval",
    responses={404: {"model": schemas.Problem}},
)
def update_job(
    name: str,
    body: schemas.JobUpdate,
    ctx: Ctx,
    who: Changer,
) -> schemas.Job:
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    if not changes:
        raise HTTPException(422, "nothing to change; give enabled (true/false) and/or interval_seconds (1..86400)")
    with ctx.db.transaction() as session:
        try:
            row = job_store.require(session, name)
        except job_store.JobError as exc:
            raise HTTPException(404, str(exc)) from None
        try:
            if "interval_seconds" in changes:
                job_store.set_interval(session, row.name, changes["interval_seconds"])
        except job_store.JobError as exc:
            raise HTTPException(422, str(exc)) from None
        if "enabled" in changes:
            job_store.set_enabled(session, row.name, changes["enabled"])
        audit.record(session, who.actor, "job.update", row.name, changes)
        canonical = row.name
    ctx.poke_scheduler()
    return _one(ctx, canonical)


@router.post(
    "/{name}/run",
    response_model=schemas.Job,
    summary="Run a job now (on one node, within a second)",
    responses={404: {"model": schemas.Problem}, 409: {"model": schemas.Problem}},
)
def run_job(
    name: str,
    ctx: Ctx,
    who: Changer,
) -> schemas.Job:
    with ctx.db.transaction() as session:
        try:
            row = job_store.request_run(session, name)
        except job_store.JobError as exc:
            raise HTTPException(404, str(exc)) from None
        if not row.enabled:
            raise HTTPException(409, f"{row.name} is disabled; enable it first (PATCH with enabled: true)")
        audit.record(session, who.actor, "job.run", row.name, {})
        canonical = row.name
    ctx.poke_scheduler()
    return _one(ctx, canonical)

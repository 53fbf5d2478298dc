"""Admin API: failures, i.e. failure streaks per operator with their catalogue code, filterable."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from calsync.alerts.catalogue import entry
from calsync.store import incidents

from . import schemas
from .auth import AdminReader
from .context import Ctx

router = APIRouter(prefix="/failures", tags=["failures"])


@router.get("", response_model=list[schemas.Failure], summary="List failures, newest first")
def list_failures(
    ctx: Ctx,
    _: AdminReader,
    operator: Annotated[str | None, Query(max_length=320, description="Only this operator's (e-mail).")] = None,
    code: Annotated[str | None, Query(max_length=64, description="Only this catalogue code.")] = None,
    state: Annotated[Literal["open", "resolved", "all"], Query(description="Open, resolved or all streaks.")] = "all",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[schemas.Failure]:
    with ctx.db.read() as session:
        found = incidents.failures(session, email=operator, code=code, state=state, limit=limit)
        return [
            schemas.Failure(
                id=row.id,
                operator=email,
                code=row.code,
                title=entry(row.code).title,
                kind=row.kind,
                origin=row.origin,
                message=row.message,
                failures=row.failures,
                first_failure_at=row.first_failure_at,
                last_failure_at=row.last_failure_at,
                opened_at=row.opened_at,
                notified_at=row.notified_at,
                resolved_at=row.resolved_at,
                open=row.resolved_at is None,
            )
            for row, email in found
        ]

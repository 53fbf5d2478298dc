"""Admin API: the effective settings (secrets masked) and the run-time change of the ones that are safe to
change while calsync runs, validated exactly as at start-up; a rejected change changes nothing."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse
from pydantic import SecretStr

from calsync.settings import RUNTIME_CHANGEABLE, SettingsError, effective_settings, runtime_change_names, with_changes
from calsync.store import audit, overrides

from . import schemas
from .auth import AdminReader, Changer
from .context import AdminContext, Ctx

router = APIRouter(prefix="/settings", tags=["settings"])


def _json(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, SecretStr):
        return "********"
    return value if value is None or isinstance(value, str | int | float | bool | list | dict) else str(value)


def _view(ctx: AdminContext) -> schemas.SettingsView:
    ctx.apply_settings()  # a node without jobs has no scheduler tick to apply changes made on another node
    settings = ctx.settings()
    with ctx.db.read() as session:
        stored = overrides.current(session)
    shown = {name: _json(value) for name, value in effective_settings(settings).items()}
    return schemas.SettingsView(settings=shown, changeable=list(RUNTIME_CHANGEABLE), overrides=stored)


@router.get("", response_model=schemas.SettingsView, summary="The effective settings, secrets masked")
def show_settings(ctx: Ctx, _: AdminReader) -> schemas.SettingsView:
    return _view(ctx)


@router.patch(
    "",
    response_model=schemas.SettingsView,
    summary="Change settings that are safe to change at run time",
)
def change_settings(
    changes: Annotated[
        dict[str, Any],
        Body(
            description="Setting name -> new value (null: back to the file's or environment's value), for: "
            + ", ".join(RUNTIME_CHANGEABLE),
            examples=[{"batch_size": 100, "failure_recipients": ["ops@example.com"]}],
        ),
    ],
    ctx: Ctx,
    who: Changer,
) -> Any:
    if not changes:
        return JSONResponse({"detail": "nothing to change", "problems": []}, status_code=422)
    try:
        named, problems = runtime_change_names(changes)
        with ctx.db.read() as session:
            stored = overrides.current(session)
        wanted = {name: value for name, value in {**stored, **named}.items() if value is not None}
        validated = with_changes((ctx.startup_settings or ctx.settings)(), wanted)
    except SettingsError as exc:
        problems += exc.problems
    if problems:
        return JSONResponse({"detail": "the settings were not changed", "problems": problems}, status_code=422)
    values = {name: _json(getattr(validated, name)) for name in named if named[name] is not None}
    reverted = [name for name in named if named[name] is None]
    with ctx.db.transaction() as session:
        overrides.put(session, values, who.actor)
        overrides.remove(session, reverted)
        audit.record(session, who.actor, "settings.change", None, {**values, **dict.fromkeys(reverted)})
    ctx.apply_settings()
    return _view(ctx)

"""Settings changed at run time: stored here by the admin API, read by every node, which applies them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .tables import SettingOverrideRow, utcnow


def current(session: Session) -> dict[str, Any]:
    """Every override, by setting name."""
    return {row.name: row.value.get("value") for row in session.scalars(select(SettingOverrideRow))}


def put(session: Session, values: dict[str, Any], changed_by: str) -> None:
    """Store (or replace) overrides. The caller has validated them against the whole settings."""
    now = utcnow()
    for name, value in values.items():
        row = session.get(SettingOverrideRow, name)
        if row is None:
            session.add(SettingOverrideRow(name=name, value={"value": value}, changed_at=now, changed_by=changed_by))
        else:
            row.value, row.changed_at, row.changed_by = {"value": value}, now, changed_by


def remove(session: Session, names: list[str]) -> None:
    for name in names:
        row = session.get(SettingOverrideRow, name)
        if row is not None:
            session.delete(row)

"""What the admin API's handlers reach: the database, the sources (to verify mailboxes), the settings in force
and the hooks that make a change felt at once on this node (other nodes notice within a scheduler tick)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from calsync.settings import Settings
from calsync.sources.registry import Sources
from calsync.store.db import Database


@dataclass
class AdminContext:
    db: Database
    sources: Sources  # the deployment's sources (to verify mailboxes with the right one)
    settings: Callable[[], Settings]  # the settings in force now (start-up settings + run-time changes)
    startup_settings: Callable[[], Settings] | None = None  # what the file and environment say (default: settings)
    poke_scheduler: Callable[[], None] = lambda: None  # look at the job schedule now
    apply_settings: Callable[[], None] = lambda: None  # apply stored run-time changes now


def context(request: Request) -> AdminContext:
    admin: AdminContext = request.app.state.admin
    return admin


Ctx = Annotated[AdminContext, Depends(context)]  # a handler parameter: the admin context

"""Who is calling the admin API: bearer tokens, their roles, and what each role may do.

Tokens come from the database (``calsync tokens create``, stored hashed) or from the ``api_tokens`` setting
(the environment, for tests and automated deployments). A request without a valid token is refused with 401;
a valid token whose role may not make the request with 403. The listener path is not part of this scheme:
it has its own secret and can only record notifications.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from calsync.settings import Settings, api_tokens_of
from calsync.store import tokens as token_store
from calsync.store.db import Database
from calsync.store.tokens import token_hash

ADMIN, VIEWER, CALENDAR = "admin", "viewer", "calendar"
READ_ADMIN = (ADMIN, VIEWER)  # operators, jobs, status, failures, settings, audit log
READ_CALENDAR = (ADMIN, CALENDAR)  # the application calendars (personal data: not for viewers)
CHANGE = (ADMIN,)


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    token_id: int | None  # None: a token from the api_tokens setting

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"{self.name} (token {self.token_id})" if self.token_id is not None else self.name


class Authenticator:
    def __init__(self, db: Database, settings: Callable[[], Settings]) -> None:
        self.db = db
        self.settings = settings

    def _from_settings(self, token: str) -> Principal | None:
        value = self.settings().api_tokens
        if value is None:
            return None
        digest = token_hash(token)
        for number, (role, candidate) in enumerate(api_tokens_of(value.get_secret_value()), start=1):
            if hmac.compare_digest(token_hash(candidate), digest):
                return Principal(f"api_tokens entry {number} ({role})", role, None)
        return None

    def authenticate(self, token: str) -> Principal | None:
        found = self._from_settings(token)
        if found is not None:
            return found
        with self.db.read() as session:
            row = token_store.find(session, token)
            if row is None:
                return None
            principal = Principal(row.name, row.role, row.id)
            stale = row.last_used_at
        if token_store.needs_touch(stale):
            with self.db.transaction() as session:
                token_store.touch(session, principal.token_id or 0)
        return principal


_bearer = HTTPBearer(auto_error=False, description="An API token: `calsync tokens create --role ROLE`.")


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def allow(*roles: str) -> Callable[..., Principal]:
    """A dependency: the caller, if its token is valid (else 401) and its role is one of ``roles`` (else 403)."""

    def dependency(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Principal:
        if credentials is None or not credentials.credentials:
            raise _unauthorized("no API token: send 'Authorization: Bearer <token>' (`calsync tokens create`)")
        authenticator: Authenticator = request.app.state.authenticator
        principal = authenticator.authenticate(credentials.credentials)
        if principal is None:
            raise _unauthorized("the API token is not valid (unknown or revoked)")
        if principal.role not in roles:
            raise HTTPException(
                403, f"a token with role '{principal.role}' may not do this; roles allowed: {', '.join(roles)}"
            )
        return principal

    return dependency


# Handler parameters: the caller, checked for the right role.
Changer = Annotated[Principal, Depends(allow(*CHANGE))]
AdminReader = Annotated[Principal, Depends(allow(*READ_ADMIN))]
CalendarReader = Annotated[Principal, Depends(allow(*READ_CALENDAR))]

"""Admin API tokens: created with a role, kept only as a hash, looked up by the token, revoked."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from calsync.roles import API_ROLES as ROLES

from .tables import ApiTokenRow, utcnow

TOKEN_PREFIX = "cst_"
MIN_TOKEN_LENGTH = 24
LAST_USED_RESOLUTION = timedelta(minutes=1)  # last_used_at is written at most this often per token


class TokenError(ValueError):
    """A token request that cannot be carried out; the message says why and what is allowed."""


def check_role(role: str) -> str:
    value = role.strip().lower()
    if value not in ROLES:
        raise TokenError(f"unknown role '{role}'; roles are: {', '.join(ROLES)}")
    return value


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh token: ``cst_`` and 43 characters of A-Z a-z 0-9 _ - (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def create(session: Session, role: str, name: str, token: str | None = None) -> tuple[ApiTokenRow, str]:
    """Store a new token (``token`` given, or a fresh one) and return its row and the token itself, which is
    never stored and cannot be shown again."""
    role = check_role(role)
    name = name.strip()
    if not 1 <= len(name) <= 128:
        raise TokenError("a token's name must be 1..128 characters")
    value = token if token is not None else new_token()
    if len(value) < MIN_TOKEN_LENGTH:
        raise TokenError(f"a token must be at least {MIN_TOKEN_LENGTH} characters")
    digest = token_hash(value)
    if session.scalar(select(ApiTokenRow.id).where(ApiTokenRow.token_hash == digest)) is not None:
        raise TokenError("this token exists already")
    row = ApiTokenRow(name=name, role=role, token_hash=digest, prefix=value[:8])
    session.add(row)
    session.flush()
    return row, value


def find(session: Session, token: str) -> ApiTokenRow | None:
    """The live (not revoked) token row for this token, or None."""
    row = session.scalar(select(ApiTokenRow).where(ApiTokenRow.token_hash == token_hash(token)))
    if row is None or row.revoked_at is not None:
        return None
    return row


def needs_touch(last_used_at: datetime | None, now: datetime | None = None) -> bool:
    """Whether ``last_used_at`` is old enough to be written again (it is kept to the minute, not per request)."""
    return last_used_at is None or (now or utcnow()) - last_used_at >= LAST_USED_RESOLUTION


def touch(session: Session, token_id: int, now: datetime | None = None) -> None:
    """Note that the token was used."""
    row = session.get(ApiTokenRow, token_id)
    if row is not None:
        row.last_used_at = now or utcnow()


def listing(session: Session) -> list[ApiTokenRow]:
    return list(session.scalars(select(ApiTokenRow).order_by(ApiTokenRow.id)))


def revoke(session: Session, token_id: int) -> ApiTokenRow:
    row = session.get(ApiTokenRow, token_id)
    if row is None:
        raise TokenError(f"no token with id {token_id}; `calsync tokens list` shows them")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row

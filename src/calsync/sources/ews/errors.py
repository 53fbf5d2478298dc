"""What a failure talking to Exchange over EWS means, as a :class:`~calsync.sources.base.SourceError`
(``classify``): transient, permanent, an expired sync state or watermark, each with a stable catalogue code and
a message that names the mailbox and never holds a secret.

exchangelib re-raises a 503, a dropped connection or a timeout as ``ErrorServerBusy`` (or ``ErrorTimeoutExpired``)
"Reraised from ..." with a back-off of its own that Exchange never asked for: ``classify`` follows the exception
chain back to what happened and reports only a back-off Exchange asked for.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import requests
from exchangelib import errors as xerr

from calsync.sources.base import SourceError

from .client import ServiceUnavailable

__all__ = ["classify"]

_CONNECTION_ERRORS = (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError, ConnectionError)
_TIMEOUTS = (requests.exceptions.Timeout, TimeoutError)


def _unwrap(exc: BaseException) -> BaseException:
    """exchangelib re-raises 503s, transient errors and lost connections as ``ErrorServerBusy('Reraised from
    ...')``, and connection errors as ``ErrorTimeoutExpired('Reraised from ...')``: the original is in the chain."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = exc.__cause__ or exc.__context__
        if inner is None or not str(exc).startswith("Reraised from"):
            return exc
        if not isinstance(exc, xerr.ErrorServerBusy | xerr.ErrorTimeoutExpired):
            return exc
        exc = inner
    return exc


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


def classify(exc: BaseException, *, mailbox: str | None = None, secrets: Iterable[str] = ()) -> SourceError:
    """What a failure talking to Exchange means for the caller, as a SourceError (see its ``kind``).

    ``mailbox`` is named in the message when given; every string in ``secrets`` (the password, ...) is
    replaced by ``***`` in the message."""
    secrets = tuple(secrets)

    def error(kind: Any, code: str, message: str, back_off: float | None = None) -> SourceError:
        return SourceError(kind, code, _scrub(message, secrets), back_off=back_off)

    if isinstance(exc, SourceError):
        return error(exc.kind, exc.code, exc.message, exc.back_off)
    who = f" for {mailbox}" if mailbox else ""
    cause = _unwrap(exc)
    name = type(cause).__name__
    detail = str(cause)[:300]
    if isinstance(cause, xerr.ErrorServerBusy):
        back_off = cause.back_off if cause.back_off and cause.back_off > 0 else None
        wait = f"; it asked to wait {back_off:g} s" if back_off else ""
        return error(
            "transient",
            "server_busy",
            f"Exchange is busy and refused the request{who}{wait} (ErrorServerBusy).",
            back_off,
        )
    if isinstance(cause, ServiceUnavailable):
        return error(
            "transient",
            "service_unavailable",
            f"Exchange answered 503 Service Unavailable{who}.",
            cause.retry_after,
        )
    if isinstance(cause, xerr.ErrorTimeoutExpired):
        inner = cause.__cause__ or cause.__context__
        if isinstance(inner, _TIMEOUTS):
            return error("transient", "timeout", f"Exchange did not answer in time{who} ({type(inner).__name__}).")
        if isinstance(inner, _CONNECTION_ERRORS):
            return error(
                "transient",
                "connection_failed",
                f"The connection to Exchange broke{who} ({type(inner).__name__}: {str(inner)[:200]}).",
            )
        return error("transient", "timeout", f"Exchange timed out{who} (ErrorTimeoutExpired: {detail}).")
    if isinstance(cause, _TIMEOUTS):
        return error("transient", "timeout", f"Exchange did not answer in time{who} ({name}).")
    if isinstance(cause, _CONNECTION_ERRORS):
        return error("transient", "connection_failed", f"Could not talk to Exchange{who} ({name}: {detail}).")
    the_mailbox = f"the mailbox {mailbox}" if mailbox else "the mailbox"
    if isinstance(cause, xerr.ErrorMailboxMoveInProgress):
        return error("transient", "mailbox_move_in_progress", f"Exchange is moving {the_mailbox} to another database.")
    if isinstance(cause, xerr.ErrorMailboxStoreUnavailable):
        return error("transient", "mailbox_store_unavailable", f"The database holding {the_mailbox} is not available.")
    if isinstance(
        cause,
        xerr.ErrorInternalServerTransientError
        | xerr.ErrorConnectionFailedTransientError
        | xerr.ErrorTooManyObjectsOpened
        | xerr.CASError,
    ):
        return error("transient", "server_error", f"Exchange reported a temporary failure{who} ({name}: {detail}).")
    if isinstance(cause, xerr.UnauthorizedError):
        return error(
            "permanent",
            "credentials_rejected",
            "Exchange rejected the service account's user name or password (HTTP 401); "
            "check the EWS credentials in the settings.",
        )
    if isinstance(cause, xerr.ErrorNonExistentMailbox | xerr.ErrorNameResolutionNoResults):
        target = mailbox or "the address"
        return error("permanent", "mailbox_not_found", f"{target} is not a mailbox on this Exchange server ({name}).")
    if isinstance(cause, xerr.ErrorImpersonateUserDenied):
        target = mailbox or "this mailbox"
        return error(
            "permanent",
            "impersonation_denied",
            f"The service account may not impersonate {target}: it needs the ApplicationImpersonation role "
            "for this mailbox (ask an Exchange administrator).",
        )
    if isinstance(cause, xerr.ErrorAccessDenied):
        target = mailbox or "the mailbox"
        return error("permanent", "access_denied", f"Exchange denied the service account access to {target}: {detail}")
    if isinstance(cause, xerr.ErrorInvalidSyncStateData):
        return error(
            "sync_state_invalid",
            "sync_state_expired",
            f"Exchange no longer accepts the stored sync state{who}; the calendar must be read again in full.",
        )
    if isinstance(cause, xerr.ErrorInvalidWatermark):
        return error(
            "watermark_invalid",
            "watermark_expired",
            f"Exchange no longer accepts the stored watermark{who}; a new subscription is needed.",
        )
    return error("transient", "exchange_error", f"Unexpected failure talking to Exchange{who}: {name}: {detail}")

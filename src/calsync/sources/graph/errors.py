"""What a failure talking to Microsoft Graph (or to Entra ID for its token) means, as a
:class:`~calsync.sources.base.SourceError` with a catalogue code, a message that names the mailbox and never
holds a secret, and the back-off Graph asked for."""

from __future__ import annotations

from collections.abc import Iterable

import httpx

from calsync.sources.base import SourceError

from .client import AuthError, GraphError

__all__ = ["classify"]

_MAILBOX_MISSING = ("ResourceNotFound", "ErrorInvalidUser", "Request_ResourceNotFound", "ErrorNonExistentMailbox")
_NOT_LICENSED = ("MailboxNotEnabledForRESTAPI", "MailboxNotSupportedForRESTAPI", "ErrorMailboxNotEnabledForRESTAPI")
_NO_CONSENT = ("Authorization_RequestDenied", "ErrorAccessDenied", "AccessDenied", "Forbidden")


def classify(exc: BaseException, *, mailbox: str | None = None, secrets: Iterable[str] = ()) -> SourceError:
    """A Graph, Entra ID or network failure as a SourceError (``transient`` is worth retrying)."""
    found = _classify(exc, mailbox)
    message = found.message
    for secret in secrets:
        if secret and len(secret) >= 3:
            message = message.replace(secret, "***")
    return SourceError(found.kind, found.code, message, back_off=found.back_off)


def _classify(exc: BaseException, mailbox: str | None) -> SourceError:
    who = f" for {mailbox}" if mailbox else ""
    the_mailbox = mailbox or "the mailbox"
    if isinstance(exc, SourceError):
        return exc
    if isinstance(exc, AuthError):
        return _auth(exc)
    if isinstance(exc, httpx.TimeoutException):
        return SourceError("transient", "timeout", f"Microsoft Graph did not answer in time{who}.")
    if isinstance(exc, httpx.TransportError):
        return SourceError(
            "transient", "connection_failed", f"Could not talk to Microsoft Graph{who} ({type(exc).__name__}: {exc})."
        )
    if not isinstance(exc, GraphError):
        return SourceError("transient", "exchange_error", f"Unexpected failure talking to Graph{who}: {exc!r}")
    detail = f"({exc.status} {exc.code}: {exc.message[:200]})"
    if exc.status == 429:
        wait = f"; it asked to wait {exc.retry_after:g} s" if exc.retry_after else ""
        return SourceError(
            "transient", "server_busy", f"Graph is throttling calsync{who}{wait} {detail}.", back_off=exc.retry_after
        )
    if exc.status == 503:
        return SourceError(
            "transient", "service_unavailable", f"Graph answered 503{who} {detail}.", back_off=exc.retry_after
        )
    if exc.status >= 500:
        return SourceError("transient", "server_error", f"Graph failed internally{who} {detail}.")
    if exc.status == 410:
        return SourceError("sync_state_invalid", "sync_state_expired", f"Graph no longer knows the delta token{who}.")
    if exc.status == 401:
        return SourceError(
            "permanent", "credentials_rejected", f"Graph refused calsync's token{who} {detail}; check the app's secret."
        )
    if exc.code in _NOT_LICENSED:
        return SourceError(
            "permanent",
            "mailbox_not_licensed",
            f"{the_mailbox} has no Exchange Online mailbox Graph can reach (not licensed, inactive, or on-premises) "
            f"{detail}.",
        )
    if exc.status == 404 and exc.code in _MAILBOX_MISSING:
        return SourceError("permanent", "mailbox_not_found", f"{the_mailbox} is not a mailbox in this tenant {detail}.")
    if exc.status == 403 or exc.code in _NO_CONSENT:
        return SourceError(
            "permanent",
            "graph_consent_missing",
            f"The app may not read {the_mailbox}'s calendar {detail}: it needs the Calendars.ReadWrite application "
            "permission with admin consent (and an application access policy that includes this mailbox).",
        )
    if exc.status == 400 and ("validation" in exc.message.lower() or "notificationurl" in exc.message.lower()):
        return SourceError(  # transient: a listener restarting must not page anybody; a lasting one does
            "transient",
            "subscription_validation_failed",
            f"Graph could not validate calsync's notification URL{who} {detail}: Graph must reach the listener "
            "over https from the internet and get the validation token back within 10 seconds.",
        )
    return SourceError("transient", "exchange_error", f"Graph answered an unexpected error{who} {detail}.")


def _auth(exc: AuthError) -> SourceError:
    first_line = (exc.description.splitlines() or [""])[0]  # the rest is Entra's trace and correlation ids
    text = f"{exc.error}: {first_line[:300]}"
    if "AADSTS700016" in exc.description or exc.error == "unauthorized_client":
        return SourceError(
            "permanent",
            "graph_app_not_found",
            f"Entra ID does not know the app (client id) in this tenant ({text}); check graph_client_id and "
            "graph_tenant_id, and that the app is registered there.",
        )
    if "AADSTS7000215" in exc.description or "AADSTS700027" in exc.description or exc.error == "invalid_client":
        return SourceError(
            "permanent",
            "credentials_rejected",
            f"Entra ID refused the app's secret or certificate ({text}); set a valid graph_client_secret or "
            "graph_certificate.",
        )
    if "AADSTS90002" in exc.description or (exc.error == "invalid_request" and "tenant" in exc.description.lower()):
        return SourceError("permanent", "graph_app_not_found", f"Entra ID does not know the tenant ({text}).")
    return SourceError("transient", "exchange_error", f"Entra ID gave no token ({text}).")

"""calsync's Microsoft Graph client: httpx for the requests, MSAL for the tokens.

Tokens: client credentials (a secret, or a certificate: its PEM private key and thumbprint) through MSAL's
``ConfidentialClientApplication``, which caches the token and asks Entra ID for a new one before it expires;
a 401 drops the cached token and retries once with a new one. Requests: at most :data:`PER_MAILBOX` at once
per mailbox (Graph's limit of 4 concurrent requests per app and mailbox), JSON in and out; a 429 or 503
becomes :class:`GraphError` with the ``Retry-After`` Graph asked for; any other error status too, with Graph's
error code and message. ``batch`` sends up to 20 requests in one JSON ``$batch``.

Why not msgraph-sdk: calsync's engine is threaded and synchronous, and needs only a few calls with exact
control of paging links, ``Prefer`` headers and errors; the SDK is asynchronous and retries on its own. Its
emulator is checked with msgraph-sdk instead (tests/test_emulator_graph_*).
"""

from __future__ import annotations

import contextlib
import logging
import re
import ssl
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import msal
import requests

__all__ = ["GRAPH_SCOPE", "PER_MAILBOX", "AuthError", "GraphClient", "GraphError", "Request"]

log = logging.getLogger("calsync.sources.graph")

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
PER_MAILBOX = 4  # concurrent requests per app and mailbox that Graph allows
MAX_BATCH = 20  # requests in one JSON $batch


class GraphError(Exception):
    """Graph answered with an error: its HTTP status, error code and message, and Retry-After (seconds)."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class AuthError(Exception):
    """Entra ID refused a token: its error and description (AADSTS codes)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description


@dataclass(frozen=True)
class Request:
    """One request of a JSON $batch."""

    method: str
    url: str  # relative to the endpoint, e.g. /users/ann@example.com/events/ID
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class GraphClient:
    """Thread-safe: one client serves every worker thread."""

    def __init__(
        self,
        *,
        endpoint: str,
        authority: str,
        tenant_id: str,
        client_id: str,
        client_secret: str | None = None,
        certificate: Path | None = None,
        ca_file: Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        if not client_secret and certificate is None:
            raise ValueError("a Graph connection needs graph_client_secret or graph_certificate")
        self.endpoint = endpoint.rstrip("/")
        credential: Any = client_secret
        if certificate is not None:
            credential = certificate_credential(certificate.read_text())
        self._session = _TokenSession(ca_file, timeout)
        # Made at the first token: MSAL asks the authority about the tenant as it is made, and a tenant it does not
        # know must be a failure of the operator's pass (graph_app_not_found), not of calsync's start.
        self._make_app = lambda: msal.ConfidentialClientApplication(
            client_id,
            client_credential=credential,
            authority=f"{authority.rstrip('/')}/{tenant_id}",
            http_client=self._session,
            # Instance discovery asks login.microsoftonline.com about the authority: only for Microsoft's own.
            instance_discovery=urlsplit(authority).hostname == "login.microsoftonline.com",
        )
        self._app: msal.ConfidentialClientApplication | None = None
        verify: Any = ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else True
        self._http = httpx.Client(verify=verify, timeout=timeout, limits=httpx.Limits(max_connections=32))
        self._token_lock = threading.Lock()
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._slots_lock = threading.Lock()
        self.requests = 0

    # --- tokens ------------------------------------------------------------------------------------------------

    def token(self, *, fresh: bool = False) -> str:
        """An access token for Graph (MSAL's cached one until it nears expiry; ``fresh``: a new one)."""
        with self._token_lock:
            if self._app is None:
                try:
                    self._app = self._make_app()
                except ValueError as exc:  # MSAL: the authority does not know the tenant
                    raise AuthError("invalid_tenant", f"AADSTS90002: {exc}") from exc
            if fresh:
                self._app.remove_tokens_for_client()
            result = self._app.acquire_token_for_client(scopes=[GRAPH_SCOPE])
        if "access_token" not in result:
            raise AuthError(str(result.get("error", "unknown_error")), str(result.get("error_description", "")))
        return str(result["access_token"])

    # --- requests ----------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _slot(self, mailbox: str | None) -> Iterator[None]:
        if mailbox is None:
            yield
            return
        with self._slots_lock:
            slot = self._slots.setdefault(mailbox.lower(), threading.BoundedSemaphore(PER_MAILBOX))
        with slot:
            yield

    def url(self, path_or_url: str) -> str:
        return path_or_url if path_or_url.startswith(("http://", "https://")) else self.endpoint + path_or_url

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        mailbox: str | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One request (a path relative to the endpoint, or an absolute link Graph gave); raises GraphError for an
        error answer, AuthError when no token can be had, httpx errors for the network."""
        with self._slot(mailbox):
            response = self._send(method, path_or_url, json, headers, params, fresh=False)
            if response.status_code == 401:  # the token may have been revoked or expired early: once more
                response = self._send(method, path_or_url, json, headers, params, fresh=True)
        if response.status_code >= 400:
            raise error_of(response)
        return response

    def _send(
        self,
        method: str,
        path_or_url: str,
        body: Any,
        headers: dict[str, str] | None,
        params: dict[str, str] | None,
        *,
        fresh: bool,
    ) -> httpx.Response:
        sent = {"Authorization": f"Bearer {self.token(fresh=fresh)}", **(headers or {})}
        self.requests += 1
        return self._http.request(method, self.url(path_or_url), json=body, headers=sent, params=params)

    def batch(self, requests: Sequence[Request], *, mailbox: str | None = None) -> list[tuple[int, Any]]:
        """``(status, body)`` of each request, in order, sent :data:`MAX_BATCH` at a time in JSON $batch calls.
        The batch call itself failing raises as :meth:`request` does; one request failing is its own answer."""
        answers: list[tuple[int, Any]] = []
        for first in range(0, len(requests), MAX_BATCH):
            chunk = requests[first : first + MAX_BATCH]
            payload = {
                "requests": [
                    {"id": str(i), "method": r.method, "url": r.url, "headers": r.headers}
                    | ({"body": r.body, "headers": {"Content-Type": "application/json", **r.headers}} if r.body else {})
                    for i, r in enumerate(chunk)
                ]
            }
            found = self.request("POST", "/$batch", mailbox=mailbox, json=payload).json()
            by_id = {str(r.get("id")): r for r in found.get("responses", [])}
            for i in range(len(chunk)):
                reply = by_id.get(str(i))
                if reply is None:
                    raise GraphError(502, "BatchIncomplete", f"the $batch answer has no response {i}")
                answers.append((int(reply.get("status", 500)), reply.get("body")))
        return answers

    def close(self) -> None:
        self._http.close()
        self._session.close()


class _TokenSession(requests.Session):
    """MSAL's HTTP session, calsync's own so that it can be closed and has a timeout (MSAL ignores its
    ``timeout`` when given a session). With ``ca_file`` it trusts exactly that file: requests otherwise lets
    ``REQUESTS_CA_BUNDLE`` (or ``CURL_CA_BUNDLE``) override a session's ``verify`` on every request."""

    def __init__(self, ca_file: Path | None, timeout: float) -> None:
        super().__init__()
        self.ca_file = ca_file
        self.timeout = timeout
        if ca_file is not None:
            self.verify = str(ca_file)

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        return super().request(*args, **kwargs)

    def merge_environment_settings(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        merged: dict[str, Any] = super().merge_environment_settings(*args, **kwargs)
        if self.ca_file is not None:
            merged["verify"] = self.verify
        return merged


_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", re.DOTALL)


def certificate_credential(pem: str) -> dict[str, str]:
    """MSAL's client credential for a PEM file holding a private key and its certificate: the key, and the
    certificate from which MSAL computes the SHA-256 thumbprint (and sends it, ``x5c``)."""
    blocks = {m.group(1): m.group(0) for m in _PEM_BLOCK.finditer(pem)}
    key = next((block for name, block in blocks.items() if name.endswith("PRIVATE KEY")), None)
    certificate = blocks.get("CERTIFICATE")
    if key is None or certificate is None:
        raise ValueError("the certificate file must hold a PEM private key and a PEM certificate")
    return {"private_key": key, "public_certificate": certificate}


def error_of(response: httpx.Response) -> GraphError:
    """Graph's error answer as a GraphError (its JSON ``error.code`` and ``message`` when there is one)."""
    code, message = f"HTTP{response.status_code}", response.reason_phrase
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        body = response.json().get("error") or {}
        code, message = str(body.get("code") or code), str(body.get("message") or message)
    return GraphError(response.status_code, code, message, retry_after(response.headers.get("Retry-After")))


def retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (Graph may send a fraction); None when absent or not a number."""
    try:
        seconds = float(value or "")
    except ValueError:
        return None
    return seconds if seconds > 0 else None

"""Does the public listener URL come back to this listener? calsync asks it itself, through whatever proxy or load
balancer is in front: a GET with a nonce (``X-Calsync-Probe``) that only a listener of this deployment answers
with the nonce's HMAC under the listener secret. ``calsync serve`` checks when it starts and whenever the
listener URL changes, and stores the result (``listener_checks``): ``calsync status``, the admin API and
ManagePushSubscriptions read it (a passing check plus pushes that never come means Exchange does not deliver,
not that the listener cannot be reached).

What it cannot see: a firewall between the Exchange servers and the listener that this machine passes. The
check proves the URL is right and served, not that Exchange can reach it.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

import httpx

from .app import PROBE_ANSWER_HEADER, PROBE_HEADER, probe_answer

TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Reachability:
    ok: bool
    detail: str  # one line: what was found, and what to do when it is wrong


def check(url: str, secret: str, *, timeout: float = TIMEOUT_SECONDS, verify: bool = True) -> Reachability:
    """Probe ``url`` (the listener URL Exchange is given, secret path included) once. The detail is stored and
    shown, so the secret is masked in it."""
    found = _probe(url, secret, timeout, verify)
    return Reachability(found.ok, found.detail.replace(secret, "***") if secret else found.detail)


def _probe(url: str, secret: str, timeout: float, verify: bool) -> Reachability:
    nonce = secrets.token_urlsafe(24)
    try:
        answer = httpx.get(url, headers={PROBE_HEADER: nonce}, timeout=timeout, follow_redirects=False, verify=verify)
    except httpx.HTTPError as exc:
        return Reachability(
            False,
            f"{url} could not be reached from this machine ({type(exc).__name__}: {exc}); check the "
            "listener_url setting (PushNotificationsListener), DNS, the reverse proxy and its TLS certificate",
        )
    if answer.status_code == 403:
        return Reachability(
            False,
            f"{url} refused this machine (403): listener_allowed_networks leaves it out; add this machine's "
            "address to check the URL, or ignore this if only Exchange may reach the listener",
        )
    if answer.status_code == 404:
        return Reachability(
            False,
            f"{url} answered 404: it is not this listener's path, or its last segment is not the current "
            "listener secret; set listener_url to the URL `calsync config check` shows",
        )
    if answer.status_code != 200:
        return Reachability(
            False, f"{url} answered HTTP {answer.status_code} instead of the listener (a proxy or another service?)"
        )
    given = answer.headers.get(PROBE_ANSWER_HEADER, "")
    if not given:
        return Reachability(False, f"{url} answered, but not as a calsync listener (a proxy page or another service?)")
    if not hmac.compare_digest(given, probe_answer(secret, nonce)):
        return Reachability(
            False, f"{url} is served by a calsync listener with another secret: another deployment, or a stale one"
        )
    return Reachability(True, f"{url} comes back to this listener")

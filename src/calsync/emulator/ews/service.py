"""One EWS request from arrival to answer: Basic authentication, the requested server version, the
impersonation header, throttling, then the operation named by the body element.

This module knows nothing about HTTP frameworks: it takes bytes and headers and returns a status code,
bytes and headers, so the server module stays a thin adapter.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from ..exchange import Account, Exchange
from ..model import Mailbox
from . import dialect
from .soap import (
    EwsError,
    SoapFault,
    envelope,
    fault_envelope,
    parse_xml,
    split_envelope,
    t,
    text_of,
)

log = logging.getLogger("calsync.emulator")

# RequestServerVersion values in the order Exchange introduced them.
API_VERSIONS = (
    "Exchange2007",
    "Exchange2007_SP1",
    "Exchange2009",
    "Exchange2010",
    "Exchange2010_SP1",
    "Exchange2010_SP2",
    "Exchange2013",
    "Exchange2013_SP1",
    "Exchange2015",
    "Exchange2016",
    "V2015_10_05",
    "V2016_01_06",
    "V2016_04_13",
    "V2016_07_13",
    "V2016_10_10",
    "V2017_01_07",
    "V2017_04_14",
    "V2017_07_11",
)
_MAX_API = {"Exchange2010": "Exchange2010_SP2", "Exchange2013": "Exchange2013_SP1"}


@dataclass
class Request:
    """What an operation sees of the request it serves."""

    exchange: Exchange
    account: Account
    headers: dict[str, etree._Element]
    api_version: str
    impersonated: Mailbox | None = None
    anchor: str | None = None
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def is_2007(self) -> bool:
        return self.api_version in ("Exchange2007", "Exchange2007_SP1")

    def mailbox(self, explicit: str | None = None) -> Mailbox:
        """The mailbox a request acts on: the impersonated one, one named in the request, or the caller's own."""
        if self.impersonated is not None and explicit is None:
            return self.impersonated
        if explicit is not None:
            target = self.exchange.mailbox(explicit)
            if self.impersonated is not None and target is not self.impersonated and not self.account.impersonation:
                raise EwsError("ErrorAccessDenied", "Access is denied. Check credentials and try again.")
            if (
                self.impersonated is None
                and not self.account.impersonation
                and target.address.lower() != self.account.username.lower()
            ):
                raise EwsError("ErrorAccessDenied", "Access is denied. Check credentials and try again.")
            return target
        own = self.exchange.mailboxes.get(self.account.username.lower())
        if own is None:
            raise EwsError("ErrorNonExistentMailbox", "The SMTP address has no mailbox associated with it.")
        return own


Operation = Callable[[Request, etree._Element], Any]  # an m:*Response element, or a streaming plan


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    drop_connection: bool = False
    stream: Any = None  # an object with ``documents()``: an async iterator of SOAP documents


BACKEND_SERVER = "EMU-MBX01.calsync.emulator"


def _affinity_headers(req: Request, headers: dict[str, str]) -> dict[str, str]:
    """``X-PreferServerAffinity: true`` asks which back-end server holds the mailbox, so that a group of
    subscriptions can stay on it: Exchange answers with an ``X-BackEndOverrideCookie`` cookie naming it."""
    if headers.get("x-preferserveraffinity", "").strip().lower() != "true":
        return {}
    mailbox = req.anchor or (req.impersonated.address if req.impersonated else req.account.username)
    backend = f"{BACKEND_SERVER}~{zlib.crc32(mailbox.strip().lower().encode())}"
    return {"Set-Cookie": f"X-BackEndOverrideCookie={backend}; path=/"}


class InFlight:
    """Concurrent requests per account, for Exchange's concurrency throttling."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def enter(self, user: str, limit: int) -> bool:
        with self._lock:
            n = self._counts.get(user, 0)
            if n >= limit:
                return False
            self._counts[user] = n + 1
            return True

    def leave(self, user: str) -> None:
        with self._lock:
            self._counts[user] = max(0, self._counts.get(user, 1) - 1)


class EwsService:
    def __init__(
        self, exchange: Exchange, operations: dict[str, Operation], check: Callable[[bytes], None] | None = None
    ) -> None:
        self.exchange = exchange
        self.operations = operations
        self.check = check  # strict mode: validate every response before it leaves
        self.in_flight = InFlight()

    # --- authentication --------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> Account | None:
        if not authorization or not authorization.lower().startswith("basic "):
            return None
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, password = decoded.partition(":")
        account = self.exchange.accounts.get(user.lower())
        if not sep or account is None or account.password != password:
            return None
        return account

    # --- the request -------------------------------------------------------------------------

    def handle(self, body: bytes, headers: dict[str, str]) -> Answer:
        server_version = self.exchange.version.server_version
        account = self.authenticate(headers.get("authorization"))
        if account is None:
            return Answer(401, b"", {"WWW-Authenticate": 'Basic realm="calsync-emulator"'})
        faults = self.exchange.faults
        if faults.take("http_503"):
            return Answer(503, b"Service Unavailable", {"Content-Type": "text/plain", "Retry-After": "1"})
        limit = self.exchange.version.concurrency_limit
        if not self.in_flight.enter(account.username.lower(), limit):
            self.exchange.count("throttled")
            return self._fault(
                SoapFault(
                    "ErrorServerBusy",
                    "The server cannot service this request right now. Try again later.",
                    details={"BackOffMilliseconds": "1000"},
                ),
                server_version,
            )
        try:
            if faults.slow_seconds > 0:  # a slow answer still counts against the concurrency limit
                time.sleep(faults.slow_seconds)
            return self._serve(body, headers, account, server_version)
        finally:
            self.in_flight.leave(account.username.lower())

    def _serve(self, body: bytes, headers: dict[str, str], account: Account, server_version: dict[str, str]) -> Answer:
        try:
            env = split_envelope(parse_xml(body))
            assert env.body is not None
            api_version = self._api_version(env.headers)
            req = Request(self.exchange, account, env.headers, api_version, anchor=headers.get("x-anchormailbox"))
            name = etree.QName(env.body).localname
            operation = self.operations.get(name)
            if (
                operation is None
                or etree.QName(env.body).namespace != "http://schemas.microsoft.com/exchange/services/2006/messages"
            ):
                raise SoapFault(
                    "ErrorSchemaValidation",
                    f"The request failed schema validation: '{name}' is not an operation this server supports.",
                )
            with self.exchange.lock:
                self._impersonate(req)
                affinity = _affinity_headers(req, headers)
                target = req.impersonated.address if req.impersonated else None
                if self.exchange.faults.take("server_busy", target):
                    self.exchange.count("server_busy_injected")
                    backoff = str(self.exchange.faults.server_busy_backoff_ms)
                    raise SoapFault(
                        "ErrorServerBusy",
                        "The server cannot service this request right now. Try again later.",
                        details={"BackOffMilliseconds": backoff},
                    )
                self.exchange.count(f"op:{name}")
                payload = operation(req, env.body)
            if not isinstance(payload, etree._Element):
                return Answer(200, b"", {"Content-Type": "text/xml; charset=utf-8", **affinity}, stream=payload)
            out = dialect.rewrite(envelope(payload, server_version), self.exchange.faults.dialects())
        except SoapFault as fault:
            return self._fault(fault, server_version)
        except EwsError as err:  # an error outside any response message: report it as a fault
            return self._fault(SoapFault(err.code, err.message, details=err.details), server_version)
        if self.check is not None:
            self.check(out)
        answer = Answer(200, out, {"Content-Type": "text/xml; charset=utf-8", **affinity})
        if self.exchange.faults.take("drop_connections"):
            answer.drop_connection = True
        return answer

    def _fault(self, fault: SoapFault, server_version: dict[str, str]) -> Answer:
        out = fault_envelope(fault, server_version)
        if self.check is not None:
            self.check(out)
        return Answer(fault.status, out, {"Content-Type": "text/xml; charset=utf-8"})

    def _api_version(self, headers: dict[str, etree._Element]) -> str:
        rsv = headers.get("RequestServerVersion")
        if rsv is None:
            return "Exchange2007_SP1"
        requested = rsv.get("Version", "")
        if requested not in API_VERSIONS:
            raise SoapFault("ErrorInvalidServerVersion", f"The specified server version '{requested}' is invalid.")
        server = self.exchange.version
        ceiling = _MAX_API.get(server.name, API_VERSIONS[-1])
        if API_VERSIONS.index(requested) > API_VERSIONS.index(ceiling):
            raise SoapFault(
                "ErrorInvalidServerVersion",
                f"The specified server version '{requested}' is not supported by this server.",
            )
        return requested

    def _impersonate(self, req: Request) -> None:
        header = req.headers.get("ExchangeImpersonation")
        if header is None:
            return
        sid = header.find(t("ConnectingSID"))
        address = None
        if sid is not None:
            for tag in ("PrimarySmtpAddress", "SmtpAddress", "PrincipalName"):
                address = text_of(sid, t(tag))
                if address:
                    break
        if not address:
            raise SoapFault(
                "ErrorInvalidExchangeImpersonationHeaderData",
                "The impersonation header must name the user by PrimarySmtpAddress, SmtpAddress or PrincipalName.",
            )
        mbx = self.exchange.mailboxes.get(address.lower())
        if mbx is None:
            raise SoapFault("ErrorNonExistentMailbox", "The SMTP address has no mailbox associated with it.")
        if not req.account.impersonation and address.lower() != req.account.username.lower():
            raise SoapFault(
                "ErrorImpersonateUserDenied", "The account does not have permission to impersonate the requested user."
            )
        req.impersonated = mbx

"""calsync's one settings object, read once at start-up and validated with messages an administrator can act on.

Where settings come from, highest priority first:

1. keyword arguments to :func:`load_settings` (or ``Settings(...)``);
2. environment variables: ``CALSYNC_<NAME>`` (``CALSYNC_BATCH_SIZE=100``) and, for settings that have one, the
   classic name that administrators know from CRM calendar integrations (``EWSBatchSize=100``);
3. a TOML file: the path given to :func:`load_settings`, else the path in ``CALSYNC_CONFIG``, else ``calsync.toml``
   in the working directory. Keys are the snake_case names or the classic names, at the top level of the file.

Names are matched without regard to case everywhere (``ewsbatchsize`` is ``EWSBatchSize``).

Settings: ``name`` / classic name: allowed values; default. Secrets are marked (secret).

``exchange_url`` / EWSNotificationsListenerURL
    http:// or https:// URL of the EWS endpoint, with a host and no user:password part;
    default ``http://127.0.0.1:8765/EWS/Exchange.asmx`` (the built-in emulator).
``exchange_version`` / ExchangeVersion
    Exchange2010, Exchange2013, Exchange2016, Exchange2019, Exchange365; default Exchange2016.
``batch_size`` / EWSBatchSize
    1..512 (items per SyncFolderItems call); default 512.
``listener_url`` / PushNotificationsListener
    the public base URL Exchange calls back, http:// or https:// with a host and no query or fragment;
    default ``http://127.0.0.1:8080``. The service appends ``/ews/notifications/<listener_secret>``.
``listener_secret`` (secret)
    16..128 characters of A-Z a-z 0-9 _ -; default unset (``calsync init`` generates one and stores it).
``listener_previous_secret`` (secret)
    the secret before a rotation, same rule as ``listener_secret``; default unset. The listener accepts it as well
    as ``listener_secret`` until ``listener_previous_secret_until``.
``listener_previous_secret_until``
    an ISO 8601 date and time with a zone (``2026-07-01T12:00:00Z``, ``2026-07-01T14:00:00+02:00``; a TOML
    offset date-time works too), kept in UTC; default unset: the previous secret works as long as it is set.
``listener_allowed_networks``
    networks in CIDR notation separated by ``;`` (a TOML list is accepted too), IPv4 or IPv6; a bare address is
    one host (``/32``, ``/128``); kept as a tuple of normalised networks; default none (every address may post).
``listener_trust_forwarded_for``
    true or false; default false. When true, the client address is the last ``X-Forwarded-For`` entry (the
    address the reverse proxy in front of calsync saw), not the socket peer.
``status_frequency`` / StatusFrequencyForEWSNotifications
    1..1440 minutes between heartbeats of an idle subscription; default 30.
``failure_recipients`` / NotifySyncFailureTo
    e-mail addresses separated by ``;`` (a TOML list is accepted too), kept as a tuple; default none (nobody).
``past_window_days`` / PastWindowDays
    0..3650 days of past appointments kept (the classic IsSkipAppointment rule); default 180.
``reconcile_interval_hours``
    0..720 hours; default 6. A mailbox without a sync pass for this long gets one anyway (the safety net
    that catches what slipped past every notification); 0 turns it off.
``process_notifications_interval_seconds`` / ProcessEWSPushNotifications
    1..86400 seconds; default 60.
``manage_subscriptions_interval_seconds`` / ManagePushSubscriptionsForCalendarSync
    1..86400 seconds; default 300.
``api_tokens`` (secret)
    admin API tokens given in the environment or the file, ``role:token`` pairs separated by ``,`` (roles admin,
    viewer, calendar; tokens of 24..256 characters); default unset. For tests and automated deployments; tokens
    made with ``calsync tokens create`` are kept (hashed) in the database instead.
``database_url`` (env ``CALSYNC_DATABASE_URL``)
    a SQLAlchemy URL whose database is sqlite or postgresql (any driver; we use ``postgresql+psycopg``); only the
    scheme is checked; default ``sqlite:///calsync.sqlite3``. A password in it is masked for display.
``auth_type``
    basic, ntlm, oauth; default basic.
``username``, ``password`` (secret)
    needed for basic and ntlm; defaults ``svc`` and ``secret``, the demo account of the built-in emulator.
``oauth_tenant_id``, ``oauth_client_id``, ``oauth_client_secret`` (secret)
    needed for oauth; default unset.
``graph_tenant_id``, ``graph_client_id``
    the Entra ID tenant (its id or a domain such as ``contoso.onmicrosoft.com``) and the application (client) id
    of the app registered for calsync; default unset (no Graph connection).
``graph_client_secret`` (secret), ``graph_certificate``
    the app's credential: a client secret, or the path of a PEM file holding the certificate's private key and
    the certificate itself (its thumbprint is computed from it); default unset. Graph is configured when the
    tenant, the client id and one of the two are set; setting only some of them is an error.
``graph_authority``
    https:// URL of the Entra ID authority (the tenant is appended); default ``https://login.microsoftonline.com``.
``graph_endpoint``
    http:// or https:// URL of Microsoft Graph v1.0; default ``https://graph.microsoft.com/v1.0``.
``graph_ca_file``
    path of a PEM file of certificate authorities trusted for Graph and the authority (the emulator's CA);
    default unset (the system's).
``graph_listener_url``
    the public https base URL Graph calls back (``/graph/notifications/<listener_secret>`` is appended); default
    unset: ``listener_url``.
``graph_subscription_minutes``
    45..10080 minutes a Graph subscription lives before it must be renewed; default 4230 (the documented maximum
    for Outlook events).
``graph_renew_before_minutes``
    10..1440 minutes before its expiry a Graph subscription is renewed, less than ``graph_subscription_minutes``;
    default 360.
``graph_future_days``
    30..3650 days ahead that Graph's calendar delta covers (the window moves forward when half of it is left);
    default 730.
``smtp_host``
    host name or IP address of the mail server for failure e-mails; default unset (no e-mail is sent).
``smtp_port``
    1..65535; default 25.
``smtp_security``
    none, starttls, tls; default none.
``smtp_username``, ``smtp_password`` (secret)
    SMTP login; default unset (no login). A password is required when a user name is set.
``smtp_sender``
    one e-mail address; default ``calsync@localhost``.
``log_level``
    DEBUG, INFO, WARNING, ERROR; default INFO.

Choices are matched regardless of case (``exchange2016``, ``debug``, ``NTLM``).

Decisions worth knowing:

* Every problem is collected and reported at once by :func:`load_settings` as a :class:`SettingsError`, one line
  per problem: ``batch_size (EWSBatchSize): 600 is out of range; allowed: 1..512``. A raw pydantic
  ``ValidationError`` never escapes (its text would echo secret inputs). Messages never echo a secret's value,
  nor a URL that carries a password.
* A key in the TOML file that is not a setting is an error, with a "did you mean" and the accepted names, and so is an
  unknown ``CALSYNC_*`` environment variable, except those other parts of calsync use (:data:`IGNORED_ENV`).
  Giving one setting twice in one source (``batch_size`` and ``EWSBatchSize`` in one file, or
  ``CALSYNC_BATCH_SIZE`` and ``EWSBatchSize`` in the environment) with different values is an error too.
* A config file named explicitly (argument or ``CALSYNC_CONFIG``) must exist; the default ``calsync.toml`` may be
  absent. An empty value for an optional text setting (``CALSYNC_SMTP_HOST=``) means unset.
* Credentials: ``basic`` and ``ntlm`` need ``username`` and ``password``; ``oauth`` needs ``oauth_tenant_id``,
  ``oauth_client_id`` and ``oauth_client_secret``. That is checked only with ``load_settings(require_credentials=True)``
  so that ``calsync config check`` works on a fresh machine; :meth:`Settings.missing_credentials` lists what is
  missing without raising. The defaults ``svc``/``secret`` are the demo account of the built-in emulator
  (``calsync emulator --account svc:secret``): change them for a real Exchange.
* E-mail addresses are checked with a regular expression for the common ``local@domain`` form (RFC 5322 dot-atom
  local part of at most 64 characters, a DNS host name of labels of letters, digits and hyphens, at most 254
  characters in all; no quoted local parts, IP literals, display names or non-ASCII). Single-label and internal
  domains (``calsync@localhost``, ``ann@contoso.local``) are accepted on purpose: on-premises Exchange uses them, and
  the ``email-validator`` package rejects them as special-use names.
* Which source a new operator uses: ``graph`` when ``exchange_version`` is ``Exchange365`` and Graph is configured
  (:attr:`Settings.default_source`), else ``ews``; ``calsync operators add --source`` chooses explicitly. Both
  connections may be configured at once: each operator uses its own.
* The job intervals are initial values only: at run time the job table in the database wins.
* The ``listener_secret`` is the last path segment of the callback URL (``/ews/notifications/<secret>``); use
  :func:`listener_callback_url` to build it and :func:`new_listener_secret` to make one.
* Rotating the secret: set ``listener_previous_secret`` to the old value, ``listener_secret`` to the new one and
  ``listener_previous_secret_until`` to the end of the grace period (at least one run of the subscription job plus
  a StatusFrequency later). Subscriptions created with the old callback URL keep delivering meanwhile, and the
  subscription job re-subscribes every mailbox whose stored callback URL is not the current one.
  :func:`listener_secrets` is what the listener accepts at a given moment. A ``listener_previous_secret_until``
  without a zone is refused rather than guessed (local time or UTC?); a date without a time is refused too.
* ``listener_allowed_networks`` only guards the push listener (``/ews/notifications/...``), not the calendar API.
  An entry with host bits set (``10.1.2.3/8``) is refused with the network it probably meant, not silently
  widened. ``listener_trust_forwarded_for`` is only safe when the listener cannot be reached except through one
  reverse proxy that sets or appends to the header: anybody who can reach the listener directly writes the header
  and so chooses the address the allow-list and the per-address limit of refused requests see. The *last* entry is
  used, not the first: the first is whatever the client wrote when the proxy appends (nginx
  ``$proxy_add_x_forwarded_for``, HAProxy, most load balancers). See ``calsync.listener.app`` for the details.
* Environment variables are read by our own source rather than pydantic-settings' ``EnvSettingsSource``: that one
  drops the prefix for any field with an alias (so ``CALSYNC_`` names and classic names cannot both work),
  JSON-decodes tuple fields (``a@x;b@y`` would fail) and cannot report unknown variables. The TOML source is
  pydantic-settings' ``TomlConfigSettingsSource`` with three gaps filled: it silently skips a missing file, lets
  ``tomllib.TOMLDecodeError`` escape, and leaves unknown keys to a bare "Extra inputs are not permitted".
* Sources report their problems through a context variable that :func:`load_settings` sets, so that they are listed
  together with pydantic's validation errors. ``Settings()`` called directly works too, but raises at the first
  source problem and lets pydantic's ``ValidationError`` through: use :func:`load_settings`.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import secrets
import tomllib
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource
from pydantic_settings import SettingsError as _PydanticSettingsError

from calsync.addresses import is_email_address, is_hostname
from calsync.roles import API_ROLES

__all__ = [
    "CLASSIC_NAMES",
    "CONFIG_ENV",
    "DEFAULT_CONFIG_FILE",
    "ENV_PREFIX",
    "EXCHANGE_VERSIONS",
    "IGNORED_ENV",
    "MASK",
    "Settings",
    "SettingsError",
    "effective_settings",
    "is_email_address",
    "listener_callback_url",
    "listener_secrets",
    "load_settings",
    "new_listener_secret",
    "setting_label",
]

ENV_PREFIX = "CALSYNC_"
CONFIG_ENV = "CALSYNC_CONFIG"
DEFAULT_CONFIG_FILE = Path("calsync.toml")
#: ``CALSYNC_*`` environment variables that are not settings but are used by other parts of calsync.
IGNORED_ENV = frozenset({CONFIG_ENV, "CALSYNC_EWS_REFERENCE", "CALSYNC_TEST_POSTGRES", "CALSYNC_SCREENSHOTS"})
MASK = "********"

EXCHANGE_VERSIONS = ("Exchange2010", "Exchange2013", "Exchange2016", "Exchange2019", "Exchange365")
ExchangeVersion = Literal["Exchange2010", "Exchange2013", "Exchange2016", "Exchange2019", "Exchange365"]
AuthType = Literal["basic", "ntlm", "oauth"]
SmtpSecurity = Literal["none", "starttls", "tls"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]

#: Which credential settings each auth_type needs.
REQUIRED_CREDENTIALS: dict[str, tuple[str, ...]] = {
    "basic": ("username", "password"),
    "ntlm": ("username", "password"),
    "oauth": ("oauth_tenant_id", "oauth_client_id", "oauth_client_secret"),
}


@dataclass(frozen=True)
class _Rule:
    """Field metadata: what values are allowed (for messages) and the classic name, if any."""

    allowed: str
    classic: str | None = None


class SettingsError(Exception):
    """Bad settings. ``problems`` has one line per problem, each naming the setting and the allowed values."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        head = "1 problem with the settings" if count == 1 else f"{count} problems with the settings"
        super().__init__(head + ":\n" + "\n".join(f"- {p}" for p in self.problems))


# --- values ---------------------------------------------------------------------------------------------------------

_SECRET_SEGMENT_RE = re.compile(r"[A-Za-z0-9_-]{16,128}")
_DB_SCHEME_RE = re.compile(r"(?P<dialect>[A-Za-z0-9_]+)(?:\+(?P<driver>[A-Za-z0-9_]+))?://")
_DB_DIALECTS = ("sqlite", "postgresql")


def _quote(value: object, limit: int = 80) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _semicolon_list(value: object, what: str) -> list[str]:
    """Entries of a setting given as "a; b; c" or as a list (of such strings); blanks dropped."""
    if value is None:
        return []
    if isinstance(value, str):
        items: list[object] = [value]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError(f"{_quote(value)} is not text or a list of {what}")
    return [part.strip() for item in items for part in _text(item).split(";") if part.strip()]


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{_quote(value)} is not text")
    return value.strip()


def _check_http_url(value: object, *, base_only: bool) -> str:
    url = _text(value)
    if not url:
        raise ValueError("is empty")
    if any(ch.isspace() for ch in url):
        raise ValueError(f"{_quote(url)} contains white space")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not url.lower().startswith(parts.scheme.lower() + "://"):
        raise ValueError(f"{_quote(url)} is not an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the URL must not contain a user name or password")  # no echo: it may hold a password
    host = parts.hostname or ""
    if not host or not (is_hostname(host) or _is_ip_address(host)):
        raise ValueError(f"{_quote(url)} has no valid host")
    try:
        parts.port  # noqa: B018  # raises ValueError for a port out of range
    except ValueError:
        raise ValueError(f"{_quote(url)} has an invalid port") from None
    if base_only and (parts.query or parts.fragment or url.endswith(("?", "#"))):
        raise ValueError(f"{_quote(url)} has a query or fragment (the listener path is appended to it)")
    return url


def _mask_url_password(url: str) -> str:
    """The URL with the password in its user part (``user:pw@host``) replaced by :data:`MASK`."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user}:{MASK}@{hostport}{slash}{tail}"


def _canonical_choice(value: object, choices: tuple[str, ...]) -> object:
    """Match text against choices regardless of case (``exchange2016`` -> ``Exchange2016``); else leave it alone."""
    if isinstance(value, str):
        wanted = value.strip().lower()
        for choice in choices:
            if choice.lower() == wanted:
                return choice
    return value


def _choices(literal: Any) -> tuple[str, ...]:
    return tuple(typing.get_args(literal))


# --- the settings object ----------------------------------------------------------------------------------------------


@dataclass
class _LoadState:
    """What :func:`load_settings` passes to the sources and validators of one ``Settings(...)`` construction."""

    config_file: Path | None = None
    require_credentials: bool = False
    problems: list[str] = field(default_factory=list)
    config_read: Path | None = None


_LOAD: ContextVar[_LoadState | None] = ContextVar("calsync_settings_load", default=None)


def _report(problem: str) -> None:
    """Record a problem found by a source; outside :func:`load_settings` raise it at once."""
    state = _LOAD.get()
    if state is None:
        raise SettingsError([problem])
    state.problems.append(problem)


_INT_FIELDS = (
    "batch_size",
    "graph_subscription_minutes",
    "graph_renew_before_minutes",
    "graph_future_days",
    "status_frequency",
    "past_window_days",
    "reconcile_interval_hours",
    "process_notifications_interval_seconds",
    "manage_subscriptions_interval_seconds",
    "smtp_port",
)
_OPTIONAL_TEXT_FIELDS = (
    "smtp_host",
    "smtp_username",
    "username",
    "oauth_tenant_id",
    "oauth_client_id",
    "graph_tenant_id",
    "graph_client_id",
    "graph_listener_url",
)
_SECRET_TEXT_FIELDS = (
    "listener_secret",
    "listener_previous_secret",
    "password",
    "oauth_client_secret",
    "graph_client_secret",
    "smtp_password",
    "api_tokens",
)


class Settings(BaseSettings):
    """Every calsync setting; see the module docstring. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        toml_file=DEFAULT_CONFIG_FILE,
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    exchange_url: Annotated[
        str,
        _Rule(
            "an http:// or https:// URL, e.g. https://mail.example.com/EWS/Exchange.asmx", "EWSNotificationsListenerURL"
        ),
    ] = "http://127.0.0.1:8765/EWS/Exchange.asmx"
    exchange_version: Annotated[ExchangeVersion, _Rule(", ".join(EXCHANGE_VERSIONS), "ExchangeVersion")] = (
        "Exchange2016"
    )
    batch_size: Annotated[int, Field(ge=1, le=512), _Rule("1..512", "EWSBatchSize")] = 512
    listener_url: Annotated[
        str,
        _Rule(
            "an http:// or https:// base URL with a host and no query, e.g. https://calsync.example.com",
            "PushNotificationsListener",
        ),
    ] = "http://127.0.0.1:8080"
    listener_secret: Annotated[SecretStr | None, _Rule("16..128 characters of A-Z a-z 0-9 _ -")] = None
    listener_previous_secret: Annotated[
        SecretStr | None, _Rule("16..128 characters of A-Z a-z 0-9 _ -, or unset (the secret before a rotation)")
    ] = None
    listener_previous_secret_until: Annotated[
        datetime | None,
        _Rule(
            "an ISO 8601 date and time with a zone, e.g. 2026-07-01T12:00:00Z or 2026-07-01T14:00:00+02:00, or unset"
        ),
    ] = None
    listener_allowed_networks: Annotated[
        tuple[str, ...],
        _Rule("networks in CIDR notation separated by ';' (or a list), e.g. 10.0.0.0/8; 2001:db8::/32, or none (all)"),
    ] = ()
    listener_trust_forwarded_for: Annotated[bool, _Rule("true or false")] = False
    status_frequency: Annotated[
        int, Field(ge=1, le=1440), _Rule("1..1440 (minutes)", "StatusFrequencyForEWSNotifications")
    ] = 30
    failure_recipients: Annotated[
        tuple[str, ...], _Rule("e-mail addresses separated by ';' (or a list), or none", "NotifySyncFailureTo")
    ] = ()
    past_window_days: Annotated[int, Field(ge=0, le=3650), _Rule("0..3650 (days)", "PastWindowDays")] = 180
    reconcile_interval_hours: Annotated[int, Field(ge=0, le=720), _Rule("0..720 (hours; 0 turns it off)")] = 6
    process_notifications_interval_seconds: Annotated[
        int, Field(ge=1, le=86400), _Rule("1..86400 (seconds)", "ProcessEWSPushNotifications")
    ] = 60
    manage_subscriptions_interval_seconds: Annotated[
        int, Field(ge=1, le=86400), _Rule("1..86400 (seconds)", "ManagePushSubscriptionsForCalendarSync")
    ] = 300
    database_url: Annotated[
        str,
        _Rule("a SQLAlchemy URL sqlite:///PATH or postgresql+psycopg://USER@HOST/DB (database sqlite or postgresql)"),
    ] = "sqlite:///calsync.sqlite3"
    auth_type: Annotated[AuthType, _Rule("basic, ntlm, oauth")] = "basic"
    username: Annotated[str | None, _Rule("a user name (required for auth_type basic and ntlm)")] = "svc"
    password: Annotated[SecretStr | None, _Rule("a password (required for auth_type basic and ntlm)")] = SecretStr(
        "secret"
    )
    oauth_tenant_id: Annotated[str | None, _Rule("the Entra ID tenant id (required for auth_type oauth)")] = None
    oauth_client_id: Annotated[str | None, _Rule("the application (client) id (required for auth_type oauth)")] = None
    oauth_client_secret: Annotated[SecretStr | None, _Rule("the client secret (required for auth_type oauth)")] = None
    graph_tenant_id: Annotated[
        str | None, _Rule("the Entra ID tenant id or domain, e.g. contoso.onmicrosoft.com, or unset (no Graph)")
    ] = None
    graph_client_id: Annotated[str | None, _Rule("the application (client) id of calsync's app, or unset")] = None
    graph_client_secret: Annotated[SecretStr | None, _Rule("the app's client secret, or unset")] = None
    graph_certificate: Annotated[
        Path | None, _Rule("the path of a PEM file with the certificate and its private key, or unset")
    ] = None
    graph_authority: Annotated[str, _Rule("an https:// URL, e.g. https://login.microsoftonline.com")] = (
        "https://login.microsoftonline.com"
    )
    graph_endpoint: Annotated[str, _Rule("an http:// or https:// URL, e.g. https://graph.microsoft.com/v1.0")] = (
        "https://graph.microsoft.com/v1.0"
    )
    graph_ca_file: Annotated[Path | None, _Rule("the path of a PEM file of certificate authorities, or unset")] = None
    graph_listener_url: Annotated[
        str | None, _Rule("an https:// base URL with a host and no query, or unset (listener_url)")
    ] = None
    graph_subscription_minutes: Annotated[int, Field(ge=45, le=10080), _Rule("45..10080 (minutes)")] = 4230
    graph_renew_before_minutes: Annotated[
        int, Field(ge=10, le=1440), _Rule("10..1440 (minutes), less than graph_subscription_minutes")
    ] = 360
    graph_future_days: Annotated[int, Field(ge=30, le=3650), _Rule("30..3650 (days)")] = 730
    smtp_host: Annotated[str | None, _Rule("a host name or IP address, or unset to send no e-mail")] = None
    smtp_port: Annotated[int, Field(ge=1, le=65535), _Rule("1..65535")] = 25
    smtp_security: Annotated[SmtpSecurity, _Rule("none, starttls, tls")] = "none"
    smtp_username: Annotated[str | None, _Rule("a user name, or unset for no SMTP login")] = None
    smtp_password: Annotated[SecretStr | None, _Rule("a password (required when smtp_username is set)")] = None
    smtp_sender: Annotated[str, _Rule("one e-mail address, e.g. calsync@example.com")] = "calsync@localhost"
    log_level: Annotated[LogLevel, _Rule("DEBUG, INFO, WARNING, ERROR")] = "INFO"
    api_tokens: Annotated[
        SecretStr | None,
        _Rule(
            "role:token pairs separated by ',' (roles admin, viewer, calendar; tokens of 24..256 characters), or unset"
        ),
    ] = None

    _config_file: Path | None = PrivateAttr(default=None)

    # -- sources --

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        state = _LOAD.get()
        explicit = state.config_file if state is not None else None
        if explicit is None and os.environ.get(CONFIG_ENV):
            explicit = Path(os.environ[CONFIG_ENV])
        path = explicit if explicit is not None else Path(str(cls.model_config.get("toml_file") or DEFAULT_CONFIG_FILE))
        return (
            _NamedSource(settings_cls, init_settings),
            _EnvSource(settings_cls),
            _TomlSource(settings_cls, path, required=explicit is not None),
        )

    # -- validators --

    @field_validator(*_INT_FIELDS, mode="before")
    @classmethod
    def _no_bool_for_int(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError(f"{value} is not a whole number")
        return value

    @field_validator(*_OPTIONAL_TEXT_FIELDS, mode="before")
    @classmethod
    def _optional_text(cls, value: object) -> object:
        if value is None or isinstance(value, SecretStr):
            return value
        return _text(value) or None

    @field_validator(*_SECRET_TEXT_FIELDS, mode="before")
    @classmethod
    def _optional_secret(cls, value: object) -> object:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError("the value is not text")  # no echo: it is a secret
        return value if value.strip() else None

    @field_validator("exchange_version", mode="before")
    @classmethod
    def _exchange_version_case(cls, value: object) -> object:
        return _canonical_choice(value, EXCHANGE_VERSIONS)

    @field_validator("auth_type", "smtp_security", "log_level", mode="before")
    @classmethod
    def _choice_case(cls, value: object, info: ValidationInfo) -> object:
        literal = {"auth_type": AuthType, "smtp_security": SmtpSecurity, "log_level": LogLevel}[str(info.field_name)]
        return _canonical_choice(value, _choices(literal))

    @field_validator("exchange_url", mode="before")
    @classmethod
    def _exchange_url(cls, value: object) -> str:
        return _check_http_url(value, base_only=False)

    @field_validator("listener_url", mode="before")
    @classmethod
    def _listener_url(cls, value: object) -> str:
        return _check_http_url(value, base_only=True)

    @field_validator("graph_listener_url", mode="before")
    @classmethod
    def _graph_listener_url(cls, value: object) -> str | None:
        if value is None or not _text(value):
            return None
        return _check_http_url(value, base_only=True)

    @field_validator("graph_endpoint", mode="before")
    @classmethod
    def _graph_endpoint(cls, value: object) -> str:
        return _check_http_url(value, base_only=False).rstrip("/")

    @field_validator("graph_authority", mode="before")
    @classmethod
    def _graph_authority(cls, value: object) -> str:
        url = _check_http_url(value, base_only=True)
        if not url.lower().startswith("https://"):
            raise ValueError(f"{_quote(url)} is not https:// (MSAL accepts only an https authority)")
        return url.rstrip("/")

    @field_validator("graph_certificate", "graph_ca_file", mode="before")
    @classmethod
    def _pem_file(cls, value: object, info: ValidationInfo) -> Path | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        path = Path(_text(value) if isinstance(value, str) else str(value)).expanduser()
        if not path.is_file():
            raise ValueError(f"{_quote(str(path))} is not a file")
        try:
            text = path.read_text(errors="replace")
        except OSError as exc:
            raise ValueError(f"{_quote(str(path))} cannot be read ({exc.strerror})") from None
        if "-----BEGIN CERTIFICATE-----" not in text:
            raise ValueError(f"{_quote(str(path))} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
        if info.field_name == "graph_certificate" and "PRIVATE KEY-----" not in text:
            raise ValueError(f"{_quote(str(path))} holds no PEM private key (-----BEGIN PRIVATE KEY-----)")
        return path

    @field_validator("graph_renew_before_minutes")
    @classmethod
    def _renew_before(cls, value: int, info: ValidationInfo) -> int:
        lifetime = info.data.get("graph_subscription_minutes")
        if lifetime is not None and value >= lifetime:
            raise ValueError(f"{value} is not less than graph_subscription_minutes ({lifetime})")
        return value

    @field_validator("listener_secret", "listener_previous_secret")
    @classmethod
    def _listener_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _SECRET_SEGMENT_RE.fullmatch(value.get_secret_value()):
            length = len(value.get_secret_value())
            raise ValueError(f"the value ({length} characters) is not a valid secret path segment")
        return value

    @field_validator("api_tokens")
    @classmethod
    def _api_tokens(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            api_tokens_of(value.get_secret_value())  # raises with a message that never shows a token
        return value

    @field_validator("failure_recipients", mode="before")
    @classmethod
    def _failure_recipients(cls, value: object) -> tuple[str, ...]:
        addresses = _semicolon_list(value, "addresses")
        bad = [a for a in addresses if not is_email_address(a)]
        if len(bad) == 1:
            raise ValueError(f"{_quote(bad[0])} is not a valid e-mail address")
        if bad:
            raise ValueError(", ".join(_quote(b) for b in bad) + " are not valid e-mail addresses")
        return tuple(addresses)

    @field_validator("listener_previous_secret_until", mode="before")
    @classmethod
    def _listener_previous_secret_until(cls, value: object) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            moment = value
        elif isinstance(value, date):
            raise ValueError(f"{value.isoformat()!r} is a date without a time")
        else:
            text = _text(value)
            if not text:
                return None
            if "T" not in text.upper() and " " not in text:
                raise ValueError(f"{_quote(text)} is a date without a time")
            try:
                moment = datetime.fromisoformat(text)
            except ValueError:
                raise ValueError(f"{_quote(text)} is not an ISO 8601 date and time") from None
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(f"{_quote(moment.isoformat())} has no time zone (add Z for UTC, or an offset like +02:00)")
        return moment.astimezone(UTC)

    @field_validator("listener_allowed_networks", mode="before")
    @classmethod
    def _listener_allowed_networks(cls, value: object) -> tuple[str, ...]:
        networks: list[str] = []
        bad: list[str] = []
        for entry in _semicolon_list(value, "networks"):
            try:
                network = str(ipaddress.ip_network(entry, strict=True))
            except ValueError:
                try:
                    meant = ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    bad.append(f"{_quote(entry)} is not a network in CIDR notation")
                else:
                    bad.append(f"{_quote(entry)} has host bits set (did you mean {meant}?)")
                continue
            if network not in networks:
                networks.append(network)
        if bad:
            raise ValueError(", ".join(bad))
        return tuple(networks)

    @field_validator("database_url", mode="before")
    @classmethod
    def _database_url(cls, value: object) -> str:
        url = _text(value)
        match = _DB_SCHEME_RE.match(url)
        if match is None:
            raise ValueError(
                "is not a SQLAlchemy URL of the form DIALECT[+DRIVER]://..."
            )  # no echo: may hold a password
        dialect = match["dialect"].lower()
        if dialect not in _DB_DIALECTS:
            hint = " (did you mean postgresql+psycopg?)" if dialect in ("postgres", "psql", "pg") else ""
            raise ValueError(f"the database {match['dialect']!r} is not supported{hint}")
        return url

    @field_validator("smtp_host")
    @classmethod
    def _smtp_host(cls, value: str | None) -> str | None:
        if value is not None and not (is_hostname(value) or _is_ip_address(value)):
            raise ValueError(f"{_quote(value)} is not a host name or IP address")
        return value

    @field_validator("smtp_sender", mode="before")
    @classmethod
    def _smtp_sender(cls, value: object) -> str:
        address = _text(value)
        if not is_email_address(address):
            raise ValueError(f"{_quote(address)} is not a valid e-mail address")
        return address

    @field_validator("smtp_password")
    @classmethod
    def _smtp_password_with_user(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is None and info.data.get("smtp_username"):
            raise ValueError("not set, but smtp_username is set")
        return value

    @field_validator(*sorted({n for names in REQUIRED_CREDENTIALS.values() for n in names}))
    @classmethod
    def _credentials_when_required(cls, value: object, info: ValidationInfo) -> object:
        state = _LOAD.get()
        if state is not None and state.require_credentials and value is None:
            auth_type = info.data.get("auth_type")  # absent when auth_type itself is invalid
            if auth_type is not None and info.field_name in REQUIRED_CREDENTIALS[auth_type]:
                raise ValueError(f"not set, but auth_type {auth_type!r} requires it")
        return value

    # -- helpers --

    @property
    def config_file(self) -> Path | None:
        """The TOML file these settings were read from (None: no file was read)."""
        return self._config_file

    @property
    def graph_configured(self) -> bool:
        """A Graph connection is configured: tenant, client id and a secret or certificate."""
        credential = self.graph_client_secret is not None or self.graph_certificate is not None
        return bool(self.graph_tenant_id and self.graph_client_id and credential)

    @property
    def default_source(self) -> str:
        """The source a new operator uses: ``graph`` for Exchange365 with Graph configured, else ``ews``."""
        return "graph" if self.exchange_version == "Exchange365" and self.graph_configured else "ews"

    def graph_problems(self) -> list[str]:
        """Problems (same format as :class:`SettingsError`) of a Graph connection set up only in part."""
        given = {
            "graph_tenant_id": self.graph_tenant_id is not None,
            "graph_client_id": self.graph_client_id is not None,
            "graph_client_secret": self.graph_client_secret is not None,
            "graph_certificate": self.graph_certificate is not None,
        }
        if not any(given.values()):
            return []
        problems = [
            _problem(name, "not set, but other graph_ settings are (a Graph connection needs it)")
            for name in ("graph_tenant_id", "graph_client_id")
            if not given[name]
        ]
        if not given["graph_client_secret"] and not given["graph_certificate"]:
            problems.append(
                _problem("graph_client_secret", "neither it nor graph_certificate is set (Graph needs one)")
            )
        if given["graph_client_secret"] and given["graph_certificate"]:
            problems.append(_problem("graph_certificate", "set together with graph_client_secret (give one of them)"))
        return problems

    def missing_credentials(self) -> list[str]:
        """Problems (same format as :class:`SettingsError`) for the credentials ``auth_type`` needs but lacks."""
        return [
            _problem(name, f"not set, but auth_type {self.auth_type!r} requires it")
            for name in REQUIRED_CREDENTIALS[self.auth_type]
            if getattr(self, name) is None
        ]

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, _mask_url_password(value) if name == "database_url" and isinstance(value, str) else value


# --- names ------------------------------------------------------------------------------------------------------------


def _rule(name: str) -> _Rule:
    return next(m for m in Settings.model_fields[name].metadata if isinstance(m, _Rule))


#: snake_case name -> classic name, for the settings that have one.
CLASSIC_NAMES: dict[str, str] = {
    name: rule.classic for name in Settings.model_fields if (rule := _rule(name)).classic is not None
}
_CLASSIC_LOWER = frozenset(classic.lower() for classic in CLASSIC_NAMES.values())
_BY_LOWER: dict[str, str] = {name.lower(): name for name in Settings.model_fields} | {
    classic.lower(): name for name, classic in CLASSIC_NAMES.items()
}


def _is_secret(field_info: FieldInfo) -> bool:
    annotation = field_info.annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return SecretStr in typing.get_args(annotation)
    return annotation is SecretStr


_SECRET_FIELDS = frozenset(name for name, info in Settings.model_fields.items() if _is_secret(info))


def setting_label(name: str) -> str:
    """``batch_size (EWSBatchSize)``, or just the name for a setting without a classic name."""
    classic = CLASSIC_NAMES.get(name)
    return f"{name} ({classic})" if classic else name


def _problem(name: str, what: str) -> str:
    return f"{setting_label(name)}: {what}; allowed: {_rule(name).allowed}"


def _accepted_names() -> str:
    return ", ".join(Settings.model_fields) + "; or the classic names " + ", ".join(CLASSIC_NAMES.values())


def _suggest(key: str, candidates: list[str]) -> str:
    lowered = {c.lower(): c for c in candidates}
    close = difflib.get_close_matches(key.lower(), list(lowered), n=1, cutoff=0.75)
    return f" (did you mean {lowered[close[0]]}?)" if close else ""


# --- sources ----------------------------------------------------------------------------------------------------------


def _canonical(items: Iterable[tuple[str, Any]], where: str, *, strip_prefix: bool = False) -> dict[str, Any]:
    """Map snake_case and classic keys to field names; report unknown keys and a setting given twice, differently."""
    result: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in items:
        lookup = key[len(ENV_PREFIX) :] if strip_prefix and key.upper().startswith(ENV_PREFIX) else key
        name = _BY_LOWER.get(lookup.lower())
        if name is None:
            suggestion = _suggest(key, [*Settings.model_fields, *CLASSIC_NAMES.values()])
            if isinstance(value, dict):
                suggestion += " (a TOML table: calsync settings are all top-level keys)"
            _report(f"{where}: unknown setting {key!r}{suggestion}; allowed: {_accepted_names()}")
        elif name in result and result[name] != value:
            _report(
                f"{setting_label(name)}: given twice in {where}, as {spelled[name]} and as {key}, with different "
                "values; allowed: one of the two names"
            )
        else:
            result[name], spelled[name] = value, key
    return result


class _NamedSource(PydanticBaseSettingsSource):
    """Keyword arguments, which may use the snake_case or the classic names."""

    def __init__(self, settings_cls: type[BaseSettings], inner: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self._inner = inner

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False  # unused: __call__ produces the whole mapping

    def __call__(self) -> dict[str, Any]:
        return _canonical(((str(k), v) for k, v in self._inner().items()), "the keyword arguments")


class _EnvSource(PydanticBaseSettingsSource):
    """``CALSYNC_<NAME>`` and the classic names, from the environment; unknown ``CALSYNC_*`` names are reported."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False  # unused: __call__ produces the whole mapping

    def __call__(self) -> dict[str, Any]:
        found: list[tuple[str, str]] = []
        for key, value in sorted(os.environ.items()):
            upper = key.upper()
            if upper.startswith(ENV_PREFIX):
                if upper in IGNORED_ENV:
                    continue
                if upper[len(ENV_PREFIX) :].lower() not in Settings.model_fields:
                    known = [ENV_PREFIX + n.upper() for n in Settings.model_fields]
                    _report(
                        f"environment variable {key} is not a calsync setting{_suggest(upper, known)}; "
                        f"allowed: {ENV_PREFIX}<NAME> for the names {', '.join(Settings.model_fields)}; "
                        f"or {', '.join(sorted(IGNORED_ENV))}"
                    )
                    continue
                found.append((key, value))
            elif key.lower() in _CLASSIC_LOWER:
                found.append((key, value))
        return _canonical(found, "the environment", strip_prefix=True)


class _TomlSource(TomlConfigSettingsSource):
    """The TOML file; unlike the stock source, a missing explicit file, bad TOML and unknown keys are reported."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path, *, required: bool) -> None:
        self._path = path
        self._read_ok = False
        if required and not path.expanduser().is_file():
            _report(
                f"config file: {str(path)!r} does not exist; allowed: the path of a TOML file "
                f"(given to the loader or in {CONFIG_ENV})"
            )
        super().__init__(settings_cls, toml_file=path)

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        try:
            with file_path.open(mode="rb") as handle:
                data = tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            _report(f"config file {str(file_path)!r}: not valid TOML ({exc}); allowed: a TOML file of key = value")
            return {}
        except OSError as exc:
            _report(f"config file {str(file_path)!r}: cannot be read ({exc.strerror}); allowed: a readable TOML file")
            return {}
        self._read_ok = True
        return data

    def __call__(self) -> dict[str, Any]:
        state = _LOAD.get()
        if state is not None and self._read_ok:
            state.config_read = self._path
        return _canonical(((str(k), v) for k, v in self.toml_data.items()), str(self._path))


# --- loading and display ----------------------------------------------------------------------------------------------

_RANGE_ERRORS = {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}
_NUMBER_ERRORS = {"int_parsing", "int_type", "int_from_float", "float_parsing", "float_type"}


def _describe(error: Mapping[str, Any], *, secret: bool) -> str:
    kind, value = error["type"], error.get("input")
    if kind == "value_error" and "error" in error.get("ctx", {}):
        return str(error["ctx"]["error"])
    if secret:
        return "the value is not valid"  # never echo a secret
    if kind in _RANGE_ERRORS:
        return f"{value if isinstance(value, int | float | str) else _quote(value)} is out of range"
    if kind in _NUMBER_ERRORS:
        return f"{_quote(value)} is not a whole number"
    if kind == "literal_error":
        return f"{_quote(value)} is not one of the allowed values"
    if kind in ("string_type", "str_type"):
        return f"{_quote(value)} is not text"
    if kind in ("bool_parsing", "bool_type"):
        return f"{_quote(value)} is not true or false"
    return f"{_quote(value)}: {error['msg']}"


def _translate(exc: ValidationError) -> list[str]:
    problems: list[str] = []
    for error in exc.errors(include_url=False):
        name = str(error["loc"][0]) if error["loc"] else ""
        if name in Settings.model_fields:
            problems.append(_problem(name, _describe(error, secret=name in _SECRET_FIELDS)))
        else:
            problems.append(f"{name or 'settings'}: {error['msg']}; allowed: {_accepted_names()}")
    return problems


def load_settings(config_file: Path | None = None, *, require_credentials: bool = False, **overrides: Any) -> Settings:
    """Read and validate the settings (keyword arguments > environment > TOML file).

    ``config_file`` (or ``CALSYNC_CONFIG``) names the TOML file, which must then exist; by default ``calsync.toml`` in
    the working directory is read if present. ``overrides`` use the snake_case or the classic names. With
    ``require_credentials`` the credentials that ``auth_type`` needs must be set. Raises :class:`SettingsError`
    listing every problem found.
    """
    state = _LoadState(
        config_file=Path(config_file) if config_file is not None else None, require_credentials=require_credentials
    )
    token = _LOAD.set(state)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(state.problems + _translate(exc)) from None  # from None: pydantic's text echoes inputs
    except _PydanticSettingsError as exc:
        raise SettingsError([*state.problems, str(exc)]) from None
    finally:
        _LOAD.reset(token)
    problems = state.problems + settings.graph_problems()
    if problems:
        raise SettingsError(problems)
    settings._config_file = state.config_read
    return settings


#: Settings that may be changed while calsync runs (through the admin API); every node applies a change within
#: a second. The jobs' intervals are changed on the jobs themselves.
RUNTIME_CHANGEABLE = (
    "batch_size",
    "status_frequency",
    "failure_recipients",
    "past_window_days",
    "reconcile_interval_hours",
)


def runtime_change_names(changes: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``changes`` keyed by snake_case names (classic names accepted), and a problem for each key that is not a
    setting changeable at run time."""
    result: dict[str, Any] = {}
    problems = []
    allowed = ", ".join(setting_label(n) for n in RUNTIME_CHANGEABLE)
    for key, value in changes.items():
        name = _BY_LOWER.get(key.lower())
        if name is None:
            problems.append(f"unknown setting {key!r}{_suggest(key, list(RUNTIME_CHANGEABLE))}")
        elif name not in RUNTIME_CHANGEABLE:
            problems.append(f"{setting_label(name)} cannot be changed while calsync runs (restart with a new value)")
        else:
            result[name] = value
    return result, [f"{problem}; settings changeable at run time: {allowed}" for problem in problems]


def with_changes(settings: Settings, changes: Mapping[str, Any]) -> Settings:
    """``settings`` with ``changes`` (settings changeable at run time) applied, validated exactly as at start-up:
    raises :class:`SettingsError` listing every problem, and nothing else differs from ``settings``."""
    values: dict[str, Any] = {name: getattr(settings, name) for name in Settings.model_fields}
    named, problems = runtime_change_names(changes)
    values.update(named)
    state = _LoadState(problems=problems)
    token = _LOAD.set(state)
    try:
        changed = Settings.model_validate(values)  # the field validators only: no file, no environment
    except ValidationError as exc:
        raise SettingsError(state.problems + _translate(exc)) from None
    finally:
        _LOAD.reset(token)
    if state.problems:
        raise SettingsError(state.problems)
    changed._config_file = settings._config_file
    return changed


def api_tokens_of(value: str) -> list[tuple[str, str]]:
    """``role:token,role:token`` as (role, token) pairs; raises ValueError (never quoting a token) when malformed."""
    pairs = []
    for number, part in enumerate((p.strip() for p in value.split(",")), start=1):
        if not part:
            continue
        role, colon, token = part.partition(":")
        role, token = role.strip().lower(), token.strip()
        if not colon or role not in API_ROLES:
            raise ValueError(f"entry {number} does not start with a role and a colon (admin:, viewer:, calendar:)")
        if not 24 <= len(token) <= 256:
            raise ValueError(f"entry {number}: the token has {len(token)} characters")
        pairs.append((role, token))
    return pairs


def effective_settings(settings: Settings) -> dict[str, object]:
    """Every setting with its value, for display: secrets as :data:`MASK` (None when unset), URL passwords masked."""
    shown: dict[str, object] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            value = MASK
        elif name == "database_url":
            value = _mask_url_password(value)
        shown[name] = value
    return shown


def listener_callback_url(settings: Settings, door: str = "ews") -> str:
    """The URL Exchange posts notifications to: ``listener_url`` + ``/ews/notifications/`` + ``listener_secret``;
    for the ``graph`` door ``graph_listener_url`` (else ``listener_url``) + ``/graph/notifications/`` + the secret."""
    if settings.listener_secret is None:
        raise SettingsError([_problem("listener_secret", "not set (`calsync init` generates one)")])
    base = settings.listener_url
    if door == "graph" and settings.graph_listener_url is not None:
        base = settings.graph_listener_url
    return f"{base.rstrip('/')}/{door}/notifications/{settings.listener_secret.get_secret_value()}"


def listener_secrets(settings: Settings, now: datetime | None = None) -> list[str]:
    """The secrets the listener accepts at ``now`` (default: now): ``listener_secret`` and, until
    ``listener_previous_secret_until`` (for ever when that is unset), ``listener_previous_secret``."""
    accepted: list[str] = []
    if settings.listener_secret is not None:
        accepted.append(settings.listener_secret.get_secret_value())
    previous, until = settings.listener_previous_secret, settings.listener_previous_secret_until
    in_grace = until is None or (now or datetime.now(UTC)) < until
    if previous is not None and in_grace and previous.get_secret_value() not in accepted:
        accepted.append(previous.get_secret_value())
    return accepted


def new_listener_secret() -> str:
    """A fresh random ``listener_secret``: 43 characters of A-Z a-z 0-9 _ - (256 bits)."""
    return secrets.token_urlsafe(32)

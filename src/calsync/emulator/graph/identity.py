"""An Entra-ID-like identity service for the Graph wing: registered apps (tenant, client id, secret, certificates,
the application permissions an administrator consented to), the v2.0 token endpoint for the client-credentials
grant (a client secret, in the body or as HTTP Basic, or a client assertion signed with the app's certificate), the
OpenID configuration MSAL reads before it asks for a token, and the checking of the access tokens it issues when
they come back on Graph requests (signature, expiry, revocation, permissions).

Routes: ``POST /{tenant}/oauth2/v2.0/token``, ``GET /{tenant}/v2.0/.well-known/openid-configuration`` and
``GET /{tenant}/discovery/v2.0/keys``. Tokens are JWTs signed with HS256 and a key of this emulator's own (only the
emulator reads them); errors are Entra's (``AADSTS`` codes in ``error_description``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, unquote

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..clock import Clock
from .errors import GraphError

READ = "Calendars.Read"
WRITE = "Calendars.ReadWrite"
PERMISSIONS = (READ, WRITE)
GRAPH_AUDIENCE = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
GRAPH_SCOPES = frozenset({f"{GRAPH_AUDIENCE}/.default", f"{GRAPH_AUDIENCE}//.default", f"{GRAPH_APP_ID}/.default"})
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_SKEW = 300  # seconds of clock difference tolerated in a client assertion, as Entra does
UNAUTHENTICATED = {
    "WWW-Authenticate": 'Bearer realm="", '
    'authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
    f'client_id="{GRAPH_APP_ID}"'
}


@dataclass(frozen=True)
class Tenant:
    name: str  # as registered: a GUID or a domain name
    id: str  # the tenant's GUID (the name itself when it is one)


@dataclass
class App:
    tenant: Tenant
    client_id: str
    secret: str | None
    permissions: frozenset[str]
    service_principal: str  # the app's object id in its tenant: oid and sub of its tokens, creatorId of subscriptions
    certificates: dict[str, Any] = field(default_factory=dict)  # SHA-1 and SHA-256 thumbprint (hex) -> public key


@dataclass(frozen=True)
class Principal:
    """Who a Graph request comes from: the app its token was issued to and the permissions in the token."""

    app: App
    roles: frozenset[str]

    def require(self, *, write: bool) -> None:
        allowed = {WRITE} if write else {READ, WRITE}
        if not self.roles & allowed:
            raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")


class EntraError(Exception):
    """An answer of the token endpoint: OAuth ``error``, Entra's AADSTS number and its description."""

    def __init__(self, status: int, error: str, number: int, description: str) -> None:
        super().__init__(f"AADSTS{number}: {description}")
        self.status, self.error, self.number, self.description = status, error, number, description

    def response(self) -> JSONResponse:
        trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        return JSONResponse(
            {
                "error": self.error,
                "error_description": f"AADSTS{self.number}: {self.description}\r\nTrace ID: {trace}\r\n"
                f"Correlation ID: {correlation}\r\nTimestamp: {stamp}",
                "error_codes": [self.number],
                "timestamp": stamp,
                "trace_id": trace,
                "correlation_id": correlation,
                "error_uri": f"https://login.microsoftonline.com/error?code={self.number}",
            },
            status_code=self.status,
        )


def tenant_of(name: str) -> Tenant:
    """A tenant named by a GUID keeps it as its id; one named by a domain gets a GUID derived from the name."""
    try:
        return Tenant(name, str(uuid.UUID(name)))
    except ValueError:
        return Tenant(name, str(uuid.uuid5(uuid.NAMESPACE_DNS, name.lower())))


def parse_app_spec(spec: str) -> tuple[str, str, str, list[str]]:
    """``TENANT:CLIENT_ID:SECRET[:PERMISSION,...]`` -> (tenant, client id, secret, permissions); an empty permission
    list (a trailing ``:``) is an app nobody consented to."""
    parts = spec.split(":")
    if len(parts) not in (3, 4) or not all(parts[:3]):
        raise ValueError(f"--graph-app '{spec}' must be TENANT:CLIENT_ID:SECRET[:PERMISSION,...]")
    permissions = [p for p in parts[3].split(",") if p] if len(parts) == 4 else [WRITE]
    return parts[0], parts[1], parts[2], permissions


def _thumbprint(value: str) -> str:
    padded = value + "=" * (-len(value) % 4)
    try:
        return base64.urlsafe_b64decode(padded.encode()).hex()
    except (binascii.Error, ValueError):
        return ""


class Identity:
    """Apps, the tokens issued to them and their revocations. Token times are on the emulator clock."""

    def __init__(self, clock: Clock, token_minutes: float = 60, on_issue: Callable[[], None] | None = None) -> None:
        if token_minutes <= 0:
            raise ValueError("the token lifetime must be positive")
        self.clock = clock
        self.on_issue = on_issue  # counts issued tokens (the stats' graph_tokens_issued)
        self.token_lifetime = timedelta(minutes=token_minutes)
        self.apps: dict[str, App] = {}
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._issued: dict[str, tuple[str, float]] = {}  # token id (uti) -> (client id, emulated seconds)
        self._revoked: dict[str | None, float] = {}  # client id (None: every app) -> emulated seconds

    # --- apps -----------------------------------------------------------------------------------

    def add_app(self, tenant: str, client_id: str, secret: str | None = None, permissions: Any = (WRITE,)) -> App:
        if not tenant or not client_id:
            raise ValueError("an app needs a tenant and a client id")
        perms = [permissions] if isinstance(permissions, str) else list(permissions)
        unknown = [p for p in perms if p not in PERMISSIONS]
        if unknown:
            raise ValueError(f"unknown permission(s) {', '.join(unknown)}; allowed: {', '.join(PERMISSIONS)}")
        with self._lock:
            app = App(
                tenant_of(tenant),
                client_id,
                secret or None,
                frozenset(perms),
                str(uuid.uuid5(uuid.NAMESPACE_URL, f"calsync-emulator/{tenant}/{client_id}")),
            )
            self.apps[client_id.lower()] = app
            return app

    def add_certificate(self, client_id: str, pem: str) -> dict[str, str]:
        """Register a certificate (PEM) whose key signs the app's client assertions; returns its thumbprints."""
        app = self.apps.get(client_id.lower())
        if app is None:
            raise LookupError(f"no app '{client_id}'")
        try:
            cert = x509.load_pem_x509_certificate(pem.encode())
        except ValueError as exc:
            raise ValueError(f"certificate: not a PEM certificate ({exc})") from exc
        sha1, sha256 = cert.fingerprint(hashes.SHA1()).hex(), cert.fingerprint(hashes.SHA256()).hex()
        with self._lock:
            app.certificates[sha1] = app.certificates[sha256] = cert.public_key()
        return {"sha1": sha1, "sha256": sha256}

    def tenant(self, name: str) -> Tenant | None:
        wanted = name.lower()
        for app in list(self.apps.values()):
            if wanted in (app.tenant.name.lower(), app.tenant.id):
                return app.tenant
        return None

    def revoke(self, client_id: str | None = None) -> None:
        """Every token issued so far (to this app, or to any) becomes invalid."""
        with self._lock:
            self._revoked[client_id.lower() if client_id else None] = self.clock.seconds()

    # --- tokens ---------------------------------------------------------------------------------

    def issue(self, app: App, method: str) -> dict[str, Any]:
        now = self.clock.now()
        token_id = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        claims: dict[str, Any] = {
            "aud": GRAPH_AUDIENCE,
            "iss": f"https://sts.windows.net/{app.tenant.id}/",
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int((now + self.token_lifetime).timestamp()),
            "app_displayname": app.client_id,
            "appid": app.client_id,
            "appidacr": "2" if method == "certificate" else "1",
            "idp": f"https://sts.windows.net/{app.tenant.id}/",
            "idtyp": "app",
            "oid": app.service_principal,
            "sub": app.service_principal,
            "tid": app.tenant.id,
            "uti": token_id,
            "ver": "1.0",
        }
        if app.permissions:
            claims["roles"] = sorted(app.permissions)
        with self._lock:
            self._issued[token_id] = (app.client_id.lower(), self.clock.seconds())
        if self.on_issue is not None:
            self.on_issue()
        lifetime = int(self.token_lifetime.total_seconds())
        return {
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": jwt.encode(claims, self._key, algorithm="HS256", headers={"typ": "JWT"}),
        }

    def principal(self, authorization: str | None) -> Principal:
        """The caller of a Graph request, from its ``Authorization: Bearer`` header; 401 as Graph answers."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.", UNAUTHENTICATED)
        invalid = GraphError(401, "InvalidAuthenticationToken", "Access token validation failure.", UNAUTHENTICATED)
        try:
            claims = jwt.decode(
                token.strip(),
                self._key,
                algorithms=["HS256"],
                audience=GRAPH_AUDIENCE,
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
            )
        except jwt.InvalidTokenError as exc:
            raise invalid from exc
        issued = self._issued.get(str(claims.get("uti")))
        app = self.apps.get(str(claims.get("appid", "")).lower())
        if issued is None or app is None:
            raise invalid
        now = self.clock.now().timestamp()
        if not claims.get("nbf", 0) <= now < claims.get("exp", 0):
            raise GraphError(
                401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.", UNAUTHENTICATED
            )
        client, issued_at = issued
        if any(issued_at < self._revoked.get(key, -1.0) for key in (client, None)):
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "Continuous access evaluation resulted in challenge with result: InteractionRequired and code: "
                "TokenIssuedBeforeRevocationTimestamp",
                UNAUTHENTICATED,
            )
        return Principal(app, frozenset(claims.get("roles", ())))

    # --- the token endpoint -------------------------------------------------------------------------

    def grant(self, tenant_name: str, form: dict[str, str], authorization: str | None, base: str) -> dict[str, Any]:
        """A client-credentials token request -> the token answer; EntraError as Entra ID answers."""
        tenant = self.tenant(tenant_name)
        if tenant is None:
            raise EntraError(
                400,
                "invalid_request",
                90002,
                f"Tenant '{tenant_name}' not found. Check to make sure you have the correct tenant ID and are signing "
                "into the correct cloud.",
            )
        basic_id, basic_secret = _basic(authorization)
        for name in ("grant_type", "scope"):
            if not form.get(name):
                raise _missing(name)
        if form["grant_type"] != "client_credentials":
            raise EntraError(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{form['grant_type']}'.",
            )
        client_id = form.get("client_id") or basic_id
        if not client_id:
            raise _missing("client_id")
        app = self.apps.get(client_id.lower())
        if app is None or app.tenant != tenant:
            raise EntraError(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{tenant_name}'. This can "
                "happen if the application has not been installed by the administrator of the tenant or consented to "
                "by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
            )
        _check_scope(form["scope"])
        secret = form.get("client_secret") or basic_secret
        if form.get("client_assertion"):
            if form.get("client_assertion_type") != ASSERTION_TYPE:
                raise EntraError(400, "invalid_request", 50027, f"client_assertion_type must be '{ASSERTION_TYPE}'.")
            self._check_assertion(
                app,
                form["client_assertion"],
                {f"{base}/{t}/oauth2/v2.0/token" for t in (tenant_name, tenant.name, tenant.id)}
                | {f"{base}/{t}/oauth2/token" for t in (tenant.name, tenant.id)},
            )
            return self.issue(app, "certificate")
        if not secret:
            raise EntraError(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            )
        if app.secret is None or not hmac.compare_digest(secret.encode(), app.secret.encode()):
            raise EntraError(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
                f"value, not the client secret ID, for a secret added to app '{app.client_id}'.",
            )
        return self.issue(app, "secret")

    def _check_assertion(self, app: App, assertion: str, audiences: set[str]) -> None:
        failed = EntraError(401, "invalid_client", 700027, "Client assertion failed signature validation.")
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.InvalidTokenError as exc:
            raise failed from exc
        thumbprint = _thumbprint(str(header.get("x5t#S256") or header.get("x5t") or ""))
        key = app.certificates.get(thumbprint)
        if key is None:
            raise EntraError(
                401,
                "invalid_client",
                700027,
                "The certificate with identifier used to sign the client assertion is not registered on application "
                f"'{app.client_id}'.",
            )
        try:
            # The assertion's times are the client's wall clock, as Entra reads them: not the emulator clock.
            claims = jwt.decode(
                assertion,
                key,
                algorithms=["RS256", "PS256", "ES256"],
                audience=sorted(audiences),
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
            )
        except jwt.InvalidAudienceError as exc:
            raise EntraError(
                401,
                "invalid_client",
                700027,
                f"The audience of the client assertion must be one of {sorted(audiences)}.",
            ) from exc
        except jwt.InvalidTokenError as exc:
            raise failed from exc
        if claims.get("iss") != app.client_id or claims.get("sub") != app.client_id:
            raise EntraError(
                401, "invalid_client", 700027, "The client assertion's iss and sub must be the app's client id."
            )
        now = time.time()
        if not claims.get("nbf", 0) - ASSERTION_SKEW <= now <= claims.get("exp", 0) + ASSERTION_SKEW:
            raise EntraError(401, "invalid_client", 700024, "Client assertion is not within its valid time range.")

    # --- routes ---------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        async def token(request: Request) -> JSONResponse:
            fields = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
            form = {k: v[0] for k, v in fields.items()}
            try:
                answer = self.grant(
                    request.path_params["tenant"], form, request.headers.get("authorization"), _base(request)
                )
            except EntraError as exc:
                return exc.response()
            return JSONResponse(answer, headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})

        async def openid_configuration(request: Request) -> JSONResponse:
            name = request.path_params["tenant"]
            tenant = self.tenant(name)
            if tenant is None:
                return JSONResponse(
                    {"error": "invalid_tenant", "error_description": f"AADSTS90002: Tenant '{name}' not found."},
                    status_code=400,
                )
            base = _base(request)
            return JSONResponse(
                {
                    "token_endpoint": f"{base}/{name}/oauth2/v2.0/token",
                    "token_endpoint_auth_methods_supported": [
                        "client_secret_post",
                        "private_key_jwt",
                        "client_secret_basic",
                    ],
                    "jwks_uri": f"{base}/{name}/discovery/v2.0/keys",
                    "response_modes_supported": ["query", "fragment", "form_post"],
                    "subject_types_supported": ["pairwise"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                    "scopes_supported": ["openid", "profile", "email", "offline_access"],
                    "issuer": f"{base}/{tenant.id}/v2.0",
                    "request_uri_parameter_supported": False,
                    "authorization_endpoint": f"{base}/{name}/oauth2/v2.0/authorize",
                    "tenant_region_scope": "EU",
                    "cloud_instance_name": "microsoftonline.com",
                    "msgraph_host": request.url.netloc,
                }
            )

        async def keys(request: Request) -> JSONResponse:
            # Access tokens here are HS256 with the emulator's own key: nothing a client verifies.
            return JSONResponse({"keys": []})

        return [
            Route("/{tenant}/oauth2/v2.0/token", token, methods=["POST"]),
            Route("/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration, methods=["GET"]),
            Route("/{tenant}/discovery/v2.0/keys", keys, methods=["GET"]),
        ]


def _base(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def _missing(name: str) -> EntraError:
    return EntraError(
        400, "invalid_request", 900144, f"The request body must contain the following parameter: '{name}'."
    )


def _basic(authorization: str | None) -> tuple[str | None, str | None]:
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        user, _, password = base64.b64decode(value.strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    return unquote(user.replace("+", " ")), unquote(password.replace("+", " "))


def _check_scope(scope: str) -> None:
    scopes = scope.split()
    if len(scopes) == 1 and scopes[0] in GRAPH_SCOPES:
        return
    foreign = [s for s in scopes if s.endswith("/.default") and s not in GRAPH_SCOPES]
    if foreign:
        resource = foreign[0].removesuffix("/.default")
        raise EntraError(
            400,
            "invalid_resource",
            500011,
            f"The resource principal named {resource} was not found in the tenant. This can happen if the "
            "application has not been installed by the administrator of the tenant or consented to by any user in "
            "the tenant. You might have sent your authentication request to the wrong tenant.",
        )
    raise EntraError(
        400,
        "invalid_scope",
        1002012,
        f"The provided value for scope {scope} is not valid. Client credential flows must have a scope value with "
        "/.default suffixed to the resource identifier (application ID URI).",
    )

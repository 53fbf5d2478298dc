"""The Entra-ID-like token endpoint, driven by MSAL (secret and certificate, over the emulator's TLS), and Graph's
checks of the tokens it issues: missing, forged, expired and revoked tokens, apps without consent or without
write permission, and app-only calls to /me."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import httpx
import jwt
import msal
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from calsync.emulator import Emulator

from .test_emulator_graph_setup import (  # noqa: F401 (fixtures)
    ANN,
    APPS,
    CLIENT,
    NOBODY,
    NOBODY_SECRET,
    READER,
    READER_SECRET,
    SCOPE,
    SECRET,
    TENANT,
    event_body,
    graph,
    graph_emulator_fixture,
    receiver_fixture,
    request_token,
    token,
)


@pytest.fixture
def tls_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    with Emulator(mailboxes=[ANN], graph_apps=APPS, tls=True) as emu:
        # requests (under MSAL) prefers REQUESTS_CA_BUNDLE over a session's verify= when the variable is set, as it
        # is on many machines: point it at the emulator's CA, the ordinary way to trust a private CA.
        assert emu.ca_file is not None
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", emu.ca_file)
        yield emu


def msal_app(emu: Emulator, credential: object, client: str = CLIENT) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        client,
        client_credential=credential,
        authority=emu.authority(TENANT),
        instance_discovery=False,  # MSAL would ask login.microsoftonline.com about any other host
        verify=emu.ca_file,
    )


def self_signed() -> tuple[str, str]:
    """(private key PEM, certificate PEM) of a new RSA key, as an app registration's certificate."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "calsync test app")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode()


def test_msal_gets_a_token_with_a_secret_and_graph_accepts_it(tls_emulator: Emulator) -> None:
    result = msal_app(tls_emulator, SECRET).acquire_token_for_client([SCOPE])
    assert result.get("token_type") == "Bearer", result
    assert 3500 <= result["expires_in"] <= 3600
    claims = jwt.decode(result["access_token"], options={"verify_signature": False})
    assert claims["aud"] == "https://graph.microsoft.com" and claims["roles"] == ["Calendars.ReadWrite"]
    with graph(tls_emulator, result["access_token"]) as client:
        assert client.get(f"/users/{ANN}/events").status_code == 200


def test_msal_reports_a_bad_secret_as_entra_does(tls_emulator: Emulator) -> None:
    result = msal_app(tls_emulator, "wrong").acquire_token_for_client([SCOPE])
    assert result["error"] == "invalid_client"
    assert result["error_description"].startswith("AADSTS7000215: Invalid client secret provided.")
    assert result["error_codes"] == [7000215]


@pytest.mark.parametrize("style", ["public_certificate", "thumbprint"])
def test_msal_gets_a_token_with_a_certificate(tls_emulator: Emulator, style: str) -> None:
    key_pem, cert_pem = self_signed()
    registered = httpx.post(
        f"{tls_emulator.base_url}/emulator/graph/apps/{CLIENT}/certificates",
        json={"certificate": cert_pem},
        verify=False,  # the control API; trust is tested on Graph's side
    ).json()
    # PS256 with an x5t#S256 header (SHA-256 thumbprint), or RS256 with x5t (SHA-1), as MSAL chooses.
    credential = (
        {"private_key": key_pem, "public_certificate": cert_pem}
        if style == "public_certificate"
        else {"private_key": key_pem, "thumbprint": registered["sha1"]}
    )
    result = msal_app(tls_emulator, credential).acquire_token_for_client([SCOPE])
    assert "access_token" in result, result
    assert jwt.decode(result["access_token"], options={"verify_signature": False})["appidacr"] == "2"
    with graph(tls_emulator, result["access_token"]) as client:
        assert client.get(f"/users/{ANN}/calendar").status_code == 200


def test_an_assertion_signed_with_an_unregistered_certificate_is_refused(tls_emulator: Emulator) -> None:
    key_pem, cert_pem = self_signed()
    result = msal_app(tls_emulator, {"private_key": key_pem, "public_certificate": cert_pem}).acquire_token_for_client(
        [SCOPE]
    )
    assert result["error"] == "invalid_client" and result["error_codes"] == [700027]


@pytest.mark.parametrize(
    ("change", "status", "error", "code"),
    [
        ({"client_secret": "wrong"}, 401, "invalid_client", 7000215),
        ({"client_id": "no-such-app"}, 400, "unauthorized_client", 700016),
        ({"client_secret": ""}, 401, "invalid_client", 7000218),
        ({"scope": "https://graph.microsoft.com/Calendars.Read"}, 400, "invalid_scope", 1002012),
        ({"scope": "https://outlook.office365.com/.default"}, 400, "invalid_resource", 500011),
        ({"grant_type": "password"}, 400, "unsupported_grant_type", 70003),
    ],
)
def test_the_token_endpoint_answers_as_entra_id(
    graph_emulator: Emulator, change: dict[str, str], status: int, error: str, code: int
) -> None:
    form = {"grant_type": "client_credentials", "client_id": CLIENT, "client_secret": SECRET, "scope": SCOPE, **change}
    answer = httpx.post(f"{graph_emulator.base_url}/{TENANT}/oauth2/v2.0/token", data=form)
    assert answer.status_code == status
    body = answer.json()
    assert body["error"] == error and body["error_codes"] == [code]
    assert body["error_description"].startswith(f"AADSTS{code}: ")


def test_an_unknown_tenant_is_not_found(graph_emulator: Emulator) -> None:
    answer = httpx.post(
        f"{graph_emulator.base_url}/fabrikam.onmicrosoft.com/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "client_id": CLIENT, "client_secret": SECRET, "scope": SCOPE},
    )
    assert answer.status_code == 400 and answer.json()["error_codes"] == [90002]
    config = httpx.get(f"{graph_emulator.base_url}/fabrikam.onmicrosoft.com/v2.0/.well-known/openid-configuration")
    assert config.status_code == 400


def test_the_secret_may_come_as_http_basic(graph_emulator: Emulator) -> None:
    answer = httpx.post(
        f"{graph_emulator.base_url}/{TENANT}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "scope": SCOPE},
        auth=(CLIENT, SECRET),
    )
    assert answer.status_code == 200, answer.text


def _graph_error(response: httpx.Response) -> tuple[int, str, str]:
    error = response.json()["error"]
    assert set(error["innerError"]) >= {"date", "request-id", "client-request-id"}
    return response.status_code, error["code"], error["message"]


def test_graph_refuses_missing_forged_and_expired_tokens(graph_emulator: Emulator) -> None:
    url = f"{graph_emulator.graph_url}/users/{ANN}/events"
    missing = httpx.get(url)
    assert _graph_error(missing) == (401, "InvalidAuthenticationToken", "Access token is empty.")
    assert missing.headers["WWW-Authenticate"].startswith("Bearer ")
    real = token(graph_emulator)
    claims = jwt.decode(real, options={"verify_signature": False})
    forged = jwt.encode(claims, "not the emulator's key, though just as long", algorithm="HS256")
    answer = httpx.get(url, headers={"Authorization": f"Bearer {forged}"})
    assert _graph_error(answer) == (401, "InvalidAuthenticationToken", "Access token validation failure.")
    assert httpx.get(url, headers={"Authorization": f"Bearer {real}"}).status_code == 200
    graph_emulator.advance(3601)
    answer = httpx.get(url, headers={"Authorization": f"Bearer {real}"})
    assert _graph_error(answer) == (
        401,
        "InvalidAuthenticationToken",
        "Access token has expired or is not yet valid.",
    )


def test_the_token_lifetime_is_an_option() -> None:
    with Emulator(mailboxes=[ANN], graph_apps=APPS, graph_token_minutes=5) as emu:
        answer = request_token(emu)
        assert answer.json()["expires_in"] == 300
        access = answer.json()["access_token"]
        with graph(emu, access) as client:
            emu.advance(290)
            assert client.get(f"/users/{ANN}/events").status_code == 200
            emu.advance(20)
            assert client.get(f"/users/{ANN}/events").status_code == 401


def test_revoked_tokens_are_refused_and_new_ones_work(graph_emulator: Emulator) -> None:
    old, reader_old = token(graph_emulator), token(graph_emulator, READER, READER_SECRET)
    revoke = httpx.post(f"{graph_emulator.base_url}/emulator/graph/tokens/revoke", json={"client_id": CLIENT})
    assert revoke.json() == {"revoked": CLIENT}
    with graph(graph_emulator, old) as client:
        status, code, message = _graph_error(client.get(f"/users/{ANN}/events"))
        assert (status, code) == (401, "InvalidAuthenticationToken") and "TokenIssuedBeforeRevocation" in message
    with graph(graph_emulator, reader_old) as client:  # another app's tokens stay good
        assert client.get(f"/users/{ANN}/events").status_code == 200
    with graph(graph_emulator) as client:  # a token issued after the revocation
        assert client.get(f"/users/{ANN}/events").status_code == 200
    httpx.post(f"{graph_emulator.base_url}/emulator/graph/tokens/revoke", json={})
    with graph(graph_emulator, reader_old) as client:
        assert client.get(f"/users/{ANN}/events").status_code == 401


def test_permissions_decide_what_an_app_may_do(graph_emulator: Emulator, receiver) -> None:
    body = event_body("x", "2026-12-01T09:00:00", "2026-12-01T10:00:00")
    with graph(graph_emulator, token(graph_emulator, NOBODY, NOBODY_SECRET)) as nobody:
        assert _graph_error(nobody.get(f"/users/{ANN}/events"))[:2] == (403, "ErrorAccessDenied")
        subscription = {
            "changeType": "created",
            "notificationUrl": receiver.url + "/notify",
            "resource": f"users/{ANN}/events",
            "expirationDateTime": (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat(),
        }
        assert nobody.post("/subscriptions", json=subscription).status_code == 403
    with graph(graph_emulator, token(graph_emulator, READER, READER_SECRET)) as reader:
        assert reader.get(f"/users/{ANN}/events").status_code == 200
        assert _graph_error(reader.post(f"/users/{ANN}/events", json=body))[:2] == (403, "ErrorAccessDenied")
        assert reader.post("/subscriptions", json=subscription).status_code == 201
    with graph(graph_emulator) as writer:
        assert writer.post(f"/users/{ANN}/events", json=body).status_code == 201


def test_app_only_calls_to_me_and_unknown_users_are_refused_as_graph_does(graph_emulator: Emulator) -> None:
    with graph(graph_emulator) as client:
        me = _graph_error(client.get("/me/events"))
        assert me == (400, "BadRequest", "/me request is only valid with delegated authentication flow.")
        assert _graph_error(client.get("/users/nobody@example.com/events"))[:2] == (404, "ErrorInvalidUser")
        assert _graph_error(client.get(f"/users/{ANN}/messages"))[:2] == (501, "NotImplemented")
        mailbox = graph_emulator.exchange.mailbox(ANN)
        assert client.get(f"/users/{mailbox.guid}/events").status_code == 200  # the object id works as well

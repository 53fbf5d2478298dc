"""The listener is an open door: secret rotation, an allow-list of source networks, floods and fuzzing.

Everything runs over real HTTP (uvicorn in a thread on 127.0.0.1, port 0) against ``Runtime(...).app(run_jobs=False)``,
on SQLite and on PostgreSQL (the ``database_url`` fixture). What is pinned:

* rotation: during the grace period both the old and the new secret are accepted, the subscription job re-subscribes
  every mailbox with the new callback URL, and after the grace period the old URL is 404 and stores nothing;
* allow-list: an address outside ``listener_allowed_networks`` gets 403 and nothing is stored (whatever the secret);
  ``X-Forwarded-For`` counts only with ``listener_trust_forwarded_for`` (uvicorn runs here with ``proxy_headers=False``,
  else it would rewrite the client address itself for peers at 127.0.0.1); a bad network is a settings error;
* floods: thousands of refused requests from several threads neither slow nor block real notifications (every one
  answered OK, p99 under a second), nothing but the real events is stored, never a 5xx; refused requests beyond the
  per-address budget get 429, real ones never do;
* fuzzing (hypothesis): mutated real SendNotification bodies never get a 5xx, and the rows stored are exactly what
  the parser accepts for our enabled subscriptions, while real notifications sent meanwhile all go through.
"""

from __future__ import annotations

import ipaddress
import os
import random
import re
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from lxml import etree
from sqlalchemy import func, select
from starlette.applications import Starlette

from calsync.jobs.manage_subscriptions import manage
from calsync.listener.app import (
    MAX_ID_CHARS,
    REFUSAL_BURST,
    RefusalLimiter,
    client_address,
    limiter_key,
    parse_address,
)
from calsync.listener.protocol import MAX_BODY_BYTES, NotificationRejected
from calsync.runtime import Runtime
from calsync.settings import SettingsError, listener_callback_url, listener_secrets, load_settings
from calsync.sources.ews.notifications import parse_send_notification
from calsync.sources.memory import MemorySource
from calsync.store import operators, subscriptions
from calsync.store.tables import NotificationRow, SubscriptionRow

from .conftest import SAMPLES_DIR
from .test_listener_app import clean_environment, sample

OLD_SECRET = "old-secret-" + "o" * 21
NEW_SECRET = "new-secret-" + "n" * 21
SECRET = "s" * 32
ANN, BOB, CYD = "ann@example.com", "bob@example.com", "cyd@example.com"
ANN_SUB = "FwBhbm4tc3Vic2NyaXB0aW9uLWhhcmRlbmluZw=="
BOB_SUB = "FwBib2Itc3Vic2NyaXB0aW9uLWhhcmRlbmluZw=="  # bob's sync is disabled
CYD_SUB = "FwBjeWQtc3Vic2NyaXB0aW9uLWhhcmRlbmluZw=="  # only ever used by the real notifications of a test
UNKNOWN_SUB = "FwB1bmtub3duLXN1YnNjcmlwdGlvbi1oYXJkZW4="
XML = "text/xml; charset=utf-8"
SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
M_NS = "http://schemas.microsoft.com/exchange/services/2006/messages"
T_NS = "http://schemas.microsoft.com/exchange/services/2006/types"
REAL_SAMPLES = (
    "o365-capture-sendnotification-modifiedevent.fixed.xml",
    "exchangelib-sendnotification-statusevent.xml",
    "workmail-sendnotification-modifiedevent.xml",
    "workmail-sendnotification-statusevent.xml",
)
LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, b"".join(b"&lol%d;" % (i - 1) if i > 1 else b"&lol;" for _ in range(10)))
        for i in range(1, 10)
    )
    + b"]><lolz>&lol9;</lolz>"
)


# --- helpers --------------------------------------------------------------------------------------------------------


def push_body(subscription_id: str, item_id: str, watermark: str = "AQAAAA==", kind: str = "CreatedEvent") -> bytes:
    """A SendNotification like Exchange's, with one item event."""
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<soap11:Envelope xmlns:soap11="{SOAP_NS}"><soap11:Body>'
        f'<m:SendNotification xmlns:t="{T_NS}" xmlns:m="{M_NS}"><m:ResponseMessages>'
        '<m:SendNotificationResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>'
        f"<m:Notification><t:SubscriptionId>{subscription_id}</t:SubscriptionId>"
        "<t:PreviousWatermark>AQAAAA==</t:PreviousWatermark><t:MoreEvents>false</t:MoreEvents>"
        f"<t:{kind}><t:Watermark>{watermark}</t:Watermark><t:TimeStamp>2026-03-01T09:00:00Z</t:TimeStamp>"
        f'<t:ItemId Id="{item_id}" ChangeKey="DwAAAA==" /><t:ParentFolderId Id="AQMkAGYz" ChangeKey="AQAAAA==" />'
        f"</t:{kind}></m:Notification></m:SendNotificationResponseMessage></m:ResponseMessages></m:SendNotification>"
        "</soap11:Body></soap11:Envelope>"
    ).encode()


def real_sample(name: str, subscription_id: str = ANN_SUB) -> bytes:
    return sample(name, subscription_id)


def answer(response: httpx.Response) -> str:
    """The SubscriptionStatus of a SendNotificationResult (the response must be one)."""
    assert response.status_code == 200, (response.status_code, response.text)
    status = etree.fromstring(response.content).find(
        f"{{{SOAP_NS}}}Body/{{{M_NS}}}SendNotificationResult/{{{M_NS}}}SubscriptionStatus"
    )
    assert status is not None, response.text
    return str(status.text)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No CALSYNC_* or classic variable from the shell, no calsync.toml from the working directory."""
    clean_environment(monkeypatch, tmp_path)


@pytest.fixture
def db_url(database_url: str, clean_env: None) -> str:
    """``database_url`` (SQLite and PostgreSQL) in a clean environment (cleaned after the URL is made)."""
    return database_url


@contextmanager
def listening() -> Iterator[tuple[socket.socket, str]]:
    """A socket bound to 127.0.0.1 on a free port, and its base URL (known before the settings are made).

    The protocol is named (IPPROTO_TCP, not 0): asyncio only turns Nagle's algorithm off (TCP_NODELAY) for sockets
    whose ``proto`` says TCP, and without it every answer waits ~40 ms for a delayed ACK."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock, f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


@contextmanager
def serve(app: Starlette, sock: socket.socket) -> Iterator[None]:
    """Serve ``app`` with uvicorn in a thread on ``sock``. ``proxy_headers=False``: uvicorn would otherwise take the
    client address from X-Forwarded-For itself for peers at 127.0.0.1, and the test peers are all at 127.0.0.1."""
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on", access_log=False, timeout_graceful_shutdown=1, proxy_headers=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="test-listener", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the listener did not start"
            time.sleep(0.01)
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass
class Site:
    """A prepared runtime served over HTTP, with ann (enabled, ANN_SUB), bob (disabled, BOB_SUB), cyd (enabled)."""

    runtime: Runtime
    source: MemorySource  # records subscribe() calls; the listener tests never sync
    base: str
    ids: dict[str, int] = field(default_factory=dict)

    def url(self, secret: str = SECRET) -> str:
        return f"{self.base}/ews/notifications/{secret}"

    def rows(self, after: int = 0) -> list[tuple[int, str, str, str | None, str | None]]:
        with self.runtime.db.read() as s:
            found = s.execute(
                select(
                    NotificationRow.id,
                    NotificationRow.subscription_id,
                    NotificationRow.kind,
                    NotificationRow.item_id,
                    NotificationRow.watermark,
                )
                .where(NotificationRow.id > after)
                .order_by(NotificationRow.id)
            ).all()
        return [tuple(r) for r in found]  # type: ignore[misc]

    def count(self) -> int:
        with self.runtime.db.read() as s:
            return int(s.scalar(select(func.count()).select_from(NotificationRow)) or 0)


def subscribe_calls(source: MemorySource) -> list[tuple[str, str, int]]:
    """(mailbox, callback URL, StatusFrequency) of every subscribe() the source was asked for."""
    return [(mailbox, url, frequency) for mailbox, url, frequency, _ in source.subscriptions]


def add_operators(runtime: Runtime, *, subscribed: bool = True) -> dict[str, int]:
    ids: dict[str, int] = {}
    with runtime.db.transaction() as s:
        for email, enabled, sub in ((ANN, True, ANN_SUB), (BOB, False, BOB_SUB), (CYD, True, CYD_SUB)):
            op = operators.add(s, email, email.split("@")[0].title(), enabled=enabled)
            ids[email] = op.id
            if subscribed:
                subscriptions.save(s, op.id, sub, "AAAAAA==", 30, "http://127.0.0.1:1/ews/notifications/x")
    return ids


@contextmanager
def site(database_url: str, *, subscribed: bool = True, **settings: Any) -> Iterator[Site]:
    """A runtime (jobs off) for ``settings`` served on 127.0.0.1; operators added once per database."""
    with listening() as (sock, base):
        settings.setdefault("listener_secret", SECRET)
        config = load_settings(database_url=database_url, listener_url=base, **settings)
        source = MemorySource(mailboxes=[ANN, BOB, CYD])
        runtime = Runtime(config, source=source, threads=1)
        try:
            runtime.prepare()
            with runtime.db.read() as s:
                known = {op.email: op.id for op in operators.listing(s)}
            ids = known or add_operators(runtime, subscribed=subscribed)
            with serve(runtime.app(run_jobs=False), sock):
                yield Site(runtime, source, base, ids)
        finally:
            runtime.close()


def post(client: httpx.Client, url: str, body: bytes, content_type: str | None = XML, **headers: str) -> httpx.Response:
    if content_type is not None:
        headers["Content-Type"] = content_type
    return client.post(url, content=body, headers=headers)


# --- 1. secret rotation ---------------------------------------------------------------------------------------------


def test_listener_secrets_follow_the_grace_period(clean_env: None) -> None:
    until = datetime(2026, 7, 1, 12, tzinfo=UTC)
    s = load_settings(
        listener_secret=NEW_SECRET, listener_previous_secret=OLD_SECRET, listener_previous_secret_until=until
    )
    assert listener_secrets(s, now=until - timedelta(seconds=1)) == [NEW_SECRET, OLD_SECRET]
    assert listener_secrets(s, now=until) == [NEW_SECRET]
    assert listener_secrets(s, now=until + timedelta(days=1)) == [NEW_SECRET]
    forever = load_settings(listener_secret=NEW_SECRET, listener_previous_secret=OLD_SECRET)
    assert listener_secrets(forever, now=datetime(2999, 1, 1, tzinfo=UTC)) == [NEW_SECRET, OLD_SECRET]
    assert listener_secrets(load_settings(listener_secret=NEW_SECRET)) == [NEW_SECRET]
    assert listener_secrets(load_settings()) == []
    # The callback URL Exchange is given is always the current secret's.
    assert listener_callback_url(s).endswith("/ews/notifications/" + NEW_SECRET)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-07-01T14:00:00+02:00", datetime(2026, 7, 1, 12, tzinfo=UTC)),
        ("2026-07-01T12:00:00Z", datetime(2026, 7, 1, 12, tzinfo=UTC)),
        ("2026-07-01 12:00:00.5+00:00", datetime(2026, 7, 1, 12, 0, 0, 500000, tzinfo=UTC)),
        ("", None),
    ],
)
def test_previous_secret_until_is_read_as_utc(clean_env: None, value: str, expected: datetime | None) -> None:
    s = load_settings(listener_previous_secret_until=value)
    assert s.listener_previous_secret_until == expected
    if expected is not None:
        assert s.listener_previous_secret_until is not None and s.listener_previous_secret_until.utcoffset() == (
            timedelta(0)
        )


def test_rotation_settings_from_file_and_environment(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    Path("calsync.toml").write_text(
        f'listener_secret = "{NEW_SECRET}"\nlistener_previous_secret = "{OLD_SECRET}"\n'
        "listener_previous_secret_until = 2026-07-01T14:00:00+02:00\n"
        'listener_allowed_networks = ["10.0.0.0/8", "2001:db8::/32; 192.0.2.7"]\n'
    )
    s = load_settings()
    assert s.listener_previous_secret is not None and s.listener_previous_secret.get_secret_value() == OLD_SECRET
    assert s.listener_previous_secret_until == datetime(2026, 7, 1, 12, tzinfo=UTC)
    assert s.listener_allowed_networks == ("10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32")
    assert s.listener_trust_forwarded_for is False
    monkeypatch.setenv("CALSYNC_LISTENER_ALLOWED_NETWORKS", "127.0.0.0/8;;  ::1 ")
    monkeypatch.setenv("CALSYNC_LISTENER_TRUST_FORWARDED_FOR", "true")
    monkeypatch.setenv("CALSYNC_LISTENER_PREVIOUS_SECRET_UNTIL", "2026-08-01T00:00:00Z")
    s = load_settings()
    assert s.listener_allowed_networks == ("127.0.0.0/8", "::1/128")
    assert s.listener_trust_forwarded_for is True
    assert s.listener_previous_secret_until == datetime(2026, 8, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("settings", "setting", "says"),
    [
        ({"listener_previous_secret": "too short"}, "listener_previous_secret", "is not a valid secret path segment"),
        ({"listener_previous_secret": "a/b" * 8}, "listener_previous_secret", "is not a valid secret path segment"),
        ({"listener_previous_secret_until": "2026-07-01T12:00:00"}, "listener_previous_secret_until", "no time zone"),
        ({"listener_previous_secret_until": "2026-07-01"}, "listener_previous_secret_until", "a date without a time"),
        ({"listener_previous_secret_until": date(2026, 7, 1)}, "listener_previous_secret_until", "date without a time"),
        ({"listener_previous_secret_until": "next friday"}, "listener_previous_secret_until", "not an ISO 8601"),
        ({"listener_previous_secret_until": 1234}, "listener_previous_secret_until", "is not text"),
        ({"listener_trust_forwarded_for": "perhaps"}, "listener_trust_forwarded_for", "is not true or false"),
    ],
)
def test_bad_rotation_settings_are_refused(clean_env: None, settings: dict[str, Any], setting: str, says: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(**settings)
    assert len(info.value.problems) == 1
    problem = info.value.problems[0]
    assert problem.startswith(f"{setting}: ") and says in problem and "; allowed: " in problem
    if setting == "listener_previous_secret":
        assert str(settings[setting]) not in problem  # a secret is never echoed


def test_rotation_keeps_subscriptions_and_then_closes_the_old_door(db_url: str) -> None:
    # Before the rotation: ann and cyd are subscribed with the old callback URL.
    with site(db_url, subscribed=False, listener_secret=OLD_SECRET) as before:
        old_url = before.url(OLD_SECRET)
        result = manage(before.runtime.db, before.source, callback_url=old_url, status_frequency=30)
        assert sorted(result.subscribed) == [ANN, CYD] and not result.recreated
        assert sorted(subscribe_calls(before.source)) == [(ANN, old_url, 30), (CYD, old_url, 30)]
        with before.runtime.db.read() as s:
            old_subs = {sub.operator_id: sub.subscription_id for sub in s.scalars(select(SubscriptionRow)).all()}
        ann_old_sub = old_subs[before.ids[ANN]]
        base = before.base

    # The rotation: a new secret, the old one accepted for a grace period.
    grace = 4.0
    until = datetime.now(UTC) + timedelta(seconds=grace)
    with (
        site(
            db_url,
            listener_secret=NEW_SECRET,
            listener_previous_secret=OLD_SECRET,
            listener_previous_secret_until=until.isoformat(),
        ) as after,
        httpx.Client(timeout=10) as client,
    ):
        old_url, new_url = f"{after.base}/ews/notifications/{OLD_SECRET}", after.url(NEW_SECRET)
        assert after.base != base  # another port: the stored callback URLs differ anyway
        # Exchange keeps pushing the old subscription to the old URL: accepted and stored.
        assert answer(post(client, old_url, push_body(ann_old_sub, "item-1"))) == "OK"
        assert answer(post(client, new_url, push_body(ann_old_sub, "item-2"))) == "OK"
        assert [r[3] for r in after.rows()] == ["item-1", "item-2"]

        # The next run of the subscription job re-subscribes every mailbox with the new URL.
        assert listener_callback_url(after.runtime.settings) == new_url
        summary = after.runtime.manage_subscriptions()
        assert summary.startswith("subscribed 0, renewed 0, recreated 2"), summary
        assert sorted(subscribe_calls(after.source)) == [(ANN, new_url, 30), (CYD, new_url, 30)]
        with after.runtime.db.read() as s:
            subs = {sub.operator_id: sub for sub in s.scalars(select(SubscriptionRow)).all()}
        assert {sub.callback_url for sub in subs.values()} == {new_url}
        ann_new_sub = subs[after.ids[ANN]].subscription_id
        assert ann_new_sub != ann_old_sub
        assert after.runtime.manage_subscriptions().startswith("subscribed 0, renewed 0, recreated 0")  # settled

        # The new subscription delivers to the new URL; the old URL still works during the grace period.
        assert answer(post(client, new_url, push_body(ann_new_sub, "item-3"))) == "OK"
        assert answer(post(client, old_url, push_body(ann_new_sub, "item-4"))) == "OK"
        # Exchange's old subscription, replaced, is told to stop (and stores nothing).
        assert answer(post(client, old_url, push_body(ann_old_sub, "item-x"))) == "Unsubscribe"
        assert [r[3] for r in after.rows()] == ["item-1", "item-2", "item-3", "item-4"]
        assert datetime.now(UTC) < until, "the test was too slow for its grace period"

        # After the grace period the old secret is no door at all.
        time.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 0.2)
        count = after.count()
        refused = post(client, old_url, push_body(ann_new_sub, "item-5"))
        assert refused.status_code == 404 and b"SendNotificationResult" not in refused.content
        assert after.count() == count
        assert answer(post(client, new_url, push_body(ann_new_sub, "item-6"))) == "OK"
        assert [r[3] for r in after.rows()] == ["item-1", "item-2", "item-3", "item-4", "item-6"]


# --- 2. allow-list of source networks ------------------------------------------------------------------------------


def test_allowed_network_gets_in_and_others_get_403(db_url: str) -> None:
    with site(db_url, listener_allowed_networks="10.0.0.0/8; 127.0.0.0/8") as inside, httpx.Client(timeout=10) as c:
        assert answer(post(c, inside.url(), push_body(ANN_SUB, "allowed-1"))) == "OK"
        assert [r[3] for r in inside.rows()] == ["allowed-1"]

    with site(db_url, listener_allowed_networks="10.0.0.0/8; 2001:db8::/32") as outside, httpx.Client(timeout=10) as c:
        count = outside.count()
        for url in (outside.url(), outside.url("w" * 32)):  # the same 403 with and without the secret: no oracle
            refused = post(c, url, push_body(ANN_SUB, "outside-1"))
            assert refused.status_code == 403, refused.text
            assert b"SendNotificationResult" not in refused.content
        assert post(c, outside.url(), LAUGHS).status_code == 403
        assert outside.count() == count
        assert outside.runtime.listener.received == 0
        assert httpx.get(f"{outside.base}/healthz", timeout=5).status_code == 200  # only the listener is guarded


def test_forwarded_for_counts_only_when_trusted(db_url: str) -> None:
    networks = "10.0.0.0/8; 2001:db8::/32"
    trusted_settings = {"listener_allowed_networks": networks, "listener_trust_forwarded_for": True}
    with site(db_url, **trusted_settings) as trusted, httpx.Client(timeout=10) as c:
        url = trusted.url()
        assert answer(post(c, url, push_body(ANN_SUB, "xff-1"), **{"X-Forwarded-For": "10.1.2.3"})) == "OK"
        appended = {"X-Forwarded-For": "192.0.2.1, 10.9.9.9"}  # the proxy appended what it saw: the last entry
        assert answer(post(c, url, push_body(ANN_SUB, "xff-2"), **appended)) == "OK"
        assert answer(post(c, url, push_body(ANN_SUB, "xff-3"), **{"X-Forwarded-For": "2001:db8::7"})) == "OK"
        assert answer(post(c, url, push_body(ANN_SUB, "xff-4"), **{"X-Forwarded-For": "[2001:db8::8]:443"})) == "OK"
        count = trusted.count()
        # "10.1.2.3, 192.0.2.1": a client at 192.0.2.1 wrote 10.1.2.3 itself, and the proxy appended the truth.
        for xff in ("192.0.2.1", "10.1.2.3, 192.0.2.1", "not-an-address", "10.1.2.3,", "", "2001:db9::1"):
            refused = post(c, url, push_body(ANN_SUB, "xff-x"), **{"X-Forwarded-For": xff})
            assert refused.status_code == 403, xff
        lines = [("Content-Type", XML), ("X-Forwarded-For", "10.1.2.3"), ("X-Forwarded-For", "192.0.2.1")]
        assert c.post(url, content=push_body(ANN_SUB, "xff-x"), headers=lines).status_code == 403  # one list
        assert post(c, url, push_body(ANN_SUB, "xff-x")).status_code == 403  # no header: the peer, 127.0.0.1
        assert trusted.count() == count
        assert [r[3] for r in trusted.rows()] == ["xff-1", "xff-2", "xff-3", "xff-4"]

    with site(db_url, listener_allowed_networks=networks) as untrusted, httpx.Client(timeout=10) as c:
        count = untrusted.count()
        refused = post(c, untrusted.url(), push_body(ANN_SUB, "xff-5"), **{"X-Forwarded-For": "10.1.2.3"})
        assert refused.status_code == 403  # the header is anybody's to write: ignored unless trusted
        assert untrusted.count() == count


@pytest.mark.parametrize(
    ("value", "bad"),
    [
        ("10.0.0.0/33", "'10.0.0.0/33' is not a network in CIDR notation"),
        ("10.0.0.0/8; example.com", "'example.com' is not a network in CIDR notation"),
        ("10.1.2.3/8", "'10.1.2.3/8' has host bits set (did you mean 10.0.0.0/8?)"),
        ("2001:db8::1/32", "'2001:db8::1/32' has host bits set (did you mean 2001:db8::/32?)"),
        (["10.0.0.0/8", "300.1.1.1"], "'300.1.1.1' is not a network in CIDR notation"),
        ("10.0.0.0/8, 192.168.0.0/16", "'10.0.0.0/8, 192.168.0.0/16' is not a network in CIDR notation"),
        (42, "42 is not text or a list of networks"),
    ],
)
def test_bad_network_is_a_settings_error_naming_the_setting_and_the_entry(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, value: Any, bad: str
) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(listener_allowed_networks=value)
    assert len(info.value.problems) == 1
    problem = info.value.problems[0]
    assert (
        problem.startswith("listener_allowed_networks: ") and bad in problem and "allowed: networks in CIDR" in problem
    )
    if isinstance(value, str):
        monkeypatch.setenv("CALSYNC_LISTENER_ALLOWED_NETWORKS", value)
        with pytest.raises(SettingsError) as from_env:
            load_settings()
        assert from_env.value.problems == info.value.problems


def test_client_address_parsing() -> None:
    v4, v6 = ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("2001:db8::1")
    assert parse_address("10.0.0.1") == v4
    assert parse_address(" 10.0.0.1:8443 ") == v4
    assert parse_address("::ffff:10.0.0.1") == v4  # IPv4-mapped: a dual-stack listener's view of an IPv4 peer
    assert parse_address("2001:db8::1") == v6
    assert parse_address("[2001:db8::1]:443") == v6
    for junk in (None, "", "testclient", "10.0.0", "[2001:db8::1", "unknown", "10.0.0.1:80:80", "1" * 500):
        assert parse_address(junk) is None, junk
    loopback = ipaddress.ip_address("127.0.0.1")
    assert client_address("127.0.0.1", ["192.0.2.1, 10.0.0.1"], trust_forwarded_for=True) == v4
    assert client_address("127.0.0.1", ["192.0.2.1", " 10.0.0.1 "], trust_forwarded_for=True) == v4
    assert client_address("127.0.0.1", ["10.0.0.1, 192.0.2.1"], trust_forwarded_for=True) != v4
    assert client_address("127.0.0.1", ["10.0.0.1"], trust_forwarded_for=False) == loopback
    assert client_address("127.0.0.1", [], trust_forwarded_for=True) == loopback
    assert client_address("127.0.0.1", ["bogus"], trust_forwarded_for=True) is None
    assert client_address("127.0.0.1", [""], trust_forwarded_for=True) is None
    # Limiter buckets: an IPv4 address, an IPv6 /64 (one host usually owns a whole /64), or the raw peer name.
    assert limiter_key(v4, "x") == "10.0.0.1"
    assert limiter_key(ipaddress.ip_address("2001:db8::1:2:3:4"), None) == "2001:db8::/64"
    assert limiter_key(None, "testclient") == "?testclient"


# --- 3. floods ------------------------------------------------------------------------------------------------------


def test_refusal_limiter_is_a_bounded_token_bucket() -> None:
    now = [100.0]
    limiter = RefusalLimiter(rate=2.0, burst=3, max_clients=50, clock=lambda: now[0])
    assert not limiter.limited("a")
    assert [limiter.charge("a") for _ in range(3)] == ["ok", "ok", "emptied"]
    assert limiter.limited("a") and not limiter.limited("b")
    now[0] += 0.5  # one token back
    assert not limiter.limited("a")
    assert limiter.charge("a") == "flooding"  # still the same flood: logged once
    assert limiter.limited("a")
    now[0] += 10  # full again: a new incident would be logged again
    assert not limiter.limited("a")
    assert limiter.charge("a") == "ok"
    for i in range(1000):
        limiter.charge(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 50  # bounded: the least recently refused are forgotten
    assert "a" not in limiter._buckets and "10.0.3.231" in limiter._buckets
    with pytest.raises(ValueError):
        RefusalLimiter(rate=0)


def test_refused_requests_beyond_the_budget_get_429_but_real_ones_never(db_url: str) -> None:
    with site(db_url, listener_trust_forwarded_for=True) as s, httpx.Client(timeout=10) as c:
        s.runtime.listener.limiter = RefusalLimiter(rate=0.01, burst=REFUSAL_BURST)  # no refill during the test
        flooder, other = {"X-Forwarded-For": "192.0.2.66"}, {"X-Forwarded-For": "192.0.2.77"}
        statuses = [post(c, s.url("w" * 32), b"<x/>", **flooder).status_code for _ in range(REFUSAL_BURST + 30)]
        assert statuses == [404] * REFUSAL_BURST + [429] * 30
        limited = post(c, s.url("w" * 32), b"<x/>", **flooder)
        assert limited.status_code == 429 and limited.headers["retry-after"] == "100"
        assert post(c, s.url(), b"x" * 10, **flooder).status_code == 429  # not read: 429 whatever the body
        assert post(c, s.url(), LAUGHS, **flooder).status_code == 429  # the right secret, a refused body: still 429
        # A real notification from the same address goes through at once, however limited the address is.
        for i in range(5):
            assert answer(post(c, s.url(), push_body(ANN_SUB, f"real-{i}"), **flooder)) == "OK"
        assert answer(post(c, s.url(), push_body(UNKNOWN_SUB, "real-x"), **flooder)) == "Unsubscribe"
        # Another address has its own budget.
        assert post(c, s.url("w" * 32), b"<x/>", **other).status_code == 404
        assert [r[3] for r in s.rows()] == [f"real-{i}" for i in range(5)]
        listener = s.runtime.listener
        assert listener.received == 6 and listener.limited == 33 and listener.refused == REFUSAL_BURST + 1


def _garbage(i: int, rng: random.Random, url: str, wrong_url: str) -> tuple[str, bytes, str | None]:
    """The i-th body of a flood: (url, body, content type). Real-looking, hostile, broken and misaddressed."""
    real = push_body(ANN_SUB, f"garbage-{i}")
    kind = i % 10
    if kind == 0:
        return wrong_url, real, XML  # a probe for the secret
    if kind == 1:
        return url, LAUGHS, XML
    if kind == 2:
        return url, rng.randbytes(rng.randrange(1, 4096)), XML
    if kind == 3:
        return url, real[: rng.randrange(1, len(real))], XML
    if kind == 4:
        return url, real, "text/plain"
    if kind == 5:
        return url, b"<a>" + b"<b>x</b>" * 12000 + b"</a>", XML  # well-formed, not SOAP, ~100 KB
    if kind == 6:
        return url, push_body(UNKNOWN_SUB, f"garbage-{i}"), XML  # valid, but not ours: Unsubscribe
    if kind == 7:
        return url, real.replace(T_NS.encode(), b"urn:not-ews"), XML
    if kind == 8:
        return (
            url,
            real.replace(b'<?xml version="1.0" encoding="utf-8"?>', b'<!DOCTYPE x SYSTEM "file:///etc/passwd">'),
            XML,
        )
    if i % 100 == 9:
        return url, b" " * (MAX_BODY_BYTES + 1), XML  # oversized
    return url, push_body(BOB_SUB, f"garbage-{i}"), XML  # bob's sync is off: Unsubscribe


def test_flood_of_refused_requests_does_not_slow_real_notifications(db_url: str) -> None:
    flood_threads, per_thread = 4, 500
    with site(db_url) as s:
        url, wrong_url = s.url(), s.url("w" * 32)
        statuses: Counter[int] = Counter()
        errors: Counter[str] = Counter()
        lock = threading.Lock()
        done = threading.Event()

        def flood(seed: int) -> None:
            rng = random.Random(seed)
            local: Counter[int] = Counter()
            with httpx.Client(timeout=30) as client:
                for i in range(per_thread):
                    target, body, content_type = _garbage(seed * per_thread + i, rng, url, wrong_url)
                    try:
                        local[post(client, target, body, content_type).status_code] += 1
                    except httpx.TransportError as exc:  # the server may close on an oversized upload
                        with lock:
                            errors[type(exc).__name__] += 1
            with lock:
                statuses.update(local)

        latencies: list[float] = []
        real_answers: list[str] = []

        def real_sender() -> None:
            with httpx.Client(timeout=30) as client:
                i = 0
                while not done.is_set() or i < 50:
                    started = time.perf_counter()
                    response = post(client, url, push_body(ANN_SUB, f"real-{i}", watermark=f"W{i}="))
                    latencies.append(time.perf_counter() - started)
                    real_answers.append(answer(response) if response.status_code == 200 else str(response.status_code))
                    i += 1
                    time.sleep(0.01)

        started = time.monotonic()
        threads = [threading.Thread(target=flood, args=(n,), name=f"flood-{n}") for n in range(flood_threads)]
        sender = threading.Thread(target=real_sender, name="real-sender")
        sender.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        done.set()
        sender.join(timeout=60)
        elapsed = time.monotonic() - started
        assert not any(t.is_alive() for t in [*threads, sender])

        flood_total = sum(statuses.values()) + sum(errors.values())
        assert flood_total == flood_threads * per_thread
        latencies.sort()
        p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
        print(
            f"\nflood ({s.runtime.db.url.get_backend_name()}): {flood_total} refused-or-foreign requests from "
            f"{flood_threads} threads in {elapsed:.1f} s ({flood_total / elapsed:.0f}/s), answers {dict(statuses)}, "
            f"transport errors {dict(errors)}; {len(latencies)} real notifications: p50 "
            f"{statistics.median(latencies) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms"
        )
        assert real_answers == ["OK"] * len(real_answers)
        assert p99 < 1.0, f"p99 {p99:.3f} s"
        assert not [code for code in statuses if code >= 500], statuses
        assert statuses[429] > 0  # the per-address budget was used up and enforced
        assert set(errors) <= {"WriteError", "RemoteProtocolError", "ReadError"} and sum(errors.values()) <= 20
        # Nothing but the real events is stored.
        rows = s.rows()
        assert [(r[1], r[3], r[4]) for r in rows] == [
            (ANN_SUB, f"real-{i}", f"W{i}=") for i in range(len(real_answers))
        ]


# --- 4. fuzzing -----------------------------------------------------------------------------------------------------

_SNIPPETS = (
    b'<!DOCTYPE x [<!ENTITY a "b">]>',
    b"&a;",
    b"&lol9;",
    b'<!ENTITY x SYSTEM "file:///etc/passwd">',
    b"<!DOCTYPE soap11:Envelope>",
    b"<![CDATA[x]]>",
    b"]]>",
    b'<?xml version="1.0"?>',
    b"<?pi x?>",
    b"<!-- c -->",
    b"\x00",
    b"\xff\xfe",
    b"\xef\xbb\xbf",
    b"\xc3\x28",
    b"&#0;",
    b"&#x1F600;",
    b"&amp;",
    b"&lt;",
    b"</m:Notification>",
    b"<m:Notification>",
    b"<t:ModifiedEvent>",
    b'<t:ItemId Id="x"/>',
    b"<t:SubscriptionId>" + ANN_SUB.encode() + b"</t:SubscriptionId>",
    b"<t:SubscriptionId>" + UNKNOWN_SUB.encode() + b"</t:SubscriptionId>",
    b'ResponseClass="Error"',
    b"<t:MoreEvents>maybe</t:MoreEvents>",
    b'xmlns:t="urn:wrong"',
    b'xmlns="' + SOAP_NS.encode() + b'"',
    b'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file:///etc/passwd" parse="text"/>',
)
_NAMESPACES = (SOAP_NS.encode(), M_NS.encode(), T_NS.encode())
_WRONG_NAMESPACES = (
    b"http://www.w3.org/2003/05/soap-envelope",  # SOAP 1.2: accepted
    b"http://schemas.microsoft.com/exchange/services/2006/typesX",
    b"http://schemas.microsoft.com/exchange/services/2007/messages",
    b"HTTP://SCHEMAS.XMLSOAP.ORG/SOAP/ENVELOPE/",
    b"",
    b"urn:evil",
)
FUZZ_SECONDS = float(os.environ.get("CALSYNC_TEST_FUZZ_SECONDS", "25"))  # time budget of one fuzz run
_CONTENT_TYPES = (XML, XML, XML, None, "application/soap+xml", "text/plain", "text/xml; charset=utf-16", "text/xml;")
_SUBSCRIPTIONS = (ANN_SUB, ANN_SUB, BOB_SUB, UNKNOWN_SUB)

_position = st.floats(min_value=0.0, max_value=1.0)
_mutation = st.one_of(
    st.tuples(st.just("flip"), _position, st.integers(1, 255)),
    st.tuples(st.just("truncate"), _position),
    st.tuples(st.just("insert"), _position, st.sampled_from(_SNIPPETS)),
    st.tuples(st.just("insert"), _position, st.binary(min_size=1, max_size=24)),
    st.tuples(st.just("delete"), _position, st.integers(1, 200)),
    st.tuples(st.just("repeat"), _position, st.integers(1, 300), st.integers(1_000, MAX_BODY_BYTES + 2_000)),
    st.tuples(st.just("namespace"), st.sampled_from(_NAMESPACES), st.sampled_from(_WRONG_NAMESPACES), st.booleans()),
    st.tuples(st.just("duplicate"), st.sampled_from(_SUBSCRIPTIONS)),
    st.tuples(st.just("long_id"), st.integers(MAX_ID_CHARS - 2, MAX_ID_CHARS + 600)),
)
_subscription = st.one_of(
    st.sampled_from(_SUBSCRIPTIONS),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40),
    st.text("ABCDEFGHabcdefgh0123456789+/=", min_size=500, max_size=700),
)


@dataclass(frozen=True)
class FuzzCase:
    sample: str
    subscription: str
    escape: bool
    mutations: tuple[tuple[Any, ...], ...]
    content_type: str | None


_cases = st.builds(
    FuzzCase,
    sample=st.sampled_from(REAL_SAMPLES),
    subscription=_subscription,
    escape=st.booleans(),
    mutations=st.lists(_mutation, max_size=4).map(tuple),
    content_type=st.sampled_from(_CONTENT_TYPES),
)


def _at(data: bytes, position: float) -> int:
    return min(len(data), int(position * len(data)))


def mutate(case: FuzzCase, bases: dict[str, str]) -> bytes:
    sub = case.subscription
    if case.escape:
        sub = sub.replace("&", "&amp;").replace("<", "&lt;")
    text = bases[case.sample].replace("@@SUB@@", sub)
    data = text.encode("utf-8", "surrogatepass")
    for mutation in case.mutations:
        kind = mutation[0]
        if kind == "flip" and data:
            i = min(len(data) - 1, _at(data, mutation[1]))
            data = data[:i] + bytes([data[i] ^ mutation[2]]) + data[i + 1 :]
        elif kind == "truncate":
            data = data[: _at(data, mutation[1])]
        elif kind == "insert":
            i = _at(data, mutation[1])
            data = data[:i] + mutation[2] + data[i:]
        elif kind == "delete":
            i = _at(data, mutation[1])
            data = data[:i] + data[i + mutation[2] :]
        elif kind == "repeat" and data:
            i = min(len(data) - 1, _at(data, mutation[1]))
            chunk = data[i : i + mutation[2]]
            times = max(1, (mutation[3] - len(data)) // len(chunk))
            data = data[: i + len(chunk)] + chunk * times + data[i + len(chunk) :]
        elif kind == "namespace":
            data = data.replace(mutation[1], mutation[2], -1 if mutation[3] else 1)
        elif kind == "duplicate":
            match = re.search(rb"<m:Notification>.*?</m:Notification>", data, re.S)
            if match is not None:
                copy = re.sub(
                    rb"<t:SubscriptionId>[^<]*</t:SubscriptionId>",
                    b"<t:SubscriptionId>" + mutation[1].encode() + b"</t:SubscriptionId>",
                    match.group(0),
                )
                data = data[: match.end()] + copy + data[match.end() :]
        elif kind == "long_id":
            data = re.sub(rb'(<t:(?:Item|Folder)Id Id=")[^"]*"', rb"\g<1>" + b"A" * mutation[1] + b'"', data, count=1)
    return data


Expected = tuple[str, set[int], list[tuple[str, str, str | None, str | None]]]


def expected(body: bytes, content_type: str | None) -> Expected:
    """What a body is (a label for the figures), what the listener may answer (statuses) and must store (rows),
    decided by the parser and the store's rules, not by the listener."""
    try:
        notes = parse_send_notification(body, content_type)
    except NotificationRejected as exc:
        # The listener checks the size before the content type (it need not read a body it will refuse anyway).
        return "refused by the parser", {exc.status, 429} | ({413} if len(body) > MAX_BODY_BYTES else set()), []
    if any(len(e.item_id or e.folder_id or "") > MAX_ID_CHARS for n in notes for e in n.events):
        return "id too long for the store", {400, 429}, []
    if any(n.subscription_id != ANN_SUB for n in notes):  # bob is disabled, the rest unknown
        return "parsed, not (all) ours", {200}, []
    rows = [(ANN_SUB, e.kind, e.item_id or e.folder_id, e.watermark) for n in notes for e in n.events]
    return "parsed, ours", {200}, rows


def test_max_id_chars_is_the_store_width() -> None:
    assert NotificationRow.__table__.c.item_id.type.length == MAX_ID_CHARS  # type: ignore[attr-defined]


def test_fuzzed_notifications_never_5xx_never_store_garbage_and_real_ones_go_through(db_url: str) -> None:
    bases = {
        name: re.sub(
            r"<t:SubscriptionId>[^<]*</t:SubscriptionId>",
            "<t:SubscriptionId>@@SUB@@</t:SubscriptionId>",
            (SAMPLES_DIR / name).read_text(encoding="utf-8"),
        )
        for name in REAL_SAMPLES
    }
    with site(db_url) as s, httpx.Client(timeout=30) as client:
        url = s.url()
        stats: Counter[str] = Counter()
        kinds: Counter[str] = Counter()
        deadline = time.monotonic() + FUZZ_SECONDS
        stop = threading.Event()
        real: list[tuple[str, float]] = []

        def real_sender() -> None:  # cyd's real notifications, all along the fuzzing
            with httpx.Client(timeout=30) as own:
                i = 0
                while not stop.is_set():
                    started = time.perf_counter()
                    response = post(own, url, push_body(CYD_SUB, f"cyd-{i}", watermark=f"C{i}="))
                    status = answer(response) if response.status_code == 200 else str(response.status_code)
                    real.append((status, time.perf_counter() - started))
                    i += 1
                    stop.wait(0.02)

        last_id = max((r[0] for r in s.rows()), default=0)

        @hypothesis_settings(
            max_examples=2000,
            derandomize=True,
            database=None,
            deadline=None,
            print_blob=False,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=_cases)
        def throw(case: FuzzCase) -> None:
            nonlocal last_id
            if time.monotonic() > deadline:
                stats["skipped (time budget)"] += 1
                return
            body = mutate(case, bases)
            label, statuses, rows = expected(body, case.content_type)
            kinds[label] += 1
            try:
                response = post(client, url, body, case.content_type)
            except httpx.TransportError:
                # The server may close the connection on an oversized upload before it is all sent.
                assert len(body) > MAX_BODY_BYTES, "connection dropped for a body within the limit"
                stats["oversized, connection closed"] += 1
                response = None
            if response is not None:
                assert response.status_code < 500, (response.status_code, response.text)
                assert response.status_code in statuses, (response.status_code, response.text, statuses)
                stats[str(response.status_code)] += 1
                if response.status_code == 200:
                    status = answer(response)
                    assert status == ("Unsubscribe" if _foreign(body, case.content_type) else "OK")
                    stats[status] += 1
            new = [r for r in s.rows(last_id) if r[1] != CYD_SUB]
            assert [r[1:] for r in new] == rows, (rows, new)
            if new:
                last_id = new[-1][0]
            stats["examples"] += 1

        sender = threading.Thread(target=real_sender, name="real-sender")
        sender.start()
        try:
            throw()
        finally:
            stop.set()
            sender.join(timeout=30)

        cyd_rows = [r for r in s.rows() if r[1] == CYD_SUB]
        latencies = sorted(t for _, t in real)
        print(
            f"\nfuzz ({s.runtime.db.url.get_backend_name()}): {dict(kinds)}, answers {dict(stats)}; "
            f"{len(real)} real notifications meanwhile, "
            f"max {latencies[-1] * 1000 if latencies else 0:.0f} ms; listener received {s.runtime.listener.received}, "
            f"refused {s.runtime.listener.refused}, limited {s.runtime.listener.limited}"
        )
        assert stats["examples"] >= 300, stats  # a meaningful run, even on a slow machine
        assert real and [status for status, _ in real] == ["OK"] * len(real)
        assert [(r[3], r[4]) for r in cyd_rows] == [(f"cyd-{i}", f"C{i}=") for i in range(len(real))]
        assert stats["OK"] > 0 and stats["Unsubscribe"] > 0 and stats["400"] > 0  # the fuzzing reached every answer


def _foreign(body: bytes, content_type: str | None) -> bool:
    """Whether a parseable body names a subscription other than ann's (so the answer is Unsubscribe)."""
    return any(n.subscription_id != ANN_SUB for n in parse_send_notification(body, content_type))

"""Who may do what, version negotiation, throttling, injected faults and hostile input."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import pytest
from exchangelib.errors import (
    ErrorImpersonateUserDenied,
    ErrorNonExistentMailbox,
    ErrorServerBusy,
    UnauthorizedError,
)
from lxml import etree

from .conftest import SERVICE_PASSWORD, SERVICE_USER, ews_account

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"


def soap(body: str, *, version: str = "Exchange2016", impersonate: str | None = "ann@example.com") -> bytes:
    header = f'<t:RequestServerVersion Version="{version}"/>'
    if impersonate:
        header += (
            f"<t:ExchangeImpersonation><t:ConnectingSID><t:PrimarySmtpAddress>{impersonate}"
            "</t:PrimarySmtpAddress></t:ConnectingSID></t:ExchangeImpersonation>"
        )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{SOAP}" xmlns:m="{M}" xmlns:t="{T}">'
        f"<s:Header>{header}</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def post(emu, body: bytes, auth=(SERVICE_USER, SERVICE_PASSWORD), headers=None) -> httpx.Response:
    return httpx.post(
        emu.url,
        content=body,
        auth=auth,
        timeout=30,
        headers={"Content-Type": "text/xml; charset=utf-8", **(headers or {})},
    )


def fault_code(response: httpx.Response) -> str:
    root = etree.fromstring(response.content)
    return root.findtext(
        f".//{{{SOAP}}}Fault/detail/{{http://schemas.microsoft.com/exchange/services/2006/errors}}ResponseCode"
    )


GET_CALENDAR = (
    "<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:FolderIds>"
    '<t:DistinguishedFolderId Id="calendar"/></m:FolderIds></m:GetFolder>'
)


def test_version_is_learned_from_the_convert_id_probe(emulator_factory):
    for version, major in (("Exchange2016", 15), ("Exchange2010", 14)):
        emu = emulator_factory(version=version)
        acc = ews_account(emu, "ann@example.com", build=None)  # no version given: exchangelib probes
        assert acc.version.build.major_version == major
        assert acc.calendar.name == "Calendar"
        assert emu.exchange.stats["op:ConvertId"] >= 1


def test_newer_request_version_than_the_server_is_refused(emulator_factory):
    emu = emulator_factory(version="Exchange2010")
    response = post(emu, soap(GET_CALENDAR, version="Exchange2016"))
    assert response.status_code == 500
    assert fault_code(response) == "ErrorInvalidServerVersion"


def test_wrong_password_is_401(emulator):
    acc = ews_account(emulator, "ann@example.com", password="wrong")
    with pytest.raises(UnauthorizedError):
        acc.calendar.refresh()
    assert post(emulator, soap(GET_CALENDAR), auth=None).status_code == 401
    assert post(emulator, soap(GET_CALENDAR), auth=("nobody", "x")).headers["WWW-Authenticate"].startswith("Basic")


def test_impersonating_a_missing_mailbox(emulator):
    acc = ews_account(emulator, "ghost@example.com")
    with pytest.raises(ErrorNonExistentMailbox):
        acc.calendar.refresh()


def test_account_without_impersonation_rights(emulator):
    emulator.add_account("helpdesk", "pw", impersonation=False)
    acc = ews_account(emulator, "ann@example.com", user="helpdesk", password="pw")
    with pytest.raises(ErrorImpersonateUserDenied):
        acc.calendar.refresh()


def test_anchor_mailbox_header_is_accepted(emulator):
    response = post(emulator, soap(GET_CALENDAR), headers={"X-AnchorMailbox": "ann@example.com"})
    assert response.status_code == 200
    assert b'ResponseClass="Success"' in response.content


def test_concurrency_limit_answers_server_busy(emulator_factory):
    for version, limit in (("Exchange2016", 27), ("Exchange2010", 10)):
        emu = emulator_factory(version=version)
        emu.set_faults(slow_seconds=1.0)  # keep requests in flight long enough to overlap
        body = soap(GET_CALENDAR, version="Exchange2010_SP2")
        # One client, connections opened first: making a client per request costs enough CPU on a busy machine
        # that the last requests would start after the first ones ended.
        with (
            httpx.Client(
                auth=(SERVICE_USER, SERVICE_PASSWORD), timeout=30, limits=httpx.Limits(max_connections=64)
            ) as client,
            concurrent.futures.ThreadPoolExecutor(max_workers=limit + 8) as pool,
        ):
            headers = {"Content-Type": "text/xml; charset=utf-8"}

            def send(_: int, url: str = emu.url, content: bytes = body) -> httpx.Response:
                return client.post(url, content=content, headers=headers)  # noqa: B023 - used within the loop

            responses = list(pool.map(send, range(limit + 8)))
        busy = [r for r in responses if r.status_code == 500]
        assert len(busy) >= 1, version
        assert len([r for r in responses if r.status_code == 200]) <= limit
        assert {fault_code(r) for r in busy} == {"ErrorServerBusy"}
        assert b'<t:Value Name="BackOffMilliseconds">' in busy[0].content
        emu.clear_faults()


def test_injected_server_busy_reaches_exchangelib_with_back_off(emulator, account):
    emulator.set_faults(server_busy=1, server_busy_backoff_ms=1234)
    with pytest.raises(ErrorServerBusy) as raised:
        account.calendar.refresh()
    assert raised.value.back_off == 1.234
    account.calendar.refresh()  # the fault was used up


def test_injected_server_busy_for_one_mailbox_only(emulator):
    emulator.set_faults(server_busy=-1, server_busy_mailbox="bob@example.com")
    assert post(emulator, soap(GET_CALENDAR, impersonate="ann@example.com")).status_code == 200
    assert fault_code(post(emulator, soap(GET_CALENDAR, impersonate="bob@example.com"))) == "ErrorServerBusy"


def test_injected_503_slow_and_dropped_connections(emulator):
    emulator.set_faults(http_503=1)
    assert post(emulator, soap(GET_CALENDAR)).status_code == 503
    assert post(emulator, soap(GET_CALENDAR)).status_code == 200
    emulator.set_faults(slow_seconds=0.3)
    started = time.monotonic()
    assert post(emulator, soap(GET_CALENDAR)).status_code == 200
    assert time.monotonic() - started >= 0.3
    emulator.set_faults(slow_seconds=0.0, drop_connections=1)
    with pytest.raises(httpx.HTTPError):
        post(emulator, soap(GET_CALENDAR))
    assert post(emulator, soap(GET_CALENDAR)).status_code == 200


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "ErrorInvalidRequest"),
        (b"not xml at all", "ErrorSchemaValidation"),
        (b"<a><b></a>", "ErrorSchemaValidation"),
        (
            b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
            b"<lolz>&lol2;</lolz>",
            "ErrorSchemaValidation",
        ),
        (
            b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><x>&xxe;</x>',
            "ErrorSchemaValidation",
        ),
        (b"<x/>", "ErrorSchemaValidation"),
    ],
)
def test_malformed_and_hostile_bodies_get_soap_faults(emulator, body, code):
    response = post(emulator, body)
    assert response.status_code in (400, 500)
    assert fault_code(response) == code
    assert b"root:" not in response.content  # no external entity was read


def test_oversized_body_is_refused_without_parsing(emulator):
    response = post(emulator, b"<x>" + b"a" * (11 * 1024 * 1024) + b"</x>")
    assert response.status_code == 413


def test_unknown_operation_and_bad_arguments(emulator):
    response = post(emulator, soap("<m:MakeCoffee/>"))
    assert fault_code(response) == "ErrorSchemaValidation"
    sync = soap(
        "<m:SyncFolderItems><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape><m:SyncFolderId>"
        '<t:DistinguishedFolderId Id="calendar"/></m:SyncFolderId><m:MaxChangesReturned>0'
        "</m:MaxChangesReturned></m:SyncFolderItems>"
    )
    response = post(emulator, sync)
    assert response.status_code == 200
    assert b"<m:ResponseCode>ErrorInvalidArgument</m:ResponseCode>" in response.content
    bad_id = soap(
        "<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape><m:ItemIds>"
        '<t:ItemId Id="%%%"/></m:ItemIds></m:GetItem>'
    )
    assert b"ErrorInvalidIdMalformed" in post(emulator, bad_id).content


def test_get_item_shapes(emulator, account):
    item = emulator.outlook("ann@example.com").create(
        {"subject": "Shapes", "start": "2026-12-01T09:00:00Z", "location": "Room 9", "body": "B"}
    )

    def get(shape: str, extra: str = "") -> etree._Element:
        body = soap(
            f"<m:GetItem><m:ItemShape><t:BaseShape>{shape}</t:BaseShape>{extra}</m:ItemShape><m:ItemIds>"
            f'<t:ItemId Id="{item.item_id}"/></m:ItemIds></m:GetItem>'
        )
        root = etree.fromstring(post(emulator, body).content)
        return root.find(f".//{{{T}}}CalendarItem")

    names = lambda el: [etree.QName(c).localname for c in el]  # noqa: E731
    assert names(get("IdOnly")) == ["ItemId"]
    default = names(get("Default"))
    assert {"ItemId", "Subject", "Start", "End", "Location", "CalendarItemType", "Organizer"} <= set(default)
    assert "Body" not in default
    everything = names(get("AllProperties"))
    assert {"Body", "UID", "StartTimeZone", "LegacyFreeBusyStatus", "IsCancelled", "Sensitivity"} <= set(everything)
    extra = names(
        get(
            "IdOnly",
            '<t:AdditionalProperties><t:FieldURI FieldURI="item:Subject"/>'
            '<t:FieldURI FieldURI="calendar:Location"/></t:AdditionalProperties>',
        )
    )
    assert extra == ["ItemId", "Subject", "Location"]

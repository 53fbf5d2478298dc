"""calsync.sources.ews.notifications: SendNotification bodies in (real samples, synthetic and hostile ones, mutated
ones, the emulator's own pushes), SendNotificationResult out."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from calsync.emulator import Emulator
from calsync.listener.protocol import MAX_BODY_BYTES, Event, Notification, NotificationRejected
from calsync.sources.ews import notifications as listener
from calsync.sources.ews.notifications import parse_send_notification, result_envelope
from tests.conftest import REFERENCE_ENV, SAMPLES_DIR, ews_account

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"
TEXT_XML = "text/xml; charset=utf-8"  # what Exchange sends
Status = Literal["OK", "Unsubscribe"]


def sample(name: str) -> bytes:
    path = SAMPLES_DIR / name
    if not path.is_file():
        pytest.skip(f"EWS sample {name} not found in {SAMPLES_DIR} (set {REFERENCE_ENV})")
    return path.read_bytes()


def rejected(body: bytes, content_type: str | None = TEXT_XML, *, status: int = 400) -> NotificationRejected:
    with pytest.raises(NotificationRejected) as caught:
        parse_send_notification(body, content_type)
    exc = caught.value
    assert exc.status == status, exc.reason
    assert str(exc) == exc.reason
    assert exc.reason.isascii() and len(exc.reason) < 200 and "\n" not in exc.reason
    return exc


# --- the real samples --------------------------------------------------------------------------------

O365_SID = (
    "LABkYjhwcjAxbWI2NDg1LmV1cnByZDAxLnByb2QuZXhjaGFuZ2VsYWJzLmNvbRAAAADELVfykPBZQp7Q8IIUrUfmCKn7JnqX2AgQAAAA"
    "WTlI8+A2EEqLQp01E8Pw2Q=="
)
O365_ITEM = (
    "AQMkAGYzNDgzOTU5LTM2ZTAtNGExMC04YjQyLTlkMzUxM2MzZjBkOQBGAAADdiwJfgoT4UeFDoYZ5kbJFQcAbsZeBEfd1Eyd3oyV64JNiAAAAgENAAAA"
    "bsZeBEfd1Eyd3oyV64JNiAACUQqtogAAAA=="
)
O365_FOLDER = (
    "AQMkAGYzNDgzOTU5LTM2ZTAtNGExMC04YjQyLTlkMzUxM2MzZjBkOQAuAAADdiwJfgoT4UeFDoYZ5kbJFQEAbsZeBEfd1Eyd3oyV64JNiAAAAgE"
)
O365_CALENDAR = O365_FOLDER + "NAAAA"
O365_ROOT = O365_FOLDER + "IAAAA"
O365_TIME = datetime(2020, 12, 3, 11, 3, 50, tzinfo=UTC)

VALID_SAMPLES: dict[str, list[Notification]] = {
    "exchangelib-sendnotification-statusevent.xml": [
        Notification("XXXXX=", "AAAAA=", False, (), status_only=True, last_watermark="BBBBB=")
    ],
    "o365-capture-sendnotification-modifiedevent.fixed.xml": [
        Notification(
            subscription_id=O365_SID,
            previous_watermark="AQAAAExY/dNdjDVKjtBVHKR5IOurFukhAAAAAAE=",
            more_events=False,
            events=(
                # One item change: the item's ModifiedEvent, then its folder's.
                Event(
                    "ModifiedEvent",
                    "AQAAAExY/dNdjDVKjtBVHKR5IOsoIukhAAAAAAE=",
                    O365_TIME,
                    item_id=O365_ITEM,
                    folder_id=None,
                    parent_folder_id=O365_CALENDAR,
                ),
                Event(
                    "ModifiedEvent",
                    "AQAAAExY/dNdjDVKjtBVHKR5IOstIukhAAAAAAE=",
                    O365_TIME,
                    item_id=None,
                    folder_id=O365_CALENDAR,
                    parent_folder_id=O365_ROOT,
                ),
            ),
            status_only=False,
            last_watermark="AQAAAExY/dNdjDVKjtBVHKR5IOstIukhAAAAAAE=",
        )
    ],
    "workmail-sendnotification-modifiedevent.xml": [
        Notification(
            subscription_id="hKJETtoAdi9PPW0tZDQ4MThmMDoVYB",
            previous_watermark="ygwAAAAAAAA=",
            more_events=False,
            events=(
                Event(
                    "ModifiedEvent",
                    "ywwAAAAAAAA=",
                    datetime(2018, 2, 2, 15, 15, 14, tzinfo=UTC),
                    item_id=None,
                    folder_id="AAB2L089bS1kNDgxOGYwOGE5OTQ0=",
                    parent_folder_id="AAB2L089bS1kNDgxOGYwOGE=",
                ),
            ),
            status_only=False,
            last_watermark="ywwAAAAAAAA=",
        )
    ],
    # Accepted on purpose despite its XML declaration version="1.0 (http://www.w3.org/TR/REC-xml/)".
    "workmail-sendnotification-statusevent.xml": [
        Notification(
            "hKJETtoAdi9PPW0tZDQ4MThmMDoVYB", "AAAAAAAAAAA=", False, (), status_only=True, last_watermark="AAAAAAAAAAA="
        )
    ],
}

REJECTED_SAMPLES: dict[str, str] = {
    # '<t:SubscriptionId>' where '</t:SubscriptionId>' was meant: the .fixed.xml twin parses.
    "o365-capture-sendnotification-modifiedevent.xml": "not well-formed XML (ERR_TAG_NAME_MISMATCH",
    # The answers, not pushes.
    "exchangelib-sendnotificationresult-ok.xml": "SOAP Body holds no m:SendNotification",
    "exchangelib-sendnotificationresult-unsubscribe.xml": "SOAP Body holds no m:SendNotification",
    "workmail-sendnotificationresult-ok.xml": "SOAP Body holds no m:SendNotification",
    "workmail-sendnotificationresult-unsubscribe.xml": "SOAP Body holds no m:SendNotification",
}


def test_every_sendnotification_sample_is_classified() -> None:
    if not SAMPLES_DIR.is_dir():
        pytest.skip(f"EWS samples not found at {SAMPLES_DIR} (set {REFERENCE_ENV})")
    present = {path.name for path in SAMPLES_DIR.glob("*sendnotification*")}
    assert present == set(VALID_SAMPLES) | set(REJECTED_SAMPLES)


@pytest.mark.parametrize("name", sorted(VALID_SAMPLES))
def test_valid_samples_parse_exactly(name: str) -> None:
    notes = parse_send_notification(sample(name), TEXT_XML)
    assert notes == VALID_SAMPLES[name]
    for note in notes:
        for event in note.events:
            assert event.timestamp is not None and event.timestamp.utcoffset() == timedelta(0)


@pytest.mark.parametrize("name", sorted(REJECTED_SAMPLES))
def test_broken_samples_and_answers_are_rejected(name: str) -> None:
    body = sample(name)
    exc = rejected(body)
    assert exc.reason.startswith(REJECTED_SAMPLES[name])
    assert "LABkYjhw" not in exc.reason and "SubscriptionId" not in exc.reason  # names the fault, not the body


def test_o365_capture_differs_from_its_fixed_twin_by_one_character() -> None:
    broken, fixed = (
        sample("o365-capture-sendnotification-modifiedevent.xml"),
        sample("o365-capture-sendnotification-modifiedevent.fixed.xml"),
    )

    def envelope_of(body: bytes) -> bytes:  # the leading comments differ
        return body[body.index(b"<soap11:Envelope") :]

    assert envelope_of(broken).replace(b"==<t:SubscriptionId>", b"==</t:SubscriptionId>") == envelope_of(fixed)


def test_samples_parse_in_well_under_a_millisecond() -> None:
    body = sample("o365-capture-sendnotification-modifiedevent.fixed.xml")
    started = time.perf_counter()
    for _ in range(200):
        parse_send_notification(body, TEXT_XML)
    assert (time.perf_counter() - started) / 200 < 0.002  # about 0.1 ms on a laptop


# --- synthetic bodies ----------------------------------------------------------------------------------

DECLARATION = '<?xml version="1.0" encoding="utf-8"?>'
REQUEST_VERSION = f'<t:RequestServerVersion xmlns:t="{T}" Version="Exchange2016"/>'


def envelope(
    body: str,
    *,
    prefix: str = "s",
    ns: str = SOAP11,
    header: str | None = REQUEST_VERSION,
    declaration: str = DECLARATION,
) -> bytes:
    p = f"{prefix}:" if prefix else ""
    xmlns = f'xmlns:{prefix}="{ns}"' if prefix else f'xmlns="{ns}"'
    head = f"<{p}Header>{header}</{p}Header>" if header is not None else ""
    return f"{declaration}<{p}Envelope {xmlns}>{head}<{p}Body>{body}</{p}Body></{p}Envelope>".encode()


def send(*messages: str) -> str:
    return (
        f'<m:SendNotification xmlns:m="{M}" xmlns:t="{T}"><m:ResponseMessages>{"".join(messages)}'
        "</m:ResponseMessages></m:SendNotification>"
    )


def message(note: str, response_class: str = "Success", code: str = "NoError") -> str:
    return (
        f'<m:SendNotificationResponseMessage ResponseClass="{response_class}"><m:ResponseCode>{code}</m:ResponseCode>'
        f"{note}</m:SendNotificationResponseMessage>"
    )


def error_message(code: str = "ErrorInternalServerError") -> str:
    return (
        '<m:SendNotificationResponseMessage ResponseClass="Error"><m:MessageText>An internal server error occurred.'
        f"</m:MessageText><m:ResponseCode>{code}</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>"
        "</m:SendNotificationResponseMessage>"
    )


def notification(events: str, sid: str = "sub-1", previous: str | None = "wm-0", more: str | None = "false") -> str:
    prev = f"<t:PreviousWatermark>{previous}</t:PreviousWatermark>" if previous is not None else ""
    more_events = f"<t:MoreEvents>{more}</t:MoreEvents>" if more is not None else ""
    return f"<m:Notification><t:SubscriptionId>{sid}</t:SubscriptionId>{prev}{more_events}{events}</m:Notification>"


def item_event(
    kind: str, watermark: str, item: str, parent: str = "cal", timestamp: str = "2026-01-05T10:00:00Z", extra: str = ""
) -> str:
    return (
        f'<t:{kind}><t:Watermark>{watermark}</t:Watermark><t:TimeStamp>{timestamp}</t:TimeStamp><t:ItemId Id="{item}" '
        f'ChangeKey="ck"/><t:ParentFolderId Id="{parent}"/>{extra}</t:{kind}>'
    )


def folder_event(kind: str, watermark: str, folder: str, parent: str = "root", extra: str = "") -> str:
    return (
        f"<t:{kind}><t:Watermark>{watermark}</t:Watermark><t:TimeStamp>2026-01-05T10:00:00Z</t:TimeStamp>"
        f'<t:FolderId Id="{folder}"/><t:ParentFolderId Id="{parent}"/>{extra}</t:{kind}>'
    )


def status(watermark: str) -> str:
    return f"<t:StatusEvent><t:Watermark>{watermark}</t:Watermark></t:StatusEvent>"


def push(events: str = "", sid: str = "sub-1", previous: str | None = "wm-0", more: str | None = "false") -> bytes:
    events = events or item_event("CreatedEvent", "wm-1", "item-1")
    return envelope(send(message(notification(events, sid=sid, previous=previous, more=more))))


JAN5 = datetime(2026, 1, 5, 10, tzinfo=UTC)


def test_a_created_item_and_its_folder() -> None:
    body = push(item_event("CreatedEvent", "wm-1", "item-1") + folder_event("ModifiedEvent", "wm-2", "cal"))
    [note] = parse_send_notification(body, TEXT_XML)
    assert note == Notification(
        subscription_id="sub-1",
        previous_watermark="wm-0",
        more_events=False,
        events=(
            Event("CreatedEvent", "wm-1", JAN5, item_id="item-1", folder_id=None, parent_folder_id="cal"),
            Event("ModifiedEvent", "wm-2", JAN5, item_id=None, folder_id="cal", parent_folder_id="root"),
        ),
        status_only=False,
        last_watermark="wm-2",
    )


def test_every_event_kind_and_moves() -> None:
    moved = item_event(
        "MovedEvent", "wm-3", "new-id", "deleted", extra='<t:OldItemId Id="old-id"/><t:OldParentFolderId Id="cal"/>'
    )
    copied = item_event(
        "CopiedEvent", "wm-4", "copy-id", "other", extra='<t:OldItemId Id="item-1"/><t:OldParentFolderId Id="cal"/>'
    )
    folder_moved = folder_event(
        "MovedEvent", "wm-5", "f-1", "new-parent", extra='<t:OldFolderId Id="f-1"/><t:OldParentFolderId Id="root"/>'
    )
    plain = [item_event(kind, f"wm-{kind}", "item-1") for kind in ("NewMailEvent", "FreeBusyChangedEvent")]
    deleted = item_event("DeletedEvent", "wm-6", "gone", "cal")
    [note] = parse_send_notification(push(moved + copied + folder_moved + "".join(plain) + deleted, more="true"))
    assert note.more_events is True
    assert [e.kind for e in note.events] == [
        "MovedEvent",
        "CopiedEvent",
        "MovedEvent",
        "NewMailEvent",
        "FreeBusyChangedEvent",
        "DeletedEvent",
    ]
    item_move, copy, folder_move = note.events[:3]
    assert (item_move.item_id, item_move.parent_folder_id, item_move.old_item_id, item_move.old_parent_folder_id) == (
        "new-id",
        "deleted",
        "old-id",
        "cal",
    )
    assert (copy.item_id, copy.old_item_id) == ("copy-id", "item-1")
    assert (folder_move.folder_id, folder_move.item_id, folder_move.old_folder_id) == ("f-1", None, "f-1")
    assert folder_move.old_parent_folder_id == "root"
    assert note.events[-1] == Event("DeletedEvent", "wm-6", JAN5, "gone", None, "cal")
    assert note.last_watermark == "wm-6"


def test_a_status_only_notification_is_a_heartbeat() -> None:
    [note] = parse_send_notification(push(status("wm-9")))
    assert note.status_only and note.events == () and note.last_watermark == "wm-9"
    [note] = parse_send_notification(push(status("wm-8") + status("wm-9")))
    assert note.status_only and note.last_watermark == "wm-9"
    # A StatusEvent among item events: not a heartbeat; the last watermark is still the last event's.
    [note] = parse_send_notification(push(item_event("CreatedEvent", "wm-1", "i") + status("wm-2")))
    assert not note.status_only and [e.kind for e in note.events] == ["CreatedEvent"] and note.last_watermark == "wm-2"


def test_optional_parts_may_be_missing() -> None:
    bare = '<t:DeletedEvent><t:ItemId Id="i"/></t:DeletedEvent>'  # no Watermark, TimeStamp or ParentFolderId
    [note] = parse_send_notification(push(bare + "<t:StatusEvent/>", previous=None, more=None))
    assert note.previous_watermark is None and note.more_events is False and note.last_watermark is None
    assert note.events == (Event("DeletedEvent", None, None, "i", None, None),)
    [note] = parse_send_notification(push(item_event("CreatedEvent", "", "i"), previous=""))
    assert note.previous_watermark is None and note.events[0].watermark is None


@pytest.mark.parametrize(
    "sid",
    [
        "3f2504e0-4f89-11d3-9a0c-0305e82c3301",  # a GUID
        "EABDRVpRUw0AAAAAAAAAAAAAAAAAAAAAACAAAAAAAAAAAAAAAAA=" * 3,  # long base64
        "hKJETtoAdi9PPW0tZDQ4MThmMDoVYB",  # short opaque (WorkMail)
        "x",
    ],
)
def test_subscription_ids_of_any_shape(sid: str) -> None:
    [note] = parse_send_notification(push(sid=f"\n   {sid}\n  "), TEXT_XML)
    assert note.subscription_id == sid


@pytest.mark.parametrize(("prefix", "ns"), [("soap11", SOAP11), ("s", SOAP11), ("soap", SOAP11), ("", SOAP11)])
def test_any_soap_prefix(prefix: str, ns: str) -> None:
    body = envelope(send(message(notification(status("wm-1")))), prefix=prefix, ns=ns)
    assert parse_send_notification(body, TEXT_XML)[0].last_watermark == "wm-1"


def test_any_prefix_for_the_ews_namespaces_too() -> None:
    body = (
        f'<e:Envelope xmlns:e="{SOAP11}"><e:Body><msg:SendNotification xmlns:msg="{M}"><msg:ResponseMessages>'
        '<msg:SendNotificationResponseMessage ResponseClass="Success"><msg:ResponseCode>NoError</msg:ResponseCode>'
        f'<msg:Notification xmlns="{T}"><SubscriptionId>sub-x</SubscriptionId><StatusEvent><Watermark>w</Watermark>'
        "</StatusEvent></msg:Notification></msg:SendNotificationResponseMessage></msg:ResponseMessages>"
        "</msg:SendNotification></e:Body></e:Envelope>"
    ).encode()
    [note] = parse_send_notification(body)
    assert (note.subscription_id, note.last_watermark, note.status_only) == ("sub-x", "w", True)


def test_soap12_envelope() -> None:
    body = envelope(send(message(notification(status("wm-1")))), prefix="env", ns=SOAP12)
    [note] = parse_send_notification(body, "application/soap+xml; charset=utf-8")
    assert note.status_only


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        f'<t:RequestServerVersion xmlns:t="{T}" Version="Exchange2007_SP1"/>',
        f'<t:RequestServerVersion xmlns:t="{T}" Version="Exchange2010"></t:RequestServerVersion>',
        f'<m:RequestServerVersion xmlns:m="{M}" Version="Exchange2016"/>',  # the messages namespace: ignored too
        f'<t:RequestServerVersion xmlns:t="{T}" Version="NotAVersion"><x>y</x></t:RequestServerVersion>',
        f'<s:Whatever xmlns:s="{SOAP11}" s:mustUnderstand="1">anything</s:Whatever>',
    ],
)
def test_the_header_is_ignored(header: str | None) -> None:
    body = envelope(send(message(notification(status("wm-1")))), header=header)
    assert parse_send_notification(body)[0].last_watermark == "wm-1"


def test_two_notifications_in_one_body() -> None:
    first = message(notification(item_event("CreatedEvent", "a-1", "item-a"), sid="sub-a", previous="a-0"))
    second = message(notification(status("b-1"), sid="sub-b", previous="b-0"))
    notes = parse_send_notification(envelope(send(first, second)), TEXT_XML)
    assert [(n.subscription_id, n.previous_watermark, n.last_watermark, n.status_only) for n in notes] == [
        ("sub-a", "a-0", "a-1", False),
        ("sub-b", "b-0", "b-1", True),
    ]


def test_an_error_message_is_skipped_and_the_others_kept() -> None:
    ok = message(notification(status("wm-1"), sid="sub-ok"))
    warning = message(notification(status("wm-2"), sid="sub-warn"), response_class="Warning", code="ErrorSomething")
    notes = parse_send_notification(envelope(send(error_message(), ok, warning)), TEXT_XML)
    assert [n.subscription_id for n in notes] == ["sub-ok", "sub-warn"]
    # An Error message that carries a Notification anyway is still skipped.
    odd = message(notification(status("wm-3"), sid="sub-err"), response_class="Error", code="ErrorInvalidSubscription")
    assert [n.subscription_id for n in parse_send_notification(envelope(send(odd, ok)))] == ["sub-ok"]


def test_only_error_messages_are_rejected_with_their_codes() -> None:
    exc = rejected(envelope(send(error_message(), error_message("ErrorMissedNotificationEvents"))))
    assert exc.reason == (
        "every SendNotification response message is an error (ErrorInternalServerError, ErrorMissedNotificationEvents)"
    )
    exc = rejected(envelope(send(error_message("Error: DROP TABLE subscriptions; --"))))
    assert "DROP" not in exc.reason and exc.reason.endswith("(?)")


def test_whitespace_inside_empty_elements_and_around_values() -> None:
    event = (
        "<t:CreatedEvent>\n  <t:Watermark>\n\twm-1\n  </t:Watermark>\n"
        "  <t:TimeStamp> 2026-01-05T10:00:00Z </t:TimeStamp>"
        '\n  <t:ItemId Id=" item-1 " ChangeKey="ck">\n   \n  </t:ItemId>\n  <t:ParentFolderId Id="cal">\r\n'
        "</t:ParentFolderId>\n</t:CreatedEvent>"
    )
    body = envelope(
        send(message(notification(event, more=" false "))),
        header=f'<t:RequestServerVersion xmlns:t="{T}" Version="Exchange2010_SP2">\n  </t:RequestServerVersion>',
    )
    [note] = parse_send_notification(body.replace(b"><", b">\n  <"), TEXT_XML)
    assert note.events == (Event("CreatedEvent", "wm-1", JAN5, "item-1", None, "cal"),)


def test_comments_and_unknown_elements_are_ignored() -> None:
    extra = (
        "<t:FutureEvent><t:Watermark>x</t:Watermark></t:FutureEvent>"
        f'<other xmlns="urn:x"><t:ItemId xmlns:t="{T}"/></other>'
    )
    event = item_event("CreatedEvent", "wm-1", "i", extra="<t:UnreadCount>3</t:UnreadCount><!-- c -->")
    [note] = parse_send_notification(push("<!-- hello -->" + event + extra))
    assert [e.kind for e in note.events] == ["CreatedEvent"] and note.last_watermark == "wm-1"


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2026-01-05T10:00:00Z", JAN5),
        ("2026-01-05T11:30:00+01:30", JAN5),
        ("2026-01-05T05:00:00-05:00", JAN5),
        ("2026-01-05T10:00:00", JAN5),  # no zone: UTC
        ("2026-01-05T10:00:00.1234567Z", JAN5.replace(microsecond=123456)),
    ],
)
def test_timestamps_are_aware_utc(stamp: str, expected: datetime) -> None:
    [note] = parse_send_notification(push(item_event("ModifiedEvent", "w", "i", timestamp=stamp)))
    timestamp = note.events[0].timestamp
    assert timestamp == expected and timestamp is not None and timestamp.tzinfo is UTC


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (push(sid=""), "notification without SubscriptionId"),
        (push(sid="  \n "), "notification without SubscriptionId"),
        (
            envelope(send(message("<m:Notification><t:StatusEvent/></m:Notification>"))),
            "notification without SubscriptionId",
        ),
        (envelope(send(message(notification("")))), "notification without events"),
        (envelope(send()), "m:SendNotification holds no m:Notification"),
        (envelope(f'<m:SendNotification xmlns:m="{M}"/>'), "m:SendNotification holds no m:Notification"),
        (envelope(send(message(""))), "m:SendNotification holds no m:Notification"),
        (envelope(f'<m:GetEvents xmlns:m="{M}"/>'), "SOAP Body holds no m:SendNotification"),
        (envelope(""), "SOAP Body holds no m:SendNotification"),
        (envelope(send(message(notification(status("w")))).replace(M, M + "/x")), "SOAP Body holds no"),
        (f'<s:Envelope xmlns:s="{SOAP11}"><s:Header/></s:Envelope>'.encode(), "SOAP Envelope has no Body"),
        (f'<s:Envelope xmlns:s="{SOAP11}"><s:Body/><s:Body/></s:Envelope>'.encode(), "SOAP Envelope has more than one"),
        (f'<s:Envelope xmlns:s="{SOAP12}"><x:Body xmlns:x="{SOAP11}"/></s:Envelope>'.encode(), "SOAP Envelope has no"),
        (b"<Envelope><Body/></Envelope>", "root element is not a SOAP 1.1 or 1.2 Envelope"),
        (send(message(notification(status("w")))).encode(), "root element is not a SOAP 1.1 or 1.2 Envelope"),
        (envelope("", ns="https://schemas.xmlsoap.org/soap/envelope/"), "root element is not a SOAP 1.1 or 1.2"),
        (push(more="yes"), "MoreEvents is not an xs:boolean"),
        (push(item_event("CreatedEvent", "w", "i", timestamp="yesterday")), "TimeStamp is not an xs:dateTime"),
        (push(item_event("CreatedEvent", "w", "i", timestamp="2026-02-30T10:00:00Z")), "TimeStamp is not a valid"),
        (push(item_event("CreatedEvent", "w", "i", timestamp="0001-01-01T00:00:00+01:00")), "TimeStamp is not a val"),
        (push(item_event("CreatedEvent", "w", "i", timestamp="2026-01-05T10:00:00+99:00")), "TimeStamp is not a val"),
        (push(item_event("CreatedEvent", "w", "i", timestamp="٢٠٢٦-01-05T10:00:00Z")), "TimeStamp is not an xs:"),
        (push(item_event("CreatedEvent", "w", "")), "ItemId without Id"),
        (push("<t:CreatedEvent><t:ItemId/></t:CreatedEvent>"), "ItemId without Id"),
        (push("<t:CreatedEvent><t:Watermark>w</t:Watermark></t:CreatedEvent>"), "CreatedEvent must name exactly one"),
        (push('<t:CreatedEvent><t:ItemId Id="i"/><t:FolderId Id="f"/></t:CreatedEvent>'), "CreatedEvent must name"),
        (push('<t:CreatedEvent><t:ItemId Id="i"/><t:ItemId Id="j"/></t:CreatedEvent>'), "more than one ItemId in"),
        (push(sid="a</t:SubscriptionId><t:SubscriptionId>b"), "more than one SubscriptionId in Notification"),
        (push(sid="a<t:x/>"), "SubscriptionId must hold text only"),
    ],
)
def test_malformed_notifications_are_rejected(body: bytes, reason: str) -> None:
    assert rejected(body).reason.startswith(reason)


# --- hostile and non-XML bodies ---------------------------------------------------------------------------

LOLS = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
BILLION_LAUGHS_DTD = f'<!DOCTYPE s:Envelope [<!ENTITY lol0 "lol">{LOLS}]>'


def billion_laughs(where: str = "text") -> bytes:
    if where == "attribute":
        events = '<t:CreatedEvent><t:ItemId Id="&lol9;"/></t:CreatedEvent>'
        return push(events).replace(DECLARATION.encode(), (DECLARATION + BILLION_LAUGHS_DTD).encode())
    body = push(sid="&lol9;")
    return body.replace(DECLARATION.encode(), (DECLARATION + BILLION_LAUGHS_DTD).encode())


@pytest.mark.parametrize("where", ["text", "attribute"])
def test_billion_laughs_is_refused_quickly_without_expanding(where: str) -> None:
    body = billion_laughs(where)
    started = time.perf_counter()
    exc = rejected(body)
    assert time.perf_counter() - started < 0.05
    assert exc.reason == "DOCTYPE and entity declarations are not allowed"
    # Behind the byte scan, the parser itself neither expands nor accepts it.
    started = time.perf_counter()
    with pytest.raises(NotificationRejected):
        listener._parse(body)
    assert time.perf_counter() - started < 0.05


def test_billion_laughs_in_utf16_is_refused() -> None:
    body = billion_laughs().decode().replace('encoding="utf-8"', 'encoding="utf-16"').encode("utf-16")
    exc = rejected(body)
    assert exc.reason == "body is not UTF-8 (UTF-16 and UTF-32 are not accepted)"
    rejected(body[2:])  # without its BOM
    with pytest.raises(NotificationRejected):  # the parser alone: forced UTF-8, so not even read as a DTD
        listener._parse(body)


@pytest.mark.parametrize(
    "doctype",
    [
        '<!DOCTYPE s:Envelope [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
        '<!DOCTYPE s:Envelope [<!ENTITY % xxe SYSTEM "file:///etc/passwd"> %xxe;]>',
        '<!DOCTYPE s:Envelope SYSTEM "file:///etc/passwd">',
        '<!DOCTYPE s:Envelope [<!ENTITY xxe SYSTEM "http://127.0.0.1:9/x">]>',
    ],
)
def test_external_entities_are_refused_and_never_read(doctype: str) -> None:
    body = push(sid="&xxe;").replace(DECLARATION.encode(), (DECLARATION + doctype).encode())
    exc = rejected(body)
    assert exc.reason == "DOCTYPE and entity declarations are not allowed"
    assert "root:" not in repr(exc) and "passwd" not in repr(exc)
    # The parser layer alone (behind the byte scan) also refuses (from docinfo, or libxml2 stops at the DTD
    # it may not load), and resolves nothing.
    with pytest.raises(NotificationRejected) as caught:
        listener._parse(body)
    assert caught.value.reason.startswith(("DOCTYPE and entity declarations are not allowed", "not well-formed XML"))
    assert "root:" not in repr(caught.value)
    # And the tree that parser builds before the docinfo check holds no file content.
    try:
        tree = etree.fromstring(body.removeprefix(DECLARATION.encode()), listener._PARSERS.parser)
    except etree.XMLSyntaxError:
        return  # libxml2 refused it outright
    assert b"root:" not in etree.tostring(tree.getroottree())


def test_entity_reference_without_dtd_is_not_well_formed() -> None:
    assert rejected(push(sid="&xxe;")).reason.startswith("not well-formed XML (ERR_UNDECLARED_ENTITY")


def test_oversized_bodies_are_refused_before_parsing() -> None:
    body = push()
    padded = body + b" " * (MAX_BODY_BYTES - len(body))
    assert len(padded) == MAX_BODY_BYTES
    assert parse_send_notification(padded)[0].subscription_id == "sub-1"  # the limit itself is fine
    assert rejected(padded + b" ", status=413).reason == f"body is larger than {MAX_BODY_BYTES} bytes"
    huge = b"<" * (50 * MAX_BODY_BYTES)
    started = time.perf_counter()
    rejected(huge, status=413)  # not even looked at
    assert time.perf_counter() - started < 0.05


def test_deep_nesting_is_refused_quickly() -> None:
    deep = envelope("<x>" * 30_000 + "</x>" * 30_000)  # under the size limit, far over libxml2's depth limit
    assert len(deep) < MAX_BODY_BYTES
    started = time.perf_counter()
    assert rejected(deep).reason.startswith("not well-formed XML (ERR_RESOURCE_LIMIT")
    assert time.perf_counter() - started < 0.1


@pytest.mark.parametrize(
    ("body", "content_type", "status", "reason"),
    [
        (b"", TEXT_XML, 400, "empty body"),
        (b" \r\n\t ", None, 400, "empty body"),
        (b"\xef\xbb\xbf", None, 400, "empty body"),
        (b"hello, world", TEXT_XML, 400, "not well-formed XML (ERR_DOCUMENT_EMPTY"),
        (b'{"value": [{"subscriptionId": "x"}]}', "application/json", 415, "content type is not XML"),
        (b'{"value": [{"subscriptionId": "x"}]}', TEXT_XML, 400, "not well-formed XML"),
        (b'{"value": [{"subscriptionId": "x"}]}', None, 400, "not well-formed XML"),
        (b"\x00\x01\x02\x03binary", None, 400, "body is not UTF-8"),
        (b"\xff\xd8\xff\xe0 jpeg", None, 400, "not well-formed XML"),
        (b"<s:Envelope>", None, 400, "not well-formed XML"),
        (b"<a>\xff\xfe</a>", None, 400, "not well-formed XML"),
    ],
)
def test_non_xml_bodies(body: bytes, content_type: str | None, status: int, reason: str) -> None:
    assert rejected(body, content_type, status=status).reason.startswith(reason)


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "text/html; charset=utf-8", "application/json", "application/x-www-form-urlencoded", "", "xml"],
)
def test_wrong_content_types(content_type: str) -> None:
    exc = rejected(push(), content_type, status=415)
    assert exc.reason == "content type is not XML (text/xml, application/xml or application/soap+xml)"


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/xml",
        "text/xml; charset=utf-8",
        "TEXT/XML; Charset=UTF-8",
        'text/xml;charset="utf-8"',
        "application/xml",
        "application/soap+xml; charset=utf-8; action=SendNotification",
        "text/xml; charset=us-ascii",
    ],
)
def test_xml_content_types(content_type: str | None) -> None:
    assert parse_send_notification(push(), content_type)[0].subscription_id == "sub-1"


def test_a_charset_other_than_utf8_is_refused() -> None:
    exc = rejected(push(), "text/xml; charset=iso-8859-1", status=415)
    assert exc.reason == "content type names a charset other than UTF-8"


# --- the XML declaration: one leniency, otherwise strict -----------------------------------------------------


@pytest.mark.parametrize(
    "prolog",
    [
        "",
        '<?xml version="1.0"?>',
        "<?xml version='1.0' encoding='UTF-8' standalone='yes'?>",
        '<?xml version="1.0 (http://www.w3.org/TR/REC-xml/)" encoding="utf-8"?>',  # as Amazon WorkMail documents it
        '<?xml version="1.1" encoding="utf-8"?>',
        '  \r\n<?xml version="1.0"?>',  # whitespace before the declaration (WorkMail's documented answers)
        '\ufeff<?xml version="1.0" encoding="utf-8"?>',  # UTF-8 BOM
        '<?xml\n  version = "1.0"\n  encoding = "utf8" ?>\n\n',
    ],
)
def test_xml_declarations_accepted(prolog: str) -> None:
    body = envelope(send(message(notification(status("w")))), declaration=prolog)
    assert parse_send_notification(body, TEXT_XML)[0].last_watermark == "w"


@pytest.mark.parametrize(
    ("prolog", "reason"),
    [
        ('<?xml version="2.0"?>', "malformed XML declaration (version is not 1.x)"),
        ('<?xml version="banana"?>', "malformed XML declaration (version is not 1.x)"),
        ('<?xml version="1.0(x)"?>', "malformed XML declaration (version is not 1.x)"),
        ('<?xml encoding="utf-8"?>', "malformed XML declaration (version is not 1.x)"),
        ('<?xml version="1.0" encoding="iso-8859-1"?>', "XML declaration names an encoding other than UTF-8"),
        ('<?xml version="1.0" encoding="utf-16"?>', "XML declaration names an encoding other than UTF-8"),
        ('<?xml version="1.0" foo="bar"?>', "malformed XML declaration (unknown or repeated pseudo-attribute)"),
        ('<?xml version="1.0" version="1.0"?>', "malformed XML declaration (unknown or repeated pseudo-attribute)"),
        ('<?xml version="1.0" standalone="maybe"?>', "malformed XML declaration (standalone is not yes or no)"),
        ('<?xml version="1.0" junk?>', "malformed XML declaration"),
        ('<?xml version="1.0>', "malformed XML declaration (not closed)"),
        ('<?xml version="1.0"' + " " * 300 + "?>", "malformed XML declaration (not closed)"),
        ('<?xml version="1.0"?><?xml version="1.0"?>', "not well-formed XML (ERR_RESERVED_XML_NAME"),
        ('<?xml version="1.0 (x)"?><?xml version="1.0"?>', "not well-formed XML (ERR_RESERVED_XML_NAME"),
        ('<!-- c --><?xml version="1.0"?>', "not well-formed XML"),
    ],
)
def test_xml_declarations_refused(prolog: str, reason: str) -> None:
    body = envelope(send(message(notification(status("w")))), declaration=prolog)
    assert rejected(body).reason.startswith(reason)


def test_bytearray_and_memoryview_bodies() -> None:
    body = push()
    assert parse_send_notification(bytearray(body)) == parse_send_notification(memoryview(body))
    with pytest.raises(TypeError):
        parse_send_notification(cast(Any, body.decode()))


def test_parsing_from_many_threads() -> None:
    bodies = [push(sid=f"sub-{i}") for i in range(200)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(lambda b: parse_send_notification(b, TEXT_XML)[0].subscription_id, bodies))
    assert ids == [f"sub-{i}" for i in range(200)]


# --- mutations never escape as anything but NotificationRejected ---------------------------------------------

SYNTHETIC = push(
    item_event("CreatedEvent", "wm-1", "item-1")
    + item_event("MovedEvent", "wm-2", "item-2", extra='<t:OldItemId Id="i"/><t:OldParentFolderId Id="p"/>')
    + folder_event("ModifiedEvent", "wm-3", "cal")
    + status("wm-4")
)
TOKENS = [
    b"<",
    b">",
    b"&",
    b"&lol;",
    b"&#0;",
    b"&#x10FFFF;",
    b"<!DOCTYPE x>",
    b'<!ENTITY a "b">',
    b"<![CDATA[",
    b"]]>",
    b"<!--",
    b"-->",
    b'<?xml version="1.0"?>',
    b"<?pi x?>",
    b"\x00",
    b"\xff\xfe",
    b"\xef\xbb\xbf",
    b"\xc3",
    b'"',
    b"'",
    b"=",
    b"</t:Watermark>",
    b"<t:Watermark>",
    b'xmlns:t="urn:x"',
    b"<t:ItemId/>",
    b"T99:99:99Z",
]


def mutation_bases() -> list[bytes]:
    bases = [SYNTHETIC]
    if SAMPLES_DIR.is_dir():
        bases += [(SAMPLES_DIR / name).read_bytes() for name in sorted(VALID_SAMPLES)]
    return bases


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(mutation_bases())))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        operation = draw(st.sampled_from(["flip", "byte", "truncate", "insert", "token", "delete", "duplicate"]))
        if operation == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif operation == "byte":
            data[at] = draw(st.integers(0, 255))
        elif operation == "truncate":
            del data[at:]
        elif operation == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif operation == "token":
            data[at:at] = draw(st.sampled_from(TOKENS))
        elif operation == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 256))]
    return bytes(data)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=mutated(), content_type=st.sampled_from([None, TEXT_XML]))
def test_mutated_bodies_parse_or_are_rejected_quickly(body: bytes, content_type: str | None) -> None:
    started = time.perf_counter()
    try:
        notes = parse_send_notification(body, content_type)
    except NotificationRejected as exc:
        assert exc.status == 400 and exc.reason.isascii() and len(exc.reason) < 200
    else:
        assert notes
        for note in notes:
            assert note.subscription_id and note.subscription_id == note.subscription_id.strip()
            assert note.status_only == (not note.events)
            for event in note.events:
                assert (event.item_id is None) != (event.folder_id is None)
                assert event.timestamp is None or event.timestamp.tzinfo is UTC
    assert time.perf_counter() - started < 1.0


# --- the answer ---------------------------------------------------------------------------------------------------


def _canonical(document: bytes) -> bytes:
    parser = etree.XMLParser(remove_blank_text=True, remove_comments=True, resolve_entities=False, no_network=True)
    return etree.tostring(etree.fromstring(document.lstrip(), parser), method="c14n")


def _shape(document: bytes) -> list[tuple[str, dict[str, str], str]]:
    root = etree.fromstring(_canonical(document))
    return [(str(e.tag), {str(k): str(v) for k, v in e.attrib.items()}, (e.text or "").strip()) for e in root.iter()]


@pytest.mark.parametrize("status", ["OK", "Unsubscribe"])
def test_result_envelope_is_what_exchange_expects(status: Status) -> None:
    answer = result_envelope(status)
    assert answer.startswith(b'<?xml version="1.0" encoding="utf-8"?>')
    assert answer is result_envelope(status)
    exchangelib = sample(f"exchangelib-sendnotificationresult-{status.lower()}.xml")
    assert _canonical(answer) == _canonical(exchangelib)  # the same document, namespace declarations included
    workmail = sample(f"workmail-sendnotificationresult-{status.lower()}.xml")
    assert _shape(answer) == _shape(workmail)  # WorkMail's uses a default namespace: same elements


@pytest.mark.parametrize("status", ["OK", "Unsubscribe"])
def test_result_envelope_is_schema_valid(schema_dir: Path, status: Status) -> None:
    from calsync.emulator.ews.schema_check import EwsSchema

    EwsSchema.cached(schema_dir).check(result_envelope(status))


def test_result_envelope_is_understood_by_the_emulator() -> None:
    from calsync.emulator.ews.push import _result

    assert _result(result_envelope("OK")) == "ok"
    assert _result(result_envelope("Unsubscribe")) == "unsubscribe"


def test_result_envelope_refuses_other_statuses() -> None:
    with pytest.raises(ValueError, match="OK"):
        result_envelope(cast(Any, "ok"))


# --- the project's own emulator ----------------------------------------------------------------------------------


def test_emulator_send_notification_bodies_parse() -> None:
    from calsync.emulator.ews.notifications import send_notification
    from calsync.emulator.ews.soap import envelope as soap_envelope
    from calsync.emulator.ews.subscriptions import ALL_EVENT_TYPES, Subscription, new_subscription_id
    from calsync.emulator.journal import Event as JournalEvent
    from calsync.emulator.journal import encode_watermark
    from calsync.emulator.model import ItemRef, Mailbox

    mbx = Mailbox(address="ann@example.com", display_name="Ann")
    subscription = Subscription(
        id=new_subscription_id(),
        kind="push",
        mailbox=mbx.guid,
        address=mbx.address,
        folders=frozenset({"calendar"}),
        all_folders=False,
        event_types=frozenset(ALL_EVENT_TYPES),
        cursor=4,
        created=0.0,
        url="http://listener.invalid/",
    )
    item, moved = ItemRef(mbx.guid, 1).encode(), ItemRef(mbx.guid, 2).encode()
    when = datetime(2026, 3, 1, 8, 30, tzinfo=UTC)
    journal = [
        JournalEvent(5, "CreatedEvent", when, "calendar", item_id=item),
        JournalEvent(6, "ModifiedEvent", when, "msgfolderroot", folder="calendar", unread_count=0),
        JournalEvent(
            7, "MovedEvent", when, "deleteditems", item_id=moved, old_item_id=item, old_parent_folder="calendar"
        ),
    ]
    body = soap_envelope(send_notification(subscription, mbx, journal, True, 7), None, request_version="Exchange2016")
    [note] = parse_send_notification(body, TEXT_XML)

    def wm(seq: int) -> str:
        return encode_watermark(mbx.guid, seq)

    assert note == Notification(
        subscription_id=subscription.id,
        previous_watermark=wm(4),
        more_events=True,
        events=(
            Event("CreatedEvent", wm(5), when, item, None, mbx.folder_id("calendar")),
            Event("ModifiedEvent", wm(6), when, None, mbx.folder_id("calendar"), mbx.folder_id("msgfolderroot")),
            Event(
                "MovedEvent",
                wm(7),
                when,
                moved,
                None,
                mbx.folder_id("deleteditems"),
                old_item_id=item,
                old_parent_folder_id=mbx.folder_id("calendar"),
            ),
        ),
        status_only=False,
        last_watermark=wm(7),
    )
    heartbeat = soap_envelope(send_notification(subscription, mbx, [], False, 9), None, request_version="Exchange2010")
    [note] = parse_send_notification(heartbeat, TEXT_XML)
    assert note.status_only and (note.previous_watermark, note.last_watermark) == (wm(4), wm(9))


@dataclass
class Listener:
    """A listener built on this module: parses each push and answers with result_envelope."""

    answer: str = "OK"
    notes: list[Notification] = field(default_factory=list)
    rejections: list[NotificationRejected] = field(default_factory=list)
    url: str = ""

    def wait(self, condition: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.02)


@pytest.fixture
def http_listener() -> Iterator[Listener]:
    state = Listener()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                notes = parse_send_notification(body, self.headers.get("Content-Type"))
            except NotificationRejected as exc:
                state.rejections.append(exc)
                self.send_response(exc.status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            state.notes.extend(notes)
            payload = result_envelope("Unsubscribe" if state.answer == "Unsubscribe" else "OK")
            self.send_response(200)
            self.send_header("Content-Type", listener.RESULT_CONTENT_TYPE)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_port}/ews/push?tenant={uuid.uuid4().hex}"
    yield state
    server.shutdown()
    server.server_close()


def test_emulator_pushes_end_to_end(emulator_factory: Callable[..., Emulator], http_listener: Listener) -> None:
    emu = emulator_factory(clock_speed=120)  # StatusFrequency 1 minute = 0.5 s
    account = ews_account(emu, "ann@example.com")
    sid, _ = account.calendar.subscribe_to_push(http_listener.url, status_frequency=1)
    http_listener.wait(lambda: any(n.status_only for n in http_listener.notes))  # a heartbeat
    item = emu.outlook("ann@example.com").create({"subject": "pushed", "start": "2026-12-01T09:00:00Z"})
    http_listener.wait(lambda: any(e.item_id == item.item_id for n in http_listener.notes for e in n.events))
    notes = list(http_listener.notes)
    assert http_listener.rejections == []
    assert {n.subscription_id for n in notes} == {sid}
    created = next(n for n in notes if n.events)
    assert [e.kind for e in created.events] == ["CreatedEvent", "ModifiedEvent"]
    assert created.events[0].parent_folder_id == created.events[1].folder_id  # the item's folder, then the folder
    for before, after in itertools.pairwise(notes):  # watermarks chain from push to push
        assert after.previous_watermark == before.last_watermark
    log = [d for d in emu.push.log if d.subscription_id == sid]
    assert log and all(d.outcome == "ok" for d in log)
    http_listener.answer = "Unsubscribe"  # our Unsubscribe answer ends the subscription
    subscription = emu.exchange.subscriptions[sid]
    http_listener.wait(lambda: subscription.state == "unsubscribed")
    account.protocol.close()

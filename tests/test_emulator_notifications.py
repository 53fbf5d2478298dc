"""Subscriptions through exchangelib (pull, streaming, push) and push delivery against a real HTTP receiver:
event order, heartbeats, the retry timetable, expiry, Unsubscribe, watermarks, version-shaped deletes."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from exchangelib import CalendarItem, EWSDateTime, EWSTimeZone
from exchangelib.errors import ErrorInvalidWatermark, ErrorSubscriptionNotFound
from exchangelib.services import SendNotification

from .conftest import ews_account

UTC = EWSTimeZone("UTC")
RESULT = (
    '<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
    '<s:Body><m:SendNotificationResult xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages">'
    "<m:SubscriptionStatus>{}</m:SubscriptionStatus></m:SendNotificationResult></s:Body></s:Envelope>"
)


@dataclass
class Push:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes

    def notifications(self):
        return list(SendNotification(protocol=None).parse(self.body))

    def kinds(self) -> list[str]:
        return [type(e).__name__ for n in self.notifications() for e in n.events]


@dataclass
class Receiver:
    """A listener stand-in: records every push and answers as told (OK, Unsubscribe, an HTTP error, silence)."""

    answers: list[str] = field(default_factory=list)  # consumed in order; then "OK"
    pushes: list[Push] = field(default_factory=list)
    url: str = ""

    def next_answer(self) -> str:
        return self.answers.pop(0) if self.answers else "OK"

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Push]:
        deadline = time.monotonic() + timeout
        while len(self.pushes) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.pushes


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.pushes.append(Push(time.monotonic(), self.path, dict(self.headers), body))
            answer = state.next_answer()
            if answer == "500":
                self.send_response(500)
                self.end_headers()
                return
            payload = RESULT.format(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/xml; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_port}/ews/notifications/s3cret?tenant=42"
    yield state
    server.shutdown()
    server.server_close()


def _create(account, subject: str = "x") -> CalendarItem:
    item = CalendarItem(
        account=account,
        folder=account.calendar,
        subject=subject,
        start=EWSDateTime(2026, 12, 1, 9, tzinfo=UTC),
        end=EWSDateTime(2026, 12, 1, 10, tzinfo=UTC),
    )
    item.save(send_meeting_invitations="SendToNone")
    return item


def _events(account, sid: str, watermark: str) -> tuple[list[str], str]:
    kinds, last = [], watermark
    for note in account.calendar.get_events(sid, watermark):
        kinds.extend(type(e).__name__ for e in note.events)
        last = [e.watermark for e in note.events][-1] if note.events else last
    return kinds, last


def test_pull_events_and_version_shaped_deletes(emulator_factory):
    for version, soft_delete in (("Exchange2010", "DeletedEvent"), ("Exchange2016", "MovedEvent")):
        emu = emulator_factory(version=version)
        acc = ews_account(
            emu, "ann@example.com", build=(14, 3, 123, 4) if version == "Exchange2010" else (15, 1, 2507, 6)
        )
        sid, watermark = acc.calendar.subscribe_to_pull()
        a, b, c = _create(acc, "a"), _create(acc, "b"), _create(acc, "c")
        kinds, watermark = _events(acc, sid, watermark)
        assert kinds == ["CreatedEvent", "ModifiedEvent"] * 3  # the item's event and its folder's
        a.subject = "a2"
        a.save(update_fields=["subject"])
        b.soft_delete()
        c.move_to_trash()
        kinds, watermark = _events(acc, sid, watermark)
        assert kinds[:2] == ["ModifiedEvent", "ModifiedEvent"], version
        assert kinds[2] == soft_delete, version
        # The move's event and the calendar's; the Deleted Items folder is not watched.
        assert kinds[-2:] == ["MovedEvent", "ModifiedEvent"], version
        acc.calendar.unsubscribe(sid)
        with pytest.raises(ErrorSubscriptionNotFound):
            list(acc.calendar.get_events(sid, watermark))


def test_resubscribe_from_watermark_replays_what_followed(emulator, account):
    sid, watermark = account.calendar.subscribe_to_pull()
    _create(account, "before")
    kinds, mark = _events(account, sid, watermark)
    account.calendar.unsubscribe(sid)
    _create(account, "while away")  # happens while nobody is subscribed
    sid2, _ = account.calendar.subscribe_to_pull(watermark=mark)
    kinds, _ = _events(account, sid2, mark)
    assert kinds == ["CreatedEvent", "ModifiedEvent"]


def test_too_old_watermark_is_invalid(emulator, account):
    sid, watermark = account.calendar.subscribe_to_pull()
    account.calendar.unsubscribe(sid)
    _create(account, "one")
    emulator.advance(31 * 24 * 3600)  # watermarks last about 30 days
    _create(account, "two")
    with pytest.raises(ErrorInvalidWatermark):
        account.calendar.subscribe_to_pull(watermark=watermark)
    sid, fresh = account.calendar.subscribe_to_pull()
    emulator.exchange.expire_watermarks(emulator.exchange.mailbox("ann@example.com"))
    with pytest.raises(ErrorInvalidWatermark):
        list(account.calendar.get_events(sid, fresh))


def test_pull_subscription_expires_when_not_read(emulator_factory):
    emu = emulator_factory(clock_speed=600)
    acc = ews_account(emu, "ann@example.com")
    sid, watermark = acc.calendar.subscribe_to_pull(timeout=1)
    time.sleep(0.2)  # two emulated minutes
    with pytest.raises(ErrorSubscriptionNotFound):
        list(acc.calendar.get_events(sid, watermark))


def test_streaming_events_arrive_in_order_then_the_connection_closes(emulator_factory):
    emu = emulator_factory(clock_speed=30)  # a one-minute connection lasts two seconds
    acc = ews_account(emu, "ann@example.com")
    sid = acc.calendar.subscribe_to_streaming()

    def later() -> None:
        time.sleep(0.3)
        emu.outlook("ann@example.com").create({"subject": "streamed", "start": "2026-12-01T09:00:00Z"})

    threading.Thread(target=later).start()
    started = time.monotonic()
    kinds = [type(e).__name__ for n in acc.calendar.get_streaming_events(sid, connection_timeout=1) for e in n.events]
    assert kinds == ["CreatedEvent", "ModifiedEvent"]
    assert 1.5 < time.monotonic() - started < 6
    acc.calendar.unsubscribe(sid)


def _push_setup(emu_factory: Callable, receiver: Receiver, *, speed: float, frequency: int, version="Exchange2016"):
    emu = emu_factory(clock_speed=speed, version=version)
    acc = ews_account(emu, "ann@example.com")
    sid, _ = acc.calendar.subscribe_to_push(receiver.url, status_frequency=frequency)
    return emu, acc, sid


def test_push_delivers_events_in_order_to_the_exact_url(emulator_factory, receiver):
    _emu, acc, sid = _push_setup(emulator_factory, receiver, speed=1, frequency=30)
    item = _create(acc, "pushed")
    item.subject = "pushed again"
    item.save(update_fields=["subject"])
    pushes = receiver.wait_for(1)
    time.sleep(0.3)
    kinds = [k for p in receiver.pushes for k in p.kinds()]
    assert kinds == ["CreatedEvent", "ModifiedEvent", "ModifiedEvent", "ModifiedEvent"]
    first = pushes[0]
    assert first.path == "/ews/notifications/s3cret?tenant=42"  # query string kept
    assert first.headers["Content-Type"] == "text/xml; charset=utf-8"
    assert first.headers["SOAPAction"].endswith("/messages/SendNotification")
    [note] = first.notifications()
    assert note.subscription_id == sid
    assert note.events[0].item_id.id == item.id


def test_push_heartbeats_every_status_frequency_when_idle(emulator_factory, receiver):
    _emu, _acc, _sid = _push_setup(emulator_factory, receiver, speed=120, frequency=1)  # a heartbeat every 0.5 s
    pushes = receiver.wait_for(3, timeout=10)
    assert [p.kinds() for p in pushes[:3]] == [["StatusEvent"]] * 3
    gaps = [b.at - a.at for a, b in itertools.pairwise(pushes)]
    assert all(0.3 < g < 1.5 for g in gaps), gaps


def test_push_retry_timetable_then_the_subscription_dies(emulator_factory, receiver):
    receiver.answers = ["500"] * 100
    emu, acc, sid = _push_setup(emulator_factory, receiver, speed=120, frequency=5)  # 5 min = 2.5 s
    _create(acc, "never delivered")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and emu.exchange.subscriptions[sid].state != "dead":
        time.sleep(0.05)
    assert emu.exchange.subscriptions[sid].state == "dead"
    attempts = [d.at for d in emu.push.log if d.subscription_id == sid]
    first = attempts[0]
    offsets = [round(a - first) for a in attempts]
    # At once, at once again, then after 30 s, 60 s, 120 s (emulated): 0, 0, 30, 90, 210; 450 > 300 never comes.
    # Each wait is never shorter than the timetable's, and at most half a real second longer (a busy machine).
    gaps = [b - a for a, b in itertools.pairwise(offsets)]
    assert len(offsets) == 5, offsets
    assert all(want - 2 <= got <= want + 60 for got, want in zip(gaps, [0, 30, 60, 120], strict=True)), offsets
    count = len(receiver.pushes)
    time.sleep(0.6)
    assert len(receiver.pushes) == count  # dead: nothing more is sent


def test_push_recovers_after_failures_without_losing_events(emulator_factory, receiver):
    receiver.answers = ["500", "500"]
    emu, acc, sid = _push_setup(emulator_factory, receiver, speed=120, frequency=5)
    _create(acc, "kept")
    receiver.wait_for(4, timeout=10)
    delivered = [p.kinds() for p in receiver.pushes]
    assert delivered[:3] == [["CreatedEvent", "ModifiedEvent"]] * 3  # the same events, retried
    assert emu.exchange.subscriptions[sid].state == "active"


def test_push_unsubscribe_answer_ends_the_subscription(emulator_factory, receiver):
    receiver.answers = ["Unsubscribe"]
    emu, _acc, sid = _push_setup(emulator_factory, receiver, speed=120, frequency=1)
    receiver.wait_for(1)
    time.sleep(1.2)
    assert len(receiver.pushes) == 1
    assert emu.exchange.subscriptions[sid].state == "unsubscribed"


def test_lost_push_and_unreachable_listener_faults(emulator_factory, receiver):
    emu, acc, _sid = _push_setup(emulator_factory, receiver, speed=60, frequency=30)
    emu.set_faults(lost_push=1)
    _create(acc, "lost")
    time.sleep(0.5)
    assert receiver.pushes == []  # Exchange thinks it delivered; the listener never heard
    assert [d.outcome for d in emu.push.log] == ["lost"]
    emu.set_faults(listener_unreachable=True)
    _create(acc, "unreachable")
    time.sleep(0.5)
    assert receiver.pushes == []
    assert {d.outcome for d in list(emu.push.log)[1:]} == {"unreachable"}
    emu.set_faults(listener_unreachable=False)
    pushes = receiver.wait_for(1, timeout=10)
    assert pushes[0].kinds() == ["CreatedEvent", "ModifiedEvent"]  # the second change, after the outage

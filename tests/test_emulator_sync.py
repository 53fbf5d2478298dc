"""SyncFolderItems through exchangelib: batches, create/update/delete, and bad or expired sync states."""

from __future__ import annotations

import datetime as dt

import pytest
from exchangelib import CalendarItem, EWSDateTime, EWSTimeZone
from exchangelib.errors import ErrorInvalidArgument, ErrorInvalidSyncStateData
from exchangelib.recurrence import DailyPattern, Recurrence

UTC = EWSTimeZone("UTC")


def _sync(folder, state=None, batch=None):
    changes = list(folder.sync_items(sync_state=state, max_changes_returned=batch))
    return [
        (kind, getattr(item, "subject", None), item.id if hasattr(item, "id") else item[0]) for kind, item in changes
    ], folder.item_sync_state


def _create(account, subject, day):
    item = CalendarItem(
        account=account,
        folder=account.calendar,
        subject=subject,
        start=EWSDateTime(2026, 12, day, 9, tzinfo=UTC),
        end=EWSDateTime(2026, 12, day, 10, tzinfo=UTC),
    )
    item.save(send_meeting_invitations="SendToNone")
    return item


def test_initial_sync_in_batches_then_incremental(emulator, account):
    items = [_create(account, f"a{i}", i) for i in range(1, 8)]
    folder = account.calendar
    changes, state = _sync(folder, batch=3)
    assert [c[:2] for c in changes] == [("create", f"a{i}") for i in range(1, 8)]
    assert emulator.exchange.stats["op:SyncFolderItems"] == 3  # 3 + 3 + 1

    # Nothing new: an empty page.
    again, state = _sync(folder, state)
    assert again == []

    items[0].subject = "a1 changed"
    items[0].save(update_fields=["subject"])
    deleted_id = items[1].id
    items[1].delete()
    _create(account, "new", 20)
    changes, state = _sync(folder, state, batch=512)
    assert sorted((kind, subject) for kind, subject, _ in changes) == [
        ("create", "new"),
        ("delete", None),
        ("update", "a1 changed"),
    ]
    deleted = next(c for c in changes if c[0] == "delete")
    assert deleted[2] == deleted_id


def test_every_change_seen_exactly_once_across_batches(emulator, account):
    items = [_create(account, f"b{i}", i) for i in range(1, 6)]
    folder = account.calendar
    changes, state = _sync(folder, batch=1)
    assert len(changes) == 5
    # Changes made between two batches of one sync run are picked up by the next batches, not lost.
    seen = []
    gen = folder.sync_items(sync_state=state, max_changes_returned=1)
    items[2].subject = "b3 v2"
    items[2].save(update_fields=["subject"])
    _create(account, "late", 15)
    for kind, item in gen:
        seen.append((kind, getattr(item, "subject", None)))
    assert sorted(seen) == [("create", "late"), ("update", "b3 v2")]


def test_occurrence_changes_are_updates_of_the_master(account):
    master = CalendarItem(
        account=account,
        folder=account.calendar,
        subject="daily",
        start=EWSDateTime(2026, 12, 1, 9, tzinfo=UTC),
        end=EWSDateTime(2026, 12, 1, 10, tzinfo=UTC),
        recurrence=Recurrence(pattern=DailyPattern(interval=1), start=dt.date(2026, 12, 1), number=5),
    )
    master.save(send_meeting_invitations="SendToNone")
    changes, state = _sync(account.calendar)
    assert [(k, s) for k, s, _ in changes] == [("create", "daily")]
    occurrence = master.occurrence(3)
    occurrence.refresh()
    occurrence.delete()
    changes, state = _sync(account.calendar, state)
    assert [(k, s) for k, s, _ in changes] == [("update", "daily")]


def test_max_changes_returned_outside_1_to_512_is_invalid(account):
    with pytest.raises(ErrorInvalidArgument, match=r"1\.\.512"):
        list(account.calendar.sync_items(max_changes_returned=513))


def test_bad_or_expired_sync_state(emulator, account):
    _create(account, "x", 3)
    _, state = _sync(account.calendar)
    with pytest.raises(ErrorInvalidSyncStateData):
        list(account.calendar.sync_items(sync_state="not-a-state"))
    tampered = state[:-8] + ("A" * 8 if not state.endswith("AAAAAAAA") else "B" * 8)
    with pytest.raises(ErrorInvalidSyncStateData):
        list(account.calendar.sync_items(sync_state=tampered))
    emulator.exchange.expire_sync_states(emulator.exchange.mailbox("ann@example.com"))
    with pytest.raises(ErrorInvalidSyncStateData):
        list(account.calendar.sync_items(sync_state=state))
    # A fresh sync (no state) starts over and works.
    account.calendar.item_sync_state = None
    changes, _ = _sync(account.calendar)
    assert [(k, s) for k, s, _ in changes] == [("create", "x")]


def test_sync_state_of_another_folder_is_invalid(account):
    _, state = _sync(account.calendar)
    with pytest.raises(ErrorInvalidSyncStateData):
        list(account.trash.sync_items(sync_state=state))

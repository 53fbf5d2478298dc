"""Calendar items through exchangelib: create, read, update, delete, recurrence, time zones, meetings."""

from __future__ import annotations

import datetime as dt

import pytest
from exchangelib import Attendee, CalendarItem, EWSDate, EWSDateTime, EWSTimeZone, Mailbox
from exchangelib.errors import (
    ErrorCalendarInvalidRecurrence,
    ErrorIrresolvableConflict,
    ErrorItemNotFound,
    ErrorNameResolutionNoResults,
)
from exchangelib.recurrence import (
    AbsoluteMonthlyPattern,
    AbsoluteYearlyPattern,
    DailyPattern,
    Recurrence,
    RelativeMonthlyPattern,
    RelativeYearlyPattern,
    WeeklyPattern,
)

from .conftest import ews_account, save_item

BERLIN = EWSTimeZone("Europe/Berlin")
NEW_YORK = EWSTimeZone("America/New_York")
UTC = EWSTimeZone("UTC")


def _view(account, start: EWSDateTime, end: EWSDateTime) -> list[CalendarItem]:
    return list(account.calendar.view(start=start, end=end))


def test_first_contact_folders_and_resolve_names(emulator, account):
    assert account.root.id and account.root.child_folder_count >= 2
    assert account.msg_folder_root.name == "Top of Information Store"
    assert account.calendar.name == "Calendar"
    assert account.calendar.total_count == 0
    resolved = account.protocol.resolve_names(["bob@example.com"])
    assert [m.email_address for m in resolved] == ["bob@example.com"]
    [missing] = account.protocol.resolve_names(["nobody@example.com"])
    assert isinstance(missing, ErrorNameResolutionNoResults)


def test_create_get_update_delete_roundtrip(account):
    start = EWSDateTime(2026, 12, 1, 9, 30, tzinfo=BERLIN)
    item = save_item(
        account,
        "Planning",
        start,
        location="Room 1",
        categories=["Team", "Blue"],
        body="Agenda",
        sensitivity="Private",
        legacy_free_busy_status="OOF",
        reminder_minutes_before_start=5,
    )
    fetched = account.calendar.get(id=item.id)
    assert fetched.subject == "Planning"
    assert fetched.start == start.astimezone(UTC)
    assert fetched.end == (start + dt.timedelta(hours=1)).astimezone(UTC)
    assert str(fetched._start_timezone) == "Europe/Berlin"
    assert fetched.location == "Room 1"
    assert fetched.categories == ["Team", "Blue"]
    assert fetched.body == "Agenda"
    assert fetched.sensitivity == "Private"
    assert fetched.legacy_free_busy_status == "OOF"
    assert fetched.reminder_minutes_before_start == 5
    assert fetched.type == "Single"
    assert fetched.organizer.email_address == "ann@example.com"
    assert fetched.is_cancelled is False

    old_key = fetched.changekey
    fetched.subject = "Planning (moved)"
    fetched.start += dt.timedelta(days=1)
    fetched.end += dt.timedelta(days=1)
    fetched.save(update_fields=["subject", "start", "end"])
    assert fetched.changekey != old_key
    again = account.calendar.get(id=item.id)
    assert again.subject == "Planning (moved)"
    assert again.start == (start + dt.timedelta(days=1)).astimezone(UTC)

    again.location = None
    again.save(update_fields=["location"])  # exchangelib sends DeleteItemField for a None value
    assert account.calendar.get(id=item.id).location is None

    again.delete()
    with pytest.raises(ErrorItemNotFound):
        account.calendar.get(id=item.id)


def test_stale_change_key_is_an_irresolvable_conflict(account):
    item = save_item(account, "Original", EWSDateTime(2026, 12, 2, 10, tzinfo=UTC))
    stale = account.calendar.get(id=item.id)
    item.subject = "First writer"
    item.save(update_fields=["subject"])
    stale.subject = "Second writer"
    with pytest.raises(ErrorIrresolvableConflict):
        stale.save(update_fields=["subject"])
    assert account.calendar.get(id=item.id).subject == "First writer"


def test_delete_modes_move_items(emulator, account):
    hard = save_item(account, "hard", EWSDateTime(2026, 12, 3, 8, tzinfo=UTC))
    soft = save_item(account, "soft", EWSDateTime(2026, 12, 3, 9, tzinfo=UTC))
    trash = save_item(account, "trash", EWSDateTime(2026, 12, 3, 10, tzinfo=UTC))
    hard.delete()
    soft.soft_delete()
    trash.move_to_trash()
    mbx = emulator.exchange.mailbox("ann@example.com")
    assert mbx.calendar.items == {}
    assert [i.subject for i in mbx.folders["deleteditems"].items.values()] == ["trash"]
    assert [i.subject for i in mbx.folders["recoverableitemsdeletions"].items.values()] == ["soft"]
    assert [i.subject for i in account.trash.all()] == ["trash"]


def test_meeting_invitation_and_cancellation_reach_attendees(emulator, account):
    bob = ews_account(emulator, "bob@example.com")
    meeting = CalendarItem(
        account=account,
        folder=account.calendar,
        subject="Review",
        start=EWSDateTime(2026, 12, 4, 14, tzinfo=UTC),
        end=EWSDateTime(2026, 12, 4, 15, tzinfo=UTC),
        required_attendees=[Attendee(mailbox=Mailbox(email_address="bob@example.com"), response_type="Unknown")],
        optional_attendees=[Attendee(mailbox=Mailbox(email_address="guest@partner.example"))],
    )
    meeting.save(send_meeting_invitations="SendToAllAndSaveCopy")
    fetched = account.calendar.get(id=meeting.id)
    assert fetched.is_meeting is True
    assert [a.mailbox.email_address for a in fetched.required_attendees] == ["bob@example.com"]
    assert [a.mailbox.email_address for a in fetched.optional_attendees] == ["guest@partner.example"]
    copies = list(bob.calendar.all())
    assert [(c.subject, c.my_response_type, c.organizer.email_address) for c in copies] == [
        ("Review", "NoResponseReceived", "ann@example.com")
    ]
    copies[0].accept()
    organizer_view = account.calendar.get(id=meeting.id)
    assert organizer_view.required_attendees[0].response_type == "Accept"

    fetched.delete(send_meeting_cancellations="SendToAllAndSaveCopy")
    cancelled = list(bob.calendar.all())
    assert len(cancelled) == 1
    assert cancelled[0].is_cancelled is True
    assert cancelled[0].subject == "Canceled: Review"


def test_cancel_calendar_item_response_object(emulator, account):
    bob = ews_account(emulator, "bob@example.com")
    meeting = CalendarItem(
        account=account,
        folder=account.calendar,
        subject="Kickoff",
        start=EWSDateTime(2026, 12, 7, 9, tzinfo=UTC),
        end=EWSDateTime(2026, 12, 7, 10, tzinfo=UTC),
        required_attendees=[Attendee(mailbox=Mailbox(email_address="bob@example.com"))],
    )
    meeting.save(send_meeting_invitations="SendOnlyToAll")
    meeting.cancel()
    assert list(account.calendar.all()) == []
    assert [(i.subject, i.is_cancelled) for i in bob.calendar.all()] == [("Canceled: Kickoff", True)]


PATTERNS = [
    (DailyPattern(interval=2), dt.date(2026, 12, 1), 3, ["2026-12-01", "2026-12-03", "2026-12-05"]),
    (
        WeeklyPattern(interval=1, weekdays=[1, 3], first_day_of_week=1),
        dt.date(2026, 12, 1),
        4,
        ["2026-12-02", "2026-12-07", "2026-12-09", "2026-12-14"],
    ),  # Mondays and Wednesdays from Tue Dec 1
    (
        AbsoluteMonthlyPattern(interval=1, day_of_month=31),
        dt.date(2027, 1, 1),
        3,
        ["2027-01-31", "2027-02-28", "2027-03-31"],
    ),
    (
        RelativeMonthlyPattern(interval=1, weekday=5, week_number=5),
        dt.date(2027, 1, 1),
        3,
        ["2027-01-29", "2027-02-26", "2027-03-26"],
    ),  # last Friday
    (AbsoluteYearlyPattern(day_of_month=29, month=2), dt.date(2027, 1, 1), 2, ["2027-02-28", "2028-02-29"]),
    (
        RelativeYearlyPattern(weekday=7, week_number=5, month=3),
        dt.date(2027, 1, 1),
        2,
        ["2027-03-28", "2028-03-26"],
    ),  # last Sunday of March
]


@pytest.mark.parametrize(
    ("pattern", "first_day", "count", "expected"),
    PATTERNS,
    ids=["daily", "weekly", "abs-monthly", "rel-monthly", "abs-yearly", "rel-yearly"],
)
def test_recurrence_patterns_expand_in_calendar_view(account, pattern, first_day, count, expected):
    start = EWSDateTime.combine(first_day, dt.time(9, 0)).replace(tzinfo=BERLIN)
    master = save_item(account, "Series", start, recurrence=Recurrence(pattern=pattern, start=first_day, number=count))
    master.refresh()
    assert master.type == "RecurringMaster"
    assert master.first_occurrence.start.astimezone(BERLIN).date().isoformat() == expected[0]
    assert master.last_occurrence.start.astimezone(BERLIN).date().isoformat() == expected[-1]
    found = _view(account, EWSDateTime(2026, 11, 1, tzinfo=UTC), EWSDateTime(2028, 12, 31, tzinfo=UTC))
    assert [o.start.astimezone(BERLIN).date().isoformat() for o in found] == expected
    assert {o.start.astimezone(BERLIN).time() for o in found} == {dt.time(9, 0)}  # wall time kept across DST
    assert {o.type for o in found} == {"Occurrence"}


def test_end_by_date_and_no_end(account):
    first = dt.date(2026, 12, 1)
    start = EWSDateTime(2026, 12, 1, 9, tzinfo=UTC)
    ended = save_item(
        account,
        "Until",
        start,
        recurrence=Recurrence(pattern=DailyPattern(interval=1), start=first, end=dt.date(2026, 12, 5)),
    )
    endless = save_item(
        account,
        "Forever",
        start + dt.timedelta(hours=2),
        recurrence=Recurrence(pattern=WeeklyPattern(interval=1, weekdays=[2]), start=first),
    )
    ended.refresh()
    endless.refresh()
    assert ended.last_occurrence.start.date() == dt.date(2026, 12, 5)
    assert endless.last_occurrence is None
    found = _view(account, EWSDateTime(2026, 12, 1, tzinfo=UTC), EWSDateTime(2027, 1, 1, tzinfo=UTC))
    assert sum(1 for o in found if o.subject == "Until") == 5
    assert sum(1 for o in found if o.subject == "Forever") == 5  # Tuesdays of December 2026


def test_modified_and_deleted_occurrences(account):
    first = dt.date(2026, 12, 1)
    master = save_item(
        account,
        "Standup",
        EWSDateTime(2026, 12, 1, 9, tzinfo=UTC),
        recurrence=Recurrence(pattern=DailyPattern(interval=1), start=first, number=5),
    )
    second = master.occurrence(2)
    second.refresh()
    assert second.type == "Occurrence"
    second.subject = "Standup (late)"
    second.start += dt.timedelta(hours=3)
    second.end += dt.timedelta(hours=3)
    second.save(update_fields=["subject", "start", "end"])
    fourth = master.occurrence(4)
    fourth.refresh()
    fourth.delete()
    master.refresh()
    assert [o.original_start for o in master.modified_occurrences] == [EWSDateTime(2026, 12, 2, 9, tzinfo=UTC)]
    assert [o.start for o in master.deleted_occurrences] == [EWSDateTime(2026, 12, 4, 9, tzinfo=UTC)]
    found = _view(account, EWSDateTime(2026, 12, 1, tzinfo=UTC), EWSDateTime(2026, 12, 10, tzinfo=UTC))
    assert [(o.subject, o.start.hour, o.type) for o in found] == [
        ("Standup", 9, "Occurrence"),
        ("Standup (late)", 12, "Exception"),
        ("Standup", 9, "Occurrence"),
        ("Standup", 9, "Occurrence"),
    ]
    exception = found[1]
    assert exception.recurring_master().refresh().id == master.id


def test_occurrence_index_out_of_range(account):
    master = save_item(
        account,
        "Short",
        EWSDateTime(2026, 12, 1, 9, tzinfo=UTC),
        recurrence=Recurrence(pattern=DailyPattern(interval=1), start=dt.date(2026, 12, 1), number=2),
    )
    from exchangelib.errors import ErrorCalendarOccurrenceIndexIsOutOfRecurrenceRange

    with pytest.raises(ErrorCalendarOccurrenceIndexIsOutOfRecurrenceRange):
        master.occurrence(3).refresh()


def test_invalid_recurrence_is_refused(account):
    item = CalendarItem(
        account=account,
        folder=account.calendar,
        subject="Bad",
        start=EWSDateTime(2026, 12, 1, 9, tzinfo=UTC),
        end=EWSDateTime(2026, 12, 1, 10, tzinfo=UTC),
        recurrence=Recurrence(pattern=DailyPattern(interval=1), start=dt.date(2026, 12, 1), end=dt.date(2026, 11, 1)),
    )
    with pytest.raises(ErrorCalendarInvalidRecurrence):
        item.save(send_meeting_invitations="SendToNone")
    assert list(account.calendar.all()) == []


def test_all_day_items_are_whole_local_days(emulator, account):
    item = CalendarItem(
        account=account,
        folder=account.calendar,
        subject="Holiday",
        is_all_day=True,
        start=EWSDate(2026, 12, 24),
        end=EWSDate(2026, 12, 26),
    )
    item._start_timezone = item._end_timezone = NEW_YORK
    item.save(send_meeting_invitations="SendToNone")
    fetched = account.calendar.get(id=item.id)
    assert fetched.is_all_day is True
    assert (fetched.start, fetched.end) == (dt.date(2026, 12, 24), dt.date(2026, 12, 26))
    [stored] = emulator.exchange.mailbox("ann@example.com").calendar.items.values()
    assert stored.start.isoformat() == "2026-12-24T05:00:00+00:00"  # midnight in New York
    assert stored.end.isoformat() == "2026-12-27T05:00:00+00:00"  # exchangelib's end date is the last day


def test_all_day_times_are_rounded_to_local_midnight(emulator, account):
    item = CalendarItem(
        account=account,
        folder=account.calendar,
        subject="Offsite",
        is_all_day=True,
        start=EWSDateTime(2026, 12, 10, 13, tzinfo=BERLIN),
        end=EWSDateTime(2026, 12, 10, 15, tzinfo=BERLIN),
    )
    item.save(send_meeting_invitations="SendToNone")
    [stored] = emulator.exchange.mailbox("ann@example.com").calendar.items.values()
    assert (stored.start.isoformat(), stored.end.isoformat()) == (
        "2026-12-09T23:00:00+00:00",
        "2026-12-10T23:00:00+00:00",
    )


def test_time_zones_across_dst(account):
    first = dt.date(2027, 3, 22)
    save_item(
        account,
        "Weekly NY",
        EWSDateTime(2027, 3, 22, 9, tzinfo=BERLIN),
        recurrence=Recurrence(pattern=WeeklyPattern(interval=1, weekdays=[1]), start=first, number=3),
    )
    found = _view(account, EWSDateTime(2027, 3, 20, tzinfo=UTC), EWSDateTime(2027, 4, 10, tzinfo=UTC))
    # Berlin switches to summer time on 2027-03-28: 08:00Z, then 07:00Z.
    assert [o.start.isoformat() for o in found] == [
        "2027-03-22T08:00:00+00:00",
        "2027-03-29T07:00:00+00:00",
        "2027-04-05T07:00:00+00:00",
    ]


def test_exchange2007_style_meeting_time_zone(emulator_factory):
    emu = emulator_factory(version="Exchange2010")
    acc = ews_account(emu, "ann@example.com", build=(8, 1, 240, 6))  # an Exchange 2007 SP1 client
    item = save_item(acc, "Old client", EWSDateTime(2026, 12, 1, 9, tzinfo=BERLIN))
    fetched = acc.calendar.get(id=item.id)
    assert fetched.start == EWSDateTime(2026, 12, 1, 8, tzinfo=UTC)
    stored = emu.exchange.mailbox("ann@example.com").calendar.items
    assert [i.start_tz for i in stored.values()] == ["W. Europe Standard Time"]


def test_calendar_view_max_entries(account):
    for day in range(1, 6):
        save_item(account, f"d{day}", EWSDateTime(2026, 12, day, 9, tzinfo=UTC))
    view = account.calendar.view(
        start=EWSDateTime(2026, 12, 1, tzinfo=UTC), end=EWSDateTime(2026, 12, 31, tzinfo=UTC), max_items=3
    )
    assert [i.subject for i in view] == ["d1", "d2", "d3"]


def test_a_deleted_occurrence_is_reported_as_deleted(account):
    from exchangelib.errors import ErrorCalendarOccurrenceIsDeletedFromRecurrence

    master = save_item(
        account,
        "Daily",
        EWSDateTime(2026, 12, 1, 9, tzinfo=UTC),
        recurrence=Recurrence(pattern=DailyPattern(interval=1), start=dt.date(2026, 12, 1), number=3),
    )
    second = master.occurrence(2)
    second.refresh()
    second.delete()
    with pytest.raises(ErrorCalendarOccurrenceIsDeletedFromRecurrence):
        master.occurrence(2).refresh()

"""What a third-party EWS client's own test suite found in the emulator, one test per defect: each is a place
where a program developed against the emulator would pass and then fail on Exchange, or the other way round.
Driven through exchangelib where it can express the request, raw SOAP where not. (Restrictions and the
CalendarView boundary have their own module, test_emulator_restrictions.py.)
"""

from __future__ import annotations

import datetime as dt

import pytest
from exchangelib import DELEGATE, EWSDate, EWSDateTime, EWSTimeZone
from exchangelib.errors import (
    ErrorAccessDenied,
    ErrorInvalidSubscription,
    ErrorMissingInformationReferenceItemId,
)
from exchangelib.items import AcceptItem
from exchangelib.properties import ItemId
from exchangelib.recurrence import DailyPattern, Recurrence, WeeklyPattern
from lxml import etree

from .conftest import ews_account, save_item
from .test_emulator_access import M, T, post, soap

BERLIN = EWSTimeZone("Europe/Berlin")
NEW_YORK = EWSTimeZone("America/New_York")
UTC = EWSTimeZone("UTC")


def _raw_item(emu, item_id: str, fields: str) -> etree._Element:
    body = (
        "<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties>"
        f"{fields}</t:AdditionalProperties></m:ItemShape>"
        f'<m:ItemIds><t:ItemId Id="{item_id}"/></m:ItemIds></m:GetItem>'
    )
    response = post(emu, soap(body))
    assert response.status_code == 200, response.text
    item = etree.fromstring(response.content).find(f".//{{{T}}}CalendarItem")
    assert item is not None, response.text
    return item


# --- 1. a full save of a fetched item ----------------------------------------------------------------------------


def test_fetch_modify_save_of_every_kind_of_calendar_item(account):
    """exchangelib's ``item.save()`` without update_fields sends every writable field, UID included."""
    single = save_item(account, "Single", EWSDateTime(2026, 12, 1, 9, tzinfo=BERLIN))
    series = save_item(
        account,
        "Series",
        EWSDateTime(2026, 12, 7, 9, tzinfo=BERLIN),
        recurrence=Recurrence(pattern=DailyPattern(interval=1), start=dt.date(2026, 12, 7), number=4),
    )
    series_uid = account.calendar.get(id=series.id).uid
    for item_id, subject in ((single.id, "Single, renamed"), (series.id, "Series, renamed")):
        fetched = account.calendar.get(id=item_id)
        uid = fetched.uid
        fetched.subject = subject
        fetched.save()
        again = account.calendar.get(id=item_id)
        assert (again.subject, again.uid) == (subject, uid)
    # The series kept its four occurrences through the full save.
    view = list(
        account.calendar.view(start=EWSDateTime(2026, 12, 1, tzinfo=UTC), end=EWSDateTime(2027, 1, 1, tzinfo=UTC))
    )
    assert [o.subject for o in view].count("Series, renamed") == 4

    occurrence = [o for o in view if o.subject == "Series, renamed"][1]
    occurrence.location = "Room 7"
    occurrence.save()  # an occurrence: exchangelib leaves out UID and Recurrence
    exception = account.calendar.get(id=occurrence.id)
    assert (exception.type, exception.location) == ("Exception", "Room 7")
    exception.location = "Room 8"
    exception.save()  # an exception: UID (the series') and an empty Recurrence are sent back
    assert account.calendar.get(id=occurrence.id).location == "Room 8"
    assert account.calendar.get(id=series.id).uid == series_uid


def test_uid_can_be_changed_on_a_series_but_not_on_one_occurrence(emulator, account):
    item = save_item(account, "Renumbered", EWSDateTime(2026, 12, 2, 9, tzinfo=UTC))
    item.uid = "calsync-test-uid-1"
    item.save(update_fields=["uid"])
    assert account.calendar.get(id=item.id).uid == "calsync-test-uid-1"

    series = save_item(
        account,
        "Series",
        EWSDateTime(2026, 12, 7, 9, tzinfo=UTC),
        recurrence=Recurrence(pattern=DailyPattern(interval=1), start=dt.date(2026, 12, 7), number=3),
    )
    fetched = account.calendar.get(id=series.id)
    occurrence_id, series_uid = fetched.first_occurrence.id, fetched.uid
    body = (
        '<m:UpdateItem ConflictResolution="AlwaysOverwrite" SendMeetingInvitationsOrCancellations="SendToNone">'
        f'<m:ItemChanges><t:ItemChange><t:ItemId Id="{occurrence_id}"/><t:Updates><t:SetItemField>'
        '<t:FieldURI FieldURI="calendar:UID"/><t:CalendarItem><t:UID>another-uid</t:UID></t:CalendarItem>'
        "</t:SetItemField></t:Updates></t:ItemChange></m:ItemChanges></m:UpdateItem>"
    )
    answer = etree.fromstring(post(emulator, soap(body)).content)
    assert answer.findtext(f".//{{{M}}}ResponseCode") == "ErrorInvalidPropertySet"
    assert account.calendar.get(id=series.id).uid == series_uid


# --- 2. recurrence dates carry a zone offset -------------------------------------------------------------------


def test_recurrence_dates_are_written_with_the_series_zone_offset(emulator, account):
    winter = save_item(
        account,
        "Berlin winter",
        EWSDateTime(2026, 12, 1, 9, tzinfo=BERLIN),
        recurrence=Recurrence(pattern=DailyPattern(interval=1), start=dt.date(2026, 12, 1), end=dt.date(2026, 12, 5)),
    )
    summer = save_item(
        account,
        "New York summer",
        EWSDateTime(2027, 7, 5, 9, tzinfo=NEW_YORK),
        recurrence=Recurrence(pattern=WeeklyPattern(interval=1, weekdays=[1]), start=dt.date(2027, 7, 5), number=3),
    )
    utc = save_item(
        account,
        "UTC",
        EWSDateTime(2026, 12, 1, 9, tzinfo=UTC),
        recurrence=Recurrence(pattern=DailyPattern(interval=1), start=dt.date(2026, 12, 1), number=2),
    )
    fields = '<t:FieldURI FieldURI="calendar:Recurrence"/>'
    rng = f"{{{T}}}Recurrence/{{{T}}}EndDateRecurrence"
    assert _raw_item(emulator, winter.id, fields).findtext(f"{rng}/{{{T}}}StartDate") == "2026-12-01+01:00"
    assert _raw_item(emulator, winter.id, fields).findtext(f"{rng}/{{{T}}}EndDate") == "2026-12-05+01:00"
    numbered = f"{{{T}}}Recurrence/{{{T}}}NumberedRecurrence/{{{T}}}StartDate"
    assert _raw_item(emulator, summer.id, fields).findtext(numbered) == "2027-07-05-04:00"
    assert _raw_item(emulator, utc.id, fields).findtext(numbered) == "2026-12-01Z"

    # A client reads a date (not midnight UTC), and saving the series back keeps it as it was.
    fetched = account.calendar.get(id=winter.id)
    assert type(fetched.recurrence.boundary.start) is EWSDate
    assert fetched.recurrence.boundary.start == dt.date(2026, 12, 1)
    assert fetched.recurrence.boundary.end == dt.date(2026, 12, 5)
    fetched.subject = "Berlin winter, saved back"
    fetched.save()
    again = account.calendar.get(id=winter.id)
    assert (again.recurrence.boundary.start, again.recurrence.boundary.end) == (
        dt.date(2026, 12, 1),
        dt.date(2026, 12, 5),
    )
    assert again.last_occurrence.start == EWSDateTime(2026, 12, 5, 9, tzinfo=BERLIN).astimezone(UTC)


# --- 4 and 5. properties kept as set, subjects truncated --------------------------------------------------------


def test_meeting_properties_are_kept_as_set(account):
    item = save_item(
        account,
        "Kept",
        EWSDateTime(2026, 12, 3, 9, tzinfo=UTC),
        is_response_requested=False,
        allow_new_time_proposal=False,
        conference_type=2,
    )
    fetched = account.calendar.get(id=item.id)
    assert (fetched.is_response_requested, fetched.allow_new_time_proposal, fetched.conference_type) == (
        False,
        False,
        2,
    )
    fetched.is_response_requested = True
    fetched.conference_type = 1
    fetched.save(update_fields=["is_response_requested", "conference_type"])
    again = account.calendar.get(id=item.id)
    assert (again.is_response_requested, again.allow_new_time_proposal, again.conference_type) == (True, False, 1)


def test_culture_is_kept_as_set(emulator, account):
    item = save_item(account, "Besprechung", EWSDateTime(2026, 12, 3, 11, tzinfo=UTC))
    assert account.calendar.get(id=item.id).culture == "en-US"  # what Exchange gives an item nobody set it on
    body = (
        '<m:UpdateItem ConflictResolution="AlwaysOverwrite" SendMeetingInvitationsOrCancellations="SendToNone">'
        f'<m:ItemChanges><t:ItemChange><t:ItemId Id="{item.id}"/><t:Updates><t:SetItemField>'
        '<t:FieldURI FieldURI="item:Culture"/><t:CalendarItem><t:Culture>de-DE</t:Culture></t:CalendarItem>'
        "</t:SetItemField></t:Updates></t:ItemChange></m:ItemChanges></m:UpdateItem>"
    )
    assert etree.fromstring(post(emulator, soap(body)).content).findtext(f".//{{{M}}}ResponseCode") == "NoError"
    assert account.calendar.get(id=item.id).culture == "de-DE"
    bad = body.replace("de-DE", "not a culture!")
    assert etree.fromstring(post(emulator, soap(bad)).content).findtext(f".//{{{M}}}ResponseCode") == (
        "ErrorSchemaValidation"
    )
    assert account.calendar.get(id=item.id).culture == "de-DE"


def test_a_subject_longer_than_255_characters_is_truncated(emulator, account):
    long_subject = "Quarterly planning " + "x" * 300  # exchangelib refuses this itself: send it raw
    body = (
        '<m:CreateItem SendMeetingInvitations="SendToNone"><m:Items><t:CalendarItem>'
        f"<t:Subject>{long_subject}</t:Subject><t:Start>2026-12-03T09:00:00Z</t:Start>"
        "<t:End>2026-12-03T10:00:00Z</t:End></t:CalendarItem></m:Items></m:CreateItem>"
    )
    created = etree.fromstring(post(emulator, soap(body)).content).find(f".//{{{T}}}ItemId")
    assert created is not None
    assert account.calendar.get(id=created.get("Id")).subject == long_subject[:255]
    ann = emulator.outlook("ann@example.com")
    made = ann.create({"subject": "y" * 400, "start": "2026-12-04T09:00:00Z"})
    assert account.calendar.get(id=made.item_id).subject == "y" * 255


# --- 6 and 7. response objects and items of other mailboxes ----------------------------------------------------


def test_a_response_without_reference_item_id_names_what_is_missing(account):
    with pytest.raises(ErrorMissingInformationReferenceItemId):
        AcceptItem(account=account).send()


def test_an_account_with_rights_reaches_another_mailboxs_items_by_id(emulator):
    ann = ews_account(emulator, "ann@example.com")
    item = save_item(ann, "Ann's", EWSDateTime(2026, 12, 3, 9, tzinfo=UTC))
    # The service account, without impersonation, acting as a delegate on Ann's mailbox.
    delegate = ews_account(emulator, "ann@example.com")
    delegate.access_type = DELEGATE
    assert delegate.calendar.get(id=item.id).subject == "Ann's"
    fetched = delegate.calendar.get(id=item.id)
    fetched.subject = "Ann's, changed by a delegate"
    fetched.save(update_fields=["subject"])
    assert ann.calendar.get(id=item.id).subject == "Ann's, changed by a delegate"

    # An account without rights on Ann's mailbox gets access denied, not her item.
    emulator.add_account("bob@example.com", "bob-pw", impersonation=False)
    bob = ews_account(emulator, "ann@example.com", user="bob@example.com", password="bob-pw")
    bob.access_type = DELEGATE
    with pytest.raises(ErrorAccessDenied):
        bob.calendar.get(id=item.id)


# --- 8 to 11. sync and notifications -------------------------------------------------------------------------


def test_sync_folder_items_skips_ignore_ids_it_never_issued(account):
    save_item(account, "Synced", EWSDateTime(2026, 12, 3, 9, tzinfo=UTC))
    changes = list(account.calendar.sync_items(ignore=[ItemId(id="AAA=")]))
    assert [(kind, item.subject) for kind, item in changes] == [("create", "Synced")]
    assert account.calendar.item_sync_state  # a real state, not the empty one a failure would leave


def test_unsubscribe_refuses_a_push_subscription(emulator, account):
    sid, _ = account.calendar.subscribe_to_push("http://127.0.0.1:9/listener", status_frequency=30)
    with pytest.raises(ErrorInvalidSubscription):
        account.calendar.unsubscribe(sid)
    assert emulator.exchange.subscriptions[sid].state == "active"  # only an Unsubscribe answer ends it


def _streaming_error(emu, ids: list[str]) -> tuple[str | None, list[str]]:
    listed = "".join(f"<t:SubscriptionId>{i}</t:SubscriptionId>" for i in ids)
    body = (
        f"<m:GetStreamingEvents><m:SubscriptionIds>{listed}</m:SubscriptionIds>"
        "<m:ConnectionTimeout>1</m:ConnectionTimeout></m:GetStreamingEvents>"
    )
    root = etree.fromstring(post(emu, soap(body)).content)
    named = [e.text or "" for e in root.iter(f"{{{T}}}SubscriptionId")]
    return root.findtext(f".//{{{M}}}ResponseCode"), named


def test_get_streaming_events_names_malformed_ids(emulator, account):
    with pytest.raises(ErrorInvalidSubscription):
        list(account.calendar.get_streaming_events("AAA-", connection_timeout=1, max_notifications_returned=1))
    good = account.calendar.subscribe_to_streaming()
    with pytest.raises(ErrorInvalidSubscription):
        list(account.calendar.get_streaming_events(("AAA-", good), connection_timeout=1, max_notifications_returned=1))
    assert _streaming_error(emulator, ["AAA-"]) == ("ErrorInvalidSubscription", ["AAA-"])
    assert _streaming_error(emulator, ["AAA-", good]) == ("ErrorInvalidSubscription", ["AAA-"])
    pull, _ = account.calendar.subscribe_to_pull()
    assert _streaming_error(emulator, [good, pull]) == ("ErrorInvalidSubscription", [pull])
    account.calendar.unsubscribe(good)
    assert _streaming_error(emulator, [good]) == ("ErrorSubscriptionNotFound", [good])


def test_server_affinity_is_answered_with_a_back_end_cookie(emulator, account):
    account.affinity_cookie = None
    sid = account.calendar.subscribe_to_streaming()
    cookie = account.affinity_cookie
    assert cookie and cookie.startswith("EMU-MBX01.")
    account.calendar.unsubscribe(sid)  # sends the cookie back; the mailbox's server is the same one
    assert account.affinity_cookie == cookie
    plain = post(
        emulator,
        soap(
            "<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape>"
            '<m:FolderIds><t:DistinguishedFolderId Id="calendar"/></m:FolderIds></m:GetFolder>'
        ),
    )
    assert "x-backendoverridecookie" not in plain.headers.get("set-cookie", "").lower()


# --- 13 and 14. folders and names ----------------------------------------------------------------------------


def test_folder_classes_of_the_roots_and_sync_issue_folders(account):
    classes = {f.name: f.folder_class for f in account.root.walk()}
    assert classes["Top of Information Store"] is None
    assert {classes[n] for n in ("Conflicts", "Local Failures", "Server Failures")} == {"IPF"}
    assert classes["Sync Issues"] == "IPF.Note"
    assert classes["Calendar"] == "IPF.Appointment"


def test_resolve_names_returns_full_contact_data_when_asked(emulator, account):
    emulator.add_mailbox("dana.scully@example.com", "Dana Scully")
    [(mailbox, contact)] = account.protocol.resolve_names(["dana.scully@example.com"], return_full_contact_data=True)
    assert mailbox.email_address == "dana.scully@example.com"
    assert (contact.display_name, contact.given_name, contact.surname) == ("Dana Scully", "Dana", "Scully")
    assert [e.email for e in contact.email_addresses] == ["SMTP:dana.scully@example.com"]
    [plain] = account.protocol.resolve_names(["dana.scully@example.com"])
    assert plain.email_address == "dana.scully@example.com"  # without the flag, a mailbox only

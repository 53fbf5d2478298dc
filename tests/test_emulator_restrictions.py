"""FindItem restrictions and sort orders, FindFolder restrictions and the edges of a CalendarView, through
exchangelib, and through raw SOAP where exchangelib cannot express the request."""

from __future__ import annotations

import datetime as dt

import pytest
from exchangelib import EWSDateTime, EWSTimeZone, Q
from exchangelib.errors import ErrorFolderNotFound, ErrorInvalidOperation, ErrorUnsupportedPathForQuery
from exchangelib.folders import FolderCollection, FolderQuerySet
from exchangelib.recurrence import DailyPattern, Recurrence
from lxml import etree

from .conftest import save_item
from .test_emulator_access import M, T, post, soap

UTC = EWSTimeZone("UTC")


def _day(day: int, hour: int = 0, minute: int = 0) -> EWSDateTime:
    return EWSDateTime(2026, 12, day, hour, minute, tzinfo=UTC)


def _subjects(query) -> list[str]:
    return [i.subject for i in query]


# --- CalendarView edges ------------------------------------------------------------------------------


def test_calendar_view_includes_items_ending_at_its_start(emulator, account):
    save_item(account, "earlier", _day(2, 7), 60)  # ends 08:00, before the view
    save_item(account, "ends at view start", _day(2, 8), 60)
    save_item(account, "zero length at view start", _day(2, 9), 0)
    save_item(account, "inside", _day(2, 9, 30), 15)
    save_item(account, "starts at view end", _day(2, 10), 60)
    save_item(
        account,
        "series",
        _day(1, 8),
        60,
        recurrence=Recurrence(pattern=DailyPattern(interval=1), start=dt.date(2026, 12, 1), number=3),
    )
    start, end = _day(2, 9), _day(2, 10)

    found = account.calendar.view(start=start, end=end)

    assert sorted(_subjects(found)) == ["ends at view start", "inside", "series", "zero length at view start"]
    [occurrence] = [i for i in found if i.subject == "series"]
    assert (occurrence.start, occurrence.end) == (_day(2, 8), _day(2, 9))
    # The control API's ground truth keeps its [start, end) overlap.
    truth = emulator.truth(
        "ann@example.com", dt.datetime(2026, 12, 2, 9, tzinfo=dt.UTC), dt.datetime(2026, 12, 2, 10, tzinfo=dt.UTC)
    )
    assert sorted(o["subject"] for o in truth) == ["inside"]


# --- FindFolder ---------------------------------------------------------------------------------------


def test_folder_navigation_finds_exactly_the_named_child(account):
    calendar = account.root // "Top of Information Store" // "Calendar"

    assert calendar.id == account.calendar.id
    with pytest.raises(ErrorFolderNotFound):
        account.root // "Top of Information Store" // "No such folder"


def test_folder_queries_filter_on_folder_properties(account):
    save_item(account, "makes the calendar non-empty", _day(1, 9))
    below_top = FolderQuerySet(FolderCollection(account=account, folders=[account.msg_folder_root])).depth("Deep")

    assert [f.name for f in below_top.filter(folder_class="IPF.Appointment")] == ["Calendar"]
    assert [f.name for f in below_top.filter(name__istartswith="sync")] == ["Sync Issues"]
    assert [f.name for f in below_top.filter(child_folder_count__gt=0)] == ["Sync Issues"]
    assert [f.name for f in below_top.filter(total_count__gte=1)] == ["Calendar"]
    assert [f.name for f in below_top.filter(name="conflicts")] == ["Conflicts"]  # equality ignores case


# --- FindItem restrictions ----------------------------------------------------------------------------


@pytest.fixture
def week(account):
    """A week of items with different subjects, locations, categories and sensitivities."""
    save_item(account, "Standup", _day(1, 9), location="Room 1", categories=["Team"])
    save_item(account, "Planning session", _day(2, 10), categories=["Team", "Blue"], sensitivity="Private")
    save_item(account, "Retro", _day(3, 11), is_all_day=False, legacy_free_busy_status="Free")
    save_item(account, "standup review", _day(4, 9), location="Room 2")
    save_item(
        account,
        "Daily sync",
        _day(1, 8),
        15,
        recurrence=Recurrence(pattern=DailyPattern(interval=1), start=dt.date(2026, 12, 1), number=5),
    )
    return account


def test_subject_equality_ignores_case_and_matches_whole_subjects(week):
    assert _subjects(week.calendar.filter(subject="standup")) == ["Standup"]
    assert _subjects(week.calendar.filter(subject__iexact="RETRO")) == ["Retro"]
    assert _subjects(week.calendar.filter(subject__in=["Retro", "Nothing"])) == ["Retro"]


def test_contains_and_startswith(week):
    assert _subjects(week.calendar.filter(subject__contains="view")) == ["standup review"]
    assert _subjects(week.calendar.filter(subject__contains="Stand")) == ["Standup"]  # Exact comparison
    assert _subjects(week.calendar.filter(subject__icontains="stand")) == ["Standup", "standup review"]
    assert _subjects(week.calendar.filter(subject__startswith="Plan")) == ["Planning session"]
    assert _subjects(week.calendar.filter(subject__startswith="plan")) == []
    assert _subjects(week.calendar.filter(subject__istartswith="plan")) == ["Planning session"]


def test_start_and_end_ranges(week):
    # The paged view lists series masters, not occurrences: "Daily sync" is there once, at its first start.
    between = week.calendar.filter(start__gte=_day(2), end__lt=_day(4))
    assert _subjects(between) == ["Planning session", "Retro"]
    assert _subjects(week.calendar.filter(start__lt=_day(1, 9))) == ["Daily sync"]
    assert _subjects(week.calendar.filter(start__range=(_day(1, 9), _day(2, 10)))) == ["Standup", "Planning session"]


def test_or_and_exclude(week):
    assert _subjects(week.calendar.filter(Q(subject="Retro") | Q(location="Room 1"))) == ["Standup", "Retro"]
    assert _subjects(week.calendar.exclude(subject__icontains="stand")) == ["Daily sync", "Planning session", "Retro"]
    assert _subjects(week.calendar.filter(~Q(location="Room 1") & Q(location__exists=True))) == ["standup review"]


def test_categories_match_any_value_without_regard_to_case(week):
    assert _subjects(week.calendar.filter(categories__contains=["team"])) == ["Standup", "Planning session"]
    assert _subjects(week.calendar.filter(categories__contains=["Team", "Blue"])) == ["Planning session"]
    assert _subjects(week.calendar.filter(categories__in=["Blue", "Red"])) == ["Planning session"]


def test_exists_and_choice_and_boolean_fields(week):
    assert _subjects(week.calendar.filter(location__exists=True)) == ["Standup", "standup review"]
    assert _subjects(week.calendar.filter(location__exists=False)) == ["Daily sync", "Planning session", "Retro"]
    assert _subjects(week.calendar.filter(sensitivity="Private")) == ["Planning session"]
    assert _subjects(week.calendar.filter(legacy_free_busy_status="Free")) == ["Retro"]
    assert len(list(week.calendar.filter(is_all_day=False))) == 5


def test_order_by(week):
    assert _subjects(week.calendar.all().order_by("-start")) == [
        "standup review",
        "Retro",
        "Planning session",
        "Standup",
        "Daily sync",
    ]
    assert _subjects(week.calendar.filter(subject__icontains="s").order_by("subject")) == [
        "Daily sync",
        "Planning session",
        "Standup",
        "standup review",
    ]


def test_paging_counting_and_deleting_what_a_restriction_finds(week):
    query = week.calendar.filter(subject__icontains="s").order_by("start")
    query.page_size = 1  # one FindItem per item: offsets count within the filtered set
    assert _subjects(query) == ["Daily sync", "Standup", "Planning session", "standup review"]
    assert week.calendar.filter(subject__icontains="stand").count() == 2

    week.calendar.filter(subject__icontains="stand").delete()

    assert _subjects(week.calendar.all().order_by("start")) == ["Daily sync", "Planning session", "Retro"]


def test_properties_exchange_cannot_query_are_refused(week):
    with pytest.raises(ErrorUnsupportedPathForQuery, match="item:Subject"):
        list(week.calendar.filter(is_cancelled=False))
    with pytest.raises(ErrorUnsupportedPathForQuery):
        list(week.calendar.filter(type="Single"))


def test_a_calendar_view_with_a_restriction_is_refused(week):
    view = week.calendar.view(start=_day(1), end=_day(8)).filter(subject="Standup")
    with pytest.raises(ErrorInvalidOperation, match="Restrictions and sort order may not be specified"):
        list(view)


# --- raw SOAP: what exchangelib does not send ---------------------------------------------------------


def _find_items(restriction: str, *, view: str = '<m:IndexedPageItemView BasePoint="Beginning" Offset="0"/>') -> str:
    return (
        '<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>Default</t:BaseShape></m:ItemShape>'
        f'{view}{restriction}<m:ParentFolderIds><t:DistinguishedFolderId Id="calendar"/></m:ParentFolderIds>'
        "</m:FindItem>"
    )


def _answer(emulator, body: str) -> etree._Element:
    response = post(emulator, soap(body))
    assert response.status_code == 200, response.text
    [message] = etree.fromstring(response.content).iterfind(f".//{{{M}}}ResponseMessages/*")
    return message


def _contains(value: str, mode: str, comparison: str = "Exact") -> str:
    return (
        f'<m:Restriction><t:Contains ContainmentMode="{mode}" ContainmentComparison="{comparison}">'
        f'<t:FieldURI FieldURI="item:Subject"/><t:Constant Value="{value}"/></t:Contains></m:Restriction>'
    )


@pytest.mark.parametrize(
    ("value", "mode", "comparison", "expected"),
    [
        ("sess", "PrefixOnWords", "Exact", ["Planning session"]),
        ("lan", "PrefixOnWords", "Exact", []),
        ("Planning", "ExactPhrase", "Exact", ["Planning session"]),
        ("Plan", "ExactPhrase", "Exact", []),
        ("cafe", "Substring", "IgnoreCaseAndNonSpacingCharacters", ["Café talk"]),
        ("Cafe", "Substring", "IgnoreCase", []),
        ("PLANNING SESSION", "FullString", "IgnoreCase", ["Planning session"]),
    ],
)
def test_containment_modes_and_comparisons(emulator, account, value, mode, comparison, expected):
    save_item(account, "Planning session", _day(2, 10))
    save_item(account, "Café talk", _day(3, 10))

    message = _answer(emulator, _find_items(_contains(value, mode, comparison)))

    assert message.findtext(f"{{{M}}}ResponseCode") == "NoError"
    assert [s.text for s in message.iterfind(f".//{{{T}}}Subject")] == expected


def _is_equal(uri: str, value: str) -> str:
    return (
        f'<m:Restriction><t:IsEqualTo><t:FieldURI FieldURI="{uri}"/>'
        f'<t:FieldURIOrConstant><t:Constant Value="{value}"/></t:FieldURIOrConstant></t:IsEqualTo></m:Restriction>'
    )


CALENDAR_VIEW = '<m:CalendarView StartDate="2026-12-01T00:00:00Z" EndDate="2026-12-31T00:00:00Z"/>'
SORT_BY_START = (
    '<m:SortOrder><t:FieldOrder Order="Descending"><t:FieldURI FieldURI="calendar:Start"/></t:FieldOrder></m:SortOrder>'
)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (_find_items(_is_equal("calendar:UID", "abc")), "ErrorUnsupportedPathForQuery"),
        (_find_items(_is_equal("calendar:Start", "tomorrow")), "ErrorInvalidValueForProperty"),
        (_find_items(_is_equal("item:Sensitivity", "Secret")), "ErrorInvalidValueForProperty"),
        (
            _find_items(_contains("2026", "Substring").replace("item:Subject", "calendar:Start")),
            "ErrorContainsFilterWrongType",
        ),
        (
            _find_items(
                '<m:Restriction><t:Excludes><t:FieldURI FieldURI="item:Importance"/><t:Bitmask Value="1"/>'
                "</t:Excludes></m:Restriction>"
            ),
            "ErrorUnsupportedQueryFilter",
        ),
        (
            _find_items(
                '<m:Restriction><t:Exists><t:ExtendedFieldURI PropertyTag="0x0037" PropertyType="String"/>'
                "</t:Exists></m:Restriction>"
            ),
            "ErrorUnsupportedQueryFilter",
        ),
        (
            _find_items(
                '<m:Restriction><t:IsEqualTo><t:FieldURI FieldURI="calendar:Start"/><t:FieldURIOrConstant>'
                '<t:FieldURI FieldURI="calendar:End"/></t:FieldURIOrConstant></t:IsEqualTo></m:Restriction>'
            ),
            "ErrorUnsupportedQueryFilter",
        ),
        (
            _find_items("").replace(
                "</m:ParentFolderIds>", "</m:ParentFolderIds><m:QueryString>Standup</m:QueryString>"
            ),
            "ErrorUnsupportedQueryFilter",
        ),
        (
            _find_items(
                '<m:SortOrder><t:FieldOrder Order="Ascending"><t:FieldURI FieldURI="item:Categories"/>'
                "</t:FieldOrder></m:SortOrder>"
            ),
            "ErrorUnsupportedPathForSortGroup",
        ),
        (_find_items(SORT_BY_START, view=CALENDAR_VIEW), "ErrorInvalidOperation"),
        (_find_items(_is_equal("item:Subject", "Standup"), view=CALENDAR_VIEW), "ErrorInvalidOperation"),
        (
            '<m:FindFolder Traversal="Deep"><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape>'
            f'{_is_equal("item:Subject", "Standup")}<m:ParentFolderIds><t:DistinguishedFolderId Id="root"/>'
            "</m:ParentFolderIds></m:FindFolder>",
            "ErrorUnsupportedPathForQuery",
        ),
    ],
    ids=[
        "uid",
        "unreadable-date",
        "unknown-choice",
        "contains-on-date",
        "excludes",
        "extended-property",
        "two-properties",
        "query-string",
        "sort-by-categories",
        "calendar-view-sorted",
        "calendar-view-restricted",
        "find-folder-item-property",
    ],
)
def test_unsupported_queries_get_exchanges_error(emulator, body, code):
    message = _answer(emulator, body)

    assert message.get("ResponseClass") == "Error"
    assert message.findtext(f"{{{M}}}ResponseCode") == code
    assert message.findtext(f"{{{M}}}MessageText")

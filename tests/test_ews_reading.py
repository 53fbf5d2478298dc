"""calsync's own reading of what decides an EWS item's place: every form of date-time and date the schema allows
and real servers send, time zones by id or by definition, recurrence, and Unreadable for everything else."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from lxml import etree

from calsync.calendar.expand import zone_for
from calsync.sources.base import Unreadable
from calsync.sources.ews.reading import read_date, read_datetime, read_item, read_recurrence

T = "http://schemas.microsoft.com/exchange/services/2006/types"
BERLIN = zone_for("W. Europe Standard Time")


def xml(body: str) -> etree._Element:
    return etree.fromstring(f'<t:CalendarItem xmlns:t="{T}">{body}</t:CalendarItem>')


def item(extra: str = "", *, start: str = "2026-12-01T08:00:00Z", end: str = "2026-12-01T09:00:00Z") -> str:
    return f"<t:Start>{start}</t:Start><t:End>{end}</t:End>{extra}"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-12-04T15:50:47Z", datetime(2026, 12, 4, 15, 50, 47, tzinfo=UTC)),
        ("2026-12-12T00:00:00.000000Z", datetime(2026, 12, 12, tzinfo=UTC)),
        ("2026-12-04T15:50:47.689067700Z", datetime(2026, 12, 4, 15, 50, 47, 689067, tzinfo=UTC)),
        ("2026-12-04T15:50:47.6Z", datetime(2026, 12, 4, 15, 50, 47, 600000, tzinfo=UTC)),
        ("9999-12-30T23:59:59.9999999Z", datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)),
        ("2026-12-04T16:50:47+01:00", datetime(2026, 12, 4, 15, 50, 47, tzinfo=UTC)),
        ("2026-12-04T10:50:47.123-05:00", datetime(2026, 12, 4, 15, 50, 47, 123000, tzinfo=UTC)),
        ("2026-12-04T15:50:47", datetime(2026, 12, 4, 15, 50, 47, tzinfo=UTC)),  # no zone: UTC
        ("2026-12-04T24:00:00Z", datetime(2026, 12, 5, tzinfo=UTC)),  # the end of the day
        (" 2026-12-04T15:50:47Z\n", datetime(2026, 12, 4, 15, 50, 47, tzinfo=UTC)),
    ],
)
def test_every_form_of_xs_datetime(raw, expected):
    assert read_datetime(raw, "Start") == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("2026-12-04", "not an xs:dateTime"),
        ("04.12.2026 15:50", "not an xs:dateTime"),
        ("2026-13-04T15:50:47Z", "not a valid date-time"),
        ("2026-12-04T15:50:47+25:00", "not a valid date-time"),
        ("2026-12-04T24:30:00Z", "not a valid date-time"),
    ],
)
def test_what_is_not_a_datetime_is_unreadable_with_its_raw_text(raw, reason):
    with pytest.raises(Unreadable) as caught:
        read_datetime(raw, "Recurrence/EndDateRecurrence/EndDate")
    assert caught.value.field == "Recurrence/EndDateRecurrence/EndDate"
    assert caught.value.raw == raw
    assert caught.value.reason.startswith(reason)


@pytest.mark.parametrize(
    ("raw", "zone", "expected"),
    [
        ("2026-12-01", None, date(2026, 12, 1)),
        ("2026-12-01Z", None, date(2026, 12, 1)),
        ("2026-12-01+01:00", None, date(2026, 12, 1)),
        ("2026-12-01-08:00", None, date(2026, 12, 1)),  # the offset says where, not which day
        ("2026-12-01T00:00:00Z", BERLIN, date(2026, 12, 1)),  # midnight as written: that date
        ("2026-12-01T00:00:00.000000Z", BERLIN, date(2026, 12, 1)),
        ("2026-12-01T00:00:00+01:00", None, date(2026, 12, 1)),
        ("2026-11-30T23:00:00Z", BERLIN, date(2026, 12, 1)),  # local midnight given in UTC
        ("2026-12-01T05:00:00Z", zone_for("Pacific Standard Time"), date(2026, 11, 30)),
    ],
)
def test_every_form_of_a_date(raw, zone, expected):
    assert read_date(raw, "StartDate", zone) == expected


@pytest.mark.parametrize("raw", [None, "", "2026-02-30", "01/12/2026", "2026-12-01+15:00"])
def test_what_is_not_a_date_is_unreadable(raw):
    with pytest.raises(Unreadable):
        read_date(raw, "StartDate")


def test_an_item_in_a_known_zone():
    times = read_item(
        xml(
            item(
                "<t:LastModifiedTime>2026-11-30T10:00:00.1234567Z</t:LastModifiedTime><t:IsAllDayEvent>false"
                '</t:IsAllDayEvent><t:StartTimeZone Id="W. Europe Standard Time"/>'
                '<t:EndTimeZone Id="Tokyo Standard Time"/>',
                start="2026-12-01T08:00:00.0000000Z",
                end="2026-12-01T09:00:00.000000Z",
            )
        )
    )
    assert (times.start, times.end) == (datetime(2026, 12, 1, 8, tzinfo=UTC), datetime(2026, 12, 1, 9, tzinfo=UTC))
    assert (times.start_tz, times.end_tz, times.all_day) == ("W. Europe Standard Time", "Tokyo Standard Time", False)
    assert times.last_modified == datetime(2026, 11, 30, 10, 0, 0, 123456, tzinfo=UTC)
    assert times.recurrence is None


def test_missing_or_broken_start_end_and_all_day_are_unreadable():
    for body, field in (
        ("<t:End>2026-12-01T09:00:00Z</t:End>", "Start"),
        ("<t:Start>2026-12-01T09:00:00Z</t:Start><t:End>soon</t:End>", "End"),
        (item("<t:IsAllDayEvent>maybe</t:IsAllDayEvent>"), "IsAllDayEvent"),
        (item(end="2026-12-01T07:00:00Z"), "End"),
    ):
        with pytest.raises(Unreadable) as caught:
            read_item(xml(body))
        assert caught.value.field == field


def test_an_unreadable_last_modified_time_is_kept_raw_not_silently_dropped():
    times = read_item(xml(item("<t:LastModifiedTime>yesterday</t:LastModifiedTime>")))
    assert (times.last_modified, times.last_modified_raw) == (None, "yesterday")


SERIES = """
<t:Recurrence>
  <t:WeeklyRecurrence><t:Interval>2</t:Interval><t:DaysOfWeek>Monday Thursday</t:DaysOfWeek>
    <t:FirstDayOfWeek>Monday</t:FirstDayOfWeek></t:WeeklyRecurrence>
  <t:EndDateRecurrence><t:StartDate>{start}</t:StartDate><t:EndDate>{end}</t:EndDate></t:EndDateRecurrence>
</t:Recurrence>
<t:FirstOccurrence><t:ItemId Id="o1"/><t:Start>2026-11-30T08:00:00.000Z</t:Start><t:End>2026-11-30T09:00:00Z</t:End>
  <t:OriginalStart>2026-11-30T08:00:00Z</t:OriginalStart></t:FirstOccurrence>
<t:ModifiedOccurrences><t:Occurrence><t:ItemId Id="o3"/><t:Start>2026-12-03T13:00:00.5Z</t:Start>
  <t:End>2026-12-03T14:00:00Z</t:End><t:OriginalStart>2026-12-03T08:00:00.0000000Z</t:OriginalStart></t:Occurrence>
</t:ModifiedOccurrences>
<t:DeletedOccurrences><t:DeletedOccurrence><t:Start>2026-12-14T08:00:00.000000Z</t:Start></t:DeletedOccurrence>
</t:DeletedOccurrences>
<t:StartTimeZone Id="W. Europe Standard Time"/><t:EndTimeZone Id="W. Europe Standard Time"/>
"""


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2026-11-30", "2027-03-29"),
        ("2026-11-30+01:00", "2027-03-29+02:00"),
        ("2026-11-30Z", "2027-03-29Z"),
        ("2026-11-30T00:00:00Z", "2027-03-29T00:00:00.000000Z"),
        ("2026-11-29T23:00:00Z", "2027-03-28T22:00:00Z"),  # local midnights in UTC
    ],
)
def test_a_series_in_every_form_of_its_dates(start, end):
    times = read_item(xml(item(SERIES.format(start=start, end=end), start="2026-11-30T08:00:00Z")))
    rec = times.recurrence
    assert rec is not None
    assert (rec.pattern, rec.interval, rec.days_of_week, rec.first_day_of_week) == (
        "Weekly",
        2,
        ("Monday", "Thursday"),
        "Monday",
    )
    assert (rec.range, rec.start_date, rec.end_date) == ("EndDate", date(2026, 11, 30), date(2027, 3, 29))
    assert times.first is not None and times.first.item_id == "o1"
    [moved] = times.modified
    assert (moved.item_id, moved.original_start) == ("o3", datetime(2026, 12, 3, 8, tzinfo=UTC))
    assert moved.start == datetime(2026, 12, 3, 13, 0, 0, 500000, tzinfo=UTC)
    assert times.deleted == (datetime(2026, 12, 14, 8, tzinfo=UTC),)


@pytest.mark.parametrize(
    ("pattern", "field"),
    [
        ("<t:DailyRecurrence><t:Interval>0</t:Interval></t:DailyRecurrence>", "Recurrence/DailyRecurrence/Interval"),
        (
            "<t:WeeklyRecurrence><t:Interval>1</t:Interval><t:DaysOfWeek>Mon</t:DaysOfWeek></t:WeeklyRecurrence>",
            "Recurrence/WeeklyRecurrence/DaysOfWeek",
        ),
        (
            "<t:RelativeMonthlyRecurrence><t:Interval>1</t:Interval><t:DaysOfWeek>Friday</t:DaysOfWeek>"
            "<t:DayOfWeekIndex>Fifth</t:DayOfWeekIndex></t:RelativeMonthlyRecurrence>",
            "Recurrence/RelativeMonthlyRecurrence/DayOfWeekIndex",
        ),
        (
            "<t:AbsoluteYearlyRecurrence><t:DayOfMonth>31</t:DayOfMonth><t:Month>Smarch</t:Month>"
            "</t:AbsoluteYearlyRecurrence>",
            "Recurrence/AbsoluteYearlyRecurrence/Month",
        ),
        ("<t:DailyRegeneration><t:Interval>1</t:Interval></t:DailyRegeneration>", "Recurrence"),
    ],
)
def test_unreadable_patterns_name_their_field(pattern, field):
    rec = xml(
        f"<t:Recurrence>{pattern}<t:NoEndRecurrence><t:StartDate>2026-12-01</t:StartDate></t:NoEndRecurrence>"
        "</t:Recurrence>"
    ).find(f"{{{T}}}Recurrence")
    with pytest.raises(Unreadable) as caught:
        read_recurrence(rec, UTC)
    assert caught.value.field == field


def test_unreadable_ranges_and_occurrences_name_their_field():
    bad_end = SERIES.format(start="2026-11-30", end="2027-02-30")
    with pytest.raises(Unreadable) as caught:
        read_item(xml(item(bad_end)))
    assert (caught.value.field, caught.value.raw) == ("Recurrence/EndDateRecurrence/EndDate", "2027-02-30")
    bad_deleted = SERIES.format(start="2026-11-30", end="2027-03-29").replace(
        "2026-12-14T08:00:00.000000Z", "the fourteenth"
    )
    with pytest.raises(Unreadable) as caught:
        read_item(xml(item(bad_deleted)))
    assert caught.value.field == "DeletedOccurrences/DeletedOccurrence/Start"


# --- time zones -------------------------------------------------------------------------------------------------

EUROPE_DEFINITION = """<t:Periods>
  <t:Period Bias="-PT1H" Name="Standard" Id="Std"/><t:Period Bias="-PT2H" Name="Daylight" Id="Dlt/1"/>
</t:Periods>
<t:TransitionsGroups><t:TransitionsGroup Id="0">
  <t:RecurringDayTransition><t:To Kind="Period">Dlt/1</t:To><t:TimeOffset>PT2H</t:TimeOffset><t:Month>3</t:Month>
    <t:DayOfWeek>Sunday</t:DayOfWeek><t:Occurrence>-1</t:Occurrence></t:RecurringDayTransition>
  <t:RecurringDayTransition><t:To Kind="Period">Std</t:To><t:TimeOffset>PT3H</t:TimeOffset><t:Month>10</t:Month>
    <t:DayOfWeek>Sunday</t:DayOfWeek><t:Occurrence>-1</t:Occurrence></t:RecurringDayTransition>
</t:TransitionsGroup></t:TransitionsGroups>
<t:Transitions><t:Transition><t:To Kind="Group">0</t:To></t:Transition></t:Transitions>"""


DAILY = (
    "<t:Recurrence><t:DailyRecurrence><t:Interval>1</t:Interval></t:DailyRecurrence>"
    "<t:NoEndRecurrence><t:StartDate>2026-12-01</t:StartDate></t:NoEndRecurrence></t:Recurrence>"
)


def zone_of(body: str) -> str:
    """The zone of a series (where the zone decides the occurrences' times)."""
    return read_item(xml(item(DAILY + body))).start_tz


def test_an_unknown_zone_id_is_rebuilt_from_its_definition():
    custom = zone_of(
        f'<t:StartTimeZone Id="Customized Time Zone" Name="Customized">{EUROPE_DEFINITION}</t:StartTimeZone>'
    )
    legacy = zone_of(
        '<t:StartTimeZone Id="(GMT+01:00) Amsterdam, Berlin, Berne, Rome, Stockholm, Vienna">'
        f"{EUROPE_DEFINITION}</t:StartTimeZone>"
    )
    assert custom == legacy
    zone = zone_for(custom)
    assert custom in (
        "Central Europe Standard Time",
        "Central European Standard Time",
        "Romance Standard Time",
        "W. Europe Standard Time",
    )  # one with the same clock
    assert datetime(2027, 1, 15, 12, tzinfo=zone).utcoffset() == timedelta(hours=1)
    assert datetime(2027, 7, 15, 12, tzinfo=zone).utcoffset() == timedelta(hours=2)


def test_a_zone_no_windows_zone_matches_is_named_by_its_rule():
    odd = EUROPE_DEFINITION.replace("-PT1H", "-PT1H17M").replace("-PT2H", "-PT2H17M")
    tz_id = zone_of(f'<t:StartTimeZone Id="Customized Time Zone">{odd}</t:StartTimeZone>')
    assert tz_id.startswith("POSIX:")
    zone = zone_for(tz_id)
    assert datetime(2027, 1, 15, 12, tzinfo=zone).utcoffset() == timedelta(hours=1, minutes=17)
    assert datetime(2027, 7, 15, 12, tzinfo=zone).utcoffset() == timedelta(hours=2, minutes=17)
    assert datetime(2027, 3, 28, 3, 0, tzinfo=zone).utcoffset() == timedelta(hours=2, minutes=17)  # after 02:00


def test_a_zone_without_daylight_saving_and_one_south_of_the_equator():
    fixed = """<t:Periods><t:Period Bias="-PT5H30M" Name="Standard" Id="Std"/></t:Periods>
      <t:TransitionsGroups><t:TransitionsGroup Id="0"><t:Transition><t:To Kind="Period">Std</t:To></t:Transition>
      </t:TransitionsGroup></t:TransitionsGroups>
      <t:Transitions><t:Transition><t:To Kind="Group">0</t:To></t:Transition></t:Transitions>"""
    assert zone_of(f'<t:StartTimeZone Id="Indian time, custom">{fixed}</t:StartTimeZone>') == "India Standard Time"
    sydney = """<t:Periods><t:Period Bias="-PT10H" Id="Std"/><t:Period Bias="-PT11H" Id="Dlt"/></t:Periods>
      <t:TransitionsGroups><t:TransitionsGroup Id="0">
      <t:RecurringDayTransition><t:To Kind="Period">Std</t:To><t:TimeOffset>PT3H</t:TimeOffset><t:Month>4</t:Month>
        <t:DayOfWeek>Sunday</t:DayOfWeek><t:Occurrence>1</t:Occurrence></t:RecurringDayTransition>
      <t:RecurringDayTransition><t:To Kind="Period">Dlt</t:To><t:TimeOffset>PT2H</t:TimeOffset><t:Month>10</t:Month>
        <t:DayOfWeek>Sunday</t:DayOfWeek><t:Occurrence>1</t:Occurrence></t:RecurringDayTransition>
      </t:TransitionsGroup></t:TransitionsGroups>
      <t:Transitions><t:Transition><t:To Kind="Group">0</t:To></t:Transition></t:Transitions>"""
    assert zone_of(f'<t:StartTimeZone Id="Sydney, old name">{sydney}</t:StartTimeZone>') == "AUS Eastern Standard Time"


def test_the_legacy_meeting_time_zone_of_exchange_2007():
    meeting = """<t:MeetingTimeZone TimeZoneName="(GMT-05:00) Eastern Time (US &amp; Canada)">
      <t:BaseOffset>PT5H</t:BaseOffset>
      <t:Standard><t:Offset>PT0M</t:Offset><t:RelativeYearlyRecurrence><t:DaysOfWeek>Sunday</t:DaysOfWeek>
        <t:DayOfWeekIndex>First</t:DayOfWeekIndex><t:Month>November</t:Month></t:RelativeYearlyRecurrence>
        <t:Time>02:00:00</t:Time></t:Standard>
      <t:Daylight><t:Offset>-PT1H</t:Offset><t:RelativeYearlyRecurrence><t:DaysOfWeek>Sunday</t:DaysOfWeek>
        <t:DayOfWeekIndex>Second</t:DayOfWeekIndex><t:Month>March</t:Month></t:RelativeYearlyRecurrence>
        <t:Time>02:00:00</t:Time></t:Daylight></t:MeetingTimeZone>"""
    tz_id = zone_of(meeting)
    zone = zone_for(tz_id)
    assert datetime(2027, 1, 15, 12, tzinfo=zone).utcoffset() == timedelta(hours=-5)
    assert datetime(2027, 3, 15, 12, tzinfo=zone).utcoffset() == timedelta(hours=-4)
    assert zone_of('<t:MeetingTimeZone TimeZoneName="Eastern Standard Time"/>') == "Eastern Standard Time"


def test_an_unknown_zone_without_a_readable_definition_is_unreadable():
    for body, field in (
        ('<t:StartTimeZone Id="Customized Time Zone"/>', "StartTimeZone"),
        (
            '<t:StartTimeZone Id="Customized Time Zone">'
            + EUROPE_DEFINITION.replace('Bias="-PT2H"', 'Bias="two hours"')
            + "</t:StartTimeZone>",
            "StartTimeZone/Periods/Period/@Bias",
        ),
        ('<t:MeetingTimeZone TimeZoneName="Somewhere"/>', "MeetingTimeZone"),
    ):
        with pytest.raises(Unreadable) as caught:
            zone_of(body)
        assert caught.value.field == field


def test_a_timed_single_item_keeps_an_unknown_zone_name_its_instants_place_it():
    times = read_item(xml(item('<t:StartTimeZone Id="Customized Time Zone"/>')))
    assert times.start_tz == "Customized Time Zone"
    assert times.start == datetime(2026, 12, 1, 8, tzinfo=UTC)
    with pytest.raises(Unreadable):  # an all-day item needs its zone for its local midnights
        read_item(xml(item('<t:IsAllDayEvent>true</t:IsAllDayEvent><t:StartTimeZone Id="Customized Time Zone"/>')))


def test_known_ids_need_no_definition():
    assert zone_of('<t:StartTimeZone Id="Tokyo Standard Time"/>') == "Tokyo Standard Time"
    assert zone_of('<t:StartTimeZone Id="Europe/Berlin"/>') == "Europe/Berlin"
    assert zone_of("") == "UTC"  # no zone at all: the instants are UTC, and so is the series

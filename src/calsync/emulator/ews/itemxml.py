"""Calendar items to and from EWS XML: reading ``t:CalendarItem`` (CreateItem, SetItemField,
AppendToItemField, DeleteItemField) and writing it for a response shape (IdOnly, Default, AllProperties,
additional properties), in the element order of ``types.xsd``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache

from lxml import etree

from .. import recurrence as rec
from .. import timezones
from ..model import SUBJECT_MAX, Attendee, CalendarItem, Mailbox, Person, Recurrence
from .soap import EwsError, parse_bool, parse_date, parse_datetime, sub, t, text_of

# Element order of t:CalendarItemType (ItemType's fields, then the calendar ones), from types.xsd.
FIELD_ORDER = (
    "MimeContent",
    "ItemId",
    "ParentFolderId",
    "ItemClass",
    "Subject",
    "Sensitivity",
    "Body",
    "Attachments",
    "DateTimeReceived",
    "Size",
    "Categories",
    "Importance",
    "InReplyTo",
    "IsSubmitted",
    "IsDraft",
    "IsFromMe",
    "IsResend",
    "IsUnmodified",
    "InternetMessageHeaders",
    "DateTimeSent",
    "DateTimeCreated",
    "ResponseObjects",
    "ReminderDueBy",
    "ReminderIsSet",
    "ReminderNextTime",
    "ReminderMinutesBeforeStart",
    "DisplayCc",
    "DisplayTo",
    "DisplayBcc",
    "HasAttachments",
    "ExtendedProperty",
    "Culture",
    "EffectiveRights",
    "LastModifiedName",
    "LastModifiedTime",
    "IsAssociated",
    "WebClientReadFormQueryString",
    "WebClientEditFormQueryString",
    "ConversationId",
    "UniqueBody",
    "Flag",
    "StoreEntryId",
    "InstanceKey",
    "NormalizedBody",
    "EntityExtractionResult",
    "PolicyTag",
    "ArchiveTag",
    "RetentionDate",
    "Preview",
    "RightsManagementLicenseData",
    "PredictedActionReasons",
    "IsClutter",
    "BlockStatus",
    "HasBlockedImages",
    "TextBody",
    "IconIndex",
    "SearchKey",
    "SortKey",
    "Hashtags",
    "Mentions",
    "MentionedMe",
    "MentionsPreview",
    "MentionsEx",
    "AppliedHashtags",
    "AppliedHashtagsPreview",
    "Likes",
    "LikesPreview",
    "PendingSocialActivityTagIds",
    "AtAllMention",
    "CanDelete",
    "InferenceClassification",
    "UID",
    "RecurrenceId",
    "DateTimeStamp",
    "Start",
    "End",
    "OriginalStart",
    "IsAllDayEvent",
    "LegacyFreeBusyStatus",
    "Location",
    "When",
    "IsMeeting",
    "IsCancelled",
    "IsRecurring",
    "MeetingRequestWasSent",
    "IsResponseRequested",
    "CalendarItemType",
    "MyResponseType",
    "Organizer",
    "RequiredAttendees",
    "OptionalAttendees",
    "Resources",
    "InboxReminders",
    "ConflictingMeetingCount",
    "AdjacentMeetingCount",
    "ConflictingMeetings",
    "AdjacentMeetings",
    "Duration",
    "TimeZone",
    "AppointmentReplyTime",
    "AppointmentSequenceNumber",
    "AppointmentState",
    "Recurrence",
    "FirstOccurrence",
    "LastOccurrence",
    "ModifiedOccurrences",
    "DeletedOccurrences",
    "MeetingTimeZone",
    "StartTimeZone",
    "EndTimeZone",
    "ConferenceType",
    "AllowNewTimeProposal",
    "IsOnlineMeeting",
    "MeetingWorkspaceUrl",
    "NetShowUrl",
    "EnhancedLocation",
    "StartWallClock",
    "EndWallClock",
    "StartTimeZoneId",
    "EndTimeZoneId",
    "IntendedFreeBusyStatus",
    "JoinOnlineMeetingUrl",
    "OnlineMeetingSettings",
    "IsOrganizer",
    "CalendarActivityData",
    "DoNotForwardMeeting",
)
_POSITION = {name: i for i, name in enumerate(FIELD_ORDER)}

# Fields the server owns: a client that sets them gets ErrorInvalidPropertySet, as on Exchange.
READ_ONLY = frozenset(
    {
        "ItemId",
        "ParentFolderId",
        "DateTimeReceived",
        "Size",
        "IsSubmitted",
        "IsDraft",
        "IsFromMe",
        "IsResend",
        "IsUnmodified",
        "DateTimeSent",
        "DateTimeCreated",
        "ResponseObjects",
        "DisplayCc",
        "DisplayTo",
        "DisplayBcc",
        "HasAttachments",
        "EffectiveRights",
        "LastModifiedName",
        "LastModifiedTime",
        "IsAssociated",
        "ConversationId",
        "UniqueBody",
        "RecurrenceId",
        "DateTimeStamp",
        "OriginalStart",
        "IsMeeting",
        "IsCancelled",
        "IsRecurring",
        "MeetingRequestWasSent",
        "CalendarItemType",
        "MyResponseType",
        "Organizer",
        "ConflictingMeetingCount",
        "AdjacentMeetingCount",
        "ConflictingMeetings",
        "AdjacentMeetings",
        "Duration",
        "TimeZone",
        "AppointmentReplyTime",
        "AppointmentSequenceNumber",
        "AppointmentState",
        "FirstOccurrence",
        "LastOccurrence",
        "ModifiedOccurrences",
        "DeletedOccurrences",
        "IsOnlineMeeting",
        "TextBody",
        "Preview",
    }
)

DEFAULT_SHAPE = (
    "ItemId",
    "Subject",
    "HasAttachments",
    "IsAssociated",
    "Start",
    "End",
    "LegacyFreeBusyStatus",
    "Location",
    "CalendarItemType",
    "Organizer",
)

SENSITIVITY = ("Normal", "Personal", "Private", "Confidential")
FREE_BUSY = ("Free", "Tentative", "Busy", "OOF", "WorkingElsewhere", "NoData")
IMPORTANCE = ("Low", "Normal", "High")
RESPONSES = ("Unknown", "Organizer", "Tentative", "Accept", "Decline", "NoResponseReceived")
_WEEKDAY_NAMES = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_WEEK_INDEXES = ("First", "Second", "Third", "Fourth", "Last")
_MONTH_NAMES = (
    *("January", "February", "March", "April", "May", "June"),
    *("July", "August", "September", "October", "November", "December"),
)
_CULTURE = re.compile(r"[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*")  # xs:language


def local(el: etree._Element) -> str:
    return etree.QName(el).localname


def _choice(value: str | None, allowed: tuple[str, ...], where: str) -> str:
    if value not in allowed:
        raise EwsError("ErrorSchemaValidation", f"{where}: '{value}' is not one of {', '.join(allowed)}.")
    return value


# --- reading ------------------------------------------------------------------------------------


class ItemDraft:
    """Field values read from a ``t:CalendarItem`` before they are applied to an item."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}
        self.extra: dict[str, bytes] = {}
        self.start_raw: str | None = None
        self.end_raw: str | None = None


def read_fields(elem: etree._Element, draft: ItemDraft | None = None, *, append: bool = False) -> ItemDraft:
    draft = draft or ItemDraft()
    for child in elem:
        if not isinstance(child.tag, str):
            continue
        name = local(child)
        if name in READ_ONLY:
            raise EwsError("ErrorInvalidPropertySet", f"The property '{name}' is read-only and cannot be set.")
        reader = _READERS.get(name)
        if reader is None:
            if name not in _POSITION:
                raise EwsError("ErrorSchemaValidation", f"The element '{name}' is not a CalendarItem property.")
            draft.extra[name] = etree.tostring(child)
            continue
        reader(child, draft, append)
    return draft


def _text(name: str, attr: str) -> Callable[[etree._Element, ItemDraft, bool], None]:
    def read(el: etree._Element, d: ItemDraft, append: bool) -> None:
        d.values[attr] = el.text or ""

    return read


def _read_subject(el: etree._Element, d: ItemDraft, append: bool) -> None:
    d.values["subject"] = (el.text or "")[:SUBJECT_MAX]  # Exchange truncates, it does not refuse


def _read_conference_type(el: etree._Element, d: ItemDraft, append: bool) -> None:
    value = (el.text or "").strip()
    if value not in ("0", "1", "2"):
        raise EwsError(
            "ErrorSchemaValidation", f"ConferenceType: '{value}' is not 0 (NetMeeting), 1 (NetShow) or 2 (Chat)."
        )
    d.values["conference_type"] = int(value)


def _read_culture(el: etree._Element, d: ItemDraft, append: bool) -> None:
    value = (el.text or "").strip()
    if not _CULTURE.fullmatch(value):
        raise EwsError("ErrorSchemaValidation", f"Culture: '{value}' is not a language tag such as en-US or de-DE.")
    d.values["culture"] = value


def _read_choice(attr: str, allowed: tuple[str, ...], name: str) -> Callable[[etree._Element, ItemDraft, bool], None]:
    def read(el: etree._Element, d: ItemDraft, append: bool) -> None:
        d.values[attr] = _choice((el.text or "").strip(), allowed, name)

    return read


def _read_body(el: etree._Element, d: ItemDraft, append: bool) -> None:
    body_type = _choice(el.get("BodyType", "Text"), ("HTML", "Text", "Best"), "Body/@BodyType")
    d.values["body"] = ("Text" if body_type == "Best" else body_type, el.text or "")


def _read_categories(el: etree._Element, d: ItemDraft, append: bool) -> None:
    d.values["categories"] = tuple((s.text or "") for s in el if isinstance(s.tag, str))
    d.values["_append_categories"] = append


def _read_bool(attr: str, name: str) -> Callable[[etree._Element, ItemDraft, bool], None]:
    def read(el: etree._Element, d: ItemDraft, append: bool) -> None:
        d.values[attr] = parse_bool((el.text or "").strip(), name)

    return read


def _read_reminder_minutes(el: etree._Element, d: ItemDraft, append: bool) -> None:
    try:
        d.values["reminder_minutes"] = int((el.text or "").strip())
    except ValueError as exc:
        raise EwsError("ErrorSchemaValidation", "ReminderMinutesBeforeStart must be an integer.") from exc


def _read_start(el: etree._Element, d: ItemDraft, append: bool) -> None:
    d.start_raw = (el.text or "").strip()


def _read_end(el: etree._Element, d: ItemDraft, append: bool) -> None:
    d.end_raw = (el.text or "").strip()


def _read_tz(attr: str) -> Callable[[etree._Element, ItemDraft, bool], None]:
    def read(el: etree._Element, d: ItemDraft, append: bool) -> None:
        tz_id = el.get("Id") or el.get("TimeZoneName")
        if tz_id is None:
            tz_id = timezones.UTC_ID  # a custom definition without an id: treat as UTC
        timezones.zone(tz_id)  # validates
        if attr == "meeting":
            d.values["start_tz"] = tz_id
            d.values["end_tz"] = tz_id
        else:
            d.values[attr] = tz_id

    return read


def _read_attendees(attr: str) -> Callable[[etree._Element, ItemDraft, bool], None]:
    def read(el: etree._Element, d: ItemDraft, append: bool) -> None:
        people = []
        for att in el.findall(t("Attendee")):
            mailbox = att.find(t("Mailbox"))
            email = text_of(mailbox, t("EmailAddress"))
            if not email:
                raise EwsError("ErrorInvalidRecipients", "An attendee has no EmailAddress.")
            response = text_of(att, t("ResponseType"), "Unknown") or "Unknown"
            people.append(
                Attendee(
                    text_of(mailbox, t("Name"), email) or email,
                    email,
                    _choice(response, RESPONSES, "Attendee/ResponseType"),
                )
            )
        d.values[attr] = tuple(people)
        d.values[f"_append_{attr}"] = append

    return read


def _int_of(el: etree._Element, tag: str, where: str) -> int:
    value = text_of(el, t(tag))
    try:
        return int(value or "")
    except ValueError as exc:
        raise EwsError("ErrorSchemaValidation", f"{where}/{tag}: '{value}' is not an integer.") from exc


def _read_recurrence(el: etree._Element, d: ItemDraft, append: bool) -> None:
    children = [c for c in el if isinstance(c.tag, str)]
    if len(children) != 2:
        raise EwsError("ErrorSchemaValidation", "Recurrence needs one pattern and one range element.")
    p_el, r_el = children
    kind = local(p_el).removesuffix("Recurrence")
    if kind not in rec.PATTERN_KINDS:
        raise EwsError("ErrorSchemaValidation", f"'{local(p_el)}' is not a recurrence pattern.")
    days = tuple((text_of(p_el, t("DaysOfWeek")) or "").split())
    interval = _int_of(p_el, "Interval", local(p_el)) if p_el.find(t("Interval")) is not None else 1
    pattern = rec.Pattern(
        kind=kind,
        interval=interval,
        days_of_week=days,
        first_day_of_week=text_of(p_el, t("FirstDayOfWeek"), "Sunday") or "Sunday",
        day_of_month=_int_of(p_el, "DayOfMonth", local(p_el)) if p_el.find(t("DayOfMonth")) is not None else None,
        day_of_week_index=text_of(p_el, t("DayOfWeekIndex")),
        month=text_of(p_el, t("Month")),
    )
    r_kind = local(r_el).removesuffix("Recurrence")
    start_date = parse_date(text_of(r_el, t("StartDate")), f"{local(r_el)}/StartDate")
    if r_kind == "NoEnd":
        rng = rec.Range("NoEnd", start_date)
    elif r_kind == "EndDate":
        rng = rec.Range("EndDate", start_date, end_date=parse_date(text_of(r_el, t("EndDate")), "EndDate"))
    elif r_kind == "Numbered":
        rng = rec.Range("Numbered", start_date, count=_int_of(r_el, "NumberOfOccurrences", local(r_el)))
    else:
        raise EwsError("ErrorSchemaValidation", f"'{local(r_el)}' is not a recurrence range.")
    try:
        rec.validate(pattern, rng)
    except rec.RecurrenceError as exc:
        raise EwsError("ErrorCalendarInvalidRecurrence", str(exc)) from exc
    d.values["recurrence"] = Recurrence(pattern, rng)


def _read_uid(el: etree._Element, d: ItemDraft, append: bool) -> None:
    d.values["uid"] = (el.text or "").strip()


_READERS: dict[str, Callable[[etree._Element, ItemDraft, bool], None]] = {
    "Subject": _read_subject,
    "Body": _read_body,
    "Location": _text("Location", "location"),
    "Categories": _read_categories,
    "Sensitivity": _read_choice("sensitivity", SENSITIVITY, "Sensitivity"),
    "Importance": _read_choice("importance", IMPORTANCE, "Importance"),
    "LegacyFreeBusyStatus": _read_choice("fb_status", FREE_BUSY, "LegacyFreeBusyStatus"),
    "ReminderIsSet": _read_bool("reminder_is_set", "ReminderIsSet"),
    "ReminderMinutesBeforeStart": _read_reminder_minutes,
    "IsAllDayEvent": _read_bool("is_all_day", "IsAllDayEvent"),
    "IsResponseRequested": _read_bool("is_response_requested", "IsResponseRequested"),
    "AllowNewTimeProposal": _read_bool("allow_new_time_proposal", "AllowNewTimeProposal"),
    "ConferenceType": _read_conference_type,
    "Culture": _read_culture,
    "Start": _read_start,
    "End": _read_end,
    "StartTimeZone": _read_tz("start_tz"),
    "EndTimeZone": _read_tz("end_tz"),
    "MeetingTimeZone": _read_tz("meeting"),
    "RequiredAttendees": _read_attendees("required"),
    "OptionalAttendees": _read_attendees("optional"),
    "Resources": _read_attendees("resources"),
    "Recurrence": _read_recurrence,
    "UID": _read_uid,
    "ItemClass": lambda el, d, a: None,
}


def apply_draft(item: CalendarItem, draft: ItemDraft, *, creating: bool, settle_now: bool = True) -> None:
    """Apply read values to an item, then (unless told not to) settle start/end: all-day rounding and
    recurrence alignment."""
    for name, value in draft.values.items():
        if name.startswith("_append_"):
            continue
        if name in ("required", "optional", "resources") and draft.values.get(f"_append_{name}"):
            value = (*getattr(item, name), *value)  # type: ignore[misc]
        if name == "categories" and draft.values.get("_append_categories"):
            value = (*item.categories, *value)  # type: ignore[misc]
        if name == "uid" and not value:
            raise EwsError("ErrorInvalidPropertySet", "UID must not be empty.")
        setattr(item, name, value)
    item.extra.update(draft.extra)
    if draft.start_raw is not None:
        item.start = parse_datetime(draft.start_raw, "Start")
    if draft.end_raw is not None:
        item.end = parse_datetime(draft.end_raw, "End")
    if settle_now:
        settle(item, creating=creating, moved=draft.start_raw is not None)


def settle(item: CalendarItem, *, creating: bool, moved: bool = True) -> None:
    if item.is_all_day:
        tz = timezones.zone(item.start_tz)
        local_start = item.start.astimezone(tz)
        item.start = datetime.combine(local_start.date(), time(), tz).astimezone(UTC)
        end_tz = timezones.zone(item.end_tz)
        local_end = item.end.astimezone(end_tz)
        end_day = local_end.date() if local_end.time() == time() else local_end.date() + timedelta(days=1)
        item.end = datetime.combine(end_day, time(), end_tz).astimezone(UTC)
        if item.end <= item.start:
            item.end = item.start + timedelta(days=1)
    if item.end < item.start:
        raise EwsError("ErrorCalendarEndDateIsEarlierThanStartDate", "EndDate is earlier than StartDate.")
    if item.recurrence is not None and (creating or moved):
        # Exchange moves the master to the first occurrence of its pattern.
        first, _ = item.first_last()
        if first is None:
            raise EwsError("ErrorRecurrenceHasNoOccurrence", "The recurrence pattern has no occurrences.")
        item.start, item.end = first.start, first.end


def delete_field(item: CalendarItem, name: str) -> None:
    defaults: dict[str, tuple[str, object]] = {
        "Subject": ("subject", None),
        "Body": ("body", None),
        "Location": ("location", None),
        "Categories": ("categories", ()),
        "RequiredAttendees": ("required", []),
        "OptionalAttendees": ("optional", []),
        "Resources": ("resources", []),
        "Recurrence": ("recurrence", None),
        "ReminderMinutesBeforeStart": ("reminder_minutes", 15),
    }
    if name in defaults:
        attr, value = defaults[name]
        setattr(item, attr, value)
        if name == "Recurrence":
            item.exceptions.clear()
            item.deleted = frozenset()
    elif name in item.extra:
        del item.extra[name]
    elif name in READ_ONLY or name in ("Start", "End", "IsAllDayEvent"):
        raise EwsError("ErrorInvalidPropertyDelete", f"The property '{name}' cannot be deleted.")


# --- writing ------------------------------------------------------------------------------------


class RenderContext:
    def __init__(self, mbx: Mailbox, version_2007: bool = False, dialect: frozenset[str] = frozenset()) -> None:
        self.mbx = mbx
        self.version_2007 = version_2007
        self.dialect = dialect  # forms other servers write (calsync.emulator.ews.dialect)


def _mailbox(parent: etree._Element, tag: str, person: Person | Attendee) -> etree._Element:
    mb = sub(parent, tag)
    sub(mb, t("Name"), person.name)
    sub(mb, t("EmailAddress"), person.email)
    sub(mb, t("RoutingType"), "SMTP")
    sub(mb, t("MailboxType"), "Mailbox")
    return mb


def _attendees(parent: etree._Element, tag: str, people: Iterable[Attendee]) -> None:
    container = sub(parent, t(tag))
    for a in people:
        att = sub(container, t("Attendee"))
        _mailbox(att, t("Mailbox"), a)
        sub(att, t("ResponseType"), a.response)
        if a.last_response is not None:
            sub(att, t("LastResponseTime"), a.last_response)


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    out = "P" + (f"{days}D" if days else "")
    time_part = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "") + (f"{secs}S" if secs else "")
    return out + ("T" + time_part if time_part else ("" if days else "T0S"))


def _zoned_date(day: date, item: CalendarItem, dialect: frozenset[str]) -> str:
    """A recurrence date as Exchange writes it: an xs:date with the series' zone offset on that day
    (``2016-01-01+01:00``, ``2016-07-01-04:00``, ``2016-01-01Z``); or as a dialect says."""
    if "bare_dates" in dialect:
        return day.isoformat()
    if "datetime_dates" in dialect:
        return f"{day.isoformat()}T00:00:00Z"
    tz = timezones.zone(item.start_tz)
    offset = datetime.combine(day, item.local_start().time(), tz).utcoffset() or timedelta(0)
    if not offset:
        return f"{day.isoformat()}Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes > 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return f"{day.isoformat()}{sign}{hours:02d}:{rest:02d}"


def _recurrence(parent: etree._Element, item: CalendarItem, r: Recurrence, dialect: frozenset[str]) -> None:
    container = sub(parent, t("Recurrence"))
    p = r.pattern
    pel = sub(container, t(f"{p.kind}Recurrence"))
    if p.kind in ("RelativeYearly",):
        sub(pel, t("DaysOfWeek"), " ".join(p.days_of_week))
        sub(pel, t("DayOfWeekIndex"), p.day_of_week_index)
        sub(pel, t("Month"), p.month)
    elif p.kind == "AbsoluteYearly":
        sub(pel, t("DayOfMonth"), p.day_of_month)
        sub(pel, t("Month"), p.month)
    else:
        sub(pel, t("Interval"), p.interval)
        if p.kind == "RelativeMonthly":
            sub(pel, t("DaysOfWeek"), " ".join(p.days_of_week))
            sub(pel, t("DayOfWeekIndex"), p.day_of_week_index)
        elif p.kind == "AbsoluteMonthly":
            sub(pel, t("DayOfMonth"), p.day_of_month)
        elif p.kind == "Weekly":
            sub(pel, t("DaysOfWeek"), " ".join(p.days_of_week))
            sub(pel, t("FirstDayOfWeek"), p.first_day_of_week)
    rng = r.range
    rel = sub(container, t(f"{rng.kind}Recurrence"))
    sub(rel, t("StartDate"), _zoned_date(rng.start_date, item, dialect))
    if rng.kind == "EndDate":
        assert rng.end_date is not None
        sub(rel, t("EndDate"), _zoned_date(rng.end_date, item, dialect))
    elif rng.kind == "Numbered":
        sub(rel, t("NumberOfOccurrences"), rng.count)


def _original_start(occ: CalendarItem, dialect: frozenset[str]) -> datetime | None:
    """An occurrence's original start; with ``midnight_original_start``, local midnight of its day instead."""
    if occ.original_start is None or "midnight_original_start" not in dialect:
        return occ.original_start
    tz = timezones.zone(occ.start_tz)
    return datetime.combine(occ.original_start.astimezone(tz).date(), time(), tz).astimezone(UTC)


def _occurrence_info(parent: etree._Element, tag: str, occ: CalendarItem, ctx: RenderContext) -> None:
    info = sub(parent, t(tag))
    sub(info, t("ItemId"), Id=occ.item_id, ChangeKey=occ.change_key)
    sub(info, t("Start"), occ.start)
    sub(info, t("End"), occ.end)
    sub(info, t("OriginalStart"), _original_start(occ, ctx.dialect))


def _ews_duration(minutes: int) -> str:
    """Minutes as an xs:duration the way Exchange writes biases and offsets (``-PT1H``, ``PT5H30M``, ``PT0H``)."""
    sign = "-" if minutes < 0 else ""
    hours, rest = divmod(abs(minutes), 60)
    return f"{sign}PT" + (f"{hours}H" if hours or not rest else "") + (f"{rest}M" if rest else "")


def _zone_name(tz_id: str, year: int, ctx: RenderContext) -> str:
    if "custom_timezones" in ctx.dialect or "custom_timezones_without_definition" in ctx.dialect:
        return "Customized Time Zone"
    if "legacy_timezone_names" in ctx.dialect:
        return timezones.legacy_name(tz_id, year)
    return tz_id


@lru_cache(maxsize=1024)
def _definition(tag: str, tz_id: str, name: str, year: int) -> etree._Element:
    """``t:StartTimeZone``/``t:EndTimeZone`` with the zone's full definition, as Exchange sends it: its periods
    (standard, daylight) and the yearly transitions between them, for the item's year."""
    rules = timezones.rules(tz_id, year)
    out = etree.Element(t(tag), {"Id": name, "Name": name})
    periods = sub(out, t("Periods"))
    registry = f"trule:Microsoft/Registry/{tz_id}/{year}"
    sub(periods, t("Period"), Bias=_ews_duration(rules.standard_bias), Name="Standard", Id=f"{registry}-Standard")
    group = sub(sub(out, t("TransitionsGroups")), t("TransitionsGroup"), Id="0")
    if rules.daylight_bias is None or rules.to_daylight is None or rules.to_standard is None:
        sub(sub(group, t("Transition")), t("To"), f"{registry}-Standard", Kind="Period")
    else:
        sub(periods, t("Period"), Bias=_ews_duration(rules.daylight_bias), Name="Daylight", Id=f"{registry}-Daylight")
        for change, target in ((rules.to_daylight, "Daylight"), (rules.to_standard, "Standard")):
            step = sub(group, t("RecurringDayTransition"))
            sub(step, t("To"), f"{registry}-{target}", Kind="Period")
            sub(step, t("TimeOffset"), _ews_duration(change.minutes))
            sub(step, t("Month"), change.month)
            sub(step, t("DayOfWeek"), _WEEKDAY_NAMES[change.weekday])
            sub(step, t("Occurrence"), -1 if change.week == 5 else change.week)
    sub(sub(sub(out, t("Transitions")), t("Transition")), t("To"), "0", Kind="Group")
    return out


@lru_cache(maxsize=1024)
def _meeting_zone(tz_id: str, name: str, year: int) -> etree._Element:
    """``t:MeetingTimeZone`` (Exchange 2007-style answers) with its BaseOffset and yearly changes."""
    rules = timezones.rules(tz_id, year)
    out = etree.Element(t("MeetingTimeZone"), {"TimeZoneName": name})
    sub(out, t("BaseOffset"), _ews_duration(rules.standard_bias))
    if rules.daylight_bias is not None and rules.to_daylight is not None and rules.to_standard is not None:
        for tag, change, offset in (
            ("Standard", rules.to_standard, 0),
            ("Daylight", rules.to_daylight, rules.daylight_bias - rules.standard_bias),
        ):
            part = sub(out, t(tag))
            sub(part, t("Offset"), _ews_duration(offset))
            relative = sub(part, t("RelativeYearlyRecurrence"))
            sub(relative, t("DaysOfWeek"), _WEEKDAY_NAMES[change.weekday])
            sub(relative, t("DayOfWeekIndex"), _WEEK_INDEXES[change.week - 1])
            sub(relative, t("Month"), _MONTH_NAMES[change.month - 1])
            sub(part, t("Time"), f"{change.minutes // 60:02d}:{change.minutes % 60:02d}:00")
    return out


def _tz(parent: etree._Element, tag: str, item: CalendarItem, tz_id: str, ctx: RenderContext) -> None:
    year = item.start.astimezone(timezones.zone(tz_id)).year
    name = _zone_name(tz_id, year, ctx)
    if "custom_timezones_without_definition" in ctx.dialect:
        sub(parent, t(tag), Id=name, Name=name)
        return
    parent.append(copy.deepcopy(_definition(tag, tz_id, name, year)))


Writer = Callable[[etree._Element, CalendarItem, RenderContext], None]


def _w_simple(tag: str, value: Callable[[CalendarItem], object]) -> Writer:
    def write(parent: etree._Element, item: CalendarItem, ctx: RenderContext) -> None:
        v = value(item)
        if v is not None:
            sub(parent, t(tag), v)

    return write


def _w_body(parent: etree._Element, item: CalendarItem, ctx: RenderContext) -> None:
    if item.body is not None:
        sub(parent, t("Body"), item.body[1], BodyType=item.body[0])


def _w_categories(parent: etree._Element, item: CalendarItem, ctx: RenderContext) -> None:
    if item.categories:
        container = sub(parent, t("Categories"))
        for c in item.categories:
            sub(container, t("String"), c)


def _w_organizer(parent: etree._Element, item: CalendarItem, ctx: RenderContext) -> None:
    person = item.organizer or Person(ctx.mbx.display_name, ctx.mbx.address)
    org = sub(parent, t("Organizer"))
    _mailbox(org, t("Mailbox"), person)


def _w_people(tag: str, attr: str) -> Writer:
    def write(parent: etree._Element, item: CalendarItem, ctx: RenderContext) -> None:
        people = getattr(item, attr)
        if people:
            _attendees(parent, tag, people)

    return write


def _w_recurrence(parent: etree._Element, item: CalendarItem, ctx: RenderContext) -> None:
    if item.recurrence is not None:
        _recurrence(parent, item, item.recurrence, ctx.dialect)


def _w_original_start(tag: str) -> Writer:
    def write(parent: etree._Element, item: CalendarItem, ctx: RenderContext) -> None:
        value = _original_start(item, ctx.dialect)
        if value is not None:
            sub(parent, t(tag), value)

    return write


def _w_first(parent: etree._Element, item: CalendarItem, ctx: RenderContext) -> None:
    if item.recurrence is not None and "no_first_last" not in ctx.dialect:
        first, _ = item.first_last()
        if first is not None:
            _occurrence_info(parent, "FirstOccurrence", first, ctx)


def _w_last(parent: etree._Element, item: CalendarItem, ctx: RenderContext) -> None:
    if item.recurrence is not None and "no_first_last" not in ctx.dialect:
        _, last = item.first_last()
        if last is not None:
            _occurrence_info(parent, "LastOccurrence", last, ctx)


def _w_modified(parent: etree._Element, item: CalendarItem, ctx: RenderContext) -> None:
    if item.recurrence is not None and item.exceptions:
        container = sub(parent, t("ModifiedOccurrences"))
        for index in sorted(item.exceptions):
            occ = item.occurrence(index)
            if occ is not None:
                _occurrence_info(container, "Occurrence", occ, ctx)


def _w_deleted(parent: etree._Element, item: CalendarItem, ctx: RenderContext) -> None:
    if item.recurrence is not None and item.deleted:
        container = sub(parent, t("DeletedOccurrences"))
        for index in sorted(item.deleted):
            original = item.original_start_at(index)
            if original is not None:
                sub(sub(container, t("DeletedOccurrence")), t("Start"), original)


def _w_start_tz(parent: etree._Element, item: CalendarItem, ctx: RenderContext) -> None:
    if not ctx.version_2007:
        _tz(parent, "StartTimeZone", item, item.start_tz, ctx)


def _w_end_tz(parent: etree._Element, item: CalendarItem, ctx: RenderContext) -> None:
    if not ctx.version_2007:
        _tz(parent, "EndTimeZone", item, item.end_tz, ctx)


def _w_meeting_tz(parent: etree._Element, item: CalendarItem, ctx: RenderContext) -> None:
    if ctx.version_2007:
        year = item.start.astimezone(timezones.zone(item.start_tz)).year
        name = _zone_name(item.start_tz, year, ctx)
        if "custom_timezones_without_definition" in ctx.dialect:
            sub(parent, t("MeetingTimeZone"), TimeZoneName=name)
            return
        parent.append(copy.deepcopy(_meeting_zone(item.start_tz, name, year)))


def _w_parent(parent: etree._Element, item: CalendarItem, ctx: RenderContext) -> None:
    folder = ctx.mbx.folders[item.folder]
    sub(parent, t("ParentFolderId"), Id=ctx.mbx.folder_id(item.folder), ChangeKey=folder.change_key)


def _w_item_id(parent: etree._Element, item: CalendarItem, ctx: RenderContext) -> None:
    sub(parent, t("ItemId"), Id=item.item_id, ChangeKey=item.change_key)


def _w_kind(item: CalendarItem) -> str:
    return item.kind if item.kind in ("Occurrence", "Exception") else item.series_kind()


_WRITERS: dict[str, Writer] = {
    "ItemId": _w_item_id,
    "ParentFolderId": _w_parent,
    "ItemClass": _w_simple("ItemClass", lambda i: "IPM.Appointment"),
    "Subject": _w_simple("Subject", lambda i: i.subject),
    "Sensitivity": _w_simple("Sensitivity", lambda i: i.sensitivity),
    "Body": _w_body,
    "DateTimeReceived": _w_simple("DateTimeReceived", lambda i: i.created),
    "Size": _w_simple("Size", lambda i: 512 + len(i.subject or "") + len(i.body[1] if i.body else "")),
    "Categories": _w_categories,
    "Importance": _w_simple("Importance", lambda i: i.importance),
    "IsSubmitted": _w_simple("IsSubmitted", lambda i: False),
    "IsDraft": _w_simple("IsDraft", lambda i: False),
    "IsFromMe": _w_simple("IsFromMe", lambda i: False),
    "IsResend": _w_simple("IsResend", lambda i: False),
    "IsUnmodified": _w_simple("IsUnmodified", lambda i: False),
    "DateTimeSent": _w_simple("DateTimeSent", lambda i: i.created),
    "DateTimeCreated": _w_simple("DateTimeCreated", lambda i: i.created),
    "ReminderDueBy": _w_simple("ReminderDueBy", lambda i: i.start),
    "ReminderIsSet": _w_simple("ReminderIsSet", lambda i: i.reminder_is_set),
    "ReminderMinutesBeforeStart": _w_simple("ReminderMinutesBeforeStart", lambda i: i.reminder_minutes),
    "DisplayCc": _w_simple("DisplayCc", lambda i: "; ".join(a.name for a in i.optional)),
    "DisplayTo": _w_simple("DisplayTo", lambda i: "; ".join(a.name for a in i.required)),
    "HasAttachments": _w_simple("HasAttachments", lambda i: False),
    "Culture": _w_simple("Culture", lambda i: i.culture),
    "LastModifiedName": _w_simple("LastModifiedName", lambda i: i.organizer.name if i.organizer else None),
    "LastModifiedTime": _w_simple("LastModifiedTime", lambda i: i.modified),
    "IsAssociated": _w_simple("IsAssociated", lambda i: False),
    "UID": _w_simple("UID", lambda i: i.uid),
    "RecurrenceId": _w_original_start("RecurrenceId"),
    "DateTimeStamp": _w_simple("DateTimeStamp", lambda i: i.modified),
    "Start": _w_simple("Start", lambda i: i.start),
    "End": _w_simple("End", lambda i: i.end),
    "OriginalStart": _w_original_start("OriginalStart"),
    "IsAllDayEvent": _w_simple("IsAllDayEvent", lambda i: i.is_all_day),
    "LegacyFreeBusyStatus": _w_simple("LegacyFreeBusyStatus", lambda i: i.fb_status),
    "Location": _w_simple("Location", lambda i: i.location),
    "IsMeeting": _w_simple("IsMeeting", lambda i: i.is_meeting),
    "IsCancelled": _w_simple("IsCancelled", lambda i: i.is_cancelled),
    "IsRecurring": _w_simple("IsRecurring", lambda i: i.kind in ("Occurrence", "Exception")),
    "MeetingRequestWasSent": _w_simple("MeetingRequestWasSent", lambda i: i.meeting_request_was_sent),
    "IsResponseRequested": _w_simple(
        "IsResponseRequested", lambda i: i.is_meeting if i.is_response_requested is None else i.is_response_requested
    ),
    "CalendarItemType": _w_simple("CalendarItemType", _w_kind),
    "MyResponseType": _w_simple("MyResponseType", lambda i: i.my_response),
    "Organizer": _w_organizer,
    "RequiredAttendees": _w_people("RequiredAttendees", "required"),
    "OptionalAttendees": _w_people("OptionalAttendees", "optional"),
    "Resources": _w_people("Resources", "resources"),
    "Duration": _w_simple("Duration", lambda i: _duration(i.duration)),
    "TimeZone": _w_simple("TimeZone", lambda i: i.start_tz),
    "AppointmentSequenceNumber": _w_simple("AppointmentSequenceNumber", lambda i: i.sequence),
    "AppointmentState": _w_simple(
        "AppointmentState",
        lambda i: (
            (1 if i.is_meeting else 0)
            | (4 if i.is_cancelled else 0)
            | (2 if i.my_response not in ("Organizer", "Unknown") else 0)
        ),
    ),
    "Recurrence": _w_recurrence,
    "FirstOccurrence": _w_first,
    "LastOccurrence": _w_last,
    "ModifiedOccurrences": _w_modified,
    "DeletedOccurrences": _w_deleted,
    "MeetingTimeZone": _w_meeting_tz,
    "StartTimeZone": _w_start_tz,
    "EndTimeZone": _w_end_tz,
    "ConferenceType": _w_simple("ConferenceType", lambda i: i.conference_type),
    "AllowNewTimeProposal": _w_simple("AllowNewTimeProposal", lambda i: i.allow_new_time_proposal),
    "IsOnlineMeeting": _w_simple("IsOnlineMeeting", lambda i: False),
}

ALL_PROPERTIES = tuple(name for name in FIELD_ORDER if name in _WRITERS)


def render(parent: etree._Element, item: CalendarItem, fields: Iterable[str], ctx: RenderContext) -> etree._Element:
    """Append ``t:CalendarItem`` with the given fields (always ItemId first), in schema order."""
    wanted = set(fields) | {"ItemId"}
    out = sub(parent, t("CalendarItem"))
    for name in sorted(wanted, key=lambda n: _POSITION.get(n, len(_POSITION))):
        writer = _WRITERS.get(name)
        if writer is not None:
            writer(out, item, ctx)
        elif name in item.extra:
            out.append(etree.fromstring(item.extra[name]))
    return out


# Prefixes of t:UnindexedFieldURIType; a property of another item class is simply absent from a calendar item.
FIELD_PREFIXES = frozenset(
    {
        "folder",
        "item",
        "message",
        "meeting",
        "meetingRequest",
        "calendar",
        "task",
        "contacts",
        "distributionlist",
        "postitem",
        "conversation",
        "persona",
        "meetingResponse",
        "meetingCancellation",
        "sharing",
        "rule",
    }
)


def field_name(uri: str) -> str:
    """``calendar:Start`` -> ``Start``; unknown prefixes are an error, as on Exchange."""
    prefix, _, name = uri.partition(":")
    if prefix not in FIELD_PREFIXES or not name:
        raise EwsError("ErrorInvalidPropertyRequest", f"The property '{uri}' is not valid for this object type.")
    return name

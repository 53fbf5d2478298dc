"""Dialects: forms other EWS servers (and Exchange itself, in places) write that the emulator does not write by
default, switchable like faults (``POST /emulator/faults {"dialect": [...]}``), so that clients can be tested
against each one. All are valid XML; ``datetime_dates`` is schema-invalid (real servers send it anyway).

=========================  ==========================================================================================
``fractional_seconds``     every xs:dateTime with fractional seconds, 7 digits as Exchange writes them in places
                           (``2026-12-01T08:00:00.0000000Z``)
``bare_dates``             recurrence StartDate/EndDate without a zone offset (``2026-12-01``)
``datetime_dates``         recurrence StartDate/EndDate as date-times at midnight UTC (``2026-12-01T00:00:00Z``)
``no_first_last``          series without FirstOccurrence and LastOccurrence
``midnight_original_start``  a modified occurrence's OriginalStart (and RecurrenceId) at local midnight of its day
``no_watermark``           push SubscribeResponse without a Watermark (minOccurs=0)
``never_push``             push subscriptions are accepted, and nothing is ever delivered to them
``custom_timezones``       zones named ``Customized Time Zone``, known only by their definition
``legacy_timezone_names``  zones named by an old display name (``(GMT+01:00) W. Europe``), known only by definition
``custom_timezones_without_definition``  zones named ``Customized Time Zone`` with no definition at all: a
                           client has nothing to rebuild them from
=========================  ==========================================================================================
"""

from __future__ import annotations

import re

DIALECTS: dict[str, str] = {
    "fractional_seconds": "every xs:dateTime with 7 fractional digits",
    "bare_dates": "recurrence dates without a zone offset",
    "datetime_dates": "recurrence dates as date-times (schema-invalid)",
    "no_first_last": "series without FirstOccurrence/LastOccurrence",
    "midnight_original_start": "OriginalStart of modified occurrences at local midnight",
    "no_watermark": "push SubscribeResponse without Watermark",
    "never_push": "push subscriptions accepted, never delivered to",
    "custom_timezones": "zones named 'Customized Time Zone' (definition only)",
    "legacy_timezone_names": "zones named by old display names (definition only)",
    "custom_timezones_without_definition": "zones named 'Customized Time Zone', without a definition",
}

_WHOLE_SECOND = re.compile(rb">(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)Z<")


def check(names: list[str]) -> list[str]:
    """The dialect names, checked; raises ValueError naming the unknown ones and the allowed ones."""
    unknown = [n for n in names if n not in DIALECTS]
    if unknown:
        raise ValueError(f"unknown dialect {', '.join(map(repr, unknown))}; allowed: {', '.join(DIALECTS)}")
    return list(dict.fromkeys(names))


def rewrite(document: bytes, dialect: frozenset[str]) -> bytes:
    """The dialects that apply to a whole document on its way out (fractional seconds)."""
    if "fractional_seconds" in dialect:
        document = _WHOLE_SECOND.sub(rb">\1.0000000Z<", document)
    return document

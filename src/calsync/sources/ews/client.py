"""calsync's layer over exchangelib: the server builds calsync speaks as, the services it calls (subclassed where
exchangelib falls short), the retry policy, and the redaction of credentials from exchangelib's debug log.

exchangelib shortcomings worked around here (each would be worth reporting upstream):

- GetItem: exchangelib reads date-times only as ``…:SSZ`` (a fraction gives None), reads offset-less
  recurrence dates in the machine's zone, and drops unknown time zone ids; and it clears each element once
  parsed. :class:`GetCalendarItems` hands each element to :func:`calsync.sources.ews.reading.read_item` first.
- GetFolder can only parse folders it already holds objects for: :class:`GetFolderIds` keeps the elements.
- Subscribe: a SubscribeResponse without ``Watermark`` (allowed: minOccurs=0) crashes exchangelib's parser
  (``'NoneType' object has no attribute 'text'``): :class:`SubscribeToPush` reads it as None.
- With the fail-fast policy it re-raises a 503 as ``ErrorServerBusy`` with a back-off of its own and ignores
  ``Retry-After``: :class:`FailFastRemembering503` keeps the server's ``Retry-After`` on the exception.
- At DEBUG level it logs each request's headers, ``Authorization`` included: that header is redacted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from exchangelib import BASIC, NTLM, Build
from exchangelib import errors as xerr
from exchangelib.fields import FieldPath
from exchangelib.items import CalendarItem
from exchangelib.protocol import FailFast
from exchangelib.services import GetFolder, GetItem
from exchangelib.services import SubscribeToPush as _SubscribeToPush
from exchangelib.util import MNS

from calsync.sources.base import Unreadable

from .reading import ItemTimes, read_item

__all__ = [
    "AUTH_TYPES",
    "BUILDS",
    "MAX_BATCH",
    "PUSH_EVENT_TYPES",
    "FailFastRemembering503",
    "GetCalendarItems",
    "GetFolderIds",
    "ServiceUnavailable",
    "SubscribeToPush",
    "field_paths",
]

# The server build each ExchangeVersion setting stands for (exchangelib derives RequestServerVersion from it).
BUILDS: dict[str, Build] = {
    "Exchange2010": Build(14, 3, 123, 4),  # 2010 SP3: RequestServerVersion Exchange2010_SP2
    "Exchange2013": Build(15, 0, 1497, 2),  # 2013 CU23: Exchange2013_SP1
    "Exchange2016": Build(15, 1, 2507, 6),  # Exchange2016
    "Exchange2019": Build(15, 2, 1118, 7),  # Exchange2016 (2019 speaks the 2016 schema)
    "Exchange365": Build(15, 20, 0, 0),  # Exchange Online: Exchange2016
}
AUTH_TYPES = {"basic": BASIC, "ntlm": NTLM}
MAX_BATCH = 512  # MaxChangesReturned allowed by Exchange (exchangelib does not check it)
# Calendar events worth a push; NewMail and FreeBusyChanged say nothing a calendar sync needs.
PUSH_EVENT_TYPES = ("CopiedEvent", "CreatedEvent", "DeletedEvent", "ModifiedEvent", "MovedEvent")


def field_paths(names: Iterable[str]) -> set[Any]:
    return {FieldPath(field=CalendarItem.get_field_by_fieldname(name)) for name in names}


class GetCalendarItems(GetItem):
    """GetItem that yields ``(item, times)`` pairs (or the per-item error), in request order. ``times`` is what
    calsync read itself of the element (:class:`ItemTimes`), or the :class:`Unreadable` that stopped it."""

    def _elem_to_obj(self, elem: Any) -> tuple[Any, ItemTimes | Unreadable]:
        try:
            times: ItemTimes | Unreadable = read_item(elem)  # first: exchangelib clears the element once parsed
        except Unreadable as problem:
            times = problem
        return super()._elem_to_obj(elem), times


class GetFolderIds(GetFolder):
    """GetFolder for distinguished folder ids: exchangelib can only parse folders it already holds objects for."""

    def _elems_to_objs(self, elems: Iterable[Any]) -> Iterator[Any]:
        yield from elems


class SubscribeToPush(_SubscribeToPush):
    """A push Subscribe whose answer may lack the Watermark (the schema allows it; some servers leave it out)."""

    def _elem_to_obj(self, elem: Any) -> tuple[str, str | None]:
        subscription, watermark = elem
        if subscription is None or not (subscription.text or "").strip():
            raise xerr.MalformedResponseError("SubscribeResponse without a SubscriptionId")
        return subscription.text.strip(), None if watermark is None else (watermark.text or "").strip() or None

    @classmethod
    def _get_elements_in_container(cls, container: Any) -> list[Any]:
        return [(container.find(f"{{{MNS}}}SubscriptionId"), container.find(f"{{{MNS}}}Watermark"))]


class ServiceUnavailable(xerr.ErrorInternalServerTransientError):
    """A 503, with the ``Retry-After`` the server sent (seconds), if any."""

    def __init__(self, value: str, retry_after: float | None) -> None:
        super().__init__(value)
        self.retry_after = retry_after


class FailFastRemembering503(FailFast):
    """exchangelib's fail-fast policy, remembering a 503's ``Retry-After`` on the exception it raises."""

    def raise_response_errors(self, response: Any) -> None:
        try:
            super().raise_response_errors(response)
        except xerr.ErrorInternalServerTransientError as exc:
            if response.status_code != 503:
                raise
            raise ServiceUnavailable(str(exc), _retry_after(response)) from None


def _retry_after(response: Any) -> float | None:
    try:
        seconds = float(response.headers.get("Retry-After", ""))
    except (TypeError, ValueError):
        return None
    return seconds if seconds > 0 else None


class _RedactAuthorization(logging.Filter):
    """exchangelib logs request headers at DEBUG level; never let an Authorization header through."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, Mapping) and "request_headers" in args:
            headers = args.get("request_headers")
            if isinstance(headers, Mapping) and any(str(k).lower() == "authorization" for k in headers):
                redacted = {k: ("[redacted]" if str(k).lower() == "authorization" else v) for k, v in headers.items()}
                record.args = {**args, "request_headers": redacted}
        return True


_redactor = _RedactAuthorization()
for _logger in ("exchangelib.util", "exchangelib.protocol", "exchangelib.services.common"):
    if _redactor not in logging.getLogger(_logger).filters:
        logging.getLogger(_logger).addFilter(_redactor)

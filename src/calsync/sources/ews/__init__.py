"""The EWS source: Exchange Server 2010-2019 (and Exchange Online until its EWS is switched off), through
exchangelib with a service account that impersonates each operator's mailbox.

One module per job: ``client`` (calsync's layer over exchangelib: builds, services, retry policy, log
redaction), ``reading`` (what decides an item's place, read from the XML itself), ``timezones`` (zones by id
or rebuilt from their definition), ``mapping`` (an item as an Appointment), ``errors`` (what a failure means),
``source`` (:class:`EwsSource`, the :class:`~calsync.sources.base.Source` itself).
"""

from .client import BUILDS
from .errors import classify
from .mapping import EXCEPTION_FIELDS, ITEM_FIELDS, to_appointment
from .source import EwsSource

__all__ = ["BUILDS", "EXCEPTION_FIELDS", "ITEM_FIELDS", "EwsSource", "classify", "to_appointment"]

"""The Graph source: Exchange Online through Microsoft Graph v1.0. ``client`` (httpx + MSAL: tokens, requests,
``$batch``), ``errors`` (what a failure means), ``mapping`` (an event as an Appointment), ``notifications`` (the
listener's reader of change and lifecycle notifications), ``source`` (:class:`GraphSource`)."""

from .source import GraphSource

__all__ = ["GraphSource"]

"""The Microsoft Graph v1.0 wing of the emulator: the same mailboxes EWS serves, as Exchange Online shows them
through Graph (events, calendar views, delta, change notifications), behind an Entra-ID-like token endpoint.
Written from Microsoft's Graph documentation and samples; it imports no Graph client. See docs/emulator.md.
"""

from .wing import GraphWing

__all__ = ["GraphWing"]

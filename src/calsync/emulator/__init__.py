"""A Microsoft Exchange server for development and tests: EWS (SOAP over HTTP) and Microsoft Graph v1.0 on the
same mailboxes in memory, push/pull/streaming notifications and Graph change notifications, an Entra-ID-like token
endpoint, and a control API to act as users, read the truth and inject faults.

It is written from the protocols (``types.xsd``, ``messages.xsd``, Microsoft's EWS and Graph documentation) and
imports no EWS or Graph client, so clients are tested against an independent implementation.
"""

from .server import Emulator, EmulatorProcess

__all__ = ["Emulator", "EmulatorProcess"]

"""A Microsoft Exchange (EWS) server for development and tests: SOAP over HTTP, many mailboxes in memory,
push/pull/streaming notifications, and a control API to act as users, read the truth and inject faults.

It is written from the protocol (``types.xsd``, ``messages.xsd`` and Microsoft's documentation) and
imports no EWS client, so clients are tested against an independent implementation.
"""

from .server import Emulator, EmulatorProcess

__all__ = ["Emulator", "EmulatorProcess"]

"""A Microsoft Exchange server for development and tests: EWS (SOAP over HTTP) and Microsoft Graph v1.0 on the
same mailboxes in memory, push/pull/streaming notifications and Graph change notifications, an Entra-ID-like token
endpoint, and a control API to act as users, read the truth and inject faults.

It is written from the protocols (``types.xsd``, ``messages.xsd``, Microsoft's EWS and Graph documentation) and
imports no EWS or Graph client, so clients are tested against an independent implementation.

The server is loaded when first named (``from calsync.emulator import Emulator``), so that the command line, which
only registers ``calsync emulator``, starts without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import Emulator, EmulatorProcess

__all__ = ["Emulator", "EmulatorProcess"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The one kind of error the emulated Exchange raises: a response code (``ErrorItemNotFound``,
``ErrorCalendarInvalidRecurrence``, ...) with its message. Both protocols report these codes: EWS as the
ResponseCode of a response message (or a SOAP fault), Graph as the ``code`` of its JSON error (Exchange Online
answers Graph requests with the same codes, ``ErrorItemNotFound`` for a missing event)."""

from __future__ import annotations


class EwsError(Exception):
    """A response code (for example ErrorItemNotFound) with its message and optional details."""

    def __init__(self, code: str, message: str, *, details: dict[str, str] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details or {}

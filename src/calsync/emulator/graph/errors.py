"""Graph's error answers: ``{"error": {"code", "message", "innerError": {"date", "request-id",
"client-request-id"}}}`` with an HTTP status, and the status each Exchange response code gets when Exchange Online
answers a Graph request with it (a missing event is ``404 ErrorItemNotFound`` in both protocols)."""

from __future__ import annotations

from ..errors import EwsError

# The HTTP status of Exchange's response codes as Graph passes them on; any other code is a 400.
EXCHANGE_STATUS = {
    "ErrorItemNotFound": 404,
    "ErrorNonExistentMailbox": 404,
    "ErrorFolderNotFound": 404,
    "ErrorAccessDenied": 403,
    "ErrorIrresolvableConflict": 412,
}


class GraphError(Exception):
    """An error answer: HTTP status, Graph error code, message, and headers to send with it."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    @classmethod
    def from_exchange(cls, exc: EwsError) -> GraphError:
        return cls(EXCHANGE_STATUS.get(exc.code, 400), exc.code, exc.message)


def bad_request(message: str, code: str = "ErrorInvalidRequest") -> GraphError:
    return GraphError(400, code, message)

"""Structured logs: one JSON object per line, with the fields code passes in ``extra`` (``operator``: the
operator's id, ``mailbox``: its e-mail address, ``code``, ...). Nothing secret is ever passed to a log call; as
a second line of defence, values of fields whose names suggest a secret are masked, and the secret values
registered with :func:`mask` (the runtime registers the configured passwords, client secret and listener
secrets) are replaced by ``********`` wherever they appear in a line: the message, any field, a traceback."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO

_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
_SECRET_WORDS = ("password", "secret", "token", "authorization")
MASK = "********"
MIN_MASKED = 4  # shorter values are not masked by value (they would mangle every line); their fields still are

_masked: tuple[str, ...] = ()
_masked_lock = threading.Lock()


def mask(secrets: Iterable[str | None]) -> None:
    """Replace these values by ``********`` wherever they appear in a log line, from now on, in this process."""
    global _masked
    with _masked_lock:
        values = set(_masked) | {s for s in secrets if s and len(s) >= MIN_MASKED}
        _masked = tuple(sorted(values, key=len, reverse=True))  # longest first: a secret containing another


def scrub(text: str) -> str:
    for secret in _masked:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _clean(value: object) -> object:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v) for v in value]
    return scrub(str(value))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_"):
                continue
            data[key] = MASK if any(w in key.lower() for w in _SECRET_WORDS) else value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(_clean(data) if _masked else data, default=str)


def configure(level: str = "INFO", *, stream: IO[str] | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("exchangelib", "httpx", "httpcore", "uvicorn.access", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))

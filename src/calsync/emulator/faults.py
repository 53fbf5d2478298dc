"""Faults the emulator can be told to inject, so clients can be tested against a misbehaving Exchange.

Counted faults apply to the next N matching requests (or deliveries); ``-1`` means until cleared. ``dialect``
switches on forms other EWS servers write (:mod:`calsync.emulator.ews.dialect`). The ``graph_`` faults act on the
Microsoft Graph wing only (its requests and its change notifications); the others on EWS only.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields

from .ews import dialect


@dataclass
class Faults:
    server_busy: int = 0  # next N EWS requests answer ErrorServerBusy
    server_busy_backoff_ms: int = 5000
    server_busy_mailbox: str | None = None  # only requests for this mailbox (None: any)
    http_503: int = 0  # next N EWS requests answer 503 Service Unavailable
    slow_seconds: float = 0.0  # delay every EWS answer by this many real seconds
    drop_connections: int = 0  # next N EWS requests have their connection cut mid-answer
    lost_push: int = 0  # next N push deliveries are counted as delivered but never sent
    listener_unreachable: bool = False  # every push delivery fails as if the listener were down
    dialect: list[str] = field(default_factory=list)  # forms other servers write (calsync.emulator.ews.dialect)
    graph_throttle: int = 0  # next N Graph requests answer 429 TooManyRequests with Retry-After
    graph_retry_after: float = 2.0  # seconds in Retry-After of those 429s (and of graph_503's answers)
    graph_503: int = 0  # next N Graph requests answer 503 Service Unavailable
    graph_slow_seconds: float = 0.0  # delay every Graph answer by this many real seconds
    graph_lost_notifications: int = 0  # next N Graph notification POSTs are counted as delivered but never sent
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def take(self, name: str, mailbox: str | None = None) -> bool:
        """Consume one unit of a counted fault; true when it applies to this request."""
        with self._lock:
            remaining = getattr(self, name)
            if remaining == 0:
                return False
            if name == "server_busy" and self.server_busy_mailbox and mailbox != self.server_busy_mailbox:
                return False
            if remaining > 0:
                setattr(self, name, remaining - 1)
            return True

    def update(self, **changes: object) -> None:
        with self._lock:
            for key, value in changes.items():
                if key.startswith("_") or not hasattr(self, key):
                    allowed = ", ".join(k for k in self.as_dict())
                    raise ValueError(f"unknown fault '{key}'; allowed: {allowed}")
                current = getattr(self, key)
                if key == "dialect":
                    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                        raise ValueError(f"fault 'dialect' takes a list of names, got {value!r}")
                    value = dialect.check(value)
                elif current is not None and value is not None and not isinstance(value, type(current)):
                    if isinstance(current, float) and isinstance(value, int):
                        value = float(value)
                    else:
                        raise ValueError(f"fault '{key}' takes a {type(current).__name__}, got {value!r}")
                setattr(self, key, value)

    def dialects(self) -> frozenset[str]:
        return frozenset(self.dialect)

    def clear(self) -> None:
        with self._lock:
            fresh = Faults()
            for key, value in fresh.as_dict().items():
                setattr(self, key, value)

    def as_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}

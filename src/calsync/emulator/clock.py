"""The emulator's clock: real time, optionally sped up, and able to jump ahead.

Tests make StatusFrequency "minutes" pass in seconds with ``speed`` (60 makes an emulated minute last one
real second) and age watermarks or sync states with :meth:`Clock.advance`. Every duration the emulator
waits for (push retries, heartbeats, streaming timeouts) is measured on this clock.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta


class Clock:
    def __init__(self, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError(f"clock speed must be positive, got {speed}")
        self._lock = threading.Lock()
        self._speed = speed
        self._wall0 = datetime.now(UTC)
        self._mono0 = time.monotonic()
        self._offset = 0.0  # emulated seconds added by advance()

    @property
    def speed(self) -> float:
        return self._speed

    def set_speed(self, speed: float) -> None:
        if speed <= 0:
            raise ValueError(f"clock speed must be positive, got {speed}")
        with self._lock:
            # Re-anchor so the emulated time does not jump when the speed changes.
            now = self.seconds()
            self._mono0 = time.monotonic()
            self._offset = now
            self._speed = speed

    def seconds(self) -> float:
        """Emulated seconds since the clock started."""
        return (time.monotonic() - self._mono0) * self._speed + self._offset

    def now(self) -> datetime:
        return self._wall0 + timedelta(seconds=self.seconds())

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds

    def real_seconds(self, emulated_seconds: float) -> float:
        """How long an emulated duration lasts in real time."""
        return max(0.0, emulated_seconds / self._speed)

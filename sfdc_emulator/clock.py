"""Emulator time: wall-clock time plus an offset that ``advance-clock`` moves forward.

Every timestamp the emulator writes (SystemModstamp, commitTimestamp, event retention)
comes from one :class:`Clock`, so tests can jump 72 hours ahead without sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime


class Clock:
    """Emulator time = wall time + ``offset_ms``; thread-safe.

    ``on_change`` (set by the store) is called with the new offset after every
    :meth:`advance`, so the offset survives restarts.
    """

    def __init__(self, offset_ms: int = 0) -> None:
        self._lock = threading.Lock()
        self._offset_ms = int(offset_ms)
        self.on_change: Callable[[int], None] | None = None

    @property
    def offset_ms(self) -> int:
        return self._offset_ms

    @offset_ms.setter
    def offset_ms(self, value: int) -> None:
        with self._lock:
            self._offset_ms = int(value)

    def now_ms(self) -> int:
        """Epoch milliseconds, emulator time."""
        return time.time_ns() // 1_000_000 + self._offset_ms

    def now(self) -> datetime:
        """Tz-aware UTC datetime, emulator time (millisecond precision)."""
        return datetime.fromtimestamp(self.now_ms() / 1000, tz=UTC)

    def advance(self, seconds: float) -> None:
        """Move emulator time forward (negative values are refused: time never goes back)."""
        if seconds < 0:
            raise ValueError("the emulator clock only moves forward")
        with self._lock:
            self._offset_ms += round(seconds * 1000)
            offset = self._offset_ms
        if self.on_change is not None:
            self.on_change(offset)

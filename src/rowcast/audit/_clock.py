"""Revision times: UTC epoch seconds that never repeat nor go back in this process.

Private to `rowcast.audit`: the session hooks and the audit sink order the
revisions of a row by ``rev_created``, so no two may share one.
"""

from __future__ import annotations

import threading
import time

__all__ = ["Clock", "clock"]


class Clock:
    """UTC epoch seconds that never repeat nor go back in this process (1 us apart)."""

    def __init__(self) -> None:
        self._last = 0.0
        self._lock = threading.Lock()

    def take(self, count: int, at: float | None = None) -> float:
        """The first of `count` increasing times, 1 us apart, no earlier than `at` (or now)."""
        with self._lock:
            start = max(time.time() if at is None else at, self._last + 1e-6)
            self._last = start + (count - 1) * 1e-6
        return start


clock = Clock()

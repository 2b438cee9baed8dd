"""The cyclic garbage collector paused, for `rowcast._speedups.gc_paused` (its trick)."""

from __future__ import annotations

import gc
import threading

__all__ = ["PAUSE", "Pause"]


class Pause:
    """`rowcast._speedups.accelerated.gc_paused`: re-entrant across threads (a depth
    under a lock): the collector back on after the last thread inside leaves, if it was
    on before the first came in."""

    def __init__(self) -> None:
        self._lock, self._depth, self._was_on = threading.Lock(), 0, False

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._was_on = gc.isenabled()
                gc.disable()
            self._depth += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._was_on:
                gc.enable()


PAUSE = Pause()

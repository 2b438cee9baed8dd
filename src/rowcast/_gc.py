"""The cyclic garbage collector paused, for `rowcast._speedups.gc_paused` (its trick).

While paused, the collector does not walk the young objects every few hundred made
(a backfill's chunk makes tens of thousands that live on: dicts, pairs, Changes). It
still counts them: turned back on, the first allocation would walk them all at once
(about a millisecond for 10,000 rows, a sixth of a SQLite chunk's time), and the
survivors once more in the next generation. So when the last thread leaves, the
young objects are moved to the oldest generation in one step (``gc.freeze()`` then
``gc.unfreeze()``: two list splices, the young count reset): nothing is walked now,
and everything stays collectable (a cycle made meanwhile goes at the next full
collection). Skipped while the program keeps objects frozen of its own (a pre-fork
server's ``gc.freeze()``): `gc.unfreeze` would let them go.
"""

from __future__ import annotations

import gc
import threading

__all__ = ["PAUSE", "Pause"]


class Pause:
    """`rowcast._speedups.accelerated.gc_paused`: re-entrant across threads (a depth
    under a lock): the collector back on after the last thread inside leaves, if it was
    on before the first came in, the objects made meanwhile aged (see above)."""

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
                if not gc.get_freeze_count():
                    gc.freeze()
                    gc.unfreeze()
                gc.enable()


PAUSE = Pause()

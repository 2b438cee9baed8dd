"""A tail's heartbeat: ``alive`` rows in ``rowcast_signal`` while a backfill is unfinished.

Private to `rowcast.sources` (`rowcast.sources._backfill.Backfill` keeps one going
while a reader that resumes nothing, a tail, has a backfill unfinished).

A tail killed mid-backfill never finishes it, so `rowcast.sources.backfills.status`
takes a tail that wrote no row for ``STALE_AFTER`` seconds for stopped (*abandoned*).
The engine writes its rows between the log's transactions, and none while whoever
reads the tail does not take what it hands out (``rowcast tail ... | slow-consumer``:
its generator waits at a ``yield``) or while its log brings nothing. So a daemon
thread, on a connection of its own, writes an ``alive`` row every `EVERY` seconds
(and deletes the one before): only the death of the process stops the beats, and
its end, a cancel, a failure or the tail's close stop them (the last beat deleted).

An ``alive`` row has the tail's ``reader``, no ``request``, empty ``data``, and
``created`` from the database's clock (`rowcast.sources.signal`). Every reader skips
its changes in the log as it skips all of ``rowcast_signal``'s, and the engine acts
only on the kinds it knows (``backfill``, ``cancel``, ``low``, ``high``), as every
rowcast before this one did: an older reader ignores the beats. ``status`` counts a
beat as the tail's newest row; an older ``rowcast backfill --status`` does not read
them (it judges a blocked tail stopped, as it always did).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable

from .signal import ALIVE, SignalTable

__all__ = ["EVERY", "Heartbeat"]

log = logging.getLogger("rowcast.sources.backfill")

#: seconds between two beats: a quarter of `rowcast.sources.backfills.STALE_AFTER` (60),
#: so that three beats in a row may be late or lost (a database away for a moment, a slow
#: commit) before a tail is judged stopped, for two small writes every 15 s. A
#: ``--stale-after`` below two beats (30 s) may judge a blocked tail stopped.
EVERY = 15.0


class Heartbeat:
    """Beats of `reader`, kept going by `keep`, each run of them on a table `signals`
    opens (a connection of its own)."""

    def __init__(self, signals: Callable[[], SignalTable], reader: str) -> None:
        self._signals, self.reader = signals, reader
        self._running: tuple[threading.Thread, threading.Event] | None = None

    def keep(self, beating: bool) -> None:
        """Start beating, or stop (a no-op when it already does, or does not)."""
        if beating and self._running is None:
            try:
                table = self._signals()
            except Exception as error:  # the tail reads on: only its followers may misjudge it
                log.warning("backfills: %s has no heartbeat: %s", self.reader, error)
                return
            stop = threading.Event()
            thread = threading.Thread(
                target=self._beat,
                args=(table, stop),
                name=f"rowcast-heartbeat-{self.reader}",
                daemon=True,
            )
            thread.start()
            self._running = (thread, stop)
        elif not beating:
            self.stop()

    def stop(self) -> None:
        """Stop beating, the last beat deleted (waits a while for a write under way)."""
        running, self._running = self._running, None
        if running is not None:
            thread, stop = running
            stop.set()
            thread.join(EVERY)

    def _beat(self, table: SignalTable, stop: threading.Event) -> None:
        beats: list[int] = []  # written and not deleted yet, the newest last
        failing = False
        try:
            while True:
                try:
                    beats.append(table.write(ALIVE, reader=self.reader))
                    table.delete(beats[:-1])
                    del beats[:-1]
                    failing = False
                except Exception as error:  # the database away: the next beat tries again
                    if not failing:
                        log.warning("backfills: %s's heartbeat failed: %s", self.reader, error)
                    failing = True
                if stop.wait(EVERY):
                    break
        finally:
            with contextlib.suppress(Exception):  # gone with the server: harmless
                table.delete(beats)
            table.close()

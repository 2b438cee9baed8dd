"""A reader's progress on backfill requests, as ``progress`` rows of ``rowcast_signal``.

Private to `rowcast.sources` (`rowcast.sources._backfill.Backfill` records through it).
After each chunk the reader records how far it got with the position the chunk went
out with; a relay restarted from its checkpoint takes each request up from its latest
progress at or before that position. So a relay keeps the progress rows its checkpoint
has not passed yet, and of those it has passed only the latest; a tail, which resumes
nothing, keeps only its latest. What ``rowcast backfill --status`` shows is the latest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from .signal import SignalTable

__all__ = ["Progress"]

log = logging.getLogger("rowcast.sources.backfill")


class Progress:
    """The progress rows one reader keeps (`marks`), written through `signals`.

    `order` places a position in the log (None: it cannot); `checkpoint` (None: a tail)
    says which rows a restart could still need; `broken` closes the connections after a
    failed write (opened again when next needed)."""

    def __init__(
        self,
        signals: Callable[[], SignalTable],
        reader: str,
        resumable: bool,
        order: Callable[[str | None], Any],
        checkpoint: Any,
        broken: Callable[[], None],
    ) -> None:
        self._signals, self._order, self._broken = signals, order, broken
        self.reader, self.resumable, self.checkpoint = reader, resumable, checkpoint
        self.marks: dict[int, list[tuple[int, Any]]] = {}  # request: [(row id, order)]

    def mark(
        self,
        request: int,
        data: dict[str, Any],
        position: str | None,
        forget: Sequence[int] = (),
    ) -> None:
        """Record this reader's progress on `request` as of `position`; forget the rows
        `forget` and the progress rows a checkpoint has passed but the latest. A database
        that is away loses the record (a restart then reads the chunk again)."""
        try:
            self._record(request, data, position, forget)
        except Exception as error:
            self._broken()
            log.warning("backfill %d: progress not recorded: %s", request, error)

    def _record(
        self, request: int, data: dict[str, Any], position: str | None, forget: Sequence[int]
    ) -> None:
        data = {**data, "resumes": self.resumable}  # False: a tail, never taken up
        new = self._signals().write(
            "progress", data, request=request, reader=self.reader, position=position
        )
        marks = self.marks.setdefault(request, [])
        marks.append((new, self._order(position)))
        gone = list(forget)
        if not self.resumable:  # resumes nothing: its latest progress is all it needs
            gone.extend(m[0] for m in marks[:-1])
            del marks[:-1]
        saved = self._saved()
        if saved is not None:
            passed = [m for m in marks if m[1] is not None and m[1] <= saved]
            if len(passed) > 1:
                drop = {m[0] for m in passed[:-1]}
                gone.extend(drop)
                marks[:] = [m for m in marks if m[0] not in drop]
        self._signals().delete(gone)

    def _saved(self) -> Any:
        """The order of what the checkpoint holds (None: nothing known)."""
        if self.checkpoint is None:
            return None
        try:
            return self._order(self.checkpoint.load())
        except Exception:  # the checkpoint's own errors are the relay's to report
            return None

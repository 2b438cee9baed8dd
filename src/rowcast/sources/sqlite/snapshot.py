"""The initial snapshot of a SQLite trigger source: every existing row, then rowcast_changes.

Private to `rowcast.sources.sqlite` (``TriggerSource(snapshot="initial")``).

How it stays consistent: the triggers are installed first (committed), so every
write from then on lands in ``rowcast_changes``. Then one write transaction
(``BEGIN IMMEDIATE``) seals the newest ``rowcast_changes`` row (a transaction
ends there), and a read transaction on a second connection reads that newest
row and every row of the chosen tables: one view of the file, so a write is
either in the rows read (its seq at or before the newest read) or comes after,
in ``rowcast_changes``. If a write committed between the seal and the read, the
newest row is unsealed: the seal is taken again. The read holds no lock in WAL
mode (the app writes on while the snapshot is read); in rollback-journal mode
it holds the shared lock, so the app's writes wait until it is done. Rows are
read table by table in name order, in chunks of `chunk` rows by key (the
primary key, or the rowid), each one transaction of ``write`` changes with
``snapshot=True`` whose images and ``pk`` are what the triggers record. Then
``rowcast_changes`` is read after the newest row read: nothing missed or
doubled. A relay killed mid-snapshot resumes from its last chunk's position
(`rowcast.sources._snapshot`): at a new point it hands out what
``rowcast_changes`` holds between the two (as the `Seam` says), then reads the
rest. A table is read in its primary key's order and collation (the rowid's
without one); rows whose key holds a NULL (SQLite allows it in a primary key
that is not an INTEGER one) first, by rowid (see `Keys.chunks`). A cut among
those cannot be placed by key: the seam hands out every change of such a row
(it may come again in the read).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..._speedups import gc_paused
from ...change import Change
from .._snapshot import Cut, Seam, SnapshotProgress, check_options, is_position, parse, position
from . import triggers
from .decode import Decoder
from .file import connect
from .keys import Keys

__all__ = ["Snapshot", "SnapshotProgress", "check_options", "is_position", "plan"]

log = logging.getLogger("rowcast.sources.snapshot")


def _seq(point: str) -> int:
    if not point.isdigit():
        raise ValueError(f"{point!r} is not a rowcast_changes seq")
    return int(point)


def plan(start: str, snapshot: str) -> Cut | None:
    """The snapshot a reader starting at `start` reads, resumes or catches up after, or None."""
    if is_position(start):
        return parse(start, _seq)
    if start == "now" and snapshot == "initial":
        return Cut()
    return None


class Snapshot:
    """One run of a snapshot of the file at `path`, new or resumed (`cut`).

    Iterate it for its transactions; afterwards `resume` is the seq to read
    ``rowcast_changes`` after. `seal` seals the newest row in a write transaction
    of its own (None: stopped while waiting for the lock); `decoder` turns rows of
    ``rowcast_changes`` into changes (a resumed snapshot hands out what happened
    in between); `conn` compares keys; `save` records where a new snapshot begins
    before its first chunk (a checkpoint's).
    """

    def __init__(
        self,
        path: str,
        timeout: float,
        cut: Cut,
        wanted: Callable[[str], bool],
        chunk: int,
        stopping: threading.Event,
        *,
        seal: Callable[[], tuple[int, float | None] | None],
        decoder: Decoder,
        conn: sqlite3.Connection,
        save: Callable[[str], None] | None = None,
    ) -> None:
        self.path, self.timeout, self.cut, self.chunk = path, timeout, cut, chunk
        self._wanted, self._stopping, self._seal, self._conn = wanted, stopping, seal, conn
        self._decoder, self._save = decoder, save
        self.progress = SnapshotProgress()
        self.resume = 0
        self._keys = Keys(conn)
        self._greater, self._old_key = self._keys.greater, self._keys.old_key

    def __iter__(self) -> Iterator[list[Change]]:
        with contextlib.closing(connect(self.path, self.timeout)) as reader:
            try:
                yield from self._read(reader)
            finally:
                if reader.in_transaction:
                    reader.execute("ROLLBACK")

    def _pin(self, reader: sqlite3.Connection) -> int | None:
        """Open the read on `reader` at a sealed newest row; its seq (None: stopped)."""
        while True:
            if self._seal() is None:
                return None
            reader.execute("BEGIN")
            row = reader.execute(
                f"SELECT seq, sealed FROM {triggers.CHANGES} ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            if row is None:
                found = reader.execute(
                    "SELECT value FROM rowcast_state WHERE key = 'pruned'"
                ).fetchone()
                return int(found[0]) if found else 0
            if row[1] is not None:
                return int(row[0])
            reader.execute("ROLLBACK")  # a write came between: seal again

    def _read(self, reader: sqlite3.Connection) -> Iterator[list[Change]]:
        point = self._pin(reader)
        if point is None:
            return
        here, begin = str(point), self.cut.at
        if self.cut.point:  # resumed: what happened since, as the consumer needs it
            seam = Seam(begin, self._greater, self._old_key)
            # first pass: which rows it deletes (see Seam.learn)
            for changes, _ in self._between(reader, int(self.cut.point), point):
                if self._stopping.is_set():
                    return
                seam.learn(changes)
            for changes, end in self._between(reader, int(self.cut.point), point):
                if self._stopping.is_set():
                    return
                kept = seam.keep(changes, position(str(end), begin))
                if kept:
                    yield kept
        elif self._save is not None:
            self._save(position(here, None))
        tables = sorted(triggers.tables(reader, self._wanted), key=lambda t: t.name)
        if begin is not None:
            tables = [t for t in tables if ("main", t.name) >= begin[:2]]
        self.progress.tables = len(tables)
        log.info("snapshot of %d tables at seq %s", len(tables), here)
        ts, txid = time.time(), f"snapshot:{here}"
        for table in tables:
            after = begin[2] if begin is not None and begin[1] == table.name else None
            self.progress.table = f"main.{table.name}"
            for rows, last in self._keys.chunks(reader, table, after, self.chunk):
                if self._stopping.is_set():
                    return
                at = position(here, ("main", table.name, last))
                with gc_paused():  # tens of thousands of objects that live on: see _speedups
                    changes = rows.changes("main", table.name, ts, txid, at, "sqlite")
                yield changes
                self.progress.rows += len(rows)
            self.progress.tables_done += 1
            log.info("snapshot: %s read (%d rows so far)", table.name, self.progress.rows)
        reader.execute("COMMIT")
        self.progress.table, self.progress.done, self.resume = None, True, point
        log.info("snapshot done: %d rows; reading on after seq %s", self.progress.rows, here)

    def _between(
        self, reader: sqlite3.Connection, start: int, end: int
    ) -> Iterator[tuple[list[Change], int]]:
        """The transactions of ``rowcast_changes`` after seq `start` up to seq `end` (sealed),
        each with its last seq, as the read sees them."""
        group: list[Any] = []
        after = start
        while after < end:
            rows = reader.execute(
                f"SELECT * FROM {triggers.CHANGES} WHERE seq > ? AND seq <= ? ORDER BY seq "
                "LIMIT 1000",
                (after, end),
            ).fetchall()
            if not rows:
                return
            for row in rows:
                group.append(row)
                if row[2] is not None:  # sealed: a transaction ends here
                    changes = self._decoder.changes(reader, group)
                    if changes:
                        yield changes, row[0]
                    group = []
            after = rows[-1][0]

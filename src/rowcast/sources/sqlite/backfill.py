"""Backfills of a SQLite file: what `rowcast.sources._backfill` needs of it.

Private to `rowcast.sources.sqlite`. ``rowcast_signal`` is captured by triggers
like any table (a request made before a reader installed them installs the signal's
own, and no other: `prepare`). A chunk is read in a transaction of its own on a connection
of its own, by key in SQLite's order (`rowcast.sources.sqlite.keys`).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from ...change import Change
from ...errors import ConfigError
from .._rows import Rows
from ..signal import NAME, SignalTable
from . import triggers
from .file import check_patterns, connect, matcher
from .keys import Keys, key_at

__all__ = ["SqliteReads"]


class SqliteReads:
    """`rowcast.sources._backfill.Reads` of the file at `path`, for `url` (messages)."""

    source = "sqlite"

    def __init__(self, path: str, url: str, timeout: float, capture: Callable[[str], bool]) -> None:
        self.path, self.url, self.timeout, self._capture = path, url, timeout, capture
        self._conn: sqlite3.Connection | None = None
        self._keys: Keys | None = None
        self._tables: dict[str, triggers.Table] = {}

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect(self.path, self.timeout)
            self._keys = Keys(self._conn)
        return self._conn

    def close(self) -> None:
        conn, self._conn, self._keys = self._conn, None, None
        self._tables.clear()
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def signals(self, durable: bool = True) -> SignalTable:
        """``rowcast_signal``; not `durable`: for a reader's own watermarks and progress
        rows, which need no fsync each (`_unsynced`). A request, a cancel: durable."""
        if durable:
            return SignalTable(lambda: connect(self.path, self.timeout), "sqlite")
        return SignalTable(self._unsynced, "sqlite")

    def _unsynced(self) -> sqlite3.Connection:
        """A connection whose commits take no fsync each, in WAL mode.

        There, a commit without one is still atomic and in order; the source hands out
        no row until its seal is committed with one (`triggers.seal_newest`), which
        makes every frame before it durable too. So a power cut can only take rows that
        nothing was given yet (a chunk is then read again). In a rollback journal the
        connection syncs as it would (there, NORMAL could corrupt the file).
        """
        conn = connect(self.path, self.timeout)
        if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
            conn.execute("PRAGMA synchronous = NORMAL")  # 1 fsync a chunk, not 4
        return conn

    def prepare(self, signals: SignalTable) -> None:
        """Make ``rowcast_signal`` and its triggers, so that a request is in the log.

        Only those: the app's tables get no trigger from a request (a reader installs
        its own), so nothing of the app's lands in ``rowcast_changes`` while no reader
        reads it. The signal's triggers write there: it is made (with its helper
        tables) when no reader made it yet."""
        signals.create()
        triggers.apply(self._db(), lambda name: name == NAME)

    def is_signal(self, change: Change) -> bool:
        return change.table == NAME

    def tables(self, patterns: Sequence[str]) -> list[tuple[str, str]]:
        conn = self._db()
        wanted = tuple(patterns)
        check_patterns(conn, self.url, wanted, later=False)
        match = matcher(wanted)
        found = triggers.tables(  # of what the reader captures: another may capture the rest
            conn, lambda name: name != NAME and bool(match(name)) and self._capture(name)
        )
        for table in found:
            self._tables[table.name] = table
        return [("main", t.name) for t in found]

    def chunk(
        self, schema: str, table: str, after: Any, where: str | None, size: int
    ) -> tuple[Rows, Any]:
        conn = self._db()
        described = self._tables.get(table)
        if described is None:
            self.tables([table])
            described = self._tables[table]
        assert self._keys is not None
        conn.execute("BEGIN")
        try:
            for rows, last in self._keys.chunks(conn, described, after, size, where):
                return rows, last
            return Rows([], described.columns, key_at(described)), after
        except sqlite3.OperationalError as e:
            raise ConfigError(f"{self.url}: reading {table} failed: {e}") from e
        finally:
            conn.execute("ROLLBACK")

    def old_key(self, change: Change) -> Any:
        self._db()
        assert self._keys is not None
        return self._keys.old_key(change)

    def order(self, position: str) -> Any:
        return int(position)

"""`SQLiteEventStore`: the embedded default, on the standard library's sqlite3.

URLs: ``sqlite:///relative/path.db`` (relative to the working directory at
open), ``sqlite:////abs/path.db``, ``sqlite:///~/events.db``, and ``sqlite://``
or ``sqlite:///:memory:`` for a store that lives in this object only. Options
as query parameters or keywords: ``timeout`` (seconds to wait for another
writer, default 30) and ``synchronous`` (``full``, the default: an append is
on disk when it returns; ``normal``: faster, and still safe from a crash of
the process, but the last appends may be lost if the machine loses power). A
missing file, its missing directory and the tables are created; with the keyword
``create=False`` nothing is: a file without the store's tables (an app's database,
a typo) is a `StoreError` naming ``rowcast events init``, and a file that is not
there is not made (the read commands of ``rowcast events`` open stores this way).

How it keeps the contract:

* One table ``rowcast_events``: ``position INTEGER PRIMARY KEY AUTOINCREMENT`` is
  the global order (AUTOINCREMENT never reuses a position, even after a delete),
  ``UNIQUE (stream, version)`` and ``UNIQUE (id)`` (16-byte BLOB) guard the rest;
  data and metadata are codec JSON text. ``rowcast_snapshots`` holds one row per
  (stream, name): the state as a BLOB and a flag for bytes or JSON.
* WAL journal, so readers in other processes never block a writer; each
  append is one ``BEGIN IMMEDIATE`` transaction (it takes the write lock
  before it reads the stream's version, so two writers never interleave), one
  ``SELECT max(version)`` and one ``executemany``. Ids are not looked up on the
  way: the UNIQUE constraint finds a reused id, and only then, after the
  rollback, does the store work out whether the batch is a retry.
* A writer that finds the database locked waits (``busy_timeout``) and, when
  SQLite gives up early (as it may in WAL mode), retries the whole transaction
  with a growing, jittered pause, for ``timeout`` seconds at most; then it is a
  `StoreError`.
* Watchers (`rowcast.store._watch`) wake at once for appends through this
  object; for commits by other connections (processes, or other store objects
  on the file) one blocked watcher polls ``PRAGMA data_version`` every 50 ms.
  ``rowcast_subscriptions`` keeps each subscription's stream and position.
* Thread safety: one connection (``check_same_thread=False``) behind a lock.
  A read fetches a page of rows under the lock and decodes it outside, so a
  slow consumer of `read` never holds the lock, and an abandoned iterator
  holds nothing. Several stores (or processes) on one file coordinate through
  SQLite's own locks.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from itertools import repeat
from pathlib import Path
from typing import Any, Final, NoReturn, TypeVar
from urllib.parse import quote

from .._speedups import uuid_from_bytes
from .._url import made_directory, masked
from ..codec import object_hook
from ..errors import ConfigError, StoreError, WrongExpectedVersion
from ._core import (
    EncodedBatch,
    decode_state,
    join_groups,
    refused_append,
    split_groups,
    version_matches,
)
from ._sqlite_batch import INSERT, append_all, stored_ids
from ._sqlite_streams import list_streams
from ._sqlite_url import parse_url
from .base import EventStore
from .types import (
    ALL,
    ANY,
    DEFAULT_URL,
    AppendResult,
    ExpectedVersion,
    RecordedEvent,
    Snapshot,
    StreamInfo,
)

__all__ = ["SQLiteEventStore"]

_T = TypeVar("_T")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS rowcast_events (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    version INTEGER NOT NULL,
    id BLOB NOT NULL UNIQUE,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    metadata TEXT,
    recorded_at REAL NOT NULL,
    UNIQUE (stream, version)
);
CREATE TABLE IF NOT EXISTS rowcast_snapshots (
    stream TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    state BLOB NOT NULL,
    is_bytes INTEGER NOT NULL,
    recorded_at REAL NOT NULL,
    PRIMARY KEY (stream, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rowcast_subscriptions (
    name TEXT PRIMARY KEY,
    stream TEXT NOT NULL,
    position INTEGER NOT NULL
) WITHOUT ROWID;
"""
_VERSION: Final = "SELECT coalesce(max(version), 0) FROM rowcast_events WHERE stream = ?"
_HEAD: Final = "SELECT coalesce(max(position), 0) FROM rowcast_events"
_COLUMNS: Final = "version, position, id, type, data, metadata, recorded_at"
_READ: Final = {
    False: f"SELECT {_COLUMNS} FROM rowcast_events WHERE stream = ? AND version > ? "
    "ORDER BY version LIMIT ?",
    True: f"SELECT {_COLUMNS} FROM rowcast_events WHERE stream = ? AND version > ? "
    "AND version < ? ORDER BY version DESC LIMIT ?",
}
_READ_ALL: Final = {
    False: f"SELECT stream, {_COLUMNS} FROM rowcast_events WHERE position > ? "
    "ORDER BY position LIMIT ?",
    True: f"SELECT stream, {_COLUMNS} FROM rowcast_events WHERE position > ? "
    "AND position < ? ORDER BY position DESC LIMIT ?",
}
_SAVE_SNAPSHOT: Final = (
    "INSERT INTO rowcast_snapshots (stream, name, version, state, is_bytes, recorded_at) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (stream, name) DO UPDATE SET "
    "version = excluded.version, state = excluded.state, is_bytes = excluded.is_bytes, "
    "recorded_at = excluded.recorded_at WHERE excluded.version >= rowcast_snapshots.version"
)
_LOAD_SNAPSHOT: Final = (
    "SELECT version, state, is_bytes, recorded_at FROM rowcast_snapshots "
    "WHERE stream = ? AND name = ?"
)
_SUBSCRIBE: Final = (
    "INSERT INTO rowcast_subscriptions (name, stream, position) VALUES (?, ?, 0) "
    "ON CONFLICT (name) DO NOTHING"
)
_SUBSCRIPTION: Final = "SELECT stream, position FROM rowcast_subscriptions WHERE name = ?"
_SAVE_POSITION: Final = (
    "INSERT INTO rowcast_subscriptions (name, stream, position) VALUES (?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET position = excluded.position"
)

# reads skip loads()'s whitespace checks: the store wrote the text itself
_decode = json.JSONDecoder(object_hook=object_hook).raw_decode
_PAGE: Final = 1000  # rows fetched per lock hold while reading
_MAX: Final = (1 << 63) - 1
_BUSY: Final = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
_TABLES: Final = ("rowcast_events", "rowcast_snapshots", "rowcast_subscriptions")


def _is_busy(error: sqlite3.Error) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _BUSY
    text = str(error).lower()  # pragma: no cover - Python without sqlite_errorcode
    return "locked" in text or "busy" in text


def _fetch(sql: str, params: tuple[Any, ...], conn: sqlite3.Connection) -> list[Any]:
    return conn.execute(sql, params).fetchall()


class SQLiteEventStore(EventStore):
    """The event store in one SQLite file (or in memory); see the module docstring."""

    path: str | None  #: the absolute path of the database file; None in memory

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        timeout: float | None = None,
        synchronous: str | None = None,
        create: bool = True,
    ) -> None:
        super().__init__(url)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        database, self._timeout, mode = parse_url(url, timeout, synchronous)
        if database == ":memory:":
            self.path = None
            if not create:
                self._missing("a database in memory is new and empty")
        else:
            file = Path(database).expanduser().absolute()
            if file.is_dir():
                raise ConfigError(f"{url!r} names the directory {str(file)!r}; give a file")
            if not create:
                if not file.exists():
                    self._missing(f"the file {str(file)!r} does not exist")
                database = f"file:{quote(str(file))}?mode=rw"  # never creates the file
            else:
                made_directory(f"event store {masked(url)}", file.parent)
                database = str(file)
            self.path = str(file)
        try:
            self._conn = sqlite3.connect(
                database,
                timeout=self._timeout,
                isolation_level=None,
                check_same_thread=False,
                uri=not create,
            )
        except sqlite3.Error as e:
            self._fail("open", e)
        try:
            self._run("open", lambda conn: self._setup(conn, mode, create))
        except BaseException:
            self.close()
            raise

    def _missing(self, why: str) -> NoReturn:
        raise StoreError(
            f"no rowcast event store in {self.url}: {why}; create one with "
            f"`rowcast events init {self.url}`"
        )

    def _setup(self, conn: sqlite3.Connection, synchronous: str, create: bool) -> None:
        if not create:  # look before anything is written, even the journal mode
            found = {
                name
                for (name,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN (?, ?, ?)",
                    _TABLES,
                )
            }
            if not found:
                self._missing("its database has no rowcast_events table")
            if len(found) < len(_TABLES):
                missing = ", ".join(t for t in _TABLES if t not in found)
                self._missing(f"the store lacks {missing}")
        if self.path is not None:
            (journal,) = conn.execute("PRAGMA journal_mode").fetchone()
            if journal.lower() != "wal":
                (journal,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if journal.lower() != "wal":
                raise StoreError(
                    f"event store {self.url}: SQLite refused WAL mode (journal_mode is "
                    f"{journal!r}); is the file on a network file system?"
                )
        conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        if create:
            conn.execute("BEGIN IMMEDIATE")  # rolled back by _run on failure
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("COMMIT")
        if self.path is not None:  # others may write to the file: watchers poll for that
            self._data_version = conn.execute("PRAGMA data_version").fetchone()[0]
            self._notifier.poll = self._changed_elsewhere

    # -- the connection, the lock and the retries

    def _run(self, operation: str, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """`work(connection)` under the lock, retried while the database is locked."""
        deadline = time.monotonic() + self._timeout
        pause = 0.001
        while True:
            with self._lock:
                conn = self._conn
                if conn is None:
                    raise StoreError(f"cannot {operation}: event store {self.url} is closed")
                try:
                    return work(conn)
                except sqlite3.Error as e:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    if not _is_busy(e) or time.monotonic() >= deadline:
                        self._fail(operation, e)
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            time.sleep(pause * (0.5 + random.random()))
            pause = min(pause * 2, 0.1)

    def _close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _changed_elsewhere(self) -> bool:
        """Whether another connection committed since the last call (the watchers' poll).

        ``PRAGMA data_version`` reads a counter in the WAL index, in shared
        memory: no disk I/O, a few microseconds. Our own commits do not change
        it; they wake the watchers directly.
        """

        def work(conn: sqlite3.Connection) -> bool:
            (value,) = conn.execute("PRAGMA data_version").fetchone()
            changed: bool = value != self._data_version
            self._data_version = value
            return changed

        try:
            return self._run("watch", work)
        except StoreError:
            return True  # let the watcher's next read report it (or see the close)

    # -- appends

    def _append(self, stream: str, batch: EncodedBatch, expected: ExpectedVersion) -> AppendResult:
        count = len(batch.ids)

        def work(conn: sqlite3.Connection) -> AppendResult:
            conn.execute("BEGIN IMMEDIATE")
            (current,) = conn.execute(_VERSION, (stream,)).fetchone()
            if not version_matches(expected, current):
                conn.execute("ROLLBACK")
                return self._stored_or_conflict(conn, stream, batch, expected, current)
            rows = zip(
                repeat(stream),
                range(current + 1, current + count + 1),
                batch.ids,
                batch.types,
                batch.data,
                batch.metadata,
                repeat(time.time()),
            )
            try:
                conn.executemany(INSERT, rows)
            except sqlite3.IntegrityError:
                conn.execute("ROLLBACK")
                return self._stored_or_conflict(conn, stream, batch, expected, None)
            (position,) = conn.execute("SELECT last_insert_rowid()").fetchone()
            conn.execute("COMMIT")
            return AppendResult(current + count, position)

        result = self._run("append", work)
        self._appended(stream, result)
        return result

    def _append_streams(self, groups: list[tuple[str, EncodedBatch]]) -> list[AppendResult]:
        return self._append_flat(*join_groups(groups))

    def _append_flat(
        self, streams: Sequence[str], counts: Sequence[int], batch: EncodedBatch
    ) -> list[AppendResult]:
        now = time.time()
        work = partial(append_all, streams=streams, counts=counts, batch=batch, now=now)
        results = self._run("append", partial(work, where=self.url))
        if results is None:  # some of a stream's ids stored before, say: stream by stream
            return [
                self._append(stream, part, ANY)
                for stream, part in split_groups(streams, counts, batch)
            ]
        self._appended(streams[-1], results[-1])
        return results

    def _stored_or_conflict(
        self,
        conn: sqlite3.Connection,
        stream: str,
        batch: EncodedBatch,
        expected: ExpectedVersion,
        current: int | None,
    ) -> AppendResult:
        """After a refused append: the first result if `batch` is a retry, else the error.

        `current` is the stream's version when `expected` did not match it, None
        when the insert broke a UNIQUE constraint.
        """
        ids = batch.ids
        if current is not None:  # a version conflict: a retry only if its first id is stored
            first = conn.execute("SELECT 1 FROM rowcast_events WHERE id = ?", (ids[0],))
            if first.fetchone() is None:
                raise WrongExpectedVersion(stream, expected, current)
        return refused_append(self.url, stream, ids, expected, current, stored_ids(conn, ids))

    # -- reads

    def _read(
        self, stream: str, after: int, limit: int | None, backwards: bool
    ) -> Iterator[RecordedEvent]:
        remaining = _MAX if limit is None else limit
        upper = _MAX
        everything = stream == ALL
        sql = (_READ_ALL if everything else _READ)[backwards]
        uuid_ = uuid_from_bytes
        event = RecordedEvent
        decode = _decode
        while remaining > 0:
            size = min(remaining, _PAGE)
            if everything:
                params: tuple[Any, ...] = (after, upper, size) if backwards else (after, size)
            else:
                params = (stream, after, upper, size) if backwards else (stream, after, size)
            rows = self._run("read", partial(_fetch, sql, params))
            if everything:
                for name, version, position, id_, type_, data, meta, at in rows:
                    yield event(
                        name,
                        version,
                        position,
                        uuid_(id_),
                        type_,
                        decode(data)[0],
                        None if meta is None else decode(meta)[0],
                        at,
                    )
                if rows:
                    last = rows[-1][2]
            else:
                for version, position, id_, type_, data, meta, at in rows:
                    yield event(
                        stream,
                        version,
                        position,
                        uuid_(id_),
                        type_,
                        decode(data)[0],
                        None if meta is None else decode(meta)[0],
                        at,
                    )
                if rows:
                    last = rows[-1][0]
            if len(rows) < size:
                return
            remaining -= len(rows)
            if backwards:
                upper = last
            else:
                after = last

    def _stream_version(self, stream: str) -> int:
        if stream == ALL:
            return int(self._run("read", lambda conn: conn.execute(_HEAD).fetchone()[0]))
        return int(self._run("read", lambda conn: conn.execute(_VERSION, (stream,)).fetchone()[0]))

    def _streams(self) -> dict[str, tuple[int, int]]:
        rows = self._run(
            "read",
            lambda conn: conn.execute(
                "SELECT stream, max(version), max(position) FROM rowcast_events GROUP BY stream"
            ).fetchall(),
        )
        return {name: (int(version), int(position)) for name, version, position in rows}

    def _list_streams(self, prefix: str, after: str | None, limit: int) -> list[StreamInfo]:
        return self._run(
            "list streams", partial(list_streams, prefix=prefix, after=after, limit=limit)
        )

    # -- deletes and snapshots

    def _delete_stream(self, stream: str) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM rowcast_events WHERE stream = ?", (stream,))
            conn.execute("DELETE FROM rowcast_snapshots WHERE stream = ?", (stream,))
            conn.execute("COMMIT")

        self._run("delete stream", work)

    def _save_snapshot(
        self, stream: str, name: str, version: int, state: bytes, is_bytes: bool
    ) -> None:
        params = (stream, name, version, state, int(is_bytes), time.time())
        self._run("save snapshot", lambda conn: conn.execute(_SAVE_SNAPSHOT, params))

    # -- subscriptions

    def _subscribe(self, name: str, stream: str) -> tuple[str, int]:
        def work(conn: sqlite3.Connection) -> tuple[str, int]:
            conn.execute(_SUBSCRIBE, (name, stream))
            stored, position = conn.execute(_SUBSCRIPTION, (name,)).fetchone()
            return str(stored), int(position)

        return self._run("subscribe", work)

    def _save_position(self, name: str, stream: str, position: int) -> None:
        params = (name, stream, position)
        self._run("save subscription position", lambda conn: conn.execute(_SAVE_POSITION, params))

    def _load_snapshot(self, stream: str, name: str) -> Snapshot | None:
        row = self._run(
            "load snapshot", lambda conn: conn.execute(_LOAD_SNAPSHOT, (stream, name)).fetchone()
        )
        if row is None:
            return None
        version, blob, is_bytes, at = row
        try:
            state = decode_state(blob, bool(is_bytes))
        except ValueError as e:
            raise StoreError(
                f"event store {self.url}: snapshot {name!r} of {stream!r} is corrupt: {e}"
            ) from e
        return Snapshot(stream, name, version, state, at)

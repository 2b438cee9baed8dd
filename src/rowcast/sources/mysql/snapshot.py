"""The initial snapshot of a binlog source: every existing row, then the binlog from there.

Private to `rowcast.sources.mysql` (``BinlogSource(snapshot="initial")``).

How it stays consistent: one connection opens a REPEATABLE READ transaction
``WITH CONSISTENT SNAPSHOT`` and learns the binlog position that snapshot
matches: MariaDB tells it without any lock (status variables
``binlog_snapshot_file`` / ``binlog_snapshot_position``); MySQL needs ``FLUSH
TABLES WITH READ LOCK`` for the instant it takes to open the transaction and
read ``SHOW MASTER STATUS`` (the RELOAD privilege). Every row of the chosen
tables is read in that transaction, table by table in ``(schema, table)`` order,
in chunks of `chunk` rows by primary key (keyset pagination: ``WHERE pk > last
ORDER BY pk LIMIT n``), each chunk handed out as one transaction of ``write``
changes with ``snapshot=True``. Then the binlog is read from that position: a
change committed before it is in the rows read, a change committed after it is
streamed, so nothing is missed or doubled at the seam. Only InnoDB (and other
transactional) tables are read consistently.

Cut short and resumed (a relay killed mid-snapshot): a consistent snapshot dies
with its connection, but the checkpoint holds the last chunk's position
(`rowcast.sources._snapshot`: ``snapshot:<file>:<offset>:{"at": [schema, table,
last key]}``). A restart opens a new consistent snapshot, hands out what the
binlog holds between the two positions as the `Seam` says (every change to the
rows up to that key; of the rows after it, every change of those the binlog
deletes: a relay delivers ahead of its checkpoint, so the consumer may hold
them), then reads the rest (the rows after that key, the tables after it) and
streams the binlog from the new position. A new snapshot records where it begins
(``"at": null``) before its first chunk, so a restart before a chunk was
checkpointed hands out those changes too. Which side of a cut a row lies on is
decided in the table's key order: Python's for numbers, dates, times and binary
strings, the server's own comparison (the column's collation) for text keys. A
table without a primary key cannot be cut: it is read again whole (its rows
carry ``pk=None``). A position written by an older rowcast, with the reads it
resumed (``"resumed"``), resumes from its first point and first resumed key: the
rows read after that key come again, read anew.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ...change import Change
from ...codec import loads
from ...errors import ConfigError, SourceError
from .._snapshot import PREFIX, Cut, Seam, SnapshotProgress, is_position, position
from .._snapshot import parse as parse_cut
from .keyset import KeyColumn, chunks, key_columns, raw
from .server import ServerURL, connect

__all__ = ["PREFIX", "Snapshot", "SnapshotProgress", "is_position", "parse"]

log = logging.getLogger("rowcast.sources.snapshot")

_SYSTEM = ("mysql", "information_schema", "performance_schema", "sys")
_ORDERED = frozenset(
    {"tinyint", "smallint", "mediumint", "int", "integer", "bigint", "decimal", "numeric"}
    | {"float", "double", "date", "datetime", "timestamp", "time", "year", "binary", "varbinary"}
)
_NAME = re.compile(r"[A-Za-z0-9_]+")  # a character set or collation name
#: ``between(start, end)``: the binlog's transactions ending after `start`, up to `end`
Between = Callable[[str, str], Iterator[tuple[list[Change], str]]]


def _point(value: str) -> str:
    name, sep, offset = value.rpartition(":")
    if not (name and sep and offset.isdigit()):
        raise ValueError(f"{value!r} is not file:offset")
    return value


def parse(text: str) -> Cut:
    """The `Cut` a snapshot position names; a `ConfigError` when it is malformed."""
    cut = parse_cut(text, _point)
    if '"resumed":[[' in text:  # an older rowcast's: from its first point and resumed key
        with contextlib.suppress(ValueError, KeyError, TypeError, IndexError):
            first = loads("{" + text.partition(":{")[2])["resumed"][0][0]
            cut = parse_cut(position(cut.point, tuple(first)), _point)
    return cut


class Snapshot:
    """One run of a snapshot, new (``"snapshot:"``) or resumed from a snapshot position.

    Iterate it for its transactions; afterwards `resume` is the binlog position to
    stream from. `between` reads the binlog a resumed snapshot hands out (see the
    module docstring); `save` records where a new snapshot begins (a checkpoint's).
    """

    def __init__(
        self,
        url: ServerURL,
        wants: Callable[[str, str], bool],
        start: str,
        chunk: int,
        stopping: threading.Event,
        *,
        between: Between,
        save: Callable[[str], None] | None = None,
    ) -> None:
        self.url, self.wants, self.chunk, self.stopping = url, wants, chunk, stopping
        self.cut = parse(start)
        self._between, self._save = between, save
        self.progress = SnapshotProgress()
        self.resume = ""
        self._ctl: Any = None  # compares keys the server's way
        self._keys: dict[tuple[str, str], list[KeyColumn]] = {}

    def __iter__(self) -> Iterator[list[Change]]:
        conn = connect(self.url)
        try:
            yield from self._read(conn)
        except Exception as error:
            if isinstance(error, ConfigError | SourceError):
                raise
            raise SourceError(f"{self.url.masked}: the snapshot failed: {error}") from error
        finally:
            conn.close()
            ctl, self._ctl = self._ctl, None
            if ctl is not None:
                ctl.close()

    def _read(self, conn: Any) -> Iterator[list[Change]]:
        with conn.cursor() as cur:
            here = _begin(cur)
            begin = self.cut.at
            if self.cut.point:  # resumed: what happened since, as the consumer needs it
                seam = Seam(begin, self._greater, self._old_key)
                # first pass: which rows it deletes (see Seam.learn)
                for changes, _ in self._between(self.cut.point, here):
                    if self.stopping.is_set():
                        return
                    seam.learn(changes)
                for changes, end in self._between(self.cut.point, here):
                    if self.stopping.is_set():
                        return
                    kept = seam.keep(changes, position(end, begin))
                    if kept:
                        yield kept
            elif self._save is not None:
                self._save(position(here, None))
            tables = self._tables(cur)
            if begin is not None:
                tables = [t for t in tables if (t[0], t[1]) >= (begin[0], begin[1])]
            self.progress.tables = len(tables)
            self.progress.estimate = sum(t[2] for t in tables)
            log.info(
                "snapshot of %d tables (~%d rows) at %s", len(tables), self.progress.estimate, here
            )
            ts, txid = time.time(), f"{PREFIX}{here}"
            for schema, table, _ in tables:
                after = None
                if begin is not None and (schema, table) == (begin[0], begin[1]):
                    after = begin[2]
                self.progress.table = f"{schema}.{table}"
                for rows, last in chunks(cur, schema, table, after, self.chunk):
                    if self.stopping.is_set():
                        return
                    at = position(here, (schema, table, last))
                    yield Change._reads(schema, table, rows, ts, txid, at, "mysql")
                    self.progress.rows += len(rows)
                self.progress.tables_done += 1
                log.info("snapshot: %s.%s read (%d rows so far)", schema, table, self.progress.rows)
            cur.execute("COMMIT")
        self.progress.table, self.progress.done, self.resume = None, True, here
        log.info("snapshot done: %d rows; streaming from %s", self.progress.rows, here)

    def _key(self, schema: str, table: str) -> list[KeyColumn]:
        if self._ctl is None:
            self._ctl = connect(self.url)
        key = self._keys.get((schema, table))
        if key is None:
            with self._ctl.cursor() as cur:
                key = self._keys[(schema, table)] = key_columns(cur, schema, table)
        return key

    def _old_key(self, change: Change) -> Any:
        """The key an update's before image has, when it holds the whole key."""
        if change.before is None or change.pk is None:
            return None
        key = self._key(change.schema or "", change.table)
        if not key or any(name not in change.before for name, _, _, _ in key):
            return None
        old = tuple(change.before[name] for name, _, _, _ in key)
        return old[0] if len(old) == 1 else old

    def _greater(
        self, schema: str, table: str, pk: tuple[Any, ...], after: tuple[Any, ...]
    ) -> bool:
        """``pk > after`` in the table's key order: Python's where it is the server's."""
        key = self._key(schema, table)
        if len(key) != len(pk) or len(pk) != len(after):
            return True  # the key changed since: read again is the safe answer
        if all(kind in _ORDERED for _, kind, _, _ in key):
            return bool(pk > after)
        # text keys: the server's collation decides (case, accents, trailing spaces)
        terms = []
        for _, _, charset, collation in key:
            if collation and _NAME.fullmatch(collation) and charset and _NAME.fullmatch(charset):
                terms.append(f"CONVERT(%s USING {charset}) COLLATE {collation}")
            else:
                terms.append("%s")
        ors: list[str] = []
        args: list[Any] = []
        for n in range(len(key)):
            parts = [f"{terms[i]} = {terms[i]}" for i in range(n)] + [f"{terms[n]} > {terms[n]}"]
            ors.append("(" + " AND ".join(parts) + ")")
            for i in range(n + 1):
                args.extend((raw(pk[i]), raw(after[i])))
        with self._ctl.cursor() as cur:
            cur.execute("SELECT " + " OR ".join(ors), args)
            return bool(cur.fetchone()[0])

    def _tables(self, cur: Any) -> list[tuple[str, str, int]]:
        cur.execute(
            "SELECT TABLE_SCHEMA, TABLE_NAME, COALESCE(TABLE_ROWS, 0) "
            "FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' "
            "AND TABLE_SCHEMA NOT IN (%s, %s, %s, %s)",
            _SYSTEM,
        )
        found = [(str(s), str(t), int(n)) for s, t, n in cur.fetchall() if self.wants(s, t)]
        return sorted(found)


def _begin(cur: Any) -> str:
    """Open the consistent snapshot; the binlog position it matches."""
    cur.execute("SET SESSION time_zone = '+00:00'")  # TIMESTAMP values as UTC
    cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    cur.execute("SELECT VERSION()")
    if "mariadb" in str(cur.fetchone()[0]).lower():
        cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        cur.execute("SHOW STATUS LIKE 'binlog_snapshot_%'")
        status = {str(k).lower(): str(v) for k, v in cur.fetchall()}
        return f"{status['binlog_snapshot_file']}:{status['binlog_snapshot_position']}"
    cur.execute("FLUSH TABLES WITH READ LOCK")  # MySQL: writes wait while the position is read
    try:
        cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        cur.execute("SHOW MASTER STATUS")
        row = cur.fetchone()
    finally:
        cur.execute("UNLOCK TABLES")
    return f"{row[0]}:{row[1]}"

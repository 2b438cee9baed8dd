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
import datetime as dt
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ...change import Action, Change
from ...codec import loads
from ...errors import ConfigError, SourceError
from .._snapshot import PREFIX, Cut, Seam, SnapshotProgress, is_position, position
from .._snapshot import parse as parse_cut
from .server import ServerURL, connect

__all__ = ["PREFIX", "Snapshot", "SnapshotProgress", "is_position", "parse"]

log = logging.getLogger("rowcast.sources.snapshot")

_SYSTEM = ("mysql", "information_schema", "performance_schema", "sys")
_ORDERED = frozenset(
    {"tinyint", "smallint", "mediumint", "int", "integer", "bigint", "decimal", "numeric"}
    | {"float", "double", "date", "datetime", "timestamp", "time", "year", "binary", "varbinary"}
)
_NAME = re.compile(r"[A-Za-z0-9_]+")  # a character set or collation name
_JSON_CHECK = re.compile(r"json_valid\(`([^`]+)`\)", re.IGNORECASE)
_WRITE = Action.WRITE
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
        self._keys: dict[tuple[str, str], list[tuple[str, str, str | None, str | None]]] = {}

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
                for rows, last in _chunks(cur, schema, table, after, self.chunk):
                    if self.stopping.is_set():
                        return
                    at = position(here, (schema, table, last))
                    yield [
                        Change(_WRITE, schema, table, pk, None, row, ts, txid, at, "mysql", True)
                        for pk, row in rows
                    ]
                    self.progress.rows += len(rows)
                self.progress.tables_done += 1
                log.info("snapshot: %s.%s read (%d rows so far)", schema, table, self.progress.rows)
            cur.execute("COMMIT")
        self.progress.table, self.progress.done, self.resume = None, True, here
        log.info("snapshot done: %d rows; streaming from %s", self.progress.rows, here)

    def _key(self, schema: str, table: str) -> list[tuple[str, str, str | None, str | None]]:
        if self._ctl is None:
            self._ctl = connect(self.url)
        key = self._keys.get((schema, table))
        if key is None:
            with self._ctl.cursor() as cur:
                key = self._keys[(schema, table)] = _key(cur, schema, table)
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
                args.extend((_raw(pk[i]), _raw(after[i])))
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


def _key(cur: Any, schema: str, table: str) -> list[tuple[str, str, str | None, str | None]]:
    """(name, data type, character set, collation) of the primary key's columns, in order."""
    cur.execute(
        "SELECT k.COLUMN_NAME, c.DATA_TYPE, c.CHARACTER_SET_NAME, c.COLLATION_NAME "
        "FROM information_schema.KEY_COLUMN_USAGE k "
        "JOIN information_schema.COLUMNS c ON c.TABLE_SCHEMA = k.TABLE_SCHEMA "
        "AND c.TABLE_NAME = k.TABLE_NAME AND c.COLUMN_NAME = k.COLUMN_NAME "
        "WHERE k.TABLE_SCHEMA = %s AND k.TABLE_NAME = %s AND k.CONSTRAINT_NAME = 'PRIMARY' "
        "ORDER BY k.ORDINAL_POSITION",
        (schema, table),
    )
    return [(str(n), str(t).lower(), cs, co) for n, t, cs, co in cur.fetchall()]


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _chunks(
    cur: Any, schema: str, table: str, after: Any, size: int
) -> Iterator[tuple[list[tuple[Any, dict[str, Any]]], Any]]:
    """The table's rows after `after`, ``size`` at a time: ([(pk, row)], cursor "after")."""
    cur.execute(
        "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
        (schema, table),
    )
    columns = [(str(n), str(t).lower()) for n, t in cur.fetchall()]
    key = [column[0] for column in _key(cur, schema, table)]
    fix = _fixer(cur, schema, table, columns)
    names = [name for name, _ in columns]
    source = f"SELECT {', '.join(map(_quote, names))} FROM {_quote(schema)}.{_quote(table)}"
    if not key:  # no key to page by: one pass, read again whole if cut short
        cur.execute(source)
        while rows := cur.fetchmany(size):
            yield [(None, fix(dict(zip(names, row, strict=True)))) for row in rows], None
        return
    order = f" ORDER BY {', '.join(map(_quote, key))} LIMIT {int(size)}"
    last = after
    while True:
        where, args = _after(key, last)
        cur.execute(source + where + order, args)
        rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        if not rows:
            return
        for row in rows:
            fix(row)
        last = tuple(rows[-1][k] for k in key)
        if len(key) == 1:
            yield [(row[key[0]], row) for row in rows], last
        else:
            yield [(tuple(row[k] for k in key), row) for row in rows], last
        if len(rows) < size:
            return


def _after(key: list[str], last: Any) -> tuple[str, list[Any]]:
    """``WHERE`` rows come after `last` in key order (as ORs, which every version indexes)."""
    if last is None:
        return "", []
    ors: list[str] = []
    args: list[Any] = []
    for n in range(len(key)):
        parts = [f"{_quote(k)} = %s" for k in key[:n]] + [f"{_quote(key[n])} > %s"]
        ors.append("(" + " AND ".join(parts) + ")")
        args.extend(_raw(v) for v in last[: n + 1])
    return " WHERE " + " OR ".join(ors), args


def _raw(value: Any) -> Any:
    """A key value as the server compares it (TIMESTAMPs are read as UTC, naive)."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _fixer(
    cur: Any, schema: str, table: str, columns: list[tuple[str, str]]
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Turn pymysql's values into what the binlog source gives for the same columns."""
    stamps = [n for n, t in columns if t == "timestamp"]
    bits = [n for n, t in columns if t == "bit"]
    sets = [n for n, t in columns if t == "set"]
    jsons = [n for n, t in columns if t == "json"]
    if any(t == "longtext" for _, t in columns):  # MariaDB's JSON: LONGTEXT + json_valid()
        cur.execute(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
            "WHERE CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s",
            (schema, table),
        )
        checked = {m for (clause,) in cur.fetchall() for m in _JSON_CHECK.findall(clause)}
        jsons += [n for n, t in columns if t == "longtext" and n in checked]

    def fix(row: dict[str, Any]) -> dict[str, Any]:
        for name in stamps:
            if isinstance(row[name], dt.datetime):
                row[name] = row[name].replace(tzinfo=dt.UTC)
        for name in bits:
            if row[name] is not None:
                row[name] = int.from_bytes(row[name], "big")
        for name in sets:
            if row[name] is not None:
                row[name] = set(row[name].split(",")) if row[name] else set()
        for name in jsons:
            if isinstance(row[name], str | bytes):
                with contextlib.suppress(ValueError):  # not JSON (yet): as it is
                    row[name] = json.loads(row[name])
        return row

    return fix

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

Positions, and a snapshot cut short. Each chunk's position is
``snapshot:<file>:<offset>:<json>``: the binlog position of the snapshot and,
in rowcast's JSON codec, how far it got (the last table and primary key read).
A source started from such a position (a relay's checkpoint after it was killed
mid-snapshot) *resumes*: it opens a new consistent snapshot at the server's
position now, reads the rest (the rows after that key, and the tables after
it), and then streams the binlog from the first snapshot's position, leaving out
each change to a row that was already read at a later position than the
change's own (an update that moved a row's key is kept if either key's row was
read before it, so the old key's row is deleted). So every row's history is
still its image as read, then every change after it, once. The position keeps
every resumption (a few bytes each).
Which side of a cut a row lies on is decided in the table's key order: Python's
for numbers, dates, times and binary strings, the server's own comparison (the
column's collation) for text keys, asked only while the binlog is caught up to
the last resumption. A table without a primary key cannot be cut: it is read
again whole (its rows carry ``pk=None`` and come twice, each time a snapshot
read). A relay killed while catching up after a resumed snapshot restarts from
an ordinary binlog position and may see a change again that a later read
already holds: later changes put the row right, nothing is lost.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ...change import Action, Change
from ...codec import dumps, loads
from ...errors import ConfigError, SourceError
from .server import ServerURL, connect

__all__ = ["PREFIX", "Snapshot", "SnapshotProgress", "is_position", "parse"]

log = logging.getLogger("rowcast.sources.snapshot")

PREFIX = "snapshot:"
_SYSTEM = ("mysql", "information_schema", "performance_schema", "sys")
_ORDERED = frozenset(
    {"tinyint", "smallint", "mediumint", "int", "integer", "bigint", "decimal", "numeric"}
    | {"float", "double", "date", "datetime", "timestamp", "time", "year", "binary", "varbinary"}
)
_NAME = re.compile(r"[A-Za-z0-9_]+")  # a character set or collation name
_JSON_CHECK = re.compile(r"json_valid\(`([^`]+)`\)", re.IGNORECASE)
_WRITE = Action.WRITE
Cursor = tuple[str, str, Any]  # (schema, table, after): None (from the start) or a pk tuple


@dataclasses.dataclass
class SnapshotProgress:
    """How far the snapshot got; updated in place as it reads (for a progress line)."""

    tables: int = 0  #: tables to read in this run
    tables_done: int = 0
    table: str | None = None  #: ``"schema.table"`` being read
    rows: int = 0  #: rows read in this run
    estimate: int = 0  #: rows the server estimates the tables hold (information_schema)
    done: bool = False


@dataclasses.dataclass(frozen=True)
class State:
    """Where a snapshot stands: the binlog position to stream from, and what was read."""

    origin: str  # "file:offset" of the first snapshot
    resumed: tuple[tuple[Cursor, str], ...] = ()  # rows after cursor were read at position
    cursor: Cursor | None = None  # read up to here (None: nothing yet)

    def position(self, cursor: Cursor) -> str:
        tail = {"at": list(cursor), "resumed": [[list(c), p] for c, p in self.resumed]}
        return f"{PREFIX}{self.origin}:{dumps(tail)}"


def is_position(position: str | None) -> bool:
    """Whether `position` is a snapshot's (or ``"snapshot:"`` for a new one)."""
    return position is not None and position.startswith(PREFIX)


def parse(position: str) -> State:
    """The `State` a snapshot position names; a `ConfigError` when it is malformed."""
    body = position[len(PREFIX) :]
    if not body:
        return State("")
    try:
        name, offset, tail = body.split(":", 2)
        if not name or not offset.isdigit():
            raise ValueError("no file:offset")
        data = loads(tail)
        cursor = _cursor(data["at"])
        resumed = tuple((_cursor(c), _check(p)) for c, p in data["resumed"])
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"bad snapshot position {position[:120]!r}: {e}; use the position of a "
            "snapshot change as rowcast wrote it, or 'now'"
        ) from e
    return State(f"{name}:{offset}", resumed, cursor)


def _cursor(value: Any) -> Cursor:
    schema, table, after = value
    if not (isinstance(schema, str) and isinstance(table, str)):
        raise ValueError("the cursor names no table")
    return (schema, table, tuple(after) if isinstance(after, list | tuple) else after)


def _check(position: str) -> str:
    name, sep, offset = str(position).rpartition(":")
    if not (name and sep and offset.isdigit()):
        raise ValueError(f"{position!r} is not file:offset")
    return str(position)


def _order(position: str) -> tuple[int, int]:
    name, _, offset = position.rpartition(":")
    number = re.search(r"(\d+)$", name)
    return (int(number.group(1)) if number else 0, int(offset))


def _covers(start: Cursor, schema: str, table: str, pk: Any, greater: _Greater) -> bool:
    """Whether a row is among those read from `start` on (in snapshot order)."""
    key, first = (schema, table), (start[0], start[1])
    if key != first:
        return key > first
    after = start[2]
    return after is None or greater(schema, table, pk if type(pk) is tuple else (pk,), after)


_Greater = Callable[[str, str, tuple[Any, ...], tuple[Any, ...]], bool]


class Snapshot:
    """One run of a snapshot, new (``"snapshot:"``) or resumed from a snapshot position.

    Iterate it for the chunks; afterwards `origin` is where the binlog must be read
    from, and `keep` filters what the binlog gives back from there.
    """

    def __init__(
        self,
        url: ServerURL,
        wants: Callable[[str, str], bool],
        position: str,
        chunk: int,
        stopping: threading.Event,
    ) -> None:
        self.url = url
        self.wants = wants
        self.state = parse(position)
        self.chunk = chunk
        self.stopping = stopping
        self.progress = SnapshotProgress()
        self._latest = ""  # the largest position any row was read at
        self._ctl: Any = None  # compares keys the server's way while catching up
        self._keys: dict[tuple[str, str], list[tuple[str, str, str | None, str | None]]] = {}

    @property
    def origin(self) -> str:
        return self.state.origin

    def keep(self, changes: list[Change], position: str) -> list[Change]:
        """`changes` (a binlog transaction ending at `position`) without what was read later."""
        if not self.state.resumed or _order(position) > _order(self._latest):
            if self._ctl is not None:  # caught up
                self._ctl.close()
                self._ctl = None
            return changes
        at = _order(position)
        kept = []
        for change in changes:
            schema = change.schema or ""
            read_at = _order(self._read_at(schema, change.table, change.pk))
            moved = self._old_key(change)
            if moved is not None:  # a key update: the old row's consumer needs it too
                read_at = min(read_at, _order(self._read_at(schema, change.table, moved)))
            if at > read_at:
                kept.append(change)
        return kept

    def _read_at(self, schema: str, table: str, pk: Any) -> str:
        """The position the row with key `pk` was (or would have been) read at."""
        read_at = self.state.origin
        for start, read in self.state.resumed:
            if _covers(start, schema, table, pk, self._greater):
                read_at = read
        return read_at

    def _old_key(self, change: Change) -> Any:
        """The before image's key of an update that changed it, else None."""
        if change.action != "update" or change.before is None or change.pk is None:
            return None
        if self._ctl is None:
            self._ctl = connect(self.url)
        key = self._keys.get((change.schema or "", change.table))
        if key is None:
            with self._ctl.cursor() as cur:
                key = self._keys[(change.schema or "", change.table)] = _key(
                    cur, change.schema or "", change.table
                )
        if not key or any(name not in change.before for name, _, _, _ in key):
            return None
        old = tuple(change.before[name] for name, _, _, _ in key)
        pk = old[0] if len(old) == 1 else old
        return None if pk == change.pk else pk

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

    def _read(self, conn: Any) -> Iterator[list[Change]]:
        with conn.cursor() as cur:
            here = _begin(cur)
            state, begin = self.state, None
            if not state.origin:  # a new snapshot
                state = State(here)
            elif state.cursor is not None:  # resumed: the rest is read at `here`
                begin = state.cursor
                state = dataclasses.replace(state, resumed=(*state.resumed, (begin, here)))
            self.state = state
            self._latest = max([state.origin, *(p for _, p in state.resumed)], key=_order)
            tables = self._tables(cur)
            if begin is not None:
                tables = [t for t in tables if (t[0], t[1]) >= (begin[0], begin[1])]
            self.progress.tables = len(tables)
            self.progress.estimate = sum(t[2] for t in tables)
            log.info(
                "snapshot of %d tables (~%d rows) at %s",
                len(tables),
                sum(t[2] for t in tables),
                here,
            )
            ts, txid = time.time(), f"{PREFIX}{here}"
            for schema, table, _ in tables:
                after = None
                if begin is not None and (schema, table) == (begin[0], begin[1]):
                    after = begin[2]
                self.progress.table = f"{schema}.{table}"
                for rows, at in _chunks(cur, schema, table, after, self.chunk):
                    if self.stopping.is_set():
                        return
                    position = state.position((schema, table, at))
                    yield [
                        Change(
                            _WRITE, schema, table, pk, None, row, ts, txid, position, "mysql", True
                        )
                        for pk, row in rows
                    ]
                    self.progress.rows += len(rows)
                self.progress.tables_done += 1
                log.info("snapshot: %s.%s read (%d rows so far)", schema, table, self.progress.rows)
            cur.execute("COMMIT")
        self.progress.table, self.progress.done = None, True
        log.info("snapshot done: %d rows; streaming from %s", self.progress.rows, state.origin)

    def _greater(
        self, schema: str, table: str, pk: tuple[Any, ...], after: tuple[Any, ...]
    ) -> bool:
        """``pk > after`` in the table's key order: Python's where it is the server's."""
        if self._ctl is None:
            self._ctl = connect(self.url)
        key = self._keys.get((schema, table))
        if key is None:
            with self._ctl.cursor() as cur:
                key = self._keys[(schema, table)] = _key(cur, schema, table)
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

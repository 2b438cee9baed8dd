"""A table read in key order, chunk by chunk, its rows as the binlog source decodes them.

Private to `rowcast.sources.mysql`: the initial snapshot (`snapshot`) and
backfills (`backfill`) read through it. A `Table` describes one table once (its
columns, its primary key, how pymysql's values become the binlog source's);
`Table.chunk` reads the rows after a key (keyset pagination: ``WHERE pk > last
ORDER BY pk LIMIT n``, the comparison spelled as ORs, which every version
indexes), optionally only those matching a condition. A row's ``pk`` has the
shape the stream's `Change.pk` has: the value for a one-column key, a tuple for
a composite one. The connection reads TIMESTAMPs as UTC (its session's
``time_zone`` set to ``+00:00`` by whoever opened it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import operator
import re
from collections.abc import Callable, Iterator
from typing import Any

from ..._speedups import row_maker

__all__ = ["KeyColumn", "Table", "chunks", "conversions", "key_columns", "quote", "raw"]

_JSON_CHECK = re.compile(r"json_valid\(`([^`]+)`\)", re.IGNORECASE)

#: (name, data type, character set, collation) of a key column
KeyColumn = tuple[str, str, str | None, str | None]
#: ``[(pk, row)]`` of a chunk, and the last key read (where the next chunk begins)
Chunk = tuple[list[tuple[Any, dict[str, Any]]], Any]


def key_columns(cur: Any, schema: str, table: str) -> list[KeyColumn]:
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


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def conversions() -> dict[Any, Callable[..., Any]]:
    """pymysql's conversions (its ``conv``: encoders and decoders) with DATETIME and
    TIMESTAMP read by `datetime.fromisoformat` (in C), pymysql's own (a regular
    expression) for what it refuses (a zero date: kept as text, as pymysql keeps it):
    for a connection that reads chunks."""
    from pymysql import converters
    from pymysql.constants import FIELD_TYPE

    slow = converters.convert_datetime
    iso = dt.datetime.fromisoformat

    def datetime(value: Any) -> Any:
        try:
            return iso(value)
        except (ValueError, TypeError):
            return slow(value)

    conv: dict[Any, Callable[..., Any]] = dict(converters.conversions)
    conv[FIELD_TYPE.DATETIME] = conv[FIELD_TYPE.TIMESTAMP] = datetime
    return conv


def raw(value: Any) -> Any:
    """A key value as the server compares it (TIMESTAMPs are read as UTC, naive)."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


@dataclasses.dataclass(frozen=True)
class Table:
    """One table's columns and key, and how its rows are read (see the module)."""

    schema: str
    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]  #: the primary key's columns (empty: none)
    fix: Callable[[dict[str, Any]], dict[str, Any]]

    @classmethod
    def describe(cls, cur: Any, schema: str, table: str) -> Table:
        cur.execute(
            "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
            (schema, table),
        )
        columns = [(str(n), str(t).lower()) for n, t in cur.fetchall()]
        key = tuple(column[0] for column in key_columns(cur, schema, table))
        fix = _fixer(cur, schema, table, columns)
        return cls(schema, table, tuple(name for name, _ in columns), key, fix)

    @property
    def _select(self) -> str:
        names = ", ".join(map(quote, self.columns))
        return f"SELECT {names} FROM {quote(self.schema)}.{quote(self.name)}"

    def pk(self, image: dict[str, Any]) -> Any:
        """The key of a row `image` (the stream's shape: a value, or a tuple when composite)."""
        if len(self.key) == 1:
            return image[self.key[0]]
        return tuple(image[k] for k in self.key)

    def chunk(self, cur: Any, after: Any, size: int, where: str | None = None) -> Chunk:
        """Up to `size` rows after key `after` (None: from the first; a sequence of the key's
        values) matching the SQL condition `where`, by key; and the last key read (a tuple,
        `after` itself when there is no row)."""
        conditions, args = _after(self.key, after)
        if where:  # pymysql formats the statement with its arguments: a % is doubled
            conditions.append(f"({where.replace('%', '%%')})")
        sql = self._select
        if conditions:
            sql += " WHERE " + " AND ".join(conditions)
        sql += f" ORDER BY {', '.join(map(quote, self.key))} LIMIT {int(size)}"
        cur.execute(sql, tuple(args))
        make, fix, pk = row_maker(self.columns), self.fix, operator.itemgetter(*self.key)
        rows = [fix(make(row)) for row in cur.fetchall()]
        if not rows:
            return [], after
        last = tuple(rows[-1][k] for k in self.key)
        return [(pk(row), row) for row in rows], last


def chunks(cur: Any, schema: str, table: str, after: Any, size: int) -> Iterator[Chunk]:
    """The table's rows after `after`, `size` at a time: ([(pk, row)], cursor "after").
    A table without a key is read in one pass (its rows carry ``pk=None``)."""
    described = Table.describe(cur, schema, table)
    if not described.key:  # no key to page by: one pass, read again whole if cut short
        cur.execute(described._select)
        names = described.columns
        while rows := cur.fetchmany(size):
            yield [(None, described.fix(dict(zip(names, row, strict=True)))) for row in rows], None
        return
    last = after
    while True:
        found, last = described.chunk(cur, last, size)
        if not found:
            return
        yield found, last
        if len(found) < size:
            return


def _after(key: tuple[str, ...], last: Any) -> tuple[list[str], list[Any]]:
    """The condition that rows come after `last` in key order (as ORs), with its arguments."""
    if last is None:
        return [], []
    ors: list[str] = []
    args: list[Any] = []
    for n in range(len(key)):
        parts = [f"{quote(k)} = %s" for k in key[:n]] + [f"{quote(key[n])} > %s"]
        ors.append("(" + " AND ".join(parts) + ")")
        args.extend(raw(v) for v in last[: n + 1])
    return ["(" + " OR ".join(ors) + ")"], args


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

    steps = [
        *((name, _utc) for name in stamps),
        *((name, _bits) for name in bits),
        *((name, _set) for name in sets),
        *((name, _json) for name in jsons),
    ]
    if not steps:
        return _as_is

    def fix(row: dict[str, Any]) -> dict[str, Any]:
        for name, step in steps:
            value = row[name]
            if value is not None:
                row[name] = step(value)
        return row

    return fix


def _as_is(row: dict[str, Any]) -> dict[str, Any]:
    return row


def _utc(value: Any) -> Any:
    return value.replace(tzinfo=dt.UTC) if isinstance(value, dt.datetime) else value


def _bits(value: bytes) -> int:
    return int.from_bytes(value, "big")


def _set(value: str) -> set[str]:
    return set(value.split(",")) if value else set()


def _json(value: Any) -> Any:
    if isinstance(value, str | bytes):
        with contextlib.suppress(ValueError):  # not JSON (yet): as it is
            return json.loads(value)
    return value

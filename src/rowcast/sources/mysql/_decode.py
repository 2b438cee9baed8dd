"""Row images decoded from a rows event's bytes, by a decoder built once per table map.

Private to `rowcast.sources.mysql`. python-mysql-replication decodes every value
of every row by looking its column's type up again (a chain of ``if`` on the
type, a packet object read a few bytes at a time). A `TableDecoder` does that
work once, when a table map is first seen: each column gets the one function
that reads its value (a precompiled `struct.Struct`, its charset's codec
looked up, its decimal layout computed), and a row is then a loop over those
functions on the event's bytes.

The values are the library's, with rowcast's own rules on top (what
`rowcast.sources.mysql.rows` does to the library's rows, which is the
reference that ``tests/sources/test_mysql_decode.py`` holds this module to,
value by value; the readers of each type are in `rowcast.sources.mysql._values`):
TIMESTAMP as an aware UTC datetime, BIT as an int, an empty
SET as ``set()``, MariaDB's JSON columns (LONGTEXT with a ``json_valid()``
check) parsed when they hold JSON.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from ...change import Action
from ._values import BLOB, Reader, reader

__all__ = ["DELETE", "UPDATE", "WRITE", "Decoders", "Row", "TableDecoder", "json_columns"]

#: (action, schema, table, pk, before, after)
Row = tuple[Action, str, str, Any, dict[str, Any] | None, dict[str, Any] | None]

# the rows events' kinds (the library's event types: v1 and v2)
WRITE, UPDATE, DELETE = 0, 1, 2

_JSON_CHECK = re.compile(r"json_valid\(`([^`]+)`\)", re.IGNORECASE)


class TableDecoder:
    """The rows of one table map: its columns' readers, its key, its names."""

    def __init__(self, table: Any, json_names: Iterable[str] = ()) -> None:
        parse = frozenset(json_names)
        self.schema: str = table.schema
        self.table: str = table.table
        self.names: tuple[str, ...] = tuple(
            c.name or f"UNKNOWN_COL{i}" for i, c in enumerate(table.columns)
        )
        self.readers: tuple[Reader, ...] = tuple(reader(c, c.name in parse) for c in table.columns)
        self.columns = tuple(zip(self.names, self.readers, strict=True))
        count = len(self.names)
        self._null_bytes = (count + 7) // 8
        self._all = (1 << count) - 1  # every column present, in a columns-present bitmap
        key = table.data["primary_key"] or None
        self.key: str | tuple[str, ...] | None = key
        self._partial: dict[bytes, tuple[tuple[str, Reader | None], ...]] = {}

    def rows(self, kind: int, data: bytes, pos: int, end: int, present: bytes) -> list[Row]:
        """Every row of a rows event of `kind`, its rows from `pos` to `end` in `data`.

        `present` is the event's columns-present bitmap(s): one for a write or a
        delete, before and after images' for an update (concatenated).
        """
        width = len(present) // (2 if kind == UPDATE else 1)
        first, second = present[:width], present[width:]
        image = self._image(first)
        after_image = self._image(second) if kind == UPDATE else image
        schema, table, key = self.schema, self.table, self.key
        rows: list[Row] = []
        append = rows.append
        while pos < end:
            values, pos = image(data, pos)
            if kind == UPDATE:
                after, pos = after_image(data, pos)
                action, before, keyed = Action.UPDATE, values, after
            elif kind == WRITE:
                action, before, after, keyed = Action.WRITE, None, values, values
            else:
                action, before, after, keyed = Action.DELETE, values, None, values
            if key is None:
                pk = None
            elif type(key) is str:
                pk = keyed[key]
            else:
                pk = tuple(keyed[k] for k in key)
            append((action, schema, table, pk, before, after))
        return rows

    def _image(self, bitmap: bytes) -> Callable[[bytes, int], tuple[dict[str, Any], int]]:
        """The function reading one row image whose present columns are `bitmap`'s."""
        if int.from_bytes(bitmap, "little") & self._all == self._all:
            return self._full
        columns = self._partial.get(bitmap)
        if columns is None:
            columns = self._partial[bitmap] = tuple(
                (name, read if bitmap[i // 8] & (1 << (i % 8)) else None)
                for i, (name, read) in enumerate(self.columns)
            )
        null_bytes = (sum(1 for _, read in columns if read is not None) + 7) // 8

        def partial(data: bytes, pos: int) -> tuple[dict[str, Any], int]:
            nulls = int.from_bytes(data[pos : pos + null_bytes], "little")
            pos += null_bytes
            values: dict[str, Any] = {}
            bit = 1
            for name, read in columns:
                if read is None:  # not in this image (binlog_row_image=MINIMAL)
                    values[name] = None
                    continue
                if nulls & bit:
                    values[name] = None
                else:
                    values[name], pos = read(data, pos)
                bit <<= 1
            return values, pos

        return partial

    def _full(self, data: bytes, pos: int) -> tuple[dict[str, Any], int]:
        """One row image with every column present (binlog_row_image=FULL)."""
        size = self._null_bytes
        nulls = int.from_bytes(data[pos : pos + size], "little")
        pos += size
        values: dict[str, Any] = {}
        if not nulls:
            for name, read in self.columns:
                values[name], pos = read(data, pos)
            return values, pos
        bit = 1
        for name, read in self.columns:
            if nulls & bit:
                values[name] = None
            else:
                values[name], pos = read(data, pos)
            bit <<= 1
        return values, pos


def json_columns(control: Any, schema: str, table: str, blobs: Iterable[str]) -> frozenset[str]:
    """MariaDB's JSON columns among `blobs`: LONGTEXT with a json_valid() check.

    `control` is a pymysql connection for the catalog look-up.
    """
    with control.cursor() as cur:
        cur.execute(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
            "WHERE CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s",
            (schema, table),
        )
        names = {m for (clause,) in cur.fetchall() for m in _JSON_CHECK.findall(clause)}
    return frozenset(names) & frozenset(blobs)


class Decoders:
    """A `TableDecoder` per table map, built once; None for the tables not wanted.

    `wants(schema, table)` says which tables are read; `control()` gives a
    connection for looking MariaDB's JSON columns up (once per table, again after
    `forget`).
    """

    def __init__(self, wants: Callable[[str, str], bool], control: Callable[[], Any]) -> None:
        self._wants = wants
        self._control = control
        self._json: dict[tuple[str, str, tuple[str, ...]], frozenset[str]] = {}

    def forget(self) -> None:
        """Look the tables' JSON columns up again (after DDL)."""
        self._json.clear()

    def build(self, table: Any) -> TableDecoder | None:
        """The decoder of a library ``Table``, or None when its table is not wanted."""
        if not self._wants(table.schema, table.table):
            return None
        blobs = tuple(c.name for c in table.columns if c.type == BLOB)
        parse: frozenset[str] = frozenset()
        if blobs:
            key = (table.schema, table.table, blobs)
            parse = self._json.get(key) or frozenset()
            if key not in self._json:
                parse = self._json[key] = json_columns(
                    self._control(), table.schema, table.table, blobs
                )
        return TableDecoder(table, parse)

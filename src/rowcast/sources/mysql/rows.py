"""From the binlog library's row events to rowcast's row images: the reference decoder.

Private to `rowcast.sources.mysql`. A `RowDecoder` turns each row of a rows
event that python-mysql-replication decoded into ``(action, schema, table, pk,
before, after)`` with rowcast's values: TIMESTAMP as an aware UTC datetime, BIT
as an int, an empty SET as ``set()`` (a NULL one as None), an empty binary
string as ``b""``, MariaDB's JSON columns (LONGTEXT with a ``json_valid()``
check, found through the control connection it is given) parsed.

`BinlogSource` decodes rows itself (`rowcast.sources.mysql._decode`, a decoder
per table map, several times faster); this module is what that decoder is held
to, value by value, in ``tests/sources/test_mysql_decode.py``.
"""

from __future__ import annotations

import codecs
import contextlib
import datetime as dt
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from ...change import Action

__all__ = ["Row", "RowDecoder"]

_TIMESTAMP_TYPES = {7, 17}  # FIELD_TYPE.TIMESTAMP, TIMESTAMP2
_BIT, _SET, _BLOB = 16, 248, 252
_STRINGS = {15, 252, 254}  # VARCHAR, BLOB, STRING: decoded by their charset
_EMPTY_SET = "empty set"  # the library's NONE_SOURCE.EMPTY_SET
_JSON_CHECK = re.compile(r"json_valid\(`([^`]+)`\)", re.IGNORECASE)

#: (action, schema, table, pk, before, after)
Row = tuple[Action, str, str, Any, dict[str, Any] | None, dict[str, Any] | None]


class RowDecoder:
    """Row images of rows events; `control()` gives a connection for catalog lookups."""

    def __init__(self, control: Callable[[], Any]) -> None:
        self._control = control
        self._json_columns: dict[tuple[str, str, tuple[str, ...]], frozenset[str]] = {}

    def forget(self) -> None:
        """Look the tables' JSON columns up again (after DDL)."""
        self._json_columns.clear()

    def rows(self, ev: Any, row_event: Any) -> Iterator[Row]:
        """Each row of rows event `ev` (`row_event` is the library's module)."""
        fix = self._fixer(ev)
        key = ev.primary_key or None
        for row in ev.rows:
            if isinstance(ev, row_event.UpdateRowsEvent):
                before = fix(row["before_values"], _empty(row["before_none_sources"]))
                after = fix(row["after_values"], _empty(row["after_none_sources"]))
                action, image = Action.UPDATE, after
            elif isinstance(ev, row_event.WriteRowsEvent):
                before, after = None, fix(row["values"], _empty(row["none_sources"]))
                action, image = Action.WRITE, after
            else:
                before, after = fix(row["values"], _empty(row["none_sources"])), None
                action, image = Action.DELETE, before
            if key is None:
                pk = None
            elif isinstance(key, tuple):
                pk = tuple(image[k] for k in key)
            else:
                pk = image[key]
            yield action, ev.schema, ev.table, pk, before, after

    def _fixer(self, ev: Any) -> Callable[[dict[str, Any], frozenset[str]], dict[str, Any]]:
        """A function that turns the library's values into rowcast's for this table."""
        stamps = [c.name for c in ev.columns if c.type in _TIMESTAMP_TYPES]
        bits = [c.name for c in ev.columns if c.type == _BIT]
        sets = [c.name for c in ev.columns if c.type == _SET]
        blobs = tuple(c.name for c in ev.columns if c.type == _BLOB)
        jsons = self._json_of(ev.schema, ev.table, blobs) if blobs else frozenset()
        binary = [c.name for c in ev.columns if c.type in _STRINGS and not _decodes(c)]
        if not (stamps or bits or sets or jsons or binary):
            return lambda values, empty: values

        def fix(values: dict[str, Any], empty: frozenset[str]) -> dict[str, Any]:
            for name in stamps:
                value = values[name]
                if value is not None:
                    values[name] = value.replace(tzinfo=dt.UTC)
            for name in bits:
                if values[name] is not None:
                    values[name] = int(values[name], 2)
            for name in sets:
                if name in empty:
                    values[name] = set()  # the library says None for an empty SET
            for name in binary:
                if values[name] == "":  # b"".decode("binary") is "", not a LookupError
                    values[name] = b""
            for name in jsons:
                value = values[name]
                if isinstance(value, str | bytes):
                    # the column is JSON now; a row written before an ALTER may not be
                    with contextlib.suppress(ValueError):
                        values[name] = json.loads(value)
            return values

        return fix

    def _json_of(self, schema: str, table: str, blobs: tuple[str, ...]) -> frozenset[str]:
        """MariaDB's JSON columns are LONGTEXT with a json_valid() check: find them."""
        key = (schema, table, blobs)
        found = self._json_columns.get(key)
        if found is None:
            with self._control().cursor() as cur:
                cur.execute(
                    "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
                    "WHERE CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s",
                    (schema, table),
                )
                names = {m for (clause,) in cur.fetchall() for m in _JSON_CHECK.findall(clause)}
            found = self._json_columns[key] = frozenset(names) & frozenset(blobs)
        return found


def _decodes(column: Any) -> bool:
    """Whether the library decodes `column`'s bytes to str (not for a binary charset)."""
    from pymysqlreplication.row_event import RowsEvent

    name = column.character_set_name
    if name is None:
        return True
    try:
        codecs.lookup(RowsEvent.charset_to_encoding(name))
    except LookupError:
        return False
    return True


def _empty(sources: dict[str, str]) -> frozenset[str]:
    """The columns whose None the library gave for an empty SET (not for a NULL)."""
    return frozenset(name for name, source in sources.items() if source == _EMPTY_SET)

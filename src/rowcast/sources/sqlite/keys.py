"""Keys of SQLite tables as rowcast reads them: chunks in key order, key comparisons,
the key an update's before image holds.

Private to `rowcast.sources.sqlite` (its snapshot and its backfills). Keys compare
in SQLite's own order: each key column with the collation of the table's primary
key index (BINARY for a rowid).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

from ..._speedups import row_maker
from ...change import Change
from . import triggers

__all__ = ["Keys"]


class Keys:
    """What rowcast needs to know of the tables' keys, asked over `conn`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._collations: dict[str, tuple[str, ...]] = {}
        self._keys: dict[str, tuple[str, ...]] = {}

    def chunks(
        self,
        reader: sqlite3.Connection,
        table: triggers.Table,
        after: Any,
        chunk: int,
        where: str | None = None,
    ) -> Iterator[tuple[list[tuple[Any, dict[str, Any]]], Any]]:
        """The table's rows after key `after` (that match `where`, an SQL condition),
        `chunk` at a time: ([(pk, row)], last key)."""
        slots = table.slots
        at = [slots.index(k) for k in table.key]
        collations = self.collation(table.name, table.key)
        names = [triggers.ident(k) for k in table.key]
        keys = [f"{k} COLLATE {c}" for k, c in zip(names, collations, strict=True)]
        source = f"SELECT {', '.join(map(triggers.ident, slots))} FROM {triggers.ident(table.name)}"
        order = f" ORDER BY {', '.join(keys)} LIMIT {int(chunk)}"
        # the collations on the values' side: the same comparison, but one the key's index
        # answers with a seek (on the columns' side, SQLite scans the index from its start)
        bound = ", ".join(f"? COLLATE {c}" for c in collations)
        past = f"({', '.join(names)}) > ({bound})"
        last = after
        while True:
            conditions = ([past] if last is not None else []) + ([f"({where})"] if where else [])
            query = source + (" WHERE " + " AND ".join(conditions) if conditions else "") + order
            rows = reader.execute(query, list(last or ())).fetchall()
            if not rows:
                return
            make = row_maker(table.columns)
            if len(at) == 1:
                one = at[0]
                found = [(row[one], make(row)) for row in rows]
            else:
                found = [(tuple(row[i] for i in at), make(row)) for row in rows]
            last = tuple(rows[-1][i] for i in at)
            yield found, last
            if len(rows) < chunk:
                return

    def collation(self, table: str, key: tuple[str, ...]) -> tuple[str, ...]:
        """The collations the key compares with: its primary key index's (BINARY for a rowid)."""
        found = self._collations.get(table)
        if found is None:
            index = self._conn.execute(
                "SELECT name FROM pragma_index_list(?) WHERE origin = 'pk'", (table,)
            ).fetchone()
            named: dict[str, str] = {}
            if index is not None:
                named = {
                    str(name): str(coll)
                    for name, coll in self._conn.execute(
                        "SELECT name, coll FROM pragma_index_xinfo(?) WHERE key = 1", (index[0],)
                    )
                    if name is not None
                }
            found = self._collations[table] = tuple(
                triggers.ident(named.get(k, "BINARY")) for k in key
            )
        return found

    def greater(self, schema: str, table: str, pk: tuple[Any, ...], after: tuple[Any, ...]) -> bool:
        """``pk > after`` in the table's key order, as SQLite compares them."""
        if len(pk) != len(after):
            return True  # the key changed since: the row was read again
        names = self.key(table)
        if len(names) != len(pk):
            return True
        collations = self.collation(table, names)
        left = ", ".join(f"? COLLATE {c}" for c in collations)
        right = ", ".join("?" for _ in collations)
        (greater,) = self._conn.execute(f"SELECT ({left}) > ({right})", [*pk, *after]).fetchone()
        return bool(greater)

    def old_key(self, change: Change) -> Any:
        """The key an update's before image has (a hidden rowid's moves come as a delete
        and a write already)."""
        if change.before is None:
            return None
        names = self.key(change.table)
        if not names or any(name not in change.before for name in names):
            return None
        return (
            change.before[names[0]] if len(names) == 1 else tuple(change.before[n] for n in names)
        )

    def key(self, table: str) -> tuple[str, ...]:
        """The table's key columns, as the triggers record its ``pk``."""
        found = self._keys.get(table)
        if found is None:
            tables = triggers.tables(self._conn, lambda name: name == table)
            found = self._keys[table] = tables[0].key if tables else ()
        return found

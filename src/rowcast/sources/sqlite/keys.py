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

from ...change import Change
from .._rows import Rows
from . import triggers

__all__ = ["Keys", "key_at"]


class Keys:
    """What rowcast needs to know of the tables' keys, asked over `conn`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._collations: dict[str, tuple[str, ...]] = {}
        self._keys: dict[str, tuple[str, ...]] = {}
        self._nullable: dict[str, tuple[str, ...]] = {}

    def chunks(
        self,
        reader: sqlite3.Connection,
        table: triggers.Table,
        after: Any,
        chunk: int,
        where: str | None = None,
    ) -> Iterator[tuple[Rows, Any]]:
        """The table's rows after `after` (that match `where`, an SQL condition), `chunk` at
        a time: (the rows, where the next chunk starts).

        Where a key column can hold a NULL (a rowid table's key that is not its rowid,
        without NOT NULL), the rows with a NULL in the key come first, by rowid (``after``
        is then ``{"null": <the last rowid read>}``), then the others by key (``after``: the
        last key read, a tuple); a key compares with no NULL. A tuple with a NULL (what
        rowcast recorded before) starts the table again: nothing is lost."""
        nullable = self.nullable(table)
        if isinstance(after, tuple) and None in after:
            after = None
        nulls_read = not nullable or isinstance(after, tuple)
        rowid = after.get("null") if isinstance(after, dict) else None
        last: Any = after if isinstance(after, tuple) else None
        keyed = self._keyed(reader, table, chunk, where, nullable)
        while True:
            found = Rows([], table.columns, key_at(table))
            end: Any = None
            if not nulls_read:
                found, rowid = self._nulls(reader, table, rowid, chunk, where, nullable)
                end = {"null": rowid}
                nulls_read = len(found) < chunk
            if nulls_read and len(found) < chunk:
                rows, key = keyed(last, chunk - len(found))
                found.extend(rows)
                if rows:
                    last = end = key
            if not found:
                return
            yield found, end
            if len(found) < chunk:
                return

    def _keyed(
        self,
        reader: sqlite3.Connection,
        table: triggers.Table,
        chunk: int,
        where: str | None,
        nullable: tuple[str, ...],
    ) -> Any:
        """What reads up to n rows after key `last` (None: from the first) in key order."""
        slots, columns, at = table.slots, table.columns, key_at(table)
        ends = [at] if isinstance(at, int) else list(at)
        collations = self.collation(table.name, table.key)
        names = [triggers.ident(k) for k in table.key]
        keys = [f"{k} COLLATE {c}" for k, c in zip(names, collations, strict=True)]
        source = f"SELECT {', '.join(map(triggers.ident, slots))} FROM {triggers.ident(table.name)}"
        # the collations on the values' side: the same comparison, but one the key's index
        # answers with a seek (on the columns' side, SQLite scans the index from its start)
        bound = ", ".join(f"? COLLATE {c}" for c in collations)
        past = f"({', '.join(names)}) > ({bound})"
        known = [f"{triggers.ident(k)} IS NOT NULL" for k in nullable]  # read first

        def read(last: Any, n: int) -> tuple[Rows, Any]:
            conditions = [*known, *([past] if last is not None else [])]
            conditions += [f"({where})"] if where else []
            query = source + (" WHERE " + " AND ".join(conditions) if conditions else "")
            query += f" ORDER BY {', '.join(keys)} LIMIT {int(n)}"
            rows = reader.execute(query, list(last or ())).fetchall()
            if not rows:
                return Rows([], columns, at), last
            return Rows(rows, columns, at), tuple(rows[-1][i] for i in ends)

        return read

    def _nulls(
        self,
        reader: sqlite3.Connection,
        table: triggers.Table,
        rowid: Any,
        chunk: int,
        where: str | None,
        nullable: tuple[str, ...],
    ) -> tuple[Rows, Any]:
        """Up to `chunk` rows with a NULL in the key after rowid `rowid` (None: from the
        first), by rowid; and the last rowid read (``"all"``: read, when every alias of the
        rowid is a column's name: then they are read at once)."""
        columns = table.columns
        taken = {c.lower() for c in columns}
        alias = next((a for a in ("rowid", "_rowid_", "oid") if a not in taken), None)
        conditions = ["(" + " OR ".join(f"{triggers.ident(k)} IS NULL" for k in nullable) + ")"]
        conditions += [f"({where})"] if where else []
        query = f"SELECT {', '.join(map(triggers.ident, columns))}"
        params: list[Any] = []
        if alias is None:
            if rowid == "all":
                return Rows([], columns, key_at(table)), rowid
            limit = ""
        else:
            query += f", {alias}"
            if rowid is not None:
                conditions.append(f"{alias} > ?")
                params.append(rowid)
            limit = f" ORDER BY {alias} LIMIT {int(chunk)}"
        query += f" FROM {triggers.ident(table.name)} WHERE {' AND '.join(conditions)}{limit}"
        rows = reader.execute(query, params).fetchall()
        found = Rows(rows, columns, key_at(table))  # the rowid after the columns
        if not rows:
            return found, rowid
        return found, rows[-1][len(columns)] if alias is not None else "all"

    def nullable(self, table: triggers.Table) -> tuple[str, ...]:
        """The key columns that can hold a NULL: none in a WITHOUT ROWID table, a rowid
        (or its alias, an INTEGER PRIMARY KEY) or a NOT NULL column."""
        found = self._nullable.get(table.name)
        if found is None:
            conn = self._conn
            without = conn.execute(
                "SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?",
                (table.name,),
            ).fetchone()
            index = conn.execute(
                "SELECT 1 FROM pragma_index_list(?) WHERE origin = 'pk'", (table.name,)
            ).fetchone()
            found = ()
            if index is not None and not (without and without[0]):
                loose = {
                    str(name)
                    for name, notnull in conn.execute(
                        'SELECT name, "notnull" FROM pragma_table_info(?)', (table.name,)
                    )
                    if not notnull
                }
                found = tuple(k for k in table.key if k in loose)
            self._nullable[table.name] = found
        return found

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

    def greater(self, schema: str, table: str, pk: tuple[Any, ...], after: Any) -> bool:
        """``pk > after`` in the order `chunks` reads (a key with a NULL: before every
        other; among them, unknown: False, so that the changes of such a row are handed
        out, and it may be read again)."""
        if None in pk:
            return False
        if isinstance(after, dict) or None in after:  # among the NULL keys (or a legacy cut)
            return True
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


def key_at(table: triggers.Table) -> int | tuple[int, ...]:
    """Where a chunk's row holds the key (`rowcast.sources._rows.Rows`' key): the index
    of its one column, or a tuple of them. A table with a NULL-able key has it among
    its columns, so its rows with a NULL in the key hold it at the same places."""
    at = tuple(table.slots.index(k) for k in table.key)
    return at[0] if len(at) == 1 else at

"""Reading a PostgreSQL table by its key, as a snapshot does, and comparing keys.

Private to `rowcast.sources.postgres` (its snapshots and backfills). Rows are read in the server's
text form (each column's output function: what pgoutput sends), so the stream's
loaders (`rowcast.sources.postgres.types`) turn them into the same values; the
key is the one the stream gives as ``pk``. Keys are compared by the server, cast
to the column's type and collation: the order ``ORDER BY`` reads rows in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from typing import Any

from ...change import Change
from ...errors import SourceError
from .publication import keyless_error
from .server import psycopg2
from .setup import Table, quote

__all__ = ["Layout", "chunks", "describe", "estimate", "greater", "key_at", "old_key", "page"]

Row = tuple[bytes | None, ...]


@dataclasses.dataclass(frozen=True)
class Layout:
    """A table as a snapshot reads it and compares its keys."""

    oid: int
    columns: tuple[str, ...]  #: as pgoutput sends them: no dropped nor generated column
    oids: tuple[int, ...]
    key: tuple[str, ...]  #: the key's columns in index order: the order rows are read in
    pk: tuple[str, ...]  #: the same columns in the order the stream's ``pk`` has them
    casts: tuple[str, ...]  #: per key column: ``::type COLLATE collation``

    def pk_of(self, image: dict[str, Any]) -> Any:
        """The ``pk`` of a row, as the stream gives it: a value, a tuple, or None."""
        if len(self.pk) == 1:
            return image[self.pk[0]]
        return tuple(image[k] for k in self.pk) if self.pk else None

    def pk_at(self) -> int | tuple[int, ...]:
        """Where a row of `columns` holds the ``pk`` the stream gives (`rowcast.sources.
        _rows.Rows`' key): the index of its one column, or a tuple of them."""
        at = tuple(self.columns.index(k) for k in self.pk)
        return at[0] if len(at) == 1 else at


def describe(cur: Any, target: str, schema: str, table: str) -> Layout:
    """How `table` is read: its columns as pgoutput sends them, its key, how keys compare.

    A table without a key or replica identity is refused (`keyless_error`), as capture
    refuses it; one with ``REPLICA IDENTITY FULL`` and no key has an empty key.
    """
    cur.execute(
        "SELECT c.oid, c.relreplident FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
        (schema, table),
    )
    found = cur.fetchone()
    if found is None:
        raise SourceError(f"{target}: table {quote(schema, table)} is gone")
    oid, identity = int(found[0]), str(found[1])
    cur.execute(
        "SELECT a.attname, a.atttypid, format_type(a.atttypid, NULL), CASE WHEN "
        "a.attcollation <> 0 THEN quote_ident(cn.nspname) || '.' || quote_ident(co.collname) "
        "END FROM pg_attribute a LEFT JOIN pg_collation co ON co.oid = a.attcollation "
        "LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace WHERE a.attrelid = %s "
        "AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum",
        (oid,),
    )
    columns = [(str(n), int(t), str(f), c) for n, t, f, c in cur.fetchall()]
    # the key the stream gives: the replica identity index's, else the primary key's
    cur.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY (i.indkey) WHERE i.indrelid = %s AND CASE WHEN %s = 'i' "
        "THEN i.indisreplident ELSE i.indisprimary END "
        "ORDER BY array_position(i.indkey::int2[], a.attnum)",
        (oid, identity),
    )
    key = tuple(str(name) for (name,) in cur.fetchall())
    if identity == "n" or (identity in ("d", "i") and not key):
        raise keyless_error(target, [Table(schema, table, identity, bool(key), True)])
    # pgoutput flags the key columns in column order; with FULL the source asks for the
    # primary key, in key order
    pk = key if identity == "f" else tuple(n for n, _, _, _ in columns if n in key)
    kinds = {n: (f, c) for n, _, f, c in columns}
    casts = tuple(
        f"::{kinds[k][0]}" + (f" COLLATE {kinds[k][1]}" if kinds[k][1] else "") for k in key
    )
    return Layout(
        oid,
        tuple(n for n, _, _, _ in columns),
        tuple(t for _, t, _, _ in columns),
        key,
        pk,
        casts,
    )


def estimate(cur: Any, oids: list[int]) -> int:
    """How many rows the server estimates these tables hold."""
    if not oids:
        return 0
    cur.execute(
        "SELECT coalesce(sum(greatest(reltuples, 0)), 0)::bigint FROM pg_class "
        "WHERE oid = ANY (%s::oid[])",
        (oids,),
    )
    return int(cur.fetchone()[0])


def chunks(
    cur: Any, table: Table, layout: Layout, after: Any, size: int, where: str | None = None
) -> Generator[tuple[list[Row], Any], None, None]:
    """The table's rows (text form, as bytes) after key `after` that match `where` (SQL,
    None: every row), `size` at a time, with the key of the last one (as text: where the
    next chunk begins; None without a key)."""
    _raw(cur, layout.oids)
    if not layout.key:  # no key to page by: one pass, read again whole when cut short
        names = ", ".join(quote(c) for c in layout.columns) or "NULL"
        source = f"SELECT {names} FROM {table.sql}" + (f" WHERE ({where})" if where else "")
        cur.execute(f"DECLARE rowcast_snapshot NO SCROLL CURSOR FOR {source}")
        while rows := _fetch(cur, f"FETCH FORWARD {int(size)} FROM rowcast_snapshot"):
            yield rows, None
        cur.execute("CLOSE rowcast_snapshot")
        return
    at = key_at(layout)
    last = after
    while True:
        rows = _fetch(cur, *page(table, layout, last, size, where))
        if not rows:
            return
        last = tuple(rows[-1][i].decode() for i in at)  # type: ignore[union-attr]
        yield rows, last
        if len(rows) < size:
            return


def page(
    table: Table, layout: Layout, after: Any, size: int, where: str | None = None
) -> tuple[str, list[Any]]:
    """The ``SELECT`` of up to `size` rows (its columns: `layout`'s) after key `after` (text,
    in index order; None: from the first) that match `where`, in key order, and its
    arguments (``%s`` marks: a ``%`` of `where` is doubled)."""
    names = ", ".join(quote(c) for c in layout.columns) or "NULL"
    keys = ", ".join(quote(k) for k in layout.key)
    terms = [f"({where.replace('%', '%%')})"] if where else []
    if after is not None:
        params = ", ".join(f"%s{cast}" for cast in layout.casts)
        terms.append(f"ROW({keys}) > ROW({params})")
    filtered = f" WHERE {' AND '.join(terms)}" if terms else ""
    statement = f"SELECT {names} FROM {table.sql}{filtered} ORDER BY {keys} LIMIT {int(size)}"
    return statement, list(after) if after is not None else []


def key_at(layout: Layout) -> list[int]:
    """Where the key's columns (in index order) are in a row."""
    return [layout.columns.index(k) for k in layout.key]


def greater(cur: Any, layout: Layout, pk: tuple[Any, ...], after: tuple[Any, ...]) -> bool:
    """Whether key `pk` (Python values, in the stream's ``pk`` order) comes after key
    `after` (text, in index order) in the table's order, as the server compares them."""
    if len(layout.pk) != len(pk) or len(layout.key) != len(after):
        return True  # the key changed since: the row is read again
    values = dict(zip(layout.pk, pk, strict=True))
    terms = ", ".join(f"%s{cast}" for cast in layout.casts)
    cur.execute(
        f"SELECT ROW({terms}) > ROW({terms})",
        [*(_text(values[k]) for k in layout.key), *after],
    )
    return bool(cur.fetchone()[0])


def old_key(layout: Layout, change: Change) -> Any:
    """The key an update's before image has, when it holds the whole key (else None)."""
    if change.before is None:
        return None
    if not layout.pk or any(k not in change.before for k in layout.pk):
        return None
    if len(layout.pk) == 1:
        return change.before[layout.pk[0]]
    return tuple(change.before[k] for k in layout.pk)


def _raw(cur: Any, oids: tuple[int, ...]) -> None:
    """Make `cur` hand these types' values over in the server's text form, as bytes
    (psycopg2's own ``BYTES`` caster: UTF-8, as pgoutput's values reach the loaders)."""
    ext = psycopg2().extensions
    caster = ext.new_type(tuple(set(oids)), "ROWCAST_TEXT", ext.BYTES)
    ext.register_type(caster, cur)


def _fetch(cur: Any, statement: str, args: list[Any] | None = None) -> list[Row]:
    cur.execute(statement, args)
    return cur.fetchall()  # type: ignore[no-any-return]


def _text(value: Any) -> str:
    """A key value as the server's input function reads it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, float):
        return repr(value)
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    if hasattr(value, "days") and hasattr(value, "microseconds"):  # timedelta
        return f"{value.days} days {value.seconds} seconds {value.microseconds} microseconds"
    return str(value)

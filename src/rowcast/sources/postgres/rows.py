"""From pgoutput row messages to `Change` rows: relations, images, keys, transactions.

Private to `rowcast.sources.postgres`. A `RowDecoder` remembers the last
Relation message of each table (a new one follows every ALTER TABLE), so each
row is read with the columns it was written with; what reads a table's rows
(its column loaders, how its key is taken from an image) is chosen then, once
per Relation message, not per row. Row messages are read straight from their
bytes (`RowDecoder.change`). What it needs from the catalog (non-built-in
types, the primary key of a REPLICA IDENTITY FULL table) it asks on the
cursor the callable it is given returns (a connection besides the stream's).
"""

from __future__ import annotations

import logging
import operator
import struct
from collections.abc import Callable, Sequence
from typing import Any

from ...change import Action, Change
from ...errors import SourceError
from . import pgoutput as pgo
from .pgoutput import UNCHANGED, format_lsn, row_values
from .setup import matches
from .types import PgType, RowLoader, TypeLookup, TypeMap

__all__ = ["ROW_KINDS", "RowDecoder", "lookup_types", "primary_key"]

log = logging.getLogger("rowcast.sources.postgres")

Image = dict[str, Any]
#: one row change, as `Change._rows` takes it: (action, schema, table, pk, before, after)
Row = tuple[Action, str, str, Any, Image | None, Image | None]
#: the first byte of the messages `RowDecoder.change` reads: Insert, Update, Delete
ROW_KINDS = frozenset(b"IUD")

_OID = struct.Struct(">I").unpack_from
_WRITE, _UPDATE, _DELETE = Action.WRITE, Action.UPDATE, Action.DELETE


def _no_key(image: Image) -> None:
    return None


class _Table:
    """One relation as the stream last described it."""

    __slots__ = ("key", "loader", "name", "pk", "schema", "wanted")

    def __init__(
        self, schema: str, name: str, loader: RowLoader, key: tuple[int, ...], wanted: bool
    ) -> None:
        self.schema, self.name, self.loader = schema, name, loader
        self.key, self.wanted = key, wanted
        # the key of an image: its value (one column), a tuple of them (several), or None
        names = loader.names
        self.pk: Callable[[Image], Any] = (
            operator.itemgetter(*(names[i] for i in key)) if key else _no_key
        )

    def old(self, kind: int, row: Sequence[pgo.Value]) -> Image:
        """The old row: whole ("O", REPLICA IDENTITY FULL) or its key columns only ("K")."""
        if kind == 79:  # 'O'
            return self.loader.image(row)
        return self.loader.key(row, self.key)


class RowDecoder:
    """Turns row messages into rows, and a transaction's rows into Changes."""

    def __init__(self, patterns: Sequence[str] | None, cursor: Callable[[], Any]) -> None:
        self.patterns = patterns
        self._lookup_types: TypeLookup = lambda oids: lookup_types(cursor(), oids)
        self._primary_key: Callable[[int], list[str]] = lambda oid: primary_key(cursor(), oid)
        self._types = TypeMap()
        self._tables: dict[int, _Table] = {}

    def relation(self, relation: pgo.Relation) -> None:
        oids = [c.type_oid for c in relation.columns]
        self._types.learn(oids, self._lookup_types)
        names = [c.name for c in relation.columns]
        if relation.replica_identity == "f":  # every column is flagged: ask for the real key
            key = tuple(names.index(n) for n in self._primary_key(relation.oid) if n in names)
        else:
            key = tuple(i for i, c in enumerate(relation.columns) if c.key)
        wanted = self.patterns is None or matches(self.patterns, relation.namespace, relation.name)
        self._tables[relation.oid] = _Table(
            relation.namespace, relation.name, self._types.rows(names, oids), key, wanted
        )

    def change(self, data: bytes) -> Row | None:
        """The row change of an Insert, Update or Delete message (its bytes: the first one
        of `ROW_KINDS`), or None when its table is not wanted."""
        try:
            table = self._tables[_OID(data, 1)[0]]
            if not table.wanted:
                return None
            kind = data[0]
            if kind == 73:  # 'I'
                if data[5] != 78:  # 'N'
                    raise SourceError("pgoutput: malformed Insert message")
                after = table.loader.new(row_values(data, 6)[0])
                return (_WRITE, table.schema, table.name, table.pk(after), None, after)
            if kind == 68:  # 'D'
                before = table.old(data[5], row_values(data, 6)[0])
                return (_DELETE, table.schema, table.name, table.pk(before), before, None)
        except (IndexError, struct.error) as error:
            raise SourceError(f"pgoutput: truncated or malformed message: {error}") from error
        m = pgo.decode(data)
        assert type(m) is pgo.Update
        new = table.loader.image(m.new)
        old = table.old(ord(m.old_kind), m.old) if m.old_kind and m.old is not None else None
        if m.old_kind == "O" and old is not None and UNCHANGED in m.new:
            for name, value in new.items():  # the old row has it: unchanged means the same
                if value is UNCHANGED:
                    new[name] = old[name]
        return (_UPDATE, table.schema, table.name, table.pk(new), old, new)

    def truncate(self, m: pgo.Truncate) -> None:
        for oid in m.relation_oids:
            table = self._tables.get(oid)
            if table is not None and table.wanted:
                log.warning(
                    "TRUNCATE %s.%s: not a row change, nothing is published for it",
                    table.schema,
                    table.name,
                )

    @staticmethod
    def commit(rows: list[Row], xid: int | None, commit: pgo.Commit) -> list[Change]:
        """The transaction's Changes: its xid, its commit time, the LSN after its commit."""
        txid = None if xid is None else str(xid)
        position = format_lsn(commit.end_lsn)
        # right by construction: made without Change's checks
        return Change._rows(rows, commit.commit_ts, txid, position, "postgres")


def primary_key(cur: Any, oid: int) -> list[str]:
    """The primary key's column names of table `oid`, in key order (none: [])."""
    cur.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY (i.indkey) WHERE i.indrelid = %s AND i.indisprimary "
        "ORDER BY array_position(i.indkey::int2[], a.attnum)",
        (oid,),
    )
    return [str(name) for (name,) in cur.fetchall()]


def lookup_types(cur: Any, oids: Sequence[int]) -> list[PgType]:
    """pg_type rows for `TypeMap.learn`: (oid, name, typtype, array element, base, delimiter)."""
    cur.execute(
        "SELECT t.oid, t.typname, t.typtype, CASE WHEN t.typcategory = 'A' THEN t.typelem "
        "ELSE 0 END, t.typbasetype, COALESCE(e.typdelim, t.typdelim) FROM pg_type t "
        "LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A' "
        "WHERE t.oid = ANY (%s::oid[])",
        (list(oids),),
    )
    return [(int(o), str(n), str(k), int(e), int(b), str(d)) for o, n, k, e, b, d in cur]

"""From decoded pgoutput messages to `Change` rows: relations, images, keys, transactions.

Private to `rowcast.sources.postgres`. A `RowDecoder` remembers the last
Relation message of each table (a new one follows every ALTER TABLE), so each
row is read with the columns it was written with. What it needs from the
catalog (non-built-in types, the primary key of a REPLICA IDENTITY FULL
table) it asks through the two callables it is given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from ...change import Action, Change
from . import pgoutput as pgo
from .pgoutput import UNCHANGED, format_lsn
from .setup import matches
from .types import PgType, RowLoader, TypeLookup, TypeMap

__all__ = ["RowDecoder", "lookup_types", "primary_key"]

log = logging.getLogger("rowcast.sources.postgres")

Image = dict[str, Any]


class _Table:
    """One relation as the stream last described it."""

    __slots__ = ("key", "loader", "name", "schema", "wanted")

    def __init__(
        self, schema: str, name: str, loader: RowLoader, key: tuple[int, ...], wanted: bool
    ) -> None:
        self.schema, self.name, self.loader = schema, name, loader
        self.key, self.wanted = key, wanted

    def pk(self, image: Image) -> Any:
        if not self.key:
            return None
        names = self.loader.names
        if len(self.key) == 1:
            return image[names[self.key[0]]]
        return tuple(image[names[i]] for i in self.key)

    def old(self, kind: str | None, row: pgo.Row) -> Image:
        """The old row: whole ("O", REPLICA IDENTITY FULL) or its key columns only ("K")."""
        if kind == "O":
            return self.loader.image(row)
        return self.loader.key(row, self.key)


Row = tuple[Action, _Table, Image | None, Image | None]


class RowDecoder:
    """Turns row messages into rows, and a transaction's rows into Changes."""

    def __init__(
        self,
        patterns: Sequence[str] | None,
        lookup_types: TypeLookup,
        primary_key: Callable[[int], list[str]],
    ) -> None:
        self.patterns = patterns
        self._lookup_types, self._primary_key = lookup_types, primary_key
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

    def row(self, m: pgo.Insert | pgo.Update | pgo.Delete) -> Row | None:
        """The row change, or None when its table is not wanted."""
        table = self._tables[m.relation_oid]
        if not table.wanted:
            return None
        if type(m) is pgo.Insert:
            return (Action.WRITE, table, None, table.loader.new(m.new))
        if type(m) is pgo.Delete:
            return (Action.DELETE, table, table.old(m.old_kind, m.old), None)
        assert type(m) is pgo.Update
        after = table.loader.image(m.new)
        before = table.old(m.old_kind, m.old) if m.old is not None else None
        if m.old_kind == "O" and before is not None and UNCHANGED in m.new:
            for name, value in after.items():  # the old row has it: unchanged means the same
                if value is UNCHANGED:
                    after[name] = before[name]
        return (Action.UPDATE, table, before, after)

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
        position = format_lsn(commit.end_lsn)
        ts, txid = commit.commit_ts, None if xid is None else str(xid)
        return Change._rows(  # right by construction: made without Change's checks
            [
                (
                    action,
                    table.schema,
                    table.name,
                    table.pk(after if after is not None else before),  # type: ignore[arg-type]
                    before,
                    after,
                )
                for action, table, before, after in rows
            ],
            ts,
            txid,
            position,
            "postgres",
        )


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

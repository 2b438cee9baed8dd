"""Backfills of a PostgreSQL database: what `rowcast.sources._backfill` needs of it.

Private to `rowcast.sources.postgres`. ``rowcast_signal`` is made where the
connection's search path makes tables (``public`` by default). Its changes reach
a reader through the reader's publication: a request adds it to each of
rowcast's own publications that lacks it (a reader starting adds it to its own
too: `setup.prepare`), one ``FOR ALL TABLES`` has it, and a user's publication
without it is refused with the ``ALTER PUBLICATION`` that fixes it. It is never
read by a snapshot (`setup.chosen_tables` leaves it out), and the reader drops
its changes.

A chunk is read as a snapshot reads a table (`rowcast.sources.postgres.keyset`:
in key order, in the server's text form, through the stream's loaders, so each
row has the value types and the ``pk`` the stream gives it), with the request's
``where``, in a ``READ COMMITTED, READ ONLY`` transaction of its own: the
watermarks around it do the rest (DBLog). A table without a key to page by is
refused with the fix.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from ...change import Change
from ...errors import ConfigError
from .._rows import Rows
from ..signal import NAME, SignalTable
from . import keyset
from .objects import COMMENT, is_ours, is_record
from .pgoutput import parse_lsn
from .publication import add_tables, quote, signal_fix, signal_table
from .rows import lookup_types
from .server import PgURL, connect, connect_reader
from .setup import Table, chosen_tables, matches, publication_state
from .stream import is_connection_error
from .types import TypeMap

__all__ = ["PostgresReads"]


class PostgresReads:
    """`rowcast.sources._backfill.Reads` of the database at `url`, for a reader of
    `publication` (None, or one that does not exist: rowcast's own, made when it reads)
    that captures the tables `captured` matches (None: every table)."""

    source = "postgres"

    def __init__(
        self, url: PgURL, publication: str | None, captured: Sequence[str] | None = None
    ) -> None:
        self.url, self.publication, self.captured = url, publication, captured
        self._conn: Any = None
        self._chunks: Any = None  # psycopg 3's, for chunks
        self._schema: str | None = None  # rowcast_signal's
        self._layouts: dict[tuple[str, str], keyset.Layout] = {}
        self._types = TypeMap()

    def _db(self) -> Any:
        if self._conn is None:
            self._conn = connect(self.url)
        return self._conn

    def close(self) -> None:
        for conn in (self._conn, self._chunks):
            if conn is not None:
                with contextlib.suppress(Exception):  # already gone with the server
                    conn.close()
        self._conn = self._chunks = None

    def signals(self, durable: bool = True) -> SignalTable:
        return SignalTable(lambda: connect(self.url), "postgresql")

    def prepare(self, signals: SignalTable) -> None:
        """Make ``rowcast_signal``, and add it to every rowcast publication that lacks it."""
        signals.create()
        cur = self._db().cursor()
        found = signal_table(cur)
        assert found is not None, "made just now"
        cur.execute(
            "SELECT p.pubname, p.puballtables, obj_description(p.oid, 'pg_publication'), "
            "EXISTS (SELECT 1 FROM pg_publication_tables t WHERE t.pubname = p.pubname AND "
            "t.schemaname = %s AND t.tablename = %s) FROM pg_publication p ORDER BY 1",
            found,
        )
        for publication, all_tables, text, has in cur.fetchall():
            if all_tables or has or is_record(publication, text):
                continue
            ours = str(text or "").startswith(COMMENT)
            if ours:
                add_tables(cur, str(publication), [Table(*found, "d", True)])
            elif publication == self.publication:
                raise ConfigError(
                    f"{self.url.masked}: publication {publication} lacks {quote(*found)}: a "
                    "backfill is asked for through it, and its reader would never see the "
                    f"request. Fix: {signal_fix(publication, found)} (then ask again)"
                )

    def is_signal(self, change: Change) -> bool:
        return change.table == NAME and change.schema == self._signal_schema()

    def _signal_schema(self) -> str:
        if self._schema is None:
            cur = self._db().cursor()
            found = signal_table(cur)
            if found is None:
                cur.execute("SELECT current_schema()")
                found = (str(cur.fetchone()[0]), NAME)
            self._schema = found[0]
        return self._schema

    def tables(self, patterns: Sequence[str]) -> list[tuple[str, str]]:
        """The tables `patterns` match (``schema.table`` or ``table``), in ``(schema,
        table)`` order: those a user's publication holds, or any with rowcast's own; of
        them, those this reader captures (another reader may capture the rest)."""
        cur = self._db().cursor()
        pub = publication_state(cur, self.publication) if self.publication else None
        users = pub is not None and not pub.all_tables and not is_ours(cur, str(self.publication))
        readable = chosen_tables(cur, None, pub if users else None)
        found = [t for t in readable if matches(patterns, t.schema, t.name)]
        unmatched = [p for p in patterns if not any(matches([p], t.schema, t.name) for t in found)]
        if unmatched:
            names = [f"{t.schema}.{t.name}" for t in readable]
            shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if names[20:] else "")
            where = f"publication {self.publication}" if users else "this database"
            raise ConfigError(
                f"{self.url.masked}: {', '.join(repr(p) for p in unmatched)} "
                f"{'matches' if len(unmatched) == 1 else 'match'} no table of {where} (a "
                f"pattern is on schema.table or table): its tables are {shown or 'none'}"
            )
        captured = self.captured  # its tables=: another reader may capture the rest
        found = [t for t in found if captured is None or matches(captured, t.schema, t.name)]
        keyless = [t for t in found if not (t.has_pk or t.identity == "i")]
        if keyless:
            listed = ", ".join(t.sql for t in keyless)
            alters = " ".join(f"ALTER TABLE {t.sql} ADD PRIMARY KEY (...);" for t in keyless)
            raise ConfigError(
                f"{self.url.masked}: {listed} {'has' if len(keyless) == 1 else 'have'} no "
                "primary key: a backfill reads a table chunk by chunk in key order. Fix: "
                f"{alters} (or REPLICA IDENTITY USING INDEX <a unique index>;), or leave "
                f"{'it' if len(keyless) == 1 else 'them'} out of the patterns"
            )
        return [(t.schema, t.name) for t in found]

    def chunk(
        self, schema: str, table: str, after: Any, where: str | None, size: int
    ) -> tuple[Rows, Any]:
        try:
            return self._chunk(schema, table, after, where, size)
        except Exception as error:
            if not is_connection_error(error):
                raise
            self.close()  # the server went away and back: once more on a new connection
            return self._chunk(schema, table, after, where, size)

    def _chunk(
        self, schema: str, table: str, after: Any, where: str | None, size: int
    ) -> tuple[Rows, Any]:
        conn = self._db()
        layout = self._describe(schema, table)  # each chunk: the table may have changed
        self._types.learn(layout.oids, lambda oids: lookup_types(conn.cursor(), oids))
        loader = self._types.rows(layout.columns, layout.oids)
        reader = self._reader()
        statement, args = keyset.page(Table(schema, table, "d", True), layout, after, size, where)
        try:
            cur = reader.cursor()
            cur.execute(statement, args)
            result = cur.pgresult
            values = loader.result(result)
        finally:
            with contextlib.suppress(Exception):  # a broken connection rolled it back
                reader.rollback()
        rows = Rows(values, loader.names, layout.pk_at())
        if not values:
            return rows, after
        last = tuple(result.get_value(len(values) - 1, i).decode() for i in keyset.key_at(layout))
        return rows, last

    def _reader(self) -> Any:
        """The connection chunks are read on (psycopg 3: its results load whole, in C)."""
        if self._chunks is None:
            self._chunks = connect_reader(self.url)
        return self._chunks

    def _describe(self, schema: str, table: str) -> keyset.Layout:
        layout = keyset.describe(self._db().cursor(), self.url.masked, schema, table)
        if not layout.key:
            raise ConfigError(
                f"{self.url.masked}: {quote(schema, table)} has no primary key: a backfill "
                f"reads a table in key order. Fix: ALTER TABLE {quote(schema, table)} ADD "
                "PRIMARY KEY (...);"
            )
        self._layouts[(schema, table)] = layout
        return layout

    def old_key(self, change: Change) -> Any:
        if change.before is None:
            return None
        where = (change.schema or "", change.table)
        layout = self._layouts.get(where) or self._describe(*where)
        return keyset.old_key(layout, change)

    def order(self, position: str) -> Any:
        return parse_lsn(position)

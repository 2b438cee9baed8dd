"""Backfills of a MySQL / MariaDB database: what `rowcast.sources._backfill` needs of it.

Private to `rowcast.sources.mysql`. ``rowcast_signal`` lives in the URL's
database (a URL without one cannot be asked for a backfill: name the database);
the binlog carries it like any table, and the source reads its changes even when
its ``tables`` patterns leave it out, but never snapshots it. A chunk is one
``SELECT`` on an autocommit connection of its own (a consistent read of its own),
by primary key (`rowcast.sources.mysql.keyset`, as the initial snapshot reads),
its rows and keys of the types the binlog's rows have. A table without a primary
key has no order to resume in: it is refused, with the fix.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from ...change import Change
from ...errors import ConfigError
from ..signal import NAME, SignalTable
from . import scope
from .keyset import Table, conversions, quote
from .positions import order
from .server import ServerURL, connect, server_code

__all__ = ["MysqlReads"]

_NO_DATABASE = 1049  # ER_BAD_DB_ERROR


class MysqlReads:
    """`rowcast.sources._backfill.Reads` of the server at `url`, for a source limited to
    the URL's database and `captures(schema, table)` (its ``tables`` patterns)."""

    source = "mysql"

    def __init__(self, url: ServerURL, captures: Callable[[str, str], bool]) -> None:
        self.url, self._captures = url, captures
        self._conn: Any = None
        self._tables: dict[tuple[str, str], Table] = {}

    def _db(self) -> Any:
        if self._conn is None:
            conn = connect(self.url, conv=conversions())
            with conn.cursor() as cur:
                cur.execute("SET SESSION time_zone = '+00:00'")  # TIMESTAMPs as UTC
            self._conn = conn
        return self._conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        self._tables.clear()
        if conn is not None:
            with contextlib.suppress(Exception):  # already gone with the server
                conn.close()

    # ------------------------------------------------------------------ the signal table

    def _database(self) -> str:
        if not self.url.database:
            raise ConfigError(
                f"{self.url.masked} names no database: backfills are asked for through the "
                f"{NAME} table of the URL's database; name one in the URL "
                "(mysql://user@host/DATABASE), the database the relay reads"
            )
        return self.url.database

    def _no_database(self) -> ConfigError:
        return ConfigError(
            f"{self.url.masked}: the server has no database {self.url.database}: check the "
            "database in the URL (the one the relay reads)"
        )

    def signals(self, durable: bool = True) -> SignalTable:
        database = self._database()

        def connected() -> Any:
            conn = connect(self.url)
            try:
                conn.select_db(database)
            except Exception as e:
                conn.close()
                if server_code(e) == _NO_DATABASE:
                    raise self._no_database() from e
                raise
            return conn

        return SignalTable(connected, "mysql")

    def prepare(self, signals: SignalTable) -> None:
        """Make ``rowcast_signal`` (the binlog carries every table: nothing else to do)."""
        try:
            signals.create()
        except Exception as e:
            if server_code(e) is None:
                raise
            raise ConfigError(
                f"{self.url.masked}: cannot create {self._database()}.{NAME} ({e.args[-1]}): "
                f"grant {self.url.user!r} CREATE, SELECT, INSERT and DELETE on "
                f"{self._database()}.{NAME}, or have an administrator create it"
            ) from e

    def is_signal(self, change: Change) -> bool:
        return change.table == NAME and change.schema == self.url.database

    # ------------------------------------------------------------------ the tables

    def tables(self, patterns: Sequence[str]) -> list[tuple[str, str]]:
        database = self.url.database
        conn = self._db()
        every = [(s, t) for s, t in scope.tables(conn, database) if t != NAME]
        if database and not every:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (database,)
                )
                if cur.fetchone() is None:
                    raise self._no_database()
        names = [t if database else f"{s}.{t}" for s, t in every]
        missing = [
            p for p in patterns if not any(scope.captures(None, [p], s, t) for s, t in every)
        ]
        if missing:
            where = f"database {database}" if database else "this server"
            raise ConfigError(
                f"{self.url.masked}: tables {', '.join(map(repr, missing))} match no table: "
                f"fix the pattern; the tables of {where} are {scope.listed(names)}"
            )
        # of what this reader captures: another reader may capture the rest
        found = [
            (s, t)
            for s, t in every
            if self._captures(s, t) and scope.captures(None, patterns, s, t)
        ]
        keyless = [self._table(s, t) for s, t in found]
        keyless = [t for t in keyless if not t.key]
        if keyless:
            listed = ", ".join(f"{t.schema}.{t.name}" for t in keyless)
            alters = " ".join(
                f"ALTER TABLE {quote(t.schema)}.{quote(t.name)} ADD PRIMARY KEY (...);"
                for t in keyless
            )
            raise ConfigError(
                f"{self.url.masked}: {listed} {'has' if len(keyless) == 1 else 'have'} no "
                "primary key: a backfill reads a table by key, chunk by chunk, and resumes "
                f"after the last key read. Fix: {alters} or leave "
                f"{'it' if len(keyless) == 1 else 'them'} out of the patterns"
            )
        return found

    def _table(self, schema: str, table: str) -> Table:
        described = self._tables.get((schema, table))
        if described is None:
            with self._db().cursor() as cur:
                described = Table.describe(cur, schema, table)
            self._tables[(schema, table)] = described
        return described

    def chunk(
        self, schema: str, table: str, after: Any, where: str | None, size: int
    ) -> tuple[list[tuple[Any, dict[str, Any]]], Any]:
        described = self._table(schema, table)
        if not described.key:
            raise ConfigError(f"{self.url.masked}: {schema}.{table} has no primary key")
        try:
            with self._db().cursor() as cur:
                return described.chunk(cur, after, size, where)
        except Exception:
            self.close()  # opened again (and the table described again) next time
            raise

    def old_key(self, change: Change) -> Any:
        before = change.before
        if before is None:
            return None
        described = self._table(change.schema or "", change.table)
        if not described.key or any(k not in before for k in described.key):
            return None
        return described.pk(before)

    def order(self, position: str) -> Any:
        return order(position)

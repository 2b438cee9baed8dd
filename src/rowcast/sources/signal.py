"""``rowcast_signal``: the table through which backfills are asked for and followed.

A request is a row written to the source database itself, so it travels in the
change log with the app's own changes: ordered with the stream, seen by every
reader of the database (in any process, on any machine), and it needs no port
(Debezium's signal table). Every reader that sees a request in its log runs it
(see `rowcast.sources._backfill`) and records its progress in the same table.

One table, the same columns on every database:

``id``        the row's number (a request is known by it)
``kind``      ``backfill`` (a request), ``cancel`` (of ``request``), ``low`` and
              ``high`` (a reader's watermarks around one chunk), ``progress`` (how
              far a reader got, as of ``position``), ``alive`` (a tail's heartbeat
              while it has a backfill unfinished: `rowcast.sources._heartbeat`); a
              reader ignores the kinds it does not know
``request``   the request a row is about (None on a request)
``reader``    the reader that wrote it (its checkpoint's URL, or ``tail:<id>``)
``data``      JSON: a request's ``{"tables", "where", "chunk"}``; a progress row's
              ``{"tables", "table", "after", "rows", "done", "cancelled", "resumes"}``
              (``resumes``: false from a tail, which a restart does not take up)
``position``  where in the log the reader was when it wrote a progress row
``created``   when the row was written, by the database server's clock (epoch seconds;
              rows of a rowcast from before it did hold the writer's machine's clock)

Every ``created`` is the database's own clock, and `SignalTable.now` reads that clock,
so whoever compares the two (how long ago a reader last wrote: `rowcast.sources.backfills`)
needs no clock of its own, and machines whose clocks disagree agree on it.

`SignalTable` reads and writes it over any DB-API connection of the three
databases. ``rowcast uninstall`` lists it with rowcast's other tables.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = ["ALIVE", "NAME", "SignalRow", "SignalTable"]

NAME = "rowcast_signal"
ALIVE = "alive"  #: the kind of a tail's heartbeat rows

_DDL = {
    "sqlite": (
        f"CREATE TABLE IF NOT EXISTS {NAME} (id INTEGER PRIMARY KEY AUTOINCREMENT, "
        "kind TEXT NOT NULL, request INTEGER, reader TEXT, data TEXT, position TEXT, "
        "created REAL)"
    ),
    "mysql": (
        f"CREATE TABLE IF NOT EXISTS {NAME} (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
        "kind VARCHAR(16) NOT NULL, request BIGINT NULL, reader VARCHAR(512) NULL, "
        "data LONGTEXT NULL, position VARCHAR(512) NULL, created DOUBLE NULL) ENGINE=InnoDB"
    ),
    "postgresql": (
        f"CREATE TABLE IF NOT EXISTS {NAME} (id BIGSERIAL PRIMARY KEY, kind TEXT NOT NULL, "
        "request BIGINT, reader TEXT, data TEXT, position TEXT, created DOUBLE PRECISION)"
    ),
}
_COLUMNS = "id, kind, request, reader, data, position, created"
#: the database server's clock in epoch seconds (MySQL: UNIX_TIMESTAMP(NOW(6)) would read a
#: local time of the session's zone back, ambiguous in the hour a DST change repeats)
_NOW = {
    "sqlite": "(julianday('now') - 2440587.5) * 86400.0",
    "mysql": "UNIX_TIMESTAMP() + MICROSECOND(NOW(6)) / 1e6",
    "postgresql": "EXTRACT(EPOCH FROM clock_timestamp())::float8",
}


@dataclasses.dataclass(frozen=True)
class SignalRow:
    """One row of ``rowcast_signal`` (its ``data`` parsed)."""

    id: int
    kind: str
    request: int | None
    reader: str | None
    data: dict[str, Any]
    position: str | None
    created: float | None

    @classmethod
    def from_image(cls, image: dict[str, Any]) -> SignalRow:
        """The row a captured change's image holds (as a log source decodes it)."""
        names = ("id", "kind", "request", "reader", "data", "position", "created")
        return cls.from_values([image.get(name) for name in names])

    @classmethod
    def from_values(cls, values: Sequence[Any]) -> SignalRow:
        id_, kind, request, reader, data, position, created = values
        try:
            parsed = json.loads(data) if data else {}
        except (TypeError, ValueError):
            parsed = {}
        return cls(
            int(id_),
            str(kind),
            int(request) if request is not None else None,
            reader,
            parsed if isinstance(parsed, dict) else {},
            position,
            float(created) if created is not None else None,
        )


class SignalTable:
    """``rowcast_signal`` over `connect` (a DB-API connection of `dialect`: ``sqlite``,
    ``mysql`` or ``postgresql``, in autocommit mode: every write commits at once).
    `schema` qualifies the table (PostgreSQL: the search path's unless said)."""

    def __init__(self, connect: Callable[[], Any], dialect: str, schema: str | None = None) -> None:
        if dialect not in _DDL:
            raise ValueError(f"no signal table for {dialect!r}")
        self._connect, self.dialect = connect, dialect
        self._conn: Any = None
        self._mark = "?" if dialect == "sqlite" else "%s"
        self.table = f'"{schema}".{NAME}' if schema else NAME

    # ------------------------------------------------------------------ connection

    def _db(self) -> Any:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already gone with the server
                conn.close()

    def _run(self, sql: str, args: Sequence[Any] = ()) -> Any:
        conn = self._db()
        try:
            cur = conn.cursor()
            cur.execute(sql.replace("?", self._mark), tuple(args))
            return cur
        except Exception:
            self.close()  # a broken connection is opened again next time
            raise

    # ------------------------------------------------------------------ public

    def exists(self) -> bool:
        if self.dialect == "sqlite":
            sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
            args: tuple[Any, ...] = (NAME,)
        elif self.dialect == "mysql":
            sql = (
                "SELECT 1 FROM information_schema.tables WHERE table_schema = DATABASE() "
                "AND table_name = ?"
            )
            args = (NAME,)
        else:
            sql = "SELECT to_regclass(?) IS NOT NULL"
            args = (self.table,)
        row = self._run(sql, args).fetchone()
        return bool(row and row[0])

    def create(self) -> None:
        """Make the table when it is missing."""
        self._run(_DDL[self.dialect].replace(NAME, self.table, 1))

    def write(
        self,
        kind: str,
        data: dict[str, Any] | None = None,
        *,
        request: int | None = None,
        reader: str | None = None,
        position: str | None = None,
    ) -> int:
        """Insert one row and commit it (``created``: the database's clock); its id."""
        args = (kind, request, reader, json.dumps(data or {}), position)
        sql = (
            f"INSERT INTO {self.table} (kind, request, reader, data, position, created) "
            f"VALUES (?, ?, ?, ?, ?, {_NOW[self.dialect]})"
        )
        if self.dialect == "postgresql":
            cur = self._run(sql + " RETURNING id", args)
            new = int(cur.fetchone()[0])
        else:
            new = int(self._run(sql, args).lastrowid)
        return new

    def now(self) -> float:
        """The database server's clock, as ``created`` holds it (epoch seconds)."""
        return float(self._run(f"SELECT {_NOW[self.dialect]}").fetchone()[0])

    def delete(self, ids: Iterable[int]) -> None:
        """Delete the rows `ids` (committed)."""
        ids = list(ids)
        for first in range(0, len(ids), 500):
            part = ids[first : first + 500]
            self._run(
                f"DELETE FROM {self.table} WHERE id IN ({', '.join('?' for _ in part)})", part
            )

    def rows(self, *kinds: str, request: int | None = None) -> list[SignalRow]:
        """The rows of `kinds` (every kind when none), about `request` when given, by id."""
        where: list[str] = []
        args: list[Any] = []
        if kinds:
            where.append(f"kind IN ({', '.join('?' for _ in kinds)})")
            args.extend(kinds)
        if request is not None:
            where.append("(request = ? OR id = ?)")
            args.extend([request, request])
        sql = f"SELECT {_COLUMNS} FROM {self.table}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        found = [SignalRow.from_values(row) for row in self._run(sql + " ORDER BY id", args)]
        return found

"""A row's audit revisions, read from ``<table>_rev`` in the ``--source`` database.

`rowcast.audit` keeps one revision row per change of a versioned table in
``<table>_rev`` (the table's columns, plus ``rev_id``, ``rev_created``,
``rev_isdelete`` and ``rev_txid``). Given the database the console was started
with (``--source URL``; the console never connects anywhere else), `AuditReader`
finds that table by reflection, when it exists, and reads the row's revisions
by its primary key, the newest first, at most a page, with their changed columns
worked out against the revision before. Table and column names are only ever
those reflection found, quoted by SQLAlchemy: nothing from a request reaches SQL
but values bound as parameters.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from .._url import masked
from ..errors import ConfigError
from ..sinks._sql_define import plain_url

__all__ = ["AuditReader", "Revision", "Revisions"]

LIMIT: Final = 100
REV_COLUMNS: Final = ("rev_id", "rev_created", "rev_isdelete", "rev_txid")


@dataclass
class Revision:
    """One revision row: its audit fields, the row's values and what it changed."""

    rev_id: Any
    created: float | None
    deleted: bool
    txid: Any
    values: dict[str, Any]
    changed: list[str]


@dataclass
class Revisions:
    """The revisions of one row found in ``table`` (newest first)."""

    table: str
    columns: list[str]
    rows: list[Revision]
    as_of: Revision | None = None  #: the last revision at or before the time asked for

    @property
    def state(self) -> dict[str, Any] | None:
        found = self.as_of
        return None if found is None or found.deleted else found.values


class AuditReader:
    """Reads revisions from the source database (see the module docstring)."""

    def __init__(self, source_url: str) -> None:
        self.shown = masked(source_url)
        self._engine = sa.create_engine(plain_url(source_url), pool_pre_ping=True)
        self._lock = threading.Lock()
        self._tables: dict[tuple[str | None, str], tuple[sa.Table, sa.Table] | None] = {}

    def close(self) -> None:
        self._engine.dispose()

    def _find(self, schema: str | None, table: str) -> tuple[sa.Table, sa.Table] | None:
        """The row's table and its revision table, reflected (None: no ``_rev`` table)."""
        key = (schema, table)
        with self._lock:
            if key in self._tables:
                return self._tables[key]
        inspector = sa.inspect(self._engine)
        where = None if schema in (None, "main") and self._engine.name == "sqlite" else schema
        if where is not None and where not in inspector.get_schema_names():
            where = None  # e.g. MySQL's database named in a change, the URL's own
        names = set(inspector.get_table_names(schema=where))
        found = None
        if f"{table}_rev" in names and table in names:
            metadata = sa.MetaData()
            base = sa.Table(table, metadata, schema=where, autoload_with=self._engine)
            rev = sa.Table(f"{table}_rev", metadata, schema=where, autoload_with=self._engine)
            found = (base, rev)
        with self._lock:
            self._tables[key] = found
        return found

    def revisions(
        self,
        schema: str | None,
        table: str,
        row: dict[str, Any],
        *,
        at: float | None = None,
        limit: int = LIMIT,
    ) -> Revisions | None:
        """The revisions of the row whose key values are in `row`; None without ``_rev``.

        Raises `ConfigError` when the database cannot be read (its message is fit to show).
        """
        try:
            found = self._find(schema, table)
            if found is None:
                return None
            base, rev = found
            keys = [c.name for c in base.primary_key.columns]
            if not keys or any(k not in row or k not in rev.c for k in keys):
                return None
            match = sa.and_(*(rev.c[k] == row[k] for k in keys))
            order = rev.c.rev_created.desc()
            query = sa.select(rev).where(match).order_by(order, rev.c.rev_id.desc())
            with self._engine.connect() as conn:
                rows = [dict(r._mapping) for r in conn.execute(query.limit(limit + 1))]
                as_of = None
                if at is not None:
                    latest = query.where(rev.c.rev_created <= at).limit(1)
                    as_of = next((dict(r._mapping) for r in conn.execute(latest)), None)
        except SQLAlchemyError as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ConfigError(f"cannot read revisions from {self.shown}: {first}") from error
        columns = [c.name for c in rev.columns if c.name not in REV_COLUMNS]
        shown = [
            _revision(r, older, columns) for r, older in zip(rows, [*rows[1:], None], strict=True)
        ]
        result = Revisions(rev.name, columns, shown[:limit])
        if at is not None:
            result.as_of = None if as_of is None else _revision(as_of, None, columns)
        elif shown:
            result.as_of = shown[0]
        return result


def _revision(row: dict[str, Any], older: dict[str, Any] | None, columns: list[str]) -> Revision:
    values = {c: row.get(c) for c in columns}
    deleted = bool(row.get("rev_isdelete"))
    if older is None or deleted or older.get("rev_isdelete"):
        changed = [] if deleted else list(columns)
    else:
        changed = [c for c in columns if older.get(c) != values[c]]
    created = row.get("rev_created")
    return Revision(
        row.get("rev_id"),
        float(created) if isinstance(created, int | float) else None,
        deleted,
        row.get("rev_txid"),
        values,
        changed,
    )

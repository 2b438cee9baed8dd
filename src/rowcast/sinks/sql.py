"""`ReplicationSink`: apply relayed changes to the tables of another database.

``rowcast relay mysql://... --to 'postgresql://host/replica?mode=replicate'``:
any SQLAlchemy URL with ``mode=replicate`` (``postgresql://``, ``sqlite:///``,
``mysql://``...). Options, in the query or as keywords: ``schema`` (the target
schema, a database on MySQL; default the connection's), ``create`` (``true``, the
default: make what is missing; ``false``: change no definition), ``map``
(``shop.orders:shop_orders,crm.orders:crm_orders``: the target table of a source
table) and ``source_url`` (a keyword only; the relay passes its source's URL): the
source database, whose tables are reflected to create faithful target tables.

What it makes (with ``create=true``), each logged:

* the target schema when it is missing (PostgreSQL ``CREATE SCHEMA``, MySQL
  ``CREATE DATABASE``), at `check` (or the first delivery); a user who may not is
  refused there with the statement to run;
* a missing table, from the source's schema when ``source_url`` is known (types
  mapped to SQLAlchemy's generic types, so MySQL ``DECIMAL(10,2)`` becomes
  ``NUMERIC(10,2)`` on PostgreSQL; unsigned ``BIGINT`` becomes ``NUMERIC(20)``,
  ``ENUM`` and ``SET`` text), else from the values of the first changes (int, float,
  Decimal, str, bytes, bool, date/time/datetime (aware -> with time zone), timedelta,
  UUID, dicts and lists as JSON). The primary key columns come from the source's
  schema, or are the row's first columns that hold the change's ``pk``;
* a column that a change carries and its table lacks (added at the source since),
  typed the same way; rows already there hold NULL in it;
* ``rowcast_replicas``: which source table each target table replicates, so that
  two source tables never share one by accident (`rowcast.sinks._sql_names`).

With ``create=false`` each of those is a `ConfigError` naming the statement to run.
Definitions are changed before, and apart from, the transaction that applies a batch.

What it promises:

* Each change is applied to its source table's target table (of the same name unless
  mapped): a write or an update is an upsert by primary key of the row's after image,
  a delete deletes by primary key, an update that changes the key deletes the old key
  first. Replaying changes already applied converges to the same rows, so a
  re-delivery after a crash (at-least-once) leaves the replica equal to the source. A
  value the source did not send (PostgreSQL's unchanged TOASTed column) is taken from
  the before image, or else left as the replica has it.
* A backfill's rows (``write`` changes with ``snapshot=True``, as an initial
  snapshot's) are upserts like any write: a row the replica lost comes back, one it
  holds stale takes the source's values (columns the source does not have keep
  theirs). A backfill reads rows that exist: a row the replica holds but the source
  deleted without the replica seeing it stays (drop the replica table and backfill
  it whole to remove such rows).
* A batch (whole source transactions) is applied in one target transaction:
  a source transaction is never applied in part.
* Where the database has no time zone type (SQLite, MySQL), an aware datetime is
  written as its UTC time, without a zone.

Database errors are classified by the driver's code (`rowcast.sinks._dberrors`): a
lost connection, a deadlock, a lock timeout are a `TransientSinkError`; a refused
privilege, a missing schema, an unknown column, a value the target column cannot
hold, a table without a primary key are a `PermanentSinkError`, with the fix when it
is a common one. What `check` refuses is a `ConfigError`; the same refused on a
delivery (and every clash of names) is a `PermanentSinkError`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from functools import partial
from itertools import groupby
from operator import attrgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError

from .._url import check_query, masked, pairs
from ..change import Action, Change
from ..errors import ConfigError, PermanentSinkError
from ._dberrors import describe, sink_error
from ._sql_define import (
    Columns,
    SourceTables,
    add_columns,
    define,
    ensure_schema,
    sqlalchemy_url,
)
from ._sql_names import Names, Source, parse_map
from ._sql_types import adapt, decimals_as_text
from .base import Batch

__all__ = ["ReplicationSink"]

# rowcast.sources.postgres.UNCHANGED (a str enum; a plain str after JSON): sinks
# import no source
_UNCHANGED = "rowcast:unchanged-toast"
# SQLite keywords that SQLAlchemy's SQLite dialect leaves unquoted: a column of one of
# these names is a syntax error in CREATE TABLE, INSERT and ON CONFLICT unless quoted
_SQLITE_KEYWORDS = frozenset({"nothing", "returning"})
_OPTIONS = ("mode", "schema", "create", "map")
_source_of: Any = attrgetter("schema", "table")


class ReplicationSink:
    """Changes applied to the tables of another database (module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        source_url: str | None = None,
        schema: str | None = None,
        create: bool | str | None = None,
        map: str | Mapping[str, str] | None = None,  # the URL option's name
    ) -> None:
        self.url = masked(url)
        try:
            target = sa.engine.make_url(sqlalchemy_url(url))
        except (SQLAlchemyError, ValueError) as e:
            raise ConfigError(f"{self.url}: not a database URL: {e}") from e
        query = {k: v if isinstance(v, str) else v[-1] for k, v in target.query.items()}
        if query.get("mode", "replicate") != "replicate":
            raise ConfigError(f"{self.url}: a replication sink takes mode=replicate")
        create_option = query.get("create", "true" if create is None else str(create)).lower()
        if create_option not in {"true", "false", "1", "0", "yes", "no"}:
            raise ConfigError(f"{self.url}: create must be true or false, not {create_option!r}")
        self._schema = query.get("schema", schema)
        self._create = create_option in {"true", "1", "yes"}
        self._names = Names(self.url, parse_map(self.url, query.get("map", map)), self._schema)
        target = target.difference_update_query(_OPTIONS)
        family = target.get_backend_name().replace("mariadb", "mysql")
        check_query(url, pairs(target.query), family, "a replication sink", _OPTIONS)
        try:
            self._engine = sa.create_engine(target)
        except (SQLAlchemyError, ImportError, ValueError) as e:
            raise ConfigError(f"{self.url}: not a database URL SQLAlchemy can open: {e}") from e
        if self._engine.dialect.name == "sqlite":
            if self._schema not in (None, "main"):
                raise ConfigError(
                    f"{self.url}: SQLite has no schemas (a file is one database): leave out "
                    f"schema={self._schema}, or replicate into another file"
                )
            preparer = self._engine.dialect.identifier_preparer
            preparer.reserved_words = preparer.reserved_words | _SQLITE_KEYWORDS
        self._source = SourceTables(source_url) if source_url else None
        self._tables: dict[Source, sa.Table] = {}
        self._checked = False
        self._lock = threading.Lock()  # one batch at a time

    # -- checking

    def check(self) -> None:
        """Reach the target now: its schema is made when missing (``create=true``), or a
        `ConfigError` says the statement to run (the user may not create it, or may not
        use it); an unreachable database is a `TransientSinkError`. Done by the first
        delivery when not called before."""
        with self._lock:
            self._check()

    def _check(self) -> None:
        try:
            with self._engine.begin() as conn:
                ensure_schema(conn, self._schema, self._create, self.url)
        except SQLAlchemyError as e:
            raise sink_error(e, f"{self.url}: cannot connect: {describe(e)}") from e
        self._checked = True

    # -- delivering

    def deliver(self, batch: Batch) -> None:
        """Apply every change of `batch` in one target transaction (module docstring)."""
        changes = [change for transaction in batch for change in transaction]
        if not changes:
            return
        with self._lock:
            try:
                if not self._checked:
                    self._check()
                tables = self._prepare(changes)
                with self._engine.begin() as conn:
                    for source, of_table in groupby(changes, key=_source_of):
                        table = tables[source]
                        keys = [c.name for c in table.primary_key.columns]
                        for op, same in groupby(of_table, key=partial(_operation, keys)):
                            # moves one by one: 1->2 then 2->3 must not delete the new 2
                            for part in [[c] for c in same] if op == "move" else [list(same)]:
                                self._apply(conn, table, keys, op, part)
            except SQLAlchemyError as e:
                self._tables.clear()  # the schema may have changed under us
                raise sink_error(
                    e, f"{self.url}: applying {len(changes)} changes failed: {describe(e)}"
                ) from e
            except ConfigError as e:  # a table it cannot replicate into: not for a retry
                raise PermanentSinkError(str(e)) from e

    def _apply(
        self, conn: sa.Connection, table: sa.Table, keys: list[str], op: str, changes: list[Change]
    ) -> None:
        if op != "upsert":  # a delete, or an update that moves the row to another key
            where = sa.and_(*(table.c[k] == sa.bindparam(f"k_{k}") for k in keys))
            old = [{f"k_{k}": (c.before or {}).get(k) for k in keys} for c in changes]
            conn.execute(table.delete().where(where), old)
            if op == "delete":
                return
        zones = conn.dialect.name == "postgresql"
        rows = [adapt(table, _known(c), zones) for c in changes]
        for columns, same in groupby(rows, key=tuple):
            conn.execute(_upsert(conn, table, keys, columns), list(same))

    # -- tables

    def _prepare(self, changes: Sequence[Change]) -> dict[Source, sa.Table]:
        """The target table of each source table of `changes`, made or widened first, in
        a transaction of its own (DDL commits on MySQL)."""
        by_source: dict[Source, list[Change]] = {}
        for change in changes:
            by_source.setdefault(_source_of(change), []).append(change)
        wanted = {source: _columns(of) for source, of in by_source.items()}
        ready = {s: t for s in wanted if (t := self._tables.get(s)) is not None}
        if len(ready) == len(wanted) and all(_holds(ready[s], c) for s, c in wanted.items()):
            return ready
        with self._engine.begin() as conn:
            for source, of_table in by_source.items():
                table = ready.get(source)
                if table is None or not _holds(table, wanted[source]):
                    ready[source] = self._table(conn, source, of_table, wanted[source])
        self._tables.update(ready)
        return ready

    def _table(
        self, conn: sa.Connection, source: Source, changes: Sequence[Change], columns: Columns
    ) -> sa.Table:
        """The target table of `source`, reflected, created or widened to hold `columns`."""
        name = self._names.target(source)
        created = False
        try:
            table = self._reflect(conn, name)
        except NoSuchTableError:
            if not self._create:
                raise ConfigError(
                    f"{self.url}: no table {name!r} to replicate into; create it, or let the "
                    "sink create it (create=true)"
                ) from None
            metadata = sa.MetaData(schema=self._schema)
            the_source = self._reflect_source(source)
            table = define(name, metadata, changes, the_source, conn.dialect.name)
            if conn.dialect.name == "sqlite":
                decimals_as_text(table)
            table.create(conn)
            created = True
        if not table.primary_key.columns:
            raise ConfigError(f"{self.url}: table {name!r} has no primary key to upsert by")
        self._names.record(conn, name, source, created=created, create=self._create)
        if not _holds(table, columns):
            the_source = self._reflect_source(source)
            if add_columns(conn, table, columns, the_source, self._create, self.url):
                table = self._reflect(conn, name)
        return table

    def _reflect(self, conn: sa.Connection, name: str) -> sa.Table:
        table = sa.Table(name, sa.MetaData(schema=self._schema), autoload_with=conn)
        if conn.dialect.name == "sqlite":
            decimals_as_text(table, conn)
        return table

    def _reflect_source(self, source: Source) -> sa.Table | None:
        return self._source.table(*source) if self._source is not None else None

    def close(self) -> None:
        """Release the connection pools; idempotent."""
        self._engine.dispose()
        if self._source is not None:
            self._source.close()


def _holds(table: sa.Table, columns: Columns) -> bool:
    return all(name in table.c for name in columns)


def _columns(changes: Sequence[Change]) -> Columns:
    """The columns that the writes and updates of `changes` set, with their values."""
    found: Columns = {}
    for change in changes:
        if change.action is not Action.DELETE:
            for name, value in _known(change).items():
                found.setdefault(name, []).append(value)
    return found


def _operation(keys: list[str], change: Change) -> str:
    """ "delete", "move" (an update of the key: delete the old row, upsert the new) or "upsert"."""
    if change.action is Action.DELETE:
        return "delete"
    before, after = change.before, change.after or {}
    if before is not None and any(before.get(k) != after.get(k) for k in keys):
        return "move"
    return "upsert"


def _known(change: Change) -> dict[str, Any]:
    """The after image without values the source did not send (PostgreSQL's unchanged TOAST).

    Such a value comes from the before image when that has it (REPLICA IDENTITY
    FULL); else the column is left out, so the upsert keeps the replica's value.
    """
    after = change.after or {}
    if _UNCHANGED not in after.values():
        return after
    before = change.before or {}
    return {
        name: before[name] if value == _UNCHANGED else value
        for name, value in after.items()
        if value != _UNCHANGED or before.get(name, _UNCHANGED) != _UNCHANGED
    }


def _upsert(conn: sa.Connection, table: sa.Table, keys: list[str], columns: tuple[str, ...]) -> Any:
    rest = [c for c in columns if c not in keys]
    dialect = conn.dialect.name
    if dialect in {"postgresql", "sqlite"}:
        module = __import__(f"sqlalchemy.dialects.{dialect}", fromlist=["insert"])
        stmt = module.insert(table)
        if not rest:
            return stmt.on_conflict_do_nothing(index_elements=keys)
        return stmt.on_conflict_do_update(
            index_elements=keys, set_={c: stmt.excluded[c] for c in rest}
        )
    if dialect in {"mysql", "mariadb"}:
        from sqlalchemy.dialects.mysql import insert

        stmt = insert(table)
        update = rest or keys  # nothing else to set: a no-op update of the key
        return stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in update})
    raise ConfigError(
        f"replicating into {dialect} is not supported: use PostgreSQL, MySQL or SQLite"
    )

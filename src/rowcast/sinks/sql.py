"""`ReplicationSink`: apply relayed changes to the tables of another database.

``rowcast relay mysql://... --to 'postgresql://host/replica?mode=replicate'``:
any SQLAlchemy URL with ``mode=replicate`` (``postgresql://``, ``sqlite:///``,
``mysql://``...). Options, in the query or as keywords: ``schema`` (the target
schema; default the connection's), ``create`` (``true``: make missing tables;
``false``: a missing table is an error) and ``source_url`` (a keyword only; the
relay passes its source's URL): the source database whose tables are reflected
to create faithful target tables.

What it promises:

* Each change is applied to the table of the same name: a write or an update
  is an upsert by primary key of the row's after image, a delete deletes by
  primary key, an update that changes the key deletes the old key first. Replaying
  changes already applied converges to the same rows, so a re-delivery after a
  crash (at-least-once) leaves the replica equal to the source. A value the
  source did not send (PostgreSQL's unchanged TOASTed column) is taken from the
  before image, or else left as the replica has it.
* A batch (whole source transactions) is applied in one target transaction:
  a source transaction is never applied in part.
* Missing tables are created from the source's schema when ``source_url`` is
  known (types mapped to SQLAlchemy's generic types, so MySQL ``DECIMAL(10,2)``
  becomes ``NUMERIC(10,2)`` on PostgreSQL; unsigned ``BIGINT`` becomes
  ``NUMERIC(20)``, ``ENUM`` and ``SET`` text), else from the values of the
  first changes (int, float, Decimal, str, bytes, bool, date/time/datetime
  (aware -> with time zone), timedelta, UUID, dicts and lists as JSON). The primary key
  columns come from the source's schema, or are the row's first columns that
  hold the change's ``pk``. Where the database has no time zone type (SQLite,
  MySQL), an aware datetime is written as its UTC time, without a zone.
* `check` connects to the target and makes sure the target schema exists and
  (PostgreSQL) may be used. Database errors are classified by the driver's code
  (`rowcast.sinks._dberrors`): a lost connection, a deadlock, a lock timeout are a
  `TransientSinkError`; a refused privilege, a missing schema, an unknown column,
  a value the target column cannot hold, a table without a primary key are a
  `PermanentSinkError`, with the fix when it is a common one.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import threading
import uuid
from collections.abc import Iterable, Sequence
from functools import partial
from itertools import groupby
from operator import attrgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError

from .._url import masked
from ..change import Action, Change
from ..errors import ConfigError, PermanentSinkError
from ._dberrors import describe, sink_error
from .base import Batch

__all__ = ["ReplicationSink"]

# rowcast.sources.postgres.UNCHANGED (a str enum; a plain str after JSON): sinks
# import no source
_UNCHANGED = "rowcast:unchanged-toast"
_DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg"}
_DRIVERS |= {"mysql": "mysql+pymysql", "mariadb": "mysql+pymysql"}
# SQLite keywords that SQLAlchemy's SQLite dialect leaves unquoted: a column of one of
# these names is a syntax error in CREATE TABLE, INSERT and ON CONFLICT unless quoted
_SQLITE_KEYWORDS = frozenset({"nothing", "returning"})


class _DecimalText(sa.types.UserDefinedType[decimal.Decimal]):
    """Decimal kept exactly, as text, where the database has no decimal type (SQLite).

    Declared ``DECIMAL_TEXT``: SQLite gives the column text affinity, so even a
    20-digit unsigned BIGINT is stored exactly, and a sink that reflects the
    table later knows the column by that name.
    """

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "DECIMAL_TEXT"

    def bind_processor(self, dialect: Any) -> Any:
        return lambda value: None if value is None else str(value)

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        return lambda value: None if value is None else decimal.Decimal(str(value))


def sqlalchemy_url(url: str) -> str:
    """A rowcast URL as SQLAlchemy takes it: a driver named for the bare schemes."""
    scheme, sep, rest = url.partition("://")
    return f"{_DRIVERS.get(scheme.lower(), scheme)}{sep}{rest}"


class ReplicationSink:
    """Changes applied to the same-named tables of another database (module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        source_url: str | None = None,
        schema: str | None = None,
        create: bool | str | None = None,
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
        target = target.difference_update_query(["mode", "schema", "create"])
        try:
            self._engine = sa.create_engine(target)
        except (SQLAlchemyError, ImportError, ValueError) as e:
            raise ConfigError(f"{self.url}: not a database URL SQLAlchemy can open: {e}") from e
        if self._engine.dialect.name == "sqlite":
            preparer = self._engine.dialect.identifier_preparer
            preparer.reserved_words = preparer.reserved_words | _SQLITE_KEYWORDS
        self._source = sa.create_engine(sqlalchemy_url(source_url)) if source_url else None
        self._tables: dict[str, sa.Table] = {}
        self._lock = threading.Lock()  # one batch at a time

    # -- delivering

    def check(self) -> None:
        """Connect to the target; its schema exists and may be used (module docstring)."""
        try:
            with self._engine.connect() as conn:
                schema = self._schema
                if schema is not None and not sa.inspect(conn).has_schema(schema):
                    raise ConfigError(
                        f"{self.url}: the target schema {schema!r} does not exist; create "
                        f"it: CREATE SCHEMA {conn.dialect.identifier_preparer.quote(schema)}"
                    )
                if conn.dialect.name == "postgresql":
                    usable = conn.scalar(
                        sa.text(
                            "SELECT has_schema_privilege("
                            "coalesce(CAST(:s AS text), current_schema()), 'USAGE')"
                        ),
                        {"s": schema},
                    )
                    if not usable:
                        raise ConfigError(
                            f"{self.url}: the user may not use schema "
                            f"{schema or 'of its search_path'}; GRANT USAGE ON SCHEMA to it"
                        )
        except SQLAlchemyError as e:
            raise sink_error(e, f"{self.url}: cannot connect: {describe(e)}") from e

    def deliver(self, batch: Batch) -> None:
        """Apply every change of `batch` in one target transaction (module docstring)."""
        changes = [change for transaction in batch for change in transaction]
        if not changes:
            return
        with self._lock:
            try:
                with self._engine.begin() as conn:
                    for name, of_table in groupby(changes, key=attrgetter("table")):
                        table = self._table(conn, name, changes)
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
        rows = [_adapt(table, _known(c), zones) for c in changes]
        for columns, same in groupby(rows, key=tuple):
            conn.execute(_upsert(conn, table, keys, columns), list(same))

    # -- tables

    def _table(self, conn: sa.Connection, name: str, changes: Sequence[Change]) -> sa.Table:
        table = self._tables.get(name)
        if table is not None:
            return table
        metadata = sa.MetaData(schema=self._schema)
        try:
            table = sa.Table(name, metadata, autoload_with=conn)
        except NoSuchTableError:
            if not self._create:
                raise ConfigError(
                    f"{self.url}: no table {name!r} to replicate into; create it, or let the "
                    "sink create it (create=true)"
                ) from None
            table = self._define(name, metadata, [c for c in changes if c.table == name])
            if conn.dialect.name == "sqlite":
                _decimals_as_text(table)
            table.create(conn)
        else:
            if conn.dialect.name == "sqlite":
                _decimals_as_text(table, conn)
        if not table.primary_key.columns:
            raise ConfigError(f"{self.url}: table {name!r} has no primary key to upsert by")
        self._tables[name] = table
        return table

    def _define(self, name: str, metadata: sa.MetaData, changes: list[Change]) -> sa.Table:
        rows = [row for c in changes for row in (c.after, c.before) if row]
        if self._source is not None:
            source_table = self._reflect_source(changes[0])
            if source_table is not None:
                columns = [
                    sa.Column(c.name, _generic(c.type), primary_key=c.primary_key)
                    for c in source_table.columns
                ]
                for column in columns:  # MariaDB's JSON is LONGTEXT: the values say JSON
                    if isinstance(column.type, sa.String) and isinstance(
                        _type_of(r.get(column.name) for r in rows), sa.JSON
                    ):
                        column.type = sa.JSON()
                return sa.Table(name, metadata, *columns)
        names = list(rows[0])
        keys = _guess_key(names, rows[0], changes[0].pk)
        columns = [
            sa.Column(n, _type_of(r.get(n) for r in rows), primary_key=n in keys) for n in names
        ]
        return sa.Table(name, metadata, *columns)

    def _reflect_source(self, change: Change) -> sa.Table | None:
        assert self._source is not None
        try:
            return sa.Table(
                change.table, sa.MetaData(), schema=change.schema, autoload_with=self._source
            )
        except NoSuchTableError:
            return None

    def close(self) -> None:
        """Release the connection pools; idempotent."""
        self._engine.dispose()
        if self._source is not None:
            self._source.dispose()


def _decimals_as_text(table: sa.Table, conn: sa.Connection | None = None) -> None:
    """On SQLite: decimal columns (and those made as DECIMAL_TEXT) keep Decimals exactly."""
    declared = {}
    if conn is not None:  # reflected: DECIMAL_TEXT came back as TEXT, so ask SQLite
        pragma = f"PRAGMA table_info({conn.dialect.identifier_preparer.quote(table.name)})"
        declared = {row[1]: str(row[2]).upper() for row in conn.exec_driver_sql(pragma)}
    for column in table.columns:
        kind = column.type
        numeric = isinstance(kind, sa.Numeric) and not isinstance(kind, sa.Float)
        if numeric or declared.get(column.name) == "DECIMAL_TEXT":
            column.type = _DecimalText()


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


def _adapt(table: sa.Table, row: dict[str, Any], zones: bool) -> dict[str, Any]:
    """`row` as the target's column types take it (MySQL TIME arrives as a timedelta...).

    `zones`: the database has a time zone type (PostgreSQL); elsewhere an aware
    datetime is written as its UTC time, which the driver would write as its wall
    clock time in its own zone, dropping the zone.
    """
    out = {}
    for name, value in row.items():
        if name not in table.c:
            continue  # a column the target does not have (added at the source since)
        kind = table.c[name].type
        if isinstance(value, dt.datetime) and value.tzinfo is not None and not zones:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        elif isinstance(value, dt.timedelta) and isinstance(kind, sa.Time):
            value = (dt.datetime.min + value).time()
        elif isinstance(value, set | frozenset) and not isinstance(kind, sa.JSON):
            value = ",".join(sorted(map(str, value)))
        elif isinstance(value, dict | list) and not isinstance(kind, sa.JSON):
            value = json.dumps(value)
        elif isinstance(value, uuid.UUID) and not isinstance(kind, sa.Uuid):
            # a uuid column reflected as CHAR(32) (SQLite): as SQLAlchemy's Uuid stores it
            value = value.hex if getattr(kind, "length", None) == 32 else str(value)
        out[name] = value
    return out


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


def _guess_key(names: list[str], row: dict[str, Any], pk: Any) -> list[str]:
    """The first columns of `row` whose values are the change's `pk`."""
    values = list(pk) if isinstance(pk, tuple) else [pk]
    for start in range(len(names) - len(values) + 1):
        window = names[start : start + len(values)]
        if [row[n] for n in window] == values:
            return window
    raise ConfigError(
        f"cannot tell the primary key columns of a row with key {pk!r}; pass the source's "
        "URL (the relay does) or create the target table yourself"
    )


def _generic(kind: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
    """A source column type as a generic SQLAlchemy type any target database can create."""
    name = type(kind).__name__.upper()
    if name in {"ENUM", "SET"}:
        return sa.Text()
    if name == "YEAR":
        return sa.SmallInteger()
    if name == "BIT":
        return sa.BigInteger()
    if getattr(kind, "unsigned", False) and name == "BIGINT":
        return sa.Numeric(20, 0)
    try:
        generic = kind.as_generic()
    except NotImplementedError:
        return sa.Text()
    if isinstance(generic, sa.Float):
        return sa.Double() if isinstance(generic, sa.Double) else sa.Float()
    if isinstance(generic, sa.String) and not isinstance(generic, sa.Enum):
        return sa.Text() if generic.length is None else sa.String(generic.length)
    return generic


def _type_of(values: Iterable[Any]) -> sa.types.TypeEngine[Any]:
    """A column type for the first non-null of `values` (Text when all are null)."""
    for value in values:
        if value is None:
            continue
        if isinstance(value, bool):
            return sa.Boolean()
        if isinstance(value, int):
            return sa.BigInteger() if -(2**63) <= value < 2**63 else sa.Numeric(39, 0)
        if isinstance(value, float):
            return sa.Double()
        if isinstance(value, decimal.Decimal):
            return sa.Numeric()
        if isinstance(value, bytes):
            return sa.LargeBinary()
        if isinstance(value, dt.datetime):
            return sa.DateTime(timezone=value.tzinfo is not None)
        if isinstance(value, dt.date):
            return sa.Date()
        if isinstance(value, dt.time):
            return sa.Time()
        if isinstance(value, dt.timedelta):
            return sa.Interval()
        if isinstance(value, uuid.UUID):
            return sa.Uuid()
        if isinstance(value, dict | list):
            return sa.JSON()
        return sa.Text()
    return sa.Text()

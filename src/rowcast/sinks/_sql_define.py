"""What a replica is made of (private to `rowcast.sinks.sql`): its schema, its tables and
their columns, defined from the source's own tables where the sink can read them.

* `SourceTables` reflects the source database's tables through a plain connection:
  the source URL without rowcast's own options (`plain_url`), so ``slot=``,
  ``publication=``, ``server_id=``, ``tables=``... never reach a driver.
* `ensure_schema` makes the target schema when it is missing, or says the statement
  to run when the user may not (or may not use an existing one).
* `define` a new table; `add_columns` that a source added after the table was made.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchTableError, SQLAlchemyError

from .._url import masked
from ..backends import missing_extra
from ..change import Change
from ..errors import ConfigError
from ._sql_types import column_type, decimals_as_text, for_dialect

__all__ = [
    "SourceTables",
    "add_columns",
    "define",
    "ensure_schema",
    "plain_url",
    "sqlalchemy_url",
]

log = logging.getLogger("rowcast.sinks.sql")

_DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg"}
_DRIVERS |= {"mysql": "mysql+pymysql", "mariadb": "mysql+pymysql"}
Columns = dict[str, list[Any]]
"""Column names, in the order first met, with the values the changes carry for them."""


def sqlalchemy_url(url: str) -> str:
    """A rowcast URL as SQLAlchemy takes it: a driver named for the bare schemes."""
    scheme, sep, rest = url.partition("://")
    return f"{_DRIVERS.get(scheme.lower(), scheme)}{sep}{rest}"


# ---------------------------------------------------------------- the source


def plain_url(url: str) -> sa.URL:
    """The database a source URL reads, as its source connects to it: rowcast's own
    options left out.

    ``outbox+<url>``: `<url>` as it is (the outbox source hands its query to
    SQLAlchemy); ``mysql://``, ``mariadb://``, ``sqlite://``: without the query (those
    sources give their driver none of it); ``postgresql://``: with libpq's own
    parameters only (``sslmode``, ``connect_timeout``...), as the source does.
    """
    outbox = url[:7].lower() == "outbox+"
    given = url[7:] if outbox else url
    try:
        parsed = sa.make_url(sqlalchemy_url(given))
    except (ArgumentError, ValueError) as e:
        raise ConfigError(f"{masked(url)}: not a database URL to read tables from: {e}") from e
    backend = parsed.get_backend_name()
    if outbox:
        return parsed
    if backend in {"mysql", "mariadb", "sqlite"}:
        return parsed.set(query={})
    if backend == "postgresql":
        known = _libpq_keywords()
        return parsed.set(query={k: v for k, v in parsed.query.items() if k in known})
    return parsed


@functools.cache
def _libpq_keywords() -> frozenset[str]:
    try:
        from psycopg import pq
    except ImportError as e:  # pragma: no cover - the extra is installed in tests
        raise missing_extra("postgres", "reading a PostgreSQL source's tables", e) from e
    return frozenset(option.keyword.decode() for option in pq.Conninfo.get_defaults())


class SourceTables:
    """The source database's tables, reflected to define the replica's like them."""

    def __init__(self, url: str) -> None:
        try:
            self._engine = sa.create_engine(plain_url(url))
        except (SQLAlchemyError, ImportError, ValueError) as e:
            raise ConfigError(f"{masked(url)}: cannot read the source's tables: {e}") from e

    def table(self, schema: str | None, name: str) -> sa.Table | None:
        """The source table, as it is now; None if the source has none of that name."""
        try:
            return sa.Table(name, sa.MetaData(), schema=schema, autoload_with=self._engine)
        except NoSuchTableError:
            return None

    def close(self) -> None:
        self._engine.dispose()


# ---------------------------------------------------------------- the target's schema


def ensure_schema(conn: sa.Connection, schema: str | None, create: bool, url: str) -> None:
    """The target schema (`schema`, else the connection's) exists and the user may use it:
    made when missing if the sink may `create`, else a `ConfigError` with the statement
    to run."""
    if conn.dialect.name == "postgresql":
        _postgres_schema(conn, schema, create, url)
    elif conn.dialect.name in {"mysql", "mariadb"}:
        _mysql_database(conn, schema, create, url)


def _postgres_schema(conn: sa.Connection, schema: str | None, create: bool, url: str) -> None:
    name = schema or conn.scalar(sa.text("SELECT current_schema()"))
    if name is None:
        raise ConfigError(
            f"{url}: the connection's search_path names no schema that exists; "
            "name one with schema=<name>"
        )
    q = conn.dialect.identifier_preparer
    user = conn.scalar(sa.text("SELECT current_user"))
    made = f"CREATE SCHEMA {q.quote_schema(name)} AUTHORIZATION {q.quote(user)};"
    if not conn.scalar(
        sa.text("SELECT count(*) FROM pg_namespace WHERE nspname = :s"), {"s": name}
    ):
        if not create:
            raise ConfigError(
                f"{url}: schema {name!r} does not exist; create it: {made} "
                "(or let the sink create it: create=true)"
            )
        if not conn.scalar(sa.text("SELECT has_database_privilege(current_database(), 'CREATE')")):
            raise ConfigError(
                f"{url}: schema {name!r} does not exist and user {user!r} may not create it; "
                f"run, as a user who may: {made}"
            )
        conn.execute(sa.schema.CreateSchema(name, if_not_exists=True))
        log.info("created schema %s in %s", name, url)
        return
    lacking = [
        privilege
        for privilege in (("USAGE", "CREATE") if create else ("USAGE",))
        if not conn.scalar(
            sa.text("SELECT has_schema_privilege(:s, :p)"), {"s": name, "p": privilege}
        )
    ]
    if lacking:
        why = " (to create tables and add columns)" if "CREATE" in lacking else ""
        instead = "; or create=false to write only into tables that exist" if why else ""
        raise ConfigError(
            f"{url}: user {user!r} lacks {' and '.join(lacking)} on schema {name!r}{why}; "
            f"run, as its owner: GRANT {', '.join(lacking)} ON SCHEMA {q.quote_schema(name)} "
            f"TO {q.quote(user)};{instead}"
        )


_DENIED = {1044, 1045, 1142, 1227}  # MySQL/MariaDB: access denied


def _mysql_database(conn: sa.Connection, schema: str | None, create: bool, url: str) -> None:
    name = schema or conn.scalar(sa.text("SELECT DATABASE()"))
    if name is None:
        raise ConfigError(f"{url} names no database: write mysql://host/db or schema=<name>")
    found = sa.text("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :s")
    if conn.scalar(found, {"s": name}):
        return
    q = conn.dialect.identifier_preparer
    user, _, host = str(conn.scalar(sa.text("SELECT CURRENT_USER()"))).rpartition("@")
    writes = "SELECT, INSERT, UPDATE, DELETE" + (", CREATE, ALTER" if create else "")
    made = (
        f"CREATE DATABASE {q.quote(name)}; GRANT {writes} ON {q.quote(name)}.* TO "
        f"'{user}'@'{host}';"
    )
    if not create:
        raise ConfigError(
            f"{url}: database {name!r} does not exist (or user '{user}' may not see it); "
            f"run: {made} (or let the sink create it: create=true)"
        )
    try:
        conn.exec_driver_sql(f"CREATE DATABASE IF NOT EXISTS {q.quote(name)}")
    except DBAPIError as e:
        if getattr(e.orig, "args", (None,))[0] not in _DENIED:
            raise
        raise ConfigError(
            f"{url}: database {name!r} does not exist and user '{user}'@'{host}' may not "
            f"create it (or see it); run, as a user who may: {made}"
        ) from e
    log.info("created database %s in %s", name, url)


# ---------------------------------------------------------------- tables and columns


def define(
    name: str,
    metadata: sa.MetaData,
    changes: Sequence[Change],
    source: sa.Table | None,
    dialect: str,
) -> sa.Table:
    """A new target table for the changes of one source table: the `source` table's
    columns, then any other the changes carry; keyed like the source, else by the first
    columns of a row that hold the change's ``pk`` (`dialect`: the target database's).

    No key column is auto-incremented: the keys are the source's (MySQL would make an
    integer key of 0 the next number). On MySQL a text key column is a VARCHAR(255):
    MySQL indexes no TEXT column whole; other types as `for_dialect` says.
    """
    rows = [row for c in changes for row in (c.after, c.before) if row]
    values: Columns = {}
    for row in rows:
        for n in row:
            values.setdefault(n, [])
    for n, found in values.items():
        found.extend(row.get(n) for row in rows)
    own = {c.name: c for c in source.columns} if source is not None else {}
    keys = [c.name for c in source.primary_key] if source is not None else []
    if not keys:
        keys = _guess_key(list(rows[0]), rows[0], changes[0].pk)
    names = [*own, *(n for n in values if n not in own)]
    columns = []
    for n in names:
        kind = for_dialect(column_type(own.get(n), values.get(n, ())), dialect)
        if n in keys and dialect in {"mysql", "mariadb"} and type(kind) is sa.Text:
            kind = sa.String(255)
        columns.append(sa.Column(n, kind, primary_key=n in keys, autoincrement=False))
    return sa.Table(name, metadata, *columns)


def add_columns(
    conn: sa.Connection,
    table: sa.Table,
    columns: Columns,
    source: sa.Table | None,
    create: bool,
    url: str,
) -> bool:
    """Add to `table` the `columns` it lacks (a source added them since it was made),
    typed as `define` types them; whether any was. Without `create`, a `ConfigError`
    with the statements to run. `table` itself is left as it was: reflect it again."""
    own = {c.name: c for c in source.columns} if source is not None else {}
    new = [
        sa.Column(n, for_dialect(column_type(own.get(n), values), conn.dialect.name))
        for n, values in columns.items()
        if n not in table.c
    ]
    if not new:
        return False
    # the new columns on a table of their own, to compile them for this database
    scratch = sa.Table(table.name, sa.MetaData(schema=table.schema), *new)
    if conn.dialect.name == "sqlite":
        decimals_as_text(scratch)
    where = conn.dialect.identifier_preparer.format_table(table)
    statements = [
        f"ALTER TABLE {where} ADD COLUMN {sa.schema.CreateColumn(c).compile(dialect=conn.dialect)}"
        for c in new
    ]
    if not create:
        raise ConfigError(
            f"{url}: table {table.name} has no column {', '.join(c.name for c in new)}, which "
            f"its changes carry; add it: {'; '.join(statements)}; (or let the sink add "
            "columns: create=true)"
        )
    for statement in statements:
        conn.exec_driver_sql(statement)
    log.info("added column(s) %s to table %s", ", ".join(c.name for c in new), table.name)
    return True


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

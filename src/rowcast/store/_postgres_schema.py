"""Creating the PostgreSQL event store's schema and tables, once, whoever comes first.

`ensure_schema` runs when a store opens (sync or async) and for ``rowcast
events init``. The tables, and the function that appends (``rowcast_append``: one round
trip per append), are made if missing. What exists is only checked for, so a role that may not
create anything can run a store whose tables a privileged role made ahead
of time. Creation runs in one transaction under an advisory lock of its own,
so that processes opening a new store together do not race on the catalog.
"""

from __future__ import annotations

from typing import Any

import psycopg

from ..errors import ConfigError, StoreError
from ._postgres_sql import Statements, quote

__all__ = ["ensure_schema"]


def ensure_schema(
    conn: psycopg.Connection[Any], schema: str | None, shown: str, *, create: bool = True
) -> str:
    """Create what is missing of the store in `schema` (None: the current schema); its name.

    With `create` false, nothing is created: a store that is missing, or lacks a
    table, is a `StoreError` naming ``rowcast events init``.
    """
    try:
        if schema is None:
            row = conn.execute("SELECT current_schema()").fetchone()
            schema = None if row is None else row[0]
            if schema is None:
                raise ConfigError(
                    f"event store {shown}: the connection has no current schema (no schema "
                    "of its search_path exists); name one with ?schema=NAME"
                )
        sql = Statements(schema)
        row = conn.execute(sql.missing, (sql.signature, list(sql.tables))).fetchone()
        if row is not None and row[0] == 0:
            return schema
        if not create:
            raise StoreError(
                f"no rowcast event store in {shown}, schema {schema!r} "
                f"({_lacking(conn, sql)}): create one with `rowcast events init {shown}"
                f"{'' if schema == 'public' else f' --schema {schema}'}`"
            )
        with conn.transaction():
            conn.execute(f"SELECT pg_advisory_xact_lock({sql.setup_key})")
            row = conn.execute("SELECT to_regnamespace(%s) IS NULL", (quote(schema),)).fetchone()
            if row is not None and row[0]:
                conn.execute(sql.create_schema)
            for statement in sql.create_tables:
                conn.execute(statement)
            conn.execute(sql.create_function)
    except psycopg.errors.InsufficientPrivilege as e:
        user = conn.info.user
        raise StoreError(
            f"event store {shown}: role {user!r} may not create the event store's tables in "
            f"schema {schema!r} ({str(e).strip()}); create them once with a privileged role: "
            f"rowcast events init URL --schema {schema}"
        ) from e
    except psycopg.Error as e:
        raise StoreError(
            f"event store {shown}: cannot create the tables in schema {schema!r}: {e}"
        ) from e
    return schema


def _lacking(conn: psycopg.Connection[Any], sql: Statements) -> str:
    """What of the store is missing: "no rowcast_events, rowcast_append()"."""
    if _absent(conn, "to_regnamespace", quote(sql.schema)):
        return "the schema does not exist"
    missing = [t.rpartition(".")[2] for t in sql.tables if _absent(conn, "to_regclass", t)]
    if _absent(conn, "to_regprocedure", sql.signature):
        missing.append("rowcast_append()")
    return "no " + ", ".join(missing)


def _absent(conn: psycopg.Connection[Any], function: str, name: str) -> bool:
    row = conn.execute(f"SELECT {function}(%s) IS NULL", (name,)).fetchone()
    return bool(row and row[0])

"""What rowcast left in a MySQL / MariaDB database: ``rowcast uninstall mysql://...``.

The binlog source itself creates nothing in the database (a reader's server id
lock goes with its connection). What other parts of rowcast make there are
tables named ``rowcast_*``: the outbox, SQL checkpoints, a replication sink's
registry. `leftovers` lists them, in the URL's database (every database without
one), with their rows; all are data (`rowcast.sources._leftovers`): `remove`
drops them only with `include_data`.
"""

from __future__ import annotations

from typing import Any

from ..._words import counted
from ...errors import ConfigError
from .._leftovers import Leftover, what
from .scope import _SYSTEM
from .server import ServerURL, _pymysql, connect, parse_url

__all__ = ["leftovers", "remove"]


def _found(conn: Any, database: str | None) -> list[Leftover]:
    query = (
        "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES "
        "WHERE TABLE_NAME LIKE 'rowcast\\\\_%%'"
    )
    found = []
    with conn.cursor() as cur:
        if database is None:
            cur.execute(query + " ORDER BY 1, 2")
        else:
            cur.execute(query + " AND TABLE_SCHEMA = %s ORDER BY 1, 2", (database,))
        tables = [(str(s), str(t)) for s, t in cur.fetchall()]
        for schema, table in tables:
            name = f"`{schema}`.`{table}`"
            cur.execute(f"SELECT COUNT(*) FROM {name}")
            holds, data = what(table)
            found.append(
                Leftover(
                    "table",
                    f"{schema}.{table}",
                    f"{holds}, {counted(cur.fetchone()[0], 'row')}",
                    f"DROP TABLE {name};",
                    data,
                )
            )
    return found


def _missing(conn: Any, target: ServerURL) -> None:
    """A ConfigError when the URL names a database the server does not have (a typo)."""
    if target.database is None:
        return
    with conn.cursor() as cur:
        cur.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY 1")
        databases = [str(d) for (d,) in cur.fetchall()]
    if databases and target.database not in databases:
        shown = ", ".join(d for d in databases if d.lower() not in _SYSTEM) or "none of yours"
        raise ConfigError(
            f"{target.masked}: database {target.database} does not exist: fix the database "
            f"in the URL (this server has {shown}; a URL without a database "
            "looks in every one)"
        )


def leftovers(url: str) -> list[Leftover]:
    """rowcast's tables in the URL's database (every database without one)."""
    target = parse_url(url)
    conn = connect(target)
    try:
        _missing(conn, target)
        return _found(conn, target.database)
    except _pymysql().err.MySQLError as error:
        raise ConfigError(f"{target.masked}: listing what rowcast left failed: {error}") from error
    finally:
        conn.close()


def remove(url: str, *, include_data: bool = False) -> list[Leftover]:
    """Drop what `leftovers` lists that is not data (with `include_data`, all of it)."""
    target = parse_url(url)
    conn = connect(target)
    try:
        _missing(conn, target)
        dropped = [o for o in _found(conn, target.database) if include_data or not o.data]
        with conn.cursor() as cur:
            for leftover in dropped:
                cur.execute(leftover.sql.rstrip(";"))
        return dropped
    except _pymysql().err.MySQLError as error:
        raise ConfigError(f"{target.masked}: removing what rowcast left failed: {error}") from error
    finally:
        conn.close()

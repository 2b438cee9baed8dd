"""What a binlog source captures: the URL's database (all without one) and the patterns.

Private to `rowcast.sources.mysql` and ``rowcast doctor``. ``mysql://host/shop``
captures the tables of ``shop`` only; ``mysql://host/`` every database's. A
database that does not exist, or a ``tables`` pattern that matches no table in
it, is a typo until told otherwise (``allow_empty``: the tables come later):
`checks` says which, with the databases or tables that do exist.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

from ..._words import counted
from ..base import Check

__all__ = ["captures", "checks", "listed", "problems", "tables"]

_SYSTEM = ("information_schema", "mysql", "performance_schema", "sys")
_SHOWN = 20  # names listed in a message at most


def captures(database: str | None, patterns: Sequence[str] | None, schema: str, table: str) -> bool:
    """Whether a source limited to `database` (None: all) and `patterns` reads the table."""
    if database is not None and schema != database:
        return False
    if patterns is None:
        return True
    full = f"{schema}.{table}"
    return any(fnmatch.fnmatchcase(full, p) or fnmatch.fnmatchcase(table, p) for p in patterns)


def listed(names: Sequence[str]) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


def checks(conn: Any, database: str | None, patterns: Sequence[str] | None) -> list[Check]:
    """The URL's database exists, each pattern matches a table in scope (lines of doctor)."""
    with conn.cursor() as cur:
        cur.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY 1")
        databases = [str(d) for (d,) in cur.fetchall() if str(d).lower() not in _SYSTEM]
        cur.execute(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES "
            "WHERE TABLE_TYPE = 'BASE TABLE' ORDER BY 1, 2"
        )
        tables = [(str(s), str(t)) for s, t in cur.fetchall() if str(s).lower() not in _SYSTEM]
    if not databases and database not in _SYSTEM:  # a user with no privilege on any table
        unseen = "not checked: this user sees no database (grant it SELECT to check)"
        return [Check("database" if database else "tables", True, unseen)]
    found: list[Check] = []
    if database is not None:
        if database in databases or database.lower() in _SYSTEM:
            count = sum(s == database for s, _ in tables)
            found.append(Check(f"database {database}", True, f"exists, {counted(count, 'table')}"))
        else:
            found.append(
                Check(
                    f"database {database}",
                    False,
                    "does not exist",
                    f"fix the database in the URL: this server has {listed(databases)} (a URL "
                    "without a database captures every one); --allow-empty if it is made later",
                )
            )
            return found
    scope = [(s, t) for s, t in tables if captures(database, None, s, t)]
    names = [t if database else f"{s}.{t}" for s, t in scope]
    where = f"database {database}" if database else "this server"
    for pattern in patterns or ():
        count = sum(captures(database, [pattern], s, t) for s, t in scope)
        if count:
            found.append(Check(f"tables {pattern}", True, f"matches {counted(count, 'table')}"))
            continue
        other = ""
        if database is not None and "." in pattern:
            elsewhere = [f"{s}.{t}" for s, t in tables if captures(None, [pattern], s, t)]
            if elsewhere:
                other = (
                    f" (it matches {listed(elsewhere)}, outside {database}: the URL's database "
                    "limits capture to it; leave it out of the URL to capture other databases)"
                )
        found.append(
            Check(
                f"tables {pattern}",
                False,
                "matches no table",
                f"fix the pattern: the tables of {where} are {listed(names)}{other}; "
                "--allow-empty if they are created later",
            )
        )
    return found


def problems(conn: Any, database: str | None, patterns: Sequence[str] | None) -> list[Check]:
    """The failed `checks`."""
    return [c for c in checks(conn, database, patterns) if not c.ok]


def tables(conn: Any, database: str | None) -> list[tuple[str, str]]:
    """The base tables of `database` (None: of every database but the system's), in order."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES "
            "WHERE TABLE_TYPE = 'BASE TABLE' ORDER BY 1, 2"
        )
        found = [(str(s), str(t)) for s, t in cur.fetchall()]
    return [(s, t) for s, t in found if s.lower() not in _SYSTEM and captures(database, None, s, t)]

"""What rowcast left in a SQLite file, and removing it: ``rowcast uninstall sqlite:///...``.

`leftovers` lists rowcast's triggers and its ``rowcast_*`` tables (with what each
holds); `remove` drops the capture ones (and the data ones with `include_data`:
see `rowcast.sources._leftovers`) in one write transaction, triggers first (they
write into ``rowcast_changes``). `uninstall` is the older, narrower call: the
triggers (of some tables), optionally with rowcast's capture tables.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable

from ..._url import masked
from ..._words import counted
from ...errors import ConfigError
from .._leftovers import Leftover, what
from . import triggers
from .file import connect, matcher, parse_url

__all__ = ["leftovers", "remove", "uninstall"]


def _found(conn: sqlite3.Connection) -> list[Leftover]:
    found = [
        Leftover(
            "trigger",
            name,
            f"on {table}: every write to it is copied into rowcast_changes",
            f"DROP TRIGGER {triggers.ident(name)};",
        )
        for name, (table, _) in sorted(triggers.installed(conn).items())
    ]
    names = [
        str(name)
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'rowcast\\_%' "
            "ESCAPE '\\' ORDER BY name"
        )
    ]
    for name in names:
        holds, data = what(name)
        (rows,) = conn.execute(f"SELECT count(*) FROM {triggers.ident(name)}").fetchone()
        found.append(
            Leftover("table", name, f"{holds}, {counted(rows, 'row')}", f"DROP TABLE {name};", data)
        )
    return found


def leftovers(url: str) -> list[Leftover]:
    """rowcast's triggers and tables in the file at `url`."""
    path, _ = parse_url(url)
    with contextlib.closing(connect(path)) as conn:
        try:
            return _found(conn)
        except sqlite3.Error as e:
            raise ConfigError(f"{masked(url)}: listing what rowcast left failed: {e}") from e


def remove(url: str, *, include_data: bool = False) -> list[Leftover]:
    """Drop rowcast's triggers and capture tables (and data tables with `include_data`);
    what was dropped. A running relay installs its triggers again: stop it first."""
    path, _ = parse_url(url)
    with contextlib.closing(connect(path)) as conn:
        try:
            conn.execute("BEGIN IMMEDIATE")
            dropped = [o for o in _found(conn) if include_data or not o.data]
            for leftover in dropped:
                conn.execute(leftover.sql)
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise ConfigError(f"{masked(url)}: removing what rowcast left failed: {e}") from e
    return dropped


def uninstall(
    url: str, tables: Iterable[str] | None = None, drop_changes: bool = False
) -> list[str]:
    """Drop rowcast's triggers (on the tables `tables` matches); their names.

    With `drop_changes`, every rowcast trigger goes (whatever `tables`) and then
    rowcast's tables with the changes not read yet. A running source installs
    its triggers again at its next read: stop sources first.
    """
    if drop_changes and tables:
        raise ConfigError(
            "dropping rowcast_changes removes every table's triggers (they write to it); "
            "give tables or drop_changes, not both"
        )
    path, _ = parse_url(url)
    with contextlib.closing(connect(path)) as conn:
        try:
            return triggers.remove(conn, matcher(tuple(tables) if tables else None), drop_changes)
        except sqlite3.Error as e:
            raise ConfigError(f"{masked(url)}: removing rowcast's triggers failed: {e}") from e

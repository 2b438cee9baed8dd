"""Opening the SQLite file a trigger source reads: its URL, a connection, table patterns."""

from __future__ import annotations

import fnmatch
import os
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from ..._url import masked, unknown_option
from ...errors import ConfigError
from ..signal import NAME as SIGNAL
from .triggers import tables

__all__ = [
    "OPTIONS",
    "check_patterns",
    "connect",
    "in_wal_mode",
    "matcher",
    "parse_url",
    "read_only_uri",
]

OPTIONS = ("tables", "start", "retain")  # the URL options a SQLite source takes


def parse_url(url: str) -> tuple[str, dict[str, str]]:
    """The absolute path of the database file that `url` names, and its query options."""
    if not isinstance(url, str):
        raise ConfigError(f"a SQLite source URL is a string such as sqlite:///app.db, not {url!r}")
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite" or parts.netloc:
        raise ConfigError(
            f"malformed SQLite source URL {masked(url)!r}: write sqlite:///relative/app.db "
            "or sqlite:////absolute/app.db"
        )
    path = unquote(parts.path)
    database = path[1:] if path.startswith("/") else path
    if database in ("", ":memory:") or "mode=memory" in parts.query:
        raise ConfigError(
            f"{url!r} is a database in memory, which no other connection can see; "
            "name a file: sqlite:///app.db"
        )
    file = Path(database).expanduser().absolute()
    if file.is_dir():
        raise ConfigError(f"{url!r} names the directory {str(file)!r}; give a database file")
    if not file.exists():
        raise ConfigError(
            f"no SQLite database at {str(file)!r} ({url}): the file does not exist; "
            "a source reads an existing database (check the path; sqlite:////abs/path)"
        )
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    for name, value in pairs:
        if name not in OPTIONS:
            raise unknown_option(url, name, value, "a SQLite source", OPTIONS)
    return str(file), dict(pairs)


def in_wal_mode(path: str) -> bool:
    """Whether the database file `path` is in WAL mode, from its header (opening nothing)."""
    try:
        with open(path, "rb") as file:
            header = file.read(20)
    except OSError:
        return False
    return len(header) == 20 and header[18] == 2  # the file format's write version


def read_only_uri(path: str) -> str:
    """A ``file:`` URI that opens `path` without writing a byte, in it or beside it.

    ``mode=ro``, and ``immutable=1`` for a database in WAL mode that no connection has
    open (no ``-wal`` file: SQLite removes it with the last connection), where a
    read-only connection would otherwise make ``-wal`` and ``-shm`` files it cannot
    remove. (Such a connection reports ``PRAGMA journal_mode`` as ``delete``: ask
    `in_wal_mode`.)
    """
    if in_wal_mode(path) and not os.path.exists(f"{path}-wal"):
        return f"file:{quote(path)}?mode=ro&immutable=1"
    return f"file:{quote(path)}?mode=ro"


def connect(path: str, timeout: float = 30.0) -> sqlite3.Connection:
    """A connection in autocommit mode to an existing file (never creates one)."""
    try:
        return sqlite3.connect(
            f"file:{quote(path)}?mode=rw",
            uri=True,
            timeout=timeout,
            isolation_level=None,
            check_same_thread=False,
        )
    except sqlite3.Error as e:
        raise ConfigError(f"cannot open {path!r} for reading and writing: {e}") from e


def matcher(patterns: tuple[str, ...] | None) -> Any:
    if patterns is None:
        return lambda table: True
    return lambda table: any(
        fnmatch.fnmatchcase(table, p) or fnmatch.fnmatchcase(f"main.{table}", p) for p in patterns
    )


def check_patterns(
    conn: sqlite3.Connection, url: str, patterns: tuple[str, ...] | None, later: bool = True
) -> None:
    """A `ConfigError` for each pattern that matches no table, with the tables there are
    (and, with `later`, the option that starts anyway: a reader's ``--allow-empty``)."""
    if not patterns:
        return
    names = [t.name for t in tables(conn, lambda table: table != SIGNAL)]
    missing = [p for p in patterns if not tables(conn, matcher((p,)))]
    if missing:
        hint = " (--allow-empty if they are created later)" if later else ""
        raise ConfigError(
            f"{url}: tables {', '.join(map(repr, missing))} match no table: fix the pattern; "
            f"this database's tables are {', '.join(names) or 'none'}{hint}"
        )

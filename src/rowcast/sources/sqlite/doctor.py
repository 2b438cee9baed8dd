"""``rowcast doctor sqlite:///app.db``: can this file be captured, and is the capture in place.

Reads only (the file is opened read-only, and writes nothing beside it, not even the
``-wal`` / ``-shm`` files of a WAL database nobody has open): SQLite's version, write
access to the file and its directory, the journal mode, and for every table
the URL's ``tables=`` option selects (all by default) whether its three
triggers are installed and made for its current columns.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path

from ..._url import masked
from ..._words import counted
from ...errors import ConfigError
from ..base import Check, Diagnosis
from . import triggers
from .file import in_wal_mode, matcher, parse_url, read_only_uri

__all__ = ["diagnose"]


def diagnose(url: str) -> Diagnosis:
    """See the module docstring; raises `ConfigError` when the file cannot be read at all."""
    path, options = parse_url(url)
    tables = tuple(options["tables"].split(",")) if "tables" in options else None
    try:
        conn = sqlite3.connect(read_only_uri(path), uri=True)
        conn.isolation_level = None
    except sqlite3.Error as e:
        raise ConfigError(f"cannot open {path!r}: {e}") from e
    with contextlib.closing(conn):
        try:
            return _diagnose(conn, masked(url), path, tables)
        except sqlite3.DatabaseError as e:  # not a database, say
            raise ConfigError(f"{masked(url)}: checking {path!r} failed: {e}") from e


def _diagnose(
    conn: sqlite3.Connection, target: str, path: str, tables: tuple[str, ...] | None
) -> Diagnosis:
    (journal,) = conn.execute("PRAGMA journal_mode").fetchone()
    if in_wal_mode(path):  # read as immutable, SQLite says "delete"
        journal = "wal"
    facts = [("sqlite", sqlite3.sqlite_version), ("file", path), ("journal", journal)]
    checks = [_writable(path), _version()]
    checks.append(
        Check(
            "journal_mode",
            journal.lower() == "wal",
            journal,
            "run PRAGMA journal_mode = WAL once (it stays): in other modes a reading "
            "source blocks the app's writers while it reads",
        )
    )
    wanted = matcher(tables)
    found = triggers.tables(conn, wanted)
    checks.append(
        Check(
            "tables",
            bool(found),
            f"{len(found)} to capture" if found else "none",
            "create the app's tables first"
            + (f", or widen tables= ({', '.join(tables)})" if tables else ""),
        )
    )
    every = ", ".join(t.name for t in triggers.tables(conn, lambda table: True)) or "none"
    for pattern in tables or ():
        count = len(triggers.tables(conn, matcher((pattern,))))
        checks.append(
            Check(
                f"tables {pattern}",
                bool(count),
                f"matches {counted(count, 'table')}" if count else "matches no table",
                f"fix the pattern: this database's tables are {every}; --allow-empty if they "
                "are created later",
            )
        )
    have = triggers.installed(conn)
    work = triggers.plan(conn, wanted)
    install = "a running source re-creates them at once; else start the relay"
    outdated = triggers.outdated(conn)
    upgrade = "read what it holds with that version, then rowcast uninstall URL --yes"
    for table in found:
        names = [triggers.trigger_name(table.name, op) for op in ("insert", "update", "delete")]
        missing = [n for n in names if n not in have]
        stale = [n for n, _, _ in work.create if n in names and n in have]
        if missing:  # as a missing PostgreSQL slot: made by the reader that needs it
            value = (
                f"not installed ({', '.join(missing)}): a relay installs them when it starts "
                "and keeps them; a tail installs its own and removes them when it stops"
            )
            fix = ""
        elif outdated:
            value, fix = "made by an older rowcast", upgrade
        elif stale:
            value, fix = "out of date (its columns changed)", install
        else:
            value, fix = "installed, up to date", ""
        checks.append(Check(f"triggers on {table.name}", not stale and not outdated, value, fix))
    if outdated:
        checks.append(Check("rowcast_changes format", False, "an older rowcast's format", upgrade))
    if triggers.has_tables(conn):
        facts += _changes(conn)
    elif outdated:
        (count,) = conn.execute(f"SELECT count(*) FROM {triggers.CHANGES}").fetchone()
        facts.append(("changes", f"{counted(count, 'row')} kept, written by an older rowcast"))
    else:
        facts.append(("changes", "rowcast_changes not created yet"))
    return Diagnosis(target, facts, checks, "rowcast captures every change to these tables.")


def _writable(path: str) -> Check:
    directory = str(Path(path).parent)
    problems = [p for p in (path, directory) if not os.access(p, os.W_OK)]
    return Check(
        "write access",
        not problems,
        "file and directory writable" if not problems else f"cannot write {problems[0]}",
        "rowcast installs triggers and SQLite makes -wal/-journal files beside the database: "
        "give this user write access to both",
    )


def _version() -> Check:
    need = ".".join(map(str, triggers.SQLITE))
    return Check(
        "sqlite version",
        sqlite3.sqlite_version_info >= triggers.SQLITE,
        sqlite3.sqlite_version,
        f"use a Python whose SQLite is {need}+ (the source reads pragma_table_list)",
    )


def _changes(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    count, first, last = conn.execute(
        "SELECT count(*), min(seq), max(seq) FROM rowcast_changes"
    ).fetchone()
    row = conn.execute("SELECT value FROM rowcast_state WHERE key = 'pruned'").fetchone()
    kept = f"{counted(count, 'row')} kept" + (f" (seq {first} to {last})" if count else "")
    facts = [("changes", kept + (f", pruned up to {row[0]}" if row else ""))]
    now = time.time()
    for name, position, updated in conn.execute(
        "SELECT name, position, updated_at FROM rowcast_readers ORDER BY name"
    ):
        facts.append(("reader", f"{name} at {position} ({now - updated:.0f}s ago)"))
    return facts

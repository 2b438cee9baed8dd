"""Readers without a checkpoint (``rowcast tail``) leave nothing behind in a SQLite file.

Private to `rowcast.sources.sqlite`. Tails and relays share one set of triggers and
one ``rowcast_changes``. A relay (a reader with a checkpoint) installs its triggers
to stay. A tail records in ``rowcast_state``, in the transaction that installs them,
what it made: each trigger (``tail trigger <name>``), rowcast's tables when it made
them (``tail tables``), and itself (``tail <host> <pid> <token>``). When the last
tail leaves (`leave`), the triggers tails made go, and rowcast's tables with them
when tails made those and no trigger and no checkpointed reader is left. A relay
`adopt` s what tails made on the tables it reads: no tail ever removes what a relay
uses. A tail killed before it left (SIGKILL) leaves its triggers until the next
tail leaves (a dead tail's record, its pid gone on this host, does not count), or
``rowcast uninstall``.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import sqlite3
from collections.abc import Callable
from typing import Any

from . import readers, triggers

__all__ = ["adopt", "join_if_marked", "key", "leave", "leave_logged", "mark"]

log = logging.getLogger("rowcast.sources.sqlite")

TAIL = "tail "  # a live tail: tail <host> <pid> <token>
MARK = "tail trigger "  # a trigger a tail made
MADE = "tail tables"  # rowcast's tables, made by a tail
_RECORD = "INSERT OR REPLACE INTO rowcast_state VALUES (?, 1)"


def key() -> str:
    """A tail's record, unique to it: host, pid and a random token."""
    return f"{TAIL}{socket.gethostname()} {os.getpid()} {secrets.token_hex(3)}"


def mark(conn: sqlite3.Connection, work: triggers.Plan, made: bool, tail: str) -> None:
    """Inside the install's transaction: the triggers the `tail` just created (not those
    it re-created: someone else's), rowcast's tables when it `made` them, and the tail."""
    for name, _, _ in work.create:
        if name not in work.drop:
            conn.execute(_RECORD, (MARK + name,))
    if made:
        conn.execute(_RECORD, (MADE,))
    if work.create:
        conn.execute(_RECORD, (tail,))


def _write(conn: sqlite3.Connection, work: Callable[[], Any]) -> Any:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _marks(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT key FROM rowcast_state WHERE substr(key, 1, ?) = ?", (len(MARK), MARK)
    ).fetchall()
    return [str(name)[len(MARK) :] for (name,) in rows]


def _made(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM rowcast_state WHERE key = ?", (MADE,)).fetchone() is not None


def join_if_marked(conn: sqlite3.Connection, tail: str, url: str) -> bool:
    """Record the `tail` as reading when tails made what it reads (else nothing to record:
    what it reads is a relay's); whether it is recorded."""
    if not triggers.has_tables(conn) or not (_marks(conn) or _made(conn)):
        return False
    try:
        _write(
            conn,
            lambda: conn.execute("INSERT OR REPLACE INTO rowcast_state VALUES (?, 1)", (tail,)),
        )
    except sqlite3.OperationalError as e:  # the app holds the write lock: read all the same
        log.warning("%s: could not record this reader (%s)", url, e)
        return False
    return True


def adopt(conn: sqlite3.Connection, wanted: Callable[[str], bool]) -> None:
    """A checkpointed reader makes the tails' triggers on the tables it reads (and rowcast's
    tables) its own: no tail removes them from now on."""
    if not triggers.has_tables(conn):
        return
    installed = triggers.installed(conn)
    mine = [n for n in _marks(conn) if n in installed and wanted(installed[n][0])]
    if not mine and not _made(conn):
        return

    def work() -> None:
        for name in mine:
            conn.execute("DELETE FROM rowcast_state WHERE key = ?", (MARK + name,))
        conn.execute("DELETE FROM rowcast_state WHERE key = ?", (MADE,))

    _write(conn, work)


def _alive(record: str) -> bool:
    """Whether the tail recorded as `record` may still run (a pid on another host may)."""
    _, host, pid, _ = [*record.split(" ", 3), "", "", ""][:4]
    return readers.alive(host, pid)


def leave(conn: sqlite3.Connection, tail: str) -> list[str]:
    """The `tail` stops reading; the last one removes what tails made. What it removed."""
    if not triggers.has_tables(conn):
        return []

    def work() -> list[str]:
        conn.execute("DELETE FROM rowcast_state WHERE key = ?", (tail,))
        rows = conn.execute(
            "SELECT key FROM rowcast_state WHERE substr(key, 1, ?) = ?", (len(TAIL), TAIL)
        ).fetchall()
        others = [str(k) for (k,) in rows if not str(k).startswith(MARK) and str(k) != MADE]
        for other in others:
            if not _alive(other):
                conn.execute("DELETE FROM rowcast_state WHERE key = ?", (other,))
        if any(_alive(other) for other in others):
            return []
        removed = []
        for name in _marks(conn):
            conn.execute(f"DROP TRIGGER IF EXISTS {triggers.ident(name)}")
            conn.execute("DELETE FROM rowcast_state WHERE key = ?", (MARK + name,))
            removed.append(name)
        readers = conn.execute("SELECT count(*) FROM rowcast_readers").fetchone()[0]
        if _made(conn) and not triggers.installed(conn) and not readers:
            for table in (*triggers.OWN, *triggers.spills(conn)):
                conn.execute(f"DROP TABLE IF EXISTS {table}")
            removed += [*triggers.OWN]
        return removed

    return list(_write(conn, work))


def leave_logged(conn: sqlite3.Connection, tail: str, url: str) -> None:
    """`leave`, what it removed logged; a failure is a warning with the command that cleans up."""
    try:
        removed = leave(conn, tail)
    except sqlite3.Error as e:
        log.warning(
            "%s: could not remove the triggers this reader installed (%s); "
            "rowcast uninstall %s --yes removes them",
            url,
            e,
            url,
        )
        return
    if removed:
        log.info("%s: removed what this reader installed: %s", url, ", ".join(removed))

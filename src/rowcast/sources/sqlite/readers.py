"""``rowcast_readers``, who reads for a checkpoint, and pruning.

Private to `rowcast.sources.sqlite`. A checkpointed reader records its position
in ``rowcast_readers`` (`record`) before it reads and as it goes; `prune`
deletes the transactions every such reader has passed, found committed more
than `retain` seconds ago (see `rowcast.sources.sqlite.source`).

One process reads for a checkpoint: a reader `claim` s it in the transaction that
records its position, in ``rowcast_state`` (``reader <host> <pid> <token>@<when>
<reader>``), and `release` s it when it stops. Another reader of that checkpoint
(the same relay started twice) is refused while that process runs: two would
deliver everything twice and save over each other's positions. The record of a
reader that was killed (SIGKILL) is taken over once its pid is gone on this host,
is a zombie, or is a process that started after the claim (a restarted container's
relay often has the same pid); a pid on another host is taken to run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import sqlite3
import time
from typing import TYPE_CHECKING

from ...checkpoint.report import began_by, running, started
from ...errors import ConfigError
from . import triggers
from .snapshot import plan

if TYPE_CHECKING:
    from ...checkpoint import Checkpoint

__all__ = ["alive", "check_known", "claim", "name", "prune", "record", "refuse_another", "release"]

OWNER = "reader "  # in rowcast_state: reader <host> <pid> <token>@<when> <reader>

log = logging.getLogger("rowcast.sources.sqlite")


def name(checkpoint: Checkpoint) -> str:
    """The reader a checkpoint stands for, in ``rowcast_readers``."""
    return f"{checkpoint.url}#{getattr(checkpoint, 'name', 'default')}"


def record(conn: sqlite3.Connection, checkpoint: Checkpoint, position: int) -> None:
    """Record in the caller's write transaction that `checkpoint`'s reader is at `position`."""
    conn.execute(
        "INSERT INTO rowcast_readers VALUES (?, ?, ?) ON CONFLICT (name) DO "
        "UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
        (name(checkpoint), position, time.time()),
    )


def prune(conn: sqlite3.Connection, url: str, checkpoint: Checkpoint | None, retain: float) -> int:
    """Delete the rows every checkpointed reader has passed, older than `retain`; a count.

    Records `checkpoint`'s saved position first (when it is a seq). Only whole
    transactions go (up to a sealed row), and the highest seq removed is kept, so a
    reader asking for an older position is refused. A locked file is a warning.
    """
    now = time.time()
    conn.execute("BEGIN IMMEDIATE")
    try:
        if checkpoint is not None:
            saved = checkpoint.load()
            if saved is not None and saved.isdigit():
                record(conn, checkpoint, int(saved))
        (limit,) = conn.execute("SELECT min(position) FROM rowcast_readers").fetchone()
        (upto,) = conn.execute(
            "SELECT max(seq) FROM rowcast_changes WHERE sealed < ? AND seq <= ?",
            (triggers.julian(now - retain), limit if limit is not None else 2**63 - 1),
        ).fetchone()
        count = 0
        if upto is not None:  # never the newest row: the next seq is the highest plus one
            (newest,) = conn.execute("SELECT max(seq) FROM rowcast_changes").fetchone()
            cut = min(upto, newest - 1)
            count = conn.execute("DELETE FROM rowcast_changes WHERE seq <= ?", (cut,)).rowcount
            for spill in triggers.spills(conn):
                conn.execute(f"DELETE FROM {spill} WHERE seq <= ?", (cut,))
            conn.execute(
                "INSERT INTO rowcast_state VALUES ('pruned', ?) ON CONFLICT (key) DO "
                "UPDATE SET value = max(value, excluded.value)",
                (upto,),
            )
        conn.execute("COMMIT")
    except sqlite3.OperationalError as e:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        log.warning("%s: pruning rowcast_changes failed: %s", url, e)
        return 0
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if count:
        log.info("%s: pruned %d rows of rowcast_changes (up to %d)", url, count, upto)
    return count


def check_known(conn: sqlite3.Connection, checkpoint: Checkpoint, url: str) -> None:
    """Refuse a saved position that these tables never saw their reader reach.

    A checkpointed reader is recorded in ``rowcast_readers`` before it reads, so
    a saved position with no record was saved against other tables: dropped and
    made again since (their seqs start at 1 again), or another file's.
    """
    saved = checkpoint.load()
    known = None
    if conn.execute(  # none: dropped (rowcast uninstall --yes), or never made here
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'rowcast_readers'"
    ).fetchone():
        known = conn.execute(
            "SELECT 1 FROM rowcast_readers WHERE name = ?", (name(checkpoint),)
        ).fetchone()
    point = saved
    if saved is not None and saved.startswith("snapshot:"):  # where its reader was in the log
        point = plan(saved, "never").point  # type: ignore[union-attr]
    if point and point.isdigit() and known is None:
        raise ConfigError(
            f"{url}: checkpoint {checkpoint.url} holds position {saved}, but "
            "this database has no record of that reader: rowcast_changes was dropped and "
            "made again since it was saved (rowcast uninstall --yes?), or the "
            "checkpoint is another database's (or was moved). Resuming would skip "
            "changes: remove the checkpoint to read from start= again"
        )


def alive(host: str, pid: str, claimed: float | None = None) -> bool:
    """Whether process `pid` of `host`, which claimed at `claimed` (None: unknown), may
    still run. One on another host may; a zombie (killed, not reaped yet by its parent)
    does not, nor a process that started after the claim (the pid taken again: by the
    relay of a restarted container, say, this one included)."""
    if host != socket.gethostname() or not pid.isdigit():
        return True
    if int(pid) == os.getpid():
        return began_by(started(os.getpid()), claimed)
    return running(int(pid), claimed)


def refuse_another(conn: sqlite3.Connection, checkpoint: Checkpoint, url: str) -> None:
    """A `ConfigError` when another process that runs reads for `checkpoint`; the records
    of those that do not run go (in the caller's write transaction, if any)."""
    reader = name(checkpoint)
    rows = conn.execute(
        "SELECT key FROM rowcast_state WHERE substr(key, 1, ?) = ?", (len(OWNER), OWNER)
    ).fetchall()
    for (key,) in rows:
        host, pid, token, other = [*str(key)[len(OWNER) :].split(" ", 3), "", "", ""][:4]
        if other != reader:
            continue
        at = token.partition("@")[2]  # when it claimed (none from an earlier rowcast)
        if alive(host, pid, int(at) if at.isdigit() else None):
            raise ConfigError(
                f"{url}: checkpoint {checkpoint.url} is read by another reader, pid {pid} on "
                f"{host}: two readers of one checkpoint deliver everything twice and save over "
                "each other's positions. Stop that reader first (the same relay started "
                "twice?), or give this one a checkpoint of its own. If it no longer runs "
                f"(its host is gone): DELETE FROM rowcast_state WHERE key = '{key}';"
            )
        if conn.in_transaction:
            conn.execute("DELETE FROM rowcast_state WHERE key = ?", (key,))


def claim(conn: sqlite3.Connection, checkpoint: Checkpoint, url: str) -> str:
    """In the caller's write transaction: this process reads for `checkpoint` (see the
    module docstring); its record, for `release`."""
    refuse_another(conn, checkpoint, url)
    token = f"{secrets.token_hex(4)}@{int(time.time())}"  # when: a pid taken again is not it
    mine = f"{OWNER}{socket.gethostname()} {os.getpid()} {token} "
    conn.execute("INSERT INTO rowcast_state VALUES (?, 1)", (mine + name(checkpoint),))
    return mine + name(checkpoint)


def release(conn: sqlite3.Connection, mine: str | None) -> None:
    """The reader recorded as `mine` stops (a failure leaves a record a later reader takes
    over: its pid is gone)."""
    if mine is not None:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("DELETE FROM rowcast_state WHERE key = ?", (mine,))

"""``rowcast_readers`` and pruning: which rows of ``rowcast_changes`` may go.

Private to `rowcast.sources.sqlite`. A checkpointed reader records its position
in ``rowcast_readers`` (`record`) before it reads and as it goes; `prune`
deletes the transactions every such reader has passed, found committed more
than `retain` seconds ago (see `rowcast.sources.sqlite.source`).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import TYPE_CHECKING

from . import triggers

if TYPE_CHECKING:
    from ...checkpoint import Checkpoint

__all__ = ["name", "prune", "record"]

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

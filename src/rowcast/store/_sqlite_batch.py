"""Appends to many streams in one SQLite transaction, for `SQLiteEventStore`.

Private. `append_all` writes every stream's events with one ``BEGIN
IMMEDIATE``, one version look-up per stream and one ``executemany``: what a
relay's store sink hands over per batch (a stream per row) commits once, not
once per stream. Anything but the plain case (an id stored before: a retry or
a conflict, or a stream given twice) rolls back and answers None, and the
store appends stream by stream, deciding each as `append` does.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from itertools import repeat

from ._core import EncodedBatch
from .types import AppendResult

__all__ = ["append_all"]


def append_all(
    conn: sqlite3.Connection,
    groups: Sequence[tuple[str, EncodedBatch]],
    version_sql: str,
    insert_sql: str,
    now: float,
) -> list[AppendResult] | None:
    """Each group's events appended after its stream's last, in one transaction; None
    (nothing appended) when the store must decide stream by stream."""
    conn.execute("BEGIN IMMEDIATE")
    rows: list[tuple[object, ...]] = []
    ends: list[tuple[int, int]] = []  # each stream's last version and its rows so far
    for stream, batch in groups:
        (current,) = conn.execute(version_sql, (stream,)).fetchone()
        count = len(batch.ids)
        rows.extend(
            zip(
                repeat(stream),
                range(current + 1, current + count + 1),
                batch.ids,
                batch.types,
                batch.data,
                batch.metadata,
                repeat(now),
                strict=False,
            )
        )
        ends.append((current + count, len(rows)))
    try:
        conn.executemany(insert_sql, rows)
    except sqlite3.IntegrityError:
        conn.execute("ROLLBACK")
        return None
    (last,) = conn.execute("SELECT last_insert_rowid()").fetchone()
    conn.execute("COMMIT")
    first = last - len(rows) + 1  # one executemany: consecutive positions
    return [AppendResult(version, first + upto - 1) for version, upto in ends]

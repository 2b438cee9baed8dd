"""Appends to many streams in one SQLite transaction, for `SQLiteEventStore`.

Private. `append_all` writes every stream's events with one ``BEGIN
IMMEDIATE``, one version look-up for all the streams (a ``json_each`` of their
names, each probing the ``UNIQUE (stream, version)`` index for its last
version) and one ``executemany``: what a relay's store sink hands over per batch
(a stream per row) commits once, not once per stream, with no statement per
stream. When the insert finds ids stored before (a relay delivering a batch
again after a restart), the batch's ids are looked up at once (`stored_ids`)
and each stream decided as `append` decides it (`refused_append`): a stream
whose events are all stored as that same append answers its first result, a
stream with none of them stored is appended, in the same transaction. Anything
else (some ids of a stream stored, an id given twice, a stream given twice) rolls
back and answers None, and the store appends stream by stream, deciding (and
raising) as `append` does.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from itertools import repeat
from typing import Final

from ..errors import StoreError
from ._core import EncodedBatch, refused_append
from .types import ANY, AppendResult

__all__ = ["INSERT", "append_all", "stored_ids"]

_VERSIONS: Final = (
    "SELECT s.value, (SELECT coalesce(max(e.version), 0) FROM rowcast_events e "
    "WHERE e.stream = s.value) FROM json_each(?) s"
)
INSERT: Final = (
    "INSERT INTO rowcast_events (stream, version, id, type, data, metadata, recorded_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_FIND_IDS: Final = "SELECT id, stream, version, position FROM rowcast_events WHERE id IN ({})"
_ID_CHUNK: Final = 500  # ids per "IN (...)" lookup (well under SQLite's variable limit)

Stored = dict[bytes, tuple[str, int, int]]


def append_all(
    conn: sqlite3.Connection,
    streams: Sequence[str],
    counts: Sequence[int],
    batch: EncodedBatch,
    now: float,
    where: str,
) -> list[AppendResult] | None:
    """Group k: ``counts[k]`` events of `batch` (in order) after ``streams[k]``'s last,
    every group in one transaction; None (nothing appended) when the store must decide
    stream by stream (module docstring). `where` names the store in errors."""
    conn.execute("BEGIN IMMEDIATE")
    versions = _versions(conn, streams)
    results: list[AppendResult] | None
    try:
        results = _insert(conn, streams, counts, batch, versions, now)
    except sqlite3.IntegrityError:
        conn.execute("ROLLBACK")
        conn.execute("BEGIN IMMEDIATE")
        results = _appended_before(conn, streams, counts, batch, now, where)
    if results is None:
        conn.execute("ROLLBACK")
        return None
    conn.execute("COMMIT")
    return results


def stored_ids(conn: sqlite3.Connection, ids: Sequence[bytes]) -> Stored:
    """Which of `ids` are stored: id -> (stream, version, position)."""
    stored: Stored = {}
    for start in range(0, len(ids), _ID_CHUNK):
        chunk = ids[start : start + _ID_CHUNK]
        marks = ", ".join("?" * len(chunk))
        rows = conn.execute(_FIND_IDS.format(marks), chunk)
        stored.update((bytes(i), (s, v, p)) for i, s, v, p in rows)
    return stored


def _versions(conn: sqlite3.Connection, streams: Sequence[str]) -> dict[str, int]:
    """Each stream's last version (0 for a new one), one statement for all of them."""
    names = json.dumps(list(dict.fromkeys(streams)), ensure_ascii=False)
    return dict(conn.execute(_VERSIONS, (names,)).fetchall())


def _insert(
    conn: sqlite3.Connection,
    streams: Sequence[str],
    counts: Sequence[int],
    batch: EncodedBatch,
    versions: dict[str, int],
    now: float,
) -> list[AppendResult]:
    """Insert each group after its stream's version in `versions` (which it advances);
    raises `sqlite3.IntegrityError` for an id stored before (or given twice)."""
    names: list[str] = []
    numbers: list[int] = []
    ends: list[tuple[int, int]] = []  # each group's last version and its rows so far
    for stream, count in zip(streams, counts, strict=True):
        current = versions[stream]
        versions[stream] = last = current + count
        if count == 1:
            names.append(stream)
            numbers.append(last)
        else:
            names.extend(repeat(stream, count))
            numbers.extend(range(current + 1, last + 1))
        ends.append((last, len(names)))
    rows = zip(names, numbers, batch.ids, batch.types, batch.data, batch.metadata, repeat(now))
    conn.executemany(INSERT, rows)
    (position,) = conn.execute("SELECT last_insert_rowid()").fetchone()
    first = position - len(names) + 1  # one executemany: consecutive positions
    return [AppendResult(version, first + upto - 1) for version, upto in ends]


def _appended_before(
    conn: sqlite3.Connection,
    streams: Sequence[str],
    counts: Sequence[int],
    batch: EncodedBatch,
    now: float,
    where: str,
) -> list[AppendResult] | None:
    """After an insert found stored ids: each group that is stored whole as that same
    append answered as `append` would, the groups none of whose ids are stored
    inserted; None when any group is anything else (module docstring)."""
    ids = batch.ids
    if len(set(ids)) < len(ids) or len(set(streams)) < len(streams):
        return None
    stored = stored_ids(conn, ids)
    results: list[AppendResult | None] = []
    new: list[int] = []  # the groups to insert
    start = 0
    for k, (stream, count) in enumerate(zip(streams, counts, strict=True)):
        group = ids[start : start + count]
        found = {i: stored[i] for i in group if i in stored}
        if not found:
            new.append(k)
            results.append(None)
        else:
            try:
                results.append(refused_append(where, stream, group, ANY, None, found))
            except StoreError:  # a conflict: raised by the stream-by-stream appends
                return None
        start += count
    if new:
        inserted = iter(_insert_groups(conn, streams, counts, batch, new, now))
        return [next(inserted) if r is None else r for r in results]
    return [r for r in results if r is not None]


def _insert_groups(
    conn: sqlite3.Connection,
    streams: Sequence[str],
    counts: Sequence[int],
    batch: EncodedBatch,
    groups: list[int],
    now: float,
) -> list[AppendResult]:
    """Insert the groups numbered `groups` (in order) of the batch."""
    starts = [0]
    for count in counts:
        starts.append(starts[-1] + count)
    picked = [i for k in groups for i in range(starts[k], starts[k + 1])]
    part = EncodedBatch(
        [batch.ids[i] for i in picked],
        [batch.types[i] for i in picked],
        [batch.data[i] for i in picked],
        [batch.metadata[i] for i in picked],
    )
    names = [streams[k] for k in groups]
    return _insert(conn, names, [counts[k] for k in groups], part, _versions(conn, names), now)

"""The latest revision of many rows at once, and whether a snapshot read repeats it.

Private to `rowcast.audit`. A backfill (or an initial snapshot) hands out rows
read again as ``Change(action=write, snapshot=True)``, mostly rows whose latest
revision already holds those values: `AuditSink` keeps such a read only when it
tells something new. `repeated` decides that for the snapshot rows of one
table in one transaction, with one query per `_KEYS` key values (a chunk of a
backfill: one query), never one per row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, func, select, tuple_

from ._tables import Audited

__all__ = ["latest", "repeated"]

_KEYS = 5000  # bound key values per query (PostgreSQL takes 65535, SQLite 32766)

Key = tuple[Any, ...]


def _key(audited: Audited, row: Mapping[str, Any]) -> Key:
    return tuple(row.get(name) for name in audited.pk)


def latest(conn: Connection, audited: Audited, keys: Iterable[Key]) -> dict[Key, Mapping[str, Any]]:
    """The latest stored revision (by ``rev_created``, then ``rev_id``) of each of `keys`
    that has one, as a row mapping (a delete's too: ``rev_isdelete`` true)."""
    rev = audited.rev_table
    columns = [rev.c[name] for name in audited.pk]
    wanted = list(dict.fromkeys(keys))
    step = max(1, _KEYS // len(columns))
    found: dict[Key, Mapping[str, Any]] = {}
    for start in range(0, len(wanted), step):
        part = wanted[start : start + step]
        where = (
            columns[0].in_([k[0] for k in part])
            if len(columns) == 1
            else tuple_(*columns).in_(part)
        )
        order = (rev.c.rev_created.desc(), rev.c.rev_id.desc())
        rank = func.row_number().over(partition_by=columns, order_by=order).label("rowcast_rank")
        ranked = select(rev, rank).where(where).subquery()
        query = select(*(ranked.c[c.name] for c in rev.columns)).where(ranked.c.rowcast_rank == 1)
        for mapping in conn.execute(query).mappings():
            row = dict(mapping)
            found[_key(audited, row)] = row
    return found


def repeated(
    conn: Connection, audited: Audited, rows: Sequence[dict[str, Any]], snapshots: set[str]
) -> set[str]:
    """The ``rev_id`` of each snapshot row of `rows` (the revision rows of one table in one
    transaction, in order; `snapshots`: the ids of those a snapshot read made) whose row's
    latest revision, stored or earlier in `rows`, is not a delete and holds the same values."""
    pending: dict[Key, Mapping[str, Any]] = {}  # the latest revision earlier in `rows`
    asked: list[tuple[Key, dict[str, Any]]] = []  # snapshot rows to compare with the store
    same: set[str] = set()
    for row in rows:
        key = _key(audited, row)
        if row["rev_id"] in snapshots:
            before = pending.get(key)
            if before is None:
                asked.append((key, row))
            elif _holds(audited, before, row):
                same.add(row["rev_id"])
        pending[key] = row
    if asked:
        stored = latest(conn, audited, (key for key, _ in asked))
        for key, row in asked:
            before = stored.get(key)
            if before is not None and _holds(audited, before, row):
                same.add(row["rev_id"])
    return same


def _holds(audited: Audited, revision: Mapping[str, Any], row: Mapping[str, Any]) -> bool:
    """Whether `revision` is the row `row` would record (not a delete, equal values)."""
    if revision["rev_isdelete"]:
        return False
    return all(_equal(revision[name], row.get(name)) for name in audited.columns)


def _equal(stored: Any, value: Any) -> bool:
    if stored == value:
        return True
    # a driver may give bytes back as a memoryview (1 and True are equal already). A
    # pair still unequal (a float column read back rounded) costs a revision, loses none
    if isinstance(stored, memoryview):
        stored = stored.tobytes()
    if isinstance(value, memoryview):
        value = value.tobytes()
    return bool(stored == value)

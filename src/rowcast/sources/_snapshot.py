"""What the initial snapshots of the log sources share: their positions, and the seam of a
snapshot cut short.

Private to `rowcast.sources` (`rowcast.sources.mysql.snapshot`,
`rowcast.sources.postgres.snapshot`, `rowcast.sources.sqlite.snapshot`).

A snapshot reads every row of the chosen tables at one *read point* of the
change log (a binlog ``file:offset``, an LSN, a ``rowcast_changes`` seq), table
by table in ``(schema, table)`` order and by key within a table, each chunk
handed out as one transaction of ``write`` changes with ``snapshot=True``; then
the log is read after that point. A change that ends at or before the point is in the rows
read; one that ends after it is read from the log: nothing missed, nothing
doubled.

Positions. While a snapshot is not done, a position is ``snapshot:<point>:<json>``
with ``{"at": [schema, table, key]}``: the consumer has every row up to that key
as of that point, and none after it but what the source handed out past its
checkpoint (rows of chunks it delivered, not yet checkpointed, before it was
killed). ``"at": null``: no row yet. A source started from such a position (a
relay's checkpoint) *resumes*: at a new read point it reads the rest (the rows
after that key, then the tables after it), after handing out what the log holds
between the two points as the `Seam` says: every change to the rows up to the
key; of those after it, every change of a row the log deletes (or moves to
another key) in between, since the consumer may hold it from a delivery past
the checkpoint (so an update or a delete of a row it never had can come); the
other rows' writes and updates are in the read. Each of those transactions has the position
``snapshot:<its end>:<the same key>``. When the snapshot is done, positions are
the log's own again. ``snapshot:`` alone asks for a new snapshot.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ..change import Action, Change
from ..codec import dumps, loads
from ..errors import ConfigError

__all__ = [
    "PREFIX",
    "Cursor",
    "Cut",
    "Seam",
    "SnapshotProgress",
    "check_options",
    "is_position",
    "parse",
    "position",
]

PREFIX = "snapshot:"
#: (schema, table, after): the rows of the table after key `after` (None: all of them)
Cursor = tuple[str, str, Any]
#: ``greater(schema, table, pk, after)``: whether key tuple `pk` comes after `after`
#: in the table's key order (the database's own: collations)
Greater = Callable[[str, str, tuple[Any, ...], tuple[Any, ...]], bool]


@dataclasses.dataclass
class SnapshotProgress:
    """How far a snapshot got; updated in place as it reads (for a progress line)."""

    tables: int = 0  #: tables to read in this run
    tables_done: int = 0
    table: str | None = None  #: ``"schema.table"`` being read
    rows: int = 0  #: rows read in this run
    estimate: int = 0  #: rows the database estimates the tables hold
    done: bool = False


def check_options(snapshot: str, chunk: int, start: str) -> None:
    """A `ConfigError` for a bad ``snapshot``, ``snapshot_chunk`` or ``start`` with them."""
    if snapshot not in ("initial", "never") or not isinstance(chunk, int) or chunk < 1:
        raise ConfigError(
            f"snapshot must be 'initial' or 'never' and snapshot_chunk positive, not "
            f"{snapshot!r} and {chunk!r}"
        )
    if snapshot == "initial" and start == "start":
        raise ConfigError(
            "snapshot='initial' streams from the snapshot's own position: leave start at "
            "'now' (or give a position to resume from)"
        )


def is_position(position: str | None) -> bool:
    """Whether `position` is a snapshot's (``"snapshot:"`` alone: a new one)."""
    return position is not None and position.startswith(PREFIX)


@dataclasses.dataclass(frozen=True)
class Cut:
    """Where a snapshot stands: the log's point the consumer is at, and the last row read."""

    point: str = ""  #: "": a new snapshot
    at: Cursor | None = None  #: the consumer has every row up to here (None: no row)


def position(point: str, at: Cursor | None) -> str:
    """The position of a snapshot that read up to `at` as of `point`."""
    return f"{PREFIX}{point}:{dumps({'at': list(at) if at is not None else None})}"


def parse(position: str, point: Callable[[str], Any]) -> Cut:
    """The `Cut` a snapshot position names; `point` checks its point (`ValueError`).

    A `ConfigError` when it is malformed.
    """
    body = position[len(PREFIX) :]
    if not body:
        return Cut()
    try:
        where, sep, tail = body.partition(":{")
        if not sep:
            raise ValueError("no point and progress")
        point(where)
        at = loads("{" + tail)["at"]
        return Cut(where, _cursor(at) if at is not None else None)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(
            f"bad snapshot position {position[:120]!r}: {e}; use the position of a change "
            "as rowcast wrote it, or 'now'"
        ) from e


def _cursor(value: Any) -> Cursor:
    schema, table, after = value
    if not (isinstance(schema, str) and isinstance(table, str)):
        raise ValueError("the cursor names no table")
    return (schema, table, tuple(after) if isinstance(after, list | tuple) else after)


class Seam:
    """What a consumer needs of the log between a snapshot cut short at `at` and the read of
    the rest (see the module docstring): the rows after `at` are read next.

    `greater` compares keys in the table's order; `old_key` gives an update's old key.
    """

    def __init__(
        self, at: Cursor | None, greater: Greater, old_key: Callable[[Change], Any]
    ) -> None:
        self.at, self._greater, self._old_key = at, greater, old_key
        self._deleted: set[tuple[str, str, Any]] = set()  # rows after `at` the log deletes

    def _next(self, schema: str, table: str, pk: Any) -> bool:
        """Whether the row keyed `pk` is read next (after `at`)."""
        if self.at is None:
            return True
        key, first = (schema, table), (self.at[0], self.at[1])
        if key != first:
            return key > first
        after = self.at[2]
        if after is None or pk is None:  # from the table's start; a table without a key
            return True  # is read again whole
        return self._greater(schema, table, pk if type(pk) is tuple else (pk,), after)

    def _wanted(self, schema: str, table: str, pk: Any) -> bool:
        """Whether the consumer needs the changes of the row keyed `pk`: it is not read
        next, or the log deletes it (the consumer may hold it from past the checkpoint)."""
        return (schema, table, pk) in self._deleted or not self._next(schema, table, pk)

    def learn(self, changes: list[Change]) -> None:
        """First pass over the transactions between the two points, before `keep`: which
        rows after `at` they delete (or move to another key). Every change of such a row
        is handed out, so that a consumer holding it from past the checkpoint follows it
        to the delete (its before image is then what the consumer holds)."""
        deleted = self._deleted
        for change in changes:
            schema = change.schema or ""
            if change.action == "delete":
                if change.pk is not None and self._next(schema, change.table, change.pk):
                    deleted.add((schema, change.table, change.pk))
            elif change.action == "update":
                old_pk = self._old_key(change)
                moved = old_pk is not None and old_pk != change.pk
                if moved and self._next(schema, change.table, old_pk):
                    deleted.add((schema, change.table, old_pk))

    def keep(self, changes: list[Change], position: str) -> list[Change]:
        """What the consumer needs of a transaction's `changes`, each with `position`."""
        kept: list[Change] = []
        for change in changes:
            schema = change.schema or ""
            new = self._wanted(schema, change.table, change.pk)
            old_pk = self._old_key(change) if change.action == "update" else None
            if old_pk is not None and old_pk != change.pk:  # the update moved the row's key
                if not self._next(schema, change.table, old_pk) and not self._next(
                    schema, change.table, change.pk
                ):
                    kept.append(dataclasses.replace(change, position=position))
                    continue
                gone = dataclasses.replace(
                    change, action=Action.DELETE, pk=old_pk, after=None, position=position
                )
                kept.append(gone)  # the consumer may hold the old key's row
                if new:
                    kept.append(
                        dataclasses.replace(
                            change, action=Action.WRITE, before=None, position=position
                        )
                    )
            elif new or change.action == "delete":
                kept.append(dataclasses.replace(change, position=position))
        return kept

"""What the initial snapshots of the PostgreSQL and SQLite sources share: their positions
and the seam after a snapshot cut short.

Private to `rowcast.sources` (the MySQL/MariaDB snapshot keeps its own
`rowcast.sources.mysql.snapshot`, which this follows: the same position format).

A snapshot reads every row of the chosen tables at one *read point* of the
change log (an LSN, a ``rowcast_changes`` seq), table by table in ``(schema,
table)`` order and by key within a table, each chunk handed out as one
transaction of ``write`` changes with ``snapshot=True``; then the log is read
from that point. A change that ends at or before a read point is in the rows
read there; one that ends after it is streamed: nothing missed, nothing doubled.

Positions. A chunk's position is ``snapshot:<origin>:<json>``: the read point of
the first snapshot, and in rowcast's JSON codec how far it got (``"at"``: the last
``[schema, table, key]`` read) and the read point of each resumption. A source
started from it (a relay's checkpoint after it was killed mid-snapshot)
*resumes*: it reads the rest (the rows after that key, then the tables after it)
at a new read point, then streams the log from the origin, handing out each
change only to the rows whose read it is not in (`Seam`). Until the log passes
the last read point a streamed transaction's position is a snapshot position too
(``"streamed"``: where the log resumes), so a restart there keeps that filter; after
it, positions are the log's own. ``snapshot:`` alone asks for a new snapshot.
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
    """Where a snapshot stands: its read points, how far it read, where the log resumes."""

    origin: str = ""  #: the first read point ("": a new snapshot)
    resumed: tuple[tuple[Cursor, str], ...] = ()  #: the rows from cursor on were read at point
    at: Cursor | None = None  #: read up to here
    streamed: str | None = None  #: the snapshot is done; the log resumes after this point

    def position(self, at: Cursor) -> str:
        """The position of a chunk that read up to `at`."""
        return self._format({"at": list(at)})

    def streaming(self, point: str) -> str:
        """The position of a transaction streamed before the last read point, ending at `point`."""
        return self._format({"at": list(self.at) if self.at else None, "streamed": point})

    def _format(self, fields: dict[str, Any]) -> str:
        fields["resumed"] = [[list(c), p] for c, p in self.resumed]
        return f"{PREFIX}{self.origin}:{dumps(fields)}"

    def points(self) -> list[str]:
        """Every read point, the origin first."""
        return [self.origin, *(point for _, point in self.resumed)]


def parse(position: str, point: Callable[[str], Any]) -> Cut:
    """The `Cut` a snapshot position names; `point` checks a read point (ValueError).

    A `ConfigError` when it is malformed.
    """
    body = position[len(PREFIX) :]
    if not body:
        return Cut()
    try:
        origin, sep, tail = body.partition(":{")
        if not sep:
            raise ValueError("no read point and progress")
        point(origin)
        data = loads("{" + tail)
        at = _cursor(data["at"]) if data.get("at") is not None else None
        resumed = tuple((_cursor(c), _point(point, p)) for c, p in data["resumed"])
        streamed = data.get("streamed")
        if streamed is not None:
            _point(point, streamed)
        elif at is None:
            raise ValueError("neither read up to a row nor streamed")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(
            f"bad snapshot position {position[:120]!r}: {e}; use the position of a change "
            "as rowcast wrote it, or 'now'"
        ) from e
    return Cut(origin, resumed, at, streamed)


def _cursor(value: Any) -> Cursor:
    schema, table, after = value
    if not (isinstance(schema, str) and isinstance(table, str)):
        raise ValueError("the cursor names no table")
    return (schema, table, tuple(after) if isinstance(after, list | tuple) else after)


def _point(check: Callable[[str], Any], value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a read point")
    check(value)
    return value


def _covers(start: Cursor, schema: str, table: str, pk: Any, greater: Greater) -> bool:
    """Whether the row of `table` keyed `pk` is among those read from `start` on."""
    key, first = (schema, table), (start[0], start[1])
    if key != first:
        return key > first
    after = start[2]
    if after is None:
        return True
    if pk is None:  # a table without a key is read whole
        return False
    return greater(schema, table, pk if type(pk) is tuple else (pk,), after)


class Seam:
    """Which changes streamed after a snapshot a consumer still needs.

    The log is streamed from the origin; a change that ends at `point` is in the
    read of its row when ``point <= read point`` of that row (`order` makes points
    comparable). A change to a row read later than it ended is dropped. An update
    that moved a row's key across a cut becomes, for the consumer, the delete of the
    old key (when only that row was read before it) or the write of the new one
    (when only that one was). `old_key` gives an update's old key when it changed.
    """

    def __init__(
        self,
        cut: Cut,
        order: Callable[[str], Any],
        greater: Greater,
        old_key: Callable[[Change], Any],
    ) -> None:
        self.cut = cut
        self._order, self._greater, self._old_key = order, greater, old_key
        self._reads = [(start, order(point)) for start, point in cut.resumed]
        self._origin = order(cut.origin)
        self.last = max([self._origin, *(at for _, at in self._reads)])

    def done(self, point: str) -> bool:
        """Whether a transaction ending at `point` (and every later one) is past every read."""
        return not self._reads or self._order(point) > self.last

    def position(self, point: str) -> str | None:
        """The position for the end of a streamed transaction at `point` (None: the log's)."""
        return None if self.done(point) else self.cut.streaming(point)

    def keep(self, changes: list[Change], point: str) -> list[Change]:
        """`changes` (a transaction that ends at `point`), as the consumer needs them."""
        if self.done(point):
            return changes
        at = self._order(point)
        position = self.cut.streaming(point)
        kept = []
        for change in changes:
            schema = change.schema or ""
            new = at > self._read_at(schema, change.table, change.pk)
            old_pk = self._old_key(change) if change.action == "update" else None
            if old_pk is None or old_pk == change.pk:
                if new:
                    kept.append(dataclasses.replace(change, position=position))
                continue
            old = at > self._read_at(schema, change.table, old_pk)
            if new and old:
                kept.append(dataclasses.replace(change, position=position))
            elif old:  # the new key's row was read with this change in it
                kept.append(
                    dataclasses.replace(
                        change, action=Action.DELETE, pk=old_pk, after=None, position=position
                    )
                )
            elif new:  # the old key's row was read after it had moved away
                kept.append(
                    dataclasses.replace(change, action=Action.WRITE, before=None, position=position)
                )
        return kept

    def _read_at(self, schema: str, table: str, pk: Any) -> Any:
        """The read point of the row keyed `pk` (as `order` gives it)."""
        read_at = self._origin
        for start, at in self._reads:
            if _covers(start, schema, table, pk, self._greater):
                read_at = at
        return read_at

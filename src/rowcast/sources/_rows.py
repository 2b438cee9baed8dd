"""A chunk's rows as the driver gave them: value tuples, made into Changes only when
they are handed out (`Rows`).

Private to `rowcast.sources`: SQLite's chunks (`rowcast.sources.sqlite.keys`), which its
initial snapshot and its backfills hand out, and PostgreSQL's backfills' (psycopg's
loaders give the values). A backfill drops the rows the log changed
meanwhile before any of them is made into a dict (`changes`' `skip`); the rest are made
in one step, in C where it was built (`rowcast._speedups.snapshot_rows`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, overload

from .. import _speedups
from ..change import Action, Change

__all__ = ["Chunk", "Rows"]


class Rows:
    """`values` (tuples: the first ``len(names)`` are the columns `names`, more may
    follow) with the key at `key` (an int: one column; a tuple of ints: several).

    A sequence of ``(pk, image)`` pairs, as the other sources' chunks are, for what
    reads them one by one; `changes` makes them into Changes without the pairs."""

    __slots__ = ("key", "names", "values")

    def __init__(
        self, values: list[tuple[Any, ...]], names: tuple[str, ...], key: int | tuple[int, ...]
    ) -> None:
        self.values, self.names, self.key = values, names, key

    def __len__(self) -> int:
        return len(self.values)

    def __iter__(self) -> Iterator[tuple[Any, dict[str, Any]]]:
        return map(self._pair, self.values)

    @overload
    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]]: ...
    @overload
    def __getitem__(self, index: slice) -> list[tuple[Any, dict[str, Any]]]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return list(map(self._pair, self.values[index]))
        return self._pair(self.values[index])

    def _pair(self, row: tuple[Any, ...]) -> tuple[Any, dict[str, Any]]:
        key = self.key
        pk = row[key] if isinstance(key, int) else tuple(row[i] for i in key)
        return pk, dict(zip(self.names, row[: len(self.names)], strict=True))

    def __repr__(self) -> str:
        return f"<Rows of {', '.join(self.names)}: {len(self.values)}>"

    def extend(self, other: Rows) -> None:
        """`other`'s rows after these (the same columns and key)."""
        self.values.extend(other.values)

    def changes(
        self,
        schema: str | None,
        table: str,
        ts: float,
        txid: str | None,
        position: str | None,
        source: str | None,
        skip: set[Any] | None = None,
    ) -> list[Change]:
        """The ``snapshot=True`` writes of the rows whose key is not in `skip`."""
        return _speedups.snapshot_rows(
            Change, Action.WRITE, self.values, self.names, self.key, skip,
            schema, table, ts, txid, position, source,
        )  # fmt: skip


#: what a source's chunk holds: ``(pk, image)`` pairs, or `Rows` that make them
Chunk = list[tuple[Any, dict[str, Any]]] | Rows

"""A backfill request as one reader runs it (`Job`), and one chunk between its
watermarks (`Window`): the state of `rowcast.sources._backfill.Backfill`."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..codec import dumps, loads
from ._rows import Chunk

__all__ = ["Job", "Window"]


@dataclasses.dataclass
class Job:
    """A request as one reader runs it."""

    request: int
    tables: list[tuple[str, str]]
    where: str | None
    size: int  #: rows asked per chunk
    index: int = 0  #: of the table being read
    after: Any = None  #: the last key of it read
    rows: int = 0  #: handed out so far
    step: int = 0  #: rows the next chunk selects (adapts, never above `size`)
    failures: int = 0  #: chunks in a row that could not be read
    reading: tuple[int, Any] = (0, None)  #: the table and key the next chunk reads after

    def __post_init__(self) -> None:
        self.step = self.step or self.size
        self.reading = (self.index, self.after)

    def progress(self, done: bool = False, cancelled: bool = False) -> dict[str, Any]:
        return {
            "tables": [list(t) for t in self.tables],
            "index": len(self.tables) if done else self.index,
            "after": dumps(self.after),
            "rows": self.rows,
            "where": self.where,
            "chunk": self.size,
            "done": done,
            "cancelled": cancelled,
        }

    @classmethod
    def resumed(cls, request: int, data: dict[str, Any]) -> Job:
        tables = [(str(s), str(t)) for s, t in data["tables"]]
        after = loads(data["after"]) if data.get("after") is not None else None
        where, rows = data.get("where"), int(data.get("rows", 0))
        return cls(request, tables, where, int(data["chunk"]), int(data["index"]), after, rows)


@dataclasses.dataclass
class Window:
    """One chunk between its watermarks."""

    job: Job
    index: int  #: of the table read
    low: int
    high: int
    rows: Chunk  #: ``(pk, image)`` in key order
    last: Any
    full: bool  #: as many rows as selected: the table may hold more
    opened: bool = False  #: the low watermark came back
    closing: bool = False  #: the high one did: handed out at the end of its transaction
    touched: set[Any] = dataclasses.field(default_factory=set)
    #: images (encoded: a JSON value hashes) the log had of rows with a NULL in the key
    images: set[Any] = dataclasses.field(default_factory=set)

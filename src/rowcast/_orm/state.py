"""What a capture holds in each session, and how it warns.

State lives in ``session.info`` under the keys below, never in module globals,
so sessions and threads never mix.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any, Protocol

from sqlalchemy import Connection, Table
from sqlalchemy.orm import Session, SessionTransaction

from .._speedups import warn_outside
from ..errors import RowcastWarning
from .rows import Plan, Record

CAPTURES = "rowcast.captures"  # {capture: Pending}
BEFORE = "rowcast.before"  # {InstanceState: [before images]}, during one flush
ROUTES = "rowcast.routes"  # {(Mapper, Connection): [Route]}, for one flush


class Capture(Protocol):
    """What the flush and bulk hooks need of a capture (a `SessionCapture`, the audit's)."""

    closed: bool

    def wants(self, table: Table, schema: str | None) -> bool: ...


class Pending:
    """What one capture recorded in one session's open transaction, by savepoint."""

    __slots__ = ("frames", "gaps", "mark", "tx", "txid", "written")

    def __init__(self) -> None:
        self.frames: list[tuple[SessionTransaction, list[Record]]] = []
        # after images with values only the database knows, filled after the flush
        self.gaps: list[tuple[Connection, Plan, dict[str, Any]]] = []
        self.tx: SessionTransaction | None = None  # innermost transaction of this flush
        # the outbox: the transaction's id, rows written so far, where this flush began
        self.txid: str | None = None
        self.written = 0
        self.mark = (0, 0)

    def at(self, session: Session) -> None:
        """Record into the innermost open transaction (root or SAVEPOINT) from now on."""
        self.tx = session.get_nested_transaction() or session.get_transaction()

    def add(self, record: Record) -> None:
        tx = self.tx
        assert tx is not None
        if not self.frames or self.frames[-1][0] is not tx:
            self.frames.append((tx, []))
        self.frames[-1][1].append(record)

    def discard(self, boundary: SessionTransaction) -> None:
        """Forget what was recorded in `boundary` and the savepoints inside it."""

        def inside(tx: SessionTransaction | None) -> bool:
            while tx is not None:
                if tx is boundary:
                    return True
                tx = tx.parent
            return False

        self.frames = [frame for frame in self.frames if not inside(frame[0])]

    def records(self) -> Iterable[Record]:
        return itertools.chain.from_iterable(records for _, records in self.frames)

    def end(self) -> tuple[int, int]:
        """Where the next record will go: (frames, records in the last frame)."""
        frames = self.frames
        return (len(frames), len(frames[-1][1]) if frames else 0)

    def since(self, mark: tuple[int, int]) -> list[Record]:
        """The records added after `end()` returned `mark` (no frame was discarded since)."""
        count, length = mark
        frames = self.frames
        added = list(frames[count - 1][1][length:]) if count else []
        for _, records in frames[count:]:
            added.extend(records)
        return added


def warn(message: str) -> None:
    """Warn, pointing at the caller's line rather than inside SQLAlchemy or rowcast."""
    warn_outside(message, RowcastWarning, ("sqlalchemy.", "rowcast."))

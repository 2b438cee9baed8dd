"""Backfill requests: asking for one, cancelling it, following it (``rowcast backfill``).

A request is a ``backfill`` row of ``rowcast_signal`` (`rowcast.sources.signal`);
every reader of the database that sees it in its log runs it and records its
progress there (`rowcast.sources._backfill`). ``source.backfill(...)``,
``source.cancel_backfill(id)`` and ``source.backfills()`` call these.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .signal import SignalRow

if TYPE_CHECKING:
    from ._backfill import Reads

__all__ = ["ReaderProgress", "Status", "ask", "cancel", "status"]


@dataclasses.dataclass(frozen=True)
class ReaderProgress:
    """How far one reader got with a request (its latest ``progress`` row)."""

    reader: str
    table: str | None  #: ``schema.table`` being read (None: none left)
    tables_done: int
    tables: int
    rows: int
    done: bool
    cancelled: bool
    error: str | None
    updated: float | None  #: when it last recorded progress (epoch seconds)


@dataclasses.dataclass(frozen=True)
class Status:
    """A request and each reader's progress on it."""

    id: int
    tables: list[str]  #: the patterns asked for
    where: str | None
    chunk: int
    created: float | None
    cancelled: bool
    readers: list[ReaderProgress]

    @property
    def done(self) -> bool:
        """Whether a reader took it and every reader that took it finished."""
        return bool(self.readers) and all(r.done for r in self.readers)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"done": self.done}


def ask(reads: Reads, target: str, tables: Sequence[str], where: str | None, chunk: int) -> int:
    """Record a request for `tables`; its id. The tables and `where` are checked first."""
    if isinstance(tables, str):
        raise ConfigError(f"tables takes a list of patterns, not the string {tables!r}")
    if not tables:
        raise ConfigError("name the tables to backfill (patterns, e.g. 'orders' or 'shop.*')")
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
        raise ConfigError(f"chunk is a number of rows, at least 1, not {chunk!r}")
    try:
        found = reads.tables(list(tables))
        if where:
            for schema, table in found:
                try:
                    reads.chunk(schema, table, None, where, 1)
                except Exception as e:  # the database's own message says what is wrong
                    raise ConfigError(
                        f"{target}: --where {where!r} fails on {schema}.{table}: {str(e).strip()}"
                    ) from e
        signals = reads.signals()
        try:
            reads.prepare(signals)
            return signals.write(
                "backfill", {"tables": list(tables), "where": where or None, "chunk": chunk}
            )
        finally:
            signals.close()
    finally:
        reads.close()


def cancel(reads: Reads, target: str, request: int) -> None:
    """Record that `request` is cancelled (a `ConfigError` when there is no such request)."""
    signals = reads.signals()
    try:
        known = signals.exists() and [r for r in signals.rows("backfill") if r.id == request]
        if not known:
            raise ConfigError(
                f"{target}: there is no backfill {request} (rowcast backfill --status lists them)"
            )
        progress = signals.rows("cancel", "progress", request=request)
        if any(r.kind == "cancel" for r in progress):
            raise ConfigError(f"{target}: backfill {request} is cancelled already")
        took = {r.reader: r for r in progress if r.kind == "progress" and r.reader}
        if took and all(r.data.get("done") for r in took.values()):
            raise ConfigError(
                f"{target}: backfill {request} is done (every reader that took it finished): "
                "there is nothing to cancel"
            )
        signals.write("cancel", request=request)
    finally:
        signals.close()
        reads.close()


def status(reads: Reads) -> list[Status]:
    """Every request recorded, oldest first, with each reader's latest progress."""
    signals = reads.signals()
    try:
        if not signals.exists():
            return []
        rows = signals.rows("backfill", "cancel", "progress")
    finally:
        signals.close()
        reads.close()
    cancelled = {r.request for r in rows if r.kind == "cancel"}
    latest: dict[int, dict[str, SignalRow]] = {}
    for row in rows:
        if row.kind == "progress" and row.request is not None and row.reader:
            latest.setdefault(row.request, {})[row.reader] = row
    return [
        Status(
            row.id,
            [str(t) for t in row.data.get("tables") or []],
            row.data.get("where"),
            int(row.data.get("chunk") or 1000),
            row.created,
            row.id in cancelled,
            [_progress(p) for p in latest.get(row.id, {}).values()],
        )
        for row in rows
        if row.kind == "backfill"
    ]


def _progress(row: SignalRow) -> ReaderProgress:
    data = row.data
    tables = data.get("tables") or []
    index = int(data.get("index", 0))
    return ReaderProgress(
        str(row.reader),
        ".".join(tables[index]) if index < len(tables) and not data.get("done") else None,
        min(index, len(tables)),
        len(tables),
        int(data.get("rows", 0)),
        bool(data.get("done")),
        bool(data.get("cancelled")),
        data.get("error"),
        row.created,
    )

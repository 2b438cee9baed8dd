"""What a backfill request in ``rowcast_signal`` asks: its tables, condition and chunk.

A request is written by `rowcast.sources.backfills.ask` (``rowcast backfill``), or by
hand: its ``data`` may then hold anything JSON holds. `asked` reads it for a reader,
refusing a value of the wrong type with what it should be (so a reader gives the
request up at once, never retrying an error that cannot pass); `shown` reads it for
``--status``, which shows any request as it is.
"""

from __future__ import annotations

from typing import Any

from . import _where

__all__ = ["DEFAULT_CHUNK", "MAX_CHUNK", "asked", "shown"]

DEFAULT_CHUNK = 1000
MAX_CHUNK = 2**31 - 1  #: what every database's LIMIT takes


def asked(data: dict[str, Any]) -> tuple[list[str], str | None, int]:
    """(table patterns, where, rows per chunk) of a request; `ValueError` or `ConfigError`
    (a `where` that is not one condition) saying what is wrong."""
    patterns = _patterns(data.get("tables"))
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise ValueError(f"tables is a list of table names or patterns, not {patterns!r}")
    if not patterns:
        raise ValueError("tables names no table: give a list of table names or patterns")
    where = data.get("where")
    if where is not None and not isinstance(where, str):
        raise ValueError(f"where is an SQL condition in a string, not {where!r}")
    if where is not None and not where.strip():
        where = None
    if where is not None:
        _where.check(where)  # never an endless read
    return patterns, where, _chunk(data.get("chunk"))


def shown(data: dict[str, Any]) -> tuple[list[str], str | None, int]:
    """`asked`'s three, for display: whatever a request holds (0: a chunk that is no
    number of rows)."""
    tables, where = _patterns(data.get("tables")), data.get("where")
    try:
        chunk = _chunk(data.get("chunk"))
    except ValueError:
        chunk = 0
    return (
        [str(t) for t in tables] if isinstance(tables, list) else [str(tables)],
        where if where is None or isinstance(where, str) else repr(where),
        chunk,
    )


def _patterns(tables: Any) -> Any:
    """A string names its tables as ``--tables`` does (``a,b``); anything else as it is."""
    if tables is None:
        return []
    if isinstance(tables, str):
        return [p.strip() for p in tables.split(",") if p.strip()]
    return tables


def _chunk(chunk: Any) -> int:
    if chunk is None:
        return DEFAULT_CHUNK
    number = isinstance(chunk, int | float | str) and not isinstance(chunk, bool)
    try:
        size = int(chunk) if number else None
        if isinstance(chunk, float) and chunk != size:
            size = None  # 2.5 rows, infinity, not a number
    except (ValueError, OverflowError):
        size = None
    if size is None:
        raise ValueError(f"chunk is a number of rows, not {chunk!r}")
    if not 1 <= size <= MAX_CHUNK:
        raise ValueError(f"chunk is a number of rows from 1 to {MAX_CHUNK:,}, not {chunk!r}")
    return size

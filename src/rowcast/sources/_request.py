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

__all__ = ["asked", "shown"]

DEFAULT_CHUNK = 1000


def asked(data: dict[str, Any]) -> tuple[list[str], str | None, int]:
    """(table patterns, where, rows per chunk) of a request; `ValueError` or `ConfigError`
    (a `where` that is not one condition) saying what is wrong."""
    patterns, where = data.get("tables") or [], data.get("where") or None
    if isinstance(patterns, str):  # as --tables takes them
        patterns = [p.strip() for p in patterns.split(",") if p.strip()]
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise ValueError(f"tables is a list of table names or patterns, not {patterns!r}")
    if where is not None:
        if not isinstance(where, str):
            raise ValueError(f"where is an SQL condition in a string, not {where!r}")
        _where.check(where)  # never an endless read
    chunk = data.get("chunk") or DEFAULT_CHUNK
    try:
        size = int(chunk)
    except (TypeError, ValueError):
        raise ValueError(f"chunk is a number of rows, not {chunk!r}") from None
    if size < 1:
        raise ValueError("chunk must be at least 1")
    return patterns, where, size


def shown(data: dict[str, Any]) -> tuple[list[str], str | None, int]:
    """`asked`'s three, for display: whatever a request holds (0: a chunk that is no
    number)."""
    tables, where = data.get("tables") or [], data.get("where")
    try:
        chunk = int(data.get("chunk") or DEFAULT_CHUNK)
    except (TypeError, ValueError):
        chunk = 0
    return (
        [str(t) for t in tables] if isinstance(tables, list) else [str(tables)],
        where if where is None or isinstance(where, str) else repr(where),
        chunk,
    )

"""Listing a SQLite store's streams a page at a time (`EventStore.list_streams`).

The events table has no table of streams beside it, but its ``UNIQUE (stream,
version)`` index holds every name in order: a recursive query hops from one name
to the next (``stream > previous ORDER BY stream LIMIT 1``, one probe of the index
per stream, however many events each has) and stops after a page. A prefix is the
index range ``[prefix, prefix_end(prefix))``: SQLite compares text as UTF-8 bytes,
which is code point order.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from ._core import prefix_end
from .types import StreamInfo

__all__ = ["list_streams"]

_LIST: Final = """
WITH RECURSIVE names(stream) AS (
    SELECT (SELECT f.stream FROM rowcast_events f WHERE f.stream >= :low AND f.stream <> :after
            {first} ORDER BY f.stream LIMIT 1)
    UNION ALL
    SELECT (SELECT e.stream FROM rowcast_events e WHERE e.stream > n.stream {next}
            ORDER BY e.stream LIMIT 1)
    FROM names n WHERE n.stream IS NOT NULL
    LIMIT :limit
)
SELECT n.stream, e.version, e.position, e.recorded_at
FROM names n JOIN rowcast_events e ON e.stream = n.stream
    AND e.version = (SELECT max(version) FROM rowcast_events m WHERE m.stream = n.stream)
WHERE substr(n.stream, 1, length(:prefix)) = :prefix
ORDER BY n.stream
"""
_BOUNDED: Final = _LIST.format(first="AND f.stream < :upper", next="AND e.stream < :upper")
_UNBOUNDED: Final = _LIST.format(first="", next="")


def list_streams(
    conn: sqlite3.Connection, prefix: str, after: str | None, limit: int
) -> list[StreamInfo]:
    """Up to `limit` streams starting with `prefix`, after the name `after`, in name order."""
    upper = prefix_end(prefix)
    # one lower bound, the higher: given two, SQLite may take the lower one for the index
    low = after if after is not None and after > prefix else prefix
    params = {"low": low, "after": after or "", "prefix": prefix, "upper": upper, "limit": limit}
    rows = conn.execute(_UNBOUNDED if upper is None else _BOUNDED, params).fetchall()
    return [StreamInfo(name, int(v), int(p), float(at)) for name, v, p, at in rows]

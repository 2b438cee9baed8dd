"""psycopg adapters of the PostgreSQL event store, and rows made into `RecordedEvent`.

Imported only once psycopg is known to be installed (see
`rowcast.store.postgres.imports`). Reads run on binary cursors whose loaders,
set on the store's own connections only (never on psycopg's global adapters),
are psycopg's C ones: a ``uuid`` arrives as its 16 bytes and a ``json`` value
as its text, so fetching a page runs no Python per value. `to_events` then
makes a page's events in one loop, where the cost is per event: the page's
JSON parsed as one array by one scanner call (with the codec's restoring hook
only when the text holds a tag, ``"$``, which plain event data never does), and
the events and their UUIDs made by `rowcast._speedups.recorded_events` (drafts
whose class is then switched: half the cost of their constructors, and the
very same objects).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.types.string import ByteaBinaryLoader, TextBinaryLoader

from .. import _speedups
from ..codec import object_hook
from .types import RecordedEvent

__all__ = ["ADAPTERS", "PIPELINE", "to_events"]

#: whether the libpq in use has pipeline mode (14+), with which reads fetch ahead
PIPELINE: bool = psycopg.Pipeline.is_supported()

ADAPTERS = psycopg.adapt.AdaptersMap(psycopg.adapters)
ADAPTERS.register_loader("uuid", ByteaBinaryLoader)
ADAPTERS.register_loader("json", TextBinaryLoader)

# the store wrote the JSON itself: the scanners skip loads()'s checks
_tagged = _speedups.json_scanner(object_hook)
_plain = _speedups.json_scanner(None)


def to_events(rows: Sequence[Sequence[Any]], stream: str | None) -> list[RecordedEvent]:
    """Events from rows of (stream, version, position, id, type, data, metadata, at).

    With `stream` given, the rows have no stream column: (version, position, ...).
    A page's data and metadata are parsed as one JSON array (one call of the
    scanner, not two a row; it also skips the whitespace SQL may have written
    around a value).
    """
    at = 4 if stream is not None else 5
    text = "[" + ",".join([f"{row[at]},{row[at + 1] or 'null'}" for row in rows]) + "]"
    values: list[Any] = (_tagged if '"$' in text else _plain)(text, 0)[0]
    return _speedups.recorded_events(RecordedEvent, rows, stream, values)

"""psycopg adapters of the PostgreSQL event store, and rows made into `RecordedEvent`.

Imported only once psycopg is known to be installed (see
`rowcast.store.postgres.imports`). Reads run on binary cursors whose loaders,
set on the store's own connections only (never on psycopg's global adapters),
are psycopg's C ones: a ``uuid`` arrives as its 16 bytes and a ``json`` value
as its text, so fetching a page runs no Python per value. `to_events` then
makes the events in one loop: the UUIDs by `rowcast.store.base.uuid_from_bytes`
(``UUID(bytes=...)`` checks its argument, and costs), and the JSON parsed by
the C scanner, with the codec's restoring hook only for text that holds a
tag (``"$``), which plain event data never does.
"""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg.types.string import ByteaBinaryLoader, TextBinaryLoader

from ..change import _hook as _restore
from .base import RecordedEvent, uuid_from_bytes

__all__ = ["ADAPTERS", "to_events"]

ADAPTERS = psycopg.adapt.AdaptersMap(psycopg.adapters)
ADAPTERS.register_loader("uuid", ByteaBinaryLoader)
ADAPTERS.register_loader("json", TextBinaryLoader)

# the store wrote the JSON itself: the scanners skip loads()'s checks and wrapper
_Scanner = Callable[[str, int], tuple[Any, int]]
_tagged: _Scanner = json.scanner.make_scanner(json.JSONDecoder(object_hook=_restore))  # type: ignore[arg-type]
_plain: _Scanner = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


def to_events(rows: Sequence[Sequence[Any]], stream: str | None) -> list[RecordedEvent]:
    """Events from rows of (stream, version, position, id, type, data, metadata, at).

    With `stream` given, the rows have no stream column: (version, position, ...).
    """
    make, uuid_ = RecordedEvent, uuid_from_bytes
    events: list[RecordedEvent] = []
    append = events.append
    for row in rows:
        if stream is None:
            name, version, position, raw, type_, data, meta, at = row
        else:
            version, position, raw, type_, data, meta, at = row
            name = stream
        append(
            make(
                name,
                version,
                position,
                uuid_(raw),
                type_,
                (_tagged if '"$' in data else _plain)(data, 0)[0],
                None if meta is None else (_tagged if '"$' in meta else _plain)(meta, 0)[0],
                at,
            )
        )
    return events

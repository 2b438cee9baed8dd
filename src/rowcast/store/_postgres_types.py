"""psycopg adapters of the PostgreSQL event store, and rows made into `RecordedEvent`.

Imported only once psycopg is known to be installed (see
`rowcast.store.postgres.imports`). Reads run on binary cursors whose loaders,
set on the store's own connections only (never on psycopg's global adapters),
are psycopg's C ones: a ``uuid`` arrives as its 16 bytes and a ``json`` value
as its text, so fetching a page runs no Python per value. `to_events` then
makes a page's events in one loop, where the cost is per event: the page's
JSON parsed as one array by the C scanner (with the codec's restoring hook only
when the text holds a tag, ``"$``, which plain event data never does), and each
UUID and event made as a draft whose class is then switched (`UUIDDraft`,
`rowcast.store._core.RecordedEventDraft`): half the cost of their constructors,
and the very same objects.
"""

from __future__ import annotations

import json
import json.scanner
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg.types.string import ByteaBinaryLoader, TextBinaryLoader

from ..codec import object_hook
from ._core import RecordedEventDraft
from ._ids import UUIDDraft
from .types import RecordedEvent

__all__ = ["ADAPTERS", "PIPELINE", "to_events"]

#: whether the libpq in use has pipeline mode (14+), with which reads fetch ahead
PIPELINE: bool = psycopg.Pipeline.is_supported()

ADAPTERS = psycopg.adapt.AdaptersMap(psycopg.adapters)
ADAPTERS.register_loader("uuid", ByteaBinaryLoader)
ADAPTERS.register_loader("json", TextBinaryLoader)

# the store wrote the JSON itself: the scanners skip loads()'s checks and wrapper
_Scanner = Callable[[str, int], tuple[Any, int]]
_tagged: _Scanner = json.scanner.make_scanner(json.JSONDecoder(object_hook=object_hook))  # type: ignore[arg-type]
_plain: _Scanner = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


def to_events(rows: Sequence[Sequence[Any]], stream: str | None) -> list[RecordedEvent]:
    """Events from rows of (stream, version, position, id, type, data, metadata, at).

    With `stream` given, the rows have no stream column: (version, position, ...).
    A page's data and metadata are parsed as one JSON array (one call of the
    scanner, not two a row; it also skips the whitespace SQL may have written
    around a value); events and UUIDs are made as drafts (`RecordedEventDraft`).
    """
    at = 4 if stream is not None else 5
    text = "[" + ",".join([f"{row[at]},{row[at + 1] or 'null'}" for row in rows]) + "]"
    values: list[Any] = (_tagged if '"$' in text else _plain)(text, 0)[0]
    draft, event_class, uuid_draft, uuid_class = (
        RecordedEventDraft,
        RecordedEvent,
        UUIDDraft,
        uuid.UUID,
    )
    from_bytes, unknown = int.from_bytes, uuid.SafeUUID.unknown
    events: list[Any] = []
    append = events.append
    for row, data, meta in zip(rows, values[::2], values[1::2], strict=True):
        if stream is None:
            name, version, position, raw, type_, _, _, recorded = row
        else:
            version, position, raw, type_, _, _, recorded = row
            name = stream
        id_ = uuid_draft()
        id_.int = from_bytes(raw, "big")
        id_.is_safe = unknown
        id_.__class__ = uuid_class
        event = draft()
        event.stream = name
        event.version = version
        event.position = position
        event.id = id_
        event.type = type_
        event.data = data
        event.metadata = meta
        event.recorded_at = recorded
        event.__class__ = event_class  # type: ignore[assignment]
        append(event)
    return events

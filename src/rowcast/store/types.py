"""The event store's values: what an append takes and returns, what a read yields.

Shared by every backend, sync or async; see `rowcast.store.base` for what a
store promises about them.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .. import _speedups
from ..errors import ConfigError
from ._ids import new_event_id

__all__ = [
    "ALL",
    "ANY",
    "DEFAULT_URL",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendResult",
    "ExpectedVersion",
    "NewEvent",
    "RecordedEvent",
    "Snapshot",
    "StreamInfo",
    "StreamState",
]

DEFAULT_URL: Final = "sqlite:///rowcast-events.db"
ALL: Final = "@all"  #: the stream name of the global order


class StreamState(enum.Enum):
    """What an append expects of a stream when it does not name a version."""

    ANY = "any"  #: no check
    NO_STREAM = "no_stream"  #: the stream has no event (version 0)
    STREAM_EXISTS = "stream_exists"  #: the stream has at least one event

    def __repr__(self) -> str:
        return self.name

    __str__ = __repr__


ANY: Final = StreamState.ANY
NO_STREAM: Final = StreamState.NO_STREAM
STREAM_EXISTS: Final = StreamState.STREAM_EXISTS

ExpectedVersion = int | StreamState


@dataclass(frozen=True, slots=True, init=False)
class NewEvent:
    """An event to append: its ``type``, ``data`` and optional ``metadata``.

    ``data`` is any value the `rowcast.codec` JSON codec writes (dicts, lists,
    Decimal, datetime, bytes, UUID...); ``metadata`` a mapping of such values or
    None. ``id`` is made here when not given (a time-ordered random UUID, version
    7), so appending the same NewEvent objects twice is idempotent.
    """

    type: str
    data: Any
    metadata: Mapping[str, Any] | None
    id: uuid.UUID

    def __init__(
        self,
        type: str,
        data: Any = None,
        metadata: Mapping[str, Any] | None = None,
        id: uuid.UUID | str | None = None,
    ) -> None:
        if not isinstance(type, str):
            raise TypeError(f"an event type is a str, not {_kind(type)}")
        if not type:
            raise ConfigError("an event type must be a non-empty string")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"event metadata is a mapping or None, not {_kind(metadata)}")
        if id is None:
            id = new_event_id()
        elif not isinstance(id, uuid.UUID):
            if not isinstance(id, str):
                raise TypeError(f"an event id is a UUID, not {_kind(id)}")
            try:
                id = uuid.UUID(id)
            except ValueError:
                raise ConfigError(f"an event id must be a UUID, not {id!r}") from None
        _set_type(self, type)
        _set_data(self, data)
        _set_metadata(self, metadata)
        _set_id(self, id)


_set_type, _set_data, _set_metadata, _set_id = _speedups.slot_setters(NewEvent)


@dataclass(frozen=True, slots=True, init=False)
class RecordedEvent:
    """An event as the store keeps it.

    ``version`` is its place in ``stream`` (from 1), ``position`` its place in the
    global order, ``recorded_at`` the commit time in UTC epoch seconds (one value
    for every event of a batch).
    """

    stream: str
    version: int
    position: int
    id: uuid.UUID
    type: str
    data: Any
    metadata: dict[str, Any] | None
    recorded_at: float

    # Written by hand, as Change's: reads build one per event, and with the slots'
    # own setters (`rowcast._speedups.slot_setters`) this is twice as fast as the
    # frozen dataclass's own.
    def __init__(
        self,
        stream: str,
        version: int,
        position: int,
        id: uuid.UUID,
        type: str,
        data: Any,
        metadata: dict[str, Any] | None,
        recorded_at: float,
    ) -> None:
        _set_r_stream(self, stream)
        _set_r_version(self, version)
        _set_r_position(self, position)
        _set_r_id(self, id)
        _set_r_type(self, type)
        _set_r_data(self, data)
        _set_r_metadata(self, metadata)
        _set_r_recorded_at(self, recorded_at)


(
    _set_r_stream,
    _set_r_version,
    _set_r_position,
    _set_r_id,
    _set_r_type,
    _set_r_data,
    _set_r_metadata,
    _set_r_recorded_at,
) = _speedups.slot_setters(RecordedEvent)


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Where an append's last event went: its stream ``version`` and global ``position``."""

    version: int
    position: int


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """A stream as `EventStore.list_streams` finds it: its name, its ``version`` (which,
    versions being gap-free from 1, is also how many events it has), and the global
    ``position`` and ``recorded_at`` time of its last event."""

    stream: str
    version: int
    position: int
    recorded_at: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A saved state of ``stream`` as of ``version`` (a global position for ``"@all"``)."""

    stream: str
    name: str
    version: int
    state: Any
    recorded_at: float


def _kind(value: object) -> str:
    return type(value).__name__

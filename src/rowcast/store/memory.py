"""`MemoryEventStore`: the reference backend, in plain Python structures (``memory://``).

Each ``EventStore("memory://")`` is its own store and lives as long as the
object: a real default for tests and examples, and the reading of the contract
with no database in the way. Events are kept encoded (codec JSON text), as the
other backends keep them, so what a caller reads back is a fresh copy of equal
value and type, never an object the caller could still change.

How it keeps the contract: one lock around every operation; a list of events
in position order (positions come from a counter and are never reused), a
per-stream list, and an index by id. Reads copy a page of records under the
lock and decode them outside it. Watchers are woken by the store's notifier on
each append; nothing else can write to the store, so nothing is polled.
"""

from __future__ import annotations

import bisect
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, Final, NamedTuple

from ..codec import loads
from ..errors import ConfigError, StoreError, WrongExpectedVersion
from ._core import EncodedBatch, decode_state, refused_append, version_matches
from .base import EventStore
from .types import ALL, AppendResult, ExpectedVersion, RecordedEvent, Snapshot, StreamInfo

__all__ = ["MemoryEventStore"]

_PAGE: Final = 1000  # records copied per lock while a read is consumed


class _Record(NamedTuple):
    stream: str
    version: int
    position: int
    id: bytes
    type: str
    data: str
    metadata: str | None
    recorded_at: float


class MemoryEventStore(EventStore):
    """The event store in this object's memory (see the module docstring)."""

    def __init__(self, url: str = "memory://", *, create: bool = True, **options: Any) -> None:
        if options:
            raise ConfigError(f"memory:// takes no options, not {sorted(options)}")
        rest = url.split("://", 1)[1] if "://" in url else url
        if rest not in ("", "/"):
            raise ConfigError(f"a memory store URL is just 'memory://', not {url!r}")
        if not create:  # the contract of create=False: never make a store that was not there
            raise StoreError(
                f"no rowcast event store in {url}: a memory store is made new and empty by "
                "each EventStore('memory://'), so there is none to open with create=False"
            )
        super().__init__(url)
        self._lock = threading.Lock()
        self._all: list[_Record] = []  # position order
        self._positions: list[int] = []  # the positions of `_all`, for bisect
        self._streams_: dict[str, list[_Record]] = {}
        self._names: list[str] = []  # the keys of `_streams_`, sorted, for list_streams
        self._ids: dict[bytes, _Record] = {}
        self._snapshots: dict[tuple[str, str], tuple[int, bytes, bool, float]] = {}
        self._subscriptions: dict[str, tuple[str, int]] = {}
        self._last_position = 0

    # -- appends

    def _append(self, stream: str, batch: EncodedBatch, expected: ExpectedVersion) -> AppendResult:
        ids = batch.ids
        with self._lock:
            events = self._streams_.get(stream, [])
            current = events[-1].version if events else 0
            # as on SQLite: a version conflict is one unless the batch's first id is stored
            if not version_matches(expected, current) and ids[0] not in self._ids:
                raise WrongExpectedVersion(stream, expected, current)
            stored = {i: self._ids[i][:3] for i in ids if i in self._ids}
            if stored or len(set(ids)) < len(ids):
                return refused_append(self.url, stream, ids, expected, None, stored)
            now = time.time()
            records = [
                _Record(stream, current + k + 1, self._last_position + k + 1, *row, now)
                for k, row in enumerate(
                    zip(ids, batch.types, batch.data, batch.metadata, strict=True)
                )
            ]
            self._last_position += len(records)
            if not events:
                bisect.insort(self._names, stream)
            self._streams_.setdefault(stream, []).extend(records)
            self._all.extend(records)
            self._positions.extend(r.position for r in records)
            self._ids.update((r.id, r) for r in records)
            result = AppendResult(records[-1].version, records[-1].position)
        self._appended(stream, result)
        return result

    # -- reads

    def _read(
        self, stream: str, after: int, limit: int | None, backwards: bool
    ) -> Iterator[RecordedEvent]:
        remaining = limit
        upper: int | None = None  # backwards: the key the next page stays below
        while remaining is None or remaining > 0:
            size = _PAGE if remaining is None else min(remaining, _PAGE)
            self._check_open("read")  # also for an iterator made before a close
            with self._lock:
                page = self._page(stream, after, upper, size, backwards)
            for r in page:
                yield RecordedEvent(
                    r.stream,
                    r.version,
                    r.position,
                    uuid.UUID(bytes=r.id),
                    r.type,
                    loads(r.data),
                    None if r.metadata is None else loads(r.metadata),
                    r.recorded_at,
                )
            if len(page) < size:
                return
            if remaining is not None:
                remaining -= len(page)
            key = page[-1].position if stream == ALL else page[-1].version
            if backwards:
                upper = key
            else:
                after = key

    def _page(
        self, stream: str, after: int, upper: int | None, size: int, backwards: bool
    ) -> list[_Record]:
        """Up to `size` records of `stream` between `after` and `upper`, in reading order."""
        if stream == ALL:
            records = self._all
            low = bisect.bisect_right(self._positions, after)
            high = len(records) if upper is None else bisect.bisect_left(self._positions, upper)
        else:  # a stream's versions 1..n sit at indexes 0..n-1
            records = self._streams_.get(stream, [])
            low = min(after, len(records))
            high = len(records) if upper is None else upper - 1
        if backwards:
            return records[max(low, high - size) : high][::-1]
        return records[low : min(high, low + size)]

    def _stream_version(self, stream: str) -> int:
        with self._lock:
            if stream == ALL:
                return self._positions[-1] if self._positions else 0
            events = self._streams_.get(stream)
            return events[-1].version if events else 0

    def _streams(self) -> dict[str, tuple[int, int]]:
        with self._lock:
            return {s: (e[-1].version, e[-1].position) for s, e in self._streams_.items() if e}

    def _list_streams(self, prefix: str, after: str | None, limit: int) -> list[StreamInfo]:
        with self._lock:
            names = self._names
            start = bisect.bisect_left(names, prefix)
            if after is not None:
                start = max(start, bisect.bisect_right(names, after))
            page = []
            for name in names[start : start + limit]:
                if not name.startswith(prefix):
                    break
                last = self._streams_[name][-1]
                page.append(StreamInfo(name, last.version, last.position, last.recorded_at))
            return page

    # -- deletes, snapshots, subscriptions

    def _delete_stream(self, stream: str) -> None:
        with self._lock:
            gone = self._streams_.pop(stream, None)
            for key in [k for k in self._snapshots if k[0] == stream]:
                del self._snapshots[key]
            if not gone:
                return
            del self._names[bisect.bisect_left(self._names, stream)]
            for r in gone:
                del self._ids[r.id]
            self._all = [r for r in self._all if r.stream != stream]
            self._positions = [r.position for r in self._all]

    def _save_snapshot(
        self, stream: str, name: str, version: int, state: bytes, is_bytes: bool
    ) -> None:
        with self._lock:
            kept = self._snapshots.get((stream, name))
            if kept is None or kept[0] <= version:
                self._snapshots[stream, name] = (version, state, is_bytes, time.time())

    def _load_snapshot(self, stream: str, name: str) -> Snapshot | None:
        with self._lock:
            kept = self._snapshots.get((stream, name))
        if kept is None:
            return None
        version, blob, is_bytes, at = kept
        return Snapshot(stream, name, version, decode_state(blob, is_bytes), at)

    def _subscribe(self, name: str, stream: str) -> tuple[str, int]:
        with self._lock:
            return self._subscriptions.setdefault(name, (stream, 0))

    def _save_position(self, name: str, stream: str, position: int) -> None:
        with self._lock:
            self._subscriptions[name] = (stream, position)

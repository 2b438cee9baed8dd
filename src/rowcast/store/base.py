"""The event store contract: one API, one module per backend.

An event store keeps *streams*: named, ordered lists of events. Every backend
promises the same behaviour (and runs `rowcast.testing.store.EventStoreContract`):

Versions and positions
    An event's ``version`` is its place in its stream, from 1 up with no gap; a
    stream that has no event has version 0. Its ``position`` is its place in the
    store's one global order (`EventStore.read_all`, or stream ``"@all"``):
    strictly increasing in commit order, never reused, even after
    `EventStore.delete_stream`. ``after`` is always exclusive: ``read(s, after=3)``
    starts at version 4.

Appends
    `EventStore.append` writes a batch atomically (all events or none) at the
    next versions of its stream. ``expected_version`` guards it: an int (the
    stream's current version; 0 = the stream must not exist yet), `ANY` (no
    check), `NO_STREAM` (version 0) or `STREAM_EXISTS` (version >= 1). A mismatch
    raises `WrongExpectedVersion` and appends nothing.

Idempotency
    Every event has a UUID ``id``, made when a `NewEvent` is built without one, so
    retrying ``append(stream, same_events)`` reuses the same ids. A batch whose
    ids are all stored in that stream at consecutive versions, in the batch's
    order, is already appended: append writes nothing and returns where its last
    event is (for a retry: the first append's `AppendResult`), even when
    ``expected_version`` is stale by now, so a retry after a lost reply succeeds. Any
    other reuse of a stored id (a partial overlap, ids of another stream, an id
    twice in one batch) raises `DuplicateEventId` and appends nothing. Ids are
    unique across the store.

Deletes
    `EventStore.delete_stream` removes a stream's events and snapshots; the store
    then treats it as never written: its version is 0 and the next append starts
    again at version 1 (at new positions), and the deleted ids may be used again.

Snapshots
    `EventStore.save_snapshot` keeps one state per (stream, name): the one with
    the highest version (equal versions: the last saved). The state is bytes
    (kept as they are) or any value the `rowcast.codec` JSON codec writes, and
    comes back equal and of the same types. Stream ``"@all"`` takes snapshots too,
    its version being a global position.

Listing
    `EventStore.list_streams` pages through the streams that have events by name
    (a prefix, the last name of the previous page, a limit), each with its version
    and last event, a probe of an index per stream: the same cost in any store.

Watching
    `EventStore.watch` follows a stream, or ``"@all"``, as events are committed:
    it first yields what is stored after ``after`` (exclusive; None: nothing, it
    starts from now), then blocks for each new event. Catch-up and live are one
    loop that always reads "after the last event yielded" from the store, so
    nothing is missed nor yielded twice between the two. A blocked watch wakes
    at once for appends made through the same store object, and within a
    backend-specific delay (SQLite: ~50 ms) for appends made elsewhere; it
    never busy-polls. A stream deleted while watched starts again at version 1.

Subscriptions
    `EventStore.subscribe` makes a named, durable consumer: the position of the
    last event its handler returned from (a version for a stream, a global
    position for ``"@all"``) is stored in the store, so a consumer that restarts
    resumes after it. Delivery is at least once: an event whose handler raised,
    or whose process died in the handler, is delivered again next time. One
    name follows one stream, and should have one running consumer at a time.

Opening
    ``EventStore(url)`` creates what is missing of the store (a SQLite file and its
    directory, a PostgreSQL schema, the tables), so that a new store needs no setup
    step. ``EventStore(url, create=False)`` creates nothing: it opens a store that
    exists and raises `StoreError` ("no rowcast event store in <url>: create one
    with `rowcast events init <url>`") for anything else, a database of an
    application without the store's tables included. Read-only tools (``rowcast
    events ls/read/stats/watch``) open stores this way, so a wrong URL never
    leaves tables or an empty file behind. Every backend takes ``create``.

Errors
    Bad arguments raise `TypeError` (wrong type) or `ConfigError` (a bad value:
    an empty stream name, a name starting with ``"@"`` for append, an empty
    batch, a negative version); a closed store, or a database that fails, raises
    `StoreError` (driver errors chained as ``__cause__``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NoReturn, Self, cast

from .. import backends
from ..errors import ConfigError, StoreError
from ._checks import (
    check_count,
    check_expected,
    check_name,
    check_snapshot_name,
    check_stream,
    check_timeout,
    kind,
)
from ._core import EncodedBatch, encode_batch, encode_state, split_groups
from ._watch import Notifier, Subscription, Watch
from .types import (
    ALL,
    ANY,
    DEFAULT_URL,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    Snapshot,
    StreamInfo,
    StreamState,
)

# the values are defined in rowcast.store.types, watches in rowcast.store._watch;
# all are importable from here, beside the contract
__all__ = [
    "ALL",
    "ANY",
    "DEFAULT_URL",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendResult",
    "EventStore",
    "ExpectedVersion",
    "NewEvent",
    "RecordedEvent",
    "Snapshot",
    "StreamInfo",
    "StreamState",
    "Subscription",
    "Watch",
]


# ---------------------------------------------------------------- the store


class EventStore:
    """Streams of events, appended atomically and read in order (see the module docstring).

    ``EventStore(url)`` opens the backend the URL names (``sqlite:///events.db``,
    ``sqlite://`` for memory; see `rowcast.backends`); an unknown scheme is a
    `ConfigError`. ``create=False`` opens only a store that exists (see "Opening"
    in the module docstring). Close it with `close` or a ``with`` block. Backends implement
    the underscored methods; the public ones check their arguments first, so
    every backend refuses the same input the same way. (Not an ABC: type
    checkers would then reject ``EventStore(url)`` itself.)
    """

    url: str  #: the URL it was opened with

    def __new__(cls, url: str = DEFAULT_URL, **options: Any) -> Self:
        if cls is not EventStore:
            return super().__new__(cls)
        if not isinstance(url, str):
            raise TypeError(f"an event store URL is a str, not {kind(url)}")
        return cast(Self, super().__new__(backends.load("store", url)))

    def __init__(self, url: str = DEFAULT_URL, **options: Any) -> None:
        self.url = url
        self._closed = False
        self._notifier = Notifier()  # a backend that others can write to sets its poll

    # -- the public API: argument checks, then the backend

    def append(
        self,
        stream: str,
        events: Iterable[NewEvent],
        expected_version: ExpectedVersion = ANY,
    ) -> AppendResult:
        """Append `events` atomically at the next versions of `stream`.

        Returns the version and global position of the last event. Raises
        `WrongExpectedVersion` when `stream` does not match `expected_version`,
        `DuplicateEventId` for ids stored before but not as this same batch (a
        same-batch retry returns the first result instead), and appends nothing
        in either case.
        """
        check_stream(stream, writing=True)
        expected = check_expected(expected_version)
        batch = encode_batch(events)
        self._check_open("append to")
        return self._append(stream, batch, expected)

    def append_streams(
        self, appends: Iterable[tuple[str, Iterable[NewEvent]]]
    ) -> list[AppendResult]:
        """Append each ``(stream, events)`` as `append` does with ``expected_version=ANY``.

        The result of each, in order. Every stream and event is checked first; a backend
        that can appends all in one transaction (SQLite), but nothing is promised across
        streams: a failure may leave the first ones appended.
        """
        groups = [(check_stream(s, writing=True), encode_batch(e)) for s, e in appends]
        self._check_open("append to")
        return self._append_streams(groups) if groups else []

    def _append_encoded(
        self, streams: Sequence[str], counts: Sequence[int], batch: EncodedBatch
    ) -> list[AppendResult]:
        """`append_streams` for rowcast's own writers, their events encoded already: group
        k is the next ``counts[k]`` (>= 1) events of `batch` (in order), for ``streams[k]``.

        The relay's store sink hands its batches over this way, without a `NewEvent` per
        change: each stream name is checked, the events are taken as they are.
        """
        for stream in streams:
            check_stream(stream, writing=True)
        self._check_open("append to")
        return self._append_flat(streams, counts, batch) if streams else []

    def read(
        self,
        stream: str,
        after: int = 0,
        limit: int | None = None,
        backwards: bool = False,
    ) -> Iterator[RecordedEvent]:
        """The events of `stream` with a version greater than `after`, in order.

        ``backwards=True`` yields the same events newest first (so ``limit=1``
        is the last event). At most `limit` events when given. ``"@all"`` reads
        the global order by position (`read_all`). A stream never written, or
        deleted, yields nothing. Events are fetched in pages as the iterator is
        consumed, so a forward read may also yield events appended meanwhile.
        """
        check_stream(stream, allow_all=True)
        if stream == ALL:
            return self.read_all(after, limit, backwards)
        first = check_count(after, "after")
        count = check_count(limit, "limit", allow_none=True)
        self._check_open("read")
        return self._read(stream, cast(int, first), count, bool(backwards))

    def read_all(
        self, after: int = 0, limit: int | None = None, backwards: bool = False
    ) -> Iterator[RecordedEvent]:
        """Every event with a position greater than `after`, in global order (as `read`)."""
        first = check_count(after, "after")
        count = check_count(limit, "limit", allow_none=True)
        self._check_open("read")
        return self._read(ALL, cast(int, first), count, bool(backwards))

    def stream_version(self, stream: str) -> int:
        """The version of the last event of `stream`; 0 when it has none.

        For ``"@all"``: the position of the last event in the store.
        """
        check_stream(stream, allow_all=True)
        self._check_open("read")
        return self._stream_version(stream)

    def streams(self) -> dict[str, tuple[int, int]]:
        """Every stream that has events: its name -> (version, position of its last event)."""
        self._check_open("read")
        return self._streams()

    def list_streams(
        self, prefix: str = "", after: str | None = None, limit: int = 100
    ) -> list[StreamInfo]:
        """A page of the streams that have events, by name: those starting with `prefix`,
        after the name `after` (exclusive; the last name of the previous page), at most `limit`.

        Each comes with its version (= its number of events) and the position and time
        of its last event. Names are in the backend's order (memory, SQLite: code point
        order; PostgreSQL: the database's collation). A page costs about `limit` index
        lookups whatever the size of the store, unlike `streams`, which reads them all.
        """
        if not isinstance(prefix, str):
            raise TypeError(f"a stream prefix is a str, not {kind(prefix)}")
        if after is not None and not isinstance(after, str):
            raise TypeError(f"after is a stream name or None, not {kind(after)}")
        count = cast(int, check_count(limit, "limit"))
        self._check_open("read")
        return self._list_streams(prefix, after, count) if count else []

    def delete_stream(self, stream: str) -> None:
        """Remove the events and snapshots of `stream`; nothing happens if it has none.

        Its version goes back to 0 and the next append starts at version 1
        again; positions are never reused.
        """
        check_stream(stream, writing=True)
        self._check_open("delete")
        self._delete_stream(stream)

    def save_snapshot(self, stream: str, state: Any, version: int, name: str = "default") -> None:
        """Keep `state` as `stream`'s snapshot `name` as of `version`.

        A snapshot with a lower version than the one kept is ignored, so the
        latest state wins even when savers race.
        """
        check_stream(stream, allow_all=True)
        check_count(version, "a snapshot version")
        check_snapshot_name(name)
        blob, is_bytes = encode_state(state)
        self._check_open("save a snapshot to")
        self._save_snapshot(stream, name, version, blob, is_bytes)

    def load_snapshot(self, stream: str, name: str = "default") -> Snapshot | None:
        """The kept snapshot `name` of `stream`, or None."""
        check_stream(stream, allow_all=True)
        check_snapshot_name(name)
        self._check_open("load a snapshot from")
        return self._load_snapshot(stream, name)

    def watch(
        self, stream: str = ALL, after: int | None = None, *, timeout: float | None = None
    ) -> Watch:
        """Follow `stream` (``"@all"``: every stream): an iterator that blocks for new events.

        ``after=None`` starts from now: only events committed after this call
        come. ``after=N`` first yields what is stored after N (a version; for
        ``"@all"`` a global position), then goes on live, with no gap and no
        duplicate between the two. Each ``next()`` raises StopIteration after
        `Watch.close`, once the store is closed, or after `timeout` seconds
        without a new event (``timeout=0``: what is stored now, then stop). A
        stream that is empty, or deleted, is watched all the same.
        """
        check_stream(stream, allow_all=True)
        start = check_count(after, "after", allow_none=True)
        wait = check_timeout(timeout)
        self._check_open("watch")
        return Watch(self, stream, start, wait)

    def subscribe(
        self, name: str, handler: Callable[[RecordedEvent], object], stream: str = ALL
    ) -> Subscription:
        """The durable subscription `name` to `stream`, resuming where it left off.

        Its position is kept in the store: a new ``subscribe`` with the same
        name, from this store object or another one on the same data, starts
        after the last event handled. A name follows one stream for good:
        subscribing it to another raises `ConfigError`. Nothing is handled
        until `Subscription.run` or `Subscription.run_pending`.
        """
        check_name(name, "a subscription name")
        if not callable(handler):
            raise TypeError(f"a subscription handler is a callable, not {kind(handler)}")
        check_stream(stream, allow_all=True)
        self._check_open("subscribe to")
        stored, position = self._subscribe(name, stream)
        if stored != stream:
            raise ConfigError(
                f"subscription {name!r} follows stream {stored!r}, not {stream!r}; "
                "give the new subscription another name"
            )
        return Subscription(self, name, handler, stream, position)

    def check_writable(self) -> None:
        """Raise `StoreError` unless an append could be made now; writes nothing.

        The store is open and its database answers; on PostgreSQL the role may also
        insert into the events table and call the append function (the fix, a
        ``GRANT``, is in the message).
        """
        self._check_open("append to")
        self._check_writable()

    def close(self) -> None:
        """Release the connection; idempotent. A closed store raises `StoreError`."""
        if not self._closed:
            self._closed = True
            self._notifier.close()
            self._close()

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url!r}{' closed' if self._closed else ''}>"

    def _check_open(self, operation: str) -> None:
        if self._closed:
            raise StoreError(f"cannot {operation} event store {self.url}: it is closed")

    def _fail(self, operation: str, error: BaseException) -> NoReturn:
        raise StoreError(f"event store {self.url}: {operation} failed: {error}") from error

    # -- what a backend implements (arguments already checked)

    def _append(self, stream: str, batch: EncodedBatch, expected: ExpectedVersion) -> AppendResult:
        """Append the checked `batch` (see `append`)."""
        raise NotImplementedError

    def _append_streams(self, groups: list[tuple[str, EncodedBatch]]) -> list[AppendResult]:
        """Append each encoded group, stream by stream (a backend may do them at once)."""
        return [self._append(stream, batch, ANY) for stream, batch in groups]

    def _append_flat(
        self, streams: Sequence[str], counts: Sequence[int], batch: EncodedBatch
    ) -> list[AppendResult]:
        """`_append_encoded`'s groups (checked), split into `_append_streams`' (a backend
        may take them as they are)."""
        return self._append_streams(split_groups(streams, counts, batch))

    def _streams(self) -> dict[str, tuple[int, int]]:
        """Every stream with its version and last position."""
        raise NotImplementedError

    def _list_streams(self, prefix: str, after: str | None, limit: int) -> list[StreamInfo]:
        """A page of streams (see `list_streams`; `limit` >= 1)."""
        raise NotImplementedError

    def _read(
        self, stream: str, after: int, limit: int | None, backwards: bool
    ) -> Iterator[RecordedEvent]:
        """Read `stream`, or the global order when `stream` is ``"@all"``."""
        raise NotImplementedError

    def _stream_version(self, stream: str) -> int:
        """The version of `stream`, or the last position for ``"@all"``."""
        raise NotImplementedError

    def _delete_stream(self, stream: str) -> None:
        """Delete the events and snapshots of `stream`."""
        raise NotImplementedError

    def _check_writable(self) -> None:
        """`check_writable` past the closed check; by default: the database answers a read."""
        self._stream_version(ALL)

    def _save_snapshot(
        self, stream: str, name: str, version: int, state: bytes, is_bytes: bool
    ) -> None:
        """Keep the encoded state unless a higher version is kept."""
        raise NotImplementedError

    def _load_snapshot(self, stream: str, name: str) -> Snapshot | None:
        """The kept snapshot, decoded."""
        raise NotImplementedError

    def _subscribe(self, name: str, stream: str) -> tuple[str, int]:
        """The stored (stream, position) of subscription `name`; stored as (`stream`, 0) if new."""
        raise NotImplementedError

    def _save_position(self, name: str, stream: str, position: int) -> None:
        """Store `position` as the last event subscription `name` handled."""
        raise NotImplementedError

    def _appended(self, stream: str, result: AppendResult) -> None:
        """Call after each committed append (outside any lock): wakes the watchers."""
        self._notifier.notify()

    def _close(self) -> None:
        """Release resources (called once)."""

"""`EventStoreContract`: what every `rowcast.store.EventStore` backend must do.

Subclass it in a test module and override `make_store` (and `shared_url` when
another instance, or another process, can open the same data)::

    class TestSQLiteFile(EventStoreContract):
        @pytest.fixture(autouse=True)
        def _dir(self, tmp_path):
            self.url = f"sqlite:///{tmp_path}/events.db"

        def make_store(self):
            return EventStore(self.url)

        def shared_url(self):
            return self.url

Tests use ``self.store`` (made before each test, closed after) and
`open_store` for more instances; stream names are unique per test, so a
backend on a shared server needs no cleanup between tests. The tests that need
a second instance or other processes skip when `shared_url` is None.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import pickle
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from itertools import islice
from typing import Any

import pytest

from rowcast.errors import ConfigError, DuplicateEventId, StoreError, WrongExpectedVersion
from rowcast.store import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    EventStore,
    NewEvent,
    RecordedEvent,
    Snapshot,
    Subscription,
    Watch,
)

__all__ = ["EventStoreContract"]

WAIT = 20.0  # seconds: a bound that a test never reaches unless it is broken

RICH_DATA: Any = {
    "price": Decimal("12.50"),
    "at": dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC),
    "day": dt.date(2024, 5, 1),
    "blob": b"\x00\xffrowcast",
    "ref": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "pk": (1, "a"),
    "tags": {"x", "y"},
    "text": "é ü 中文 🚀 \t ' \" \\ \x00",
    "nested": [{"$ref": 1}, None, True, 1.5, -(2**70)],
}


def events(count: int, type: str = "happened", start: int = 0) -> list[NewEvent]:
    """`count` events of `type` whose data is ``{"n": start + i}``."""
    return [NewEvent(type, {"n": start + i}) for i in range(count)]


def append_with_retries(store: EventStore, stream: str, count: int, worker: int) -> None:
    """Append `count` single events, each with the expected version read just before."""
    for n in range(count):
        event = NewEvent("counted", {"worker": worker, "n": n})
        while True:
            try:
                store.append(stream, [event], expected_version=store.stream_version(stream))
                break
            except WrongExpectedVersion:
                continue


def _process_main(url: str, stream: str, count: int, worker: int) -> None:
    """Runs in a spawned process: open the store at `url` and append there."""
    with EventStore(url) as store:
        append_with_retries(store, stream, count, worker)


def _in(watch: Iterable[RecordedEvent], *streams: str) -> Iterator[RecordedEvent]:
    """The events of `watch` in `streams` (a backend on a shared server has others too)."""
    return (e for e in watch if e.stream in streams)


class _Boom(Exception):
    pass


class _Background:
    """Runs `target` in a thread; `result()` joins it and re-raises what it raised."""

    def __init__(self, target: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: BaseException | None = None

        def main() -> None:
            try:
                self.value = target()
            except BaseException as e:  # handed to the test's thread by result()
                self.error = e

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()

    def blocked(self, seconds: float = 0.2) -> bool:
        """Whether the thread is still running after `seconds` (it should be blocked)."""
        self.thread.join(seconds)
        return self.thread.is_alive()

    def result(self, seconds: float = WAIT) -> Any:
        self.thread.join(seconds)
        assert not self.thread.is_alive(), "the thread did not end"
        if self.error is not None:
            raise self.error
        return self.value


class EventStoreContract:
    """The behaviour every event store backend shares; see `rowcast.store.base`."""

    store: EventStore

    def make_store(self) -> EventStore:
        """Open a store of the backend under test."""
        raise NotImplementedError

    def shared_url(self) -> str | None:
        """A URL that opens the same data as `make_store`, from here or another process.

        None (the default) when the data lives in one instance only, as in
        memory: the tests that need a second instance or process then skip.
        """
        return None

    @pytest.fixture(autouse=True)
    def _store(self) -> Iterator[None]:
        self._opened: list[EventStore] = []
        self.store = self.open_store()
        yield
        for store in self._opened:
            store.close()

    def open_store(self) -> EventStore:
        """Another instance of the backend (`make_store`), closed at teardown."""
        store = self.make_store()
        self._opened.append(store)
        return store

    def require_shared_url(self) -> str:
        url = self.shared_url()
        if url is None:
            pytest.skip("this backend's data lives in one instance only")
        return url

    @staticmethod
    def stream() -> str:
        """A stream name no other test uses."""
        return f"test.stream-{uuid.uuid4().hex}"

    @staticmethod
    def subscription() -> str:
        """A subscription name no other test uses."""
        return f"test.subscription-{uuid.uuid4().hex}"

    # ------------------------------------------------------------ basics

    def test_is_an_event_store(self) -> None:
        assert isinstance(self.store, EventStore)
        assert isinstance(self.store.url, str)
        assert self.store.url

    def test_a_stream_never_written_is_version_0_and_empty(self) -> None:
        stream = self.stream()
        assert self.store.stream_version(stream) == 0
        assert list(self.store.read(stream)) == []
        assert list(self.store.read(stream, backwards=True)) == []

    def test_versions_start_at_1_and_follow_on(self) -> None:
        stream = self.stream()
        first = self.store.append(stream, events(3))
        second = self.store.append(stream, events(2, start=3))
        assert isinstance(first, AppendResult)
        assert first.version == 3
        assert second.version == 5
        assert second.position == first.position + 2  # nothing else was appended meanwhile
        recorded = list(self.store.read(stream))
        assert [e.version for e in recorded] == [1, 2, 3, 4, 5]
        assert [e.data for e in recorded] == [{"n": n} for n in range(5)]
        assert self.store.stream_version(stream) == 5

    def test_recorded_events_carry_everything(self) -> None:
        stream = self.stream()
        event = NewEvent("order_placed", {"total": 3}, {"user": "ann"})
        result = self.store.append(stream, [event])
        (recorded,) = self.store.read(stream)
        assert isinstance(recorded, RecordedEvent)
        assert recorded.stream == stream
        assert (recorded.version, recorded.position) == (1, result.position)
        assert recorded.id == event.id
        assert (recorded.type, recorded.data, recorded.metadata) == (
            "order_placed",
            {"total": 3},
            {"user": "ann"},
        )
        assert isinstance(recorded.recorded_at, float)
        assert abs(recorded.recorded_at - dt.datetime.now(dt.UTC).timestamp()) < 60

    def test_data_and_metadata_round_trip_exactly(self) -> None:
        stream = self.stream()
        self.store.append(
            stream, [NewEvent("rich", RICH_DATA, {"meta": RICH_DATA}), NewEvent("none", None)]
        )
        rich, empty = self.store.read(stream)
        assert rich.data == RICH_DATA
        assert type(rich.data["price"]) is Decimal
        assert type(rich.data["pk"]) is tuple
        assert rich.metadata == {"meta": RICH_DATA}
        assert (empty.data, empty.metadata) == (None, None)

    def test_data_the_codec_cannot_write_is_a_type_error_and_appends_nothing(self) -> None:
        stream = self.stream()
        with pytest.raises(TypeError, match="object"):
            self.store.append(stream, [NewEvent("ok", 1), NewEvent("bad", object())])
        assert self.store.stream_version(stream) == 0

    # ------------------------------------------------------------ reading

    def test_after_is_exclusive(self) -> None:
        stream = self.stream()
        self.store.append(stream, events(5))
        assert [e.version for e in self.store.read(stream, after=2)] == [3, 4, 5]
        assert list(self.store.read(stream, after=5)) == []
        assert list(self.store.read(stream, after=99)) == []

    def test_limit(self) -> None:
        stream = self.stream()
        self.store.append(stream, events(5))
        assert [e.version for e in self.store.read(stream, limit=2)] == [1, 2]
        assert [e.version for e in self.store.read(stream, after=3, limit=10)] == [4, 5]
        assert list(self.store.read(stream, limit=0)) == []

    def test_backwards_yields_the_same_events_newest_first(self) -> None:
        stream = self.stream()
        self.store.append(stream, events(5))
        assert [e.version for e in self.store.read(stream, backwards=True)] == [5, 4, 3, 2, 1]
        assert [e.version for e in self.store.read(stream, backwards=True, limit=1)] == [5]
        assert [e.version for e in self.store.read(stream, after=2, backwards=True)] == [5, 4, 3]

    def test_reads_longer_than_a_page(self) -> None:
        stream = self.stream()
        self.store.append(stream, events(2500))
        assert [e.version for e in self.store.read(stream)] == list(range(1, 2501))
        assert [e.version for e in self.store.read(stream, backwards=True)] == list(
            range(2500, 0, -1)
        )
        assert [e.version for e in self.store.read(stream, after=1, limit=2001)][-1] == 2002
        assert len(list(self.store.read(stream, backwards=True, limit=2001))) == 2001
        head = self.store.stream_version("@all")
        assert len(list(self.store.read_all(after=head - 2500))) == 2500

    def test_read_all_is_one_global_order(self) -> None:
        a, b = self.stream(), self.stream()
        start = self.store.stream_version("@all")
        self.store.append(a, events(2, "a"))
        self.store.append(b, events(1, "b"))
        last = self.store.append(a, events(1, "a", start=2))
        recorded = list(self.store.read_all(after=start))
        assert [(e.stream, e.version) for e in recorded] == [(a, 1), (a, 2), (b, 1), (a, 3)]
        positions = [e.position for e in recorded]
        assert positions == sorted(set(positions))
        assert positions[-1] == last.position == self.store.stream_version("@all")
        assert list(self.store.read("@all", after=start)) == recorded

    def test_read_all_after_limit_and_backwards(self) -> None:
        stream = self.stream()
        start = self.store.stream_version("@all")
        self.store.append(stream, events(4))
        forward = list(self.store.read_all(after=start))
        assert list(self.store.read_all(after=forward[1].position)) == forward[2:]
        assert list(self.store.read_all(after=start, limit=2)) == forward[:2]
        assert list(self.store.read_all(after=start, backwards=True)) == forward[::-1]
        assert list(self.store.read("@all", after=start, backwards=True, limit=1)) == forward[-1:]

    # ------------------------------------------------------------ expected versions

    def test_expected_version_int(self) -> None:
        stream = self.stream()
        assert self.store.append(stream, events(2), expected_version=0).version == 2
        assert self.store.append(stream, events(1), expected_version=2).version == 3

    @pytest.mark.parametrize("expected", [0, 1, 3])
    def test_a_wrong_int_raises_and_appends_nothing(self, expected: int) -> None:
        stream = self.stream()
        self.store.append(stream, events(2))
        with pytest.raises(WrongExpectedVersion) as caught:
            self.store.append(stream, events(1), expected_version=expected)
        error = caught.value
        assert isinstance(error, StoreError)
        assert (error.stream, error.expected, error.actual) == (stream, expected, 2)
        assert stream in str(error)
        assert self.store.stream_version(stream) == 2

    def test_expected_0_on_a_missing_stream_and_version_on_empty(self) -> None:
        stream = self.stream()
        with pytest.raises(WrongExpectedVersion) as caught:
            self.store.append(stream, events(1), expected_version=1)
        assert caught.value.actual == 0

    def test_no_stream(self) -> None:
        stream = self.stream()
        assert self.store.append(stream, events(1), expected_version=NO_STREAM).version == 1
        with pytest.raises(WrongExpectedVersion) as caught:
            self.store.append(stream, events(1), expected_version=NO_STREAM)
        assert (caught.value.expected, caught.value.actual) == (NO_STREAM, 1)

    def test_stream_exists(self) -> None:
        stream = self.stream()
        with pytest.raises(WrongExpectedVersion) as caught:
            self.store.append(stream, events(1), expected_version=STREAM_EXISTS)
        assert (caught.value.expected, caught.value.actual) == (STREAM_EXISTS, 0)
        self.store.append(stream, events(1))
        assert self.store.append(stream, events(1), expected_version=STREAM_EXISTS).version == 2

    def test_any(self) -> None:
        stream = self.stream()
        assert self.store.append(stream, events(1), expected_version=ANY).version == 1
        assert self.store.append(stream, events(1), expected_version=ANY).version == 2

    def test_sentinels_read_well(self) -> None:
        assert [repr(s) for s in (ANY, NO_STREAM, STREAM_EXISTS)] == [
            "ANY",
            "NO_STREAM",
            "STREAM_EXISTS",
        ]

    def test_wrong_expected_version_pickles(self) -> None:
        error = WrongExpectedVersion("s", NO_STREAM, 3)
        again = pickle.loads(pickle.dumps(error))
        assert (again.stream, again.expected, again.actual, str(again)) == (
            "s",
            NO_STREAM,
            3,
            str(error),
        )

    # ------------------------------------------------------------ ids and idempotency

    def test_events_get_time_ordered_uuids_and_keep_given_ones(self) -> None:
        given = uuid.uuid4()
        made = NewEvent("t", 1)
        assert isinstance(made.id, uuid.UUID)
        assert made.id.version == 7
        assert made.id.variant == uuid.RFC_4122
        assert abs((made.id.int >> 80) - time.time() * 1000) < 60_000  # ms since the epoch
        assert NewEvent("t", 1).id != made.id
        assert len({NewEvent("t", 1).id for _ in range(10_000)}) == 10_000
        assert NewEvent("t", 1, id=given).id == given
        assert NewEvent("t", 1, id=str(given)).id == given
        stream = self.stream()
        self.store.append(stream, [made, NewEvent("t", 2, id=given)])
        assert [e.id for e in self.store.read(stream)] == [made.id, given]

    def test_a_retried_batch_returns_the_first_result(self) -> None:
        stream = self.stream()
        batch = events(3)
        first = self.store.append(stream, batch, expected_version=NO_STREAM)
        assert self.store.append(stream, batch, expected_version=NO_STREAM) == first
        assert self.store.append(stream, batch) == first
        # what matters is where the events are, not how they were batched
        assert self.store.append(stream, batch[1:], expected_version=1) == first
        assert self.store.stream_version(stream) == 3

    def test_a_retry_succeeds_when_the_expected_version_is_stale(self) -> None:
        stream = self.stream()
        self.store.append(stream, events(2))
        batch = events(2, start=2)
        first = self.store.append(stream, batch, expected_version=2)
        self.store.append(stream, events(1, start=4))  # someone else appends meanwhile
        assert self.store.append(stream, batch, expected_version=2) == first
        assert self.store.append(stream, batch, expected_version=0) == first
        assert [e.data["n"] for e in self.store.read(stream)] == [0, 1, 2, 3, 4]

    def test_a_partial_overlap_is_a_duplicate_and_appends_nothing(self) -> None:
        stream = self.stream()
        batch = events(3)
        self.store.append(stream, batch)
        for again in (batch[:2] + events(1), events(1) + batch[2:], batch[::-1], batch[::2]):
            with pytest.raises(DuplicateEventId) as caught:
                self.store.append(stream, again)
            assert isinstance(caught.value, StoreError)
            assert caught.value.stream == stream
            assert set(caught.value.ids) <= {e.id for e in batch}
        assert self.store.stream_version(stream) == 3

    def test_ids_stored_in_another_stream_are_a_duplicate(self) -> None:
        a, b = self.stream(), self.stream()
        batch = events(2)
        self.store.append(a, batch)
        with pytest.raises(DuplicateEventId, match=a):
            self.store.append(b, batch)
        with pytest.raises(DuplicateEventId):
            self.store.append(b, batch, expected_version=NO_STREAM)
        assert self.store.stream_version(b) == 0

    def test_one_id_twice_in_a_batch_is_a_duplicate(self) -> None:
        stream = self.stream()
        event = NewEvent("t", 1)
        with pytest.raises(DuplicateEventId, match="twice"):
            self.store.append(stream, [event, NewEvent("t", 2), event])
        assert self.store.stream_version(stream) == 0

    # ------------------------------------------------------------ bad input

    def test_an_empty_batch_is_a_config_error(self) -> None:
        with pytest.raises(ConfigError, match="at least one event"):
            self.store.append(self.stream(), [])

    @pytest.mark.parametrize(
        "batch",
        [[{"type": "t"}], [NewEvent("t", 1), "t"], NewEvent("t", 1), "events", None],
        ids=["dict", "str-item", "bare-event", "str", "none"],
    )
    def test_a_batch_of_other_things_is_a_type_error(self, batch: Any) -> None:
        stream = self.stream()
        with pytest.raises(TypeError, match="NewEvent"):
            self.store.append(stream, batch)
        assert self.store.stream_version(stream) == 0

    @pytest.mark.parametrize("stream", [None, 1, b"s"])
    def test_a_stream_name_not_a_str_is_a_type_error(self, stream: Any) -> None:
        with pytest.raises(TypeError, match="stream name"):
            self.store.append(stream, events(1))
        with pytest.raises(TypeError, match="stream name"):
            self.store.read(stream)
        with pytest.raises(TypeError, match="stream name"):
            self.store.stream_version(stream)

    @pytest.mark.parametrize("stream", ["", "a\x00b"])
    def test_an_empty_stream_name_is_a_config_error(self, stream: str) -> None:
        with pytest.raises(ConfigError, match="non-empty"):
            self.store.append(stream, events(1))
        with pytest.raises(ConfigError, match="non-empty"):
            self.store.read(stream)

    @pytest.mark.parametrize("stream", ["@all", "@mine"])
    def test_names_starting_with_at_are_reserved_for_writes(self, stream: str) -> None:
        with pytest.raises(ConfigError, match="reserved"):
            self.store.append(stream, events(1))
        with pytest.raises(ConfigError, match="reserved"):
            self.store.delete_stream(stream)

    def test_only_at_all_reads(self) -> None:
        with pytest.raises(ConfigError, match="@all"):
            self.store.read("@mine")

    @pytest.mark.parametrize(
        ("expected", "error"),
        [(True, TypeError), ("any", TypeError), (None, TypeError), (-1, ConfigError)],
    )
    def test_a_bad_expected_version(self, expected: Any, error: type[Exception]) -> None:
        stream = self.stream()
        with pytest.raises(error, match="expected_version"):
            self.store.append(stream, events(1), expected_version=expected)
        assert self.store.stream_version(stream) == 0

    @pytest.mark.parametrize(
        ("kwargs", "error"),
        [
            ({"after": -1}, ConfigError),
            ({"after": "1"}, TypeError),
            ({"limit": -1}, ConfigError),
            ({"limit": 1.5}, TypeError),
        ],
    )
    def test_bad_read_arguments(self, kwargs: dict[str, Any], error: type[Exception]) -> None:
        with pytest.raises(error):
            self.store.read(self.stream(), **kwargs)
        with pytest.raises(error):
            self.store.read_all(**kwargs)

    @pytest.mark.parametrize(
        ("args", "error"),
        [
            ((1, None), TypeError),
            (("", None), ConfigError),
            (("t", None, ["not", "a", "mapping"]), TypeError),
            (("t", None, None, 42), TypeError),
            (("t", None, None, "not-a-uuid"), ConfigError),
        ],
    )
    def test_bad_new_events(self, args: tuple[Any, ...], error: type[Exception]) -> None:
        with pytest.raises(error):
            NewEvent(*args)

    # ------------------------------------------------------------ deletes

    def test_streams_lists_each_stream_with_version_and_last_position(self) -> None:
        one, two = self.stream(), self.stream()
        self.store.append(one, events(2))
        last_two = self.store.append(two, events(3))
        last_one = self.store.append(one, events(1))
        found = self.store.streams()
        assert found[one] == (last_one.version, last_one.position) == (3, last_one.position)
        assert found[two] == (3, last_two.position)
        self.store.delete_stream(one)
        assert one not in self.store.streams()

    def test_delete_stream_removes_it_and_appends_start_again_at_1(self) -> None:
        stream, other = self.stream(), self.stream()
        self.store.append(other, events(1))
        first = self.store.append(stream, events(3))
        self.store.save_snapshot(stream, {"s": 1}, 3)
        self.store.delete_stream(stream)
        assert self.store.stream_version(stream) == 0
        assert list(self.store.read(stream)) == []
        assert self.store.load_snapshot(stream) is None
        assert all(e.stream != stream for e in self.store.read_all())
        again = self.store.append(stream, events(1), expected_version=NO_STREAM)
        assert again.version == 1
        assert again.position > first.position  # positions are never reused
        assert self.store.stream_version(other) == 1

    def test_positions_are_never_reused_even_after_deleting_the_last_events(self) -> None:
        stream = self.stream()
        first = self.store.append(stream, events(2))
        self.store.delete_stream(stream)
        assert self.store.append(self.stream(), events(1)).position > first.position

    def test_deleting_a_stream_that_has_nothing_is_a_no_op(self) -> None:
        self.store.delete_stream(self.stream())

    def test_deleted_ids_may_be_used_again(self) -> None:
        stream = self.stream()
        batch = events(2)
        self.store.append(stream, batch)
        self.store.delete_stream(stream)
        assert self.store.append(self.stream(), batch).version == 2

    # ------------------------------------------------------------ snapshots

    def test_no_snapshot_is_none(self) -> None:
        assert self.store.load_snapshot(self.stream()) is None

    @pytest.mark.parametrize(
        "state",
        [b"\x00\x01 raw", {"count": 3, **RICH_DATA}, [1, "two"], "text", 42, None],
        ids=["bytes", "rich", "list", "str", "int", "none"],
    )
    def test_snapshot_round_trips_exactly(self, state: Any) -> None:
        stream = self.stream()
        self.store.append(stream, events(3))
        self.store.save_snapshot(stream, state, 3)
        snapshot = self.store.load_snapshot(stream)
        assert isinstance(snapshot, Snapshot)
        assert (snapshot.stream, snapshot.name, snapshot.version) == (stream, "default", 3)
        assert snapshot.state == state
        assert type(snapshot.state) is type(state)
        assert isinstance(snapshot.recorded_at, float)

    def test_bytearray_state_comes_back_as_bytes(self) -> None:
        stream = self.stream()
        self.store.save_snapshot(stream, bytearray(b"ab"), 0)
        snapshot = self.store.load_snapshot(stream)
        assert snapshot is not None
        assert snapshot.state == b"ab"
        assert type(snapshot.state) is bytes

    def test_the_latest_snapshot_wins_and_an_older_one_is_ignored(self) -> None:
        stream = self.stream()
        self.store.save_snapshot(stream, "v2", 2)
        self.store.save_snapshot(stream, "v5", 5)
        self.store.save_snapshot(stream, "v3", 3)  # a slower saver, late
        snapshot = self.store.load_snapshot(stream)
        assert snapshot is not None
        assert (snapshot.version, snapshot.state) == (5, "v5")
        self.store.save_snapshot(stream, "v5 again", 5)
        snapshot = self.store.load_snapshot(stream)
        assert snapshot is not None
        assert snapshot.state == "v5 again"

    def test_snapshot_names_are_independent(self) -> None:
        stream = self.stream()
        self.store.save_snapshot(stream, "a", 1, name="totals")
        self.store.save_snapshot(stream, "b", 2, name="search")
        totals = self.store.load_snapshot(stream, "totals")
        search = self.store.load_snapshot(stream, name="search")
        assert totals is not None
        assert search is not None
        assert (totals.state, search.state) == ("a", "b")
        assert self.store.load_snapshot(stream) is None

    def test_snapshots_of_at_all_are_keyed_by_position(self) -> None:
        name = f"projection-{uuid.uuid4().hex}"
        result = self.store.append(self.stream(), events(2))
        self.store.save_snapshot("@all", {"seen": 2}, result.position, name=name)
        snapshot = self.store.load_snapshot("@all", name)
        assert snapshot is not None
        assert (snapshot.stream, snapshot.version, snapshot.state) == (
            "@all",
            result.position,
            {"seen": 2},
        )
        assert list(self.store.read_all(after=snapshot.version)) == []

    @pytest.mark.parametrize(
        ("args", "error"),
        [
            (("state", -1), ConfigError),
            (("state", "1"), TypeError),
            (("state", 1, ""), ConfigError),
            (("state", 1, None), TypeError),
            ((object(), 1), TypeError),
        ],
    )
    def test_bad_snapshot_arguments(self, args: tuple[Any, ...], error: type[Exception]) -> None:
        stream = self.stream()
        with pytest.raises(error):
            self.store.save_snapshot(stream, *args)
        assert self.store.load_snapshot(stream) is None

    # ------------------------------------------------------------ closing

    def test_close_is_idempotent_and_final(self) -> None:
        store = self.open_store()
        stream = self.stream()
        store.append(stream, events(1))
        reader = store.read(stream)
        store.close()
        store.close()
        assert store.closed
        with pytest.raises(StoreError, match="closed"):
            store.append(stream, events(1))
        with pytest.raises(StoreError, match="closed"):
            store.read(stream)
        with pytest.raises(StoreError, match="closed"):
            next(reader)  # made before the close, consumed after
        with pytest.raises(StoreError, match="closed"):
            store.stream_version(stream)
        with pytest.raises(StoreError, match="closed"):
            store.load_snapshot(stream)

    def test_a_with_block_closes(self) -> None:
        with self.open_store() as store:
            assert not store.closed
        assert store.closed

    # ------------------------------------------------------------ concurrency

    def test_threads_appending_with_expected_versions_lose_nothing(self) -> None:
        stream = self.stream()
        threads, each = 6, 15
        self._race(stream, [self.store] * threads, each)

    def test_threads_with_their_own_stores_lose_nothing(self) -> None:
        url = self.require_shared_url()
        stream = self.stream()
        stores = [self.open_store() for _ in range(4)]
        assert all(s.url == url for s in stores)
        self._race(stream, stores, 15)

    def _race(self, stream: str, stores: list[EventStore], each: int) -> None:
        barrier = threading.Barrier(len(stores))
        errors: list[BaseException] = []

        def work(store: EventStore, worker: int) -> None:
            barrier.wait()
            try:
                append_with_retries(store, stream, each, worker)
            except BaseException as e:  # reported below, in the test's own thread
                errors.append(e)

        threads = [threading.Thread(target=work, args=(s, i)) for i, s in enumerate(stores)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        self._check_counted(stream, len(stores), each)

    def _check_counted(self, stream: str, workers: int, each: int) -> None:
        recorded = list(self.store.read(stream))
        assert [e.version for e in recorded] == list(range(1, workers * each + 1))
        assert sorted((e.data["worker"], e.data["n"]) for e in recorded) == [
            (w, n) for w in range(workers) for n in range(each)
        ]
        for w in range(workers):  # each worker's events in its own order
            mine = [e.data["n"] for e in recorded if e.data["worker"] == w]
            assert mine == list(range(each))

    def test_a_new_instance_sees_what_another_appended(self) -> None:
        self.require_shared_url()
        stream = self.stream()
        writer = self.open_store()
        result = writer.append(stream, events(2))
        writer.save_snapshot(stream, b"state", 2)
        writer.close()
        reader = self.open_store()
        assert reader.stream_version(stream) == 2
        assert reader.stream_version("@all") >= result.position
        assert [e.data for e in reader.read(stream)] == [{"n": 0}, {"n": 1}]
        snapshot = reader.load_snapshot(stream)
        assert snapshot is not None
        assert snapshot.state == b"state"

    def test_processes_appending_to_one_stream_lose_nothing(self) -> None:
        url = self.require_shared_url()
        stream = self.stream()
        workers, each = 3, 20
        context = multiprocessing.get_context("spawn")
        processes = [
            context.Process(target=_process_main, args=(url, stream, each, w))
            for w in range(workers)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(60)
        assert [p.exitcode for p in processes] == [0] * workers
        self._check_counted(stream, workers, each)

    # ------------------------------------------------------------ watching

    def test_a_watch_is_an_iterator(self) -> None:
        with self.store.watch(self.stream(), timeout=0) as watch:
            assert isinstance(watch, Watch)
            assert iter(watch) is watch
        assert next(watch, None) is None

    def test_watch_from_now_replays_nothing(self) -> None:
        stream = self.stream()
        self.store.append(stream, events(3))
        assert list(self.store.watch(stream, timeout=0)) == []
        assert list(_in(self.store.watch(timeout=0), stream)) == []
        assert list(self.store.watch(stream, after=0, timeout=0)) == list(self.store.read(stream))

    def test_watch_from_now_yields_what_comes_next(self) -> None:
        stream, other = self.stream(), self.stream()
        self.store.append(stream, events(2))
        on_stream = self.store.watch(stream, timeout=WAIT)
        on_all = _in(self.store.watch("@all", timeout=WAIT), stream, other)
        self.store.append(other, events(1, "other"))
        self.store.append(stream, events(2, start=2))
        assert [(e.version, e.data["n"]) for e in islice(on_stream, 2)] == [(3, 2), (4, 3)]
        assert [(e.stream, e.version) for e in islice(on_all, 3)] == [
            (other, 1),
            (stream, 3),
            (stream, 4),
        ]

    def test_watch_after_catches_up_then_goes_live(self) -> None:
        stream, other = self.stream(), self.stream()
        first = self.store.append(stream, events(3))
        self.store.append(other, events(1))
        with self.store.watch(stream, after=1, timeout=WAIT) as watch:
            assert [e.version for e in islice(watch, 2)] == [2, 3]
            self.store.append(stream, events(1, start=3))
            assert next(watch).version == 4
        # for "@all", after is a global position
        with self.store.watch("@all", after=first.position - 1, timeout=WAIT) as watch:
            on_all = _in(watch, stream, other)
            assert [(e.stream, e.version) for e in islice(on_all, 3)] == [
                (stream, 3),
                (other, 1),
                (stream, 4),
            ]
            self.store.append(other, events(1))
            assert [(e.stream, e.version) for e in islice(on_all, 1)] == [(other, 2)]

    @pytest.mark.parametrize("target", ["stream", "@all"])
    def test_no_gap_and_no_duplicate_between_catch_up_and_live(self, target: str) -> None:
        stream = self.stream()
        start = self.store.stream_version("@all")
        stored, live = 1500, 200  # more than a page: the catch-up takes several reads
        self.store.append(stream, events(stored))

        def append_live() -> None:
            for n in range(live):
                self.store.append(stream, events(1, start=stored + n))

        seen: list[int] = []
        writer: _Background | None = None
        watch = self.store.watch(stream if target == "stream" else "@all", after=0, timeout=WAIT)
        with watch:
            for event in _in(watch, stream):
                if event.position <= start:
                    continue
                seen.append(event.data["n"])
                if len(seen) == 10:  # appends race with the rest of the catch-up
                    writer = _Background(append_live)
                if len(seen) == stored + live:
                    break
        assert writer is not None
        writer.result()
        assert seen == list(range(stored + live))

    def test_a_timeout_ends_the_watch_for_good(self) -> None:
        stream = self.stream()
        watch = self.store.watch(stream, timeout=0.05)
        began = time.monotonic()
        assert next(watch, None) is None
        assert 0.04 <= time.monotonic() - began < WAIT
        self.store.append(stream, events(1))
        assert next(watch, None) is None

    def test_the_timeout_counts_from_each_next(self) -> None:
        stream = self.stream()
        watch = self.store.watch(stream, timeout=WAIT)
        self.store.append(stream, events(2))
        assert [e.version for e in islice(watch, 2)] == [1, 2]
        quick = self.store.watch(stream, after=0, timeout=0)
        assert [e.version for e in quick] == [1, 2]  # timeout=0: what is there, then stop

    def test_close_from_another_thread_ends_a_blocked_next(self) -> None:
        watch = self.store.watch(self.stream())
        waiting = _Background(lambda: next(watch, None))
        assert waiting.blocked()
        watch.close()
        assert waiting.result() is None
        watch.close()  # idempotent

    def test_a_with_block_closes_the_watch(self) -> None:
        stream = self.stream()
        with self.store.watch(stream) as watch:
            pass
        self.store.append(stream, events(1))
        assert next(watch, None) is None

    def test_watch_an_empty_or_a_deleted_stream(self) -> None:
        empty, deleted = self.stream(), self.stream()
        self.store.append(deleted, events(3))
        self.store.delete_stream(deleted)
        on_empty = self.store.watch(empty)  # no timeout: only a wake-up ends the wait
        on_deleted = self.store.watch(deleted, timeout=WAIT)
        on_deleted_after_0 = self.store.watch(deleted, after=0, timeout=WAIT)
        waiting = _Background(lambda: next(on_empty))
        assert waiting.blocked()
        self.store.append(empty, events(1))
        self.store.append(deleted, events(1, start=7))
        try:
            assert waiting.result().version == 1
        finally:
            on_empty.close()
        assert [(e.version, e.data) for e in islice(on_deleted, 1)] == [(1, {"n": 7})]
        assert [(e.version, e.data) for e in islice(on_deleted_after_0, 1)] == [(1, {"n": 7})]

    @pytest.mark.parametrize("after", [None, 3])
    def test_a_stream_deleted_while_watched_starts_again_at_1(self, after: int | None) -> None:
        stream = self.stream()
        self.store.append(stream, events(3))
        with self.store.watch(stream, after=after, timeout=WAIT) as watch:
            self.store.append(stream, events(1, start=3))
            assert next(watch).version == 4
            self.store.delete_stream(stream)
            self.store.append(stream, events(6, start=10))  # past where the watch was
            assert [(e.version, e.data["n"]) for e in islice(watch, 6)] == [
                (v, 9 + v) for v in range(1, 7)
            ]

    def test_closing_the_store_ends_its_watches(self) -> None:
        store = self.open_store()
        stream = self.stream()
        watch = store.watch(stream)
        waiting = _Background(lambda: next(watch, None))
        assert waiting.blocked()
        store.close()
        assert waiting.result() is None
        with pytest.raises(StoreError, match="closed"):
            store.watch(stream)
        with pytest.raises(StoreError, match="closed"):
            store.subscribe(self.subscription(), print)

    def test_an_append_wakes_a_blocked_watcher(self) -> None:
        stream = self.stream()
        with self.store.watch(stream) as watch:  # no timeout: only a wake-up ends the wait
            for n in range(3):
                waiting = _Background(lambda: next(watch))
                assert waiting.blocked(0.05)
                self.store.append(stream, events(1, start=n))
                assert waiting.result(5).data == {"n": n}

    def test_idle_watchers_use_almost_no_cpu(self) -> None:
        watches = [self.store.watch(self.stream(), timeout=1.0) for _ in range(3)]
        watches.append(self.store.watch(timeout=1.0))
        began = time.process_time()  # every thread of this process
        waiting = [_Background(lambda w=w: next(w, None)) for w in watches]  # type: ignore[misc]
        for thread in waiting:
            thread.result()
        assert time.process_time() - began < 0.1  # 10 % of a core: a behaviour bound

    def test_an_append_through_another_store_object_reaches_a_watcher(self) -> None:
        self.require_shared_url()
        stream = self.stream()
        other = self.open_store()
        with self.store.watch(stream) as watch:  # no timeout: only a wake-up ends the wait
            waiting = _Background(lambda: next(watch))
            assert waiting.blocked()
            other.append(stream, events(1))
            assert waiting.result(5).version == 1

    def test_an_append_by_another_process_reaches_a_watcher(self) -> None:
        url = self.require_shared_url()
        stream = self.stream()
        on_stream = self.store.watch(stream)  # no timeout: only a wake-up ends the wait
        on_all = self.store.watch("@all")
        waiting = _Background(lambda: [e.data for e in islice(on_stream, 2)])
        waiting_all = _Background(lambda: [e.data for e in islice(_in(on_all, stream), 2)])
        context = multiprocessing.get_context("spawn")
        process = context.Process(target=_process_main, args=(url, stream, 2, 0))
        process.start()
        try:
            got, got_all = waiting.result(60), waiting_all.result(60)
        finally:
            on_stream.close()
            on_all.close()
            process.join(60)
        assert process.exitcode == 0
        assert got == got_all == [{"worker": 0, "n": 0}, {"worker": 0, "n": 1}]

    @pytest.mark.parametrize(
        ("args", "kwargs", "error"),
        [
            ((1,), {}, TypeError),
            (("",), {}, ConfigError),
            (("@mine",), {}, ConfigError),
            ((), {"after": -1}, ConfigError),
            ((), {"after": "1"}, TypeError),
            ((), {"timeout": -1}, ConfigError),
            ((), {"timeout": float("nan")}, ConfigError),
            ((), {"timeout": "1"}, TypeError),
            ((), {"timeout": True}, TypeError),
        ],
    )
    def test_bad_watch_arguments(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception]
    ) -> None:
        with pytest.raises(error):
            self.store.watch(*args, **kwargs)

    # ------------------------------------------------------------ subscriptions

    def test_run_pending_handles_everything_in_order_and_keeps_the_position(self) -> None:
        stream, name = self.stream(), self.subscription()
        self.store.append(stream, events(3))
        seen: list[RecordedEvent] = []
        subscription = self.store.subscribe(name, seen.append, stream)
        assert isinstance(subscription, Subscription)
        assert (subscription.name, subscription.stream, subscription.position) == (name, stream, 0)
        assert subscription.run_pending() == 3
        assert seen == list(self.store.read(stream))
        assert subscription.position == 3
        assert subscription.run_pending() == 0
        self.store.append(stream, events(2, start=3))
        assert subscription.run_pending() == 2
        assert [e.version for e in seen] == [1, 2, 3, 4, 5]
        assert subscription.position == 5

    def test_subscribing_again_resumes_after_the_last_event_handled(self) -> None:
        stream, name = self.stream(), self.subscription()
        self.store.append(stream, events(3))
        handled: list[RecordedEvent] = []
        assert self.store.subscribe(name, handled.append, stream).run_pending() == 3
        seen: list[int] = []
        again = self.store.subscribe(name, lambda e: seen.append(e.version), stream)
        assert again.position == 3
        self.store.append(stream, events(2, start=3))
        assert again.run_pending() == 2
        assert seen == [4, 5]

    def test_a_subscription_resumes_in_a_new_store_object(self) -> None:
        self.require_shared_url()
        stream, name = self.stream(), self.subscription()
        first = self.open_store()
        first.append(stream, events(3))
        seen: list[int] = []
        assert first.subscribe(name, lambda e: seen.append(e.data["n"]), stream).run_pending() == 3
        first.close()  # a restart
        store = self.open_store()
        store.append(stream, events(2, start=3))
        subscription = store.subscribe(name, lambda e: seen.append(e.data["n"]), stream)
        assert subscription.position == 3
        assert subscription.run_pending() == 2
        assert seen == [0, 1, 2, 3, 4]

    def test_an_at_all_subscription_keeps_a_global_position(self) -> None:
        a, b, name = self.stream(), self.stream(), self.subscription()
        self.store.append(a, events(1))
        last = self.store.append(b, events(2))
        seen: list[tuple[str, int]] = []
        subscription = self.store.subscribe(name, lambda e: seen.append((e.stream, e.version)))
        assert subscription.stream == "@all"
        subscription.run_pending()
        assert [s for s in seen if s[0] in (a, b)] == [(a, 1), (b, 1), (b, 2)]
        assert subscription.position == last.position
        later = self.store.append(a, events(1))
        assert subscription.run_pending() == 1
        assert seen[-1] == (a, 2)
        assert self.store.subscribe(name, print, "@all").position == later.position

    def test_a_handler_that_raises_stops_and_its_event_comes_again(self) -> None:
        stream, name = self.stream(), self.subscription()
        self.store.append(stream, events(3))
        calls: list[int] = []
        failing = {2}

        def handler(event: RecordedEvent) -> None:
            calls.append(event.version)
            if event.version in failing:
                raise _Boom(event.version)

        subscription = self.store.subscribe(name, handler, stream)
        with pytest.raises(_Boom):
            subscription.run_pending()
        assert calls == [1, 2]
        assert subscription.position == 1
        with pytest.raises(_Boom):
            subscription.run()  # run() stops the same way
        assert calls == [1, 2, 2]
        again = self.store.subscribe(name, handler, stream)
        assert again.position == 1
        failing.clear()
        assert again.run_pending() == 2
        assert calls == [1, 2, 2, 2, 3]
        assert again.position == 3

    def test_a_name_follows_one_stream(self) -> None:
        stream, name = self.stream(), self.subscription()
        self.store.subscribe(name, print, stream)
        with pytest.raises(ConfigError, match=name):
            self.store.subscribe(name, print, self.stream())
        with pytest.raises(ConfigError, match="another name"):
            self.store.subscribe(name, print)  # "@all"
        assert self.store.subscribe(name, print, stream).position == 0

    @pytest.mark.parametrize(
        ("args", "error"),
        [
            (("", print), ConfigError),
            ((1, print), TypeError),
            (("name", None), TypeError),
            (("name", print, "@mine"), ConfigError),
            (("name", print, 1), TypeError),
        ],
    )
    def test_bad_subscribe_arguments(self, args: tuple[Any, ...], error: type[Exception]) -> None:
        with pytest.raises(error):
            self.store.subscribe(*args)

    def test_run_catches_up_then_handles_live_events_until_stop(self) -> None:
        stream, name = self.stream(), self.subscription()
        self.store.append(stream, events(2))
        seen: list[int] = []
        five = threading.Event()

        def handler(event: RecordedEvent) -> None:
            seen.append(event.version)
            if len(seen) == 5:
                five.set()

        subscription = self.store.subscribe(name, handler, stream)
        running = _Background(subscription.run)
        for n in range(3):
            self.store.append(stream, events(1, start=2 + n))
        assert five.wait(WAIT)
        assert running.blocked(0.05)
        subscription.stop()
        running.result()
        assert seen == [1, 2, 3, 4, 5]
        assert subscription.position == 5
        assert self.store.subscribe(name, handler, stream).position == 5

    def test_stop_from_a_handler_and_a_stopped_subscription(self) -> None:
        stream, name = self.stream(), self.subscription()
        self.store.append(stream, events(5))
        seen: list[int] = []

        def handler(event: RecordedEvent) -> None:
            seen.append(event.version)
            if event.version == 2:
                subscription.stop()

        subscription = self.store.subscribe(name, handler, stream)
        subscription.run()  # returns after the handler that stopped it
        assert seen == [1, 2]
        assert subscription.position == 2  # that event was handled
        subscription.run()
        assert subscription.run_pending() == 0
        assert seen == [1, 2]
        stopped_first = self.store.subscribe(name, handler, stream)
        stopped_first.stop()
        stopped_first.run()  # stop() before run() is kept
        assert seen == [1, 2]

    def test_closing_the_store_ends_a_running_subscription(self) -> None:
        store = self.open_store()
        stream = self.stream()
        store.append(stream, events(1))
        handled = threading.Event()
        subscription = store.subscribe(self.subscription(), lambda e: handled.set(), stream)
        running = _Background(subscription.run)
        assert handled.wait(WAIT)
        store.close()
        running.result()
        assert subscription.position == 1
        with pytest.raises(StoreError, match="closed"):
            subscription.run_pending()

    @pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="POSIX signals")
    def test_stop_from_a_signal_handler(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            pytest.skip("signal handlers run in the main thread")
        stream = self.stream()
        self.store.append(stream, events(1))
        main = threading.main_thread().ident
        assert main is not None
        killer: list[_Background] = []

        def handler(event: RecordedEvent) -> None:  # once blocked, run() gets a signal
            killer.append(_Background(lambda: signal.pthread_kill(main, signal.SIGUSR1)))

        subscription = self.store.subscribe(self.subscription(), handler, stream)
        previous = signal.signal(signal.SIGUSR1, lambda *_: subscription.stop())
        try:
            subscription.run()
        finally:
            signal.signal(signal.SIGUSR1, previous)
        killer[0].result()
        assert subscription.position == 1

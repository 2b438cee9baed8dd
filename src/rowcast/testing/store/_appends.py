"""What appends promise: versions, expected versions, ids and idempotency."""

from __future__ import annotations

import datetime as dt
import pickle
import time
import uuid
from decimal import Decimal

import pytest

from rowcast.errors import DuplicateEventId, StoreError, WrongExpectedVersion
from rowcast.store import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    EventStore,
    NewEvent,
    RecordedEvent,
)

from ._base import RICH_DATA, StoreContractBase, events


class AppendTests(StoreContractBase):
    """Appending: versions from 1, what a recorded event carries, expected versions, ids."""

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

    def test_append_streams_appends_each_as_append_does(self) -> None:
        a, b, c = self.stream(), self.stream(), self.stream()
        self.store.append(b, events(2))
        first, second = events(2), events(3, start=2)
        results = self.store.append_streams([(a, first), (b, second), (c, events(1))])
        assert [r.version for r in results] == [2, 5, 1]
        assert results[0].position < results[1].position < results[2].position
        assert [e.data["n"] for e in self.store.read(b)] == [0, 1, 2, 3, 4]
        assert [e.position for e in self.store.read(b)][-1] == results[1].position
        # a retry (of the lot, or with a stream given twice) is answered as append answers
        again = [(a, first), (b, second), (a, events(1, start=9))]
        assert self.store.append_streams(again)[:2] == results[:2]
        assert [e.data["n"] for e in self.store.read(a)] == [0, 1, 9]
        assert self.store.append_streams([]) == []

    def test_append_streams_again_with_new_streams_appends_only_those(self) -> None:
        a, b, c = self.stream(), self.stream(), self.stream()
        first, second, third = events(1), events(2, start=1), events(1, start=3)
        results = self.store.append_streams([(a, first), (b, second)])
        again = self.store.append_streams([(a, first), (c, third), (b, second)])
        assert again[0] == results[0]
        assert again[2] == results[1]
        assert again[1].version == 1
        assert again[1].position > results[1].position
        assert [e.data["n"] for e in self.store.read(c)] == [3]
        # some of a stream's ids stored, not as that append: refused as append refuses
        with pytest.raises(DuplicateEventId):
            self.store.append_streams([(a, events(1, start=7)), (b, [second[1], *events(1)])])
        assert [e.data["n"] for e in self.store.read(b)] == [1, 2]

    def test_append_streams_checks_everything_first(self) -> None:
        a = self.stream()
        with pytest.raises(TypeError):
            self.store.append_streams([(a, events(1)), (self.stream(), [object()])])  # type: ignore[list-item]
        event = NewEvent("t", 1)
        with pytest.raises(DuplicateEventId):
            self.store.append_streams([(a, [event, event])])
        assert self.store.stream_version(a) == 0

"""What async appends promise: versions, expected versions, ids, the order of calls."""

from __future__ import annotations

import asyncio

import pytest

from rowcast.errors import ConfigError, DuplicateEventId, WrongExpectedVersion
from rowcast.store import ANY, NO_STREAM, STREAM_EXISTS, AppendResult, NewEvent, RecordedEvent
from rowcast.store.aio import AsyncEventStore
from rowcast.testing.store import RICH_DATA, events

from ._base import AsyncStoreContractBase, collect


class AsyncAppendTests(AsyncStoreContractBase):
    """Appending through the async API, and calls kept in the order they were made."""

    def test_is_an_async_event_store(self) -> None:
        async def body(store: AsyncEventStore) -> None:
            assert isinstance(store, AsyncEventStore)
            assert store.url
            assert not store.closed

        self.run(body)

    def test_a_stream_never_written_is_version_0_and_empty(self) -> None:
        async def body(store: AsyncEventStore) -> None:
            stream = self.stream()
            assert await store.stream_version(stream) == 0
            assert await collect(store.read(stream)) == []
            assert await collect(store.read(stream, backwards=True)) == []

        self.run(body)

    def test_versions_start_at_1_and_follow_on(self) -> None:
        async def body(store: AsyncEventStore) -> None:
            stream = self.stream()
            first = await store.append(stream, events(3))
            second = await store.append(stream, events(2, start=3))
            assert isinstance(first, AppendResult)
            assert (first.version, second.version) == (3, 5)
            assert second.position == first.position + 2
            recorded = await collect(store.read(stream))
            assert [e.version for e in recorded] == [1, 2, 3, 4, 5]
            assert [e.data for e in recorded] == [{"n": n} for n in range(5)]
            assert await store.stream_version(stream) == 5

        self.run(body)

    def test_recorded_events_carry_everything_and_round_trip(self) -> None:
        async def body(store: AsyncEventStore) -> None:
            stream = self.stream()
            event = NewEvent("rich", RICH_DATA, {"meta": RICH_DATA})
            result = await store.append(stream, [event])
            (recorded,) = await collect(store.read(stream))
            assert isinstance(recorded, RecordedEvent)
            assert (recorded.stream, recorded.version, recorded.position) == (
                stream,
                1,
                result.position,
            )
            assert (recorded.id, recorded.type) == (event.id, "rich")
            assert recorded.data == RICH_DATA
            assert recorded.metadata == {"meta": RICH_DATA}

        self.run(body)

    # ------------------------------------------------------------ appends

    def test_expected_versions(self) -> None:
        async def body(store: AsyncEventStore) -> None:
            stream = self.stream()
            with pytest.raises(WrongExpectedVersion) as caught:
                await store.append(stream, events(1), expected_version=STREAM_EXISTS)
            assert (caught.value.expected, caught.value.actual) == (STREAM_EXISTS, 0)
            assert (await store.append(stream, events(2), expected_version=NO_STREAM)).version == 2
            assert (await store.append(stream, events(1), expected_version=2)).version == 3
            assert (await store.append(stream, events(1), expected_version=ANY)).version == 4
            assert (await store.append(stream, events(1), STREAM_EXISTS)).version == 5
            for wrong in (0, 3, NO_STREAM):
                with pytest.raises(WrongExpectedVersion) as caught:
                    await store.append(stream, events(1), expected_version=wrong)
                error = caught.value
                assert (error.stream, error.expected, error.actual) == (stream, wrong, 5)
            assert await store.stream_version(stream) == 5

        self.run(body)

    def test_a_retried_batch_returns_the_first_result_even_when_stale(self) -> None:
        async def body(store: AsyncEventStore) -> None:
            stream = self.stream()
            batch = events(3)
            first = await store.append(stream, batch, expected_version=NO_STREAM)
            await store.append(stream, events(1, start=3))  # someone else, meanwhile
            assert await store.append(stream, batch, expected_version=NO_STREAM) == first
            assert await store.append(stream, batch) == first
            assert await store.stream_version(stream) == 4

        self.run(body)

    def test_a_partial_overlap_is_a_duplicate_and_appends_nothing(self) -> None:
        async def body(store: AsyncEventStore) -> None:
            stream = self.stream()
            batch = events(3)
            await store.append(stream, batch)
            with pytest.raises(DuplicateEventId) as caught:
                await store.append(stream, [*batch[:2], *events(1)])
            assert caught.value.stream == stream
            assert await store.stream_version(stream) == 3

        self.run(body)

    def test_bad_appends(self) -> None:
        async def body(store: AsyncEventStore) -> None:
            stream = self.stream()
            with pytest.raises(ConfigError, match="at least one event"):
                await store.append(stream, [])
            with pytest.raises(TypeError, match="NewEvent"):
                await store.append(stream, [{"type": "t"}])  # type: ignore[list-item]
            with pytest.raises(ConfigError, match="reserved"):
                await store.append("@all", events(1))
            with pytest.raises(TypeError, match="object"):
                await store.append(stream, [NewEvent("ok", 1), NewEvent("bad", object())])
            assert await store.stream_version(stream) == 0

        self.run(body)

    def test_calls_keep_the_order_they_were_made_in(self) -> None:
        async def body(store: AsyncEventStore) -> None:
            stream = self.stream()
            results = await asyncio.gather(
                *(store.append(stream, [NewEvent("n", n)]) for n in range(50))
            )
            assert [r.version for r in results] == list(range(1, 51))
            assert [e.data async for e in store.read(stream)] == list(range(50))

        self.run(body)

    def test_tasks_appending_with_expected_versions_lose_nothing(self) -> None:
        async def body(store: AsyncEventStore) -> None:
            stream = self.stream()
            workers, each = 5, 10

            async def work(worker: int) -> None:
                for n in range(each):
                    event = NewEvent("counted", {"worker": worker, "n": n})
                    while True:
                        version = await store.stream_version(stream)
                        try:
                            await store.append(stream, [event], expected_version=version)
                            break
                        except WrongExpectedVersion:
                            continue

            await asyncio.gather(*(work(w) for w in range(workers)))
            recorded = await collect(store.read(stream))
            assert [e.version for e in recorded] == list(range(1, workers * each + 1))
            for w in range(workers):
                assert [e.data["n"] for e in recorded if e.data["worker"] == w] == list(range(each))

        self.run(body)

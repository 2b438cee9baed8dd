"""`AsyncEventStoreContract`: what every `rowcast.store.aio.AsyncEventStore` must do.

The async twin of `rowcast.testing.store.EventStoreContract`: the core
semantics again, through the async API, plus what only the async side has
(order of calls, a loop never blocked, watches and subscriptions ended by
``aclose`` or cancellation). Subclass it and override `make_store` (and
`shared_url` when another instance can open the same data)::

    class TestAsyncSQLiteFile(AsyncEventStoreContract):
        @pytest.fixture(autouse=True)
        def _dir(self, tmp_path):
            self.url = f"sqlite:///{tmp_path}/events.db"

        def make_store(self):
            return AsyncEventStore(self.url)

        def shared_url(self):
            return self.url

Each test is a plain function that runs its body with `asyncio.run` (no
pytest plugin needed): the body gets a fresh store, and `open_store` makes
more, all closed when the body ends. Each body has `TIMEOUT` seconds.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine
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
)
from rowcast.store.aio import PAGE, AsyncEventStore

from .store import RICH_DATA, events

__all__ = ["AsyncEventStoreContract"]

Body = Callable[[AsyncEventStore], Coroutine[Any, Any, None]]

needs_watch = pytest.mark.skipif(
    not hasattr(EventStore, "watch"), reason="EventStore.watch has not landed yet"
)
needs_subscribe = pytest.mark.skipif(
    not hasattr(EventStore, "subscribe"), reason="EventStore.subscribe has not landed yet"
)


async def collect(source: Any) -> list[RecordedEvent]:
    """Every event of an async iterator, in a list."""
    return [event async for event in source]


class AsyncEventStoreContract:
    """The behaviour every async event store shares; see `rowcast.store.aio`."""

    TIMEOUT = 20.0  #: seconds each test body may take

    def make_store(self) -> AsyncEventStore:
        """A store of the backend under test (not yet entered)."""
        raise NotImplementedError

    def shared_url(self) -> str | None:
        """A URL that opens the same data as `make_store`; None when it lives in one instance."""
        return None

    def run(self, body: Body) -> None:
        """Run `body(store)` in a fresh event loop, then close every store it opened."""
        self._opened: list[AsyncEventStore] = []

        async def main() -> None:
            try:
                async with self.open_store() as store:
                    await asyncio.wait_for(body(store), self.TIMEOUT)
            finally:
                for store in self._opened:
                    await store.aclose()

        asyncio.run(main())

    def open_store(self) -> AsyncEventStore:
        """Another store of the backend (`make_store`), closed when the body ends."""
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

    # ------------------------------------------------------------ basics

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

    # ------------------------------------------------------------ reading

    def test_after_limit_and_backwards(self) -> None:
        async def body(store: AsyncEventStore) -> None:
            stream = self.stream()
            await store.append(stream, events(5))
            assert [e.version async for e in store.read(stream, after=2)] == [3, 4, 5]
            assert await collect(store.read(stream, after=5)) == []
            assert [e.version async for e in store.read(stream, limit=2)] == [1, 2]
            assert await collect(store.read(stream, limit=0)) == []
            back = [e.version async for e in store.read(stream, backwards=True, limit=2)]
            assert back == [5, 4]

        self.run(body)

    def test_reads_longer_than_a_page(self) -> None:
        async def body(store: AsyncEventStore) -> None:
            stream = self.stream()
            count = 2 * PAGE + 500
            await store.append(stream, events(count))
            versions = [e.version async for e in store.read(stream)]
            assert versions == list(range(1, count + 1))
            backwards = [e.version async for e in store.read(stream, backwards=True)]
            assert backwards == list(range(count, 0, -1))
            assert len(await collect(store.read(stream, limit=PAGE))) == PAGE
            assert len(await collect(store.read(stream, limit=PAGE + 1))) == PAGE + 1

        self.run(body)

    def test_a_long_read_does_not_block_the_loop(self) -> None:
        async def body(store: AsyncEventStore) -> None:
            stream = self.stream()
            await store.append(stream, events(3 * PAGE))
            ticks = 0
            done = asyncio.Event()

            async def ticker() -> None:
                nonlocal ticks
                while not done.is_set():
                    ticks += 1
                    await asyncio.sleep(0)

            task = asyncio.create_task(ticker())
            seen = 0
            async for _ in store.read(stream):
                seen += 1
            done.set()
            await task
            assert seen == 3 * PAGE
            assert ticks >= 3  # the ticker ran while pages were fetched

        self.run(body)

    def test_read_all_is_one_global_order(self) -> None:
        async def body(store: AsyncEventStore) -> None:
            a, b = self.stream(), self.stream()
            start = await store.stream_version("@all")
            await store.append(a, events(2, "a"))
            await store.append(b, events(1, "b"))
            last = await store.append(a, events(1, "a", start=2))
            recorded = await collect(store.read_all(after=start))
            assert [(e.stream, e.version) for e in recorded] == [(a, 1), (a, 2), (b, 1), (a, 3)]
            positions = [e.position for e in recorded]
            assert positions == sorted(set(positions))
            assert positions[-1] == last.position == await store.stream_version("@all")
            assert await collect(store.read("@all", after=start)) == recorded
            backwards = await collect(store.read_all(after=start, backwards=True))
            assert backwards == recorded[::-1]

        self.run(body)

    def test_bad_read_arguments_raise_at_the_call(self) -> None:
        async def body(store: AsyncEventStore) -> None:
            with pytest.raises(ConfigError):
                store.read(self.stream(), after=-1)
            with pytest.raises(TypeError):
                store.read_all(limit=1.5)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="stream name"):
                store.read(None)  # type: ignore[arg-type]
            with pytest.raises(ConfigError, match="@all"):
                store.read("@mine")

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

    # ------------------------------------------------------------ deletes and snapshots

    def test_streams_lists_each_stream_with_version_and_last_position(self) -> None:
        async def body(store: AsyncEventStore) -> None:
            one = self.stream()
            await store.append(one, events(2))
            last = await store.append(one, events(1))
            assert (await store.streams())[one] == (3, last.position)

        self.run(body)

    def test_delete_stream_removes_it_and_appends_start_again_at_1(self) -> None:
        async def body(store: AsyncEventStore) -> None:
            stream = self.stream()
            first = await store.append(stream, events(3))
            await store.save_snapshot(stream, {"s": 1}, 3)
            await store.delete_stream(stream)
            await store.delete_stream(self.stream())  # nothing there: a no-op
            assert await store.stream_version(stream) == 0
            assert await collect(store.read(stream)) == []
            assert await store.load_snapshot(stream) is None
            again = await store.append(stream, events(1), expected_version=NO_STREAM)
            assert again.version == 1
            assert again.position > first.position

        self.run(body)

    @pytest.mark.parametrize(
        "state",
        [b"\x00\x01 raw", {"count": 3, **RICH_DATA}, [1, "two"], None],
        ids=["bytes", "rich", "list", "none"],
    )
    def test_snapshots_round_trip_and_the_latest_wins(self, state: Any) -> None:
        async def body(store: AsyncEventStore) -> None:
            stream = self.stream()
            assert await store.load_snapshot(stream) is None
            await store.save_snapshot(stream, state, 5)
            await store.save_snapshot(stream, "older", 3)  # a slower saver, late
            snapshot = await store.load_snapshot(stream)
            assert isinstance(snapshot, Snapshot)
            assert (snapshot.stream, snapshot.name, snapshot.version) == (stream, "default", 5)
            assert snapshot.state == state
            assert type(snapshot.state) is type(state)
            await store.save_snapshot(stream, "other", 1, name="other")
            other = await store.load_snapshot(stream, "other")
            assert other is not None
            assert other.state == "other"

        self.run(body)

    def test_snapshots_of_at_all_are_keyed_by_position(self) -> None:
        async def body(store: AsyncEventStore) -> None:
            name = f"projection-{uuid.uuid4().hex}"
            result = await store.append(self.stream(), events(2))
            await store.save_snapshot("@all", {"seen": 2}, result.position, name=name)
            snapshot = await store.load_snapshot("@all", name)
            assert snapshot is not None
            assert (snapshot.version, snapshot.state) == (result.position, {"seen": 2})

        self.run(body)

    # ------------------------------------------------------------ closing

    def test_aclose_is_idempotent_and_final(self) -> None:
        async def body(_: AsyncEventStore) -> None:
            store = self.open_store()
            stream = self.stream()
            await store.append(stream, events(1))
            reader = store.read(stream)
            await store.aclose()
            await store.aclose()
            assert store.closed
            assert "closed" in repr(store)
            with pytest.raises(StoreError, match="closed"):
                await store.append(stream, events(1))
            with pytest.raises(StoreError, match="closed"):
                store.read(stream)
            with pytest.raises(StoreError, match="closed"):
                await reader.__anext__()  # made before the close, consumed after
            with pytest.raises(StoreError, match="closed"):
                await store.stream_version(stream)
            with pytest.raises(StoreError, match="closed"):
                await store.load_snapshot(stream)
            with pytest.raises(StoreError, match="closed"):
                store.watch(stream)

        self.run(body)

    def test_async_with_closes(self) -> None:
        async def body(_: AsyncEventStore) -> None:
            async with self.open_store() as store:
                assert not store.closed
            assert store.closed

        self.run(body)

    def test_a_new_instance_sees_what_another_appended(self) -> None:
        url = self.require_shared_url()

        async def body(store: AsyncEventStore) -> None:
            stream = self.stream()
            await store.append(stream, events(2))
            await store.save_snapshot(stream, b"state", 2)
            async with AsyncEventStore(url) as other:
                assert await other.stream_version(stream) == 2
                assert [e.data async for e in other.read(stream)] == [{"n": 0}, {"n": 1}]
                snapshot = await other.load_snapshot(stream)
                assert snapshot is not None
                assert snapshot.state == b"state"

        self.run(body)

    # ------------------------------------------------------------ watch

    @needs_watch
    def test_watch_from_now_replays_nothing_then_goes_live(self) -> None:
        async def body(store: AsyncEventStore) -> None:
            stream = self.stream()
            await store.append(stream, events(2))
            async with store.watch(stream) as watch:
                await store.append(stream, events(2, start=2))
                seen = [await anext(watch), await anext(watch)]
            assert [e.data["n"] for e in seen] == [2, 3]
            assert watch.closed

        self.run(body)

    @needs_watch
    def test_watch_catches_up_then_goes_live_without_gap_or_duplicate(self) -> None:
        async def body(store: AsyncEventStore) -> None:
            stream = self.stream()
            await store.append(stream, events(5))
            seen: list[int] = []

            async def consume() -> None:
                async with store.watch(stream, after=2) as watch:
                    async for event in watch:
                        seen.append(event.version)
                        if event.version == 10:
                            return

            task = asyncio.create_task(consume())
            for n in range(5, 10):
                await store.append(stream, events(1, start=n))
                await asyncio.sleep(0.001)
            await task
            assert seen == list(range(3, 11))

        self.run(body)

    @needs_watch
    def test_watch_at_all_sees_every_stream_in_order(self) -> None:
        async def body(store: AsyncEventStore) -> None:
            a, b = self.stream(), self.stream()
            async with store.watch() as watch:
                await store.append(a, events(1))
                await store.append(b, events(1))
                first, second = await anext(watch), await anext(watch)
            assert [(first.stream, second.stream)] == [(a, b)]
            assert first.position < second.position

        self.run(body)

    @needs_watch
    def test_aclose_ends_a_watch_another_task_waits_on(self) -> None:
        async def body(store: AsyncEventStore) -> None:
            watch = store.watch(self.stream())
            task = asyncio.create_task(collect(watch))
            await asyncio.sleep(0.05)  # the task is blocked in the watch by now
            await watch.aclose()
            assert await asyncio.wait_for(task, 5) == []
            await watch.aclose()  # idempotent
            assert await collect(watch) == []

        self.run(body)

    @needs_watch
    def test_cancelling_the_waiting_task_closes_the_watch(self) -> None:
        async def body(store: AsyncEventStore) -> None:
            watch = store.watch(self.stream())
            task = asyncio.create_task(collect(watch))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert watch.closed

        self.run(body)

    @needs_watch
    def test_closing_the_store_ends_its_watches(self) -> None:
        async def body(_: AsyncEventStore) -> None:
            store = self.open_store()
            watch = store.watch(self.stream())
            task = asyncio.create_task(collect(watch))
            await asyncio.sleep(0.05)
            await store.aclose()
            assert await asyncio.wait_for(task, 5) == []
            assert watch.closed

        self.run(body)

    @needs_watch
    def test_a_watch_with_a_timeout_ends_when_idle(self) -> None:
        async def body(store: AsyncEventStore) -> None:
            stream = self.stream()
            await store.append(stream, events(2))
            watch = store.watch(stream, after=0, timeout=0.1)
            assert [e.version async for e in watch] == [1, 2]
            assert watch.closed

        self.run(body)

    @needs_watch
    def test_a_watch_sees_what_another_instance_appends(self) -> None:
        url = self.require_shared_url()

        async def body(store: AsyncEventStore) -> None:
            stream = self.stream()
            async with store.watch(stream) as watch, AsyncEventStore(url) as other:
                await other.append(stream, events(1))
                event = await asyncio.wait_for(anext(watch), 5)
            assert event.data == {"n": 0}

        self.run(body)

    def test_a_watch_is_live_once_async_with_returns(self) -> None:
        url = self.require_shared_url()

        async def body(store: AsyncEventStore) -> None:
            stream = self.stream()
            async with AsyncEventStore(url) as other:
                # the store's thread is busy: the watch opens only after this append
                busy = asyncio.ensure_future(store.append(self.stream(), events(20_000)))
                async with store.watch(stream) as watch:
                    await other.append(stream, events(1))
                    event = await asyncio.wait_for(anext(watch), 10)
                await busy
            assert event.data == {"n": 0}

        self.run(body)

    # ------------------------------------------------------------ subscribe

    @needs_subscribe
    def test_a_subscription_with_a_sync_handler_resumes_where_it_stopped(self) -> None:
        async def body(store: AsyncEventStore) -> None:
            stream, name = self.stream(), f"sub-{uuid.uuid4().hex}"
            await store.append(stream, events(3))
            seen: list[int] = []
            subscription = await store.subscribe(name, lambda e: seen.append(e.version), stream)
            assert (subscription.name, subscription.stream) == (name, stream)
            assert await subscription.run_pending() == 3
            assert subscription.position == 3
            await store.append(stream, events(2, start=3))
            again = await store.subscribe(name, lambda e: seen.append(e.version), stream)
            assert await again.run_pending() == 2  # resumes after 3
            assert await again.run_pending() == 0
            assert seen == [1, 2, 3, 4, 5]

        self.run(body)

    @needs_subscribe
    def test_an_async_handler_runs_on_the_loop_and_may_use_the_store(self) -> None:
        async def body(store: AsyncEventStore) -> None:
            stream, copy = self.stream(), self.stream()
            loop = asyncio.get_running_loop()

            async def handler(event: RecordedEvent) -> None:
                assert asyncio.get_running_loop() is loop
                await store.append(copy, [NewEvent("copied", event.data)])

            subscription = await store.subscribe(f"sub-{uuid.uuid4().hex}", handler, stream)
            task = asyncio.create_task(subscription.run())
            await store.append(stream, events(3))
            while await store.stream_version(copy) < 3:
                await asyncio.sleep(0.01)
            subscription.stop()
            await asyncio.wait_for(task, 5)
            assert [e.data async for e in store.read(copy)] == [{"n": n} for n in range(3)]
            assert subscription.position == 3

        self.run(body)

    @needs_subscribe
    def test_a_handler_error_ends_the_run_and_the_event_comes_again(self) -> None:
        async def body(store: AsyncEventStore) -> None:
            stream, name = self.stream(), f"sub-{uuid.uuid4().hex}"
            await store.append(stream, events(2))

            async def fail(event: RecordedEvent) -> None:
                if event.version == 2:
                    raise RuntimeError("boom")

            subscription = await store.subscribe(name, fail, stream)
            with pytest.raises(RuntimeError, match="boom"):
                await subscription.run_pending()
            seen: list[int] = []
            again = await store.subscribe(name, lambda e: seen.append(e.version), stream)
            await again.run_pending()
            assert seen == [2]  # at least once: 1 was handled, 2 comes again

        self.run(body)

    @needs_subscribe
    def test_cancelling_run_stops_the_subscription(self) -> None:
        async def body(store: AsyncEventStore) -> None:
            subscription = await store.subscribe(
                f"sub-{uuid.uuid4().hex}", lambda e: None, self.stream()
            )
            task = asyncio.create_task(subscription.run())
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        self.run(body)

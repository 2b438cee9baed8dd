"""What an async `watch` promises: catch up, then live, ended by aclose or cancellation."""

from __future__ import annotations

import asyncio

import pytest

from rowcast.store.aio import AsyncEventStore
from rowcast.testing.store import events

from ._base import AsyncStoreContractBase, collect


class AsyncWatchTests(AsyncStoreContractBase):
    """Watching a stream or ``@all`` from a task."""

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

    def test_a_watch_with_a_timeout_ends_when_idle(self) -> None:
        async def body(store: AsyncEventStore) -> None:
            stream = self.stream()
            await store.append(stream, events(2))
            watch = store.watch(stream, after=0, timeout=0.1)
            assert [e.version async for e in watch] == [1, 2]
            assert watch.closed

        self.run(body)

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

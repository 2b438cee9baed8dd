"""What an async `subscribe` promises: sync or async handlers, resumed where they stopped."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from rowcast.store import NewEvent, RecordedEvent
from rowcast.store.aio import AsyncEventStore
from rowcast.testing.store import events

from ._base import AsyncStoreContractBase


class AsyncSubscriptionTests(AsyncStoreContractBase):
    """Subscriptions through the async API: run_pending, run, stop and cancellation."""

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

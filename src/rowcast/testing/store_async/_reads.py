"""What async reads promise: after, limit, backwards, pages, a loop never blocked."""

from __future__ import annotations

import asyncio

import pytest

from rowcast.errors import ConfigError
from rowcast.store.aio import PAGE, AsyncEventStore
from rowcast.testing.store import events

from ._base import AsyncStoreContractBase, collect


class AsyncReadTests(AsyncStoreContractBase):
    """Reading a stream and the global order through the async API."""

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

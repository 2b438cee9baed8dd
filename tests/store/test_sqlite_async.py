"""The async SQLite event store: the async contract on a file and in memory, and its own ways."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from rowcast.errors import ConfigError
from rowcast.store import EventStore, NewEvent
from rowcast.store.aio import AsyncEventStore
from rowcast.testing.store_async import AsyncEventStoreContract


class TestAsyncSQLiteFile(AsyncEventStoreContract):
    @pytest.fixture(autouse=True)
    def _dir(self, tmp_path: Path) -> None:
        self.url = f"sqlite:///{tmp_path}/events.db"

    def make_store(self) -> AsyncEventStore:
        return AsyncEventStore(self.url)

    def shared_url(self) -> str:
        return self.url


class TestAsyncSQLiteMemory(AsyncEventStoreContract):
    def make_store(self) -> AsyncEventStore:
        return AsyncEventStore("sqlite:///:memory:")


class TestAsyncMemory(AsyncEventStoreContract):  # the reference backend, behind the same twin
    def make_store(self) -> AsyncEventStore:
        return AsyncEventStore("memory://")


def test_a_bad_url_raises_at_async_with_and_at_every_call() -> None:
    async def main() -> None:
        store = AsyncEventStore("mysql://root@localhost/events")  # no I/O yet
        with pytest.raises(ConfigError, match=r"must start with .*sqlite://"):
            await store.stream_version("s")
        with pytest.raises(ConfigError, match=r"must start with .*sqlite://"):
            async with store:
                pass  # pragma: no cover
        assert store.closed

    asyncio.run(main())


def test_a_url_that_is_not_a_str_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="URL"):
        AsyncEventStore(42)  # type: ignore[arg-type]


def test_options_reach_the_backend(tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncEventStore(f"sqlite:///{tmp_path}/e.db", timeout=0.5) as store:
            await store.append("s", [NewEvent("t", 1)])
            sync = store._opening.result()
            assert sync._timeout == 0.5  # type: ignore[attr-defined]

    asyncio.run(main())


def test_the_sync_store_sees_what_the_async_one_appended(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/events.db"

    async def main() -> None:
        async with AsyncEventStore(url) as store:
            await store.append("s", [NewEvent("t", {"n": 1})])

    asyncio.run(main())
    with EventStore(url) as sync:
        assert [e.data for e in sync.read("s")] == [{"n": 1}]


def test_no_thread_is_left_behind() -> None:
    before = set(threading.enumerate())

    async def main() -> None:
        async with AsyncEventStore("sqlite://") as store:
            await store.append("s", [NewEvent("t", 1)])
            if hasattr(EventStore, "watch"):
                watch = store.watch("s")
                task = asyncio.create_task(anext(watch))
                await asyncio.sleep(0.02)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

    asyncio.run(main())
    for thread in set(threading.enumerate()) - before:
        thread.join(2)
        assert not thread.is_alive(), thread.name


def test_repr() -> None:
    store = AsyncEventStore("sqlite://")
    assert repr(store) == "<AsyncEventStore 'sqlite://'>"
    asyncio.run(store.aclose())
    assert repr(store) == "<AsyncEventStore 'sqlite://' closed>"

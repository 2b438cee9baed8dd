"""The async PostgreSQL event store: the async contract on the real server, and its own ways.

One schema for this run (``rc_store_<random>``), dropped at the end.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from rowcast.errors import StoreError
from rowcast.store import NewEvent
from rowcast.store.aio import AsyncEventStore
from rowcast.testing.store_async import AsyncEventStoreContract


@pytest.fixture(scope="module")
def url(server: str) -> Iterator[str]:
    name = f"rc_store_{uuid.uuid4().hex[:12]}"
    yield f"{server}?schema={name}&pool_max=4"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


class TestAsyncPostgres(AsyncEventStoreContract):
    @pytest.fixture(autouse=True)
    def _db(self, url: str) -> None:
        self.url = url

    def make_store(self) -> AsyncEventStore:
        return AsyncEventStore(self.url)

    def shared_url(self) -> str:
        return self.url


def test_an_unreachable_server_raises_at_async_with() -> None:
    async def main() -> None:
        store = AsyncEventStore("postgresql://postgres@127.0.0.1:1/test")
        with pytest.raises(StoreError, match="cannot connect to PostgreSQL"):
            async with store:
                pass  # pragma: no cover
        assert store.closed

    asyncio.run(main())


def test_the_sync_and_async_stores_share_the_data(url: str) -> None:
    from rowcast.store import EventStore

    stream = f"twin-{uuid.uuid4().hex}"

    async def main() -> None:
        async with AsyncEventStore(url) as store:
            await store.append(stream, [NewEvent("t", {"n": 1})])

    asyncio.run(main())
    with EventStore(url) as sync:
        assert [e.data for e in sync.read(stream)] == [{"n": 1}]

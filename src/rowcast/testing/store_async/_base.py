"""What the mixins of `AsyncEventStoreContract` share: its hooks, its runner, `collect`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from rowcast.store import RecordedEvent
from rowcast.store.aio import AsyncEventStore

__all__ = ["AsyncStoreContractBase", "Body", "collect"]

Body = Callable[[AsyncEventStore], Coroutine[Any, Any, None]]


async def collect(source: Any) -> list[RecordedEvent]:
    """Every event of an async iterator, in a list."""
    return [event async for event in source]


class AsyncStoreContractBase:
    """The hooks a backend overrides and the runner every mixin of the suite uses."""

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

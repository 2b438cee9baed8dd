"""An async store's streams and life: deletes, snapshots, closing, other instances."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from rowcast.errors import StoreError
from rowcast.store import NO_STREAM, Snapshot
from rowcast.store.aio import AsyncEventStore
from rowcast.testing.store import RICH_DATA, events

from ._base import AsyncStoreContractBase, collect


class AsyncStreamTests(AsyncStoreContractBase):
    """Deleting streams, saving and loading snapshots, ``aclose`` and ``async with``."""

    def test_streams_lists_each_stream_with_version_and_last_position(self) -> None:
        async def body(store: AsyncEventStore) -> None:
            one = self.stream()
            await store.append(one, events(2))
            last = await store.append(one, events(1))
            assert (await store.streams())[one] == (3, last.position)

        self.run(body)

    def test_list_streams_pages_by_name(self) -> None:
        async def body(store: AsyncEventStore) -> None:
            prefix = self.stream()
            await store.append(f"{prefix}-a", events(2))
            last = await store.append(f"{prefix}-b", events(1))
            first = await store.list_streams(prefix, limit=1)
            assert [(i.stream, i.version) for i in first] == [(f"{prefix}-a", 2)]
            (second,) = await store.list_streams(prefix, after=first[0].stream)
            assert (second.stream, second.version, second.position) == (
                f"{prefix}-b",
                1,
                last.position,
            )

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

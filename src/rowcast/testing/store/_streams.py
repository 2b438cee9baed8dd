"""A stream's and a store's life: deletes, snapshots and closing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from rowcast.errors import ConfigError, StoreError
from rowcast.store import NO_STREAM, Snapshot

from ._base import RICH_DATA, StoreContractBase, events


class StreamTests(StoreContractBase):
    """Deleting streams, saving and loading snapshots, closing the store."""

    def test_streams_lists_each_stream_with_version_and_last_position(self) -> None:
        one, two = self.stream(), self.stream()
        self.store.append(one, events(2))
        last_two = self.store.append(two, events(3))
        last_one = self.store.append(one, events(1))
        found = self.store.streams()
        assert found[one] == (last_one.version, last_one.position) == (3, last_one.position)
        assert found[two] == (3, last_two.position)
        self.store.delete_stream(one)
        assert one not in self.store.streams()

    def test_list_streams_pages_by_name_with_version_and_last_event(self) -> None:
        prefix = self.stream()
        names = [f"{prefix}-{n}" for n in ("a", "b", "c", "d", "e")]
        for n, name in enumerate(names):
            self.store.append(name, events(n + 1))
        last = self.store.append(names[1], events(2))  # b again: version 4
        page = self.store.list_streams(prefix, limit=2)
        assert [(i.stream, i.version) for i in page] == [(names[0], 1), (names[1], 4)]
        assert page[1].position == last.position
        (newest,) = self.store.read(names[1], backwards=True, limit=1)
        assert page[1].recorded_at == newest.recorded_at
        rest = self.store.list_streams(prefix, after=page[-1].stream, limit=10)
        assert [i.stream for i in rest] == names[2:]
        assert [i.version for i in rest] == [3, 4, 5]
        assert self.store.list_streams(prefix, after=names[-1]) == []
        assert self.store.list_streams(prefix, limit=0) == []

    def test_list_streams_takes_only_names_with_the_prefix(self) -> None:
        base = self.stream()
        for name in ("a-1", "a-2", "ab", "a", "b", "\u00e9t\u00e9", "a\U0010ffff-1", "a\U0010ffff"):
            self.store.append(f"{base}.{name}", events(1))
        self.store.append(base, events(1))  # shorter than the prefix

        def listed(prefix: str, after: str | None = None) -> list[str]:
            found = self.store.list_streams(f"{base}.{prefix}", after=after, limit=100)
            return [info.stream.removeprefix(f"{base}.") for info in found]

        assert listed("a-") == ["a-1", "a-2"]
        assert listed("a") == ["a", "a-1", "a-2", "ab", "a\U0010ffff", "a\U0010ffff-1"]
        assert listed("a\U0010ffff") == ["a\U0010ffff", "a\U0010ffff-1"]
        assert listed("\u00e9") == ["\u00e9t\u00e9"]
        assert listed("c") == []
        assert listed("a", after=f"{base}.a-2") == ["ab", "a\U0010ffff", "a\U0010ffff-1"]
        assert [i.stream for i in self.store.list_streams(base)][:2] == [base, f"{base}.a"]

    def test_list_streams_leaves_out_deleted_streams(self) -> None:
        prefix = self.stream()
        self.store.append(f"{prefix}-1", events(3))
        self.store.append(f"{prefix}-2", events(1))
        self.store.delete_stream(f"{prefix}-1")
        assert [i.stream for i in self.store.list_streams(prefix)] == [f"{prefix}-2"]
        self.store.append(f"{prefix}-1", events(1))
        assert [(i.stream, i.version) for i in self.store.list_streams(prefix)] == [
            (f"{prefix}-1", 1),
            (f"{prefix}-2", 1),
        ]

    def test_list_streams_refuses_bad_arguments(self) -> None:
        with pytest.raises(TypeError):
            self.store.list_streams(1)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            self.store.list_streams(after=1)  # type: ignore[arg-type]
        with pytest.raises(ConfigError):
            self.store.list_streams(limit=-1)

    def test_delete_stream_removes_it_and_appends_start_again_at_1(self) -> None:
        stream, other = self.stream(), self.stream()
        self.store.append(other, events(1))
        first = self.store.append(stream, events(3))
        self.store.save_snapshot(stream, {"s": 1}, 3)
        self.store.delete_stream(stream)
        assert self.store.stream_version(stream) == 0
        assert list(self.store.read(stream)) == []
        assert self.store.load_snapshot(stream) is None
        assert all(e.stream != stream for e in self.store.read_all())
        again = self.store.append(stream, events(1), expected_version=NO_STREAM)
        assert again.version == 1
        assert again.position > first.position  # positions are never reused
        assert self.store.stream_version(other) == 1

    def test_positions_are_never_reused_even_after_deleting_the_last_events(self) -> None:
        stream = self.stream()
        first = self.store.append(stream, events(2))
        self.store.delete_stream(stream)
        assert self.store.append(self.stream(), events(1)).position > first.position

    def test_deleting_a_stream_that_has_nothing_is_a_no_op(self) -> None:
        self.store.delete_stream(self.stream())

    def test_deleted_ids_may_be_used_again(self) -> None:
        stream = self.stream()
        batch = events(2)
        self.store.append(stream, batch)
        self.store.delete_stream(stream)
        assert self.store.append(self.stream(), batch).version == 2

    # ------------------------------------------------------------ snapshots

    def test_no_snapshot_is_none(self) -> None:
        assert self.store.load_snapshot(self.stream()) is None

    @pytest.mark.parametrize(
        "state",
        [b"\x00\x01 raw", {"count": 3, **RICH_DATA}, [1, "two"], "text", 42, None],
        ids=["bytes", "rich", "list", "str", "int", "none"],
    )
    def test_snapshot_round_trips_exactly(self, state: Any) -> None:
        stream = self.stream()
        self.store.append(stream, events(3))
        self.store.save_snapshot(stream, state, 3)
        snapshot = self.store.load_snapshot(stream)
        assert isinstance(snapshot, Snapshot)
        assert (snapshot.stream, snapshot.name, snapshot.version) == (stream, "default", 3)
        assert snapshot.state == state
        assert type(snapshot.state) is type(state)
        assert isinstance(snapshot.recorded_at, float)

    def test_bytearray_state_comes_back_as_bytes(self) -> None:
        stream = self.stream()
        self.store.save_snapshot(stream, bytearray(b"ab"), 0)
        snapshot = self.store.load_snapshot(stream)
        assert snapshot is not None
        assert snapshot.state == b"ab"
        assert type(snapshot.state) is bytes

    def test_the_latest_snapshot_wins_and_an_older_one_is_ignored(self) -> None:
        stream = self.stream()
        self.store.save_snapshot(stream, "v2", 2)
        self.store.save_snapshot(stream, "v5", 5)
        self.store.save_snapshot(stream, "v3", 3)  # a slower saver, late
        snapshot = self.store.load_snapshot(stream)
        assert snapshot is not None
        assert (snapshot.version, snapshot.state) == (5, "v5")
        self.store.save_snapshot(stream, "v5 again", 5)
        snapshot = self.store.load_snapshot(stream)
        assert snapshot is not None
        assert snapshot.state == "v5 again"

    def test_snapshot_names_are_independent(self) -> None:
        stream = self.stream()
        self.store.save_snapshot(stream, "a", 1, name="totals")
        self.store.save_snapshot(stream, "b", 2, name="search")
        totals = self.store.load_snapshot(stream, "totals")
        search = self.store.load_snapshot(stream, name="search")
        assert totals is not None
        assert search is not None
        assert (totals.state, search.state) == ("a", "b")
        assert self.store.load_snapshot(stream) is None

    def test_snapshots_of_at_all_are_keyed_by_position(self) -> None:
        name = f"projection-{uuid.uuid4().hex}"
        result = self.store.append(self.stream(), events(2))
        self.store.save_snapshot("@all", {"seen": 2}, result.position, name=name)
        snapshot = self.store.load_snapshot("@all", name)
        assert snapshot is not None
        assert (snapshot.stream, snapshot.version, snapshot.state) == (
            "@all",
            result.position,
            {"seen": 2},
        )
        assert list(self.store.read_all(after=snapshot.version)) == []

    @pytest.mark.parametrize(
        ("args", "error"),
        [
            (("state", -1), ConfigError),
            (("state", "1"), TypeError),
            (("state", 1, ""), ConfigError),
            (("state", 1, None), TypeError),
            ((object(), 1), TypeError),
        ],
    )
    def test_bad_snapshot_arguments(self, args: tuple[Any, ...], error: type[Exception]) -> None:
        stream = self.stream()
        with pytest.raises(error):
            self.store.save_snapshot(stream, *args)
        assert self.store.load_snapshot(stream) is None

    # ------------------------------------------------------------ closing

    def test_close_is_idempotent_and_final(self) -> None:
        store = self.open_store()
        stream = self.stream()
        store.append(stream, events(1))
        reader = store.read(stream)
        store.close()
        store.close()
        assert store.closed
        with pytest.raises(StoreError, match="closed"):
            store.append(stream, events(1))
        with pytest.raises(StoreError, match="closed"):
            store.read(stream)
        with pytest.raises(StoreError, match="closed"):
            next(reader)  # made before the close, consumed after
        with pytest.raises(StoreError, match="closed"):
            store.stream_version(stream)
        with pytest.raises(StoreError, match="closed"):
            store.load_snapshot(stream)

    def test_a_with_block_closes(self) -> None:
        with self.open_store() as store:
            assert not store.closed
        assert store.closed

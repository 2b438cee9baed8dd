"""What reads promise: `read` and `read_all`, after, limit, backwards, pages."""

from __future__ import annotations

from ._base import StoreContractBase, events


class ReadTests(StoreContractBase):
    """Reading a stream and the global order."""

    def test_after_is_exclusive(self) -> None:
        stream = self.stream()
        self.store.append(stream, events(5))
        assert [e.version for e in self.store.read(stream, after=2)] == [3, 4, 5]
        assert list(self.store.read(stream, after=5)) == []
        assert list(self.store.read(stream, after=99)) == []

    def test_limit(self) -> None:
        stream = self.stream()
        self.store.append(stream, events(5))
        assert [e.version for e in self.store.read(stream, limit=2)] == [1, 2]
        assert [e.version for e in self.store.read(stream, after=3, limit=10)] == [4, 5]
        assert list(self.store.read(stream, limit=0)) == []

    def test_backwards_yields_the_same_events_newest_first(self) -> None:
        stream = self.stream()
        self.store.append(stream, events(5))
        assert [e.version for e in self.store.read(stream, backwards=True)] == [5, 4, 3, 2, 1]
        assert [e.version for e in self.store.read(stream, backwards=True, limit=1)] == [5]
        assert [e.version for e in self.store.read(stream, after=2, backwards=True)] == [5, 4, 3]

    def test_reads_longer_than_a_page(self) -> None:
        stream = self.stream()
        self.store.append(stream, events(2500))
        assert [e.version for e in self.store.read(stream)] == list(range(1, 2501))
        assert [e.version for e in self.store.read(stream, backwards=True)] == list(
            range(2500, 0, -1)
        )
        assert [e.version for e in self.store.read(stream, after=1, limit=2001)][-1] == 2002
        assert len(list(self.store.read(stream, backwards=True, limit=2001))) == 2001
        head = self.store.stream_version("@all")
        assert len(list(self.store.read_all(after=head - 2500))) == 2500

    def test_read_all_is_one_global_order(self) -> None:
        a, b = self.stream(), self.stream()
        start = self.store.stream_version("@all")
        self.store.append(a, events(2, "a"))
        self.store.append(b, events(1, "b"))
        last = self.store.append(a, events(1, "a", start=2))
        recorded = list(self.store.read_all(after=start))
        assert [(e.stream, e.version) for e in recorded] == [(a, 1), (a, 2), (b, 1), (a, 3)]
        positions = [e.position for e in recorded]
        assert positions == sorted(set(positions))
        assert positions[-1] == last.position == self.store.stream_version("@all")
        assert list(self.store.read("@all", after=start)) == recorded

    def test_read_all_after_limit_and_backwards(self) -> None:
        stream = self.stream()
        start = self.store.stream_version("@all")
        self.store.append(stream, events(4))
        forward = list(self.store.read_all(after=start))
        assert list(self.store.read_all(after=forward[1].position)) == forward[2:]
        assert list(self.store.read_all(after=start, limit=2)) == forward[:2]
        assert list(self.store.read_all(after=start, backwards=True)) == forward[::-1]
        assert list(self.store.read("@all", after=start, backwards=True, limit=1)) == forward[-1:]

"""The in-memory reference store: the shared contract, then its own behaviour."""

from __future__ import annotations

import pytest

from rowcast.errors import ConfigError
from rowcast.store import EventStore, NewEvent
from rowcast.store.memory import MemoryEventStore
from rowcast.testing.store import EventStoreContract


class TestMemory(EventStoreContract):
    def make_store(self) -> EventStore:
        return EventStore("memory://")


def test_each_memory_store_is_its_own() -> None:
    with EventStore("memory://") as one, EventStore("memory://") as two:
        assert type(one) is MemoryEventStore
        one.append("s", [NewEvent("t", {"n": 1})])
        assert two.stream_version("s") == 0


def test_values_read_back_are_copies() -> None:
    data = {"items": [1, 2]}
    with EventStore("memory://") as store:
        store.append("s", [NewEvent("t", data)])
        data["items"].append(3)
        (event,) = store.read("s")
        assert event.data == {"items": [1, 2]}
        event.data["items"].append(4)
        assert next(store.read("s")).data == {"items": [1, 2]}


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("memory://somewhere", {}, "just 'memory://'"),
        ("memory://", {"timeout": 3}, "takes no options"),
    ],
)
def test_bad_memory_urls(url: str, options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        EventStore(url, **options)


def test_backwards_reads_page_through_a_long_stream() -> None:
    with EventStore("memory://") as store:
        for start in range(0, 2500, 500):
            store.append("s", [NewEvent("t", n) for n in range(start, start + 500)])
        store.append("other", [NewEvent("t", -1)])
        assert [e.data for e in store.read("s", backwards=True)] == list(range(2499, -1, -1))
        assert [e.version for e in store.read("s", after=2490, backwards=True)] == list(
            range(2500, 2490, -1)
        )
        positions = [e.position for e in store.read_all(backwards=True, limit=1500)]
        assert positions == list(range(2501, 1001, -1))

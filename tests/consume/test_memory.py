"""The in-process broker: the consumer contract with no server, then what is its own."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rowcast.change import Change
from rowcast.checkpoint import FileCheckpoint
from rowcast.consume import Consumer, open_consumer, open_transport
from rowcast.consume.memory import MemoryBroker, MemoryTransport, broker, remove_broker
from rowcast.errors import SinkError
from rowcast.relay import Relay
from rowcast.sinks import open_sink
from rowcast.sinks.memory import MemoryBrokerSink
from rowcast.sources.sqlite import TriggerSource
from rowcast.testing.consume import ConsumerContract, workload


class TestMemoryConsumer(ConsumerContract):
    in_process = True
    bad_urls = [
        ("memory://", "names its broker"),
        ("memory://a/b", "names its broker"),
        ("memory://a b", "names its broker"),
        ("memory://a?mode=replicate", "takes mode=broker"),
        ("memory://a?claim_after=1", "unknown option 'claim_after'"),
        ("memory://a?mode", "malformed query"),
    ]

    @pytest.fixture
    def destination(self) -> Iterator[None]:
        self.name = f"consume-test-{uuid.uuid4().hex[:10]}"
        self.broker = broker(self.name)
        yield
        remove_broker(self.name)
        remove_broker(f"{self.name}-down")

    def sink_url(self) -> str:
        return f"memory://{self.name}?mode=broker"

    def consumer_url(self) -> str:
        return self.sink_url()  # one URL serves both sides, as for the other brokers

    def dead_letters(self) -> list[tuple[Change, str]]:
        return [(Change.from_json(d.body), d.error) for d in self.broker.dead_letters(self.group)]

    def unreachable_url(self) -> str:
        down = f"{self.name}-down"
        broker(down).stop()
        return f"memory://{down}"

    def cut(self, consumer: Consumer) -> None:
        self.broker.sever(self.group)


# ---------------------------------------------------------------- its own behaviour


@pytest.fixture
def named() -> Iterator[MemoryBroker]:
    name = f"consume-test-{uuid.uuid4().hex[:10]}"
    yield broker(name)
    remove_broker(name)


def run(consumer: Consumer) -> threading.Thread:
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    return thread


def stop(consumer: Consumer, thread: threading.Thread) -> None:
    consumer.stop()
    thread.join(10)
    assert not thread.is_alive()


def test_the_url_picks_the_memory_transport_and_the_sink(named: MemoryBroker) -> None:
    transport = open_transport(f"memory://{named.name}", group="g")
    assert isinstance(transport, MemoryTransport)
    assert (transport.name, transport.group) == (named.name, "g")
    sink = open_sink(f"memory://{named.name}?mode=broker")
    assert isinstance(sink, MemoryBrokerSink)
    sink.close()
    assert type(open_sink("memory://")).__name__ == "StoreSink"  # plain memory:// is a store


def test_a_relay_delivers_to_the_broker_and_a_consumer_reads_it(
    named: MemoryBroker, tmp_path: Path
) -> None:
    """SQLite triggers -> relay -> memory://<name>?mode=broker -> consumer: no server at all."""
    app = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(app, isolation_level=None)) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, n INTEGER)")
        TriggerSource(f"sqlite:///{app}").install()
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO items VALUES (?, 0)", [(i,) for i in range(1, 21)])
        conn.execute("COMMIT")
        conn.execute("UPDATE items SET n = n + 1 WHERE id <= 5")
        conn.execute("DELETE FROM items WHERE id = 20")
    source = TriggerSource(f"sqlite:///{app}", start="start", end="now")
    sink = open_sink(f"memory://{named.name}?mode=broker")
    checkpoint = FileCheckpoint(str(tmp_path / "pos"), str(tmp_path / "pos"))
    Relay(source, [sink], checkpoint).run()
    sink.close()
    seen: list[Change] = []
    consumer = open_consumer(f"memory://{named.name}", seen.extend, group="app")
    thread = run(consumer)
    ConsumerContract.wait_for(lambda: len(seen) == 26, "every change")
    stop(consumer, thread)
    assert [(c.action, c.pk) for c in seen[20:]] == [("update", i) for i in range(1, 6)] + [
        ("delete", 20)
    ]
    assert consumer.stats.handled == 26


def test_each_group_reads_everything_and_a_groups_consumers_share_it(
    named: MemoryBroker,
) -> None:
    sink = MemoryBrokerSink(f"memory://{named.name}")
    sink.deliver(workload(200, 20, table="t"))
    lock = threading.Lock()
    by_consumer: dict[str, list[Change]] = {"a1": [], "a2": [], "b": []}

    def keep(name: str) -> object:
        def handler(changes: list[Change]) -> None:
            with lock:
                by_consumer[name].extend(changes)

        return handler

    consumers = [
        open_consumer(f"memory://{named.name}", keep(name), group=name[0], batch_size=10)
        for name in by_consumer
    ]
    threads = [run(consumer) for consumer in consumers]
    ConsumerContract.wait_for(
        lambda: sum(map(len, by_consumer.values())) >= 400, "both groups' changes"
    )
    for consumer, thread in zip(consumers, threads, strict=True):
        stop(consumer, thread)
    assert len(by_consumer["b"]) == 200
    shared = by_consumer["a1"] + by_consumer["a2"]
    assert sorted(c.after["v"] for c in shared if c.after) == list(range(200))


def test_held_messages_come_back_first_and_in_order_when_a_connection_ends(
    named: MemoryBroker,
) -> None:
    named.publish((str(i), f"body {i}") for i in range(10))
    first = named.connect("g")
    assert [m.id for _, m in named.fetch(first, 4, 0)] == ["0", "1", "2", "3"]
    named.ack(first, [1])
    second = named.connect("g")
    assert [m.id for _, m in named.fetch(second, 2, 0)] == ["4", "5"]
    named.release(second, [5])
    named.disconnect(first)  # 0, 2 and 3 go back; 1 was acknowledged
    assert [m.id for _, m in named.fetch(second, 10, 0)] == ["0", "2", "3", "5", "6", "7", "8", "9"]
    assert named.fetch(second, 10, 0.01) == []
    named.ack(second, [4])
    named.sever("g")
    with pytest.raises(ConnectionResetError):
        named.fetch(second, 10, 0)
    third = named.connect("g")
    # what the severed connection held, except 4, comes back; 1 and 4 never do
    assert [m.id for _, m in named.fetch(third, 10, 0)] == ["0", "2", "3", "5", "6", "7", "8", "9"]


def test_a_foreign_message_is_parked_with_its_body(named: MemoryBroker) -> None:
    named.publish([("x", "not json")])
    MemoryBrokerSink(f"memory://{named.name}").deliver(workload(3, 3, table="t"))
    seen: list[Change] = []
    consumer = open_consumer(f"memory://{named.name}", seen.extend, group="g")
    thread = run(consumer)
    ConsumerContract.wait_for(lambda: len(seen) == 3 and consumer.stats.parked == 1, "both")
    stop(consumer, thread)
    [dead] = named.dead_letters("g")
    assert (dead.id, dead.body, dead.group) == ("x", "not json", "g")
    assert "not a rowcast change" in dead.error


def test_a_broker_that_goes_away_is_retried_until_it_is_back(named: MemoryBroker) -> None:
    sink = MemoryBrokerSink(f"memory://{named.name}")
    sink.deliver(workload(50, 10, table="a"))
    seen: list[Change] = []
    consumer = open_consumer(
        f"memory://{named.name}", seen.extend, group="g", backoff=0.05, max_backoff=0.2
    )
    thread = run(consumer)
    ConsumerContract.wait_for(lambda: len(seen) == 50, "the first changes")
    named.stop()
    ConsumerContract.wait_for(lambda: consumer.stats.errors > 0, "a broker error")
    assert "stopped" in (consumer.stats.failing or "")
    with pytest.raises(SinkError, match="stopped") as caught:
        sink.deliver(workload(1, 1, table="b"))
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)
    named.start()
    sink.deliver(workload(30, 10, table="b"))
    ConsumerContract.wait_for(lambda: len(seen) == 80, "the changes published after the restart")
    stop(consumer, thread)
    assert consumer.stats.failing is None
    assert len({(c.table, c.pk, c.after["v"] if c.after else None) for c in seen}) == 80


def test_a_closed_sink_refuses_to_deliver(named: MemoryBroker) -> None:
    sink = MemoryBrokerSink(f"memory://{named.name}")
    sink.close()
    sink.close()
    with pytest.raises(SinkError, match="closed"):
        sink.deliver(workload(1, 1, table="t"))
    assert repr(sink).endswith("closed>")
    assert named.messages() == []


def test_a_backfilled_row_the_consumer_holds_is_handled_not_skipped(named: MemoryBroker) -> None:
    """A backfill's read of a row already consumed: a write with ``snapshot=True`` and an id
    of its own (its transaction's position), neither a duplicate nor an error."""
    row = {"id": 1, "n": 2}
    written = Change("write", "main", "items", 1, None, row, 1.0, "t1", "1", "sqlite")
    read = Change("write", "main", "items", 1, None, row, 2.0, "backfill:1", "2", "sqlite", True)
    sink = open_sink(f"memory://{named.name}?mode=broker")
    sink.deliver([[written], [read]])
    sink.deliver([[read]])  # and re-delivered: that one is the duplicate
    sink.close()
    seen: list[Change] = []
    consumer = open_consumer(f"memory://{named.name}", seen.extend, group="app")
    thread = run(consumer)
    ConsumerContract.wait_for(
        lambda: len(seen) == 2 and consumer.stats.duplicates == 1, "both changes"
    )
    stop(consumer, thread)
    assert [c.snapshot for c in seen] == [False, True]
    assert seen[1] == read
    assert (consumer.stats.handled, consumer.stats.duplicates, consumer.stats.parked) == (2, 1, 0)

"""The Kafka consumer: the consumer contract, then what is Kafka's own (groups, rebalances)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from rowcast.change import Change
from rowcast.consume import open_consumer
from rowcast.consume.kafka import KafkaTransport
from rowcast.dlq.kafka import mark_group
from rowcast.sinks import open_sink
from rowcast.testing.consume import ConsumerContract, workload
from rowcast.testing.sink import closed_port
from tests import kafka
from tests.conftest import require_kafka

# a short session: tansu (the broker here) holds a new member's join for about half of it
FAST = {"session.timeout.ms": 6000}


def make_topic(name: str, partitions: int = 1) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka.servers(), "log_level": 0})
    admin.create_topics([NewTopic(name, partitions, -1)])[name].result(10)


@pytest.mark.server
class TestKafkaConsumer(ConsumerContract):
    fast = FAST
    bad_urls = [
        ("kafka://127.0.0.1:9092", "name the topics to read"),
        ("kafka://127.0.0.1:9092?topics=a&timeout=soon", "timeout must be a positive number"),
        ("kafka://127.0.0.1:9092?topics=a&grup=g", "unknown option 'grup'"),
        ("kafka://127.0.0.1:9092?topics=a&group=a&group=b", "given twice"),
        ("kafka://127.0.0.1:9092?topics=a&session.timeout.ms=x", "refuses its configuration"),
        ("pulsar://127.0.0.1/0", "no rowcast consumer for 'pulsar://"),
    ]

    @pytest.fixture
    def destination(self) -> Iterator[None]:
        self.url = require_kafka()
        self.topic = kafka.unique("rowcast-consume")
        make_topic(self.topic, partitions=4)
        yield
        kafka.delete_topics(self.topic)
        kafka.delete_topics(f"{self.group}.dead")
        kafka.delete_groups(mark_group(f"{self.group}.dead"))

    def sink_url(self) -> str:
        return f"{self.url}?topic={self.topic}"

    def consumer_url(self) -> str:
        return f"{self.url}?topics={self.topic}&dead_letter={self.group}.dead"

    def dead_letters(self) -> list[tuple[Change, str]]:
        return [
            (Change.from_json(m.value()), dict(m.headers())["rowcast-error"].decode())
            for m in kafka.read([f"{self.group}.dead"])
        ]

    def unreachable_url(self) -> str:
        return f"kafka://127.0.0.1:{closed_port()}?topics=x&timeout=2"

    def dead_letter_url(self) -> str:
        return self.consumer_url()


@pytest.fixture
def topic() -> Iterator[str]:
    require_kafka()
    name = kafka.unique("rowcast-consume")
    yield name
    kafka.delete_topics(name)


@pytest.mark.server
def test_a_missing_topic_is_an_error_naming_the_ones_there(topic: str) -> None:
    make_topic(topic)
    transport = KafkaTransport(f"{kafka.KAFKA}?topics={topic}-typo", group="g")
    from rowcast.errors import ConfigError

    with pytest.raises(
        ConfigError, match=rf"no topic {topic}-typo on the cluster \(topics: .*{topic}"
    ):
        transport.connect()
    transport.close()


def test_the_group_is_given_once() -> None:
    pytest.importorskip("confluent_kafka")
    from rowcast.errors import ConfigError

    assert KafkaTransport("kafka://h:9092?topics=t&group=g").group == "g"
    assert KafkaTransport("kafka://h:9092?topics=t", group="g").group == "g"
    with pytest.raises(ConfigError, match="give it once"):
        KafkaTransport("kafka://h:9092?topics=t&group=a", group="b")


@pytest.mark.server
def test_two_consumers_of_a_group_share_the_partitions_and_handle_every_change(
    topic: str,
) -> None:
    """The second consumer joining takes partitions from the first (a rebalance): every
    change is handled, each row's changes in order within each consumer's share."""
    make_topic(topic, partitions=4)
    sink = open_sink(f"{kafka.KAFKA}?topic={topic}")
    changes = workload(4000, 200, table="t")
    for start in range(0, 4000, 500):
        sink.deliver(changes[start : start + 500])
    sink.close()
    lock = threading.Lock()
    seen: dict[str, list[tuple[int, int]]] = {"a": [], "b": []}

    def handler(name: str):  # type: ignore[no-untyped-def]
        def handle(batch: list[Change]) -> None:
            with lock:
                seen[name].extend((c.pk, c.after["v"]) for c in batch if c.after)
            time.sleep(0.03)  # slow enough for the second to join while work is left

        return handle

    url = f"{kafka.KAFKA}?topics={topic}"
    group = kafka.unique("group")
    first = open_consumer(url, handler("a"), group=group, batch_size=20, **FAST)
    second = open_consumer(url, handler("b"), group=group, batch_size=20, **FAST)
    threads = [threading.Thread(target=c.run, daemon=True) for c in (first, second)]
    threads[0].start()

    def count() -> int:
        with lock:
            return len({v for name in seen for _, v in seen[name]})

    ConsumerContract.wait_for(lambda: count() >= 200, "the first consumer to start")
    threads[1].start()
    deadline = time.monotonic() + 90
    while count() < 4000:
        assert time.monotonic() < deadline, "every change"
        time.sleep(0.05)
    for consumer, thread in zip((first, second), threads, strict=True):
        consumer.stop()
        thread.join(30)
    assert {v for name in seen for _, v in seen[name]} == set(range(4000))
    assert seen["a"]
    assert seen["b"]  # the group gave the second consumer partitions of its own
    for name in seen:  # within each consumer, each row in order (a row moves at most once)
        rows: dict[int, list[int]] = {}
        for pk, v in seen[name]:
            rows.setdefault(pk, []).append(v)
        for versions in rows.values():
            assert versions == sorted(versions)


@pytest.mark.server
def test_a_consumer_stopped_while_joining_leaves_the_group_usable(topic: str) -> None:
    """Stopped between its subscription and its assignment (Ctrl-C in its first
    seconds), a consumer left tansu's group waiting for it for good: the next consumer
    of that group never got a partition. It now finishes joining, then leaves."""
    make_topic(topic, partitions=2)
    sink = open_sink(f"{kafka.KAFKA}?topic={topic}")
    sink.deliver(workload(20, 5, table="t"))
    sink.close()
    url = f"{kafka.KAFKA}?topics={topic}"
    group = kafka.unique("group")
    try:
        early = KafkaTransport(url, group=group, **FAST)
        early.connect()
        time.sleep(0.3)  # its JoinGroup is out, its assignment not yet in
        early.close()
        seen: list[Change] = []
        consumer = open_consumer(url, seen.extend, group=group, **FAST)
        thread = threading.Thread(target=consumer.run, daemon=True)
        thread.start()
        ConsumerContract.wait_for(lambda: len(seen) >= 20, "the next consumer's 20 changes")
        consumer.stop()
        thread.join(30)
        assert len(seen) == 20  # the early one handled and committed nothing
    finally:
        kafka.delete_groups(group)


@pytest.mark.server
def test_debezium_messages_are_read_and_tombstones_skipped(topic: str) -> None:
    make_topic(topic)
    sink = open_sink(f"{kafka.KAFKA}?topic={topic}&format=debezium")
    batch = workload(30, 10, table="t")
    gone = Change("delete", "consume_test", "t", 3, {"id": 3, "v": 23}, None, position="end")
    sink.deliver([*batch, [gone]])  # the delete is followed by a tombstone
    sink.close()
    seen: list[Change] = []
    consumer = open_consumer(f"{kafka.KAFKA}?topics={topic}", seen.extend, **FAST)
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    ConsumerContract.wait_for(lambda: len(seen) >= 31, "every change")
    consumer.stop()
    thread.join(30)
    assert [(c.pk, c.action.value) for c in seen] == [
        *((c.pk, c.action.value) for tx in batch for c in tx),
        (3, "delete"),
    ]
    assert consumer.stats.parked == 0


@pytest.mark.server
def test_a_stopped_consumer_with_workers_at_different_speeds_commits_what_it_handled(
    topic: str,
) -> None:
    """Offsets are committed in order: with a partition's rows on several workers, a slow
    worker's messages would hold back the commit of a fast one's, handled again later."""
    make_topic(topic)  # one partition
    sink = open_sink(f"{kafka.KAFKA}?topic={topic}")
    sink.deliver(workload(600, 30, table="t"))
    sink.close()
    lock = threading.Lock()
    handled: list[int] = []

    def handle(batch: list[Change]) -> None:
        with lock:
            handled.extend(c.after["v"] for c in batch if c.after)
        if any(c.pk % 3 == 0 for c in batch):
            time.sleep(0.05)  # rows of one kind are slow

    url = f"{kafka.KAFKA}?topics={topic}"
    group = kafka.unique("group")
    first = open_consumer(url, handle, group=group, workers=3, batch_size=5, **FAST)
    thread = threading.Thread(target=first.run, daemon=True)
    thread.start()
    ConsumerContract.wait_for(lambda: len(handled) >= 100, "some changes handled")
    first.stop()
    thread.join(30)
    before = len(handled)
    assert before < 600, "stopped too late to test anything"
    second = open_consumer(url, handle, group=group, workers=3, **FAST)
    thread = threading.Thread(target=second.run, daemon=True)
    thread.start()
    ConsumerContract.wait_for(lambda: len(set(handled)) >= 600, "the rest")
    time.sleep(0.5)
    second.stop()
    thread.join(30)
    assert sorted(handled) == list(range(600))  # none lost, none handled twice

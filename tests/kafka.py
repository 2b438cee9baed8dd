"""Helpers of the Kafka tests: unique topic names, reading topics back, removing them."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable
from typing import Any

from tests.conftest import KAFKA_URL, require_kafka

KAFKA = KAFKA_URL  # the test broker's URL


def servers(url: str | None = None) -> str:
    """The bootstrap servers of `url` (the test broker's by default)."""
    return (url or require_kafka()).partition("://")[2].partition("?")[0].strip("/")


def unique(prefix: str = "rowcast-test") -> str:
    """A topic name (or prefix) no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def topics(prefix: str) -> list[str]:
    """The topics whose names start with `prefix`, sorted."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": servers(), "log_level": 0})
    return sorted(t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix))


def delete_topics(prefix: str) -> None:
    """Delete every topic whose name starts with `prefix`."""
    from confluent_kafka.admin import AdminClient

    names = topics(prefix)
    if names:
        admin = AdminClient({"bootstrap.servers": servers(), "log_level": 0})
        for future in admin.delete_topics(names, request_timeout=10).values():
            with contextlib.suppress(Exception):  # gone already
                future.result()


def delete_groups(*names: str) -> None:
    """Delete the consumer groups `names` (their committed offsets); gone ones are fine."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": servers(), "log_level": 0})
    for future in admin.delete_consumer_groups(list(names), request_timeout=10).values():
        with contextlib.suppress(Exception):  # gone already, or never made
            future.result()


def read(
    names: Iterable[str], *, isolation: str = "read_committed", timeout: float = 20
) -> list[Any]:
    """Every message of topics `names`, partition by partition from the first offset to
    the end (each topic in turn, each partition in order)."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": servers(),
            "group.id": unique("reader"),
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": isolation,
            "log_level": 0,
        }
    )
    found: list[Any] = []
    try:
        for name in names:
            metadata = consumer.list_topics(name, timeout=10).topics[name]
            for partition in sorted(metadata.partitions):
                consumer.assign([TopicPartition(name, partition, 0)])
                while True:
                    message = consumer.poll(timeout)
                    assert message is not None, f"{name}[{partition}]: no end within {timeout} s"
                    error = message.error()
                    if error is not None:
                        assert error.code() == KafkaError._PARTITION_EOF, error
                        break
                    found.append(message)
    finally:
        consumer.close()
    return found


_HIDES: list[bool] = []


def hides_aborted() -> bool:
    """Whether the broker hides aborted transactions from read_committed consumers.

    Apache Kafka does; tansu 0.6 (this machine's broker) returns no aborted
    transactions in its fetch responses, so its read_committed consumers see the
    records of aborted transactions (up to the last stable offset, as they should).
    """
    if not _HIDES:
        from confluent_kafka import Producer

        topic = unique("rowcast-probe")
        producer = Producer(
            {"bootstrap.servers": servers(), "transactional.id": topic, "log_level": 0}
        )
        producer.init_transactions(10)
        producer.begin_transaction()
        producer.produce(topic, b"aborted")
        producer.flush(10)
        producer.abort_transaction(10)
        producer.begin_transaction()
        producer.produce(topic, b"committed")
        producer.commit_transaction(10)
        values = [m.value() for m in read([topic])]
        delete_topics(topic)
        _HIDES.append(values == [b"committed"])
    return _HIDES[0]


def committed_transactions(checkpoint_topic: str) -> set[str]:
    """The ``rowcast-transaction`` labels that the checkpoint records of `checkpoint_topic`
    hold: every transaction whose checkpoint record was written (committed, or on a broker
    that shows aborted ones, aborted after its whole batch was stored)."""
    import json

    return {
        json.loads(m.value()).get("transaction")
        for m in read([checkpoint_topic])
        if m.value() is not None
    } - {None}

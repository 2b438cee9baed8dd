"""The Kafka checkpoint: the checkpoint contract, then reading back through many records."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rowcast.checkpoint import Checkpoint, open_checkpoint
from rowcast.checkpoint.kafka import KafkaCheckpoint
from rowcast.errors import ConfigError, StoreError
from rowcast.testing.checkpoint import CheckpointContract
from rowcast.testing.sink import closed_port
from tests import kafka
from tests.conftest import require_kafka


@pytest.mark.server
class TestKafkaCheckpoint(CheckpointContract):
    @pytest.fixture(autouse=True)
    def _topic(self) -> Iterator[None]:
        self.server = require_kafka()
        self.topic = kafka.unique("rowcast-checkpoints")
        yield
        kafka.delete_topics(self.topic)

    def make_checkpoint(self, name: str) -> Checkpoint:
        return open_checkpoint(f"{self.server}?topic={self.topic}", name)

    def store_url(self) -> str:
        return f"{self.server}?topic={self.topic}"

    def test_the_topic_is_made_with_one_partition(self) -> None:
        self.checkpoint().save("p")
        assert kafka.topics(self.topic) == [self.topic]

    def test_the_last_save_is_found_behind_many_records_of_other_names(self) -> None:
        mine = self.checkpoint()
        mine.save("mine-1")
        mine.save("mine-2")
        other = self.checkpoint()
        for i in range(700):  # more than the first windows read back from the end
            other.save(f"other-{i}")
        assert self.checkpoint(mine.name).load() == "mine-2"  # type: ignore[attr-defined]
        assert self.checkpoint(other.name).load() == "other-699"  # type: ignore[attr-defined]

    def test_a_record_that_is_not_a_checkpoint_is_a_store_error(self) -> None:
        from confluent_kafka import Producer

        checkpoint = self.checkpoint()
        checkpoint.save("p")
        producer = Producer({"bootstrap.servers": kafka.servers(), "log_level": 0})
        assert isinstance(checkpoint, KafkaCheckpoint)
        producer.produce(self.topic, b"not json", checkpoint.name.encode(), partition=0)
        producer.flush(10)
        with pytest.raises(StoreError, match="is not a rowcast checkpoint"):
            checkpoint.load()


def test_the_transactional_id_is_the_relays_name() -> None:
    require_kafka()
    topic = kafka.unique("rowcast-checkpoints")
    try:
        with open_checkpoint(f"{kafka.KAFKA}?topic={topic}&name=orders") as checkpoint:
            assert isinstance(checkpoint, KafkaCheckpoint)
            assert checkpoint.transactional_id == f"rowcast-relay.{topic}.orders"
        url = f"{kafka.KAFKA}?topic={topic}&transactional_id=mine"
        with open_checkpoint(url) as checkpoint:
            assert checkpoint.transactional_id == "mine"  # type: ignore[attr-defined]
    finally:
        kafka.delete_topics(topic)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("kafka://127.0.0.1:9092?topic=a b", "topic= is letters"),
        ("kafka://127.0.0.1:9092?topc=a", "unknown option 'topc'"),
        ("kafka://127.0.0.1:9092/path", "has no path"),
    ],
)
def test_bad_urls_are_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_checkpoint(url)


def test_an_unreachable_cluster_is_a_store_error_at_open() -> None:
    pytest.importorskip("confluent_kafka")
    url = f"kafka://127.0.0.1:{closed_port()}?timeout=2"
    with pytest.raises(StoreError, match=r"connect failed"):
        open_checkpoint(url)

"""The Redis Streams consumer: the consumer contract, then what is Redis's own."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
import redis

from rowcast.change import Change
from rowcast.consume import open_consumer
from rowcast.consume.redis import RedisTransport
from rowcast.sinks import open_sink
from rowcast.testing.consume import ConsumerContract, workload
from rowcast.testing.sink import closed_port
from tests.conftest import require_redis
from tests.test_relay import RedisServer


@pytest.mark.server
class TestRedisConsumer(ConsumerContract):
    fast = {"claim_after": 1}
    bad_urls = [
        ("redis://127.0.0.1:6379/zero", "database number"),
        ("redis://127.0.0.1:6379/0?stream", "malformed query"),
        ("redis://127.0.0.1:6379/0?stream=", "needs a key"),
        ("redis://127.0.0.1:6379/0?claim_after=soon", "claim_after must be a positive number"),
        ("redis://127.0.0.1:6379/0?consumer=a&consumer=b", "given twice"),
        ("redis://127.0.0.1:6379/0?streams=a", "unknown option 'streams'"),
        ("redis://127.0.0.1:port/0", "malformed Redis URL"),
        ("pulsar://127.0.0.1/0", "no rowcast consumer for 'pulsar://"),
    ]

    @pytest.fixture
    def destination(self) -> Iterator[None]:
        self.url = require_redis()
        self.key = f"consume-test:{uuid.uuid4().hex}"
        self.client = redis.Redis.from_url(self.url)
        yield
        self.client.delete(self.key, f"{self.key}:dead")
        self.client.close()

    def sink_url(self) -> str:
        return f"{self.url}?stream={self.key}"

    def consumer_url(self) -> str:
        return self.sink_url()

    def dead_letters(self) -> list[tuple[Change, str]]:
        return [
            (Change.from_json(fields[b"body"]), fields[b"error"].decode())
            for _, fields in self.client.xrange(f"{self.key}:dead")
        ]

    def unreachable_url(self) -> str:
        return f"redis://127.0.0.1:{closed_port()}/0?timeout=1"

    def dead_letter_url(self) -> str:
        return self.consumer_url()


@pytest.mark.server
def test_per_table_streams_are_found_and_a_foreign_entry_is_parked() -> None:
    url = require_redis()
    prefix = f"consume-test-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(url)
    try:
        sink_url = f"{url}?prefix={prefix}"
        sink = open_sink(sink_url)
        sink.deliver(workload(20, 5, table="a") + workload(10, 5, table="b"))
        sink.close()
        client.xadd(f"{prefix}:consume_test.a", {"id": "x", "body": "not json"})
        seen: list[Change] = []
        consumer = open_consumer(sink_url, seen.extend, group="g")
        thread = threading.Thread(target=consumer.run)
        thread.start()
        ConsumerContract.wait_for(lambda: len(seen) >= 30 and consumer.stats.parked, "both")
        consumer.stop()
        thread.join()
        assert sorted(c.table for c in seen) == ["a"] * 20 + ["b"] * 10
        (dead,) = client.xrange(f"{prefix}:consume_test.a:dead")
        assert b"not a rowcast change" in dead[1][b"error"]
        assert dead[1][b"body"] == b"not json"
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()


def test_the_consumer_name_and_claim_delay_come_from_the_url() -> None:
    transport = RedisTransport("redis://127.0.0.1/0?consumer=w1&claim_after=2.5&stream=a,b")
    assert (transport.consumer, transport.claim_after, transport.streams) == ("w1", 2.5, ["a", "b"])
    transport.close()


def test_a_broker_that_goes_away_is_retried_until_it_is_back() -> None:
    server = RedisServer()
    server.start()
    try:
        url = f"{server.url}?stream=consume-test&timeout=1"
        sink = open_sink(url)
        sink.deliver(workload(50, 10, table="a"))
        seen: list[Change] = []
        consumer = open_consumer(url, seen.extend, group="g", backoff=0.05, max_backoff=0.2)
        thread = threading.Thread(target=consumer.run)
        thread.start()
        ConsumerContract.wait_for(lambda: len(seen) == 50, "the first changes")
        server.kill()  # the server's data goes with it: no persistence
        ConsumerContract.wait_for(lambda: consumer.stats.errors > 0, "a broker error")
        assert consumer.stats.failing is not None
        server.start()
        sink.deliver(workload(30, 10, table="b"))
        ConsumerContract.wait_for(lambda: len(seen) == 80, "the changes made after the restart")
        consumer.stop()
        thread.join()
        sink.close()
        assert consumer.stats.failing is None
    finally:
        server.kill()

"""Read back what a relay delivered to a broker: Redis Streams, NATS JetStream, RabbitMQ,
Kafka.

Each target makes a place of its own (a stream key, a JetStream stream and subject
prefix, an exchange with a queue bound to it before any relay publishes), gives the
``--to`` URL that delivers there, reads back every message so far as ``(change id,
Change)`` in the order the broker holds them, and removes what it made on `close`.
`arrived` may be called while a relay still publishes: each call returns
everything delivered so far. Shared by test_relay_crash.py and the matrix
(tests/matrix).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rowcast.change import Change
from tests import kafka
from tests.conftest import require_kafka, require_redis
from tests.sinks import require_nats, require_rabbitmq
from tests.test_relay import unique

Arrived = list[tuple[str, Change]]  # (change id, change) in the order the broker holds them


def optional(require: Callable[[], str]) -> str | None:
    """The server's URL, or None when it does not run here (in CI it must)."""
    try:
        return require()
    except pytest.skip.Exception:
        return None


def first_seen(arrived: Arrived) -> dict[str, list[str]]:
    """Per row: the ids in the order they first arrived (repeats after a crash dropped)."""
    seen: set[str] = set()
    rows: dict[str, list[str]] = {}
    for change_id, change in arrived:
        if change_id not in seen:
            seen.add(change_id)
            rows.setdefault(f"{change.table}-{change.pk}", []).append(change_id)
    return rows


class RedisTarget:
    """One stream key."""

    def __init__(self, url: str, prefix: str = "relay_crash") -> None:
        import redis

        self.key = unique(prefix)
        self.client = redis.Redis.from_url(url)
        self.sink = f"{url}?stream={self.key}"

    def arrived(self) -> Arrived:
        entries = self.client.xrange(self.key)
        return [(f[b"id"].decode(), Change.from_json(f[b"body"])) for _, f in entries]

    def close(self) -> None:
        self.client.delete(self.key)
        self.client.close()


class NatsTarget:
    """One JetStream stream, over subjects of its own prefix (made by the sink)."""

    def __init__(self, url: str, prefix: str = "relay_crash") -> None:
        self.url = url
        self.stream = unique(prefix)
        self.sink = f"{url}?stream={self.stream}&prefix={self.stream}"

    def _js(self, call: Callable[[Any], Any]) -> Any:
        import nats

        async def run() -> Any:
            nc = await nats.connect(self.url, connect_timeout=5, allow_reconnect=False)
            try:
                return await call(nc.jetstream())
            finally:
                await nc.close()

        return asyncio.run(run())

    def arrived(self) -> Arrived:
        from nats.js.errors import NotFoundError

        async def read(js: Any) -> Arrived:
            try:
                info = await js.stream_info(self.stream)
            except NotFoundError:  # the relay has not made it yet
                return []
            got = []
            if info.state.messages:
                for seq in range(info.state.first_seq, info.state.last_seq + 1):
                    message = await js.get_msg(self.stream, seq)
                    got.append((message.headers["Nats-Msg-Id"], Change.from_json(message.data)))
            return got

        result: Arrived = self._js(read)
        return result

    def close(self) -> None:
        async def delete(js: Any) -> None:
            with contextlib.suppress(Exception):
                await js.delete_stream(self.stream)

        self._js(delete)


class RabbitTarget:
    """A topic exchange and a queue bound to it with ``#``, both made before the relay runs."""

    def __init__(self, url: str, prefix: str = "relay_crash") -> None:
        import pika

        self.exchange = self.queue = unique(prefix)
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        self.channel.exchange_declare(self.exchange, "topic", durable=True)
        self.channel.queue_declare(self.queue)
        self.channel.queue_bind(self.queue, self.exchange, "#")
        self.sink = f"{url}?exchange={self.exchange}"
        self._got: Arrived = []  # taken from the queue so far

    def arrived(self) -> Arrived:
        while True:
            method, properties, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                return list(self._got)
            self._got.append((properties.message_id, Change.from_json(body)))

    def close(self) -> None:
        self.channel.queue_delete(self.queue)
        self.channel.exchange_delete(self.exchange)
        self.connection.close()


class KafkaTarget:
    """One Kafka topic (made by the sink), read back read_committed."""

    def __init__(self, url: str, prefix: str = "relay_crash") -> None:
        self.topic = kafka.unique(prefix.replace("_", "-"))
        self.sink = f"{url}?topic={self.topic}"

    def arrived(self) -> Arrived:
        if not kafka.topics(self.topic):  # the relay has not made it yet
            return []
        return [
            (dict(m.headers())["rowcast-id"].decode(), Change.from_json(m.value()))
            for m in kafka.read([self.topic])
        ]

    def close(self) -> None:
        kafka.delete_topics(self.topic)


@contextlib.contextmanager
def brokers(prefix: str = "relay_crash") -> Iterator[dict[str, Any]]:
    """A target on each broker whose server runs (and whose sink module is there)."""
    targets: dict[str, Any] = {}
    makers = [("redis", require_redis, RedisTarget)]
    makers += [("nats", require_nats, NatsTarget), ("rabbitmq", require_rabbitmq, RabbitTarget)]
    makers += [("kafka", require_kafka, KafkaTarget)]
    try:
        for name, require, make in makers:
            url = optional(require)
            if url is not None:
                targets[name] = make(url, prefix)
        yield targets
    finally:
        for target in targets.values():
            target.close()

"""The RabbitMQ consumer: the consumer contract, then what is RabbitMQ's own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pika
import pytest

from rowcast.change import Change
from rowcast.consume.rabbitmq import RabbitMQTransport
from rowcast.testing.consume import ConsumerContract
from rowcast.testing.sink import closed_port
from tests.sinks import require_rabbitmq


@pytest.mark.server
class TestRabbitMQConsumer(ConsumerContract):
    bad_urls = [
        ("amqp://guest:guest@127.0.0.1:5672/%2F?prefetch=many", "prefetch must be a positive"),
        ("amqp://guest:guest@127.0.0.1:5672/%2F?queue=a&queue=b", "given twice"),
        ("amqp://guest:guest@127.0.0.1:5672/%2F?heartbeat=often", "malformed AMQP URL"),
        ("amqps://h/%2F?queue=" + "q" * 300, "too long"),
    ]

    @pytest.fixture
    def destination(self) -> Iterator[None]:
        self.url = require_rabbitmq()
        self.exchange = f"consume_test_{uuid.uuid4().hex[:10]}"
        yield
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        channel = connection.channel()
        for queue in (self.queue(), f"{self.queue()}.dead"):
            channel.queue_delete(queue)
        for exchange in (self.exchange, f"{self.exchange}.dead"):
            channel.exchange_delete(exchange)
        connection.close()

    def queue(self) -> str:
        return f"{self.exchange}.{self.group}"

    def sink_url(self) -> str:
        return f"{self.url}?exchange={self.exchange}"

    def consumer_url(self) -> str:
        return self.sink_url()

    def dead_letters(self) -> list[tuple[Change, str]]:
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        channel = connection.channel()
        found = []
        while True:
            method, properties, body = channel.basic_get(f"{self.queue()}.dead", auto_ack=True)
            if method is None:
                break
            found.append((Change.from_json(body), properties.headers["x-rowcast-error"]))
        connection.close()
        return found

    def unreachable_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{closed_port()}/%2F?timeout=1"

    def dead_letter_url(self) -> str:
        return f"{self.consumer_url()}&group={self.group}"


def test_the_queue_and_its_bindings_come_from_the_url() -> None:
    transport = RabbitMQTransport(
        "amqp://guest:guest@127.0.0.1/%2F?exchange=x&bind=shop.orders.*,*.*.delete", group="g"
    )
    assert (transport.queue, transport.dead_queue) == ("x.g", "x.g.dead")
    assert transport.bindings == ["shop.orders.*", "*.*.delete"]

"""``format=debezium`` on every broker sink: the body is Debezium's envelope."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from rowcast.change import Change
from rowcast.errors import ConfigError
from rowcast.sinks import open_sink
from rowcast.testing.sink import transactions
from tests.conftest import require_redis
from tests.sinks import require_nats, require_rabbitmq
from tests.targets import NatsTarget, RabbitTarget, RedisTarget


def redis_bodies(target: RedisTarget) -> list[bytes]:
    return [fields[b"body"] for _, fields in target.client.xrange(target.key)]


def rabbit_bodies(target: RabbitTarget) -> list[bytes]:
    bodies = []
    while True:
        method, _, body = target.channel.basic_get(target.queue, auto_ack=True)
        if method is None:
            return bodies
        bodies.append(body)


def nats_bodies(target: NatsTarget) -> list[bytes]:
    async def read(js: Any) -> list[bytes]:
        info = await js.stream_info(target.stream)
        first, last = info.state.first_seq, info.state.last_seq
        return [(await js.get_msg(target.stream, seq)).data for seq in range(first, last + 1)]

    found: list[bytes] = target._js(read)
    return found


BROKERS: list[tuple[str, Callable[[], str], Any, Callable[[Any], list[bytes]]]] = [
    ("redis", require_redis, RedisTarget, redis_bodies),
    ("nats", require_nats, NatsTarget, nats_bodies),
    ("rabbitmq", require_rabbitmq, RabbitTarget, rabbit_bodies),
]


@pytest.mark.server
@pytest.mark.parametrize(
    ("name", "require", "make", "bodies"), BROKERS, ids=[b[0] for b in BROKERS]
)
def test_format_debezium_bodies_are_debeziums_envelope(
    name: str, require: Callable[[], str], make: Any, bodies: Callable[[Any], list[bytes]]
) -> None:
    target = make(require(), "formats")
    try:
        sink = open_sink(f"{target.sink}&format=debezium&schemas=true")
        batch = transactions(2)
        sink.deliver(batch)
        sink.close()
        found = [json.loads(body) for body in bodies(target)]
        assert [event["payload"]["op"] for event in found] == ["c", "u", "d", "u", "d", "c"]
        changes = [change for tx in batch for change in tx]
        back = [Change.from_debezium(event) for event in found]  # no key here: pk is None
        assert [(c.action, c.after, c.before, c.position) for c in back] == [
            (c.action, c.after, c.before, c.position) for c in changes
        ]
    finally:
        target.close()


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0?format=avro",
        "nats://127.0.0.1:4222?format=xml",
        "amqp://127.0.0.1:5672/%2F?format=",
        "redis://127.0.0.1:6379/0?schemas=true",
    ],
)
def test_a_format_other_than_rowcast_or_debezium_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match=r"format is rowcast or debezium|go with format=debezium"):
        open_sink(url)

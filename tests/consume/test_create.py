"""``rowcast consume`` creates no stream, key or queue unless ``create=true`` asks for it:
an unknown one is exit status 2 with what exists and the fix, and nothing is left
behind; a NATS stream whose subjects overlap another's names that stream."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator

import nats
import pika
import pika.exceptions
import pytest
import redis
from click.testing import CliRunner, Result

from rowcast.cli import main
from rowcast.consume import open_transport
from rowcast.errors import PermanentSinkError
from rowcast.sinks import open_sink
from rowcast.testing.consume import workload
from tests.conftest import deadline, require_redis
from tests.sinks import require_nats, require_rabbitmq

HANDLER = "rowcast.testing.consume:record"


def consume(url: str, *more: str) -> Result:
    """``rowcast consume URL``, each of which here fails at start (else `Hung`)."""
    with deadline(30):
        result = CliRunner().invoke(main, ["consume", url, "--handler", HANDLER, *more])
    assert "Traceback" not in result.output, result.output
    return result


async def _streams(url: str) -> list[str]:
    nc = await nats.connect(url)
    try:
        return [info.config.name for info in await nc.jetstream().streams_info()]
    finally:
        await nc.close()


async def _add(url: str, name: str, subjects: list[str]) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().add_stream(name=name, subjects=subjects)
    finally:
        await nc.close()


async def _delete(url: str, *names: str) -> None:
    nc = await nats.connect(url)
    try:
        for name in names:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await nc.jetstream().delete_stream(name)
    finally:
        await nc.close()


@pytest.fixture
def nats_names() -> Iterator[tuple[str, str]]:
    url = require_nats()
    name = f"create_test_{uuid.uuid4().hex[:10]}"
    yield url, name
    asyncio.run(_delete(url, name, f"{name}_other", f"{name}_dead", f"{name}_other_dead"))


def test_nats_an_unknown_stream_is_an_error_listing_the_streams_and_made_nowhere(
    nats_names: tuple[str, str],
) -> None:
    url, name = nats_names
    asyncio.run(_add(url, f"{name}_other", [f"{name}_other.>"]))
    result = consume(f"{url}?stream={name}&prefix={name}&timeout=5")
    assert result.exit_code == 2, result.output
    assert f"JetStream has no stream '{name}'" in result.output
    assert f"'{name}_other'" in result.output  # what exists
    assert "create=true" in result.output
    assert name not in asyncio.run(_streams(url))


def test_nats_create_true_makes_the_stream_and_an_overlap_names_the_other_stream(
    nats_names: tuple[str, str],
) -> None:
    url, name = nats_names
    # connect and close, as ConsumerContract.ready does
    transport = open_transport(f"{url}?stream={name}&prefix={name}&create=true", group="g")
    transport.connect()
    transport.close()
    assert name in asyncio.run(_streams(url))
    # a second stream for the same subjects: JetStream refuses (10065), the error names it
    result = consume(f"{url}?stream={name}_other&prefix={name}&create=true&timeout=5")
    assert result.exit_code == 2, result.output
    assert f"overlap the subjects of stream '{name}'" in result.output
    assert "code 10065" in result.output
    assert f"{name}_other" not in asyncio.run(_streams(url))


def test_nats_sink_refused_by_a_stream_that_took_its_subjects_names_it(
    nats_names: tuple[str, str],
) -> None:
    url, name = nats_names
    sink = open_sink(f"{url}?stream={name}&prefix={name}&timeout=5")
    try:
        sink.check()  # creates stream `name`
        asyncio.run(_delete(url, name))
        asyncio.run(_add(url, f"{name}_other", [f"{name}.>"]))  # another takes the subjects
        with pytest.raises(PermanentSinkError, match=f"stream '{name}_other' holds subjects"):
            sink.deliver(workload(1, 1, table="t"))
    finally:
        sink.close()


@pytest.fixture
def redis_key() -> Iterator[tuple[str, str]]:
    url = require_redis()
    key = f"create-test:{uuid.uuid4().hex}"
    yield url, key
    client = redis.Redis.from_url(url)
    client.delete(key, f"{key}:other", f"{key}:dead")
    client.close()


def test_redis_an_unknown_stream_is_an_error_listing_the_streams_and_no_key_is_made(
    redis_key: tuple[str, str],
) -> None:
    url, key = redis_key
    client = redis.Redis.from_url(url)
    client.xadd(f"{key}:other", {"id": "x", "body": "{}"})
    result = consume(f"{url}?stream={key}&timeout=2")
    assert result.exit_code == 2, result.output
    assert f"no stream '{key}'" in result.output
    assert "create=true" in result.output
    assert not client.exists(key)
    client.close()


def test_redis_create_true_makes_the_stream_and_its_group(redis_key: tuple[str, str]) -> None:
    url, key = redis_key
    transport = open_transport(f"{url}?stream={key}&create=true", group="g")
    transport.connect()
    transport.close()
    client = redis.Redis.from_url(url)
    assert [g["name"] for g in client.xinfo_groups(key)] == [b"g"]
    client.close()


@pytest.fixture
def rabbit() -> Iterator[tuple[str, str]]:
    url = require_rabbitmq()
    exchange = f"create_test_{uuid.uuid4().hex[:10]}"
    yield url, exchange
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    for queue in (f"{exchange}.g", f"{exchange}.g.dead", f"{exchange}.typo"):
        channel.queue_delete(queue)
    for name in (exchange, f"{exchange}.dead"):
        channel.exchange_delete(name)
    connection.close()


def _queue_exists(url: str, queue: str) -> bool:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        connection.channel().queue_declare(queue, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        if connection.is_open:
            connection.close()


def test_rabbitmq_an_unknown_queue_is_an_error_and_no_queue_is_declared(
    rabbit: tuple[str, str],
) -> None:
    url, exchange = rabbit
    result = consume(f"{url}?exchange={exchange}&queue={exchange}.typo&timeout=5")
    assert result.exit_code == 2, result.output
    assert f"has no queue '{exchange}.typo'" in result.output
    assert "create=true" in result.output
    assert not _queue_exists(url, f"{exchange}.typo")
    assert not _queue_exists(url, f"{exchange}.typo.dead")


def test_rabbitmq_create_true_declares_and_binds_the_queue(rabbit: tuple[str, str]) -> None:
    url, exchange = rabbit
    transport = open_transport(f"{url}?exchange={exchange}&create=true", group="g")
    transport.connect()
    transport.close()
    assert _queue_exists(url, f"{exchange}.g")
    assert not _queue_exists(url, f"{exchange}.g.dead")  # made when a message is parked
    sink = open_sink(f"{url}?exchange={exchange}")
    try:
        sink.deliver(workload(3, 3, table="t"))  # reaches the bound queue
    finally:
        sink.close()
    connection = pika.BlockingConnection(pika.URLParameters(url))
    count = connection.channel().queue_declare(f"{exchange}.g", passive=True).method.message_count
    connection.close()
    assert count == 3

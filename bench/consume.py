"""`rowcast.consume` vs a bare client loop reading the same messages, and SQL replication.

`--changes` changes (default 30,000, over 1,000 rows, updates interleaved) are put on
each broker by its rowcast sink (not timed), then read twice on loopback:

* by a `Consumer` with a no-op handler (`--workers` threads, `--batch` changes per
  handler call): fetch, decode to `Change`, dedupe, partition, handle, ack;
* by a bare client loop on its own group / consumer / queue: fetch `--batch`
  messages, ``Change.from_json`` each, ack them (Redis: ``XREADGROUP`` + ``XACK``;
  NATS: a pull consumer's ``fetch`` + ``ack``; RabbitMQ: pika ``basic_consume`` +
  ``basic_ack``; Kafka: a confluent-kafka ``Consumer`` of a group, ``consume`` +
  a synchronous ``commit`` per batch, read_committed). Kafka's rates are timed from
  the first change handled: joining a group takes the broker seconds (tansu holds a
  new member for about half its session timeout), which is not reading.

Then the replication rate into PostgreSQL: `ReplicationSink` applying batches of
`--batch` hand-made changes of one table (writes, then updates) into a fresh schema,
dropped afterwards. Everything uses fresh keys / streams / queues and removes them;
timing never fails the script, a lost message does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import platform
import threading
import time
import uuid
from collections.abc import Callable

import confluent_kafka
import nats
import pika
import redis
import sqlalchemy as sa
from confluent_kafka.admin import AdminClient, NewTopic

from rowcast.change import Change
from rowcast.consume import open_consumer
from rowcast.sinks import open_sink
from rowcast.sinks.sql import ReplicationSink
from rowcast.testing.consume import workload

REDIS, NATS = "redis://127.0.0.1:6379/15", "nats://127.0.0.1:4222"
AMQP = "amqp://guest:guest@127.0.0.1:5672/%2F"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
KAFKA = "127.0.0.1:9092"


def consume(
    url: str, group: str, count: int, workers: int, batch: int, from_first: bool = False
) -> float:
    """Seconds for a `Consumer` with a no-op handler to handle `count` changes (with
    `from_first`, timed from the first batch handled, scaled to `count`)."""
    consumer = open_consumer(
        url, lambda changes: None, group=group, workers=workers, batch_size=batch
    )
    thread = threading.Thread(target=consumer.run)
    started = time.perf_counter()
    thread.start()
    before = 0
    if from_first:
        while not consumer.stats.handled:
            time.sleep(0.001)
        started, before = time.perf_counter(), consumer.stats.handled
    while consumer.stats.handled < count:
        if not thread.is_alive():
            raise SystemExit(f"{url}: the consumer ended early")
        time.sleep(0.002)
    elapsed = time.perf_counter() - started
    consumer.stop()
    thread.join()
    return elapsed * count / (count - before) if before < count else elapsed


def bare_redis(key: str, group: str, count: int, batch: int) -> float:
    client = redis.Redis.from_url(REDIS)
    client.xgroup_create(key, group, id="0")
    started = time.perf_counter()
    seen = 0
    while seen < count:
        reply = client.xreadgroup(group, "bare", {key: ">"}, count=batch, block=1000)
        for _key, entries in reply:
            for _entry, fields in entries:
                Change.from_json(fields[b"body"])
            client.xack(key, group, *(entry for entry, _ in entries))
            seen += len(entries)
    elapsed = time.perf_counter() - started
    client.close()
    return elapsed


async def _bare_nats(stream: str, count: int, batch: int) -> float:
    nc = await nats.connect(NATS)
    js = nc.jetstream()
    sub = await js.pull_subscribe(f"{stream}.>", durable="bare", stream=stream)
    started = time.perf_counter()
    seen = 0
    while seen < count:
        for msg in await sub.fetch(batch, timeout=5):
            Change.from_json(msg.data)
            await msg.ack()
            seen += 1
    elapsed = time.perf_counter() - started
    await nc.close()
    return elapsed


def bare_rabbitmq(queue: str, count: int, batch: int) -> float:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=4 * batch)
    started = time.perf_counter()
    for seen, (method, _properties, body) in enumerate(channel.consume(queue), 1):
        Change.from_json(body)
        channel.basic_ack(method.delivery_tag)
        if seen >= count:
            break
    elapsed = time.perf_counter() - started
    channel.cancel()
    connection.close()
    return elapsed


def bare_kafka(topic: str, count: int, batch: int) -> float:
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": KAFKA,
            "group.id": f"{topic}-bare",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([topic])
    seen = 0
    started = 0.0
    while seen < count:
        messages = [m for m in consumer.consume(batch, 1.0) if m.error() is None]
        if messages and not started:
            started = time.perf_counter()
        for message in messages:
            Change.from_json(message.value())
        if messages:
            consumer.commit(asynchronous=False)
        seen += len(messages)
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed


def fill(url: str, count: int) -> None:
    sink = open_sink(url)
    changes = workload(count, 1000, table="bench")
    for start in range(0, count, 1000):
        sink.deliver(changes[start : start + 1000])
    sink.close()


def bench_redis(count: int, workers: int, batch: int) -> tuple[float, float]:
    key = f"bench-consume:{uuid.uuid4().hex}"
    url = f"{REDIS}?stream={key}"
    fill(url, count)
    try:
        return consume(url, "rowcast", count, workers, batch), bare_redis(key, "bare", count, batch)
    finally:
        client = redis.Redis.from_url(REDIS)
        client.delete(key, f"{key}:dead")
        client.close()


def bench_nats(count: int, workers: int, batch: int) -> tuple[float, float]:
    name = f"bench_consume_{uuid.uuid4().hex[:8]}"
    url = f"{NATS}?stream={name}&prefix={name}"
    fill(url, count)

    async def drop() -> None:
        nc = await nats.connect(NATS)
        for stream in (name, f"{name}_dead"):  # the dead-letter one only if used
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await nc.jetstream().delete_stream(stream)
        await nc.close()

    try:
        mine = consume(url, "rowcast", count, workers, batch)
        return mine, asyncio.run(_bare_nats(name, count, batch))
    finally:
        asyncio.run(drop())


def bench_rabbitmq(count: int, workers: int, batch: int) -> tuple[float, float]:
    exchange = f"bench_consume_{uuid.uuid4().hex[:8]}"
    url = f"{AMQP}?exchange={exchange}"
    connection = pika.BlockingConnection(pika.URLParameters(AMQP))
    channel = connection.channel()
    channel.exchange_declare(exchange, "topic", durable=True)
    for queue in (f"{exchange}.rowcast", f"{exchange}.bare"):
        channel.queue_declare(queue, durable=True)
        channel.queue_bind(queue, exchange, routing_key="#")
    fill(url, count)
    try:
        mine = consume(url, "rowcast", count, workers, batch)
        return mine, bare_rabbitmq(f"{exchange}.bare", count, batch)
    finally:
        for queue in (f"{exchange}.rowcast", f"{exchange}.bare", f"{exchange}.rowcast.dead"):
            channel.queue_delete(queue)
        for name in (exchange, f"{exchange}.dead"):
            channel.exchange_delete(name)
        connection.close()


def bench_replication(count: int, batch: int) -> float:
    schema = f"bench_replicate_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(POSTGRES.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sink = ReplicationSink(f"{POSTGRES}?mode=replicate&schema={schema}")
    rows = max(1, count // 4)
    changes = [
        [
            Change(
                "write" if i < rows else "update",
                "shop",
                "orders",
                i % rows,
                before=None if i < rows else {"id": i % rows, "qty": i - rows, "note": "x"},
                after={"id": i % rows, "qty": i, "note": f"order {i}"},
                position=f"bench:{i}",
                source="bench",
            )
        ]
        for i in range(count)
    ]
    try:
        sink.deliver(changes[:1])  # the table is created outside the timing
        started = time.perf_counter()
        for start in range(1, count, batch):
            sink.deliver(changes[start : start + batch])
        elapsed = time.perf_counter() - started
        with engine.connect() as conn:
            stored = conn.execute(sa.text(f'SELECT count(*) FROM "{schema}".orders')).scalar()
        if stored != rows:
            raise SystemExit(f"replication: {stored} rows, expected {rows}")
        return elapsed
    finally:
        sink.close()
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def bench_kafka(count: int, workers: int, batch: int) -> tuple[float, float]:
    topic = f"bench-consume-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": KAFKA})
    admin.create_topics([NewTopic(topic, 3)])[topic].result()
    fill(f"kafka://{KAFKA}?topic={topic}", count)
    url = f"kafka://{KAFKA}?topics={topic}&session.timeout.ms=6000"
    try:
        mine = consume(url, f"{topic}-rowcast", count, workers, batch, from_first=True)
        return mine, bare_kafka(topic, count, batch)
    finally:
        names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(topic)]
        for future in admin.delete_topics(names).values():
            future.result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=30_000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    count, workers, batch = args.changes, args.workers, args.batch
    print(
        f"rowcast.consume, {count:,} changes, {workers} workers, batches of {batch}, no-op "
        f"handler; Python {platform.python_version()}\n"
    )
    print(f"{'broker':<10} {'rowcast/s':>10} {'bare loop/s':>12} {'ratio':>6}")
    benches: list[tuple[str, Callable[[int, int, int], tuple[float, float]]]] = [
        ("redis", bench_redis),
        ("nats", bench_nats),
        ("rabbitmq", bench_rabbitmq),
        ("kafka", bench_kafka),
    ]
    for name, bench in benches:
        mine, bare = bench(count, workers, batch)
        print(f"{name:<10} {count / mine:>10,.0f} {count / bare:>12,.0f} {bare / mine:>6.2f}")
    replicated = bench_replication(count, batch)
    print(
        f"\nreplication into PostgreSQL (ReplicationSink, batches of {batch}): "
        f"{(count - 1) / replicated:,.0f} changes/s"
    )


if __name__ == "__main__":
    main()

"""The broker sinks vs the bare driver loop each one is built on.

`--changes` changes (default 50,000) in batches of `--batch` (default 500: 100
transactions of 5 changes over 2 tables), delivered on loopback to

* Redis Streams: `RedisSink` (one stream per table, then one stream for all) vs a bare
  redis-py ``pipeline(transaction=False)`` of ``XADD`` per batch;
* NATS JetStream: `NatsSink` vs a bare nats-py loop of ``js.publish_async`` per change,
  then awaiting every ack of the batch;
* RabbitMQ: `RabbitMQSink` vs a bare pika ``BlockingChannel`` in confirm mode,
  ``basic_publish(mandatory=True)`` per change;
* Kafka: `KafkaSink` (one topic per table, one topic, and one topic in a transaction
  with a Kafka checkpoint: exactly once) vs a bare confluent-kafka ``Producer`` (the
  sink's settings: idempotent, ``acks=all``, ``linger.ms=5``) producing each change
  with its key and headers, then ``flush()`` per batch. Target: the sink at 0.8x the
  bare loop or better.

The bare loops send the same message (``Change.to_json()``, the change id, the same
fields, headers or properties), encoded inside the timing as a sink must. Each run
uses fresh keys / streams / exchanges and removes them. Timing never fails the script;
a destination that misses a message does.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import time
import uuid
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import confluent_kafka
import nats
import pika
import redis
from confluent_kafka.admin import AdminClient

from rowcast.change import Change
from rowcast.checkpoint import open_checkpoint
from rowcast.codec import dumps
from rowcast.sinks import open_sink
from rowcast.sinks.base import Batch, identified
from rowcast.testing.sink import transactions

REDIS, NATS = "redis://127.0.0.1:6379/15", "nats://127.0.0.1:4222"
AMQP = "amqp://guest:guest@127.0.0.1:5672/%2F"
KAFKA = "127.0.0.1:9092"
TARGET = 20_000.0  # changes/s for Redis and NATS (Debezium Server's figure is ~23,000)


def workload(changes: int, batch: int) -> list[Batch]:
    per_tx = 5
    txs = transactions(changes // per_tx, per_transaction=per_tx)
    step = max(1, batch // per_tx)
    return [txs[i : i + step] for i in range(0, len(txs), step)]


def timed(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


# ---------------------------------------------------------------- Redis


def redis_runs(batches: list[Batch], total: int) -> dict[str, float]:
    client = redis.Redis.from_url(REDIS)
    run = f"bench-sinks:{uuid.uuid4().hex}"
    results: dict[str, float] = {}
    try:

        def sink(url: str) -> Callable[[], None]:
            def go() -> None:
                opened = open_sink(url)
                for batch in batches:
                    opened.deliver(batch)
                opened.close()

            return go

        def bare() -> None:
            key = f"{run}:bare"
            for batch in batches:
                pipe = client.pipeline(transaction=False)
                for cid, change in identified(batch):
                    fields = {
                        "id": str(cid),
                        "topic": change.topic,
                        "name": change.name,
                        "body": change.to_json(),
                    }
                    pipe.xadd(key, fields)  # type: ignore[arg-type]
                pipe.execute()

        results["bare"] = total / timed(bare)
        results["per table"] = total / timed(sink(f"{REDIS}?prefix={run}:t"))
        results["one stream"] = total / timed(sink(f"{REDIS}?stream={run}:all"))
        stored = sum(client.xlen(k) for k in client.scan_iter(match=f"{run}:t:*"))
        for key, count in ((f"{run}:bare", total), (f"{run}:all", total)):
            assert client.xlen(key) == count, (key, client.xlen(key), count)
        assert stored == total, (stored, total)
    finally:
        keys = list(client.scan_iter(match=f"{run}*"))
        if keys:
            client.delete(*keys)
        client.close()
    return results


# ---------------------------------------------------------------- NATS


async def _nats_bare(batches: list[Batch], name: str) -> None:
    nc = await nats.connect(NATS)
    js = nc.jetstream()
    try:
        for batch in batches:
            futures = []
            for cid, change in identified(batch):
                subject = f"{name}.{change.schema}.{change.table}.{change.action.value}"
                futures.append(
                    await js.publish_async(
                        subject,
                        change.to_json().encode(),
                        stream=name,
                        headers={"Nats-Msg-Id": str(cid)},
                    )
                )
            await asyncio.gather(*futures)
    finally:
        await nc.close()


async def _nats_admin(call: Callable[[Any], Any]) -> Any:
    nc = await nats.connect(NATS)
    try:
        return await call(nc.jetstream())
    finally:
        await nc.close()


def nats_runs(batches: list[Batch], total: int) -> dict[str, float]:
    bare_name, sink_name = (f"bench_sinks_{uuid.uuid4().hex}" for _ in range(2))
    results: dict[str, float] = {}
    try:
        asyncio.run(
            _nats_admin(lambda js: js.add_stream(name=bare_name, subjects=[f"{bare_name}.>"]))
        )
        results["bare"] = total / timed(lambda: asyncio.run(_nats_bare(batches, bare_name)))

        def sink() -> None:
            opened = open_sink(f"{NATS}?stream={sink_name}&prefix={sink_name}")
            for batch in batches:
                opened.deliver(batch)
            opened.close()

        results["sink"] = total / timed(sink)
        for name in (bare_name, sink_name):
            info = asyncio.run(_nats_admin(lambda js, n=name: js.stream_info(n)))
            assert info.state.messages == total, (name, info.state.messages, total)
    finally:
        for name in (bare_name, sink_name):
            try:
                asyncio.run(_nats_admin(lambda js, n=name: js.delete_stream(n)))
            except Exception as e:  # a stream the failed run never made
                print(f"  (cleanup of {name}: {e!r})")
    return results


# ---------------------------------------------------------------- RabbitMQ


def rabbitmq_runs(batches: list[Batch], total: int) -> dict[str, float]:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP))
    admin = connection.channel()
    bare_ex, sink_ex = (f"bench-sinks-{uuid.uuid4().hex}" for _ in range(2))
    results: dict[str, float] = {}
    try:
        for exchange in (bare_ex, sink_ex):
            admin.exchange_declare(exchange, "topic", durable=True)
            admin.queue_declare(exchange, durable=True)
            admin.queue_bind(exchange, exchange, "#")

        def bare() -> None:
            publisher = pika.BlockingConnection(pika.URLParameters(AMQP))
            channel = publisher.channel()
            channel.confirm_delivery()
            for batch in batches:
                for cid, change in identified(batch):
                    channel.basic_publish(
                        bare_ex,
                        f"{change.schema}.{change.table}.{change.action.value}",
                        change.to_json().encode(),
                        pika.BasicProperties(
                            content_type="application/json",
                            delivery_mode=2,
                            message_id=str(cid),
                            type=change.name,
                            timestamp=int(change.ts),
                            app_id="rowcast",
                        ),
                        mandatory=True,
                    )
            publisher.close()

        def sink() -> None:
            opened = open_sink(f"{AMQP}?exchange={sink_ex}")
            for batch in batches:
                opened.deliver(batch)
            opened.close()

        results["bare"] = total / timed(bare)
        results["sink"] = total / timed(sink)
        for exchange in (bare_ex, sink_ex):
            count = admin.queue_declare(exchange, durable=True, passive=True).method.message_count
            assert count == total, (exchange, count, total)
    finally:
        for exchange in (bare_ex, sink_ex):
            admin.queue_delete(exchange)
            admin.exchange_delete(exchange)
        connection.close()
    return results


# ---------------------------------------------------------------- Kafka


def kafka_runs(batches: list[Batch], total: int) -> dict[str, float]:
    run = f"bench-sinks-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": KAFKA})
    results: dict[str, float] = {}

    def sink(url: str, checkpoint: str | None = None) -> Callable[[], None]:
        def go() -> None:
            opened: Any = open_sink(url)
            saved = open_checkpoint(checkpoint) if checkpoint else None
            if saved is not None:
                assert opened.join(saved)
                saved.load()  # registers the transactional producer, as a relay's start does
            for batch in batches:
                opened.deliver(batch)
            opened.close()
            if saved is not None:
                saved.close()

        return go

    def bare() -> None:
        producer = confluent_kafka.Producer(
            {
                "bootstrap.servers": KAFKA,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
            }
        )
        failed: list[Any] = []
        topic = f"{run}.bare"
        for batch in batches:
            for cid, change in identified(batch):
                pk = change.pk
                key = str(pk) if type(pk) is int else dumps(pk)
                headers = [("rowcast-id", str(cid)), ("rowcast-position", change.position or "")]
                while True:
                    try:
                        producer.produce(
                            topic,
                            change.to_json(),
                            key,
                            headers=headers,
                            on_delivery=lambda e, _: failed.append(e) if e else None,
                        )
                        break
                    except BufferError:
                        producer.poll(0.05)
            assert producer.flush(30) == 0
        assert not failed, failed[0]

    try:
        sink(f"kafka://{KAFKA}?topic={run}.warm")()  # the broker's first topic, untimed
        for name in ("bare", "all", "eos"):
            admin.create_topics([confluent_kafka.admin.NewTopic(f"{run}.{name}", 1)])
        time.sleep(1)
        results["bare"] = total / timed(bare)
        results["per table"] = total / timed(sink(f"kafka://{KAFKA}?prefix={run}.t"))
        results["one topic"] = total / timed(sink(f"kafka://{KAFKA}?topic={run}.all"))
        results["exactly once"] = total / timed(
            sink(f"kafka://{KAFKA}?topic={run}.eos", f"kafka://{KAFKA}?topic={run}.cp")
        )
    finally:
        names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(run)]
        if names:
            for future in admin.delete_topics(names).values():
                future.result()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    batches = workload(args.changes, args.batch)
    total = sum(len(tx) for batch in batches for tx in batch)
    sample = batches[0][0][0]
    print(
        f"{total:,} changes in {len(batches)} batches of ~{args.batch}, "
        f"{len(Change.to_json(sample))}-byte bodies; Python {platform.python_version()}, "
        f"redis-py {version('redis')}, nats-py {version('nats-py')}, pika {version('pika')}, "
        f"confluent-kafka {version('confluent-kafka')}"
    )
    rows: list[tuple[str, str, float, float, float | None]] = []
    r = redis_runs(batches, total)
    rows += [
        ("Redis Streams", f"RedisSink, {k}", r[k], r["bare"], TARGET)
        for k in ("per table", "one stream")
    ]
    n = nats_runs(batches, total)
    rows.append(("NATS JetStream", "NatsSink", n["sink"], n["bare"], TARGET))
    q = rabbitmq_runs(batches, total)
    rows.append(("RabbitMQ", "RabbitMQSink (confirms)", q["sink"], q["bare"], None))
    kf = kafka_runs(batches, total)
    rows += [
        ("Kafka", f"KafkaSink, {k}", kf[k], kf["bare"], 0.8 * kf["bare"])
        for k in ("per table", "one topic", "exactly once")
    ]
    print(f"\n{'broker':<16}{'sink':<28}{'changes/s':>11}{'bare/s':>11}{'ratio':>7}  target")
    for broker, name, rate, bare, target in rows:
        verdict = (
            "" if target is None else f"{target:,.0f}/s {'ok' if rate >= target else 'MISSED'}"
        )
        print(f"{broker:<16}{name:<28}{rate:>11,.0f}{bare:>11,.0f}{rate / bare:>7.2f}  {verdict}")


if __name__ == "__main__":
    main()

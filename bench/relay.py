"""Relay throughput: changes/s from a MariaDB binlog to each sink, and to all of them at once.

A workload of `--changes` row changes (inserts, then updates of the same rows, in
transactions of `--tx-size` rows) is committed to a table of this run's own. Then the
same binlog stretch is relayed by ``Relay(BinlogSource(start, end), sinks, checkpoint)``
once per target: the bare source (read and count, no sink: the ceiling), stdout (to
/dev/null), the SQLite event store (``synchronous=normal``), Redis Streams, NATS
JetStream, RabbitMQ, Kafka (a topic; then a topic with the checkpoint in Kafka too,
each batch and its position one transaction: exactly once) (each whose module imports
and whose server answers), then every sink at once; then all of that again with the
source read in a child process (``ProcessSource``, ``rowcast relay --source-process``):
the "vs thread" column.
Changes/s is the workload's changes over the wall time of
the run, start to final checkpoint. The first row is python-mysql-replication's own loop
on the same stretch (every row decoded, nothing else): the bare loop the source is
compared with. References: Debezium Server's published ~23,000 ops/s, Sequin's over
50,000 ops/s (both on larger machines). Targets (issue 23): the source alone >= 3x the
bare loop; >= 40,000 changes/s to Redis Streams (and Kafka), >= 30,000/s to NATS,
>= 15,000/s to every sink at once. Every run must deliver every change (checked), timing
never fails the script. Kafka's rows are also held to Redis Streams' rate in the same mode
(issue 19: the relay to Kafka at least as fast as to Redis Streams). Each run to the store
and to NATS has a new store file, a new JetStream stream: none re-delivers ids already seen;
each run to Kafka a new topic and each to RabbitMQ an empty queue (as its consumers would
keep it): none pays for what an earlier run left (tansu appends slower to a full topic).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import itertools
import os
import platform
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import pymysql

from rowcast.checkpoint import open_checkpoint
from rowcast.relay import Relay
from rowcast.sinks.base import Sink, open_sink
from rowcast.sinks.stdout import StdoutSink
from rowcast.sources._process import ProcessSource
from rowcast.sources.base import Source
from rowcast.sources.mysql import BinlogSource

REFERENCE = 23_000  # Debezium Server, ops/s
TARGETS = {"redis streams": 40_000, "kafka": 40_000, "nats jetstream": 30_000, "all": 15_000}
SOURCE_TARGET = 3.0  # the source alone, times the bare loop
SERVER_ID = 3_300_000_000 + os.getpid() % 1_000_000 * 10  # never kick a peer off
NAME = f"relay_bench_{os.getpid()}"
COLUMNS = "name VARCHAR(64), qty INT, price DECIMAL(10,2), created_at DATETIME"


def position(conn: Any) -> str:
    with conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        name, pos = cur.fetchone()[:2]
    return f"{name}:{pos}"


def workload(conn: Any, changes: int, tx_size: int) -> tuple[str, str]:
    """Half inserts, half updates of those rows; the binlog stretch (start, end) holding them."""
    rows = changes // 2
    t0 = datetime(2024, 1, 1)
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {NAME} (id INT PRIMARY KEY, {COLUMNS})")
        start = position(conn)
        insert = f"INSERT INTO {NAME} VALUES (%s, %s, %s, %s, %s)"
        for first in range(0, rows, tx_size):
            batch = range(first, min(first + tx_size, rows))
            values = [
                (i, f"item-{i:05d}", i % 17, Decimal(i % 10000) / 4, t0 + timedelta(i))
                for i in batch
            ]
            cur.executemany(insert, values)
            conn.commit()
        for first in range(0, rows, tx_size):
            last = min(first + tx_size, rows) - 1
            cur.execute(f"UPDATE {NAME} SET qty = qty + 1 WHERE id BETWEEN {first} AND {last}")
            conn.commit()
        return start, position(conn)


def reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or default_port), 2):
            return True
    except OSError:
        return False


class Target:
    """A destination: how to open its sink, and how to clean up after it; `checkpoint`
    (the run's number -> a checkpoint URL) when it keeps the relay's position itself."""

    def __init__(
        self,
        name: str,
        open_: Callable[[], Sink],
        cleanup: Callable[[], None],
        checkpoint: Callable[[int], str] | None = None,
    ) -> None:
        self.name, self.open, self.cleanup = name, open_, cleanup
        self.checkpoint = checkpoint


def targets(args: argparse.Namespace, tmp: str) -> Iterator[Target]:
    devnull = open(os.devnull, "w")  # noqa: SIM115 - closed with the stdout target
    yield Target("stdout", lambda: StdoutSink(stream=devnull), devnull.close)
    opened = itertools.count(1)  # a new store each time: never a re-delivery to a full one

    def new_store() -> Sink:
        return open_sink(f"sqlite:///{tmp}/events-{next(opened)}.db?synchronous=normal")

    yield Target("store (sqlite)", new_store, lambda: None)
    if _imports("redis") and reachable(args.redis, 6379):
        import redis

        def drop_redis() -> None:
            with redis.Redis.from_url(args.redis) as client:
                client.delete(NAME)

        yield Target("redis streams", lambda: open_sink(f"{args.redis}?stream={NAME}"), drop_redis)
    if _imports("nats") and reachable(args.nats, 4222):
        streams: list[str] = []

        def new_stream() -> Sink:  # each run its own: JetStream drops ids it has seen
            streams.append(f"{NAME}_{len(streams) + 1}")
            return open_sink(f"{args.nats}?stream={streams[-1]}&prefix={streams[-1]}")

        yield Target(
            "nats jetstream", new_stream, lambda: asyncio.run(_drop_nats(args.nats, streams))
        )
    if _imports("rabbitmq") and reachable(args.amqp, 5672):
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(args.amqp))
        channel = connection.channel()
        channel.exchange_declare(NAME, "topic", durable=True)
        channel.queue_declare(NAME)  # mandatory publishing needs a bound queue
        channel.queue_bind(NAME, NAME, "#")

        def drop_rabbitmq() -> None:
            channel.queue_delete(NAME)
            channel.exchange_delete(NAME)
            connection.close()

        def new_rabbitmq() -> Sink:  # an empty queue, as one its consumers drain would be
            channel.queue_purge(NAME)
            return open_sink(f"{args.amqp}?exchange={NAME}")

        yield Target("rabbitmq", new_rabbitmq, drop_rabbitmq)
    if _imports("kafka") and reachable(args.kafka, 9092):
        from confluent_kafka.admin import AdminClient

        servers = urlsplit(args.kafka).netloc
        topic = NAME.replace("_", "-")

        def drop_kafka() -> None:
            admin = AdminClient({"bootstrap.servers": servers})
            names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(topic)]
            for future in admin.delete_topics(names).values() if names else ():
                future.result()

        topics = itertools.count(1)  # each run its own topic: tansu appends slower to a full one

        def new_topic() -> Sink:
            return open_sink(f"{args.kafka}?topic={topic}-{next(topics)}")

        yield Target("kafka", new_topic, drop_kafka)
        yield Target(
            "kafka (exactly once)",
            lambda: open_sink(f"{args.kafka}?topic={topic}-eos"),
            lambda: None,
            lambda k: f"{args.kafka}?topic={topic}-checkpoints&name=run{k}",
        )


def chosen(args: argparse.Namespace, name: str) -> bool:
    """Whether `--only` leaves the target `name` in (every target without it)."""
    return not args.only or any(word in name for word in args.only)


def _imports(module: str) -> bool:
    try:
        importlib.import_module(f"rowcast.sinks.{module}")
    except ImportError:
        return False
    return True


async def _drop_nats(url: str, streams: list[str]) -> None:
    import nats

    nc = await nats.connect(url)
    try:
        for stream in streams:
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


def source(args: argparse.Namespace, start: str, end: str, k: int) -> BinlogSource:
    return BinlogSource(
        args.url, tables=[f"test.{NAME}"], start=start, end=end, server_id=SERVER_ID + k
    )


def process_source(args: argparse.Namespace, start: str, end: str, k: int, pos: str) -> Source:
    """The same source read in a child process (``rowcast relay --source-process``)."""
    return ProcessSource(
        args.url, pos, tables=[f"test.{NAME}"], start=start, end=end, server_id=SERVER_ID + k
    )


def library_loop(url: str, start: str, end: str, server_id: int, table: str) -> int:
    """python-mysql-replication's own loop on the stretch, decoding every row of `table`."""
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.event import GtidEvent, MariadbGtidEvent, QueryEvent, XidEvent
    from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

    parts = urlsplit(url)
    name, _, pos = start.rpartition(":")
    end_file, _, end_pos = end.rpartition(":")
    stream = BinLogStreamReader(
        connection_settings={
            "host": parts.hostname,
            "port": parts.port or 3306,
            "user": parts.username or "root",
            "passwd": parts.password or "",
        },
        server_id=server_id,
        log_file=name,
        log_pos=int(pos),
        resume_stream=True,
        blocking=True,
        is_mariadb=False,
        only_events=[
            GtidEvent,
            MariadbGtidEvent,
            QueryEvent,
            XidEvent,
            WriteRowsEvent,
            UpdateRowsEvent,
            DeleteRowsEvent,
        ],
    )
    count = 0
    try:
        for event in stream:
            rows = isinstance(event, WriteRowsEvent | UpdateRowsEvent | DeleteRowsEvent)
            if rows and event.table == table:
                count += len(event.rows)
            if (stream.log_file, stream.log_pos) >= (end_file, int(end_pos)):
                break
    finally:
        stream.close()
    return count


def loop(args: argparse.Namespace, start: str, end: str) -> tuple[float, int]:
    t = time.perf_counter()
    count = library_loop(args.url, start, end, SERVER_ID + 999, NAME)
    return time.perf_counter() - t, count


def bare(args: argparse.Namespace, start: str, end: str) -> tuple[float, int]:
    t = time.perf_counter()
    count = sum(len(tx) for tx in source(args, start, end, 0))
    return time.perf_counter() - t, count


def relay(
    args: argparse.Namespace,
    start: str,
    end: str,
    sinks: list[Sink],
    tmp: str,
    k: int,
    process: bool = False,
    checkpoint_url: str | None = None,
) -> tuple[float, int]:
    pos = checkpoint_url or f"{tmp}/pos-{k}"
    with open_checkpoint(pos) as checkpoint:
        read = process_source(args, start, end, k, pos) if process else source(args, start, end, k)
        run = Relay(read, sinks, checkpoint, batch_size=args.batch_size)
        t = time.perf_counter()
        run.run()
        elapsed = time.perf_counter() - t
    for sink in sinks:
        sink.close()
    return elapsed, run.stats.changes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="mysql://root@127.0.0.1:3306/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--kafka", default="kafka://127.0.0.1:9092")
    parser.add_argument("--changes", type=int, default=50_000, help="row changes in the workload")
    parser.add_argument("--tx-size", type=int, default=5, help="rows per transaction")
    parser.add_argument("--batch-size", type=int, default=1000, help="the relay's batch size")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="WORD",
        help="only the targets whose name holds one of these words (e.g. kafka redis all)",
    )
    parser.add_argument(
        "--modes", nargs="+", choices=["thread", "process"], default=["thread", "process"]
    )
    args = parser.parse_args()

    parts = urlsplit(args.url)
    conn = pymysql.connect(
        host=parts.hostname, port=parts.port or 3306, user="root", database="test"
    )
    with (
        tempfile.TemporaryDirectory(prefix="rowcast-bench-relay-") as tmp,
        contextlib.ExitStack() as undo,
    ):
        undo.callback(conn.close)
        undo.callback(lambda: conn.cursor().execute(f"DROP TABLE IF EXISTS {NAME}"))
        start, end = workload(conn, args.changes, args.tx_size)
        print(
            f"rowcast relay bench: {args.changes:,} changes in transactions of {args.tx_size} "
            f"rows; batch size {args.batch_size}; Python {platform.python_version()}, "
            f"{os.cpu_count()} CPUs"
        )
        results: list[tuple[str, str, float, int]] = [
            ("python-mysql-replication loop", "-", *loop(args, start, end)),
            ("source only (no sink)", "thread", *bare(args, start, end)),
        ]
        found = list(targets(args, tmp))
        for target in found:
            undo.callback(target.cleanup)
        k = 0
        for mode in args.modes:  # in a thread, then --source-process
            process = mode == "process"
            for target in found:
                k += 1
                if not chosen(args, target.name):
                    continue
                url = target.checkpoint(k) if target.checkpoint else None
                run = relay(args, start, end, [target.open()], tmp, k, process, url)
                results.append((target.name, mode, *run))
            if len(found) > 1 and chosen(args, "all"):
                sinks = [target.open() for target in found if target.checkpoint is None]
                k += 1
                run = relay(args, start, end, sinks, tmp, k, process)
                results.append((f"all {len(sinks)} at once", mode, *run))

    print()
    threaded = {name: count / seconds for name, mode, seconds, count in results if mode == "thread"}
    loop_rate = results[0][3] / results[0][2]
    print(
        "| target | source read in | seconds | changes/s | vs thread | "
        "vs Debezium Server 23,000/s | target |"
    )
    print("|---|---|---:|---:|---:|---:|---|")
    for name, mode, seconds, count in results:
        if count != args.changes:
            raise SystemExit(f"{name}: delivered {count} changes, not {args.changes}")
        rate = count / seconds
        goal = ""
        wanted = TARGETS.get("all" if name.startswith("all ") else name)
        if wanted is not None:
            goal = f"{'met' if rate >= wanted else 'missed'} (>= {wanted:,}/s)"
        elif name.startswith("source only"):
            times = rate / loop_rate
            verdict = "met" if times >= SOURCE_TARGET else "missed"
            goal = f"{verdict}: {times:.2f}x the loop (>= {SOURCE_TARGET:.0f}x)"
        redis = {m: c / s for n, m, s, c in results if n == "redis streams"}.get(mode)
        if name.startswith("kafka") and redis:
            versus = f"{'met' if rate >= redis else 'missed'} (>= redis streams {redis:,.0f}/s)"
            goal = f"{goal}; {versus}" if goal else versus
        gain = "1.00" if mode == "thread" else "-"
        if mode == "process" and name in threaded:
            gain = f"{rate / threaded[name]:.2f}"
        print(
            f"| {name} | {mode} | {seconds:.2f} | {rate:,.0f} | {gain} | "
            f"{rate / REFERENCE:.2f} | {goal} |"
        )


if __name__ == "__main__":
    main()

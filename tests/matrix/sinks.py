"""The matrix's sinks: where one case's relay delivers, and how the case reads it back.

Each factory is a context manager that makes a place of this case's own, yields a
`Destination` (the ``--to`` URL, and how to read back what arrived), and removes
what it made after. Two kinds:

* `Changes` (the event store, Redis Streams, NATS JetStream, RabbitMQ, Kafka, stdout):
  every message as ``(change id, Change)``, in the order the destination holds them
  (``kafka-exactly-once`` keeps its checkpoint in Kafka: one transaction per batch);
* `Replica` (``?mode=replicate`` into SQLite, PostgreSQL, MariaDB): the rows of its
  table ``test``, by id.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pymysql
import sqlalchemy as sa

from rowcast.change import Change
from rowcast.store import EventStore
from tests import kafka as kafka_topics
from tests.conftest import require_kafka, require_redis, require_server
from tests.matrix.sources import MARIADB, POSTGRES, Rows, unique_name
from tests.sinks import require_nats, require_rabbitmq
from tests.targets import Arrived, KafkaTarget, NatsTarget, RabbitTarget, RedisTarget

__all__ = ["SINKS", "Changes", "Destination", "Replica", "stdout_file"]

EXACTLY_ONCE = "exactly once"
AT_LEAST_ONCE = "at least once"


@dataclasses.dataclass
class Changes:
    """A destination of messages: each change at least once (or, `exactly`, once)."""

    url: str  #: the relay's --to
    arrived: Callable[[], Arrived]  #: every message so far: (change id, Change)
    promise: str = AT_LEAST_ONCE
    checkpoint: str | None = None  #: the relay's --checkpoint (None: a file of the case's)


@dataclasses.dataclass
class Replica:
    """A replica: after the relay, its table ``test`` holds the source's rows, once."""

    url: str  #: the relay's --to
    rows: Callable[[], Rows | None]  #: its table ``test`` now, by id (None: no table yet)
    promise: str = EXACTLY_ONCE


Destination = Changes | Replica


def stdout_file(tmp: Path, run: int) -> Path:
    """Where the relay's standard output goes in run `run` (1, then 2 after the kill)."""
    return tmp / f"stdout-{run}.jsonl"


@contextlib.contextmanager
def stdout(tmp: Path) -> Iterator[Changes]:
    """``--to -``: the JSON lines each run printed, both runs' output one after the other."""

    def arrived() -> Arrived:
        got = []
        for run in (1, 2):
            path = stdout_file(tmp, run)
            text = path.read_text() if path.exists() else ""
            for line in text.splitlines(keepends=True):
                if line.endswith("\n"):  # a line cut by SIGKILL was never acknowledged
                    data = json.loads(line)
                    got.append((data.pop("id"), Change.from_dict(data)))
        return got

    yield Changes("-", arrived)


@contextlib.contextmanager
def store(tmp: Path) -> Iterator[Changes]:
    """The SQLite event store: every change once, whatever was delivered again."""
    path = tmp / "events.db"

    def arrived() -> Arrived:
        if not path.exists():
            return []
        with EventStore(f"sqlite:///{path}") as events:
            return [(str(e.id), Change(**e.data)) for e in events.read_all()]

    yield Changes(f"sqlite:///{path}?synchronous=normal", arrived, EXACTLY_ONCE)


@contextlib.contextmanager
def _broker(require: Callable[[], str], make: Any) -> Iterator[Changes]:
    target = make(require(), "rc_mx")
    try:
        yield Changes(target.sink, target.arrived)
    finally:
        target.close()


def redis(tmp: Path) -> contextlib.AbstractContextManager[Changes]:
    """Redis Streams: one stream key, read back with XRANGE."""
    return _broker(require_redis, RedisTarget)


def nats(tmp: Path) -> contextlib.AbstractContextManager[Changes]:
    """NATS JetStream: a stream of this case's own, read back message by message."""
    return _broker(require_nats, NatsTarget)


def rabbitmq(tmp: Path) -> contextlib.AbstractContextManager[Changes]:
    """RabbitMQ: an exchange and a queue bound to it before the relay starts."""
    return _broker(require_rabbitmq, RabbitTarget)


def kafka(tmp: Path) -> contextlib.AbstractContextManager[Changes]:
    """Kafka: a topic of this case's own (one partition), the checkpoint a file."""
    return _broker(require_kafka, KafkaTarget)


@contextlib.contextmanager
def kafka_exactly_once(tmp: Path) -> Iterator[Changes]:
    """Kafka with its checkpoint in Kafka: each batch and its position one transaction.

    Read back read_committed; on a broker that shows aborted transactions (tansu 0.6),
    the messages of a transaction whose checkpoint record never came are dropped first.
    """
    url = require_kafka()
    target = KafkaTarget(url, "rc_mx")
    checkpoints = f"{target.topic}.checkpoints"

    def arrived() -> Arrived:
        if not kafka_topics.topics(target.topic):
            return []
        labels = kafka_topics.committed_transactions(checkpoints)
        got = []
        for message in kafka_topics.read([target.topic]):
            headers = dict(message.headers())
            if headers["rowcast-transaction"].decode() in labels:
                got.append((headers["rowcast-id"].decode(), Change.from_json(message.value())))
        return got

    try:
        yield Changes(target.sink, arrived, EXACTLY_ONCE, f"{url}?topic={checkpoints}")
    finally:
        target.close()
        kafka_topics.delete_topics(checkpoints)


def _rows(url: str, schema: str | None = None) -> Rows | None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("test", schema=schema):
                return None
            table = sa.Table("test", sa.MetaData(), schema=schema, autoload_with=conn)
            query = sa.select(table.c.id, table.c.data).order_by(table.c.id)
            return [tuple(row) for row in conn.execute(query)]
    finally:
        engine.dispose()


@contextlib.contextmanager
def sqlite_replica(tmp: Path) -> Iterator[Replica]:
    """Replication into a SQLite file."""
    path = tmp / "replica.db"
    yield Replica(f"sqlite:///{path}?mode=replicate", lambda: _rows(f"sqlite:///{path}"))


@contextlib.contextmanager
def postgres_replica(tmp: Path) -> Iterator[Replica]:
    """Replication into a PostgreSQL schema of this case's own."""
    require_server("postgresql")
    schema = unique_name("rc_mxr")
    conn = psycopg2.connect(POSTGRES)
    conn.autocommit = True
    try:
        conn.cursor().execute(f"CREATE SCHEMA {schema}")
        yield Replica(
            f"{POSTGRES}?mode=replicate&schema={schema}",
            lambda: _rows(POSTGRES.replace("://", "+psycopg://", 1), schema),
        )
    finally:
        conn.cursor().execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.close()


@contextlib.contextmanager
def mariadb_replica(tmp: Path) -> Iterator[Replica]:
    """Replication into a MariaDB database of this case's own."""
    require_server("mysql")
    name = unique_name("rc_mxr")
    conn = pymysql.connect(**MARIADB, autocommit=True)  # type: ignore[arg-type]
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
        url = f"mysql://root@127.0.0.1:3306/{name}"
        yield Replica(f"{url}?mode=replicate", lambda: _rows(url.replace("://", "+pymysql://", 1)))
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.close()


SINKS: dict[str, Callable[[Path], contextlib.AbstractContextManager[Destination]]] = {
    "store": store,
    "redis": redis,
    "nats": nats,
    "rabbitmq": rabbitmq,
    "kafka": kafka,
    "kafka-exactly-once": kafka_exactly_once,
    "sqlite-replica": sqlite_replica,
    "postgres-replica": postgres_replica,
    "mariadb-replica": mariadb_replica,
    "stdout": stdout,
}

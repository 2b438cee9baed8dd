"""Shared fixtures: real database servers, skipped on a laptop without them, required in CI."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

SERVERS = {
    "postgresql": os.environ.get(
        "ROWCAST_TEST_POSTGRESQL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    ),
    "mysql": os.environ.get("ROWCAST_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}


def require_server(name: str) -> str:
    """The URL of server `name`; skip the test when it is down, but fail in CI."""
    url = SERVERS[name]
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as error:
        message = f"{name} server not reachable at {url}: {error.orig}"
        if IN_CI:
            pytest.fail(message + " (CI=true: the server must run)")
        pytest.skip(message)
    finally:
        engine.dispose()
    return url


@contextlib.contextmanager
def private_schema(prefix: str) -> Iterator[str]:
    """A new schema ``<prefix>_<random>`` in the test database, dropped with its tables after."""
    url = require_server("postgresql")
    schema = f"{prefix}_{uuid.uuid4().hex[:8]}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield schema
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()


def sqlite_engine(path: Path) -> Engine:
    """A SQLite engine whose SAVEPOINTs behave (pysqlite's legacy BEGIN handling off)."""
    engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn):  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN")

    return engine


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.server),
        pytest.param("mysql", marks=pytest.mark.server),
    ]
)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on each database the ORM capture must work with."""
    if request.param == "sqlite":
        eng = sqlite_engine(tmp_path / "test.db")
    else:
        eng = create_engine(require_server(request.param))
    yield eng
    eng.dispose()


REDIS_URL = os.environ.get("ROWCAST_TEST_REDIS", "redis://127.0.0.1:6379/15")


def require_redis() -> str:
    """The URL of the test Redis (db 15); skip the test when it is down, but fail in CI."""
    try:
        import redis
    except ImportError as error:  # the dev extra installs it
        if IN_CI:
            pytest.fail(f"redis-py is not installed: {error} (CI=true: pip install -e '.[dev]')")
        pytest.skip(f"redis-py is not installed: {error}")

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        message = f"redis server not reachable at {REDIS_URL}: {error}"
        if IN_CI:
            pytest.fail(message + " (CI=true: the server must run)")
        pytest.skip(message)
    finally:
        client.close()
    return REDIS_URL


class Hung(BaseException):
    """A command under test ran past its deadline (see `deadline`)."""


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Raise `Hung` in the main thread if the block is still running after `seconds`:
    a command that should have stopped at once (bad input) fails the test instead of
    hanging it. A BaseException, so no ``except Exception`` of the command catches it."""

    def expired(signum: int, frame: Any) -> None:
        raise Hung(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


KAFKA_URL = os.environ.get("ROWCAST_TEST_KAFKA", "kafka://127.0.0.1:9092")


def require_kafka() -> str:
    """The URL of the test Kafka broker (scripts/services.sh starts tansu on 127.0.0.1:9092);
    skip the test when it is down or confluent-kafka is missing, but fail in CI."""
    try:
        from confluent_kafka.admin import AdminClient
    except ImportError as error:  # the dev extra installs it
        if IN_CI:
            pytest.fail(
                f"confluent-kafka is not installed: {error} (CI=true: pip install -e '.[dev]')"
            )
        pytest.skip(f"confluent-kafka is not installed: {error}")
    servers = KAFKA_URL.partition("://")[2].partition("?")[0].strip("/")
    admin = AdminClient({"bootstrap.servers": servers, "log_level": 0})
    try:
        admin.list_topics(timeout=3)
    except Exception as error:  # KafkaException: transport failure, all brokers down
        message = f"Kafka broker not reachable at {KAFKA_URL}: {error}"
        if IN_CI:
            pytest.fail(message + " (CI=true: the server must run; bash scripts/services.sh)")
        pytest.skip(message)
    return KAFKA_URL


def wait_for(condition: Any, seconds: float = 30) -> None:
    """Poll `condition` until it is true; fail the test after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@contextlib.contextmanager
def streaming(source: Any) -> Iterator[list[Any]]:
    """Run a log source in a thread while inside; yields the changes it published so far."""
    from rowcast import Hub

    got: list[Any] = []
    hub = Hub()
    hub.connect(got.append)
    thread = threading.Thread(target=source.run, args=(hub,))
    thread.start()
    try:
        yield got
    finally:
        source.stop()
        thread.join(15)
    assert not thread.is_alive()

"""Relay: source -> sinks -> checkpoint, against the real MariaDB; faults done for real.

A sink is taken down by another connection holding the SQLite store's write lock, a
checkpoint by killing a redis-server this test started, the source by killing its
binlog dump thread on the server. Helpers here are shared with test_cli_relay.py and
test_relay_crash.py.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from rowcast import Change
from rowcast.checkpoint import FileCheckpoint, open_checkpoint
from rowcast.cli.relay_console import JsonFormatter
from rowcast.errors import (
    ConfigError,
    DuplicateEventId,
    PermanentSinkError,
    SinkError,
    TransientSinkError,
)
from rowcast.metrics import RateMeter, RelayStats, serve_metrics
from rowcast.relay import Relay
from rowcast.sinks.base import Batch, change_id
from rowcast.sinks.stdout import StdoutSink
from rowcast.sinks.store import StoreSink, stream_name
from rowcast.sources.mysql import BinlogSource
from rowcast.store import EventStore
from tests.conftest import require_server

URL = "mysql://root@127.0.0.1:3306/test"
_ids = itertools.count()


def unique(prefix: str) -> str:
    """A name no other test run uses at the same time."""
    return f"{prefix}_{os.getpid()}_{next(_ids)}"


def server_id() -> int:
    """A replica id of our own: two binlog readers with one id kick each other off."""
    return 3_200_000_000 + os.getpid() % 100_000 * 1000 + next(_ids) % 1000


def wait_for(condition: Callable[[], Any], seconds: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        time.sleep(0.05)


class Table:
    """A fresh table ``test.<name>`` (id INT PRIMARY KEY, n INT) and a connection."""

    def __init__(self, prefix: str = "relay") -> None:
        require_server("mysql")
        self.name = unique(prefix)
        self.conn = pymysql.connect(host="127.0.0.1", user="root", database="test", autocommit=True)
        self.execute(f"CREATE TABLE {self.name} (id INT PRIMARY KEY, n INT)")

    def execute(self, *statements: str) -> None:
        with self.conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)

    def transaction(self, *statements: str) -> None:
        self.execute("BEGIN", *statements, "COMMIT")

    def position(self) -> str:
        with self.conn.cursor() as cur:
            cur.execute("SHOW MASTER STATUS")
            row = cur.fetchone()
        return f"{row[0]}:{row[1]}"

    def source(self, start: str, end: str | None = None, **options: Any) -> BinlogSource:
        return BinlogSource(
            URL,
            tables=[f"test.{self.name}"],
            start=start,
            end=end,
            server_id=server_id(),
            heartbeat=0.2,
            **options,
        )

    def truth(self, start: str, end: str) -> list[list[Change]]:
        """What the binlog holds for the table between two positions."""
        return list(self.source(start, end))

    def last(self, start: str) -> str:
        """Where the table's last transaction since `start` ends: what a relay checkpoints.

        Not `position()`: other tests write to the same binlog at the same time.
        """
        position = self.truth(start, self.position())[-1][-1].position
        assert position is not None
        return position

    def drop(self) -> None:
        with contextlib.suppress(pymysql.MySQLError):
            self.execute(f"DROP TABLE IF EXISTS {self.name}")
        self.conn.close()


@pytest.fixture
def table() -> Iterator[Table]:
    t = Table()
    yield t
    t.drop()


def kill_binlog_dumps_of(conn: Any, pid: int) -> int:
    """Kill, on the server, the binlog dump threads serving process `pid` (no one else's)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[9] in inodes:
            ports.add(int(fields[1].split(":")[1], 16))
    killed = 0
    with conn.cursor() as cur:
        cur.execute(
            "SELECT ID, HOST FROM information_schema.PROCESSLIST WHERE COMMAND = 'Binlog Dump'"
        )
        for thread_id, host in cur.fetchall():
            if int(str(host).rpartition(":")[2] or 0) in ports:
                cur.execute(f"KILL {thread_id}")
                killed += 1
    return killed


def stored(path: Path) -> dict[str, list[tuple[str, Any]]]:
    """Every stream of the store at `path`: [(event id, Change), ...] in stream order."""
    with EventStore(f"sqlite:///{path}") as store:
        return {
            name: [(str(e.id), Change(**e.data)) for e in store.read(name)]
            for name in store.streams()
        }


def expected(transactions: list[list[Change]]) -> dict[str, list[tuple[str, Change]]]:
    """The streams a store sink makes of `transactions`: each change once, in commit order."""
    streams: dict[str, list[tuple[str, Change]]] = {}
    for tx in transactions:
        for index, change in enumerate(tx):
            streams.setdefault(stream_name(change), []).append(
                (str(change_id(change, index)), change)
            )
    return streams


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def ids(transactions: list[list[Change]]) -> list[str]:
    return [str(change_id(c, i)) for tx in transactions for i, c in enumerate(tx)]


class Given:
    """A source of the given transactions, resuming after its checkpoint's position, then
    ending: for the relay's own logic, without a database. `iterated` counts the reads."""

    start = "start"

    def __init__(self, transactions: list[list[Change]]) -> None:
        self.transactions = transactions
        self.checkpoint: Any = None
        self.position: str | None = None
        self.iterated = 0
        self._stopping = threading.Event()

    def __iter__(self) -> Iterator[list[Change]]:
        self.iterated += 1
        saved = self.checkpoint.load() if self.checkpoint is not None else None
        positions = [tx[-1].position for tx in self.transactions]
        first = positions.index(saved) + 1 if saved in positions else 0
        for transaction in self.transactions[first:]:
            if self._stopping.is_set():
                return
            self.position = transaction[-1].position
            yield list(transaction)

    def run(self, hub: Any) -> None:
        for transaction in self:
            hub.publish(transaction)

    def stop(self) -> None:
        self._stopping.set()

    def check(self) -> None:
        pass

    def close(self) -> None:
        pass


class Collect:
    """A sink that keeps what it is given, batch by batch."""

    url = "collect://"

    def __init__(self) -> None:
        self.batches: list[list[list[Change]]] = []

    def deliver(self, batch: Batch) -> None:
        self.batches.append([list(tx) for tx in batch])

    def close(self) -> None:
        pass


@contextlib.contextmanager
def running(relay: Relay) -> Iterator[threading.Thread]:
    """`relay.run()` in a thread while inside; stopped and joined after."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            relay.run()
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    try:
        yield thread
    finally:
        relay.stop()
        thread.join(30)
    assert not thread.is_alive()
    assert not errors, errors


@contextlib.contextmanager
def write_lock(path: Path) -> Iterator[Callable[[], None]]:
    """Another connection holds `path`'s write lock until the yielded release() is called."""
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            blocker.execute("ROLLBACK")

    try:
        yield release
    finally:
        release()
        blocker.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """A redis-server of this test's own, on a free port, without persistence."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=1)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_for(up, 10, "redis-server to start")
        client.close()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.kill()


# ---------------------------------------------------------------- delivery


def test_every_change_reaches_every_sink_in_commit_order_then_the_checkpoint(
    table: Table, tmp_path: Path
) -> None:
    start = table.position()
    table.execute(f"INSERT INTO {table.name} VALUES (1, 1)")
    table.transaction(
        f"INSERT INTO {table.name} VALUES (2, 1), (3, 1)",
        f"UPDATE {table.name} SET n = n + 1 WHERE id = 1",
    )
    table.execute(f"DELETE FROM {table.name} WHERE id = 2")
    end = table.position()
    truth = table.truth(start, end)
    assert [len(tx) for tx in truth] == [1, 3, 1]

    out = io.StringIO()
    checkpoint = FileCheckpoint(str(tmp_path / "pos"), str(tmp_path / "pos"))
    sinks = [StdoutSink(stream=out), StoreSink(f"sqlite:///{tmp_path / 'events.db'}")]
    relay = Relay(table.source(start, end), sinks, checkpoint)
    relay.run()  # the source ends at `end`
    for sink in sinks:
        sink.close()

    printed = lines(out.getvalue())
    assert [line["id"] for line in printed] == ids(truth)
    assert [Change.from_dict({k: v for k, v in line.items() if k != "id"}) for line in printed] == [
        c for tx in truth for c in tx
    ]
    assert stored(tmp_path / "events.db") == expected(truth)
    assert checkpoint.load() == truth[-1][-1].position
    assert relay.stats.changes == 5
    assert relay.stats.transactions == 3
    assert [s.delivered for s in relay.stats.sinks] == [5, 5]
    assert relay.stats.position == truth[-1][-1].position


def test_a_restarted_relay_resumes_at_its_checkpoint(table: Table, tmp_path: Path) -> None:
    start = table.position()
    table.execute(*(f"INSERT INTO {table.name} VALUES ({i}, 0)" for i in range(5)))
    middle = table.position()
    table.execute(f"UPDATE {table.name} SET n = 1", f"DELETE FROM {table.name} WHERE id < 3")
    end = table.position()
    store = f"sqlite:///{tmp_path / 'events.db'}"
    checkpoint = open_checkpoint(str(tmp_path / "pos"))

    first = StoreSink(store)
    Relay(table.source(start, middle), [first], checkpoint).run()
    first.close()
    assert checkpoint.load() == table.truth(start, middle)[-1][-1].position
    # the second source is told to start over from the beginning: the checkpoint wins
    second = StoreSink(store)
    Relay(table.source(start, end, checkpoint=checkpoint), [second], checkpoint).run()
    second.close()

    truth = table.truth(start, end)
    assert stored(tmp_path / "events.db") == expected(truth)
    assert checkpoint.load() == truth[-1][-1].position


def test_batches_hold_whole_transactions_up_to_the_batch_size(table: Table, tmp_path: Path) -> None:
    start = table.position()
    for i in range(12):
        table.execute(f"INSERT INTO {table.name} VALUES ({i}, 0)")
    table.execute(f"UPDATE {table.name} SET n = 1")  # one transaction of 12 changes
    end = table.position()
    sink = Collect()
    Relay(
        table.source(start, end), [sink], open_checkpoint(str(tmp_path / "p")), batch_size=5
    ).run()

    batches = sink.batches
    assert [tx for batch in batches for tx in batch] == table.truth(start, end)
    for batch in batches:
        assert sum(map(len, batch)) <= 5 or len(batch) == 1  # a big transaction goes alone
    assert [len(tx) for tx in batches[-1]] == [12]


def test_a_source_that_fails_ends_the_run_with_its_error(table: Table, tmp_path: Path) -> None:
    checkpoint = open_checkpoint(str(tmp_path / "pos"))
    relay = Relay(table.source("mysql-bin.999999:4"), [Collect()], checkpoint)
    with pytest.raises(ConfigError, match=r"no binlog position mysql-bin\.999999:4"):
        relay.run()
    assert checkpoint.load() is None


# ---------------------------------------------------------------- the store sink


def change(pk: int, n: int, position: str, action: str = "update") -> Change:
    before = {"id": pk, "n": n - 1} if action != "write" else None
    after = {"id": pk, "n": n} if action != "delete" else None
    return Change(action, "shop", "items", pk, before, after, 1.0, "tx", position, "mysql")


def test_the_store_sink_holds_a_change_once_however_batches_are_redelivered(
    tmp_path: Path,
) -> None:
    txs = [[change(1, n, f"bin.1:{n}"), change(2, n, f"bin.1:{n}")] for n in range(1, 7)]
    sink = StoreSink(f"sqlite:///{tmp_path / 'events.db'}")
    sink.deliver(txs[:2])
    sink.deliver(txs[:2])  # the same batch again: a retry
    sink.deliver(txs[1:3])  # a different batching after a restart: a partial overlap
    sink.deliver(txs[:6])
    sink.deliver(txs[4:5])
    sink.close()
    assert stored(tmp_path / "events.db") == expected(txs)


def test_the_store_sink_never_drops_a_change_whose_id_is_stored_elsewhere(
    tmp_path: Path,
) -> None:
    # two servers relayed into one store: the same source name and position on both
    # gives the same change id to distinct changes; that must stop the relay, never
    # pass for a re-delivery (which would drop the second server's change unseen)
    first, second = change(1, 1, "bin.1:4"), change(2, 1, "bin.1:4")
    sink = StoreSink(f"sqlite:///{tmp_path / 'events.db'}")
    sink.deliver([[first]])
    with pytest.raises(PermanentSinkError, match="separate stores") as caught:
        sink.deliver([[second]])
    assert isinstance(caught.value.__cause__, DuplicateEventId)
    with pytest.raises(PermanentSinkError) as caught:  # the same id twice in a stream's batch
        sink.deliver([[change(3, 1, "bin.1:9")], [change(3, 2, "bin.1:9")]])
    assert isinstance(caught.value.__cause__, DuplicateEventId)
    sink.close()
    assert stored(tmp_path / "events.db") == expected([[first]])


def test_store_sink_streams_and_event_data(tmp_path: Path) -> None:
    composite = Change(
        "write", "shop", "lines", (7, "b"), None, {"a": 7, "b": "b"}, 2.0, "t", "p:1"
    )
    plain = Change("delete", None, "t", 5, {"id": 5}, None, 3.0, "t", "p:2", "sqlite")
    keyless = Change("write", "shop", "log", None, None, {"x": 1}, 4.0, "t", "p:3")
    assert [stream_name(c) for c in (composite, plain, keyless)] == [
        "shop.lines-7,b",
        "t-5",
        "shop.log",
    ]
    sink = StoreSink(f"sqlite:///{tmp_path / 'e.db'}")
    sink.deliver([[composite], [plain, keyless]])
    events = list(sink.store.read_all())
    sink.close()
    assert [(e.stream, e.type) for e in events] == [
        ("shop.lines-7,b", "lines_write"),
        ("t-5", "t_delete"),
        ("shop.log", "log_write"),
    ]
    assert [Change(**e.data) for e in events] == [composite, plain, keyless]
    assert [e.id for e in events] == [
        change_id(composite, 0),
        change_id(plain, 0),
        change_id(keyless, 1),
    ]


def test_a_store_that_fails_is_a_sink_error(tmp_path: Path) -> None:
    sink = StoreSink(f"sqlite:///{tmp_path / 'e.db'}?timeout=0.05")
    with write_lock(tmp_path / "e.db"), pytest.raises(SinkError, match="locked"):
        sink.deliver([[change(1, 1, "b:1")]])
    sink.close()
    with pytest.raises(SinkError, match="closed"):
        sink.deliver([[change(1, 1, "b:1")]])


def test_sink_urls_are_checked_when_opened(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'-'"):
        StdoutSink("stdout://")
    with pytest.raises(ConfigError, match="no event store"):
        StoreSink("nosuch://x")
    with pytest.raises(ConfigError, match="directory"):
        StoreSink(f"sqlite:///{tmp_path}")


def test_the_stdout_sink_writes_json_lines_and_reports_a_closed_stream() -> None:
    out = io.StringIO()
    sink = StdoutSink(stream=out)
    c = Change("write", "s", "t", 1, None, {"id": 1, "d": {"$x": 1}}, 1.0, "x", "f:1", "mysql")
    sink.deliver([[c, c]])
    first, second = lines(out.getvalue())
    assert first["id"] == str(change_id(c, 0))
    assert second["id"] == str(change_id(c, 1))
    assert Change.from_dict({k: v for k, v in first.items() if k != "id"}) == c
    out.close()
    with pytest.raises(SinkError, match="stdout sink"):
        sink.deliver([[c]])


def test_a_closed_pipe_ends_the_relay_and_leaves_the_checkpoint(
    table: Table, tmp_path: Path
) -> None:
    start = table.position()
    table.execute(f"INSERT INTO {table.name} VALUES (1, 1)")
    end = table.position()
    read, write = os.pipe()
    os.close(read)
    with open(write, "w") as pipe:
        checkpoint = open_checkpoint(str(tmp_path / "pos"))
        relay = Relay(table.source(start, end), [StdoutSink(stream=pipe)], checkpoint)
        with pytest.raises(BrokenPipeError):
            relay.run()
        with contextlib.suppress(BrokenPipeError):
            pipe.close()
    assert checkpoint.load() == start  # where it began, saved before it read anything


# ---------------------------------------------------------------- faults


def test_a_sink_down_at_start_is_retried_until_it_takes_the_batch(
    table: Table, tmp_path: Path
) -> None:
    start = table.position()
    table.execute(*(f"INSERT INTO {table.name} VALUES ({i}, 0)" for i in range(3)))
    end = table.position()
    path = tmp_path / "events.db"
    store = StoreSink(f"sqlite:///{path}?timeout=0.05")
    out = io.StringIO()
    checkpoint = open_checkpoint(str(tmp_path / "pos"))
    relay = Relay(
        table.source(start, end), [StdoutSink(stream=out), store], checkpoint, backoff=0.05
    )
    with write_lock(path) as release, running(relay):
        wait_for(lambda: relay.stats.sinks[1].errors >= 2, what="the store sink to fail")
        assert checkpoint.load() == start  # nothing moves while a sink lacks the batch
        assert relay.stats.sinks[1].failing is not None
        release()
        last = table.truth(start, end)[-1][-1].position
        wait_for(lambda: checkpoint.load() == last, what="the checkpoint after the lock")
    store.close()
    truth = table.truth(start, end)
    assert stored(path) == expected(truth)
    assert [line["id"] for line in lines(out.getvalue())] == ids(truth)  # stdout: sent once
    assert relay.stats.sinks[1].failing is None


def test_a_sink_going_down_mid_stream_holds_the_checkpoint_back(
    table: Table, tmp_path: Path
) -> None:
    path = tmp_path / "events.db"
    store = StoreSink(f"sqlite:///{path}?timeout=0.05")
    out = io.StringIO()
    checkpoint = open_checkpoint(str(tmp_path / "pos"))
    start = table.position()
    relay = Relay(table.source(start), [StdoutSink(stream=out), store], checkpoint, backoff=0.05)
    with running(relay):
        table.execute(f"INSERT INTO {table.name} VALUES (1, 0)")
        first = table.last(start)
        wait_for(lambda: checkpoint.load() == first, what="the first transaction")
        with write_lock(path) as release:
            table.execute(
                f"UPDATE {table.name} SET n = 1", f"INSERT INTO {table.name} VALUES (2, 0)"
            )
            wait_for(lambda: relay.stats.sinks[1].errors >= 2, what="the store sink to fail")
            assert checkpoint.load() == first
            release()
            end = table.last(start)
            wait_for(lambda: checkpoint.load() == end, what="the checkpoint after the lock")
    store.close()
    truth = table.truth(start, end)
    assert stored(path) == expected(truth)
    assert [line["id"] for line in lines(out.getvalue())] == ids(truth)


def test_a_checkpoint_going_down_is_retried_and_nothing_is_lost(
    table: Table, tmp_path: Path, redis_server: RedisServer
) -> None:
    checkpoint = open_checkpoint(redis_server.url)
    path = tmp_path / "events.db"
    store = StoreSink(f"sqlite:///{path}")
    start = table.position()
    relay = Relay(table.source(start), [store], checkpoint, backoff=0.05, max_backoff=0.5)
    with running(relay):
        table.execute(f"INSERT INTO {table.name} VALUES (1, 0)")
        first = table.last(start)
        wait_for(lambda: relay.stats.position == first, what="the first transaction")
        redis_server.kill()
        table.execute(f"UPDATE {table.name} SET n = 1")
        wait_for(lambda: relay.stats.checkpoint_errors >= 2, what="the checkpoint to fail")
        assert relay.stats.position == first
        redis_server.start()  # empty: this one keeps nothing on disk
        end = table.last(start)
        wait_for(lambda: relay.stats.position == end, what="the checkpoint to come back")
    assert checkpoint.load() == end
    checkpoint.close()
    store.close()
    assert stored(path) == expected(table.truth(start, end))


def test_a_redis_sink_down_at_start_is_refused_by_the_check(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    redis_sink = pytest.importorskip("rowcast.sinks.redis")
    redis_server.kill()
    sink = redis_sink.RedisSink(f"{redis_server.url}?stream=changes&timeout=1")
    checkpoint = open_checkpoint(str(tmp_path / "pos"))
    relay = Relay(Given([[change(1, 1, "bin.1:4")]]), [sink], checkpoint)
    with pytest.raises(TransientSinkError, match=f"Redis sink {redis_server.url}"):
        relay.run()
    assert relay.source.iterated == 0  # type: ignore[attr-defined]
    assert checkpoint.load() is None
    sink.close()


def test_a_redis_sink_down_at_start_and_mid_stream_is_retried(
    table: Table, tmp_path: Path, redis_server: RedisServer
) -> None:
    """A relay left unchecked (check=False): the sink comes up later, goes down, comes back."""
    redis_sink = pytest.importorskip("rowcast.sinks.redis")
    import redis

    redis_server.kill()  # down at start
    sink = redis_sink.RedisSink(f"{redis_server.url}?stream=changes&timeout=1")
    checkpoint = open_checkpoint(str(tmp_path / "pos"))
    start = table.position()
    relay = Relay(
        table.source(start), [sink], checkpoint, backoff=0.05, max_backoff=0.5, check=False
    )
    with running(relay):
        table.execute(f"INSERT INTO {table.name} VALUES (1, 0)")
        wait_for(lambda: relay.stats.sinks[0].attempts >= 2, what="the redis sink to fail")
        assert checkpoint.load() == start
        assert "Connection refused" in (relay.stats.sinks[0].failing or "")
        redis_server.start()
        first = table.last(start)
        wait_for(lambda: checkpoint.load() == first, what="delivery once redis is up")
        client = redis.Redis(port=redis_server.port)
        before = client.xrange("changes")
        redis_server.kill()  # mid-stream
        errors = relay.stats.sinks[0].errors
        table.execute(f"UPDATE {table.name} SET n = 1")
        wait_for(lambda: relay.stats.sinks[0].errors > errors, what="the redis sink to fail")
        assert checkpoint.load() == first
        redis_server.start()  # it kept nothing: only what comes from now on
        end = table.last(start)
        wait_for(lambda: checkpoint.load() == end, what="delivery once redis is back")
        after = redis.Redis(port=redis_server.port).xrange("changes")
    sink.close()
    truth = table.truth(start, end)
    assert [f[b"id"].decode() for _, f in before] == ids(truth[:1])
    assert [f[b"id"].decode() for _, f in after] == ids(truth[1:])


def test_a_killed_source_connection_is_resumed_without_loss_or_repeat(
    table: Table, tmp_path: Path
) -> None:
    path = tmp_path / "events.db"
    store = StoreSink(f"sqlite:///{path}")
    checkpoint = open_checkpoint(str(tmp_path / "pos"))
    start = table.position()
    relay = Relay(table.source(start), [store], checkpoint)
    with running(relay):
        table.execute(f"INSERT INTO {table.name} VALUES (1, 0)")
        first = table.last(start)
        wait_for(lambda: checkpoint.load() == first, what="the first transaction")
        assert kill_binlog_dumps_of(table.conn, os.getpid()) == 1
        table.execute(f"UPDATE {table.name} SET n = 1", f"INSERT INTO {table.name} VALUES (2, 0)")
        end = table.last(start)
        wait_for(lambda: checkpoint.load() == end, what="the source to reconnect")
    store.close()
    assert stored(path) == expected(table.truth(start, end))


def test_max_attempts_ends_the_run_with_the_sink_error(table: Table, tmp_path: Path) -> None:
    start = table.position()
    table.execute(f"INSERT INTO {table.name} VALUES (1, 0)")
    path = tmp_path / "events.db"
    store = StoreSink(f"sqlite:///{path}?timeout=0.05")
    checkpoint = open_checkpoint(str(tmp_path / "pos"))
    relay = Relay(
        table.source(start, table.position()), [store], checkpoint, backoff=0.01, max_attempts=3
    )
    with write_lock(path), pytest.raises(SinkError, match="locked"):
        relay.run()
    store.close()
    assert relay.stats.sinks[0].errors == 3
    assert checkpoint.load() == start


# ---------------------------------------------------------------- stopping


def test_stop_lets_the_relay_finish_and_keep_its_position(table: Table, tmp_path: Path) -> None:
    checkpoint = open_checkpoint(str(tmp_path / "pos"))
    sink = Collect()
    start = table.position()
    relay = Relay(table.source(start), [sink], checkpoint)
    with running(relay) as thread:
        table.execute(f"INSERT INTO {table.name} VALUES (1, 0)")
        end = table.last(start)
        wait_for(lambda: checkpoint.load() == end, what="the transaction")
        relay.stop()
        thread.join(30)
        assert not thread.is_alive()
    assert relay.stats.position == end


def test_stop_while_a_sink_is_down_abandons_the_batch(table: Table, tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = StoreSink(f"sqlite:///{path}?timeout=0.05")
    checkpoint = open_checkpoint(str(tmp_path / "pos"))
    start = table.position()
    relay = Relay(table.source(start), [store], checkpoint, backoff=0.05)
    with write_lock(path), running(relay) as thread:
        table.execute(f"INSERT INTO {table.name} VALUES (1, 0)")
        wait_for(lambda: relay.stats.sinks[0].errors >= 1, what="the store sink to fail")
        relay.stop()
        thread.join(30)
        assert not thread.is_alive()
    store.close()
    assert checkpoint.load() == start
    assert relay.stats.changes == 0


class Down:
    """A sink that is always down: every delivery is a `SinkError`."""

    url = "down://"

    def __init__(self) -> None:
        self.attempts = 0

    def deliver(self, batch: Batch) -> None:
        self.attempts += 1
        raise SinkError("down")

    def close(self) -> None:
        pass


def _lsn(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def test_a_postgres_slot_is_not_confirmed_past_what_the_relay_delivered(tmp_path: Path) -> None:
    # The relay reads ahead in a thread. PostgreSQL resumes a logical slot at its
    # confirmed position at the earliest, whatever the checkpoint says: a slot confirmed
    # past what was read ahead (and never delivered) would skip those transactions.
    import psycopg2

    from rowcast.sources.postgres import LogicalSource

    server = require_server("postgresql").replace("postgresql+psycopg://", "postgresql://")
    name = unique("relay_pg")
    url = f"{server}?slot={name}&publication={name}"
    admin = psycopg2.connect(server)
    admin.autocommit = True
    db = admin.cursor()
    db.execute(f"CREATE TABLE {name} (id INT PRIMARY KEY, n INT)")
    try:
        LogicalSource(url, tables=[name]).setup()
        db.execute(f"INSERT INTO {name} VALUES (0, 0)")
        db.execute("SELECT pg_current_wal_lsn()")
        first = _lsn(db.fetchone()[0])  # at or past the first transaction's end
        db.execute(f"INSERT INTO {name} VALUES (1, 0)")
        db.execute("SELECT pg_current_wal_lsn()")
        before_last = _lsn(db.fetchone()[0])
        db.execute(f"INSERT INTO {name} VALUES (2, 0)")
        checkpoint = open_checkpoint(str(tmp_path / "pos"))
        sink = Down()
        source = LogicalSource(url, tables=[name], start="start", heartbeat=0.2, feedback=1)
        relay = Relay(source, [sink], checkpoint, backoff=0.05, max_backoff=0.05)
        with running(relay):
            # the relay's reader took all three and asked for more; the sink has none
            wait_for(lambda: source.position is not None and _lsn(source.position) > before_last)
            wait_for(lambda: sink.attempts >= 3)
        assert _lsn(checkpoint.load() or "") < first  # before the first transaction's end
        again = LogicalSource(url, tables=[name], start="start", end="now", heartbeat=0.2)
        assert [c.pk for tx in again for c in tx] == [0, 1, 2]  # nothing was delivered
    finally:
        with contextlib.suppress(Exception):
            LogicalSource(url, tables=[name]).drop()
        db.execute(f"DROP TABLE IF EXISTS {name}")
        admin.close()


def test_a_relay_stopped_before_it_runs_returns_at_once(tmp_path: Path) -> None:
    checkpoint = open_checkpoint(str(tmp_path / "pos"))
    source = BinlogSource(URL, server_id=server_id())
    relay = Relay(source, [Collect()], checkpoint)
    relay.stop()
    relay.run()  # never connects: the source is stopped before its first read
    assert relay.stats.changes == 0


# ---------------------------------------------------------------- configuration


def test_bad_relay_arguments_are_config_errors(tmp_path: Path) -> None:
    checkpoint = open_checkpoint(str(tmp_path / "pos"))
    other = open_checkpoint(str(tmp_path / "other"))
    source = BinlogSource(URL, server_id=server_id())
    with pytest.raises(ConfigError, match="at least one sink"):
        Relay(source, [], checkpoint)
    with pytest.raises(ConfigError, match="batch_size"):
        Relay(source, [Collect()], checkpoint, batch_size=0)
    with pytest.raises(ConfigError, match="backoff"):
        Relay(source, [Collect()], checkpoint, backoff=-1)
    with pytest.raises(ConfigError, match="max_attempts"):
        Relay(source, [Collect()], checkpoint, max_attempts=0)
    Relay(source, [Collect()], checkpoint)
    assert source.checkpoint is checkpoint  # given the relay's
    with pytest.raises(ConfigError, match="another checkpoint"):
        Relay(source, [Collect()], other)


# ---------------------------------------------------------------- operability


def test_metrics_are_served_for_prometheus() -> None:
    stats = RelayStats(["redis://h:6379/0", "sqlite:///e.db"])
    stats.sinks[0].delivered, stats.sinks[0].errors, stats.sinks[0].failing = 10, 2, "down"
    stats.sinks[1].delivered = 12
    stats.transactions, stats.lag, stats.last_commit = 4, 0.25, 1700000000.0
    port = free_port()
    server = serve_metrics(stats, port, addr="127.0.0.1")
    try:
        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            serve_metrics(stats, port, addr="127.0.0.1")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    metrics = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert metrics['rowcast_relay_changes_delivered_total{sink="redis://h:6379/0"}'] == "10.0"
    assert metrics['rowcast_relay_changes_delivered_total{sink="sqlite:///e.db"}'] == "12.0"
    assert metrics['rowcast_relay_errors_total{component="redis://h:6379/0"}'] == "2.0"
    assert metrics['rowcast_relay_errors_total{component="checkpoint"}'] == "0.0"
    assert metrics['rowcast_relay_sink_up{sink="redis://h:6379/0"}'] == "0.0"
    assert metrics["rowcast_relay_transactions_delivered_total"] == "4.0"
    assert metrics["rowcast_relay_lag_seconds"] == "0.25"
    assert metrics["rowcast_relay_last_commit_timestamp_seconds"] == "1.7e+09"


def test_json_log_lines_carry_the_record_fields() -> None:
    record = logging.makeLogRecord(
        {"name": "rowcast.relay", "levelname": "WARNING", "msg": "sink %s failed", "args": ("x",)}
    )
    record.event, record.attempt = "retry", 3
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "warning"
    assert line["message"] == "sink x failed"
    assert (line["event"], line["attempt"], line["logger"]) == ("retry", 3, "rowcast.relay")
    assert line["time"].endswith("+00:00")


def test_the_rate_is_taken_over_a_sliding_window() -> None:
    rate = RateMeter(window=5)
    assert rate(0, now=0.0) == 0.0
    assert rate(100, now=1.0) == 100.0
    assert rate(1000, now=10.0) == pytest.approx(900 / 9)
    assert rate(1000, now=20.0) == pytest.approx(0.0)  # the old samples left the window


def test_the_reader_reads_at_most_two_batches_of_changes_ahead(tmp_path: Path) -> None:
    # a backlog of large transactions behind a slow sink: what is read ahead is bounded by
    # changes (two batches), not by transactions (which held 200 x 100 changes before)
    transactions = [[change(k * 100 + i, 1, f"f:{k}") for i in range(100)] for k in range(50)]
    positions = [f"f:{k}" for k in range(50)]
    source = Given(transactions)
    gate = threading.Event()

    class Slow(Collect):
        def deliver(self, batch: Batch) -> None:
            gate.wait(30)
            super().deliver(batch)

    sink = Slow()
    with open_checkpoint(str(tmp_path / "pos")) as checkpoint:
        relay = Relay(source, [sink], checkpoint, batch_size=100)
        with running(relay):
            wait_for(lambda: source.position is not None)
            time.sleep(0.5)  # as far ahead as the reader may go
            ahead = positions.index(source.position or "")
            gate.set()
            wait_for(lambda: sum(len(b) for b in sink.batches) == 50)
    assert ahead <= 5, f"read {ahead + 1} transactions of 100 changes ahead of a 100-change batch"


def test_store_sink_data_of_every_kind_reads_back_as_the_fields(tmp_path: Path) -> None:
    # the data is stored as the change's JSON body: it must read back as the fields would
    import datetime as dt
    import uuid
    from decimal import Decimal

    row = {
        "id": 1,
        "price": Decimal("12.50"),
        "at": dt.datetime(2024, 1, 2, 3, 4, 5, 6),
        "aware": dt.datetime(2024, 1, 2, tzinfo=dt.UTC),
        "day": dt.date(2024, 2, 29),
        "span": dt.timedelta(seconds=-1),
        "raw": b"\x00\xff",
        "uid": uuid.UUID(int=5),
        "tags": {"a"},
        "nested": {"$x": [1, (2, 3)]},
        "f": 1e-7,
        "nan": float("nan"),
    }
    changes = [
        Change("update", "shop", "items", 1, row, dict(row, id=2), 5.5, "t", "p:1", "mysql"),
        Change("write", "shop", "items", "k", None, {"id": "k"}, 6.0, "t", "p:2", "mysql"),
        Change(
            "write", "shop", "items", 3, None, {"id": 3}, 7.0, "t", "p:3", "mysql", snapshot=True
        ),
    ]
    sink = StoreSink(f"sqlite:///{tmp_path / 'e.db'}")
    sink.deliver([[changes[0]], [changes[1]], [changes[2]]])
    events = list(sink.store.read_all())
    sink.close()
    for event, change in zip(events, changes, strict=True):
        restored = Change(**event.data)
        assert restored.to_json() == change.to_json()
        assert set(event.data) == {*_store_fields(), *(["snapshot"] if change.snapshot else [])}


def _store_fields() -> list[str]:
    return [
        "action",
        "schema",
        "table",
        "pk",
        "before",
        "after",
        "ts",
        "txid",
        "position",
        "source",
    ]

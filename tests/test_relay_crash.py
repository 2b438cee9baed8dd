"""The relay killed with SIGKILL at random moments under a MariaDB workload loses nothing.

A workload of 5,000 transactions (inserts, updates, deletes, some several rows at a
time) runs on a table of its own while ``rowcast relay``, a real subprocess, is
killed with SIGKILL at 5 random moments and started again each time. Then the
event store sink holds every committed change exactly once, in commit order per
row, and Redis Streams, NATS JetStream and RabbitMQ (each whose server runs) hold
every change at least once, in order per row once repeats are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from rowcast.change import Change
from rowcast.checkpoint import open_checkpoint
from tests.conftest import IN_CI, require_redis
from tests.test_cli_relay import ROWCAST
from tests.test_relay import URL, Table, expected, ids, server_id, stored, unique, wait_for

TRANSACTIONS = 5000
ROWS = 300
KILLS = 5


def workload(table: str, seed: int, done: threading.Event) -> None:
    """`TRANSACTIONS` transactions of 1 to 3 statements on rows 0..ROWS-1."""
    rng = random.Random(seed)
    conn = pymysql.connect(host="127.0.0.1", user="root", database="test", autocommit=True)
    live: set[int] = set()
    try:
        with conn.cursor() as cur:
            for _ in range(TRANSACTIONS):
                statements = []
                for _ in range(rng.choice((1, 1, 2, 3))):
                    row = rng.randrange(ROWS)
                    if row not in live:
                        statements.append(f"INSERT INTO {table} VALUES ({row}, 0)")
                        live.add(row)
                    elif rng.random() < 0.15:
                        statements.append(f"DELETE FROM {table} WHERE id = {row}")
                        live.discard(row)
                    else:
                        statements.append(f"UPDATE {table} SET n = n + 1 WHERE id = {row}")
                if len(statements) == 1:
                    cur.execute(statements[0])
                else:
                    cur.execute("BEGIN")
                    for statement in statements:
                        cur.execute(statement)
                    cur.execute("COMMIT")
    finally:
        conn.close()
        done.set()


def optional(require: Callable[[], str]) -> str | None:
    """The server's URL, or None when it does not run here (in CI it must)."""
    try:
        return require()
    except pytest.skip.Exception:
        return None


def first_seen(arrived: list[tuple[str, Change]]) -> dict[str, list[str]]:
    """Per row: the ids in the order they first arrived (repeats after a crash dropped)."""
    seen: set[str] = set()
    rows: dict[str, list[str]] = {}
    for change_id, change in arrived:
        if change_id not in seen:
            seen.add(change_id)
            rows.setdefault(f"{change.table}-{change.pk}", []).append(change_id)
    return rows


def per_row(truth: list[list[Change]]) -> dict[str, list[str]]:
    return {
        f"{events[0][1].table}-{events[0][1].pk}": [i for i, _ in events]
        for events in expected(truth).values()
    }


# ---------------------------------------------------------------- the brokers, when they run


class RedisTarget:
    def __init__(self, url: str) -> None:
        import redis

        self.key = unique("relay_crash")
        self.client = redis.Redis.from_url(url)
        self.sink = f"{url}?stream={self.key}"

    def arrived(self) -> list[tuple[str, Change]]:
        entries = self.client.xrange(self.key)
        return [(f[b"id"].decode(), Change.from_json(f[b"body"])) for _, f in entries]

    def close(self) -> None:
        self.client.delete(self.key)
        self.client.close()


class NatsTarget:
    def __init__(self, url: str) -> None:
        self.url = url
        self.stream = unique("relay_crash")
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

    def arrived(self) -> list[tuple[str, Change]]:
        async def read(js: Any) -> list[tuple[str, Change]]:
            info = await js.stream_info(self.stream)
            got = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                message = await js.get_msg(self.stream, seq)
                got.append((message.headers["Nats-Msg-Id"], Change.from_json(message.data)))
            return got

        result: list[tuple[str, Change]] = self._js(read)
        return result

    def close(self) -> None:
        async def delete(js: Any) -> None:
            with contextlib.suppress(Exception):
                await js.delete_stream(self.stream)

        self._js(delete)


class RabbitTarget:
    def __init__(self, url: str) -> None:
        import pika

        self.exchange = self.queue = unique("relay_crash")
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        self.channel.exchange_declare(self.exchange, "topic", durable=True)
        self.channel.queue_declare(self.queue)
        self.channel.queue_bind(self.queue, self.exchange, "#")
        self.sink = f"{url}?exchange={self.exchange}"

    def arrived(self) -> list[tuple[str, Change]]:
        got = []
        for method, properties, body in self.channel.consume(self.queue, inactivity_timeout=2):
            if method is None:
                break
            got.append((properties.message_id, Change.from_json(body)))
        self.channel.cancel()
        return got

    def close(self) -> None:
        self.channel.queue_delete(self.queue)
        self.channel.exchange_delete(self.exchange)
        self.connection.close()


@contextlib.contextmanager
def brokers() -> Iterator[dict[str, Any]]:
    """A target on each broker whose server runs (and whose sink module is there)."""
    from tests.sinks import require_nats, require_rabbitmq

    targets: dict[str, Any] = {}
    makers = [("redis", require_redis, RedisTarget)]
    makers += [("nats", require_nats, NatsTarget), ("rabbitmq", require_rabbitmq, RabbitTarget)]
    try:
        for name, require, make in makers:
            url = optional(require)
            if url is not None:
                targets[name] = make(url)
        yield targets
    finally:
        for target in targets.values():
            target.close()


# ---------------------------------------------------------------- the test


def test_a_relay_killed_at_random_moments_delivers_every_change(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    table = Table("relay_crash")
    try:
        run_and_check(table, tmp_path, seed, rng)
    finally:
        table.drop()


def run_and_check(table: Table, tmp_path: Path, seed: int, rng: random.Random) -> None:
    store = tmp_path / "events.db"
    checkpoint = tmp_path / "pos"
    reader_id = str(server_id())
    with brokers() as targets:
        if IN_CI:
            assert set(targets) == {"redis", "nats", "rabbitmq"}
        command = [
            ROWCAST,
            "relay",
            URL,
            "--to",
            f"sqlite:///{store}?synchronous=normal",  # safe when the process dies
            *(arg for target in targets.values() for arg in ("--to", target.sink)),
            "--checkpoint",
            str(checkpoint),
            "--tables",
            f"test.{table.name}",
            "--from",
            table.position(),
            "--server-id",
            reader_id,
            "--batch-size",
            "200",
            "--log-format",
            "json",
        ]

        def start() -> subprocess.Popen[bytes]:
            with (tmp_path / "relay.log").open("ab") as log:
                return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)

        start_position = command[command.index("--from") + 1]
        done = threading.Event()
        writer = threading.Thread(target=workload, args=(table.name, seed, done))
        writer.start()
        kills = []
        try:
            for _ in range(KILLS):
                process = start()
                moment = rng.uniform(1.0, 3.0)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(moment)
                assert process.poll() is None, (tmp_path / "relay.log").read_text()[-3000:]
                process.send_signal(signal.SIGKILL)
                process.wait()
                with open_checkpoint(str(checkpoint)) as saved:
                    kills.append((round(moment, 2), done.is_set(), saved.load()))
            writer.join()
            end = table.last(start_position)
            process = start()
            try:

                def caught_up() -> bool:
                    log = (tmp_path / "relay.log").read_text()
                    assert process.poll() is None, log[-3000:]
                    if log.count('"event":"start"') <= KILLS:
                        return False  # this run has not started (nor set its SIGTERM handler)
                    with open_checkpoint(str(checkpoint)) as saved:
                        return saved.load() == end

                wait_for(caught_up, 180, "the last relay to catch up")
            except BaseException:
                process.kill()
                process.wait()
                raise
            process.send_signal(signal.SIGTERM)
            assert process.wait(60) == 0
        finally:
            done.wait()
            writer.join()

        print(f"seed {seed}; kills (seconds, workload done, checkpoint): {kills}")
        records = [json.loads(line) for line in (tmp_path / "relay.log").read_text().splitlines()]
        assert sum(r.get("event") == "start" for r in records) == KILLS + 1
        resumed = [r["position"] for r in records if r.get("event") == "start"]
        assert resumed[0] is None  # the first run began at --from, the later ones resumed

        truth = table.truth(start_position, end)
        assert len(truth) == TRANSACTIONS
        # the event store: every change exactly once, in commit order per row
        assert stored(store) == expected(truth)
        # the brokers: every change at least once, in order per row
        want = per_row(truth)
        for name, target in targets.items():
            arrived = target.arrived()
            assert {i for i, _ in arrived} == set(ids(truth)), name
            assert first_seen(arrived) == want, name

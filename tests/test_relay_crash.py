"""The relay killed with SIGKILL at random moments under a MariaDB workload loses nothing.

A workload of 5,000 transactions (inserts, updates, deletes, some several rows at a
time) runs on a table of its own while ``rowcast relay``, a real subprocess, is
killed with SIGKILL at 5 random moments of its streaming (0.2-2 s after it started)
and started again each time. Then the
event store sink holds every committed change exactly once, in commit order per
row, and Redis Streams, NATS JetStream, RabbitMQ and Kafka (each whose server runs)
hold every change at least once, in order per row once repeats are dropped: with a
file checkpoint the Kafka sink is at least once, as the others (exactly once takes
a Kafka checkpoint: test_relay_crash_kafka.py).
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import subprocess
import threading
from pathlib import Path

import pymysql

from rowcast.change import Change
from rowcast.checkpoint import open_checkpoint
from tests.conftest import IN_CI
from tests.targets import brokers, first_seen
from tests.test_cli_relay import ROWCAST
from tests.test_relay import URL, Table, expected, ids, server_id, stored, wait_for

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


def running(process: subprocess.Popen[bytes], log: Path, starts: int) -> None:
    """Wait until the relay's log says "start" for the `starts`-th time: the run has
    checked its sinks and read its checkpoint, and streams (so a kill is mid-stream)."""

    def started() -> bool:
        assert process.poll() is None, log.read_text()[-3000:]
        return log.read_text().count('"event":"start"') >= starts

    wait_for(started, 60, "the relay to start")


def per_row(truth: list[list[Change]]) -> dict[str, list[str]]:
    return {
        f"{events[0][1].table}-{events[0][1].pk}": [i for i, _ in events]
        for events in expected(truth).values()
    }


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
            assert set(targets) == {"redis", "nats", "rabbitmq", "kafka"}
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
            for run in range(KILLS):
                process = start()
                moment = rng.uniform(0.2, 2.0)
                running(process, tmp_path / "relay.log", run + 1)
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

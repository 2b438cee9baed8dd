"""Exactly once into Kafka: the relay killed with SIGKILL 5 times under a MariaDB workload.

``rowcast relay`` (a real subprocess) delivers a workload's changes to a Kafka topic
with its checkpoint in Kafka, so each batch and its position are one Kafka
transaction. It is killed with SIGKILL at 5 random moments (0.2-2 s after it started
streaming) and started again each time. Then a read_committed consumer of the topic
sees every change exactly once, in commit order per row, and each run resumed where
the last commit left it.

The broker here, tansu 0.6, shows the records of aborted transactions to
read_committed consumers (Apache Kafka hides them: `tests.kafka.hides_aborted`).
There the consumer first drops the messages whose ``rowcast-transaction`` has no
checkpoint record (a transaction the kill cut before its checkpoint: aborted by the
next run), as a consumer of a broker that hides them never sees them; the test
prints how many it dropped.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from rowcast.change import Change
from rowcast.checkpoint import open_checkpoint
from tests import kafka
from tests.conftest import require_kafka
from tests.test_cli_relay import ROWCAST
from tests.test_relay import URL, Table, server_id, wait_for
from tests.test_relay_crash import per_row, running, workload

KILLS = 5

pytestmark = pytest.mark.server


def test_a_relay_killed_at_random_moments_delivers_every_change_once(tmp_path: Path) -> None:
    require_kafka()
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    table = Table("relay_crash_kafka")
    prefix = kafka.unique("rowcast-crash")
    try:
        run_and_check(table, prefix, tmp_path, seed, rng)
    finally:
        table.drop()
        kafka.delete_topics(prefix)


def run_and_check(table: Table, prefix: str, tmp_path: Path, seed: int, rng: random.Random) -> None:
    data, checkpoints = f"{prefix}.changes", f"{prefix}.checkpoints"
    checkpoint_url = f"{kafka.KAFKA}?topic={checkpoints}&name=crash"
    start_position = table.position()
    command = [
        ROWCAST,
        "relay",
        URL,
        "--to",
        f"{kafka.KAFKA}?topic={data}",
        "--checkpoint",
        checkpoint_url,
        "--tables",
        f"test.{table.name}",
        "--from",
        start_position,
        "--server-id",
        str(server_id()),
        "--batch-size",
        "200",
        "--log-format",
        "json",
    ]
    log_path = tmp_path / "relay.log"

    def start() -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)

    def saved() -> str | None:
        with open_checkpoint(checkpoint_url) as checkpoint:
            return checkpoint.load()

    done = threading.Event()
    writer = threading.Thread(target=workload, args=(table.name, seed, done))
    writer.start()
    kills = []
    try:
        for _ in range(KILLS):
            process = start()
            moment = rng.uniform(0.2, 2.0)
            running(process, log_path, len(kills) + 1)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(moment)
            assert process.poll() is None, log_path.read_text()[-3000:]
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills.append((round(moment, 2), done.is_set(), saved()))
        writer.join()
        end = table.last(start_position)
        process = start()
        try:

            def caught_up() -> bool:
                assert process.poll() is None, log_path.read_text()[-3000:]
                if log_path.read_text().count('"event":"start"') <= KILLS:
                    return False  # this run has not started (nor set its SIGTERM handler)
                return saved() == end

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

    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    starts = [r for r in records if r.get("event") == "start"]
    assert len(starts) == KILLS + 1
    assert starts[0]["position"] is None  # the first run began at --from, the later resumed

    truth = table.truth(start_position, end)
    labels = kafka.committed_transactions(checkpoints)
    arrived, dropped = [], 0
    for message in kafka.read([data]):
        headers = dict(message.headers())
        if headers["rowcast-transaction"].decode() not in labels:
            dropped += 1  # a transaction a kill cut short, aborted by the next run
            continue
        arrived.append((headers["rowcast-id"].decode(), Change.from_json(message.value())))
    print(
        f"seed {seed}; kills (seconds, workload done, checkpoint): {kills}; messages of "
        f"aborted transactions the broker showed (dropped): {dropped}"
    )
    if kafka.hides_aborted():
        assert dropped == 0
    want = per_row(truth)
    assert len(arrived) == sum(len(tx) for tx in truth)  # each change once...
    got: dict[str, list[str]] = {}
    for change_id, change in arrived:
        got.setdefault(f"{change.table}-{change.pk}", []).append(change_id)
    assert got == want  # ...in commit order per row

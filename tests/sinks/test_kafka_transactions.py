"""Exactly once into Kafka: each batch and the relay's position in one Kafka transaction.

A Kafka sink that joins a Kafka checkpoint on its cluster writes every batch and the
position of its last transaction in one transaction; the checkpoint's load fences a
previous incarnation of the relay (aborting what it left open) before it reads. The
broker here, tansu 0.6, shows aborted transactions to read_committed consumers
(`tests.kafka.hides_aborted`): there, the tests drop the messages of transactions
whose checkpoint record never came (the ``rowcast-transaction`` label) before they
count, and say how many they dropped.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rowcast.change import Change
from rowcast.checkpoint import open_checkpoint
from rowcast.checkpoint.kafka import KafkaCheckpoint
from rowcast.errors import PermanentSinkError
from rowcast.relay import Relay
from rowcast.sinks.base import change_id
from rowcast.sinks.kafka import KafkaSink
from rowcast.testing.sink import transactions
from tests import kafka
from tests.conftest import require_kafka
from tests.test_relay import Collect, Given

pytestmark = pytest.mark.server


@pytest.fixture
def names() -> Iterator[tuple[str, str]]:
    """(data topic, checkpoint topic), deleted after."""
    require_kafka()
    prefix = kafka.unique("rowcast-eos")
    yield f"{prefix}.data", f"{prefix}.checkpoints"
    kafka.delete_topics(prefix)


def joined(names: tuple[str, str], name: str = "relay") -> tuple[KafkaSink, KafkaCheckpoint]:
    data, checkpoints = names
    sink = KafkaSink(f"{kafka.KAFKA}?topic={data}")
    checkpoint = open_checkpoint(f"{kafka.KAFKA}?topic={checkpoints}", name)
    assert isinstance(checkpoint, KafkaCheckpoint)
    assert sink.join(checkpoint)
    return sink, checkpoint


def committed_ids(names: tuple[str, str]) -> tuple[list[str], int]:
    """The change ids a read_committed consumer counts, in order; and how many messages of
    aborted transactions it had to drop (always 0 on a broker that hides them)."""
    data, checkpoints = names
    labels = kafka.committed_transactions(checkpoints)
    ids, dropped = [], 0
    for message in kafka.read([data]):
        headers = dict(message.headers())
        if headers["rowcast-transaction"].decode() not in labels:
            dropped += 1
            continue
        ids.append(headers["rowcast-id"].decode())
    if kafka.hides_aborted():
        assert dropped == 0
    return ids, dropped


def ids_of(*batches: list[list[Any]]) -> list[str]:
    return [str(change_id(c, i)) for batch in batches for tx in batch for i, c in enumerate(tx)]


def test_a_kafka_sink_joins_only_a_kafka_checkpoint_of_its_cluster(
    names: tuple[str, str], tmp_path: Path
) -> None:
    data, checkpoints = names
    sink = KafkaSink(f"{kafka.KAFKA}?topic={data}")
    with open_checkpoint(str(tmp_path / "pos")) as file:
        assert not sink.join(file)
    elsewhere = KafkaCheckpoint(f"{kafka.KAFKA},localhost:9093?topic={checkpoints}")
    assert not sink.join(elsewhere)
    elsewhere.close()
    with open_checkpoint(f"{kafka.KAFKA}?topic={checkpoints}") as checkpoint:
        assert sink.join(checkpoint)
    sink.close()


def test_each_batch_is_committed_with_its_position(names: tuple[str, str]) -> None:
    sink, checkpoint = joined(names)
    assert checkpoint.load() is None
    batches = [transactions(3), transactions(2), transactions(4)]
    for batch in batches:
        sink.deliver(batch)
        assert checkpoint.load() == batch[-1][-1].position
    checkpoint.save(batches[-1][-1][-1].position)  # what the relay does next: no new record
    sink.close()
    checkpoint.close()
    ids, dropped = committed_ids(names)
    assert (ids, dropped) == (ids_of(*batches), 0)
    assert len(kafka.read([names[1]])) == len(batches)


def test_a_sink_checked_before_it_joins_still_commits_each_batch_with_its_position(
    names: tuple[str, str],
) -> None:
    # the CLI checks its sinks before the relay joins them: check() starts a producer
    # (its idempotence handshake early), which join() must replace by a transactional one
    data, checkpoints = names
    sink = KafkaSink(f"{kafka.KAFKA}?topic={data}")
    sink.check()
    checkpoint = open_checkpoint(f"{kafka.KAFKA}?topic={checkpoints}")
    assert isinstance(checkpoint, KafkaCheckpoint)
    assert sink.join(checkpoint)
    sink.check()
    assert checkpoint.load() is None
    batch = transactions(3)
    sink.deliver(batch)
    assert checkpoint.load() == batch[-1][-1].position
    sink.close()
    checkpoint.close()
    assert committed_ids(names) == (ids_of(batch), 0)


def test_a_save_outside_a_delivery_is_a_transaction_of_its_own(names: tuple[str, str]) -> None:
    sink, checkpoint = joined(names)
    checkpoint.load()
    sink.deliver(transactions(1))
    checkpoint.save("dead-lettered:7")  # the relay moving past a refused transaction
    assert checkpoint.load() == "dead-lettered:7"
    sink.close()
    checkpoint.close()
    with open_checkpoint(f"{kafka.KAFKA}?topic={names[1]}", "relay") as fresh:
        assert fresh.load() == "dead-lettered:7"


KILLED = """
import os, signal
from rowcast.change import Change
from rowcast.change import Change
from rowcast.checkpoint import open_checkpoint
from rowcast.sinks.kafka import KafkaSink

def batch(tag):
    return [[Change("write", "shop", "orders", i, None, {{"id": i}}, position=f"{{tag}}:{{t}}",
                    source="mysql") for i in range(3)] for t in range(2)]

sink = KafkaSink("{url}?topic={data}")
checkpoint = open_checkpoint("{url}?topic={checkpoints}", "relay")
sink.join(checkpoint)
checkpoint.load()
sink.deliver(batch("a"))  # committed
# the next batch is produced and acknowledged, then the relay dies before its commit
sink._produce_record = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
sink.deliver(batch("b"))
"""


def rows(tag: str) -> list[list[Change]]:
    """What the killed relay delivered: two transactions of three writes."""
    return [
        [
            Change(
                "write", "shop", "orders", i, None, {"id": i}, position=f"{tag}:{t}", source="mysql"
            )
            for i in range(3)
        ]
        for t in range(2)
    ]


def test_a_transaction_left_open_by_a_killed_relay_is_aborted_and_resumed(
    names: tuple[str, str],
) -> None:
    data, checkpoints = names
    script = KILLED.format(url=kafka.KAFKA, data=data, checkpoints=checkpoints)
    killed = subprocess.run([sys.executable, "-c", script], check=False)
    assert killed.returncode == -signal.SIGKILL
    sink, checkpoint = joined(names)
    assert checkpoint.load() == "a:1"  # fenced the killed one first, then read
    sink.deliver(rows("b"))  # the relay resumes after a:1
    sink.close()
    checkpoint.close()
    ids, dropped = committed_ids(names)
    assert ids == ids_of(rows("a"), rows("b"))  # each once, in order
    assert dropped == (0 if kafka.hides_aborted() else 6)  # b's first copy, aborted
    print(f"messages of aborted transactions the broker showed (dropped): {dropped}")


def test_a_zombie_relay_is_fenced(names: tuple[str, str]) -> None:
    old, old_checkpoint = joined(names)
    old_checkpoint.load()
    old.deliver(transactions(1))
    new, new_checkpoint = joined(names)
    new_checkpoint.load()  # the same relay started again: the old one is a zombie now
    with pytest.raises(PermanentSinkError, match="took over"):
        old.deliver(transactions(1))
    with pytest.raises(PermanentSinkError, match="took over"):
        old.deliver(transactions(1))  # for good: never registered again (which would fence new)
    batch = transactions(2)
    new.deliver(batch)
    assert new_checkpoint.load() == batch[-1][-1].position
    for closing in (old, new, old_checkpoint, new_checkpoint):
        closing.close()


def test_the_relay_is_exactly_once_with_the_kafka_sink_alone(
    names: tuple[str, str], tmp_path: Path
) -> None:
    data, checkpoints = names
    batch = transactions(3)
    sink = KafkaSink(f"{kafka.KAFKA}?topic={data}")
    checkpoint = open_checkpoint(f"{kafka.KAFKA}?topic={checkpoints}")
    assert not Relay(Given(batch), [sink, Collect()], checkpoint).exactly_once
    with open_checkpoint(str(tmp_path / "pos")) as file:
        assert not Relay(Given(batch), [sink], file).exactly_once
    relay = Relay(Given(batch), [sink], checkpoint, checkpoint_interval=3600)
    assert relay.exactly_once
    relay.run()  # to the end of the given transactions
    assert checkpoint.load() == batch[-1][-1].position
    sink.close()
    checkpoint.close()
    assert committed_ids(names) == (ids_of(batch), 0)


def test_a_save_from_another_thread_waits_for_the_batch_in_its_transaction(
    names: tuple[str, str],
) -> None:
    # a relay's source saves its checkpoint (an idle PostgreSQL slot moving on) while a
    # sink thread delivers: one producer has one transaction at a time
    import threading

    sink, checkpoint = joined(names)
    checkpoint.load()
    failures: list[BaseException] = []
    done = threading.Event()

    def save() -> None:
        n = 0
        while not done.is_set():
            n += 1
            try:
                checkpoint.save(f"0/{n:X}")
            except BaseException as error:
                failures.append(error)
                return

    saver = threading.Thread(target=save)
    saver.start()
    try:
        for _ in range(20):
            sink.deliver(transactions(5))
    finally:
        done.set()
        saver.join(30)
        sink.close()
        checkpoint.close()
    assert failures == []

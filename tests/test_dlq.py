"""``rowcast dlq ls|show|replay|drop``: a relay's dead letters (an event store) and a Redis
consumer's, from the command line. (Replaying to a running consumer of each broker, in
row order and for its group only, is in `rowcast.testing.consume.ConsumerContract`.)"""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from rowcast import Change
from rowcast.cli import main
from rowcast.consume import open_consumer
from rowcast.errors import PermanentSinkError
from rowcast.sinks import open_sink
from rowcast.sinks.deadletter import open_dead_letter, reason
from rowcast.store import EventStore
from tests.conftest import require_kafka, require_redis, wait_for


def dlq(*args: str) -> Any:
    return CliRunner().invoke(main, ["dlq", *args])


def transaction(txid: str, *pks: int) -> list[Change]:
    return [
        Change("write", "shop", "orders", pk, after={"id": pk, "n": pk}, txid=txid,
               position=f"p:{txid}", source="test")
        for pk in pks
    ]  # fmt: skip


class Handler:
    """A consumer's handler that fails on row 1 until it is no longer `broken`."""

    def __init__(self) -> None:
        self.handled: list[Change] = []
        self.broken = True

    def __call__(self, changes: list[Change]) -> None:
        if self.broken and any(c.pk == 1 for c in changes):
            raise ValueError("no such customer")
        self.handled.extend(changes)


def test_a_relays_dead_letters_are_listed_shown_replayed_to_a_sink_and_dropped(
    tmp_path: Path,
) -> None:
    dead = f"sqlite:///{tmp_path / 'dead.db'}"
    refused = PermanentSinkError("value out of range for column n", "widen the column")
    letters = open_dead_letter(dead)
    letters.dead_letter([transaction("t1", 1, 2)], reason("redis://replica/0", refused))
    letters.dead_letter([transaction("t2", 1)], reason("redis://replica/0", refused))
    letters.close()

    listed = dlq("ls", dead)
    assert listed.exit_code == 0, listed.output
    assert " 3 " in listed.output
    shown = dlq("show", dead, "--format", "json")
    assert shown.exit_code == 0, shown.output
    found = [json.loads(line) for line in shown.output.splitlines()]
    assert [(d["row"], d["change"]["txid"]) for d in found] == [
        ("shop.orders:1", "t1"),
        ("shop.orders:2", "t1"),
        ("shop.orders:1", "t2"),
    ]
    assert found[0]["why"] == "value out of range for column n (fix: widen the column)"
    assert found[0]["origin"] == "redis://replica/0"
    assert found[0]["times"] == 1
    table = dlq("show", dead)
    assert "shop.orders:2" in table.output
    assert "value out of range" in table.output

    assert "3 dead letters" in dlq("replay", dead).output  # a dry run without --yes
    needs_to = dlq("replay", dead, "--yes")
    assert needs_to.exit_code == 2
    assert "--to SINK_URL" in needs_to.output
    target = f"sqlite:///{tmp_path / 'fixed.db'}"
    replayed = dlq("replay", dead, "--to", target, "--yes")
    assert replayed.exit_code == 0, replayed.output
    assert "replayed 3 dead letters" in replayed.output
    with EventStore(target) as store:
        events = list(store.read_all())
    assert [(e.stream, e.data["txid"]) for e in events] == [
        ("shop.orders-1", "t1"),
        ("shop.orders-2", "t1"),
        ("shop.orders-1", "t2"),
    ]
    assert " 3 " in dlq("ls", dead).output  # a relay's stay in their store
    assert "3 dead letters" in dlq("drop", dead).output  # a dry run
    assert "deleted 3 dead letters" in dlq("drop", dead, "--yes").output
    assert "no dead letters" in dlq("ls", dead).output


def test_a_missing_store_or_a_bad_url_exits_2(tmp_path: Path) -> None:
    missing = dlq("ls", f"sqlite:///{tmp_path / 'none.db'}")
    assert missing.exit_code == 2
    assert "no rowcast event store" in missing.output
    assert not any(tmp_path.iterdir())
    assert dlq("ls", "pulsar://h/t").exit_code == 2
    assert "unknown option 'strem'" in dlq("ls", "redis://127.0.0.1:6379/0?strem=x").output


@pytest.mark.server
def test_a_redis_consumers_dead_letters_from_the_command_line() -> None:
    url = require_redis()
    key = f"dlq-test:{uuid.uuid4().hex}"
    client = redis.Redis.from_url(url)
    stream = f"{url}?stream={key}"
    try:
        sink = open_sink(stream)
        sink.deliver([transaction("t1", 1), transaction("t2", 2), transaction("t3", 1)])
        sink.close()
        handle = Handler()

        consumer = open_consumer(stream, handle, group="billing", attempts=1, backoff=0.01)
        thread = threading.Thread(target=consumer.run)
        thread.start()
        wait_for(lambda: consumer.stats.parked == 2)
        shown = dlq("show", stream, "--format", "json")
        found = [json.loads(line) for line in shown.output.splitlines()]
        assert [(d["row"], d["group"], d["origin"]) for d in found] == [
            ("shop.orders:1", "billing", key),
            ("shop.orders:1", "billing", key),
        ]
        assert "ValueError: no such customer" in found[0]["why"]
        handle.broken = False
        replayed = dlq("replay", stream, "--yes")
        assert "replayed 2 dead letters" in replayed.output, replayed.output
        wait_for(lambda: len(handle.handled) == 3)
        consumer.stop()
        thread.join(30)
        assert [(c.pk, c.txid) for c in handle.handled] == [(2, "t2"), (1, "t1"), (1, "t3")]
        assert "no dead letters" in dlq("ls", stream).output
    finally:
        client.delete(key, f"{key}:dead")
        client.close()


def test_an_empty_redis_ls_says_which_streams_it_looked_at() -> None:
    # a consumer given ?stream=shop:orders parks in shop:orders:dead; `dlq ls redis://...`
    # looks at rowcast:*:dead only and said "no dead letters" with no word of it
    require_redis()
    prefix = f"rc_nothing_{uuid.uuid4().hex[:8]}"
    url = f"redis://127.0.0.1:6379/0?prefix={prefix}"
    listed = dlq("ls", url)
    assert listed.exit_code == 0, listed.output
    assert f"no stream matches {prefix}:*:dead" in listed.output
    assert "?stream=" in listed.output
    one = dlq("show", f"redis://127.0.0.1:6379/0?stream={prefix}:orders")
    assert f"no stream {prefix}:orders:dead" in one.output


@pytest.mark.server
def test_a_kafka_consumers_dead_letters_from_the_command_line() -> None:
    from rowcast.dlq.kafka import mark_group
    from tests import kafka

    require_kafka()
    topic = kafka.unique("rowcast-dlq")
    group = f"billing-{uuid.uuid4().hex[:8]}"
    dead = f"{group}.dead"
    url = f"{kafka.KAFKA}?topics={topic}&group={group}"
    try:
        sink = open_sink(f"{kafka.KAFKA}?topic={topic}&create=true")
        sink.deliver([transaction("t1", 1), transaction("t2", 2), transaction("t3", 1)])
        sink.close()
        handle = Handler()

        consumer = open_consumer(
            url, handle, attempts=1, backoff=0.01, create=True, **{"session.timeout.ms": 6000}
        )
        thread = threading.Thread(target=consumer.run)
        thread.start()
        wait_for(lambda: consumer.stats.parked == 2)
        listed = dlq("ls", url)
        assert listed.exit_code == 0, listed.output
        assert dead in listed.output
        assert " 2 " in listed.output
        shown = dlq("show", url, "--format", "json")
        found = [json.loads(line) for line in shown.output.splitlines()]
        assert [(d["row"], d["group"], d["origin"], d["change"]["txid"]) for d in found] == [
            ("shop.orders:1", group, topic, "t1"),
            ("shop.orders:1", group, topic, "t3"),
        ]
        assert "ValueError: no such customer" in found[0]["why"]
        assert found[0]["place"] == dead
        assert "no such customer" in dlq("show", url).output
        assert "2 dead letters" in dlq("replay", url).output  # a dry run without --yes
        handle.broken = False
        replayed = dlq("replay", url, "--yes")
        assert "replayed 2 dead letters" in replayed.output, replayed.output
        wait_for(lambda: len(handle.handled) == 3)
        assert "no dead letters" in dlq("ls", url).output  # marked done, still in the topic
        assert len(kafka.read([dead])) == 2
        consumer.stop()
        thread.join(30)
        assert [(c.pk, c.txid) for c in handle.handled] == [(2, "t2"), (1, "t1"), (1, "t3")]
    finally:
        kafka.delete_topics(topic)
        kafka.delete_topics(dead)
        kafka.delete_groups(group, mark_group(dead))


@pytest.mark.server
def test_kafka_dead_letters_are_dropped_and_the_topics_shared_are_taken_in_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from rowcast.dlq.kafka import mark_group
    from tests import kafka

    require_kafka()
    dead = f"{kafka.unique('rowcast-dlq')}.dead"
    admin = AdminClient({"bootstrap.servers": kafka.servers(), "log_level": 0})
    admin.create_topics([NewTopic(dead, 1, -1)])[dead].result(10)  # one partition: one order
    producer = Producer({"bootstrap.servers": kafka.servers(), "log_level": 0})
    for n, group in enumerate(["a", "a", "b", "a"]):
        change = transaction(f"t{n}", n)[0]
        producer.produce(
            dead,
            change.to_json(),
            headers=[("rowcast-id", f"id{n}"), ("rowcast-error", "boom"),
                     ("rowcast-group", group), ("rowcast-topic", f"{dead}-gone")],
        )  # fmt: skip
    assert producer.flush(10) == 0
    url = f"{kafka.KAFKA}?dead_letter={dead}"
    try:
        assert " 3 " in dlq("ls", url, "--group", "a").output
        assert "4 dead letters" in dlq("drop", url).output  # a dry run
        # group a's first two are dropped; its third waits behind b's
        assert "deleted 2 dead letters" in dlq("drop", url, "--group", "a", "--yes").output
        assert "1 of group a in" in caplog.text
        assert "wait behind a letter of another group" in caplog.text
        replay = dlq("replay", url, "--yes")  # the topic they came from is gone
        assert replay.exit_code == 2, replay.output
        assert f"the topic {dead}-gone they came from is gone" in replay.output
        assert not kafka.topics(f"{dead}-gone")
        shown = dlq("show", url, "--format", "json")
        assert [json.loads(line)["change_id"] for line in shown.output.splitlines()] == [
            "id2",
            "id3",
        ]
        assert "deleted 2 dead letters" in dlq("drop", url, "--yes").output
        assert "no dead letters" in dlq("ls", url).output
        assert len(kafka.read([dead])) == 4  # a Kafka topic keeps them: the mark moved
    finally:
        kafka.delete_topics(dead)
        kafka.delete_groups(mark_group(dead))


def test_kafka_dead_letters_of_an_unknown_topic_or_an_unreachable_broker_exit_2() -> None:
    from rowcast.testing.sink import closed_port
    from tests import kafka

    require_kafka()
    missing = kafka.unique("rowcast-none")
    unknown = dlq("ls", f"{kafka.KAFKA}?group={missing}")
    assert unknown.exit_code == 2, unknown.output
    assert f"no topic {missing}.dead on the cluster" in unknown.output
    assert "dead-letter topics there:" in unknown.output
    assert not kafka.topics(missing)  # nothing created
    down = dlq("show", f"kafka://127.0.0.1:{closed_port()}?group=g&timeout=2")
    assert down.exit_code == 2, down.output
    assert "cannot reach the cluster" in down.output
    assert "Traceback" not in down.output
    typo = dlq("ls", f"{kafka.KAFKA}?grup=g")
    assert typo.exit_code == 2
    assert "unknown option 'grup'" in typo.output

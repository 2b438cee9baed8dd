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
from tests.conftest import require_redis, wait_for


def dlq(*args: str) -> Any:
    return CliRunner().invoke(main, ["dlq", *args])


def transaction(txid: str, *pks: int) -> list[Change]:
    return [
        Change("write", "shop", "orders", pk, after={"id": pk, "n": pk}, txid=txid,
               position=f"p:{txid}", source="test")
        for pk in pks
    ]  # fmt: skip


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
        handled: list[Change] = []
        broken = True

        def handle(changes: list[Change]) -> None:
            if broken and any(c.pk == 1 for c in changes):
                raise ValueError("no such customer")
            handled.extend(changes)

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
        broken = False
        replayed = dlq("replay", stream, "--yes")
        assert "replayed 2 dead letters" in replayed.output, replayed.output
        wait_for(lambda: len(handled) == 3)
        consumer.stop()
        thread.join(30)
        assert [(c.pk, c.txid) for c in handled] == [(2, "t2"), (1, "t1"), (1, "t3")]
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

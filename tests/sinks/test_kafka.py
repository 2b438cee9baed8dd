"""The Kafka sink: the sink contract in both layouts, then its own behaviour."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from rowcast.change import Change
from rowcast.errors import ConfigError, PermanentSinkError
from rowcast.sinks import open_sink
from rowcast.sinks.base import change_id
from rowcast.sinks.kafka import KafkaSink, topic_name
from rowcast.testing.sink import SinkContract, closed_port, transactions
from tests import kafka
from tests.conftest import require_kafka

BAD_URLS = [
    ("kafka://", "no broker"),
    ("kafka://127.0.0.1", "not host:port"),
    ("kafka://127.0.0.1:9092/changes", "has no path"),
    ("kafka://127.0.0.1:9092?topic=", "needs a name"),
    ("kafka://127.0.0.1:9092?topic=a b", "a topic name is"),
    ("kafka://127.0.0.1:9092?prefix=a/b", "prefix= is letters"),
    ("kafka://127.0.0.1:9092?partitions=0", "partitions must be a positive number"),
    ("kafka://127.0.0.1:9092?timeout=x", "timeout must be a positive number"),
    ("kafka://127.0.0.1:9092?create=maybe", "create is true or false"),
    ("kafka://127.0.0.1:9092?format=avro", "format is rowcast or debezium"),
    ("kafka://127.0.0.1:9092?topics=a", r"unknown option 'topics'.*did you mean 'topic'"),
    ("kafka://127.0.0.1:9092?topic=a&topic=b", "given twice"),
    ("kafka://127.0.0.1:9092?compression.type=fast", "refuses its configuration"),
]


def _arrived(messages: list[object]) -> list[tuple[uuid.UUID, Change]]:
    found = []
    for message in messages:
        headers = dict(message.headers())  # type: ignore[attr-defined]
        found.append(
            (uuid.UUID(headers["rowcast-id"].decode()), Change.from_json(message.value()))  # type: ignore[attr-defined]
        )
    return found


@pytest.mark.server
class _KafkaContract(SinkContract):
    bad_urls = BAD_URLS

    @pytest.fixture
    def destination(self) -> Iterator[None]:
        self.url = require_kafka()
        self.prefix = kafka.unique("rowcast-sink")
        yield
        kafka.delete_topics(self.prefix)

    def unreachable_url(self) -> str:
        return f"kafka://127.0.0.1:{closed_port()}?timeout=3"


class TestOneTopic(_KafkaContract):
    order = "total"

    def make_sink(self) -> KafkaSink:
        return KafkaSink(f"{self.url}?topic={self.prefix}.all")

    def read_back(self) -> list[tuple[uuid.UUID, Change]]:
        return _arrived(kafka.read([f"{self.prefix}.all"]))


class TestOneTopicPerTable(_KafkaContract):
    order = "table"

    def make_sink(self) -> KafkaSink:
        return KafkaSink(f"{self.url}?prefix={self.prefix}")

    def read_back(self) -> list[tuple[uuid.UUID, Change]]:
        return _arrived(kafka.read(kafka.topics(self.prefix)))


# ---------------------------------------------------------------- its own behaviour


@pytest.fixture
def prefix() -> Iterator[str]:
    require_kafka()
    name = kafka.unique("rowcast-sink")
    yield name
    kafka.delete_topics(name)


def test_topic_names_are_debeziums_with_unsafe_characters_replaced() -> None:
    assert topic_name("rowcast", "shop", "orders") == "rowcast.shop.orders"
    assert topic_name("rowcast", None, "log") == "rowcast.log"
    assert topic_name("rowcast", "my db", "a*b>c") == "rowcast.my_db.a_b_c"


@pytest.mark.server
def test_the_message_layout(prefix: str) -> None:
    sink = open_sink(f"{require_kafka()}?prefix={prefix}")
    first, second = batch = [
        Change("write", "shop", "orders", 7, None, {"id": 7}, position="f:1", source="mysql"),
        Change("update", None, "log", (1, "eu"), {"id": 1}, {"id": 1}, position="f:1"),
    ]
    sink.deliver([batch])
    sink.close()
    [orders] = kafka.read([f"{prefix}.shop.orders"])
    [log] = kafka.read([f"{prefix}.log"])  # no schema: no dot
    assert orders.key() == b"7"
    assert orders.value() == first.to_json().encode()
    assert orders.headers() == [
        ("rowcast-id", str(change_id(first, 0)).encode()),
        ("rowcast-position", b"f:1"),
    ]
    assert json.loads(log.key()) == [1, "eu"]
    assert dict(log.headers())["rowcast-id"] == str(change_id(second, 1)).encode()


@pytest.mark.server
def test_one_topic_keys_name_the_table(prefix: str) -> None:
    sink = open_sink(f"{require_kafka()}?topic={prefix}")
    sink.deliver(transactions(1, per_transaction=1))
    sink.close()
    [message] = kafka.read([prefix])
    assert json.loads(message.key()) == {"schema": "shop", "table": "orders", "pk": 0}


@pytest.mark.server
def test_a_rows_changes_share_a_partition(prefix: str) -> None:
    sink = open_sink(f"{require_kafka()}?prefix={prefix}&partitions=4")
    sink.deliver(transactions(40, per_transaction=1, tables=[("shop", "orders")]))
    row = {"id": 1000}
    sink.deliver(
        [
            [Change("update", "shop", "orders", 1000, row, {**row, "n": n}, position=f"p:{n}")]
            for n in range(20)
        ]
    )
    sink.close()
    messages = kafka.read([f"{prefix}.shop.orders"])
    assert len({m.partition() for m in messages}) > 1  # spread over partitions...
    mine = [m for m in messages if m.key() == b"1000"]
    assert len({m.partition() for m in mine}) == 1  # ...but one row stays in one, in order
    assert [Change.from_json(m.value()).after["n"] for m in mine] == list(range(20))


@pytest.mark.server
def test_check_creates_the_one_topic_and_create_false_refuses_a_missing_one(prefix: str) -> None:
    url = require_kafka()
    sink = open_sink(f"{url}?topic={prefix}.made&partitions=3")
    sink.check()
    sink.close()
    assert kafka.topics(prefix) == [f"{prefix}.made"]
    refused = open_sink(f"{url}?topic={prefix}.absent&create=false")
    with pytest.raises(
        ConfigError, match=rf"topic {prefix}.absent does not exist and create=false"
    ):
        refused.check()
    refused.close()
    per_table = open_sink(f"{url}?prefix={prefix}&create=false")
    per_table.check()  # nothing to check before a table is known
    with pytest.raises(ConfigError, match="does not exist and create=false"):
        per_table.deliver(transactions(1))
    per_table.close()
    assert kafka.topics(prefix) == [f"{prefix}.made"]


@pytest.mark.server
def test_a_message_over_the_size_limit_is_permanent(prefix: str) -> None:
    sink = open_sink(f"{require_kafka()}?topic={prefix}&message.max.bytes=2000")
    big = Change("write", "shop", "orders", 1, None, {"id": 1, "blob": "x" * 5000}, position="p")
    with pytest.raises(PermanentSinkError, match="MSG_SIZE_TOO_LARGE"):
        sink.deliver([[big]])
    sink.close()


@pytest.mark.server
def test_format_debezium_writes_debeziums_key_and_value_and_a_tombstone(prefix: str) -> None:
    row = {"id": 1004, "first_name": "Anne"}
    gone = Change(
        "delete",
        "inventory",
        "customers",
        1004,
        row,
        None,
        ts=2.0,
        txid="t2",
        position="mysql-bin.000003:805",
        source="mysql",
    )
    made = Change(
        "write",
        "inventory",
        "customers",
        1004,
        None,
        row,
        ts=1.0,
        txid="t1",
        position="mysql-bin.000003:154",
        source="mysql",
    )
    sink = open_sink(f"{require_kafka()}?prefix={prefix}&format=debezium")
    sink.deliver([[made], [gone]])
    sink.close()
    messages = kafka.read([f"{prefix}.inventory.customers"])
    assert [json.loads(m.key()) for m in messages] == [{"id": 1004}] * 3
    created, deleted, tombstone = (m.value() for m in messages)
    assert json.loads(created)["op"] == "c"
    assert json.loads(created)["source"]["name"] == prefix  # the logical name: the prefix
    assert json.loads(deleted)["op"] == "d"
    assert tombstone is None  # after each delete, for log compaction
    assert Change.from_debezium(created, messages[0].key()) == made
    assert Change.from_debezium(deleted, messages[1].key()) == gone


@pytest.mark.server
def test_format_debezium_with_schemas_and_without_tombstones(prefix: str) -> None:
    url = f"{require_kafka()}?topic={prefix}&format=debezium&schemas=true&tombstones=false"
    sink = open_sink(url)
    batch = transactions(3)  # writes, updates and deletes
    sink.deliver(batch)
    sink.close()
    messages = kafka.read([prefix])
    assert len(messages) == 9  # no tombstones
    back = [Change.from_debezium(m.value(), m.key()) for m in messages]
    assert back == [change for tx in batch for change in tx]
    assert set(json.loads(messages[0].value())) == {"schema", "payload"}

"""The Debezium envelope: Debezium's documented MySQL and PostgreSQL examples, field by
field, and changes read back equal (`Change.from_debezium`)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from typing import Any

import pytest

from rowcast.change import Change
from rowcast.debezium import DebeziumFormat, from_debezium, key, value
from rowcast.testing.sink import transactions

ANNE = {"id": 1004, "first_name": "Anne", "last_name": "Kretchmar", "email": "annek@noanswer.org"}
ANNE_MARIE = {**ANNE, "first_name": "Anne Marie"}


def payload(change: Change, **options: Any) -> dict[str, Any]:
    return value(change, name="mysql-server-1", **options)


# Debezium's MySQL connector documentation: the customers table, row 1004 created, its
# first_name updated, then deleted (binlog mysql-bin.000003 at 154, 484, 805).
MYSQL = [
    (
        Change(
            "write",
            "inventory",
            "customers",
            1004,
            None,
            ANNE,
            ts=0.0,
            position="mysql-bin.000003:154",
            source="mysql",
        ),
        {
            "op": "c",
            "before": None,
            "after": ANNE,
            "source": {
                "connector": "mysql",
                "name": "mysql-server-1",
                "ts_ms": 0,
                "ts_us": 0,
                "ts_ns": 0,
                "snapshot": False,
                "db": "inventory",
                "table": "customers",
                "gtid": None,
                "file": "mysql-bin.000003",
                "pos": 154,
                "row": 0,
            },
        },
    ),
    (
        Change(
            "update",
            "inventory",
            "customers",
            1004,
            ANNE,
            ANNE_MARIE,
            ts=1465581029.100,
            position="mysql-bin.000003:484",
            source="mysql",
        ),
        {
            "op": "u",
            "before": ANNE,
            "after": ANNE_MARIE,
            "source": {
                "connector": "mysql",
                "ts_ms": 1465581029100,
                "ts_us": 1465581029100000,
                "ts_ns": 1465581029100000000,
                "snapshot": False,
                "db": "inventory",
                "table": "customers",
                "gtid": None,
                "file": "mysql-bin.000003",
                "pos": 484,
                "row": 0,
            },
        },
    ),
    (
        Change(
            "delete",
            "inventory",
            "customers",
            1004,
            ANNE_MARIE,
            None,
            ts=1465581902.300,
            position="mysql-bin.000003:805",
            source="mysql",
        ),
        {
            "op": "d",
            "before": ANNE_MARIE,
            "after": None,
            "source": {
                "connector": "mysql",
                "ts_ms": 1465581902300,
                "ts_us": 1465581902300000,
                "ts_ns": 1465581902300000000,
                "snapshot": False,
                "db": "inventory",
                "table": "customers",
                "file": "mysql-bin.000003",
                "pos": 805,
            },
        },
    ),
]

PG_ANNE = {**ANNE, "id": 1}
# Debezium's PostgreSQL connector documentation: customers row 1 created (txId 555) and
# updated (txId 556, its before image the key alone: REPLICA IDENTITY DEFAULT), LSN 24023128.
POSTGRES = [
    (
        Change(
            "write",
            "public",
            "customers",
            1,
            None,
            PG_ANNE,
            ts=1559033904.863123,
            txid="555",
            position="0/16E9058",
            source="postgres",
        ),
        {
            "op": "c",
            "before": None,
            "after": PG_ANNE,
            "source": {
                "connector": "postgresql",
                "name": "PostgreSQL_server",
                "ts_ms": 1559033904863,
                "ts_us": 1559033904863123,
                "ts_ns": 1559033904863123000,
                "db": "postgres",
                "schema": "public",
                "table": "customers",
                "txId": 555,
                "lsn": 24023128,
                "xmin": None,
            },
        },
    ),
    (
        Change(
            "update",
            "public",
            "customers",
            1,
            {"id": 1},
            {**PG_ANNE, "first_name": "Anne Marie"},
            ts=1559033904.863769,
            txid="556",
            position="0/16E9058",
            source="postgres",
        ),
        {
            "op": "u",
            "before": {"id": 1},
            "after": {**PG_ANNE, "first_name": "Anne Marie"},
            "source": {
                "connector": "postgresql",
                "ts_ms": 1559033904863,
                "ts_us": 1559033904863769,
                "ts_ns": 1559033904863769000,
                "snapshot": False,
                "db": "postgres",
                "schema": "public",
                "table": "customers",
                "txId": 556,
                "lsn": 24023128,
                "xmin": None,
            },
        },
    ),
]


def same_fields(found: dict[str, Any], documented: dict[str, Any]) -> None:
    """Every field of Debezium's example is in `found`, with the documented value."""
    for name, want in documented.items():
        if isinstance(want, dict) and name == "source":
            for field, expected in want.items():
                assert found["source"][field] == expected, f"source.{field}"
        else:
            assert found[name] == want, name


@pytest.mark.parametrize(("change", "documented"), MYSQL)
def test_mysql_changes_are_debeziums_mysql_examples(
    change: Change, documented: dict[str, Any]
) -> None:
    same_fields(payload(change), documented)
    assert key(change) == {"id": 1004}
    back = from_debezium(payload(change), key(change))
    assert back == change


@pytest.mark.parametrize(("change", "documented"), POSTGRES)
def test_postgres_changes_are_debeziums_postgres_examples(
    change: Change, documented: dict[str, Any]
) -> None:
    found = value(change, name="PostgreSQL_server", db="postgres")
    same_fields(found, documented)
    assert json.loads(found["source"]["sequence"])[1] == "24023128"  # [last committed, this]
    assert key(change) == {"id": 1}
    assert from_debezium(found, key(change)) == change


def test_the_schema_is_the_json_converters() -> None:
    change = MYSQL[0][0]
    event = value(change, name="mysql-server-1", schemas=True)
    schema = event["schema"]
    assert schema["name"] == "mysql-server-1.inventory.customers.Envelope"
    fields = {f["field"]: f for f in schema["fields"]}
    assert (
        fields["before"]["name"]
        == fields["after"]["name"]
        == ("mysql-server-1.inventory.customers.Value")
    )
    assert fields["source"]["name"] == "io.debezium.connector.mysql.Source"
    assert [f["field"] for f in fields["after"]["fields"]] == list(ANNE)
    assert fields["op"] == {"type": "string", "optional": False, "field": "op"}
    keyed = key(change, name="mysql-server-1", schemas=True)
    assert keyed == {
        "schema": {
            "type": "struct",
            "fields": [{"type": "int64", "optional": False, "field": "id"}],
            "optional": False,
            "name": "mysql-server-1.inventory.customers.Key",
        },
        "payload": {"id": 1004},
    }


def test_a_snapshot_read_is_op_r() -> None:
    read = Change(
        "write", "inventory", "customers", 1004, None, ANNE, ts=1.5, position="p", snapshot=True
    )
    event = value(read)
    assert event["op"] == "r"
    assert event["source"]["snapshot"] is True
    assert from_debezium(event, key(read)) == read


def test_the_transaction_block_numbers_each_transactions_changes() -> None:
    batch = transactions(2, per_transaction=3)  # orders, items, orders; then items, orders, items
    events = DebeziumFormat().events(batch)
    blocks = [json.loads(v)["transaction"] for _, _, v in events]
    assert [b["total_order"] for b in blocks] == [1, 2, 3, 1, 2, 3]
    assert [b["data_collection_order"] for b in blocks] == [1, 1, 2, 1, 1, 2]
    assert [b["id"] for b in blocks] == [c.txid for tx in batch for c in tx]


RICH: dict[str, Any] = {
    "id": 7,
    "region": "eu",
    "price": Decimal("12.50"),
    "negative": Decimal("-0.001"),
    "big": Decimal("123456789012345678901234567890.12"),
    "at": dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=dt.UTC),
    "local": dt.datetime(2024, 5, 1, 14, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    "naive": dt.datetime(2024, 5, 1, 14, 30, 0, 5),
    "day": dt.date(1969, 12, 31),
    "clock": dt.time(23, 59, 59, 999999),
    "zoned": dt.time(10, 0, tzinfo=dt.UTC),
    "interval": dt.timedelta(days=2, microseconds=3),
    "raw": b"\x00\xff bytes",
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "doc": {"$looks_like_a_tag": [1, 2.5, True]},
    "tags": {"a", "b"},
    "text": 'héllo ✓ "quoted"',
    "ratio": 0.25,
    "flag": True,
    "nothing": None,
    "pair": (1, 2),
}


@pytest.mark.parametrize("action", ["write", "update", "delete"])
def test_with_schemas_a_change_comes_back_equal(action: str) -> None:
    before = None if action == "write" else {**RICH, "price": Decimal("1.00")}
    after = None if action == "delete" else RICH
    change = Change(
        action,
        "shop",
        "orders",
        (7, "eu"),
        before,
        after,
        ts=1714564800.123456,
        txid="t-1",
        position="binlog.000001:99",
        source="mysql",
    )
    event = json.loads(json.dumps(value(change, schemas=True)))  # through JSON text
    keyed = json.loads(json.dumps(key(change, schemas=True)))
    assert keyed["payload"] == {"id": 7, "region": "eu"}
    assert Change.from_debezium(event, keyed) == change
    assert Change.from_debezium(json.dumps(event), json.dumps(keyed)) == change


def test_without_schemas_plain_rows_come_back_equal() -> None:
    for transaction in transactions(3):
        for change in transaction:
            event = json.loads(json.dumps(value(change)))
            assert from_debezium(event, key(change)) == change


def test_types_as_debeziums_default_converters_write_them() -> None:
    change = Change("write", "shop", "t", 7, None, RICH, position="p")
    after = value(change)["after"]
    assert after["price"] == "BOI="  # 1250 unscaled, big-endian: 0x04E2
    assert after["at"] == "2024-05-01T12:00:00.123456Z"
    assert after["local"] == "2024-05-01T12:30:00Z"
    assert after["naive"] == 1714573800000005
    assert after["day"] == -1
    assert after["clock"] == 86399999999
    assert after["raw"] == "AP8gYnl0ZXM="
    assert after["uuid"] == "12345678-1234-5678-1234-567812345678"
    assert json.loads(after["doc"]) == RICH["doc"]
    assert after["tags"] == "a,b"
    schema = {f["field"]: f for f in value(change, schemas=True)["schema"]["fields"]}
    columns = {f["field"]: f for f in schema["after"]["fields"]}
    assert columns["price"]["name"] == "org.apache.kafka.connect.data.Decimal"
    assert columns["price"]["parameters"] == {"scale": "2"}
    assert columns["naive"]["name"] == "io.debezium.time.MicroTimestamp"
    assert columns["day"] == {
        "type": "int32",
        "name": "io.debezium.time.Date",
        "optional": True,
        "field": "day",
    }


def test_a_tombstone_or_another_message_is_not_a_change() -> None:
    with pytest.raises(ValueError, match="tombstone"):
        from_debezium("null")
    with pytest.raises(ValueError, match="not a Debezium change event"):
        from_debezium({"action": "write"})

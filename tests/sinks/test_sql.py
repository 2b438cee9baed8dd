"""ReplicationSink: changes applied to the same-named tables of another database.

By hand on SQLite first (every operation, re-delivery, atomicity, errors), then for
real: rows written to MariaDB, read back from its binlog, replicated into
PostgreSQL and SQLite, and compared row for row with the source table.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from rowcast import Change
from rowcast.errors import ConfigError, PermanentSinkError, SinkError, TransientSinkError
from rowcast.sinks import open_sink
from rowcast.sinks._sql_types import decimals_as_text
from rowcast.sinks.sql import ReplicationSink
from tests.conftest import private_schema, require_server

MYSQL = "mysql://root@127.0.0.1:3306/test"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def tx(*changes: Change) -> list[Change]:
    return list(changes)


def write(pk: Any, position: str = "p1", **row: Any) -> Change:
    return Change("write", "app", "items", pk, after={"id": pk, **row}, position=position)


def update(pk: Any, before: dict[str, Any], after: dict[str, Any]) -> Change:
    return Change("update", "app", "items", pk, before=before, after=after, position="p2")


def delete(pk: Any, **row: Any) -> Change:
    return Change("delete", "app", "items", pk, before={"id": pk, **row}, position="p3")


def rows(url: str, table: str, schema: str | None = None) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            t = sa.Table(table, sa.MetaData(), schema=schema, autoload_with=conn)
            if conn.dialect.name == "sqlite":  # the types the sink gives its own columns
                decimals_as_text(t, conn)
            return [tuple(r) for r in conn.execute(sa.select(t).order_by(*t.primary_key))]
    finally:
        engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/replica.db"


def test_open_sink_picks_replication_by_mode(sqlite_url: str) -> None:
    sink = open_sink(f"{sqlite_url}?mode=replicate")
    try:
        assert isinstance(sink, ReplicationSink)
    finally:
        sink.close()


def test_writes_updates_moves_and_deletes(sqlite_url: str) -> None:
    sink = ReplicationSink(sqlite_url)
    a = {"id": 1, "name": "a", "price": Decimal("1.10")}
    sink.deliver(
        [
            tx(write(1, name="a", price=Decimal("1.10")), write(2, name="b", price=None)),
            tx(update(1, a, {**a, "name": "A"})),
            tx(
                update(
                    2, {"id": 2, "name": "b", "price": None}, {"id": 3, "name": "b", "price": None}
                )
            ),
            tx(
                write(4, name="d", price=Decimal("4.00")),
                delete(4, name="d", price=Decimal("4.00")),
            ),
        ]
    )
    sink.close()
    assert rows(sqlite_url, "items") == [(1, "A", Decimal("1.10")), (3, "b", None)]


def test_moves_in_a_row_are_applied_one_by_one(sqlite_url: str) -> None:
    with_sink = ReplicationSink(sqlite_url)
    with_sink.deliver([tx(write(1, name="x"))])
    with_sink.deliver(
        [
            tx(
                update(1, {"id": 1, "name": "x"}, {"id": 2, "name": "x"}),
                update(2, {"id": 2, "name": "x"}, {"id": 3, "name": "x"}),
                write(1, name="new"),
            )
        ]
    )
    with_sink.close()
    assert rows(sqlite_url, "items") == [(1, "new"), (3, "x")]


def test_re_delivery_converges_to_the_same_rows(sqlite_url: str) -> None:
    batch = [
        tx(write(1, name="a"), write(2, name="b")),
        tx(update(1, {"id": 1, "name": "a"}, {"id": 1, "name": "aa"})),
        tx(delete(2, name="b")),
    ]
    sink = ReplicationSink(sqlite_url)
    sink.deliver(batch)
    once = rows(sqlite_url, "items")
    sink.deliver(batch)  # after a crash the relay delivers it all again
    sink.deliver(batch[1:])
    sink.close()
    assert rows(sqlite_url, "items") == once == [(1, "aa")]


def test_types_inferred_from_values_round_trip(sqlite_url: str) -> None:
    when = dt.datetime(2026, 11, 23, 20, 1, 2, 345678)
    values = {
        "amount": Decimal("12345.678901"),
        "ratio": 0.25,
        "blob": b"\x00\xff",
        "flag": True,
        "at": when,
        "day": when.date(),
        "doc": {"a": [1, 2]},
        "ref": uuid.UUID(int=7),
        "note": None,
    }
    sink = ReplicationSink(sqlite_url)
    sink.deliver([tx(write(1, **values))])
    sink.close()
    engine = sa.create_engine(sqlite_url)
    with engine.connect() as conn:
        t = sa.Table("items", sa.MetaData(), autoload_with=conn)
        declared = {r[1]: r[2] for r in conn.exec_driver_sql("PRAGMA table_info(items)")}
        assert declared["amount"] == "DECIMAL_TEXT"  # exact, with text affinity
        assert isinstance(t.c.at.type, sa.DateTime)
        assert [c.name for c in t.primary_key] == ["id"]
    engine.dispose()
    sink = ReplicationSink(sqlite_url)  # a new sink reflects the table it made
    sink.deliver([tx(write(2, **values))])
    sink.close()
    got = rows(sqlite_url, "items")
    assert got[1][1] == Decimal("12345.678901")  # exact, kept as text on SQLite
    assert got[1][3] == b"\x00\xff"


def test_columns_named_as_sqlite_keywords_sqlalchemy_does_not_quote(sqlite_url: str) -> None:
    sink = ReplicationSink(sqlite_url)
    sink.deliver([tx(write(1, nothing="a", returning="b"))])
    sink.deliver([tx(write(1, nothing="c", returning="d"))])
    sink.close()
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as conn:
        assert conn.execute('SELECT id, "nothing", "returning" FROM items').fetchall() == [
            (1, "c", "d")
        ]


def test_an_aware_datetime_is_written_as_its_utc_time_where_there_is_no_zone_type(
    sqlite_url: str,
) -> None:
    paris = dt.timezone(dt.timedelta(hours=2))
    sink = ReplicationSink(sqlite_url)
    sink.deliver([tx(write(1, at=dt.datetime(2026, 6, 1, 14, 30, tzinfo=paris)))])
    sink.close()
    assert rows(sqlite_url, "items") == [(1, dt.datetime(2026, 6, 1, 12, 30))]


def test_a_failing_batch_applies_nothing(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
    engine.dispose()
    sink = ReplicationSink(sqlite_url)
    with pytest.raises(SinkError, match="applying 2 changes failed"):
        sink.deliver([tx(write(1, name="ok")), tx(write(2, name=None))])
    sink.deliver([tx(write(3, name="later"))])  # the sink goes on afterwards
    sink.close()
    assert rows(sqlite_url, "items") == [(3, "later")]


def test_a_missing_table_without_create_is_a_permanent_error(sqlite_url: str) -> None:
    sink = ReplicationSink(f"{sqlite_url}?create=false")
    with pytest.raises(PermanentSinkError, match="no table 'items' to replicate into"):
        sink.deliver([tx(write(1, name="a"))])
    sink.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:///x.db?mode=copy", "takes mode=replicate"),
        ("sqlite:///x.db?create=maybe", "create must be true or false"),
        ("nosuchdb://h/db?mode=replicate", "not a database URL SQLAlchemy can open"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ReplicationSink(url)


def test_an_unreachable_database_is_transient() -> None:
    sink = ReplicationSink("postgresql://nobody@127.0.0.1:1/db?mode=replicate")
    with pytest.raises(TransientSinkError, match="cannot connect"):  # the first, checked
        sink.deliver([tx(write(1, name="a"))])
    with pytest.raises(TransientSinkError, match="cannot connect"):
        sink.check()
    sink.close()


def test_a_locked_sqlite_replica_is_transient(sqlite_url: str) -> None:
    sink = ReplicationSink(f"{sqlite_url}?timeout=0.05")
    sink.deliver([tx(write(1, name="a"))])
    holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(TransientSinkError, match="locked"):
            sink.deliver([tx(write(2, name="b"))])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    sink.deliver([tx(write(2, name="b"))])  # the retry, once the lock is gone
    sink.close()
    assert rows(sqlite_url, "items") == [(1, "a"), (2, "b")]


@contextlib.contextmanager
def role(*grants: str) -> Iterator[str]:
    """A PostgreSQL login role given `grants` (``{role}`` stands for its name), dropped after."""
    url = require_server("postgresql")
    name = f"rc_role_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {name} LOGIN")
        for grant in grants:
            conn.exec_driver_sql(grant.format(role=name))
    try:
        yield name
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {name}")
            conn.exec_driver_sql(f"DROP ROLE {name}")
        engine.dispose()


@pytest.mark.server
def test_what_a_postgresql_replica_refuses_is_permanent_with_the_fix(postgres_schema: str) -> None:
    engine = sa.create_engine(require_server("postgresql"))
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE {postgres_schema}.items (id int PRIMARY KEY, name text, n smallint)"
        )
    engine.dispose()
    sink = ReplicationSink(f"{POSTGRES}?mode=replicate&schema={postgres_schema}")
    sink.check()
    with pytest.raises(PermanentSinkError, match=r"out of range.*change the column's type"):
        sink.deliver([tx(write(1, name="a", n=100_000))])
    sink.deliver([tx(write(1, name="a", n=7))])  # the sink goes on with what fits
    sink.close()
    grants = (
        f"GRANT USAGE ON SCHEMA {postgres_schema} TO {{role}}",
        f"GRANT SELECT ON {postgres_schema}.items TO {{role}}",
    )
    with role(*grants) as reader:
        url = f"postgresql://{reader}@127.0.0.1:5432/test?mode=replicate&schema={postgres_schema}"
        sink = ReplicationSink(f"{url}&create=false")  # creating would need CREATE too
        sink.check()  # it may use the schema: which tables it may write is known by writing
        with pytest.raises(PermanentSinkError, match=r"permission denied.*grant the user"):
            sink.deliver([tx(write(2, name="b", n=1))])
        sink.close()
    with role() as stranger:
        url = f"postgresql://{stranger}@127.0.0.1:5432/test?mode=replicate&schema={postgres_schema}"
        sink = ReplicationSink(url)
        lacks = f"lacks USAGE and CREATE on schema '{postgres_schema}'.*GRANT USAGE, CREATE ON"
        with pytest.raises(ConfigError, match=lacks):
            sink.check()
        sink.close()
    assert rows(POSTGRES, "items", postgres_schema) == [(1, "a", 7)]


@pytest.mark.server
def test_the_check_refuses_a_missing_target_schema_it_may_not_create() -> None:
    require_server("postgresql")
    missing = f"rc_missing_{uuid.uuid4().hex[:8]}"  # made when create=true (the default)
    sink = ReplicationSink(f"{POSTGRES}?mode=replicate&schema={missing}&create=false")
    with pytest.raises(ConfigError, match=f"schema '{missing}' does not exist.*CREATE SCHEMA"):
        sink.check()
    sink.close()


# ---------------------------------------------------------------- MariaDB -> PostgreSQL, SQLite

TYPES_TABLE = """
CREATE TABLE {name} (
    id INT PRIMARY KEY,
    small TINYINT, big BIGINT UNSIGNED, price DECIMAL(10, 2), ratio DOUBLE,
    label VARCHAR(40), body TEXT, raw VARBINARY(16), day DATE, at DATETIME(6),
    clock TIME, mood ENUM('happy', 'sad'), tags SET('a', 'b', 'c'), doc JSON, flag BOOLEAN
)
"""


@pytest.fixture
def source_table() -> Iterator[tuple[sa.Engine, str]]:
    require_server("mysql")
    name = f"rc_repl_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine("mysql+pymysql://root@127.0.0.1:3306/test")
    with engine.begin() as conn:
        conn.exec_driver_sql(TYPES_TABLE.format(name=name))
    try:
        yield engine, name
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
        engine.dispose()


def binlog_position(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        file, offset = conn.exec_driver_sql("SHOW MASTER STATUS").one()[:2]
    return f"{file}:{offset}"


def _tags(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """The SET column (index 12) as a set: MariaDB gives "a,c", the replica "a,c" or "c,a"."""
    return (*row[:12], set((row[12] or "").split(",")) - {""}, *row[13:])


def _normal(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)  # BOOLEAN is TINYINT(1): 0 and 1 on both sides
    if isinstance(value, Decimal) and value == value.to_integral_value() and value > 2**63:
        return int(value)  # unsigned BIGINT: NUMERIC(20) on the replica
    if isinstance(value, dt.timedelta):
        return (dt.datetime.min + value).time()
    if isinstance(value, str) and value.startswith(("{", "[")):
        import json

        return json.loads(value)
    return value


@pytest.fixture
def postgres_schema() -> Iterator[str]:
    with private_schema("rc_repl") as schema:
        yield schema


@pytest.mark.server
def test_mariadb_replicated_into_postgresql_and_sqlite(
    source_table: tuple[sa.Engine, str], postgres_schema: str, sqlite_url: str
) -> None:
    from rowcast.sources.mysql import BinlogSource

    engine, name = source_table
    start = binlog_position(engine)
    with engine.begin() as conn:
        for i in range(1, 21):
            conn.exec_driver_sql(
                f"INSERT INTO {name} VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
                "%s, %s, %s)",
                (
                    i,
                    -i,
                    2**64 - i,
                    Decimal(f"{i}.25"),
                    i / 3,
                    f"label {i}",
                    "x" * i * 10,
                    bytes([i, 0, 255]),
                    dt.date(2026, 1, i),
                    dt.datetime(2026, 1, i, 1, 2, 3, i),
                    dt.timedelta(hours=i),
                    "sad" if i % 2 else "happy",
                    "a,c" if i % 3 else "",
                    f'{{"n": {i}, "list": [1, 2]}}',
                    i % 2,
                ),
            )
    with engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE {name} SET label = 'changed', doc = NULL WHERE id <= 5")
        conn.exec_driver_sql(f"UPDATE {name} SET id = id + 100 WHERE id = 6")
        conn.exec_driver_sql(f"DELETE FROM {name} WHERE id IN (7, 8)")
    transactions = list(BinlogSource(MYSQL, start=start, end="now", tables=[f"test.{name}"]))
    assert sum(map(len, transactions)) == 20 + 5 + 1 + 2

    with engine.connect() as conn:  # the driver's values, not those of reflected types
        source_rows = conn.exec_driver_sql(f"SELECT * FROM {name} ORDER BY id").all()
    expected = [tuple(map(_normal, row)) for row in source_rows]
    targets = [
        (f"{POSTGRES}?mode=replicate&schema={postgres_schema}", postgres_schema),
        (f"{sqlite_url}?mode=replicate", None),
    ]
    for url, schema in targets:
        sink = open_sink(url, source_url=MYSQL)
        sink.deliver(transactions[:2])
        sink.deliver(transactions)  # re-delivered from the start, as after a crash
        sink.close()
        target_url = "postgresql+psycopg://postgres@127.0.0.1:5432/test" if schema else sqlite_url
        got = [tuple(_normal(v) for v in row) for row in rows(target_url, name, schema)]
        got = [tuple(map(_normal, row)) for row in rows(target_url, name, schema)]
        assert [_tags(row) for row in got] == [_tags(row) for row in expected], url


# ---------------------------------------------------------------- found in review

UNCHANGED_TOAST = "rowcast:unchanged-toast"  # rowcast.sources.postgres.UNCHANGED, after JSON


def test_an_unchanged_toasted_value_is_never_written_as_the_marker(sqlite_url: str) -> None:
    """PostgreSQL does not log a TOASTed value an UPDATE left alone: keep the replica's own."""
    body = "x" * 10_000
    sink = ReplicationSink(sqlite_url)
    sink.deliver([tx(write(1, name="a", body=body), write(2, name="b", body=body))])
    full = {"id": 1, "name": "a", "body": body}  # REPLICA IDENTITY FULL: before has it
    sink.deliver(
        [
            tx(update(1, full, {"id": 1, "name": "A", "body": UNCHANGED_TOAST})),
            tx(update(2, {"id": 2}, {"id": 2, "name": "B", "body": UNCHANGED_TOAST})),
            tx(update(1, {**full, "name": "A"}, {"id": 3, "name": "A", "body": UNCHANGED_TOAST})),
        ]
    )
    sink.close()
    assert rows(sqlite_url, "items") == [(2, "B", body), (3, "A", body)]

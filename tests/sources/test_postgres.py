"""LogicalSource against the real PostgreSQL of this machine (wal_level=logical).

Everything runs in a private database ``rc_pg_<run>`` made for this module, so
that its publications touch no one else's tables. Each
test has its own slot and publication; every slot is dropped at the end of its
test, its reader's connection terminated first, also when the test fails.

`TestLogicalSource` runs the `SourceContract`; the rest is what only logical
replication has: heap order, PostgreSQL's types, replica identity and TOAST,
what the slot is told, slots and publications.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
import os
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
import pytest
from sqlalchemy import make_url

from rowcast import Change, ConfigError
from rowcast.sources import open_source
from rowcast.sources.base import diagnose
from rowcast.sources.postgres import UNCHANGED, LogicalSource
from rowcast.testing import SourceContract
from rowcast.testing.backfill import BackfillContract
from tests.conftest import require_server, streaming, wait_for
from tests.sources.seed import SEED, SEED_BY_STATEMENT

pytestmark = pytest.mark.server

RUN = secrets.token_hex(3)
DATABASE = f"rc_pg_{RUN}"
_numbers = itertools.count(1)


def drop_slot(cur: Any, slot: str) -> None:
    """Terminate the slot's reader, if any, and drop the slot; retried while it lets go."""
    deadline = time.monotonic() + 20
    while True:
        cur.execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
            "WHERE slot_name = %s AND active_pid IS NOT NULL",
            (slot,),
        )
        try:
            cur.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = %s",
                (slot,),
            )
            return
        except psycopg2.errors.ObjectInUse:
            assert time.monotonic() < deadline, f"slot {slot} stayed in use"
            time.sleep(0.1)


@contextlib.contextmanager
def private_database(name: str) -> Iterator[str]:
    """postgresql://... of a database `name` made for the caller, dropped after with its slots."""
    server = make_url(require_server("postgresql"))
    admin_url = server.set(drivername="postgresql").render_as_string(hide_password=False)
    with contextlib.closing(psycopg2.connect(admin_url)) as admin:
        admin.autocommit = True
        admin.cursor().execute(f"CREATE DATABASE {name} TEMPLATE template0")
    try:
        yield server.set(drivername="postgresql", database=name).render_as_string(
            hide_password=False
        )
    finally:
        # a new connection: the server may have restarted since
        with contextlib.closing(psycopg2.connect(admin_url)) as admin:
            admin.autocommit = True
            cur = admin.cursor()
            cur.execute("SELECT slot_name FROM pg_replication_slots WHERE database = %s", (name,))
            for (slot,) in cur.fetchall():
                drop_slot(cur, slot)
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    """postgresql://... of the private database, made for this module and dropped after."""
    with private_database(DATABASE) as url:
        yield url


@pytest.fixture
def db(base: str) -> Iterator[Any]:
    conn = psycopg2.connect(base)
    conn.autocommit = True
    cur = conn.cursor()
    yield cur
    conn.close()


@pytest.fixture
def name(db: Any) -> Iterator[str]:
    """A fresh slot and publication name, both dropped after the test."""
    name = f"rc_pg_{RUN}_{next(_numbers)}"
    yield name
    drop_slot(db, name)
    db.execute(f"DROP PUBLICATION IF EXISTS {name}")


@pytest.fixture
def make(base: str, name: str) -> Any:
    """LogicalSource(...) on this test's slot and publication."""

    def make(**options: Any) -> LogicalSource:
        options.setdefault("heartbeat", 0.2)
        return LogicalSource(f"{base}?slot={name}&publication={name}", **options)

    return make


def lsn(db: Any) -> str:
    db.execute("SELECT pg_current_wal_lsn()")
    return str(db.fetchone()[0])


def confirmed(db: Any, slot: str) -> int:
    db.execute("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    high, low = str(db.fetchone()[0]).split("/")
    return (int(high, 16) << 32) | int(low, 16)


def as_int(position: str | None) -> int:
    assert position is not None
    high, low = position.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def events(transactions: list[list[Change]]) -> list[list[tuple[str, Any]]]:
    return [[(c.name, c.pk) for c in tx] for tx in transactions]


def table(db: Any, ddl: str, full: bool = True) -> None:
    """CREATE TABLE `ddl` (its name first), REPLICA IDENTITY FULL unless told."""
    name = ddl.split()[0]
    db.execute(f"DROP TABLE IF EXISTS {name}")
    db.execute(f"CREATE TABLE {ddl}")
    if full:
        db.execute(f"ALTER TABLE {name} REPLICA IDENTITY FULL")


class TestLogicalSource(SourceContract, BackfillContract):
    ordered_by_key = False  # the rows of one statement come in heap order

    @pytest.fixture
    def database(self, base: str, db: Any, make: Any, name: str) -> Iterator[None]:
        self.base, self.db, self.make, self.name = base, db, make, name
        table(db, "test (id SERIAL PRIMARY KEY, data TEXT)")
        make(tables=["test"]).setup()  # the slot: changes from now on are kept
        yield
        db.execute("DROP TABLE IF EXISTS rowcast_signal")  # a backfill's: the module's next
        # tests count the tables of their publications

    def make_source(self, **options: Any) -> LogicalSource:
        source: LogicalSource = self.make(tables=["test"], **options)
        return source

    def start_position(self) -> str:
        return lsn(self.db)

    def execute(self, statements: Sequence[str], *, transaction: bool = False) -> None:
        if transaction:
            self.db.execute("BEGIN; " + "; ".join(statements) + "; COMMIT")
        else:
            for statement in statements:
                self.db.execute(statement)

    def drop_connections(self) -> int:
        self.db.execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
            "WHERE slot_name = %s AND active_pid IS NOT NULL",
            (self.name,),
        )
        return len(self.db.fetchall())

    def table_rows(self) -> dict[Any, str]:
        self.db.execute("SELECT id, data FROM test")
        return dict(self.db.fetchall())

    def misconfigured_source(self) -> LogicalSource:
        nobody = make_url(self.base).set(username="rc_pg_nobody")
        return LogicalSource(nobody.render_as_string(hide_password=False))


# ----------------------------------------------------------------- the seed workload


def test_seed_workload_statement_by_statement_in_heap_order(db: Any, make: Any) -> None:
    table(db, "test (id SERIAL PRIMARY KEY, data VARCHAR(20))")
    make(tables=["test"]).setup()
    start = lsn(db)
    heap_orders = []
    for statement in SEED:
        db.execute("SELECT id FROM test WHERE id != 1 ORDER BY ctid")
        heap_orders.append([row[0] for row in db.fetchall()])
        db.execute(statement)
    transactions = list(make(tables=["public.test"], start=start, end="now"))
    got = events(transactions)
    assert [sorted(tx, key=lambda e: e[1]) for tx in got] == SEED_BY_STATEMENT
    # within one statement, the database's own row order (its heap order) is the log's
    assert [pk for _, pk in got[4]] == heap_orders[4]
    assert [pk for _, pk in got[5]] == heap_orders[5]
    for tx in transactions:
        assert len({(c.txid, c.position, c.ts) for c in tx}) == 1  # one transaction
        assert str(tx[0].txid).isdigit()
        assert (tx[0].source, tx[0].schema) == ("postgres", "public")
    positions = [as_int(tx[0].position) for tx in transactions]
    assert positions == sorted(positions)


def test_savepoints_rolled_back_are_not_published(db: Any, make: Any) -> None:
    table(db, "test (id SERIAL PRIMARY KEY, data VARCHAR(20))")
    make(tables=["test"]).setup()
    start = lsn(db)
    db.execute(
        "BEGIN; INSERT INTO test (data) VALUES ('kept'); SAVEPOINT sp; "
        "INSERT INTO test (data) VALUES ('dropped'); ROLLBACK TO SAVEPOINT sp; "
        "INSERT INTO test (data) VALUES ('after'); COMMIT"
    )
    (tx,) = list(make(tables=["test"], start=start, end="now"))
    assert [c.after["data"] for c in tx if c.after] == ["kept", "after"]


# ----------------------------------------------------------------- types and images


def test_every_type_maps_faithfully_and_survives_the_codec(db: Any, make: Any) -> None:
    db.execute("DROP TYPE IF EXISTS rc_mood CASCADE")
    db.execute("CREATE TYPE rc_mood AS ENUM ('sad', 'happy')")
    db.execute("DROP DOMAIN IF EXISTS rc_posint")
    db.execute("CREATE DOMAIN rc_posint AS int CHECK (VALUE > 0)")
    table(
        db,
        """rc_types (
            id BIGINT PRIMARY KEY, si SMALLINT, i INT, bi BIGINT, n NUMERIC(12, 4),
            nn NUMERIC, f4 REAL, f8 DOUBLE PRECISION, t TEXT, v VARCHAR(20), c CHAR(3),
            b BOOLEAN, by BYTEA, u UUID, d DATE, tm TIME, ttz TIMETZ, ts TIMESTAMP(6),
            tstz TIMESTAMPTZ, iv INTERVAL, j JSON, jb JSONB, ia INT[], ta TEXT[], m2 INT[][],
            e rc_mood, ea rc_mood[], dom rc_posint, ip INET, nul INT, inf DATE
        )""",
    )
    make(tables=["rc_types"]).setup()
    start = lsn(db)
    db.execute("SET TIME ZONE 'Europe/Paris'")  # the writer's zone must not matter
    db.execute(
        """INSERT INTO rc_types VALUES (
            9223372036854775807, -32768, -2147483648, -9223372036854775808, 12345678.9012,
            'NaN', 1.5, 2.25, 'long text ✓', 'héllo 😀', 'ab', true, '\\x00ff10',
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '23:59:59.999999',
            '12:00:00+02', '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.678+02',
            '3 days 04:05:06.5', '{"k": [1, 2.5, null], "s": "é"}', '{"b": true}',
            '{1, NULL, 3}', '{"a", "b c", NULL}', '{{1, 2}, {3, 4}}', 'happy',
            '{sad, happy}', 7, '192.168.0.1/24', NULL, 'infinity'
        )"""
    )
    (tx,) = list(make(tables=["rc_types"], start=start, end="now"))
    after = dict(tx[0].after or {})
    assert after.pop("nn").is_nan()  # NaN is not equal to itself: checked apart
    assert after == {
        "id": 9223372036854775807,
        "si": -32768,
        "i": -2147483648,
        "bi": -9223372036854775808,
        "n": Decimal("12345678.9012"),
        "f4": 1.5,
        "f8": 2.25,
        "t": "long text ✓",
        "v": "héllo 😀",
        "c": "ab ",
        "b": True,
        "by": b"\x00\xff\x10",
        "u": uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        "d": dt.date(2024, 2, 29),
        "tm": dt.time(23, 59, 59, 999999),
        "ttz": dt.time(12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        "ts": dt.datetime(2024, 1, 2, 3, 4, 5, 123456),
        "tstz": dt.datetime(2024, 1, 2, 1, 4, 5, 678000, tzinfo=dt.UTC),
        "iv": dt.timedelta(days=3, hours=4, minutes=5, seconds=6.5),
        "j": {"k": [1, 2.5, None], "s": "é"},
        "jb": {"b": True},
        "ia": [1, None, 3],
        "ta": ["a", "b c", None],
        "m2": [[1, 2], [3, 4]],
        "e": "happy",
        "ea": ["sad", "happy"],
        "dom": 7,
        "ip": "192.168.0.1/24",
        "nul": None,
        "inf": "infinity",  # no Python date holds it: the server's text
    }
    assert after["tstz"].tzinfo is dt.UTC
    again = dict(Change.from_json(tx[0].to_json()).after or {})
    assert again.pop("nn").is_nan()
    assert again == after


def big_text(db: Any) -> str:
    """About 100 kB that does not compress: stored out of line (TOASTed)."""
    db.execute("SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 3000)")
    return str(db.fetchone()[0])


def test_unchanged_toasted_values_are_marked_or_taken_from_before(db: Any, make: Any) -> None:
    table(db, "rc_toast_key (id INT PRIMARY KEY, n INT, big TEXT)", full=False)
    table(db, "rc_toast_full (id INT PRIMARY KEY, n INT, big TEXT)")
    make(tables=["rc_toast_key", "rc_toast_full"]).setup()
    big = big_text(db)
    db.execute("INSERT INTO rc_toast_key VALUES (1, 0, %s)", (big,))
    db.execute("INSERT INTO rc_toast_full VALUES (1, 0, %s)", (big,))
    start = lsn(db)
    db.execute("UPDATE rc_toast_key SET n = 1")
    db.execute("UPDATE rc_toast_full SET n = 1")
    key, full = (tx[0] for tx in make(tables=["rc_toast_*"], start=start, end="now"))
    # default identity: PostgreSQL did not log the value, and says so
    assert key.before is None
    assert key.after == {"id": 1, "n": 1, "big": UNCHANGED}
    assert key.after["big"] is UNCHANGED
    assert Change.from_json(key.to_json()) == key  # the marker survives the codec
    # REPLICA IDENTITY FULL: the old row has it, so the new one does too
    assert full.before == {"id": 1, "n": 0, "big": big}
    assert full.after == {"id": 1, "n": 1, "big": big}
    assert full.changed == ("n",)


def test_default_identity_gives_key_only_before_images_and_a_warning(
    db: Any, make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    table(db, "rc_plain (id INT PRIMARY KEY, v TEXT)", full=False)
    with caplog.at_level(logging.WARNING, "rowcast.sources.postgres"):
        make(tables=["rc_plain"]).setup()
    assert "replica identity public.rc_plain is default (primary key)" in caplog.text
    assert "ALTER TABLE public.rc_plain REPLICA IDENTITY FULL;" in caplog.text
    assert "?replica_identity=full" in caplog.text  # the URL option, as a user gives it
    start = lsn(db)
    db.execute("INSERT INTO rc_plain VALUES (1, 'a')")
    db.execute("UPDATE rc_plain SET v = 'b'")
    db.execute("UPDATE rc_plain SET id = 2")
    db.execute("DELETE FROM rc_plain")
    changes = [c for tx in make(tables=["rc_plain"], start=start, end="now") for c in tx]
    assert [(c.name, c.pk, c.before) for c in changes] == [
        ("rc_plain_write", 1, None),
        ("rc_plain_update", 1, None),
        ("rc_plain_update", 2, {"id": 1}),  # the key changed: the old key is sent
        ("rc_plain_delete", 2, {"id": 2}),
    ]


def test_replica_identity_full_option_sets_it(db: Any, make: Any) -> None:
    table(db, "rc_setfull (id INT PRIMARY KEY, v TEXT)", full=False)
    make(tables=["rc_setfull"], replica_identity="full").setup()
    db.execute("SELECT relreplident FROM pg_class WHERE relname = 'rc_setfull'")
    assert db.fetchone()[0] == "f"
    # it stays: the README says so where it lists what rowcast creates, and how to undo it
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    created = readme.split("# What each command creates")[1].split("\n# ")[0]
    assert "REPLICA IDENTITY FULL" in created
    assert "REPLICA IDENTITY DEFAULT" in created
    start = lsn(db)
    db.execute("INSERT INTO rc_setfull VALUES (1, 'a')")
    db.execute("UPDATE rc_setfull SET v = 'b'")
    (_, (update,)) = list(make(tables=["rc_setfull"], start=start, end="now"))
    assert update.before == {"id": 1, "v": "a"}
    assert update.pk == 1  # the primary key, though FULL flags every column


def test_composite_keys_and_tables_without_a_key(db: Any, make: Any) -> None:
    table(db, "rc_pair (a INT, b VARCHAR(5), v INT, PRIMARY KEY (a, b))")
    table(db, "rc_loose (x INT, y INT)")
    make(tables=["rc_pair", "rc_loose"]).setup()
    start = lsn(db)
    db.execute("INSERT INTO rc_pair VALUES (1, 'k', 10)")
    db.execute("INSERT INTO rc_loose VALUES (5, 6)")
    db.execute("UPDATE rc_loose SET y = 7")
    changes = [c for tx in make(tables=["rc_pair", "rc_loose"], start=start, end="now") for c in tx]
    assert [(c.name, c.pk) for c in changes] == [
        ("rc_pair_write", (1, "k")),
        ("rc_loose_write", None),
        ("rc_loose_update", None),
    ]
    assert changes[2].before == {"x": 5, "y": 6}
    assert changes[2].after == {"x": 5, "y": 7}


def test_alter_table_mid_stream(db: Any, make: Any) -> None:
    table(db, "rc_alter (id INT PRIMARY KEY, data TEXT)")
    make(tables=["rc_alter"]).setup()
    start = lsn(db)
    db.execute("INSERT INTO rc_alter VALUES (1, 'before')")
    db.execute("ALTER TABLE rc_alter ADD COLUMN extra INT DEFAULT 7")
    db.execute("INSERT INTO rc_alter VALUES (2, 'after', 8)")
    db.execute("ALTER TABLE rc_alter ALTER COLUMN extra TYPE NUMERIC(5, 1)")
    db.execute("ALTER TABLE rc_alter DROP COLUMN data")
    db.execute("UPDATE rc_alter SET extra = 9.5 WHERE id = 1")
    changes = [c for tx in make(tables=["rc_alter"], start=start, end="now") for c in tx]
    assert [c.after for c in changes] == [
        {"id": 1, "data": "before"},
        {"id": 2, "data": "after", "extra": 8},
        {"id": 1, "extra": Decimal("9.5")},
    ]
    assert changes[2].before == {"id": 1, "extra": Decimal("7.0")}


def test_truncate_is_logged_and_not_published(
    db: Any, make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    table(db, "rc_trunc (id INT PRIMARY KEY)")
    make(tables=["rc_trunc"]).setup()
    start = lsn(db)
    db.execute("INSERT INTO rc_trunc VALUES (1)")
    db.execute("TRUNCATE rc_trunc")
    db.execute("INSERT INTO rc_trunc VALUES (2)")
    with caplog.at_level(logging.WARNING, "rowcast.sources.postgres"):
        changes = [c for tx in make(tables=["rc_trunc"], start=start, end="now") for c in tx]
    assert [c.pk for c in changes] == [1, 2]
    assert "TRUNCATE public.rc_trunc: not a row change" in caplog.text


# ----------------------------------------------------------------- positions and delivery


def test_a_saved_position_resumes_right_after_its_transaction(
    db: Any, make: Any, name: str
) -> None:
    table(db, "test (id SERIAL PRIMARY KEY, data TEXT)")
    make(tables=["test"]).setup()
    start = lsn(db)
    for i in range(3):
        db.execute(f"INSERT INTO test (data) VALUES ('{i}')")
    # a reader is handed the first transaction and dies before it asks for the next one
    # (asking is what tells the server the first was taken)
    transactions = iter(make(tables=["test"], start=start, feedback=3600))
    one = next(transactions)
    db.execute("SELECT pg_terminate_backend(%s)", (active_pid(db, name),))
    wait_for(lambda: active_pid(db, name) is None)
    transactions.close()
    assert confirmed(db, name) < as_int(one[0].position)  # the slot would send it again
    again = list(make(tables=["test"], start=one[0].position, end="now"))
    assert events(again) == [[("test_write", 2)], [("test_write", 3)]]


def test_the_server_is_told_only_what_the_consumer_took(db: Any, make: Any, name: str) -> None:
    table(db, "test (id SERIAL PRIMARY KEY, data TEXT)")
    make(tables=["test"]).setup()
    before = confirmed(db, name)
    for i in range(3):
        db.execute(f"INSERT INTO test (data) VALUES ('{i}')")
    transactions = iter(make(tables=["test"], start="start", feedback=1))
    one = next(transactions)
    assert confirmed(db, name) == before  # handed out, not yet taken
    two = next(transactions)  # asking for the next one: the first was taken
    wait_for(lambda: confirmed(db, name) >= as_int(one[0].position))
    assert confirmed(db, name) < as_int(two[0].position)
    transactions.close()  # `two` was handed out, never taken
    assert confirmed(db, name) == as_int(one[0].position)
    # from the slot: `two` again, then the third, no loss
    rest = list(make(tables=["test"], start="start", end="now"))
    assert events(rest) == [[("test_write", 2)], [("test_write", 3)]]


def test_an_idle_or_filtered_slot_does_not_hold_wal(db: Any, make: Any, name: str) -> None:
    table(db, "rc_wanted (id INT PRIMARY KEY)")
    table(db, "rc_other (id INT PRIMARY KEY, pad TEXT)")
    make(tables=["rc_wanted"]).setup()
    with streaming(make(tables=["rc_wanted"], start=lsn(db), feedback=1)) as got:
        db.execute("INSERT INTO rc_wanted VALUES (1)")
        wait_for(lambda: len(got) == 1)
        db.execute(
            "INSERT INTO rc_other SELECT g, repeat('x', 100) FROM generate_series(1, 2000) g"
        )
        after_writes = as_int(lsn(db))
        # the slot moves on past WAL it has no use for, with nothing to deliver
        wait_for(lambda: confirmed(db, name) >= after_writes)
    assert [c.pk for c in got] == [1]


def active_pid(db: Any, slot: str) -> int | None:
    db.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    row = db.fetchone()
    return row[0] if row else None


# ----------------------------------------------------------------- slot and publication


def test_slot_and_publication_are_created_for_the_chosen_tables(
    db: Any, make: Any, name: str
) -> None:
    table(db, "rc_a (id INT PRIMARY KEY)")
    table(db, "rc_b (id INT PRIMARY KEY)")
    make(tables=["rc_a", "public.rc_b"]).setup()
    db.execute("SELECT plugin FROM pg_replication_slots WHERE slot_name = %s", (name,))
    assert db.fetchone() == ("pgoutput",)
    db.execute("SELECT tablename FROM pg_publication_tables WHERE pubname = %s ORDER BY 1", (name,))
    assert db.fetchall() == [("rc_a",), ("rc_b",)]
    make(tables=["rc_a"]).setup()  # idempotent


def test_a_table_missing_from_an_existing_publication_is_refused(
    db: Any, make: Any, name: str
) -> None:
    table(db, "rc_in (id INT PRIMARY KEY)")
    table(db, "rc_out (id INT PRIMARY KEY)")
    db.execute(f"CREATE PUBLICATION {name} FOR TABLE rc_in")
    with pytest.raises(ConfigError, match=f"ALTER PUBLICATION {name} ADD TABLE public.rc_out;"):
        make(tables=["rc_in", "rc_out"]).setup()


def test_a_second_reader_of_a_busy_slot_is_refused(db: Any, make: Any, name: str) -> None:
    table(db, "test (id SERIAL PRIMARY KEY)")
    with streaming(make(tables=["test"])):
        wait_for(lambda: active_pid(db, name) is not None)
        with pytest.raises(ConfigError, match="is in use by another reader"):
            list(make(tables=["test"], end="now"))


def test_a_slot_of_another_plugin_is_refused(db: Any, make: Any, name: str) -> None:
    db.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (name,))
    with pytest.raises(ConfigError, match=r"test_decoding: choose another \?slot= name"):
        make().setup()


def test_drop_removes_the_slot_and_the_publication(db: Any, make: Any, name: str) -> None:
    table(db, "test (id SERIAL PRIMARY KEY)")
    source = make(tables=["test"])
    source.setup()
    source.drop()
    db.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (name,))
    assert db.fetchone() == (0,)
    db.execute("SELECT count(*) FROM pg_publication WHERE pubname = %s", (name,))
    assert db.fetchone() == (0,)
    source.drop()  # nothing left: nothing to do


# ----------------------------------------------------------------- errors


@pytest.fixture
def no_replication_role(db: Any) -> Iterator[str]:
    role = f"rc_pg_{RUN}_noperm"
    db.execute(f"DROP ROLE IF EXISTS {role}")
    db.execute(f"CREATE ROLE {role} LOGIN")
    yield role
    db.execute(f"DROP ROLE IF EXISTS {role}")


def test_a_user_without_the_replication_privilege_is_told_the_grant(
    base: str, no_replication_role: str
) -> None:
    url = make_url(base).set(username=no_replication_role).render_as_string(hide_password=False)
    with pytest.raises(ConfigError) as caught:
        LogicalSource(url, tables=["test"]).setup()
    assert f"replication privilege is missing: ALTER ROLE {no_replication_role} REPLICATION;" in (
        str(caught.value)
    )


def test_wrong_user_and_unreachable_server(base: str) -> None:
    nobody = make_url(base).set(username="rc_pg_nobody").render_as_string(hide_password=False)
    with pytest.raises(ConfigError, match="access denied for user 'rc_pg_nobody'"):
        LogicalSource(nobody).setup()
    with pytest.raises(ConfigError, match="cannot reach the server"):
        LogicalSource("postgresql://postgres@127.0.0.1:1/test").setup()


def test_a_position_the_server_does_not_have_yet_is_refused(db: Any, make: Any) -> None:
    table(db, "test (id SERIAL PRIMARY KEY)")
    with pytest.raises(ConfigError, match="has no position FFFF/0 yet"):
        list(make(tables=["test"], start="FFFF/0"))


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("postgresql://127.0.0.1:99999/db", {}, "bad port"),
        ("postgresql://127.0.0.1", {}, "names no database"),
        ("postgresql://127.0.0.1/db?nosuch=1", {}, r"unknown option 'nosuch' \(in nosuch=1\)"),
        ("postgresql://127.0.0.1/db?slot=Bad-Name", {}, "a slot name is 1-63 characters"),
        ("postgresql://127.0.0.1/db", {"publication": "x y"}, "a publication name is"),
        ("postgresql://127.0.0.1/db", {"start": "nonsense"}, "bad PostgreSQL position"),
        ("postgresql://127.0.0.1/db", {"end": "start"}, r"'0/16B3748', or 'now'"),
        ("postgresql://127.0.0.1/db", {"tables": "test"}, "list of patterns"),
        ("postgresql://127.0.0.1/db?replica_identity=yes", {}, "replica_identity must be"),
    ],
)
def test_bad_urls_and_options(url: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_source(url, **options)


def test_open_source_reads_the_options_from_the_url() -> None:
    source = open_source(
        "postgres://u:secret@127.0.0.1/db?slot=s1&publication=p1&tables=a,public.b"
        "&start=0/16B3748&sslmode=disable"
    )
    assert isinstance(source, LogicalSource)
    assert (source.slot, source.publication) == ("s1", "p1")
    assert source.tables == ("a", "public.b")
    assert source.start == "0/16B3748"
    assert source.url.params["sslmode"] == "disable"
    assert "secret" not in source.url.masked
    assert LogicalSource("postgresql://127.0.0.1/db?start=start", start="now").start == "now"


# ----------------------------------------------------------------- doctor


def test_diagnose_names_every_setting_and_each_table(db: Any, base: str, name: str) -> None:
    table(db, "rc_doc_full (id INT PRIMARY KEY)")
    table(db, "rc_doc_key (id INT PRIMARY KEY)", full=False)
    url = f"{base}?slot={name}&publication={name}&tables=rc_doc_*"
    report = diagnose(url)
    checks = {c.name: c for c in report.checks}
    for setting in ("wal_level", "replication privilege", "max_replication_slots"):
        assert checks[setting].ok, checks[setting]
    assert checks["max_wal_senders"].ok
    assert checks[f"slot {name}"].value == "missing: rowcast creates it on its first read"
    assert checks[f"publication {name}"].value == (
        "missing: rowcast creates it FOR TABLE the 2 chosen tables"
    )
    assert checks["replica identity public.rc_doc_full"].ok
    key = checks["replica identity public.rc_doc_key"]
    assert key.ok  # a key is enough; FULL only adds the before images
    assert key.value == "default (primary key): before images hold the key only"
    assert dict(report.facts)["database"] == DATABASE
    LogicalSource(url).setup()
    checks = {c.name: c for c in diagnose(url).checks}
    assert checks[f"slot {name}"].value.startswith("pgoutput, confirmed up to ")
    assert checks[f"publication {name}"].value == (
        "FOR 2 tables, publishes insert, update, delete, truncate"
    )


# ----------------------------------------------------------------- last: a server restart


def _restart_postgres() -> None:
    version = sorted(os.listdir("/etc/postgresql"), key=lambda v: [int(p) for p in v.split(".")])
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version[-1], "main", "restart"],
        check=True,
        capture_output=True,
    )


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("pg_ctlcluster") or not os.path.isdir("/etc/postgresql"),
    reason="restarting PostgreSQL needs root and a local pg_ctlcluster cluster",
)
def test_a_server_restart_mid_stream_loses_and_repeats_nothing(base: str) -> None:
    # no `db`/`name` fixtures: their connections die with the server
    name = f"rc_pg_{RUN}_restart"
    url = f"{base}?slot={name}&publication={name}"
    conn = psycopg2.connect(base)
    conn.autocommit = True
    db = conn.cursor()
    table(db, "restarted (id SERIAL PRIMARY KEY, data TEXT)")
    LogicalSource(url, tables=["restarted"]).setup()
    try:
        _stream_across_a_restart(base, url, db, conn)
    finally:
        conn = psycopg2.connect(base)
        conn.autocommit = True
        drop_slot(conn.cursor(), name)
        conn.cursor().execute(f"DROP PUBLICATION IF EXISTS {name}")
        conn.close()


def _stream_across_a_restart(base: str, url: str, db: Any, conn: Any) -> None:
    source = LogicalSource(url, tables=["restarted"], start=lsn(db), heartbeat=0.2)
    with streaming(source) as got:
        db.execute(
            "BEGIN; "
            + "; ".join(f"INSERT INTO restarted (data) VALUES ('a{i}')" for i in range(20))
            + "; COMMIT"
        )
        wait_for(lambda: len(got) == 20)  # streaming, then the server goes away
        conn.close()
        _restart_postgres()
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = psycopg2.connect(base)
                break
            except psycopg2.OperationalError:
                assert time.monotonic() < deadline, "PostgreSQL did not come back"
                time.sleep(0.2)
        conn.autocommit = True
        db = conn.cursor()
        db.execute("INSERT INTO restarted (data) SELECT 'b' || g FROM generate_series(0, 19) g")
        wait_for(lambda: len(got) >= 40)
        time.sleep(0.5)  # a duplicate would arrive now
    conn.close()
    assert [c.after["data"] for c in got if c.after] == [f"a{i}" for i in range(20)] + [
        f"b{i}" for i in range(20)
    ]

"""The PostgreSQL and SQLite sources plug into the audit sink, the cache and ``rowcast relay``.

Each test runs on both sources, for real: raw SQL from a connection of its own
on a SQLite file (trigger capture) and on the real PostgreSQL (logical
replication, in a private database ``rc_down_<run>`` whose slots and the
database itself are dropped at the end, also when a test fails: a leftover
slot holds WAL forever).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import secrets
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.orm import Session

from rowcast import Change, Hub
from rowcast.audit import AuditSink, history
from rowcast.cache import MemoryCache
from rowcast.checkpoint import open_checkpoint
from rowcast.sources.postgres import LogicalSource
from rowcast.sources.sqlite import TriggerSource
from rowcast.testing.cache import User, wait_for
from tests.audit.models import make_models
from tests.audit.test_session import STEVE
from tests.conftest import sqlite_engine
from tests.sources.test_postgres import as_int, drop_slot, private_database
from tests.test_cli_relay import ROWCAST
from tests.test_relay import expected, stored
from tests.test_relay import wait_for as relay_wait_for

RUN = secrets.token_hex(3)
DATABASE = f"rc_down_{RUN}"
_numbers = itertools.count(1)


# ---------------------------------------------------------------- the two databases


class Database:
    """One database a source reads: its URLs, raw SQL on a connection of its own, and
    `source(...)` / `prepare(...)` / `end()` of the source reading it."""

    kind: str
    schema: str  # the schema a source names in its changes
    url: str  # the source URL
    engine: Engine  # SQLAlchemy, for the ORM and the audit sink

    def execute(self, *statements: str) -> None:
        raise NotImplementedError

    def source(self, **options: Any) -> Any:
        raise NotImplementedError

    def prepare(self, tables: list[str]) -> str:
        """Make the source ready to capture `tables` now; the position to read from."""
        raise NotImplementedError

    def truth(self) -> list[list[Change]]:
        """Every transaction the source captured since `prepare`, read apart from the test."""
        raise NotImplementedError

    def end(self) -> str:
        """The position of the last transaction committed so far."""
        position = self.truth()[-1][-1].position
        assert position is not None
        return position

    def close(self) -> None:
        self.engine.dispose()


class SQLiteDatabase(Database):
    kind, schema = "sqlite", "main"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self.engine = sqlite_engine(path)
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute("PRAGMA journal_mode = WAL")

    def execute(self, *statements: str) -> None:
        with contextlib.closing(sqlite3.connect(self.path, isolation_level=None)) as conn:
            for statement in statements:
                conn.execute(statement)

    def source(self, **options: Any) -> TriggerSource:
        return TriggerSource(self.url, **options)

    def prepare(self, tables: list[str]) -> str:
        self.source(tables=tables).install()
        return "start"  # the triggers have recorded nothing yet

    def truth(self) -> list[list[Change]]:
        return list(self.source(start="start", end="now"))


class PostgresDatabase(Database):
    kind, schema = "postgresql", "public"

    def __init__(self, base: str) -> None:
        self.base = base
        self.name = f"rc_down_{RUN}_{next(_numbers)}"  # this test's slot and publication
        self.url = f"{base}?slot={self.name}&publication={self.name}"
        self.engine = create_engine(make_url(base).set(drivername="postgresql+psycopg"))
        self.conn = psycopg2.connect(base)
        self.conn.autocommit = True
        self.seen: list[list[Change]] = []  # what the second slot read so far

    def execute(self, *statements: str) -> None:
        self.conn.cursor().execute("; ".join(statements))  # one statement: one transaction

    def source(self, **options: Any) -> LogicalSource:
        options.setdefault("heartbeat", 0.2)
        options.setdefault("replica_identity", "full")
        return LogicalSource(self.url, **options)

    def prepare(self, tables: list[str]) -> str:
        self.source(tables=tables).setup()
        self.second().setup()  # beside the first: it reads the same changes, for `truth`
        return self.lsn()

    def second(self) -> LogicalSource:
        url = f"{self.base}?slot={self.name}_t&publication={self.name}"
        return LogicalSource(url, start="start", end="now", heartbeat=0.2)

    def lsn(self) -> str:
        cur = self.conn.cursor()
        cur.execute("SELECT pg_current_wal_lsn()")
        return str(cur.fetchone()[0])

    def truth(self) -> list[list[Change]]:
        self.seen += self.second()  # a slot moves on as it is read: keep what it gave
        return self.seen

    def close(self) -> None:
        cur = self.conn.cursor()
        for slot in (self.name, f"{self.name}_t"):
            drop_slot(cur, slot)
        cur.execute(f"DROP PUBLICATION IF EXISTS {self.name}")
        self.conn.close()
        super().close()


@pytest.fixture(scope="module")
def pg_base() -> Iterator[str]:
    """postgresql://... of the private database, made for this module and dropped after."""
    with private_database(DATABASE) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.server)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    database: Database
    if request.param == "sqlite":
        database = SQLiteDatabase(tmp_path / "app.db")
    else:
        database = PostgresDatabase(request.getfixturevalue("pg_base"))
    try:
        yield database
    finally:
        database.close()


def table(db: Database, name: str, columns: str) -> None:
    db.execute(f"CREATE TABLE {name} ({columns})")
    if db.kind == "postgresql":
        db.execute(f"ALTER TABLE {name} REPLICA IDENTITY FULL")


# ---------------------------------------------------------------- (a) the audit sink


def test_raw_sql_is_audited_from_the_source_and_orm_writes_once(db: Database) -> None:
    schema = "rowcast_audit" if db.kind == "postgresql" else None
    if schema is not None:
        db.execute(f"CREATE SCHEMA {schema}")
    models = make_models(schema)
    models.Base.metadata.create_all(db.engine)
    Reservation = models.Reservation
    reservations = f"{schema}.reservations" if schema else "reservations"
    # the revision tables too: the ORM's own revisions vouch for its changes
    start = db.prepare([f"{schema}.*" if schema else "*"])
    db.execute(  # a console, another service: no ORM
        f"INSERT INTO {reservations} (name, date, time, party) "
        "VALUES ('Phil', '2015-05-01', '18:30:00', 3)"
    )
    db.execute(f"UPDATE {reservations} SET party = 2 WHERE id = 1")
    db.execute(f"UPDATE {reservations} SET id = 3 WHERE id = 1")  # a changed key
    with Session(db.engine) as session:  # the ORM audits in-transaction; the source sees both
        session.add(Reservation(id=2, **STEVE, party=6))
        session.commit()
        steve = session.get(Reservation, 2)
        assert steve is not None
        steve.party = 4
        session.execute(text(f"DELETE FROM {reservations} WHERE id = 3"))  # raw, same tx
        session.commit()
    hub = Hub()
    sink = AuditSink(db.engine).connect(hub)
    transactions = list(db.source(start=start, end="now"))
    for transaction in transactions:
        hub.publish(transaction)
    assert hub.errors == 0
    assert sink.written == 5  # Phil: write, update, the move (old key gone, new row), delete
    assert sink.skipped == 2  # Steve's write and update, audited by the ORM
    with Session(db.engine) as session:
        phil = history(session, Reservation, 1)
        assert [(r.rev_isdelete, r.name, r.date, r.time, r.party) for r in phil] == [
            (False, "Phil", dt.date(2015, 5, 1), dt.time(18, 30), 3),
            (False, "Phil", dt.date(2015, 5, 1), dt.time(18, 30), 2),
            (True, None, None, None, None),
        ]
        assert all(r.rev_txid for r in phil)
        moved = history(session, Reservation, 3)
        assert [(r.rev_isdelete, r.name, r.party) for r in moved] == [
            (False, "Phil", 2),
            (True, None, None),
        ]
        assert [r.party for r in history(session, Reservation, 2)] == [6, 4]
    # a second pass (a relay retrying) writes nothing (the same transactions: a slot
    # confirmed past `start` refuses to read from it again)
    again = AuditSink(db.engine)
    for transaction in transactions:
        again.write(transaction)
    assert again.written == 0


# ---------------------------------------------------------------- (b) the cache


def test_a_cache_following_the_source_drops_stale_entries(db: Database) -> None:
    table(db, "down_users", "id INT PRIMARY KEY, tenant TEXT, email TEXT, name TEXT")
    db.execute("INSERT INTO down_users VALUES (1, 'acme', 'ada@acme.test', 'Ada')")
    start = db.prepare(["down_users"])
    hub = Hub()
    cache = MemoryCache()
    cache.follow(hub, {f"{db.schema}.down_users": User})
    source = db.source(start=start)
    thread = threading.Thread(target=source.run, args=(hub,))
    thread.start()
    try:
        cache.put(User(1, "acme", "ada@acme.test", name="Ada"))
        db.execute("UPDATE down_users SET name = 'Ada L.' WHERE id = 1")
        wait_for(lambda: cache.get(User, {"id": 1}) is None)
        assert cache.get(User, {"tenant": "acme", "email": "ada@acme.test"}) is None

        cache.put(User(1, "acme", "ada@acme.test", name="Ada L."))
        db.execute("UPDATE down_users SET email = 'ada@new.test' WHERE id = 1")  # a key column
        wait_for(lambda: cache.get(User, {"tenant": "acme", "email": "ada@acme.test"}) is None)
        assert cache.get(User, {"id": 1}) is None

        cache.put(User(1, "acme", "ada@new.test", name="Ada L."))
        db.execute("UPDATE down_users SET id = 7 WHERE id = 1")  # the primary key
        wait_for(lambda: cache.get(User, {"id": 1}) is None)
        assert cache.get(User, {"tenant": "acme", "email": "ada@new.test"}) is None
        assert hub.errors == 0
    finally:
        source.stop()
        thread.join(15)
        cache.close()
    assert not thread.is_alive()


# ---------------------------------------------------------------- (c) rowcast relay


def test_relay_delivers_to_the_event_store_and_resumes_without_duplicates(
    db: Database, tmp_path: Path
) -> None:
    table(db, "down_items", "id INT PRIMARY KEY, n INT")
    start = db.prepare(["down_items"])
    store, checkpoint, log = tmp_path / "events.db", tmp_path / "pos", tmp_path / "relay.log"
    command = [
        ROWCAST,
        "relay",
        db.url,
        "--to",
        f"sqlite:///{store}",
        "--checkpoint",
        str(checkpoint),
        "--tables",
        "down_items",
        "--from",
        start,
        "--log-format",
        "json",
    ]

    def saved() -> str | None:
        with open_checkpoint(str(checkpoint)) as kept:
            return kept.load()

    def reached(position: str | None, end: str) -> bool:
        if db.kind != "postgresql" or position is None:
            return position == end
        # an idle PostgreSQL relay moves its checkpoint on with its slot, past `end`
        return as_int(position) >= as_int(end)

    def relay_until(end: str) -> None:
        with log.open("ab") as err:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
        try:

            def caught_up() -> bool:
                assert process.poll() is None, log.read_text()[-3000:]
                return reached(saved(), end)

            relay_wait_for(caught_up, 30, "the relay to checkpoint")
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0, log.read_text()[-3000:]
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

    db.execute("BEGIN", *(f"INSERT INTO down_items VALUES ({i}, 0)" for i in range(3)), "COMMIT")
    db.execute("INSERT INTO down_items VALUES (3, 0)")
    middle = db.end()
    relay_until(middle)
    # while no relay runs: more changes, which the next run must pick up from the checkpoint
    db.execute("UPDATE down_items SET n = n + 1 WHERE id < 2")
    db.execute(
        "BEGIN",
        "DELETE FROM down_items WHERE id = 0",
        "UPDATE down_items SET n = 9 WHERE id = 3",
        "COMMIT",
    )
    end = db.end()
    relay_until(end)

    records = [json.loads(line) for line in log.read_text().splitlines()]
    starts = [r["position"] for r in records if r.get("event") == "start"]
    assert starts[0] is None
    assert reached(starts[1], middle)
    got = stored(store)
    ids = [event_id for events in got.values() for event_id, _ in events]
    assert len(ids) == len(set(ids)) == 4 + 4  # every change once
    rows = {
        stream: [(c.action.value, c.pk, c.before, c.after) for _, c in events]
        for stream, events in got.items()
    }
    truth = db.truth()
    assert rows == {
        stream: [(c.action.value, c.pk, c.before, c.after) for _, c in events]
        for stream, events in expected(truth).items()
    }
    if db.kind == "postgresql":  # transactions are the server's: the ids match too
        assert got == expected(truth)

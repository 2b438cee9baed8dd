"""A replica repaired by a backfill: rows it lost come back, stale values are overwritten.

The source is a SQLite database captured by triggers (no server); the replica is a
SQLite file, and PostgreSQL and MariaDB (marked ``server``) in a schema of their own.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from rowcast.checkpoint import open_checkpoint
from rowcast.sinks import open_sink
from rowcast.sources.sqlite import TriggerSource
from tests.conftest import private_schema, require_server

ROWS = 400


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.server),
        pytest.param("mysql", marks=pytest.mark.server),
    ]
)
def replica(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """The sink's URL, the replica's SQLAlchemy URL and the qualified name of its table."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'replica.db'}"
        yield f"{url}?mode=replicate", url, "t"
    elif request.param == "postgresql":
        server = require_server("postgresql")
        with private_schema("rc_bf") as schema:
            yield f"{server}?mode=replicate&schema={schema}", server, f"{schema}.t"
    else:
        server = require_server("mysql")
        database = f"rc_bf_{uuid.uuid4().hex[:8]}"
        engine = sa.create_engine(server)
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {database}")
        try:
            yield f"{server}?mode=replicate&schema={database}", server, f"{database}.t"
        finally:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {database}")
            engine.dispose()


def count(engine: sa.Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar_one())


def test_a_backfill_repairs_a_replica_that_lost_rows_and_holds_stale_values(
    replica: tuple[str, str, str], tmp_path: Path
) -> None:
    sink_url, url, table = replica
    path = tmp_path / "source.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=wal")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data TEXT, qty INTEGER)")
    checkpoint = open_checkpoint(str(tmp_path / "source.pos"))
    source = TriggerSource(f"sqlite:///{path}", tables=["t"], checkpoint=checkpoint)
    sink = open_sink(sink_url)
    delivered = threading.Event()

    def relay() -> None:
        for transaction in source:
            sink.deliver([transaction])
            checkpoint.save(transaction[-1].position)
            delivered.set()

    thread = threading.Thread(target=relay)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'trigger'").fetchone():
            assert time.monotonic() < deadline, "the source did not install its triggers"
            time.sleep(0.05)
        db.executemany(
            "INSERT INTO t VALUES (?, ?, ?)", [(i, f"r{i}", i) for i in range(1, ROWS + 1)]
        )
        assert delivered.wait(30)
        engine = sa.create_engine(url)
        deadline = time.monotonic() + 30
        # the stream reached the replica; a connection a read, as one transaction on
        # MariaDB (REPEATABLE READ) would keep the snapshot of its first read
        while count(engine, table) != ROWS:
            assert time.monotonic() < deadline, "the stream did not reach the replica"
            time.sleep(0.05)
        with engine.begin() as conn:  # the replica goes wrong: rows lost, values stale
            conn.exec_driver_sql(f"DELETE FROM {table} WHERE MOD(id, 7) = 0")
            conn.exec_driver_sql(f"UPDATE {table} SET data = 'old', qty = -1 WHERE MOD(id, 5) = 0")
            conn.exec_driver_sql(f"UPDATE {table} SET qty = NULL WHERE MOD(id, 11) = 0")
        request = TriggerSource(f"sqlite:///{path}").backfill(["t"], chunk=50)
        pick = random.Random(20)
        for n in range(200):  # the app keeps writing while the backfill runs
            key = pick.randint(1, ROWS)
            if pick.random() < 0.8:
                db.execute("UPDATE t SET data = ?, qty = ? WHERE id = ?", (f"w{n}", n, key))
            else:
                db.execute("DELETE FROM t WHERE id = ?", (key,))
        deadline = time.monotonic() + 60
        while not next(
            s for s in TriggerSource(f"sqlite:///{path}").backfills() if s.id == request
        ).done:
            assert time.monotonic() < deadline, "the backfill did not finish"
            time.sleep(0.1)
        truth = {row[0]: tuple(row) for row in db.execute("SELECT id, data, qty FROM t")}
        deadline = time.monotonic() + 30
        while True:  # the tail of the stream reaches the replica
            with engine.connect() as conn:
                rows = conn.exec_driver_sql(f"SELECT id, data, qty FROM {table}").all()
            held: dict[Any, tuple[Any, ...]] = {row[0]: tuple(row) for row in rows}
            # a row the source deleted before it was lost at the replica stays lost; every
            # row the source holds is there, with its values
            if {k: held.get(k) for k in truth} == truth or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert {k: held.get(k) for k in truth} == truth
        assert set(held) == set(truth)  # deleted rows: the stream deleted them
        engine.dispose()
    finally:
        source.stop()
        thread.join(30)
        sink.close()
        db.close()

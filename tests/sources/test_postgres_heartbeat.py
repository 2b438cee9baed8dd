"""A PostgreSQL slot whose tables are idle keeps up while the rest of the database writes.

The relay captures one table that nobody writes; another table of the same database
takes 200 MB of writes (server-side INSERT ... SELECT, 2 MB a statement). The slot
must be confirmed along the way (the server's keepalives say where its WAL ends, and
with nothing pending that is where the reader is), so the WAL it holds stays bounded
instead of growing with every write; ``rowcast status`` shows the slot's retained WAL.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from click.testing import CliRunner

from rowcast.checkpoint import open_checkpoint
from rowcast.cli import main
from rowcast.relay import Relay
from rowcast.sinks import open_sink
from rowcast.sources.postgres import LogicalSource
from rowcast.status import gather
from tests.conftest import wait_for
from tests.sources.test_postgres import as_int, private_database

pytestmark = pytest.mark.server

MB = 1024 * 1024


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with private_database(f"rc_hb_{secrets.token_hex(3)}") as url:
        yield url


@pytest.fixture
def db(base: str) -> Iterator[Any]:
    conn = psycopg2.connect(base)
    conn.autocommit = True
    yield conn.cursor()
    conn.close()


def head(db: Any) -> int:
    db.execute("SELECT pg_current_wal_lsn()")
    return as_int(str(db.fetchone()[0]))


def slot_lsns(db: Any, slot: str) -> tuple[int, int] | None:
    """(restart_lsn, confirmed_flush_lsn) of `slot`, None while it does not exist."""
    db.execute(
        "SELECT restart_lsn, confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    )
    row = db.fetchone()
    return None if row is None else (as_int(str(row[0])), as_int(str(row[1])))


def active(db: Any, slot: str) -> bool:
    db.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    row = db.fetchone()
    return bool(row and row[0])


@contextlib.contextmanager
def relaying(relay: Relay) -> Iterator[None]:
    thread = threading.Thread(target=relay.run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        relay.stop()
        thread.join(30)
    assert not thread.is_alive()


def test_an_idle_tables_slot_keeps_up_while_another_table_takes_200_mb(
    base: str, db: Any, tmp_path: Path
) -> None:
    db.execute("CREATE TABLE rc_idle (id INT PRIMARY KEY)")
    db.execute("CREATE TABLE rc_busy (id BIGSERIAL PRIMARY KEY, pad TEXT)")
    checkpoint = open_checkpoint(str(tmp_path / "pos"))
    slot = f"rc_hb_{secrets.token_hex(4)}"  # not rowcast_*: others' tests clean those up
    source = LogicalSource(
        f"{base}?slot={slot}", tables=["rc_idle"], checkpoint=checkpoint, heartbeat=0.2
    )
    sink = open_sink("memory://")
    relay = Relay(source, [sink], checkpoint, report_interval=0.5)
    with relaying(relay):
        wait_for(lambda: active(db, source.slot), 60)
        start = head(db)
        behind: list[int] = []
        while head(db) - start < 200 * MB:
            db.execute(
                "INSERT INTO rc_busy (pad) SELECT repeat('x', 1000) FROM generate_series(1, 2000)"
            )
            lsns = slot_lsns(db, source.slot)
            assert lsns is not None
            behind.append(head(db) - lsns[1])
            time.sleep(0.02)
        written = head(db) - start
        # confirmed along the way: what it holds does not grow with what is written
        late = behind[len(behind) // 2 :]
        assert max(late) < written / 3, (max(late) / MB, written / MB)
        # and the WAL the server keeps for it (from restart_lsn, which the server moves
        # at its next snapshot of running transactions) comes back down
        end = head(db)
        wait_for(lambda: (slot_lsns(db, source.slot) or (0, 0))[0] >= start + written // 2, 60)
        assert relay.stats.changes == 0
        assert end > start
        # rowcast status: the slot, what it retains, and an idle relay's lag of 0
        wait_for(lambda: gather([str(tmp_path / "pos")])[0]["lag_seconds"] == 0.0, 30)
        (found,) = gather([str(tmp_path / "pos")])
        assert found["state"] == "running"
        assert found["slot"] == source.slot
        assert found["log"]["retained_bytes"] < written
        assert found["log"]["wal_status"] in ("reserved", "extended")
        shown = CliRunner().invoke(main, ["status", str(tmp_path / "pos")])
        assert shown.exit_code == 0, shown.output
        assert "slot retains" in shown.output
    checkpoint.close()
    db.execute("DROP TABLE rc_busy, rc_idle")

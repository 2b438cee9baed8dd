"""Backfills of a MySQL / MariaDB source while it streams (the real server of this machine).

The `BackfillContract` runs in ``tests/sources/test_mysql.py`` (`TestBinlogSource`).
Here: composite keys of common types (a case-insensitive collation among them)
with ``where=``, rows deleted and changed while the backfill reads; requests
that cannot run (a URL without a database, a keyless table, a pattern that
matches nothing, a bad ``where``); and a real ``rowcast relay`` process
SIGKILLed in the middle of a backfill while a writer races it, restarted: the
event store it fills ends equal to the table, and no row went back in time.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from rowcast import ConfigError
from rowcast.checkpoint import open_checkpoint
from rowcast.sources.mysql import BinlogSource
from rowcast.sources.mysql.positions import order
from rowcast.sources.signal import NAME
from rowcast.testing.backfill import latest, replay_backfill, running
from tests.conftest import require_server, wait_for
from tests.relaying import checkpointed, relay, stored
from tests.test_cli_snapshot import ROWS, RUN, Writer, mysql_kill
from tests.test_relay import server_id

pytestmark = pytest.mark.server


def position(cur: Any) -> str:
    cur.execute("SHOW MASTER STATUS")
    row = cur.fetchone()
    return f"{row[0]}:{row[1]}"


@pytest.fixture
def database() -> Iterator[tuple[str, Any]]:
    """A database of its own: its URL and an autocommit cursor on it."""
    require_server("mysql")
    name = f"rc_bf_{RUN}_{random.randrange(10**6)}"
    admin = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    admin.cursor().execute(f"CREATE DATABASE {name}")
    conn = pymysql.connect(host="127.0.0.1", user="root", database=name, autocommit=True)
    try:
        yield f"mysql://root@127.0.0.1:3306/{name}", conn.cursor()
    finally:
        conn.close()
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


KEYED = (
    "CREATE TABLE k (i INT, s VARCHAR(20) COLLATE utf8mb4_general_ci, d DATETIME(6), "
    "b VARBINARY(8), data VARCHAR(40), PRIMARY KEY (i, s, d, b)) ENGINE=InnoDB"
)


def keyed_rows(count: int) -> list[tuple[Any, ...]]:
    """Rows of ``k`` whose keys differ in every column, text keys in mixed case (the
    collation orders 'a' < 'B', the bytes would not)."""
    base = dt.datetime(2024, 5, 1, 12, 0, 0)
    rows = []
    for n in range(count):
        s = ["a", "B", "c", "D", "é"][n % 5] + str(n % 7)
        d = base + dt.timedelta(seconds=n % 11, microseconds=n)
        rows.append((n % 13, s, d, bytes([n % 256, n // 256]), f"s{n}"))
    return rows


def table(cur: Any) -> dict[Any, str]:
    cur.execute("SELECT i, s, d, b, data FROM k")
    return {(i, s, d, b): data for i, s, d, b, data in cur.fetchall()}


def test_composite_keys_of_common_types_with_where_and_rows_deleted_meanwhile(
    database: tuple[str, Any], tmp_path: Path
) -> None:
    url, cur = database
    cur.execute(KEYED)
    cur.executemany("INSERT INTO k VALUES (%s, %s, %s, %s, %s)", keyed_rows(1500))
    initial, start = table(cur), position(cur)
    checkpoint = open_checkpoint(str(tmp_path / "pos"))
    source = BinlogSource(
        url, tables=["k"], start=start, checkpoint=checkpoint, server_id=server_id(), heartbeat=0.2
    )
    keys = sorted(initial, key=repr)
    rng = random.Random(3)
    with running(source) as got:
        request = BinlogSource(url).backfill(["k"], where="i % 3 <> 0 AND data LIKE 's%'", chunk=5)
        writes = 0
        while writes % 20 or not any(
            s.done for s in BinlogSource(url).backfills() if s.id == request
        ):
            key = keys[rng.randrange(len(keys))]
            if rng.random() < 0.5:
                cur.execute("DELETE FROM k WHERE i = %s AND s = %s AND d = %s AND b = %s", key)
            else:
                cur.execute(
                    "UPDATE k SET data = %s WHERE i = %s AND s = %s AND d = %s AND b = %s",
                    (f"w{writes}", *key),
                )
            writes += 1
            time.sleep(0.002)
            assert writes < 20000, "the backfill does not end"
        cur.execute("INSERT INTO k VALUES (99, 'marker', '2024-01-01', x'00', 'marker')")
        wait_for(lambda: any(c.after and c.after["data"] == "marker" for c in got[-20:]))
    backfilled = [c for c in got if c.snapshot]
    assert backfilled
    assert writes > 50
    assert all(c.pk[0] % 3 != 0 and c.after and c.after["data"].startswith("s") for c in backfilled)
    # the rows as the stream decodes them: the same pk, the same types
    streamed = {c.pk: c for c in got if not c.snapshot}
    both = [c for c in backfilled if c.pk in streamed]
    for change in both or backfilled[:1]:
        types = (int, str, dt.datetime, bytes)
        assert all(isinstance(v, t) for v, t in zip(change.pk, types, strict=True))
        assert set(change.after or {}) == {"i", "s", "d", "b", "data"}
    rows = table(cur)
    assert replay_backfill(initial, got) == rows
    expected = {k for k in initial if k[0] % 3 != 0}
    # every row matching, not deleted or changed by the stream meanwhile, was read
    assert {c.pk for c in backfilled} | set(streamed) >= expected
    assert {c.pk for c in backfilled} <= expected
    assert not any(c.table == NAME for c in got)


def test_requests_that_cannot_run_say_why(database: tuple[str, Any]) -> None:
    url, cur = database
    cur.execute("CREATE TABLE orders (id INT PRIMARY KEY, total INT)")
    cur.execute("CREATE TABLE nokey (v INT)")
    with pytest.raises(ConfigError, match=r"names no database.*name one in the URL"):
        BinlogSource("mysql://root@127.0.0.1:3306").backfill(["orders"])
    with pytest.raises(ConfigError, match=r"nokey has no primary key.*ADD PRIMARY KEY"):
        BinlogSource(url).backfill(["nokey"])
    with pytest.raises(ConfigError, match=r"'ordres' match no table.*are nokey, orders"):
        BinlogSource(url).backfill(["ordres"])
    with pytest.raises(ConfigError, match=r"--where 'no_such = 1' fails on .*orders"):
        BinlogSource(url).backfill(["orders"], where="no_such = 1")
    # a reader limited by its patterns reads only what it captures, and refuses nothing
    reads = BinlogSource(url, tables=["orders"])._backfill_reads()
    assert reads is not None
    try:
        assert reads.tables(["orders", "nokey"]) == [(url.rsplit("/", 1)[1], "orders")]
        assert reads.tables(["nokey"]) == []
    finally:
        reads.close()
    with pytest.raises(ConfigError, match="has no database rc_no_such_db"):
        BinlogSource("mysql://root@127.0.0.1:3306/rc_no_such_db").backfills()
    assert BinlogSource(url).backfills() == []  # nothing recorded
    request = BinlogSource(url).backfill(["orders"])
    cur.execute(f"SELECT kind FROM {NAME} WHERE id = %s", (request,))
    assert cur.fetchone() == ("backfill",)
    with pytest.raises(ConfigError, match="there is no backfill 999"):
        BinlogSource(url).cancel_backfill(999)


# ---------------------------------------------------------------- a relay killed mid-backfill


def test_a_relay_on_a_url_without_a_database_says_it_takes_no_backfill(
    database: tuple[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # it read on silently, and rowcast backfill mysql://.../db --wait waited for it
    url, cur = database
    db = url.rsplit("/", 1)[1]
    cur.execute("CREATE TABLE orders (id INT PRIMARY KEY)")
    source = BinlogSource(
        "mysql://root@127.0.0.1:3306",
        tables=[f"{db}.*"],
        checkpoint=open_checkpoint(str(tmp_path / "pos")),
        start=position(cur),
        end=position(cur),
        server_id=server_id(),
    )
    with caplog.at_level("WARNING", "rowcast.sources.mysql"):
        list(source)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "names no database: this relay takes no backfill" in said
    assert "name one in the URL to take them" in said


def start(url: str, tmp_path: Path) -> subprocess.Popen[str]:
    return relay(url, tmp_path, "--tables", "rc_kill")


def progress(url: str, request: int) -> tuple[int, bool]:
    """(rows, done) of the relay's progress on `request`."""
    status = next(s for s in BinlogSource(url).backfills() if s.id == request)
    return sum(r.rows for r in status.readers), status.done


def checkpointed_chunks(cur: Any, tmp_path: Path) -> bool:
    """Whether the relay's checkpoint is past a chunk of the backfill."""
    saved = checkpointed(tmp_path)
    cur.execute(f"SELECT position, data FROM {NAME} WHERE kind = 'progress'")
    done = [order(p) for p, data in cur.fetchall() if json.loads(data).get("rows")]
    return bool(saved and done and order(saved) >= min(done))


def test_a_relay_killed_mid_backfill_resumes_and_sends_no_row_back_in_time(
    tmp_path: Path,
) -> None:
    with mysql_kill() as db:
        url, cur = db.url, db.cur
        cur.execute("SELECT id, data FROM rc_kill")
        initial = dict(cur.fetchall())
        process = start(url, tmp_path)
        writer = Writer(db.connect)
        try:
            wait_for(lambda: process.poll() is not None or checkpointed(tmp_path), seconds=30)
            writer.start()
            request = BinlogSource(url).backfill(["rc_kill"], chunk=50)
            # killed once its checkpoint holds some of the backfill (the relay saves it
            # every second, delivering ahead of it)
            wait_for(lambda: process.poll() is not None or checkpointed_chunks(cur, tmp_path), 60)
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=30)
            read, done = progress(url, request)
            assert not done, "not killed mid-backfill: the test proves nothing"
            assert read < ROWS
            time.sleep(0.5)  # the writer goes on while the relay is down
            process = start(url, tmp_path)
            wait_for(lambda: process.poll() is not None or progress(url, request)[1], 120)
            writer.finish()
            cur.execute("INSERT INTO rc_kill VALUES (0, 'marker')")
            wait_for(
                lambda: (
                    process.poll() is not None
                    or any(c.pk == 0 and not c.snapshot for c in stored(tmp_path, 20))
                ),
                seconds=60,
            )
            assert process.poll() is None, process.communicate()[1]
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=30)
            assert process.returncode == 0, err
        finally:
            writer.done.set()
            if process.poll() is None:
                process.kill()
                process.communicate()
        assert "resumed at" in err  # the backfill went on from its checkpoint
        changes = stored(tmp_path)
        cur.execute("SELECT id, data FROM rc_kill")
        rows = dict(cur.fetchall())
        assert replay_backfill(initial, changes) == rows  # no row back in time, the end equal
        assert latest(changes) == rows  # per row, the last event is the table's row
        again = sum(c.snapshot for c in changes) - ROWS
        assert again < ROWS // 2, f"{again} rows read twice: resumed from scratch?"
        assert writer.writes > 100


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-02 03:04:05",
        "2024-01-02 03:04:05.5",
        "2024-01-02 03:04:05.123",
        "2024-01-02 03:04:05.123456",
        "0000-00-00 00:00:00",  # a zero date: text, as pymysql keeps it
        "2024-02-31 00:00:00",
        "9999-12-31 23:59:59.999999",
        b"2024-01-02 03:04:05.25",
    ],
)
def test_a_chunk_readers_datetimes_are_pymysqls(text: str | bytes) -> None:
    """A backfill's connection reads DATETIME and TIMESTAMP by `datetime.fromisoformat`:
    each value equal to pymysql's own reading, of the same type."""
    from pymysql.constants import FIELD_TYPE
    from pymysql.converters import convert_datetime

    from rowcast.sources.mysql.keyset import conversions

    conv = conversions()
    for kind in (FIELD_TYPE.DATETIME, FIELD_TYPE.TIMESTAMP):
        got, expected = conv[kind](text), convert_datetime(text)
        assert got == expected
        assert type(got) is type(expected)
    assert conv[str] is pymysql.converters.conversions[str]  # the encoders kept


def test_a_signal_table_dropped_and_made_again_under_a_running_reader_takes_new_requests(
    database: tuple[str, Any], tmp_path: Path
) -> None:
    # `rowcast uninstall --yes --include-data` drops rowcast_signal; the next `rowcast
    # backfill` makes it again, and its ids start over at 1: the running reader took
    # request 1 for one it had done, and ignored it
    url, cur = database
    cur.execute("CREATE TABLE t (id INT PRIMARY KEY, data VARCHAR(20))")
    cur.executemany("INSERT INTO t VALUES (%s, %s)", [(i, f"r{i}") for i in range(1, 6)])
    checkpoint = open_checkpoint(str(tmp_path / "pos"))
    source = BinlogSource(
        url, tables=["t"], start=position(cur), checkpoint=checkpoint, server_id=server_id()
    )
    with running(source) as got:
        first = BinlogSource(url).backfill(["t"])
        wait_for(lambda: all(s.done for s in BinlogSource(url).backfills()))
        assert sorted(c.pk for c in got if c.snapshot) == [1, 2, 3, 4, 5]
        cur.execute(f"DROP TABLE {NAME}")
        cur.execute("UPDATE t SET data = 'new' WHERE id = 3")
        again = BinlogSource(url).backfill(["t"], where="id >= 4")
        assert again == first  # the ids start over
        wait_for(lambda: all(s.done for s in BinlogSource(url).backfills()), 30)
        (status,) = BinlogSource(url).backfills()
        assert [r.error for r in status.readers] == [None]
        cur.execute("INSERT INTO t VALUES (9, 'marker')")
        wait_for(lambda: any(c.pk == 9 for c in got))
    assert sorted(c.pk for c in got if c.snapshot) == [1, 2, 3, 4, 4, 5, 5]

"""BinlogSource(snapshot="initial") against the real MariaDB: every row once, then the binlog."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from rowcast import Change, ConfigError, Hub
from rowcast.checkpoint import open_checkpoint
from rowcast.sources._snapshot import Cut
from rowcast.sources.mysql import BinlogSource
from rowcast.sources.mysql.snapshot import parse
from rowcast.sources.mysql.source import _order
from tests.conftest import require_server
from tests.test_change import same

URL = "mysql://root@127.0.0.1:3306/test"
TABLES = ["test.rc_snap_*"]


def execute(conn: Any, *statements: str) -> None:
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def position(conn: Any) -> str:
    with conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        row = cur.fetchone()
    return f"{row[0]}:{row[1]}"


@pytest.fixture
def db() -> Iterator[Any]:
    """A root connection to `test`, with fresh rc_snap_* tables dropped afterwards."""
    require_server("mysql")
    conn = pymysql.connect(host="127.0.0.1", user="root", database="test", autocommit=True)
    names = ("rc_snap_a", "rc_snap_b", "rc_snap_c", "rc_snap_nokey", "rc_snap_types")
    execute(conn, *(f"DROP TABLE IF EXISTS {name}" for name in names))
    execute(
        conn,
        "CREATE TABLE rc_snap_a (id INT PRIMARY KEY, n INT NOT NULL)",
        "CREATE TABLE rc_snap_b (a INT, b VARCHAR(10), n INT NOT NULL, PRIMARY KEY (a, b))",
        "CREATE TABLE rc_snap_c (id VARCHAR(10) PRIMARY KEY, n INT NOT NULL)",
    )
    yield conn
    execute(conn, *(f"DROP TABLE IF EXISTS {name}" for name in names))
    conn.close()


def rows_of(conn: Any) -> dict[tuple[str, Any], dict[str, Any]]:
    """Every row of the test tables now, keyed like `replay`'s state."""
    found = {}
    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        for table, key in (
            ("rc_snap_a", ("id",)),
            ("rc_snap_b", ("a", "b")),
            ("rc_snap_c", ("id",)),
        ):
            cur.execute(f"SELECT * FROM {table}")
            for row in cur.fetchall():
                pk = row[key[0]] if len(key) == 1 else tuple(row[k] for k in key)
                found[(table, pk)] = row
    return found


def replay(
    changes: list[Change], state: dict[tuple[str, Any], dict[str, Any]] | None = None
) -> dict[tuple[str, Any], dict[str, Any]]:
    """Apply changes as a consumer would, checking that each binlog change follows the last.

    A snapshot read sets the row; a streamed change must find the row as its before
    image says (a missed change breaks that), and a write must find no row (a change
    already in the snapshot would be doubled). An update or a delete handed out by a
    resumed snapshot (its position is a snapshot's) may be of a row the consumer never
    had (one the log deletes between the two points).
    """
    state = {} if state is None else state
    for change in changes:
        key = (change.table, change.pk)
        if change.snapshot:
            state[key] = dict(change.after or {})
        elif change.action != "write" and key not in state and _between(change):
            if change.action == "update":
                state[key] = dict(change.after or {})
        elif change.action == "write":
            assert key not in state, f"doubled at the seam: {change}"
            state[key] = dict(change.after or {})
        else:
            assert state.get(key) == change.before, f"missed before: {change}"
            if change.action == "update":
                state[key] = dict(change.after or {})
            else:
                del state[key]
    return state


def _between(change: Change) -> bool:
    return (change.position or "").startswith("snapshot:")


def seed(conn: Any, count: int) -> None:
    execute(
        conn,
        "INSERT INTO rc_snap_a VALUES " + ", ".join(f"({i}, 0)" for i in range(count)),
        "INSERT INTO rc_snap_b VALUES " + ", ".join(f"({i % 7}, 'k{i}', 0)" for i in range(count)),
        "INSERT INTO rc_snap_c VALUES " + ", ".join(f"('c{i}', 0)" for i in range(count)),
    )


class Writer(threading.Thread):
    """Inserts, updates and deletes rows of the three tables, one autocommit statement each."""

    def __init__(self, count: int) -> None:
        super().__init__(daemon=True)
        self.conn = pymysql.connect(host="127.0.0.1", user="root", database="test", autocommit=True)
        self.live: dict[str, set[Any]] = {
            "a": set(range(count)),
            "c": {f"c{i}" for i in range(count)},
        }
        self.next = count
        self.done = threading.Event()
        self.writes = 0
        self.random = random.Random(7)

    def run(self) -> None:
        while not self.done.is_set():
            self.step()

    def step(self) -> None:
        r = self.random
        table = r.choice("ac")
        live = self.live[table]
        op = r.random()
        if op < 0.3 or not live:
            key: Any = self.next if table == "a" else f"c{self.next}"
            self.next += 1
            execute(self.conn, f"INSERT INTO rc_snap_{table} VALUES ({key!r}, 0)")
            live.add(key)
        elif op < 0.85:
            key = r.choice(sorted(live, key=str))
            execute(self.conn, f"UPDATE rc_snap_{table} SET n = n + 1 WHERE id = {key!r}")
            execute(self.conn, f"UPDATE rc_snap_b SET n = n + 1 WHERE a = {r.randrange(7)} LIMIT 1")
        else:
            key = r.choice(sorted(live, key=str))
            execute(self.conn, f"DELETE FROM rc_snap_{table} WHERE id = {key!r}")
            live.discard(key)
        self.writes += 1

    def finish(self) -> str:
        """Stop writing; the binlog position after the last write."""
        self.done.set()
        self.join(30)
        end = position(self.conn)
        self.conn.close()
        return end


@contextlib.contextmanager
def running(source: BinlogSource, slow: float = 0.0) -> Iterator[list[Change]]:
    """Run `source` in a thread; yields what it publishes (each transaction slowed by `slow`)."""
    got: list[Change] = []
    hub = Hub()

    def take(_: Any, changes: list[Change]) -> None:
        got.extend(changes)
        time.sleep(slow)  # a consumer slower than the writer: the snapshot takes a while

    hub.signal("commit").connect(take, weak=False)
    thread = threading.Thread(target=source.run, args=(hub,))
    thread.start()
    try:
        yield got
    finally:
        source.stop()
        thread.join(30)
    assert not thread.is_alive()


def wait_past(source: BinlogSource, end: str) -> None:
    """Wait until `source` handed out everything up to binlog position `end`: streamed past
    it, or done with a snapshot read at or after it."""

    def past() -> bool:
        at = source.position
        if at is not None and at.startswith("snapshot:"):
            progress = source.snapshot_progress
            at = parse(at).point if progress is not None and progress.done else None
        return at is not None and _order(at) >= _order(end)

    deadline = time.monotonic() + 60
    while not past():
        assert time.monotonic() < deadline, f"stuck at {source.position}, waiting for {end}"
        time.sleep(0.05)


def test_every_row_in_chunks_by_key_then_the_binlog(db: Any) -> None:
    seed(db, 5)
    execute(db, "CREATE TABLE rc_snap_nokey (v INT)", "INSERT INTO rc_snap_nokey VALUES (1), (1)")
    source = BinlogSource(URL, tables=TABLES, snapshot="initial", snapshot_chunk=2, end="now")
    chunks = list(source)
    assert all(1 <= len(chunk) <= 2 for chunk in chunks)
    changes = [c for chunk in chunks for c in chunk]
    assert all(c.snapshot and c.action == "write" and c.source == "mysql" for c in changes)
    assert [(c.table, c.pk) for c in changes] == (
        [("rc_snap_a", i) for i in range(5)]
        + [("rc_snap_b", key) for key in sorted((i % 7, f"k{i}") for i in range(5))]
        + [("rc_snap_c", f"c{i}") for i in range(5)]
        + [("rc_snap_nokey", None)] * 2
    )
    assert changes[0].after == {"id": 0, "n": 0}
    assert all(c.position == chunk[-1].position for chunk in chunks for c in chunk)
    assert chunks[0][0].position.startswith("snapshot:mysql-bin.")  # type: ignore[union-attr]
    assert source.snapshot_progress is not None
    assert source.snapshot_progress.done
    assert (source.snapshot_progress.rows, source.snapshot_progress.tables) == (17, 4)


def test_snapshot_rows_are_what_the_binlog_gives_for_them(db: Any) -> None:
    execute(
        db,
        "CREATE TABLE rc_snap_types (id BIGINT UNSIGNED PRIMARY KEY, d DECIMAL(10, 3), "
        "f DOUBLE, s VARCHAR(20), t TEXT, b VARBINARY(8), bl BLOB, dt DATETIME(6), "
        "ts TIMESTAMP(3) NULL, da DATE, ti TIME(2), y YEAR, bi BIT(5), e ENUM('x', 'y'), "
        "st SET('p', 'q', 'r'), st0 SET('p'), j JSON, n INT NULL)",
    )
    before = position(db)
    execute(
        db,
        "INSERT INTO rc_snap_types VALUES (18446744073709551615, 12.345, 1.5, 'héllo ✓', "
        "'long text', x'00ff', x'0102', '2024-02-29 12:34:56.123456', '2024-03-01 00:00:01.5', "
        "'2024-02-29', '01:02:03.25', 2024, b'10101', 'y', 'p,r', '', '{\"k\": [1, 2.5]}', NULL)",
    )
    (streamed,) = [
        c for tx in BinlogSource(URL, tables=TABLES, start=before, end="now") for c in tx
    ]
    (read,) = [
        c
        for tx in BinlogSource(URL, tables=["test.rc_snap_types"], snapshot="initial", end="now")
        for c in tx
    ]
    assert read.snapshot
    assert read.pk == streamed.pk == 18446744073709551615
    assert same(read.after, streamed.after), (read.after, streamed.after)
    assert Change.from_json(read.to_json()) == read


def test_writes_racing_the_snapshot_are_neither_missed_nor_doubled(db: Any) -> None:
    seed(db, 200)
    writer = Writer(200)
    writer.start()
    while writer.writes < 20:  # writing before, during and after the snapshot
        time.sleep(0.01)
    source = BinlogSource(URL, tables=TABLES, snapshot="initial", snapshot_chunk=15)
    with running(source, slow=0.002) as got:
        while source.snapshot_progress is None or not source.snapshot_progress.done:
            time.sleep(0.01)
        end = writer.finish()
        wait_past(source, end)
    snapshot = [c for c in got if c.snapshot]
    assert len({(c.table, c.pk) for c in snapshot}) == len(snapshot)  # each row read once
    assert any(not c.snapshot for c in got)
    assert replay(got) == rows_of(db)


def test_a_snapshot_cut_short_resumes_where_it_stopped(db: Any, tmp_path: Path) -> None:
    seed(db, 60)
    writer = Writer(60)
    writer.start()
    while writer.writes < 10:
        time.sleep(0.01)
    first = BinlogSource(URL, tables=TABLES, snapshot="initial", snapshot_chunk=7)
    stream = iter(first)
    taken = [next(stream)]
    while taken[-1][0].table != "rc_snap_b":
        taken.append(next(stream))
    taken.append(next(stream))  # cut inside rc_snap_b (60 rows), after two chunks of it
    cut_at = writer.writes
    while writer.writes < cut_at + 5:  # writes to rows read already, and to rows not read yet
        time.sleep(0.01)
    del stream  # the relay died: its connection is gone
    checkpoint = open_checkpoint(str(tmp_path / "pos"))
    checkpoint.save(taken[-1][-1].position or "")
    resumed = BinlogSource(URL, tables=TABLES, checkpoint=checkpoint, snapshot_chunk=7)
    with running(resumed, slow=0.002) as got:
        while resumed.snapshot_progress is None or not resumed.snapshot_progress.done:
            time.sleep(0.01)
        second = [c for c in got if c.snapshot]
        end = writer.finish()
        wait_past(resumed, end)
    before = [c for chunk in taken for c in chunk]
    assert [c.table for c in before][-1] == "rc_snap_b"
    # integer (and composite) keys go on after the last key read; rc_snap_a is not read again
    assert all(c.table != "rc_snap_a" for c in second)
    b_keys = [c.pk for c in before + second if c.table == "rc_snap_b"]
    assert len(b_keys) == len(set(b_keys))
    assert replay(before + got) == rows_of(db)


def test_text_keys_resume_in_the_servers_order_and_a_second_cut_resumes_too(db: Any) -> None:
    seed(db, 30)
    execute(db, "INSERT INTO rc_snap_c VALUES ('C15x', 0), ('Zc', 0)")  # Python orders case apart
    first = list(BinlogSource(URL, tables=TABLES, snapshot="initial", snapshot_chunk=5, end="now"))
    cut = next(i for i, chunk in enumerate(first) if chunk[0].table == "rc_snap_c") + 3
    before = [c for chunk in first[:cut] for c in chunk]
    read = {c.pk for c in before if c.table == "rc_snap_c"}
    execute(
        db,
        "UPDATE rc_snap_c SET n = 5",  # rows on both sides of the cut
        "UPDATE rc_snap_a SET n = 9",
        "INSERT INTO rc_snap_c VALUES ('a0', 1), ('zz', 1)",
    )
    second = BinlogSource(URL, tables=TABLES, start=first[cut - 1][-1].position, snapshot_chunk=5)
    stream = iter(second)
    again = [next(stream)]  # first what happened since, to the rows on the consumer's side
    while not again[-1][0].snapshot:
        again.append(next(stream))
    seam = {(c.table, c.pk) for tx in again[:-1] for c in tx}
    assert {pk for table, pk in seam if table == "rc_snap_c"} == read | {"a0"}  # not 'zz'
    assert {pk for table, pk in seam if table == "rc_snap_a"} == set(range(30))
    # then rc_snap_c goes on after its last key, in the server's order
    assert not read & {c.pk for c in again[-1]}
    execute(db, "UPDATE rc_snap_c SET n = 6", "DELETE FROM rc_snap_c WHERE id = 'c9'")
    del stream  # cut again
    third = BinlogSource(URL, tables=TABLES, start=again[-1][-1].position, snapshot_chunk=5)
    with running(third) as got:
        execute(db, "INSERT INTO rc_snap_a VALUES (100, 1)")
        marker = position(db)  # after it: past there, the row was handed out
        wait_past(third, marker)
    again_changes = [c for tx in again for c in tx]
    snapshot = [c.pk for c in before + again_changes + got if c.snapshot and c.table == "rc_snap_c"]
    assert len(snapshot) == len(set(snapshot))  # each row read once, across three runs
    state = replay(before + again_changes + got)
    assert state == rows_of(db)
    assert {row["n"] for (table, _), row in state.items() if table == "rc_snap_c"} == {6}
    assert all(c.table != "rc_snap_a" or not c.snapshot for c in got)


def test_a_key_moved_across_the_cut_before_a_resume_leaves_no_stale_row(db: Any) -> None:
    seed(db, 20)
    first = BinlogSource(URL, tables=["test.rc_snap_a"], snapshot="initial", snapshot_chunk=5)
    stream = iter(first)
    taken = [next(stream), next(stream)]  # ids 0..9 read, then the relay died
    del stream
    # row 3 (read already) moves to the part not read yet: its old key must go away
    execute(db, "UPDATE rc_snap_a SET id = 100, n = 1 WHERE id = 3")
    resumed = BinlogSource(
        URL, tables=["test.rc_snap_a"], start=taken[-1][-1].position, snapshot_chunk=5
    )
    with running(resumed) as got:
        while resumed.snapshot_progress is None or not resumed.snapshot_progress.done:
            time.sleep(0.01)
        execute(db, "INSERT INTO rc_snap_a VALUES (200, 2)")
        marker = position(db)  # after it: past there, the row was handed out
        wait_past(resumed, marker)
    state: dict[Any, Any] = {}
    for change in [c for chunk in taken for c in chunk] + got:
        if change.before is not None:
            state.pop(change.before["id"], None)
        if change.after is not None:
            state[change.after["id"]] = change.after
    assert state == {key: row for (_, key), row in rows_of(db).items() if _ == "rc_snap_a"}


def test_a_checkpointed_binlog_position_skips_the_snapshot(db: Any, tmp_path: Path) -> None:
    seed(db, 3)
    checkpoint = open_checkpoint(str(tmp_path / "pos"))
    checkpoint.save(position(db))
    execute(db, "UPDATE rc_snap_a SET n = 1 WHERE id = 0")
    source = BinlogSource(URL, tables=TABLES, snapshot="initial", checkpoint=checkpoint, end="now")
    assert [(c.name, c.snapshot) for tx in source for c in tx] == [("rc_snap_a_update", False)]
    assert source.snapshot_progress is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"snapshot": "always"}, "snapshot must be 'initial' or 'never'"),
        ({"snapshot": "initial", "snapshot_chunk": 0}, "snapshot_chunk positive"),
        ({"snapshot": "initial", "start": "start"}, "leave start at 'now'"),
        ({"start": "snapshot:mysql-bin.000001:4:{not json"}, "bad snapshot position"),
        ({"start": "snapshot:nofile"}, "bad snapshot position"),
        ({"start": 'snapshot:f.1:4:{"at": [1, 2, null], "resumed": []}'}, "names no table"),
    ],
)
def test_bad_snapshot_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BinlogSource(URL, **options)


def test_a_position_of_an_older_rowcast_resumes_from_its_first_point_and_resumed_key() -> None:
    """Older positions listed the reads they resumed at; the rows after the first of them
    come again, read anew, and what the binlog holds since the first point goes out."""
    older = (
        'snapshot:mysql-bin.000001:4:{"at":["test","t",[9]],'
        '"resumed":[[["test","t",[5]],"mysql-bin.000002:8"]]}'
    )
    assert parse(older) == Cut("mysql-bin.000001:4", ("test", "t", (5,)))
    assert parse('snapshot:mysql-bin.000001:4:{"at":["test","t",[9]],"resumed":[]}') == Cut(
        "mysql-bin.000001:4", ("test", "t", (9,))
    )

"""Rows whose primary key holds a NULL (SQLite allows it in a rowid table's key that is not
an INTEGER PRIMARY KEY): every chunked read (snapshot, backfill) reads each exactly once.

A new user found that a chunk ending on a NULL key lost every row after it: the next
chunk's ``(k) > (NULL)`` is NULL.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rowcast.checkpoint import open_checkpoint
from rowcast.cli import main
from rowcast.codec import dumps, loads
from rowcast.sources._backfill import Backfill
from rowcast.sources._job import Job, Window
from rowcast.sources.sqlite import TriggerSource, triggers
from rowcast.sources.sqlite.backfill import SqliteReads
from rowcast.sources.sqlite.keys import Keys
from tests.conftest import streaming, wait_for

TABLES = {
    "one": ("CREATE TABLE m (k PRIMARY KEY, v)", ["k"]),
    "text": ("CREATE TABLE m (k TEXT COLLATE NOCASE PRIMARY KEY, v)", ["k"]),
    "two": ("CREATE TABLE m (a, b INT, v, PRIMARY KEY (a, b))", ["a", "b"]),
    "half": ("CREATE TABLE m (a NOT NULL, b, v, PRIMARY KEY (a, b))", ["a", "b"]),
}
KEYS: dict[str, list[Any]] = {
    "one": [None, 3, None, 1, "x", 2, b"\x00", 1.5],
    "text": [None, "b", None, "A", "c", "B0", "a0", "D"],
    "two": [(None, 1), (1, None), (None, None), (1, 1), (1, 2), (None, 1), (2, 0), (0, 5)],
    "half": [(1, None), (1, 1), (2, None), (0, 1), (2, 2), (0, None), (3, 0), (1, 5)],
}


def make(path: Path, kind: str) -> None:
    create, names = TABLES[kind]
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(create)
        for i, key in enumerate(KEYS[kind]):
            values = key if isinstance(key, tuple) else (key,)
            conn.execute(
                f"INSERT INTO m ({', '.join(names)}, v) VALUES ({', '.join('?' * len(names))}, ?)",
                (*values, i),
            )


def handed_out(
    reads: SqliteReads, rows: Any, last: Any, size: int, full: bool, changes: list[Any]
) -> list[Any]:
    """What a backfill's chunk of `rows` (of ``m``) hands out once the log's `changes`
    came in its window."""
    engine = Backfill(reads, None, None, threading.Event())
    window = Window(Job(1, [("main", "m")], None, size), 0, 0, 0, rows, last, full, opened=True)
    for change in changes:
        engine._touch(window, change)
    kept = engine._finish(window, "1")
    engine.close()
    return kept


@pytest.fixture(params=sorted(TABLES))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "odd.db"
    make(path, kind)
    return path


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 8, 100])
def test_every_row_is_read_once_whatever_the_chunk(db: Path, chunk: int) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    (table,) = triggers.tables(conn, lambda name: name == "m")
    read = [row["v"] for rows, _ in Keys(conn).chunks(conn, table, None, chunk) for _, row in rows]
    assert sorted(read) == list(range(8))
    conn.close()


@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_a_backfill_resumed_from_any_recorded_key_reads_every_row_once(
    db: Path, chunk: int
) -> None:
    """As a relay restarted mid-backfill does: each chunk from the key its progress row
    recorded (through the codec), on a new connection."""
    url = f"sqlite:///{db}"
    after: Any = None
    read: list[int] = []
    while True:
        reads = SqliteReads(str(db), url, 5.0, lambda name: True)
        rows, last = reads.chunk("main", "m", after, None, chunk)
        reads.close()
        read.extend(row["v"] for _, row in rows)
        if len(rows) < chunk:
            break
        after = loads(dumps(last))
    assert sorted(read) == list(range(8))


def test_the_snapshot_and_the_backfill_of_the_cli_read_every_row(tmp_path: Path) -> None:
    db = tmp_path / "odd.db"
    make(db, "one")
    url = f"sqlite:///{db}"
    tail = CliRunner().invoke(
        main,
        [
            *("tail", url, "--tables", "m", "--snapshot", "initial", "--snapshot-chunk", "1"),
            *("--to", "now", "--format", "json"),
        ],
    )
    assert tail.exit_code == 0, tail.output
    assert len(tail.output.splitlines()) == 8
    source = TriggerSource(url, tables=["m"], poll=0.02)
    with streaming(source) as got:
        wait_for(lambda: source.position is not None)
        asked = CliRunner().invoke(main, ["backfill", url, "--tables", "m", "--chunk", "1"])
        assert asked.exit_code == 0, asked.output
        wait_for(lambda: source.backfills()[0].done, seconds=30)
    assert sorted(c.after["v"] for c in got if c.snapshot) == list(range(8))


def test_a_snapshot_cut_among_the_null_keys_resumes_without_a_loss(tmp_path: Path) -> None:
    db = tmp_path / "odd.db"
    make(db, "two")
    url = f"sqlite:///{db}"
    checkpoint = open_checkpoint(str(tmp_path / "m.pos"))
    first = TriggerSource(url, snapshot="initial", snapshot_chunk=1, checkpoint=checkpoint)
    reading = iter(first)
    delivered = [next(reading), next(reading)]  # two of the three rows with a NULL
    checkpoint.save(delivered[-1][-1].position or "")
    reading.close()
    first.close()
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as app:
        app.execute("UPDATE m SET v = v + 100 WHERE a IS NULL OR b IS NULL")
        app.execute("INSERT INTO m VALUES (9, 9, 'marker')")
    resumed = TriggerSource(url, snapshot_chunk=1, checkpoint=checkpoint, poll=0.02)
    with streaming(resumed) as got:
        wait_for(lambda: any(c.after and c.after["v"] == "marker" for c in got))
    seen = {c.after["v"] for tx in delivered for c in tx} | {
        c.after["v"] for c in got if c.after is not None
    }
    # every row's latest image reached the consumer: those the seam could not place (a
    # NULL in the key) came as the changes, and every row after the cut was read
    latest = {v % 100 if isinstance(v, int) else v for v in seen}
    assert set(range(8)) | {"marker"} <= latest
    nulls = {i + 100 for i, key in enumerate(KEYS["two"]) if None in key}
    assert nulls <= seen


def test_keys_with_a_null_compare_safely(tmp_path: Path) -> None:
    db = tmp_path / "odd.db"
    make(db, "two")
    conn = sqlite3.connect(db, isolation_level=None)
    keys = Keys(conn)
    # after a key without a NULL: the rows with a NULL were read before it
    assert not keys.greater("main", "m", ("9", None), (1, 1))
    assert not keys.greater("main", "m", (None, 0), (1, 1))
    assert keys.greater("main", "m", (1, 2), (1, 1))
    # among the NULL keys: read next, or not, cannot be told; its changes are handed out
    assert not keys.greater("main", "m", (None, 1), {"null": 2})
    assert keys.greater("main", "m", (0, 0), {"null": 2})
    conn.close()


def test_a_chunk_drops_only_the_null_keyed_rows_the_log_changed_in_its_window(
    tmp_path: Path,
) -> None:
    """No key tells rows with a NULL in it apart: the log's images do (a row the log
    changed in the window has, in the chunk, one of them)."""
    db = tmp_path / "odd.db"
    make(db, "one")
    url = f"sqlite:///{db}"
    TriggerSource(url).install()
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as app:
        app.execute("UPDATE m SET v = 20 WHERE k IS NULL AND v = 2")  # before the select
    reads = SqliteReads(str(db), url, 5.0, lambda name: True)
    rows, last = reads.chunk("main", "m", None, None, 3)  # the two NULL keys, and 1
    assert [row["v"] for _, row in rows] == [0, 20, 3]
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as app:
        app.execute("UPDATE m SET v = 99 WHERE k = 1")  # a keyed row: dropped by its key
    changes = [c for tx in TriggerSource(url, start="start", end="now") for c in tx]
    kept = handed_out(reads, rows, last, 3, True, changes)
    assert sorted(c.after["v"] for c in kept if c.after) == [0]  # the NULL key not changed


def test_a_row_whose_null_key_the_log_sets_in_the_window_is_dropped_alone(
    db: Path, kind: str
) -> None:
    """A row read in the chunk with a NULL in its key, given a whole key by the log in
    the chunk's window: its old image is dropped (the log's update is newer), every other
    row of the chunk is kept (was: a one-column key handed the stale image out after the
    update; a two-column key dropped every row that shared the old key's value)."""
    url = f"sqlite:///{db}"
    TriggerSource(url).install()
    reads = SqliteReads(str(db), url, 5.0, lambda name: True)
    rows, last = reads.chunk("main", "m", None, None, 8)  # every row: two share a NULL key
    moved = rows[0][1]["v"]  # a row with a NULL in its key: they come first
    whole = {"one": "k = 'zz'", "text": "k = 'zz'", "two": "a = 7, b = 7", "half": "b = 7"}
    before = len([c for tx in TriggerSource(url, start="start", end="now") for c in tx])
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as app:
        app.execute(f"UPDATE m SET {whole[kind]} WHERE v = ?", (moved,))
    changes = [c for tx in TriggerSource(url, start="start", end="now") for c in tx][before:]
    assert [c.action for c in changes] == ["update"]
    kept = handed_out(reads, rows, last, 8, False, changes)
    assert sorted(c.after["v"] for c in kept if c.after) == sorted(
        row["v"] for _, row in rows if row["v"] != moved
    )


def test_an_image_holding_a_json_value_is_matched_not_a_crash(tmp_path: Path) -> None:
    """A change with no key whose image holds a JSON object or array (a PostgreSQL jsonb,
    a MySQL JSON: a table whose key was dropped mid-backfill) is matched by its encoded
    image (was: TypeError, unhashable dict, out of the relay's source)."""
    from rowcast import Change

    db = tmp_path / "odd.db"
    make(db, "one")
    url = f"sqlite:///{db}"
    reads = SqliteReads(str(db), url, 5.0, lambda name: True)
    rows, last = reads.chunk("main", "m", None, None, 8)
    old = rows[0][1]
    new = {"k": None, "v": {"a": [1, 2]}}
    kept = handed_out(reads, rows, last, 8, False, [Change("update", "main", "m", None, old, new)])
    assert [c.after for c in kept] == [row for _, row in rows[1:]]

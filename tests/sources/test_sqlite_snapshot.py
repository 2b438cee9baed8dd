"""TriggerSource(snapshot="initial") on real SQLite files: rows, keys, seams, locks.

The races with a writer are `SourceContract`'s (tests/sources/test_sqlite_source.py);
here is what only SQLite's snapshot has: the images and keys its triggers record
(rowid tables, WITHOUT ROWID, collations), a cut inside a composite text key,
the app writing while a WAL file is read, and a rollback-journal file.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rowcast import Change, ConfigError
from rowcast.checkpoint import open_checkpoint
from rowcast.sources.sqlite import TriggerSource
from rowcast.testing.snapshot import replay
from tests.conftest import streaming, wait_for


def url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """The app's connection to a new WAL file (autocommit)."""
    conn = sqlite3.connect(tmp_path / "app.db", isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode = WAL")
    yield conn
    conn.close()


def path_of(conn: sqlite3.Connection) -> Path:
    return Path(conn.execute("PRAGMA database_list").fetchone()[2])


def test_rows_and_keys_are_what_the_triggers_record(app: sqlite3.Connection) -> None:
    app.execute("CREATE TABLE plain (v TEXT, n REAL)")  # keyed by its rowid
    app.execute("CREATE TABLE ipk (id INTEGER PRIMARY KEY, v BLOB)")
    app.execute(
        "CREATE TABLE wr (a TEXT COLLATE NOCASE, b INT, v, PRIMARY KEY (b, a)) WITHOUT ROWID"
    )
    path = path_of(app)
    TriggerSource(url(path)).install()
    rows = {
        "plain": ("INSERT INTO plain VALUES ('x', 1.5)", "DELETE FROM plain"),
        "ipk": ("INSERT INTO ipk VALUES (7, x'00ff')", "DELETE FROM ipk"),
        "wr": ("INSERT INTO wr VALUES ('Ab', 2, NULL)", "DELETE FROM wr"),
    }
    for insert, _ in rows.values():
        app.execute(insert)
    streamed = {c.table: c for tx in TriggerSource(url(path), start="start", end="now") for c in tx}
    read = {
        c.table: c for tx in TriggerSource(url(path), snapshot="initial", end="now") for c in tx
    }
    assert sorted(read) == ["ipk", "plain", "wr"]
    for name, change in read.items():
        assert change.snapshot
        assert (change.action, change.schema, change.source) == ("write", "main", "sqlite")
        assert (change.pk, change.after) == (streamed[name].pk, streamed[name].after)
        assert Change.from_json(change.to_json()) == change
    assert read["plain"].pk == 1
    assert read["wr"].pk == (2, "Ab")


def test_a_cut_in_a_text_key_resumes_in_its_collation(
    app: sqlite3.Connection, tmp_path: Path
) -> None:
    app.execute("CREATE TABLE t (a TEXT COLLATE NOCASE, b INT, data TEXT, PRIMARY KEY (a, b))")
    names = ["b", "A", "c", "B", "a", "C", "d", "D"]
    app.executemany("INSERT INTO t VALUES (?, ?, ?)", [(n, i, n) for i, n in enumerate(names)])
    path = path_of(app)
    checkpoint = open_checkpoint(str(tmp_path / "t.pos"))
    first = TriggerSource(url(path), snapshot="initial", snapshot_chunk=3, checkpoint=checkpoint)
    reading = iter(first)
    delivered = [next(reading), next(reading)]  # six rows in NOCASE order
    keys = [c.pk for tx in delivered for c in tx]
    assert keys == sorted(keys, key=lambda k: (k[0].lower(), k[1]))
    assert keys != sorted(keys)  # Python's order puts capitals first
    checkpoint.save(delivered[0][-1].position or "")  # one chunk delivered past it
    reading.close()
    first.close()
    read_next = keys[-1]
    app.execute("DELETE FROM t WHERE a = ? AND b = ?", read_next)  # delivered, not checkpointed
    app.execute("UPDATE t SET data = 'x'")
    app.execute("UPDATE t SET a = 'zz' WHERE a = ? AND b = ?", keys[0])  # read -> read next
    resumed = TriggerSource(url(path), snapshot_chunk=3, checkpoint=checkpoint, poll=0.02)
    with streaming(resumed) as got:
        wait_for(lambda: resumed.snapshot_progress is not None and resumed.snapshot_progress.done)
        app.execute("INSERT INTO t VALUES ('m', 99, 'marker')")
        wait_for(lambda: any(c.after and c.after["data"] == "marker" for c in got))
    between = [
        (str(c.action), c.pk) for c in got if not c.snapshot and c.position.startswith("snapshot:")
    ]  # type: ignore[union-attr]
    assert ("delete", read_next) in between
    assert ("delete", keys[0]) in between  # its new key is read next: no write of it here
    assert not [b for b in between if b[0] == "write"]
    state = replay([c for tx in delivered for c in tx] + got, reread=True)
    assert state == {(a, b): data for a, b, data in app.execute("SELECT a, b, data FROM t")}
    again = {c.pk for c in got if c.snapshot} & {c.pk for c in delivered[0]}
    assert not again


def test_the_app_writes_while_a_wal_file_is_read(app: sqlite3.Connection) -> None:
    app.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data TEXT)")
    app.executemany("INSERT INTO t (data) VALUES (?)", [(f"s{i}",) for i in range(100)])
    path = path_of(app)
    source = TriggerSource(url(path), snapshot="initial", snapshot_chunk=10)
    reading = iter(source)
    first = next(reading)  # the read is open now, for as long as the consumer takes
    hurried = sqlite3.connect(path, isolation_level=None, timeout=0.2)
    hurried.execute("UPDATE t SET data = 'now' WHERE id = 100")  # no lock to wait for
    hurried.execute("INSERT INTO t (data) VALUES ('new')")
    hurried.close()
    rest = [c for _ in range(9) for c in next(reading)]
    streamed = next(reading)
    reading.close()
    assert len(first) + len(rest) == 100
    assert rest[-1].after == {"id": 100, "data": "s99"}  # as it was when the read began
    assert [(str(c.action), c.pk) for c in streamed] == [("update", 100), ("write", 101)]


def test_a_rollback_journal_file_is_read_too(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data TEXT)")
        conn.executemany("INSERT INTO t (data) VALUES (?)", [(f"s{i}",) for i in range(25)])
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    changes = [
        c
        for tx in TriggerSource(url(path), snapshot="initial", snapshot_chunk=10, end="now")
        for c in tx
    ]
    assert [c.pk for c in changes] == list(range(1, 26))
    assert all(c.snapshot for c in changes)


def test_a_new_snapshot_records_where_it_begins_before_its_first_chunk(
    app: sqlite3.Connection, tmp_path: Path
) -> None:
    app.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data TEXT)")
    app.execute("INSERT INTO t (data) VALUES ('a'), ('b')")
    path = path_of(app)
    checkpoint = open_checkpoint(str(tmp_path / "begin.pos"))
    reading = iter(TriggerSource(url(path), snapshot="initial", checkpoint=checkpoint))
    (chunk,) = [next(reading)]
    assert checkpoint.load() == (chunk[0].position or "").split(":{")[0] + ':{"at":null}'
    reading.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"snapshot": "always"}, "snapshot must be 'initial' or 'never'"),
        ({"snapshot": "initial", "snapshot_chunk": 0}, "snapshot_chunk positive"),
        ({"snapshot": "initial", "start": "start"}, "leave start at 'now'"),
        ({"start": "snapshot:12:{not json"}, "bad snapshot position"),
        ({"start": 'snapshot:x:{"at": null}'}, "bad snapshot position"),
    ],
)
def test_bad_snapshot_options(
    app: sqlite3.Connection, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        TriggerSource(url(path_of(app)), **options)


def test_a_snapshot_checkpoint_of_another_file_is_refused(
    app: sqlite3.Connection, tmp_path: Path
) -> None:
    app.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data TEXT)")
    app.executemany("INSERT INTO t (data) VALUES (?)", [(str(i),) for i in range(10)])
    path = path_of(app)
    TriggerSource(url(path)).install()
    checkpoint = open_checkpoint(str(tmp_path / "other.pos"))
    checkpoint.save('snapshot:3:{"at":["main","t",[4]]}')  # saved against another file
    with pytest.raises(ConfigError, match="no record of that reader"):
        list(TriggerSource(url(path), snapshot="initial", checkpoint=checkpoint, end="now"))


@pytest.mark.parametrize(
    "table",
    [
        "CREATE TABLE t (a TEXT, b INT, v TEXT, PRIMARY KEY (a, b))",
        "CREATE TABLE t (a TEXT COLLATE NOCASE, b INT, v TEXT, PRIMARY KEY (a, b))",
        "CREATE TABLE t (a TEXT COLLATE NOCASE, b INT, v TEXT, PRIMARY KEY (b, a)) WITHOUT ROWID",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
    ],
)
def test_each_chunk_seeks_its_first_key_in_the_index(app: sqlite3.Connection, table: str) -> None:
    # a chunk that scanned the index from its start to its cut made a big table's snapshot
    # (and backfill) quadratic: the row-value comparison must be one the index answers
    from rowcast.sources.sqlite import triggers
    from rowcast.sources.sqlite.keys import Keys

    app.execute(table)
    columns = [r[1] for r in app.execute("PRAGMA table_info(t)")]
    values = {"a": lambda i: f"k{i % 7}", "b": lambda i: i, "id": lambda i: i, "v": str}
    app.executemany(
        f"INSERT INTO t ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
        [tuple(values[c](i) for c in columns) for i in range(1, 60)],
    )
    (described,) = triggers.tables(app, lambda name: name == "t")
    reader = sqlite3.connect(path_of(app), isolation_level=None)
    queries: list[str] = []
    reader.set_trace_callback(queries.append)
    read = [pk for rows, _ in Keys(app).chunks(reader, described, None, 10) for pk, _ in rows]
    reader.set_trace_callback(None)
    assert len(read) == len(set(read)) == 59
    later = [q for q in queries if ">" in q]
    assert later
    for query in later:
        plan = " ".join(row[3] for row in reader.execute(f"EXPLAIN QUERY PLAN {query}"))
        assert plan.startswith("SEARCH"), (query, plan)
        assert "TEMP B-TREE" not in plan, (query, plan)
    reader.close()

"""Backfills of a PostgreSQL database while a reader streams it (``source.backfill``).

Each test has a private database (dropped after with its slots) and a reader with
a checkpoint, as a relay runs it. A backfill's rows must be what the stream gives
for them (the same values and ``pk``), only the rows ``where`` matches, for keys
of every common type; rows a writer changes or deletes while the backfill runs
must end as the table has them; a cancel stops it; a table without a key and a
user's publication without ``rowcast_signal`` are refused with the fix; and
``rowcast_signal`` is published, never snapshotted nor delivered.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import random
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extras
import pytest

from rowcast import Change, ConfigError, Hub
from rowcast.checkpoint import open_checkpoint
from rowcast.sources.postgres import LogicalSource
from rowcast.sources.signal import SignalTable
from tests.conftest import wait_for
from tests.sources.test_postgres import private_database

pytestmark = pytest.mark.server

RUN = secrets.token_hex(3)
_numbers = itertools.count(1)


@pytest.fixture
def url() -> Iterator[str]:
    with private_database(f"rc_pgbf_{RUN}_{next(_numbers)}") as url:
        yield url


@pytest.fixture
def db(url: str) -> Iterator[Any]:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    yield conn.cursor()
    conn.close()


@contextlib.contextmanager
def relay(
    url: str,
    tmp_path: Path,
    tables: list[str] | None,
    slow: float = 0.0,
    name: str | None = None,
    **options: Any,
) -> Iterator[list[Change]]:
    """A reader with a checkpoint (`name`'s, else a new one), as ``rowcast relay`` runs one,
    streaming in a thread while inside, ready (its slot made); yields what it published so
    far. `slow`: seconds it takes per change."""
    got: list[Change] = []
    hub = Hub()
    hub.connect(lambda change: (got.append(change), slow and time.sleep(slow)))
    checkpoint = open_checkpoint(str(tmp_path / f"pos_{name or next(_numbers)}"))
    source = LogicalSource(url, tables=tables, checkpoint=checkpoint, **options)
    thread = threading.Thread(target=source.run, args=(hub,))
    thread.start()
    try:
        wait_for(lambda: checkpoint.load() is not None or not thread.is_alive())
        assert thread.is_alive()
        yield got
    finally:
        source.stop()
        thread.join(30)
        checkpoint.close()
    assert not thread.is_alive()


def done(url: str, request: int, readers: int = 1) -> bool:
    status = next(s for s in LogicalSource(url).backfills() if s.id == request)
    return len(status.readers) >= readers and status.done


def marked(db: Any, got: list[Change], table: str = "t") -> None:
    """Write a marker row and wait until the reader delivered it: it has everything before."""
    db.execute(f"INSERT INTO {table} (data) VALUES ('marker') RETURNING id")
    key = db.fetchone()[0]
    wait_for(lambda: any(c.pk == key and not c.snapshot for c in got))


def replay(changes: list[Change]) -> dict[Any, Any]:
    """``{pk: after}`` as a consumer applying every change in order ends with (an update
    that moves a row of ``t`` to a new ``id`` goes from the old one, its before image's)."""
    state: dict[Any, Any] = {}
    for change in changes:
        if change.action == "delete":
            state.pop(change.pk, None)
            continue
        old = (change.before or {}).get("id")
        if change.action == "update" and old is not None and old != change.pk:
            state.pop(old, None)
        state[change.pk] = change.after
    return state


def test_where_and_a_composite_key_with_a_collation(url: str, db: Any, tmp_path: Path) -> None:
    db.execute(
        'CREATE TABLE t (region TEXT COLLATE "C", id INT, data TEXT, at TIMESTAMPTZ, '
        "PRIMARY KEY (region, id))"
    )
    db.execute(
        "INSERT INTO t SELECT (ARRAY['b', 'B', 'a', 'Ä', 'z z'])[g % 5 + 1], g, 's' || g, "
        "'2024-01-01'::timestamptz + g * interval '1 minute' FROM generate_series(1, 2000) g"
    )
    with relay(url, tmp_path, ["t"]) as got:
        request = LogicalSource(url).backfill(["t"], where="id % 3 = 0 AND data <> 's3'", chunk=70)
        wait_for(lambda: done(url, request))
        db.execute("UPDATE t SET data = 'moved' WHERE region = 'z z' AND id = 9")
        wait_for(lambda: any(not c.snapshot for c in got))
    read = [c for c in got if c.snapshot]
    db.execute("SELECT region, id, data, at FROM t WHERE id % 3 = 0 AND id <> 3")
    expected = {(r, i): {"region": r, "id": i, "data": d, "at": a} for r, i, d, a in db}
    assert {c.pk: c.after for c in read} == {
        k: v | ({"data": "s9"} if k == ("z z", 9) else {}) for k, v in expected.items()
    }
    assert len(read) == len(expected)  # each row once
    assert {(c.action, c.schema, c.table, c.source, c.txid) for c in read} == {
        ("write", "public", "t", "postgres", f"backfill:{request}")
    }
    streamed = next(c for c in got if not c.snapshot)
    assert streamed.pk == ("z z", 9)
    assert [type(v) for v in streamed.pk] == [type(v) for v in read[0].pk] == [str, int]
    assert not [c for c in got if c.table == "rowcast_signal"]
    (status,) = LogicalSource(url).backfills()
    assert status.where == "id % 3 = 0 AND data <> 's3'"
    assert [(r.rows, r.done, r.error) for r in status.readers] == [(len(read), True, None)]


KEYS = {
    "k_int": ("BIGINT", "g * 7 - 1000"),
    "k_text": ("TEXT", "'key ' || g || (ARRAY['', 'a', 'B', 'ß'])[g % 4 + 1]"),
    "k_ctext": ('TEXT COLLATE "C"', "(ARRAY['x', 'X', '_', 'é'])[g % 4 + 1] || g"),
    "k_uuid": ("UUID", "md5(g::text)::uuid"),
    "k_ts": ("TIMESTAMP", "'2020-02-29 12:00'::timestamp + g * interval '37 seconds 1 ms'"),
    "k_tstz": ("TIMESTAMPTZ", "'2020-02-29 12:00+05'::timestamptz - g * interval '1 hour'"),
    "k_num": ("NUMERIC(12, 3)", "g / 7.0"),
}


def test_keys_of_every_common_type(url: str, db: Any, tmp_path: Path) -> None:
    for name, (kind, value) in KEYS.items():
        db.execute(f"CREATE TABLE {name} (k {kind} PRIMARY KEY, data TEXT)")
        db.execute(f"INSERT INTO {name} SELECT {value}, 's' || g FROM generate_series(1, 300) g")
    with relay(url, tmp_path, ["k_*"]) as got:
        request = LogicalSource(url).backfill(["k_*"], chunk=45)
        wait_for(lambda: done(url, request))
        tables = {}
        psycopg2.extras.register_uuid(None, db)  # read as the stream reads them
        for name in KEYS:  # then the stream's pk of a row, beside the backfill's
            db.execute(f"SELECT k, data FROM {name}")
            tables[name] = dict(db.fetchall())
            first = f"(SELECT k FROM {name} ORDER BY k LIMIT 1)"
            db.execute(f"UPDATE {name} SET data = 'x' WHERE k = {first}")
        wait_for(lambda: len([c for c in got if not c.snapshot]) == len(KEYS))
    for name, table in tables.items():
        read = [c for c in got if c.snapshot and c.table == name]
        assert {c.pk: c.after["data"] for c in read} == table, name
        assert len(read) == len(table) == 300, name
        streamed = next(c for c in got if not c.snapshot and c.table == name)
        assert streamed.pk in table, name  # the same value, of the same type
        assert type(streamed.pk) is type(read[0].pk), name
    assert isinstance(next(c.pk for c in got if c.table == "k_uuid"), uuid.UUID)
    assert isinstance(next(c.pk for c in got if c.table == "k_ts"), dt.datetime)


def test_values_python_cannot_hold_are_the_ones_the_stream_gives(
    url: str, db: Any, tmp_path: Path
) -> None:
    """A chunk with a value its loader refuses (read whole, in C) is read row by row, as
    the stream reads it: that value as the server's text, the others typed."""
    db.execute("CREATE TABLE odd (id INT PRIMARY KEY, d DATE, n NUMERIC)")
    db.execute("INSERT INTO odd VALUES (1, '2024-01-02', 1.5), (2, 'infinity', 2), (3, NULL, 3)")
    with relay(url, tmp_path, ["odd"]) as got:
        request = LogicalSource(url).backfill(["odd"], chunk=10)
        wait_for(lambda: done(url, request))
        db.execute("INSERT INTO odd VALUES (4, 'infinity', 4)")
        wait_for(lambda: any(not c.snapshot for c in got))
    read = {c.pk: c.after for c in got if c.snapshot}
    streamed = next(c for c in got if not c.snapshot)
    assert read[1]["d"] == dt.date(2024, 1, 2)
    assert read[3]["d"] is None
    assert read[2]["d"] == streamed.after["d"] == "infinity"
    assert type(read[2]["n"]) is type(streamed.after["n"])


class Writer(threading.Thread):
    """Updates, deletes and inserts random rows of ``t`` until `finish`."""

    def __init__(self, connect: Callable[[], Any], rows: int) -> None:
        super().__init__(daemon=True)
        self.conn = connect()
        self.done, self.writes, self.random = threading.Event(), 0, random.Random(7)
        self.rows = rows

    def run(self) -> None:
        cur = self.conn.cursor()
        while not self.done.is_set():
            op, key = self.random.random(), self.random.randint(1, self.rows)
            if op < 0.5:
                cur.execute("UPDATE t SET data = %s WHERE id = %s", (f"u{self.writes}", key))
            elif op < 0.7:  # the key moves: the old one is gone
                with contextlib.suppress(psycopg2.errors.UniqueViolation):
                    cur.execute("UPDATE t SET id = id + 100000 WHERE id = %s", (key,))
            elif op < 0.9:
                cur.execute("DELETE FROM t WHERE id = %s", (key,))
            else:
                cur.execute(
                    "INSERT INTO t (id, data) VALUES (%s, 'i') ON CONFLICT DO NOTHING", (key,)
                )
            self.writes += 1
            time.sleep(0.0005)

    def finish(self) -> None:
        self.done.set()
        self.join(30)
        self.conn.close()


def test_rows_changed_and_deleted_during_a_backfill_end_as_the_table(
    url: str, db: Any, tmp_path: Path
) -> None:
    rows = 4000
    db.execute("CREATE TABLE t (id SERIAL PRIMARY KEY, data TEXT)")
    db.execute(f"INSERT INTO t SELECT g, 's' || g FROM generate_series(1, {rows}) g")
    db.execute(f"SELECT setval('t_id_seq', {rows * 1000})")

    def connect() -> Any:
        conn = psycopg2.connect(url)
        conn.autocommit = True
        return conn

    writer = Writer(connect, rows)
    with relay(url, tmp_path, ["t"]) as got:
        writer.start()
        try:
            time.sleep(0.3)
            before = writer.writes
            request = LogicalSource(url).backfill(["t"], chunk=50)
            wait_for(lambda: done(url, request), seconds=120)
            during = writer.writes - before
        finally:
            writer.finish()
        marked(db, got)
    db.execute("SELECT id, data FROM t")
    table = {key: {"id": key, "data": data} for key, data in db.fetchall()}
    assert replay(got) == table  # every row as the table has it: none went back in time
    read = [c for c in got if c.snapshot]
    assert during > 200, "the writer barely ran during the backfill: the test proves nothing"
    # each row read once; the writer's moved and inserted rows may be read too
    assert len({c.pk for c in read}) == len(read)
    assert 0 < len(read) <= rows + during


def test_a_cancelled_backfill_stops_and_the_stream_goes_on(
    url: str, db: Any, tmp_path: Path
) -> None:
    db.execute("CREATE TABLE t (id SERIAL PRIMARY KEY, data TEXT)")
    db.execute("INSERT INTO t (data) SELECT 's' || g FROM generate_series(1, 5000) g")
    with relay(url, tmp_path, ["t"], slow=0.002) as got:
        source = LogicalSource(url)
        request = source.backfill(["t"], chunk=40)
        wait_for(lambda: any(c.snapshot for c in got))
        source.cancel_backfill(request)
        wait_for(lambda: done(url, request))
        (status,) = source.backfills()
        assert status.cancelled
        assert [(r.cancelled, r.done) for r in status.readers] == [(True, True)]
        read = len([c for c in got if c.snapshot])
        marked(db, got)
        assert len([c for c in got if c.snapshot]) == read < 5000
        with pytest.raises(ConfigError, match="there is no backfill 99"):
            source.cancel_backfill(99)


def test_a_table_without_a_key_is_refused_with_the_fix(url: str, db: Any) -> None:
    db.execute("CREATE TABLE keyed (id INT PRIMARY KEY)")
    db.execute("CREATE TABLE nokey (a INT, b TEXT)")
    db.execute("CREATE TABLE fullnokey (a INT, b TEXT)")
    db.execute("ALTER TABLE fullnokey REPLICA IDENTITY FULL")
    source = LogicalSource(url)
    for name in ("nokey", "fullnokey"):
        with pytest.raises(ConfigError) as error:
            source.backfill([name])
        assert f"public.{name} has no primary key" in str(error.value)
        assert f"Fix: ALTER TABLE public.{name} ADD PRIMARY KEY" in str(error.value)
    with pytest.raises(ConfigError, match=r"'nosuch' matches no table of this database.*keyed"):
        source.backfill(["nosuch"])
    with pytest.raises(ConfigError, match=r"--where 'no_column > 1' fails on public\.keyed"):
        source.backfill(["keyed"], where="no_column > 1")
    assert source.backfills() == []  # nothing was recorded


def test_a_users_publication_without_the_signal_table_is_refused_with_the_fix(
    url: str, db: Any, tmp_path: Path
) -> None:
    db.execute("CREATE TABLE t (id INT PRIMARY KEY, data TEXT)")
    db.execute("CREATE TABLE other (id INT PRIMARY KEY)")
    db.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    db.execute("CREATE PUBLICATION mine FOR TABLE t")
    SignalTable(lambda: db.connection, "postgresql").create()  # before the publication has it
    source = LogicalSource(f"{url}?publication=mine")
    with pytest.raises(ConfigError) as error:
        source.backfill(["t"])
    assert "publication mine lacks public.rowcast_signal" in str(error.value)
    assert "Fix: ALTER PUBLICATION mine ADD TABLE public.rowcast_signal;" in str(error.value)
    with pytest.raises(ConfigError, match="'other' matches no table of publication mine"):
        source.backfill(["other"])
    db.execute("ALTER PUBLICATION mine ADD TABLE rowcast_signal")
    with relay(f"{url}?publication=mine", tmp_path, None) as got:
        request = source.backfill(["t"])
        wait_for(lambda: done(url, request))
    assert [(c.pk, c.snapshot) for c in got] == [(1, True), (2, True)]


def published(db: Any, publication: str) -> set[str]:
    db.execute("SELECT tablename FROM pg_publication_tables WHERE pubname = %s", (publication,))
    return {str(t) for (t,) in db.fetchall()}


def test_the_signal_table_is_published_but_never_snapshotted_nor_delivered(
    url: str, db: Any, tmp_path: Path
) -> None:
    db.execute("CREATE TABLE t (id INT PRIMARY KEY, data TEXT)")
    db.execute("INSERT INTO t VALUES (1, 'a')")
    slot = f"rc_pgbf_{RUN}_a"
    with relay(url, tmp_path, ["t"], name="a", slot=slot):
        pass  # its publication is made before rowcast_signal is
    assert published(db, slot) == {"t"}
    LogicalSource(url).backfill(["t"])  # makes rowcast_signal, adds it to rowcast's publications
    assert published(db, slot) == {"t", "rowcast_signal"}
    db.execute(f"ALTER PUBLICATION {slot} DROP TABLE rowcast_signal")
    with relay(url, tmp_path, ["t"], name="a", slot=slot):
        # a reader starting with its own publication adds it again
        wait_for(lambda: published(db, slot) == {"t", "rowcast_signal"})
    slot = f"rc_pgbf_{RUN}_b"
    with relay(url, tmp_path, None, slot=slot, snapshot="initial") as got:
        wait_for(lambda: bool(got))
        assert published(db, slot) == {"t", "rowcast_signal"}  # made with it
    assert [(c.table, c.pk) for c in got] == [("t", 1)]
    db.execute("SELECT count(*) FROM rowcast_signal")
    assert db.fetchone()[0] >= 1  # the request is there: it was not snapshotted


def test_a_reader_backfills_only_the_tables_it_captures(url: str, db: Any) -> None:
    db.execute("CREATE TABLE a (id INT PRIMARY KEY)")
    db.execute("CREATE TABLE b (id INT PRIMARY KEY)")
    reads = LogicalSource(url, tables=["a"])._backfill_reads()
    try:
        # its stream carries no change of b: the watermarks could not guard b's rows
        assert reads.tables(["*"]) == [("public", "a")]
        assert reads.tables(["b"]) == []  # another reader's
        with pytest.raises(ConfigError, match="'c' matches no table"):
            reads.tables(["c"])
        db.execute("CREATE TABLE nokey (v INT)")
        assert reads.tables(["*"]) == [("public", "a")]  # another reader's table: not refused
    finally:
        reads.close()

"""TriggerSource on real SQLite files, written by this process and by others.

`TestTriggerSource` runs the `SourceContract` (no server needed); the rest is
what only the trigger source does: ts from seals, SQLite's own types and keys,
layouts and spills, pruning, several processes on one file.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from rowcast import Change, ConfigError, Hub, SourceError
from rowcast.checkpoint import open_checkpoint
from rowcast.sources import open_source
from rowcast.sources.base import diagnose
from rowcast.sources.sqlite import TriggerSource, uninstall
from rowcast.testing import SourceContract
from rowcast.testing.backfill import BackfillContract
from tests.conftest import wait_for
from tests.sources.seed import SEED, SEED_EVENTS, events


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """A WAL database with a `test` table."""
    return fresh(tmp_path / "app.db")


def fresh(file: Path) -> Path:
    with contextlib.closing(sqlite3.connect(file, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE test (id INTEGER PRIMARY KEY, data TEXT)")
    return file


def schema_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA schema_version").fetchone()[0])


@pytest.fixture
def db(path: Path) -> Iterator[sqlite3.Connection]:
    """The app's connection (autocommit; BEGIN by hand)."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    yield conn
    conn.close()


def url(path: Path) -> str:
    return f"sqlite:///{path}"


@contextlib.contextmanager
def streaming(source: TriggerSource) -> Iterator[list[list[Change]]]:
    """Run `source` in a thread while inside; yields the transactions it publishes so far."""
    got: list[list[Change]] = []
    hub = Hub()
    hub.signal("commit").connect(lambda sender, changes: got.append(changes), weak=False)
    thread = threading.Thread(target=source.run, args=(hub,))
    thread.start()
    try:
        wait_for(lambda: source.position is not None)  # installed and reading
        yield got
    finally:
        source.stop()
        thread.join(15)
    assert not thread.is_alive()


def read(path: Path, start: str = "start", **options: Any) -> list[list[Change]]:
    return list(TriggerSource(url(path), start=start, end="now", **options))


class TestTriggerSource(SourceContract, BackfillContract):
    merges_transactions = True  # commits back to back, with no reader between, come as one

    @pytest.fixture
    def database(self, tmp_path: Path) -> None:
        self.path = fresh(tmp_path / "contract.db")
        TriggerSource(url(self.path)).install()

    def make_source(self, **options: Any) -> TriggerSource:
        return TriggerSource(url(self.path), poll=0.02, **options)

    def start_position(self) -> str:
        return "start"  # a fresh file: only this test's rows

    def execute(self, statements: Sequence[str], *, transaction: bool = False) -> None:
        with contextlib.closing(sqlite3.connect(self.path, isolation_level=None)) as conn:
            for statement in ["BEGIN", *statements, "COMMIT"] if transaction else statements:
                conn.execute(statement)

    def table_rows(self) -> dict[Any, str]:
        with contextlib.closing(sqlite3.connect(self.path)) as conn:
            return dict(conn.execute("SELECT id, data FROM test"))

    def misconfigured_source(self) -> TriggerSource:
        """Changes of an older rowcast: a file to clean up first."""
        older = fresh(self.path.parent / "older.db")
        with contextlib.closing(sqlite3.connect(older, isolation_level=None)) as conn:
            conn.execute(f"CREATE TABLE rowcast_changes ({OLDER_FORMATS['json images']})")
        return TriggerSource(url(older))


def test_ts_is_when_a_reader_first_found_the_commit_and_every_reader_agrees(
    path: Path, db: sqlite3.Connection
) -> None:
    """The triggers read no clock (see _sqlite_triggers): the seal of a group does."""
    TriggerSource(url(path)).install()
    db.execute(SEED[0])
    written = time.time()
    time.sleep(0.3)  # no reader runs
    before = time.time()
    (first,) = read(path)
    assert before - 0.002 <= first[0].ts <= time.time() + 0.002
    assert first[0].ts >= written + 0.29
    assert [tx[0].ts for tx in read(path)] == [first[0].ts]  # sealed once, read alike
    with streaming(TriggerSource(url(path), poll=0.02)) as got:
        db.execute(SEED[1])
        committed = time.time()
        wait_for(lambda: len(got) == 1)
    assert committed - 0.002 <= got[0][0].ts <= committed + 1.0  # within a poll, unloaded


def test_seed_stamps_names_and_seqs_and_a_later_reader_groups_alike(
    path: Path, db: sqlite3.Connection
) -> None:
    TriggerSource(url(path)).install()  # capture from now on (a tail's triggers go with it)
    with streaming(TriggerSource(url(path))) as got:
        started = time.time()
        for count, statement in enumerate(SEED, 1):
            db.execute(statement)
            wait_for(lambda: len(got) == count)  # noqa: B023
        ended = time.time()
    assert events(got) == SEED_EVENTS
    stamps = [tx[0].ts for tx in got]
    assert stamps == sorted(stamps)
    assert started - 0.002 <= stamps[0]  # UTC epoch seconds, to the millisecond
    assert stamps[-1] <= ended + 0.002
    for tx in got:
        assert len({c.ts for c in tx}) == 1
        assert (tx[0].source, tx[0].schema) == ("sqlite", "main")
    assert [int(tx[-1].position or 0) for tx in got] == sorted(
        {int(tx[-1].position or 0) for tx in got}
    )
    # a later reader sees the same transactions: the ends were recorded
    assert [[c.txid for c in tx] for tx in read(path)] == [[c.txid for c in tx] for tx in got]


def test_rollbacks_and_savepoints_leave_nothing(path: Path, db: sqlite3.Connection) -> None:
    TriggerSource(url(path)).install()
    db.execute("BEGIN")
    db.execute("INSERT INTO test (data) VALUES ('gone')")
    db.execute("ROLLBACK")
    db.execute("BEGIN")
    db.execute("INSERT INTO test (data) VALUES ('kept')")
    db.execute("SAVEPOINT sp")
    db.execute("INSERT INTO test (data) VALUES ('dropped')")
    db.execute("ROLLBACK TO sp")
    db.execute("INSERT INTO test (data) VALUES ('after')")
    db.execute("COMMIT")
    (tx,) = read(path)
    assert [c.after["data"] for c in tx if c.after] == ["kept", "after"]


def test_values_keep_their_sqlite_type_and_every_bit(path: Path, db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE rc_types (id INTEGER PRIMARY KEY, v, t TEXT, r REAL, b BLOB)")
    TriggerSource(url(path)).install()
    values: list[Any] = [
        2**63 - 1,
        -(2**63),
        0.1 + 0.2,
        1e308 * 10,
        -1e308 * 10,
        5e-324,
        'héllo 😀 "quoted" \\ \n',
        "a NUL \x00 inside",  # quote() and printf() would cut the text there
        '["r", "1.5"]',  # text that looks like a tag stays text
        b"",
        b"\x00\xff rowcast",
        None,
    ]
    db.executemany("INSERT INTO rc_types (v) VALUES (?)", [(v,) for v in values])
    db.execute("INSERT INTO rc_types (id, t, r, b) VALUES (100, '42', 1, 'text in a blob column')")
    changes = [c for tx in read(path) for c in tx]
    got = [c.after["v"] for c in changes[:-1] if c.after]
    for want, have in zip(values, got, strict=True):
        assert type(have) is type(want)
        assert have == want
    assert changes[-1].after == {
        "id": 100,
        "v": None,
        "t": "42",
        "r": 1.0,
        "b": "text in a blob column",
    }
    assert type(changes[-1].after["r"]) is float  # REAL affinity made 1 a float: kept
    assert Change.from_json(changes[5].to_json()) == changes[5]


def test_what_sqlite_itself_does_not_keep(path: Path, db: sqlite3.Connection) -> None:
    """NaN is stored as NULL; -0.0 keeps its sign (the triggers copy values, never print them)."""
    db.execute("CREATE TABLE rc_limits (id INTEGER PRIMARY KEY, v)")
    TriggerSource(url(path)).install()
    db.executemany("INSERT INTO rc_limits (v) VALUES (?)", [(float("nan"),), (-0.0,)])
    stored = [v for (v,) in db.execute("SELECT v FROM rc_limits ORDER BY id")]
    assert stored[0] is None
    assert math.copysign(1.0, stored[1]) == -1.0  # the app reads -0.0 back
    got = [c.after["v"] for tx in read(path) for c in tx if c.after]
    assert got[0] is None
    assert got[1] == 0.0
    assert type(got[1]) is float
    assert math.copysign(1.0, got[1]) == -1.0


def test_keys_composite_blob_rowid_and_without_rowid(path: Path, db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE rc_pair (a TEXT, b BLOB, n INT, PRIMARY KEY (b, a)) WITHOUT ROWID")
    db.execute("CREATE TABLE rc_nokey (x TEXT)")
    db.execute("CREATE TABLE rc_shadow (rowid TEXT, x TEXT)")  # a column hides the name rowid
    TriggerSource(url(path)).install()
    db.execute("INSERT INTO rc_pair VALUES ('k', x'01', 1)")
    db.execute("UPDATE rc_pair SET n = 2")
    db.execute("INSERT INTO rc_nokey VALUES ('one'), ('two')")
    db.execute("DELETE FROM rc_nokey WHERE x = 'one'")
    db.execute("INSERT INTO rc_shadow VALUES ('r', 'x')")
    changes = [c for tx in read(path) for c in tx]
    assert [(c.name, c.pk) for c in changes] == [
        ("rc_pair_write", (b"\x01", "k")),  # in the key's order, not the columns'
        ("rc_pair_update", (b"\x01", "k")),
        ("rc_nokey_write", 1),
        ("rc_nokey_write", 2),
        ("rc_nokey_delete", 1),
        ("rc_shadow_write", 1),
    ]
    assert changes[4].before == {"x": "one"}


def test_a_table_with_more_columns_than_a_function_takes(
    path: Path, db: sqlite3.Connection
) -> None:
    columns = [f"c{i}" for i in range(130)]
    db.execute(f"CREATE TABLE rc_wide (id INTEGER PRIMARY KEY, {', '.join(columns)})")
    TriggerSource(url(path)).install()
    row = [f"v}}{i}" if i % 3 else i * 1.5 for i in range(130)]
    db.execute(f"INSERT INTO rc_wide VALUES (1, {', '.join('?' * 130)})", row)
    ((change,),) = read(path)
    assert change.after == {"id": 1, **dict(zip(columns, row, strict=True))}


def test_a_table_too_wide_to_capture_is_named_and_can_be_left_out(
    path: Path, db: sqlite3.Connection
) -> None:
    """An update's images take twice the columns: past SQLite's column limit, nothing installs."""
    db.execute(
        f"CREATE TABLE rc_huge (id INTEGER PRIMARY KEY, {', '.join(f'c{i}' for i in range(1200))})"
    )
    with pytest.raises(ConfigError, match=r"'rc_huge' has 1201 columns.*tables="):
        TriggerSource(url(path)).install()
    assert db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'").fetchone() == (
        0,
    )
    TriggerSource(url(path), tables=["test"]).install()
    db.execute("INSERT INTO test (data) VALUES ('x')")
    assert [c.name for tx in read(path, tables=["test"]) for c in tx] == ["test_write"]


def test_old_rows_keep_the_columns_they_were_written_with(
    path: Path, db: sqlite3.Connection
) -> None:
    TriggerSource(url(path)).install()
    db.execute("INSERT INTO test (data) VALUES ('first')")
    db.execute("ALTER TABLE test ADD COLUMN extra INT DEFAULT 7")
    TriggerSource(url(path)).install()
    db.execute("UPDATE test SET extra = 8")
    assert TriggerSource(url(path)).install() == []  # nothing changed: no trigger, no layout
    changes = [c for tx in read(path) for c in tx]
    assert [(c.before, c.after) for c in changes] == [
        (None, {"id": 1, "data": "first"}),
        ({"id": 1, "data": "first", "extra": 7}, {"id": 1, "data": "first", "extra": 8}),
    ]
    assert db.execute("SELECT count(*) FROM rowcast_layouts").fetchone() == (6,)


def test_a_row_of_an_unknown_layout_is_refused_not_skipped(
    path: Path, db: sqlite3.Connection
) -> None:
    TriggerSource(url(path)).install()
    db.execute("INSERT INTO test (data) VALUES ('x')")
    db.execute("INSERT INTO rowcast_changes (layout) VALUES (999)")
    with pytest.raises(SourceError, match=r"malformed.*by hand"):
        read(path)


OLDER_FORMATS = {
    "json images": "seq INTEGER PRIMARY KEY, tbl TEXT, op TEXT, pk TEXT, before TEXT, "
    "after TEXT, ts REAL, tc INTEGER, sealed INTEGER",
    "writer's clock": "seq INTEGER PRIMARY KEY, layout INTEGER NOT NULL, ts REAL NOT NULL, "
    "tc INTEGER, sealed INTEGER, v0, v1",
}


@pytest.mark.parametrize("columns", OLDER_FORMATS.values(), ids=OLDER_FORMATS.keys())
def test_changes_of_an_older_rowcast_are_refused_with_what_to_do(
    path: Path, db: sqlite3.Connection, columns: str
) -> None:
    db.execute(f"CREATE TABLE rowcast_changes ({columns})")
    with pytest.raises(ConfigError, match=r"older rowcast.*uninstall URL --yes"):
        TriggerSource(url(path)).install()
    failed = {c.name: c for c in diagnose(url(path)).checks if not c.ok}
    assert "rowcast uninstall URL --yes" in failed["rowcast_changes format"].fix
    assert failed["rowcast_changes format"].value == "an older rowcast's format"
    uninstall(url(path), drop_changes=True)
    TriggerSource(url(path)).install()
    db.execute("INSERT INTO test (data) VALUES ('x')")
    assert [c.name for tx in read(path) for c in tx] == ["test_write"]


def test_an_update_that_moves_a_hidden_rowid_is_a_delete_and_a_write(
    path: Path, db: sqlite3.Connection
) -> None:
    """No image holds a hidden rowid: the old key would be lost in an update."""
    db.execute("CREATE TABLE rc_nokey (x TEXT)")
    TriggerSource(url(path)).install()
    db.execute("INSERT INTO rc_nokey VALUES ('one')")
    db.execute("UPDATE rc_nokey SET x = 'two'")
    db.execute("UPDATE rc_nokey SET rowid = 10, x = 'three'")
    changes = [c for tx in read(path) for c in tx]
    assert [(c.name, c.pk, c.before, c.after) for c in changes] == [
        ("rc_nokey_write", 1, None, {"x": "one"}),
        ("rc_nokey_update", 1, {"x": "one"}, {"x": "two"}),
        ("rc_nokey_delete", 1, {"x": "two"}, None),
        ("rc_nokey_write", 10, None, {"x": "three"}),
    ]
    assert len({c.txid for c in changes[2:]}) == 1


def test_wide_tables_spill_and_are_pruned_and_dropped_with_the_rest(
    path: Path, db: sqlite3.Connection
) -> None:
    columns = [f"c{i}" for i in range(40)]  # an update's 82 values spill, a write's 41 do not
    db.execute(f"CREATE TABLE rc_wide (id INTEGER PRIMARY KEY, {', '.join(columns)})")
    TriggerSource(url(path)).install()
    row = [b"\x00blob" if i % 2 else i * 0.1 for i in range(40)]
    db.execute(f"INSERT INTO rc_wide VALUES (1, {', '.join('?' * 40)})", row)
    db.execute("UPDATE rc_wide SET c0 = -0.0, id = 2")
    db.execute("DELETE FROM rc_wide")
    image = {"id": 1, **dict(zip(columns, row, strict=True))}
    moved = {**image, "id": 2, "c0": -0.0}
    changes = [c for tx in read(path) for c in tx]
    assert [(c.name, c.pk, c.before, c.after) for c in changes] == [
        ("rc_wide_write", 1, None, image),
        ("rc_wide_update", 2, image, moved),
        ("rc_wide_delete", 2, moved, None),
    ]
    assert math.copysign(1.0, changes[1].after["c0"]) == -1.0
    spills = [
        n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE name GLOB 'rowcast_spill_*'")
    ]
    assert len(spills) == 1  # the update's: a write's or a delete's 41 values stay inline
    db.execute("INSERT INTO test (data) VALUES ('newest')")  # pruning never takes the newest
    checkpoint = open_checkpoint(str(path.parent / "cp.json"))
    source = TriggerSource(url(path), start="start", end="now", checkpoint=checkpoint, retain=0)
    assert sum(len(tx) for tx in source) == 4
    checkpoint.save(source.position or "")
    assert source.prune() == 3
    assert [db.execute(f"SELECT count(*) FROM {n}").fetchone()[0] for n in spills] == [0]
    uninstall(url(path), drop_changes=True)
    assert not db.execute("SELECT name FROM sqlite_master WHERE name GLOB 'rowcast_*'").fetchall()


def test_a_checkpoint_of_dropped_changes_is_refused(
    path: Path, db: sqlite3.Connection, tmp_path: Path
) -> None:
    checkpoint = open_checkpoint(str(tmp_path / "cp.json"))
    for data in "abc":
        db.execute("INSERT INTO test (data) VALUES (?)", (data,))
    TriggerSource(url(path)).install()
    for data in "def":
        db.execute("INSERT INTO test (data) VALUES (?)", (data,))
    TriggerSource(url(path), start="start", end="now", checkpoint=checkpoint).run(Hub())
    assert checkpoint.load() == "3"
    uninstall(url(path), drop_changes=True)
    TriggerSource(url(path)).install()
    for data in "ghijk":  # seqs 1-5 again: position 3 would skip g, h, i
        db.execute("INSERT INTO test (data) VALUES (?)", (data,))
    with pytest.raises(ConfigError, match=r"no record of that reader.*remove the checkpoint"):
        TriggerSource(url(path), end="now", checkpoint=checkpoint).run(Hub())


def page_bytes(file: Path) -> int:
    with contextlib.closing(sqlite3.connect(file, isolation_level=None)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (count,) = conn.execute("PRAGMA page_count").fetchone()
        (size,) = conn.execute("PRAGMA page_size").fetchone()
    return int(count * size)


def test_a_narrow_tables_changes_do_not_pay_for_the_widest_captured_table(
    tmp_path: Path,
) -> None:
    """Every rowcast_changes row stores all its v columns (SQLite keeps trailing NULLs).

    Capturing one 300-column table makes every change of a 2-column table store
    ~600 NULL columns: measured with a 990-column table, 20,000 inserts of a
    2-column table wrote 41.4 MB instead of 0.8 MB, took 9x as long, and the
    reader took 23x as long (SELECT * materializes every NULL).
    """
    sizes = []
    for name, wide in (("narrow", 0), ("wide", 300)):
        file = fresh(tmp_path / f"{name}.db")
        with contextlib.closing(sqlite3.connect(file, isolation_level=None)) as conn:
            if wide:
                columns = ", ".join(f"c{i}" for i in range(wide))
                conn.execute(f"CREATE TABLE rc_wide (id INTEGER PRIMARY KEY, {columns})")
            TriggerSource(url(file)).install()
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO test (data) VALUES (?)", [("x",)] * 2000)
            conn.execute("COMMIT")
        sizes.append(page_bytes(file))
    narrow, wide_ = sizes
    assert wide_ <= 2 * narrow, f"{narrow} bytes without the wide table, {wide_} with it"


def test_capturing_a_wide_table_widens_rowcast_changes_in_few_schema_changes(
    path: Path, db: sqlite3.Connection
) -> None:
    """One ALTER TABLE ADD COLUMN per slot, each a schema reload and check, under the write lock.

    The install holds BEGIN IMMEDIATE throughout, so the app's writers wait:
    measured, a 990-column table took 6.0 s to install on its own, a 500-column
    one 19.5 s beside 200 captured 10-column tables (past sqlite3's default 5 s
    busy timeout: the app's writes fail with "database is locked").
    """
    TriggerSource(url(path)).install()
    columns = ", ".join(f"c{i}" for i in range(300))
    db.execute(f"CREATE TABLE rc_wide (id INTEGER PRIMARY KEY, {columns})")
    before = schema_version(db)
    TriggerSource(url(path)).install()
    bumps = schema_version(db) - before
    assert bumps <= 20, f"{bumps} schema changes to capture one table"


def test_dropping_the_changes_under_a_running_reader_is_not_a_silent_gap(
    path: Path, db: sqlite3.Connection
) -> None:
    """After uninstall --drop-changes, seqs start at 1 again; a running reader's cursor does not.

    The reader re-creates the tables itself, then skips every new row up to its
    old position, silently. It must deliver them or fail, never skip them.
    """
    source = TriggerSource(url(path))
    got: list[Change] = []
    failed: list[BaseException] = []
    hub = Hub()
    hub.connect(got.append)

    def run() -> None:
        try:
            source.run(hub)
        except Exception as e:  # failing (a SourceError, say) is as good as delivering
            failed.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_for(lambda: source.position is not None)
        for data in "abcde":
            db.execute("INSERT INTO test (data) VALUES (?)", (data,))
        wait_for(lambda: source.position == "5")
        uninstall(url(path), drop_changes=True)
        wait_for(lambda: triggers(db) == 3 or not thread.is_alive())  # the reader re-installs
        for data in "fghijkl":
            db.execute("INSERT INTO test (data) VALUES (?)", (data,))
        wait_for(lambda: source.position == "7" or not thread.is_alive())
    finally:
        source.stop()
        thread.join(15)
    assert not thread.is_alive()
    delivered = [c.after["data"] for c in got if c.after]
    assert failed or delivered == list("abcdefghijkl"), delivered


def triggers(db: sqlite3.Connection) -> int:
    (count,) = db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'").fetchone()
    return int(count)


def test_two_processes_writing_transactions_at_once(path: Path) -> None:
    """Every transaction arrives whole, in commit order, once; none is lost."""
    script = textwrap.dedent(
        """
        import sqlite3, sys
        name, count = sys.argv[2], int(sys.argv[3])
        conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
        for tx in range(count):
            conn.execute("BEGIN IMMEDIATE")
            for row in range(1 + tx % 4):
                conn.execute("INSERT INTO test (data) VALUES (?)", (f"{name}:{tx}:{row}",))
            conn.execute("COMMIT")
        """
    )
    count = 150
    with streaming(TriggerSource(url(path))) as got:
        writers = [
            subprocess.Popen([sys.executable, "-c", script, str(path), name, str(count)])
            for name in ("p", "q")
        ]
        for writer in writers:
            assert writer.wait(60) == 0
        total = 2 * sum(1 + tx % 4 for tx in range(count))
        wait_for(lambda: sum(map(len, got)) == total)
    seen: dict[str, list[int]] = {"p": [], "q": []}
    rows: dict[tuple[str, int], list[int]] = {}
    for tx in got:
        for change in tx:
            assert change.after is not None
            name, number, row = change.after["data"].split(":")
            rows.setdefault((name, int(number)), []).append(int(row))
        # a transaction is one or more whole transactions: each one starts and ends in it
        keys = dict.fromkeys(tuple(c.after["data"].split(":")[:2]) for c in tx if c.after)
        for name, number in keys:
            assert rows[(name, int(number))] == list(range(1 + int(number) % 4))
            seen[name].append(int(number))
    assert seen == {"p": list(range(count)), "q": list(range(count))}  # each once, in order
    ids = [c.pk for tx in got for c in tx]
    assert ids == sorted(ids)  # commit order
    print(f"{2 * count} transactions came as {len(got)}")


def test_a_writer_killed_mid_transaction_leaves_nothing(path: Path, db: sqlite3.Connection) -> None:
    TriggerSource(url(path)).install()
    script = textwrap.dedent(
        """
        import sqlite3, sys, time
        conn = sqlite3.connect(sys.argv[1], isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO test (data) VALUES (?)", [("lost",)] * 5)
        print("written", flush=True)
        time.sleep(60)
        """
    )
    with streaming(TriggerSource(url(path))) as got:
        writer = subprocess.Popen(
            [sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert writer.stdout is not None
        assert writer.stdout.readline() == "written\n"
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(10)
        writer.stdout.close()
        db.execute("INSERT INTO test (data) VALUES ('after')")
        wait_for(lambda: len(got) == 1)
    assert [c.after["data"] for tx in got for c in tx if c.after] == ["after"]


def test_a_reader_killed_mid_stream_resumes_from_its_checkpoint(
    path: Path, db: sqlite3.Connection, tmp_path: Path
) -> None:
    out, checkpoint = tmp_path / "seen.txt", tmp_path / "checkpoint.json"
    script = textwrap.dedent(
        """
        import sys
        from rowcast import Hub
        from rowcast.checkpoint import open_checkpoint
        from rowcast.sources.sqlite import TriggerSource
        out = open(sys.argv[3], "a")
        hub = Hub()
        hub.connect(lambda change: (out.write(f"{change.pk}\\n"), out.flush()))
        TriggerSource(sys.argv[1], start="start", checkpoint=open_checkpoint(sys.argv[2])).run(hub)
        """
    )
    TriggerSource(url(path)).install()
    reader = subprocess.Popen([sys.executable, "-c", script, url(path), str(checkpoint), str(out)])
    try:
        for i in range(200):
            db.execute("INSERT INTO test (data) VALUES (?)", (str(i),))
            if i == 100:
                wait_for(lambda: out.exists() and len(out.read_text().split()) > 20)
                os.kill(reader.pid, signal.SIGKILL)
    finally:
        reader.kill()
        reader.wait(10)
    hub = Hub()
    before = [int(pk) for pk in out.read_text().split()]
    saved = int(open_checkpoint(str(checkpoint)).load() or 0)
    again: list[int] = []
    hub.connect(lambda change: again.append(change.pk))
    # start= as the killed reader's: it may have died before it first saved a position
    source = TriggerSource(
        url(path), start="start", end="now", checkpoint=open_checkpoint(str(checkpoint))
    )
    source.run(hub)
    assert sorted(set(before + again)) == list(range(1, 201))  # nothing lost
    twice = sorted(set(before) & set(again))  # only the group being published when killed
    assert twice == list(range(saved + 1, saved + 1 + len(twice)))


def test_schema_changes_recreate_the_triggers(path: Path, db: sqlite3.Connection) -> None:
    def trigger(name: str) -> str:
        row = db.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()
        return row[0] if row else ""

    def layout(table: str, op: str, has: str) -> bool:  # made with its triggers
        return bool(
            db.execute(
                "SELECT 1 FROM rowcast_layouts WHERE tbl = ? AND op = ? AND instr(columns, ?)",
                (table, op, has),
            ).fetchone()
        )

    with streaming(TriggerSource(url(path))) as got:
        db.execute("ALTER TABLE test ADD COLUMN extra INT DEFAULT 7")
        wait_for(lambda: '"extra"' in trigger("rowcast_test_insert"))
        db.execute("INSERT INTO test (data) VALUES ('x')")
        db.execute("ALTER TABLE test RENAME COLUMN data TO body")
        wait_for(lambda: layout("test", "update", '"body"'))
        db.execute("UPDATE test SET body = 'y'")
        db.execute("ALTER TABLE test RENAME TO renamed")
        wait_for(lambda: trigger("rowcast_renamed_delete") and not trigger("rowcast_test_delete"))
        db.execute("CREATE TABLE rc_new (id INTEGER PRIMARY KEY)")
        wait_for(lambda: trigger("rowcast_rc_new_insert"))
        db.execute("INSERT INTO rc_new VALUES (5)")
        db.execute("BEGIN")  # a column the triggers name is dropped with them, then back
        for op in ("insert", "update", "delete"):
            db.execute(f"DROP TRIGGER rowcast_renamed_{op}")
        db.execute("ALTER TABLE renamed DROP COLUMN extra")
        db.execute("COMMIT")
        wait_for(lambda: trigger("rowcast_renamed_delete"))
        db.execute("DELETE FROM renamed")
        wait_for(lambda: len(got) == 4)
    changes = [c for tx in got for c in tx]
    assert [(c.name, c.before, c.after) for c in changes] == [
        ("test_write", None, {"id": 1, "data": "x", "extra": 7}),
        ("test_update", {"id": 1, "body": "x", "extra": 7}, {"id": 1, "body": "y", "extra": 7}),
        ("rc_new_write", None, {"id": 5}),
        ("renamed_delete", {"id": 1, "body": "y"}, None),
    ]


def test_dropping_a_column_the_triggers_name_is_refused_by_sqlite(
    path: Path, db: sqlite3.Connection
) -> None:
    TriggerSource(url(path)).install()
    with pytest.raises(sqlite3.OperationalError, match="rowcast_test_"):
        db.execute("ALTER TABLE test DROP COLUMN data")


def test_tables_filter_and_never_its_own(path: Path, db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE rc_other (id INTEGER PRIMARY KEY)")
    db.execute("CREATE TABLE rowcast_mine (id INTEGER PRIMARY KEY)")
    made = TriggerSource(url(path), tables=["main.te*"]).install()
    assert made == ["rowcast_test_insert", "rowcast_test_update", "rowcast_test_delete"]
    made = TriggerSource(url(path)).install()  # all: but not rowcast_* (nor sqlite_*)
    assert made == ["rowcast_rc_other_insert", "rowcast_rc_other_update", "rowcast_rc_other_delete"]
    db.execute("INSERT INTO rc_other VALUES (1)")
    db.execute("INSERT INTO test VALUES (1, 'a')")
    db.execute("INSERT INTO rowcast_mine VALUES (1)")
    assert events(read(path, tables=["test"])) == [("test_write", 1)]
    assert events(read(path)) == [("rc_other_write", 1), ("test_write", 1)]


def test_pruning_keeps_what_a_checkpointed_reader_has_not_passed(
    path: Path, db: sqlite3.Connection, tmp_path: Path
) -> None:
    checkpoint = open_checkpoint(str(tmp_path / "cp.json"))
    source = TriggerSource(url(path), checkpoint=checkpoint, retain=0)
    with streaming(source) as got:
        for data in "abc":
            db.execute("INSERT INTO test (data) VALUES (?)", (data,))
            wait_for(lambda: len(got) == "abc".index(data) + 1)  # noqa: B023
    db.execute("INSERT INTO test (data) VALUES ('d')")  # not read yet
    checkpoint.save(got[1][-1].position or "")  # as if the reader had handled b only
    assert source.prune() == 2
    assert events(read(path)) == [("test_write", 3), ("test_write", 4)]
    with pytest.raises(ConfigError, match="pruned"):
        read(path, start=got[0][-1].position or "")
    # another reader far behind holds every row after its position
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("INSERT INTO rowcast_readers VALUES ('slow', 2, 0)")
    assert TriggerSource(url(path), retain=0).prune() == 0
    db.execute("DELETE FROM rowcast_readers")
    assert TriggerSource(url(path), retain=0).prune() == 1  # c; d is the newest row: kept
    assert read(path) == []  # d is pruned all the same: "start" is after it
    db.execute("INSERT INTO test (data) VALUES ('e')")
    (tx,) = read(path)
    assert tx[0].position == "5"  # seq never goes back
    assert TriggerSource(url(path), retain=3600).prune() == 0


def test_open_source_and_the_url_options(path: Path) -> None:
    source = open_source(f"{url(path)}?tables=test,rc_*&start=start&retain=5")
    assert isinstance(source, TriggerSource)
    assert (source.tables, source.start, source.retain) == (("test", "rc_*"), "start", 5.0)
    assert TriggerSource(f"{url(path)}?start=start", start="now").start == "now"


@pytest.mark.parametrize(
    ("target", "options", "message"),
    [
        ("sqlite://", {}, "in memory"),
        ("sqlite:///:memory:", {}, "in memory"),
        ("sqlite://host/app.db", {}, "malformed"),
        ("sqlite:///{dir}", {}, "directory"),
        ("sqlite:///{dir}/missing.db", {}, "does not exist"),
        ("sqlite:///{db}", {"start": "mysql-bin.000001:4"}, "bad SQLite source start"),
        ("sqlite:///{db}", {"end": "later"}, "bad SQLite source end"),
        ("sqlite:///{db}", {"tables": "test"}, "list of patterns"),
        ("sqlite:///{db}", {"server_id": 5}, "mysql://"),
        ("sqlite:///{db}?retain=forever", {}, "retain"),
        ("sqlite:///{db}", {"retain": -1}, "retain"),
    ],
)
def test_bad_urls_and_options(
    path: Path, target: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        open_source(target.format(dir=path.parent, db=path), **options)


def test_a_position_the_database_does_not_have_is_refused(path: Path) -> None:
    with pytest.raises(ConfigError, match="has no position 99"):
        read(path, start="99")


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not a database" * 100)
    with pytest.raises((ConfigError, Exception), match="not a database"):
        read(bad)
    with pytest.raises(ConfigError, match="not a database"):
        diagnose(url(bad))


def test_diagnose_before_and_after_install(path: Path, db: sqlite3.Connection) -> None:
    report = diagnose(url(path))
    assert all(c.ok for c in report.checks), report.checks  # as a missing slot: no failure
    (triggers_on_test,) = [c for c in report.checks if c.name == "triggers on test"]
    assert "a relay installs them when it starts" in triggers_on_test.value
    TriggerSource(url(path)).install()
    report = diagnose(url(path))
    assert all(c.ok for c in report.checks), report.checks
    assert dict(report.facts)["journal"] == "wal"
    db.execute("ALTER TABLE test ADD COLUMN more TEXT")
    db.execute("PRAGMA journal_mode = DELETE")
    failed = {c.name: c for c in diagnose(url(path)).checks if not c.ok}
    assert failed["triggers on test"].value == "out of date (its columns changed)"
    assert "WAL" in failed["journal_mode"].fix


def test_uninstall_removes_triggers_and_optionally_the_changes(
    path: Path, db: sqlite3.Connection
) -> None:
    db.execute("CREATE TABLE rc_other (id INTEGER PRIMARY KEY)")
    TriggerSource(url(path)).install()
    assert uninstall(url(path), tables=["rc_other"]) == [
        "rowcast_rc_other_delete",
        "rowcast_rc_other_insert",
        "rowcast_rc_other_update",
    ]
    with pytest.raises(ConfigError, match="not both"):
        uninstall(url(path), tables=["test"], drop_changes=True)
    assert len(uninstall(url(path), drop_changes=True)) == 3
    db.execute("INSERT INTO test (data) VALUES ('the app still writes')")
    names = {n for (n,) in db.execute("SELECT name FROM sqlite_master")}
    assert not {n for n in names if n.startswith("rowcast_")}


# ---------------------------------------------------------------- found in review


def test_a_checkpointed_reader_is_protected_from_its_first_read(
    path: Path, db: sqlite3.Connection, tmp_path: Path
) -> None:
    """Another source's prune must not take rows a checkpointed reader has not passed.

    Even when that reader never pruned itself (which used to be the only time a
    reader was recorded in rowcast_readers).
    """
    checkpoint = open_checkpoint(str(tmp_path / "cp.json"))
    with streaming(TriggerSource(url(path), checkpoint=checkpoint, retain=0)) as got:
        db.execute("INSERT INTO test (data) VALUES ('a')")
        wait_for(lambda: len(got) == 1)
    for data in "bcd":
        db.execute("INSERT INTO test (data) VALUES (?)", (data,))
    assert events(read(path)) == [("test_write", n) for n in (1, 2, 3, 4)]  # seals d
    TriggerSource(url(path), retain=0).prune()  # a reader with no checkpoint, tidying up
    later = list(TriggerSource(url(path), checkpoint=checkpoint, end="now"))
    assert [c.after["data"] for tx in later for c in tx if c.after] == ["b", "c", "d"]


_FIRST_GROUP = textwrap.dedent(
    """
    import logging, sys, time
    from rowcast.sources.sqlite import TriggerSource
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for changes in TriggerSource(sys.argv[1], start="start", timeout=float(sys.argv[2])):
        print(changes[-1].position, len(changes), flush=True)
        time.sleep(60)
    """
)


def groups(transactions: list[list[Change]]) -> list[tuple[str | None, int]]:
    """Each transaction as (position, length): what a change's id is made of."""
    return [(tx[-1].position, len(tx)) for tx in transactions]


def first_group_then_kill(path: Path, timeout: float = 30, block: Any = None) -> str:
    """A reader's first transaction as "position length", the reader SIGKILLed right after.

    With `block` (a callable), the reader's stderr is read up to its first warning
    (it could not record a transaction's end: the app holds the write lock) and
    `block()` then runs before the first transaction is read.
    """
    reader = subprocess.Popen(
        [sys.executable, "-c", _FIRST_GROUP, url(path), str(timeout)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout is not None
    assert reader.stderr is not None
    try:
        if block is not None:
            while "could not record" not in (line := reader.stderr.readline()):
                assert line, "the reader ended without a warning"
            block()
        first = reader.stdout.readline()
    finally:
        os.kill(reader.pid, signal.SIGKILL)
        reader.wait(10)
        reader.stdout.close()
        reader.stderr.close()
    return first


def test_a_reader_killed_after_handing_a_group_out_groups_the_same_again(
    path: Path, db: sqlite3.Connection
) -> None:
    TriggerSource(url(path)).install()
    for statement in SEED[:3]:  # no reader runs: no seal between them
        db.execute(statement)
    first = first_group_then_kill(path)
    for statement in SEED[3:]:  # more commits of the same connection, after the kill
        db.execute(statement)
    again = groups(read(path))
    assert first == "{} {}\n".format(*again[0])
    assert sum(n for _, n in again) == len(SEED_EVENTS)
    assert groups(read(path)) == again  # and every reader after it


def test_a_boundary_not_recorded_is_not_handed_out(path: Path, db: sqlite3.Connection) -> None:
    # The app holds the write lock while a reader finds where its snapshot ends: the
    # reader cannot record that boundary, so it must not hand that group out, or a
    # later reader that sees the app's next commit (same connection: nothing tells the
    # two apart) groups both as one, and every change gets another id.
    TriggerSource(url(path)).install()
    for statement in SEED[:2]:
        db.execute(statement)
    db.execute("BEGIN IMMEDIATE")
    db.execute(SEED[2])
    first = first_group_then_kill(path, timeout=0.2, block=lambda: db.execute("COMMIT"))
    again = groups(read(path))
    assert first == "{} {}\n".format(*again[0])
    assert groups(read(path)) == again


def test_stop_while_the_app_holds_the_write_lock(
    path: Path, db: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    TriggerSource(url(path)).install()
    db.execute(SEED[0])
    db.execute("BEGIN IMMEDIATE")
    try:
        source = TriggerSource(url(path), start="start", timeout=0.05)
        with streaming(source) as got:
            wait_for(lambda: "could not record" in caplog.text)  # waiting for the lock
        assert got == []  # its end could not be recorded: not handed out
    finally:
        db.execute("ROLLBACK")
    assert groups(read(path)) == [("1", 1)]


def test_the_doctor_on_changes_of_an_older_rowcast(path: Path, db: sqlite3.Connection) -> None:
    """It says rowcast_changes is not created yet, and that a running source fixes the triggers.

    The old table holds changes not read yet, and a running source refuses it.
    """
    db.execute(
        "CREATE TABLE rowcast_changes (seq INTEGER PRIMARY KEY, tbl TEXT, op TEXT, pk TEXT, "
        "before TEXT, after TEXT, ts REAL, tc INTEGER, sealed INTEGER)"
    )
    db.execute("CREATE TABLE rowcast_readers (name TEXT PRIMARY KEY, position, updated_at)")
    db.execute("CREATE TABLE rowcast_state (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    db.execute(
        "INSERT INTO rowcast_changes VALUES (1, 'test', 'write', '[1]', NULL, "
        """'{"id":1,"data":"x"}', 0, 0, NULL)"""
    )
    for op, row in (("insert", "NEW"), ("update", "NEW"), ("delete", "OLD")):
        db.execute(
            f"CREATE TRIGGER rowcast_test_{op} AFTER {op.upper()} ON test BEGIN "
            "INSERT INTO rowcast_changes (tbl, op, pk, ts) VALUES "
            f"('test', '{op}', json_array({row}.id), 0); END"
        )
    report = diagnose(url(path))
    facts: dict[str, Any] = dict(report.facts)
    assert facts["changes"] != "rowcast_changes not created yet"
    checks = {c.name: c for c in report.checks}
    assert "re-creates them" not in checks["triggers on test"].fix


@pytest.mark.parametrize(("journal", "synchronous"), [("wal", 1), ("delete", 2)])
def test_watermarks_take_no_fsync_each_in_wal_mode_only(
    tmp_path: Path, journal: str, synchronous: int
) -> None:
    # four commits a chunk, each an fsync, held a 1,000,000-row backfill to a fifth of a
    # plain select's speed; in WAL mode the source's durable seal covers them (the module's
    # docstring), in a rollback journal NORMAL could corrupt the file
    from rowcast.sources.sqlite.backfill import SqliteReads

    file = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(file, isolation_level=None)) as conn:
        conn.execute(f"PRAGMA journal_mode = {journal}")
        conn.execute("CREATE TABLE test (id INTEGER PRIMARY KEY, data TEXT)")
    reads = SqliteReads(str(file), url(file), 5.0, lambda name: True)
    signals, requests = reads.signals(durable=False), reads.signals()
    try:
        signals.create()
        assert signals._db().execute("PRAGMA synchronous").fetchone()[0] == synchronous
        # a request (`rowcast backfill` says it is recorded) keeps its fsync
        assert requests._db().execute("PRAGMA synchronous").fetchone()[0] == 2
    finally:
        signals.close()
        requests.close()
        reads.close()

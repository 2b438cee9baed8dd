"""LogicalSource(snapshot="initial") against the real PostgreSQL: rows, keys, seams, slots.

The races with a writer are `SourceContract`'s (tests/sources/test_postgres.py);
here is what only PostgreSQL's snapshot has: the exported snapshot of a tail's
temporary slot, the row images and keys the stream gives, composite and text
keys cut and resumed, a key moved across the cut, keyless tables, and a slot
that is never confirmed past a snapshot's position. Everything runs in a private
database ``rc_pgsnap_<run>``, dropped at the end with its slots.
"""

from __future__ import annotations

import datetime as dt
import itertools
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from rowcast import Change, ConfigError, Hub
from rowcast.checkpoint import open_checkpoint
from rowcast.sources.postgres import LogicalSource
from rowcast.testing.snapshot import replay
from tests.conftest import wait_for
from tests.sources.test_postgres import drop_slot, private_database, table

pytestmark = pytest.mark.server

RUN = secrets.token_hex(3)
_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with private_database(f"rc_pgsnap_{RUN}") as url:
        yield url


@pytest.fixture
def db(base: str) -> Iterator[Any]:
    conn = psycopg2.connect(base)
    conn.autocommit = True
    yield conn.cursor()
    conn.close()


@pytest.fixture
def name(db: Any) -> Iterator[str]:
    """A fresh slot and publication name, both dropped after the test."""
    name = f"rc_pgsnap_{RUN}_{next(_numbers)}"
    yield name
    drop_slot(db, name)
    db.execute(f"DROP PUBLICATION IF EXISTS {name}")


def leftovers(db: Any) -> tuple[list[str], list[str]]:
    """The slots and publications of the private database."""
    db.execute("SELECT slot_name FROM pg_replication_slots WHERE database = current_database()")
    slots = [str(s) for (s,) in db.fetchall()]
    db.execute("SELECT pubname FROM pg_publication")
    return slots, [str(p) for (p,) in db.fetchall()]


def rows(db: Any, name: str, key: str) -> dict[Any, Any]:
    db.execute(f"SELECT {key}, data FROM {name}")
    return dict(db.fetchall())


def confirmed(db: Any, slot: str) -> int:
    db.execute("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    high, low = str(db.fetchone()[0]).split("/")
    return (int(high, 16) << 32) | int(low, 16)


def as_lsn(position: str) -> int:
    """The LSN of a plain position or of a snapshot's (``snapshot:<lsn>:...``)."""
    text = position.removeprefix("snapshot:").split(":", 1)[0]
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


class Running:
    """`source.run` in a thread; `got` is what it published."""

    def __init__(self, source: LogicalSource) -> None:
        self.source, self.got, self.failed = source, [], []  # type: ignore[var-annotated]
        hub = Hub()
        hub.signal("commit").connect(lambda _, changes: self.got.extend(changes), weak=False)
        self.thread = threading.Thread(target=self._run, args=(hub,), daemon=True)
        self.thread.start()

    def _run(self, hub: Hub) -> None:
        try:
            self.source.run(hub)
        except BaseException as error:
            self.failed.append(error)

    def until(self, what: Any) -> None:
        wait_for(lambda: self.failed or any(what(c) for c in self.got[-50:]))
        assert not self.failed, self.failed

    def stop(self) -> None:
        self.source.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()
        if self.failed:
            raise self.failed[0]


def test_a_tail_reads_the_rows_then_streams_from_its_own_slot_and_leaves_nothing(
    base: str, db: Any
) -> None:
    table(db, "rc_tail (id INT PRIMARY KEY, data TEXT)")
    db.execute("INSERT INTO rc_tail SELECT g, 's' || g FROM generate_series(1, 500) g")
    source = LogicalSource(base, tables=["rc_tail"], snapshot="initial", snapshot_chunk=50)
    assert source.temporary
    running = Running(source)
    running.until(lambda c: c.snapshot)
    db.execute("UPDATE rc_tail SET data = 'u' WHERE id = 500")  # read already, or not yet
    db.execute("DELETE FROM rc_tail WHERE id = 1")
    db.execute("INSERT INTO rc_tail VALUES (501, 'n')")
    running.until(lambda c: c.pk == 501)
    running.stop()
    snapshot = [c for c in running.got if c.snapshot]
    assert len(snapshot) in (499, 500, 501)
    assert all(c.position and c.position.startswith("snapshot:") for c in snapshot)
    assert all(len({c.position for c in snapshot[i : i + 50]}) == 1 for i in range(0, 500, 50))
    assert replay(running.got) == rows(db, "rc_tail", "id")
    assert leftovers(db) == ([], [])  # the temporary slot and the tail's publication went


def test_snapshot_rows_are_what_the_stream_gives_for_them(base: str, db: Any, name: str) -> None:
    db.execute("DROP TYPE IF EXISTS rc_snap_mood CASCADE")
    db.execute("CREATE TYPE rc_snap_mood AS ENUM ('sad', 'happy')")
    table(
        db,
        """rc_snap_types (
            id BIGINT PRIMARY KEY, n NUMERIC(12, 4), f8 DOUBLE PRECISION, f4 REAL, t TEXT,
            c CHAR(3), b BOOLEAN, by BYTEA, u UUID, d DATE, ts TIMESTAMP(6), tstz TIMESTAMPTZ,
            iv INTERVAL, j JSON, jb JSONB, ia INT[], ta TEXT[], e rc_snap_mood, ip INET,
            inf DATE, nul INT, gen BIGINT GENERATED ALWAYS AS (id * 2) STORED
        )""",
    )
    source = LogicalSource(f"{base}?slot={name}", tables=["rc_snap_types"])
    source.setup()
    db.execute("SELECT pg_current_wal_lsn()")
    start = str(db.fetchone()[0])
    db.execute(
        """INSERT INTO rc_snap_types VALUES (
            9007199254740993, 12345678.9012, 0.1, 1.5, 'héllo ✓', 'ab', true, '\\x00ff',
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '2024-01-02 03:04:05.123456',
            '2024-01-02 03:04:05.678+02', '3 days 04:05:06.5', '{"k": [1, 2.5]}', '{"b": 1}',
            '{1, NULL}', '{"a b", NULL}', 'happy', '10.0.0.1', 'infinity', NULL
        )"""
    )
    ((streamed,),) = list(
        LogicalSource(f"{base}?slot={name}", tables=["rc_snap_types"], start=start, end="now")
    )
    ((read,),) = list(LogicalSource(base, tables=["rc_snap_types"], snapshot="initial", end="now"))
    assert read.snapshot
    assert not streamed.snapshot
    assert (read.pk, read.schema, read.table) == (streamed.pk, "public", "rc_snap_types")
    assert read.after == streamed.after
    assert read.after is not None
    assert "gen" not in read.after
    assert read.after["c"] == "ab "
    assert read.after["b"] is True
    assert read.after["inf"] == "infinity"
    assert read.after["u"] == uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    assert read.after["tstz"] == dt.datetime(2024, 1, 2, 1, 4, 5, 678000, tzinfo=dt.UTC)
    assert read.after["n"] == Decimal("12345678.9012")
    assert read.after["f8"] == 0.1
    assert Change.from_json(read.to_json()) == read


def test_composite_and_text_keys_are_read_in_the_servers_order_and_resume_there(
    base: str, db: Any, name: str, tmp_path: Path
) -> None:
    # a key (b, a) not in column order (with REPLICA IDENTITY FULL the stream's pk is in
    # key order); text in a collation that orders case apart from Python's
    table(db, 'rc_snap_ck (a TEXT COLLATE "en-x-icu", b INT, data TEXT, PRIMARY KEY (b, a))')
    values = [("x", 1), ("Y", 1), ("y", 1), ("a", 2), ("B", 2), ("b", 2), ("Z", 0)]
    for a, b in values:
        db.execute("INSERT INTO rc_snap_ck VALUES (%s, %s, %s)", (a, b, f"{a}{b}"))
    db.execute("INSERT INTO rc_snap_ck SELECT 'k' || g, 3, 'k' || g FROM generate_series(1, 40) g")
    checkpoint = open_checkpoint(str(tmp_path / "ck.pos"))
    url = f"{base}?slot={name}"
    first = LogicalSource(
        url, tables=["rc_snap_ck"], snapshot="initial", snapshot_chunk=3, checkpoint=checkpoint
    )
    reading = iter(first)
    delivered = [next(reading) for _ in range(3)]  # 9 rows, up to ('a', 2)... in (b, a) order
    keys = [c.pk for tx in delivered for c in tx]
    db.execute("SELECT b, a FROM rc_snap_ck ORDER BY b, a LIMIT 9")
    assert keys == [tuple(row) for row in db.fetchall()]  # the server's order, not Python's
    assert keys != sorted(keys)
    checkpoint.save(delivered[-1][-1].position or "")
    reading.close()
    first.close()
    # changes on both sides of the cut, and a key moved across it both ways
    db.execute("UPDATE rc_snap_ck SET data = data || '!'")
    db.execute("UPDATE rc_snap_ck SET b = 9 WHERE (b, a) = (%s, %s)", keys[0])  # read -> not
    db.execute("UPDATE rc_snap_ck SET b = 0, a = 'A' WHERE (b, a) = (3, 'k40')")  # not -> read
    db.execute("DELETE FROM rc_snap_ck WHERE (b, a) = (3, 'k2')")
    resumed = LogicalSource(url, tables=["rc_snap_ck"], snapshot_chunk=3, checkpoint=checkpoint)
    running = Running(resumed)
    wait_for(lambda: resumed.snapshot_progress is not None and resumed.snapshot_progress.done)
    db.execute("INSERT INTO rc_snap_ck VALUES ('m', 100, 'marker')")
    running.until(lambda c: (c.after or {}).get("data") == "marker")
    running.stop()
    between = [c for c in running.got if not c.snapshot and c.position.startswith("snapshot:")]  # type: ignore[union-attr]
    # of what happened between the two reads: every change to the rows read before the
    # cut (a moved key's old row is deleted, its new one written); of the rows after it
    # (read next, with every write in them) only those the log deletes or moves away,
    # each with every change before that (the consumer may hold the row from a delivery
    # past the checkpoint)
    got = [(str(c.action), c.pk) for c in between]
    assert ("delete", keys[0]) in got  # moved away from the rows read: its old row goes
    assert ("write", (9, keys[0][1])) not in got  # to a row read next
    assert [g for g in got if "A" in g[1] or "k40" in g[1]] == [
        ("update", (3, "k40")),
        ("delete", (3, "k40")),
        ("write", (0, "A")),
    ]
    assert (3, "k2") not in keys
    assert [g for g in got if g[1] == (3, "k2")] == [("update", (3, "k2")), ("delete", (3, "k2"))]
    gone = {(3, "k2"), (3, "k40")}
    assert not [g for g in got if g[0] != "delete" and g[1][0] == 3 and g[1] not in {*keys, *gone}]
    assert ("update", keys[1]) in got  # a row read before the cut: every change
    again = {c.pk for c in running.got if c.snapshot} & set(keys)
    assert not again
    state = replay([c for tx in delivered for c in tx] + running.got)
    db.execute("SELECT b, a, data FROM rc_snap_ck")
    assert state == {(b, a): data for b, a, data in db.fetchall()}
    assert checkpoint.load() is not None
    assert not checkpoint.load().startswith("snapshot:")


def test_a_slot_is_never_confirmed_past_a_snapshots_position(
    base: str, db: Any, name: str, tmp_path: Path
) -> None:
    table(db, "rc_snap_slot (id INT PRIMARY KEY, data TEXT)")
    table(db, "rc_snap_other (id INT PRIMARY KEY)")
    db.execute("INSERT INTO rc_snap_slot SELECT g, 's' FROM generate_series(1, 30) g")
    checkpoint = open_checkpoint(str(tmp_path / "slot.pos"))
    source = LogicalSource(
        f"{base}?slot={name}",
        tables=["rc_snap_slot"],
        snapshot="initial",
        snapshot_chunk=10,
        checkpoint=checkpoint,
        heartbeat=0.1,
        feedback=1,
    )
    reading = iter(source)
    chunks = [next(reading), next(reading), next(reading)]
    point = as_lsn(chunks[0][0].position or "")
    assert checkpoint.load() == chunks[0][0].position.split(":{")[0] + ':{"at":null}'  # type: ignore[union-attr]
    checkpoint.save(chunks[0][-1].position or "")  # a relay that delivered one chunk
    following: list[list[Change]] = []
    thread = threading.Thread(target=lambda: following.append(next(reading)), daemon=True)
    thread.start()  # the snapshot is done: it waits for the consumer before it streams
    for n in range(20):  # WAL the slot holds, that an idle stream would confirm it past
        db.execute("INSERT INTO rc_snap_other VALUES (%s)", (n,))
        time.sleep(0.1)
        assert confirmed(db, name) <= point
    assert thread.is_alive()
    assert not following
    checkpoint.save(chunks[-1][-1].position or "")  # the consumer has every chunk now
    wait_for(lambda: checkpoint.load() == f"{point >> 32:X}/{point & 0xFFFFFFFF:X}")
    db.execute("INSERT INTO rc_snap_slot VALUES (100, 'after')")
    thread.join(30)
    ((change,),) = following
    assert (change.pk, change.snapshot) == (100, False)
    reading.close()


def test_a_keyless_table_is_refused_before_anything_is_made(base: str, db: Any) -> None:
    table(db, "rc_snap_nokey (v INT)", full=False)
    source = LogicalSource(base, tables=["rc_snap_nokey"], snapshot="initial", end="now")
    with pytest.raises(ConfigError, match="no primary key and no replica identity"):
        list(source)
    assert leftovers(db) == ([], [])


def test_a_keyless_table_with_full_identity_is_read_whole(base: str, db: Any) -> None:
    table(db, "rc_snap_full (v INT)")
    db.execute("INSERT INTO rc_snap_full VALUES (1), (1), (2)")
    changes = [
        c
        for tx in LogicalSource(
            base, tables=["rc_snap_full"], snapshot="initial", snapshot_chunk=2, end="now"
        )
        for c in tx
    ]
    assert sorted((c.pk, c.after["v"]) for c in changes) == [(None, 1), (None, 1), (None, 2)]  # type: ignore[index]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"snapshot": "always"}, "snapshot must be 'initial' or 'never'"),
        ({"snapshot": "initial", "snapshot_chunk": 0}, "snapshot_chunk positive"),
        ({"snapshot": "initial", "start": "start"}, "leave start at 'now'"),
        ({"start": "snapshot:0/1:{not json"}, "bad snapshot position"),
        ({"start": 'snapshot:nolsn:{"at": null}'}, "bad snapshot position"),
        ({"start": 'snapshot:0/1:{"at": [1, 2, null]}'}, "names no table"),
    ],
)
def test_bad_snapshot_options(base: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LogicalSource(base, **options)


def test_a_snapshot_position_needs_the_slot_it_began_with(base: str, db: Any) -> None:
    table(db, "rc_snap_tmp (id INT PRIMARY KEY, data TEXT)")
    start = 'snapshot:0/1:{"at": ["public", "rc_snap_tmp", ["1"]]}'
    source = LogicalSource(base, tables=["rc_snap_tmp"], start=start, end="now")
    with pytest.raises(ConfigError, match="resumes from the slot it began with"):
        list(source)
    assert leftovers(db) == ([], [])

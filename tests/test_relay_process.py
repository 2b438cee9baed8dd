"""`ProcessSource` and ``rowcast relay --source-process``: the source read in a child process.

The same transactions as the source read directly; a relay SIGKILLed mid-stream
leaves no reader process behind and, restarted, loses nothing; SIGTERM exits 0;
a source failing in the child is an error in the parent.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rowcast.checkpoint import open_checkpoint
from rowcast.errors import ConfigError, SourceError
from rowcast.sources._process import ProcessSource
from rowcast.sources.sqlite import TriggerSource
from tests.test_cli_relay import ROWCAST
from tests.test_relay import URL, Table, expected, server_id, stored, wait_for


@pytest.fixture
def table() -> Iterator[Table]:
    t = Table("relay_proc")
    yield t
    t.drop()


def children(pid: int) -> set[int]:
    """The live (not zombie) processes whose parent is `pid`."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_same_transactions_as_the_source_read_directly(table: Table, tmp_path: Path) -> None:
    start = table.position()
    for i in range(30):
        table.transaction(
            *(f"INSERT INTO {table.name} VALUES ({i * 10 + j}, {j})" for j in range(3))
        )
        table.transaction(f"UPDATE {table.name} SET n = n + 1 WHERE id = {i * 10}")
    end = table.position()
    truth = table.truth(start, end)
    assert len(truth) == 60
    source = ProcessSource(
        URL,
        str(tmp_path / "pos"),
        tables=[f"test.{table.name}"],
        start=start,
        end=end,
        server_id=server_id(),
        heartbeat=0.2,
    )
    source.check()
    assert list(source) == truth


def test_the_child_resumes_from_the_checkpoint_at_its_url(table: Table, tmp_path: Path) -> None:
    start = table.position()
    for i in range(4):
        table.transaction(f"INSERT INTO {table.name} VALUES ({i}, {i})")
    truth = table.truth(start, table.position())
    with open_checkpoint(str(tmp_path / "pos")) as checkpoint:
        checkpoint.save(str(truth[1][-1].position))
    source = ProcessSource(
        URL,
        str(tmp_path / "pos"),
        tables=[f"test.{table.name}"],
        start=start,
        end=truth[-1][-1].position,
        server_id=server_id(),
    )
    assert list(source) == truth[2:]


def test_a_source_failing_in_the_child_is_raised_in_the_parent(tmp_path: Path) -> None:
    unreachable = ProcessSource("mysql://root@127.0.0.1:1/test", str(tmp_path / "pos"))
    with pytest.raises(ConfigError, match="cannot reach the server"):
        unreachable.check()
    with pytest.raises(ConfigError, match="cannot reach the server"):
        list(unreachable)
    bad_option = ProcessSource(URL, str(tmp_path / "pos"), no_such_option=1)
    with pytest.raises(SourceError, match=r"the source process failed: TypeError.*no_such_option"):
        list(bad_option)
    with pytest.raises(ConfigError, match="queue_size"):
        ProcessSource(URL, str(tmp_path / "pos"), queue_size=0)


def test_stop_ends_iteration_and_joins_the_child(table: Table, tmp_path: Path) -> None:
    source = ProcessSource(
        URL, str(tmp_path / "pos"), tables=[f"test.{table.name}"], server_id=server_id()
    )
    stopper = threading.Timer(2.0, source.stop)
    stopper.start()
    try:
        assert list(source) == []  # from "now", nothing written: until stopped
    finally:
        stopper.join()
    assert {p for p in children(os.getpid()) if not tracker(p)} == set()


def tracker(pid: int) -> bool:
    """multiprocessing's resource tracker: shared by every child, exits with its parent."""
    with contextlib.suppress(OSError):
        return b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return False


def test_a_relay_killed_mid_stream_leaves_no_reader_and_loses_nothing(
    table: Table, tmp_path: Path
) -> None:
    store = tmp_path / "events.db"
    checkpoint = tmp_path / "pos"
    start_position = table.position()
    command = [
        ROWCAST,
        "relay",
        URL,
        "--source-process",
        "--to",
        f"sqlite:///{store}?synchronous=normal",
        "--checkpoint",
        str(checkpoint),
        "--tables",
        f"test.{table.name}",
        "--from",
        start_position,
        "--server-id",
        str(server_id()),
        "--batch-size",
        "50",
        "--log-format",
        "json",
    ]
    log = tmp_path / "relay.log"

    def start() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=out)

    def saved() -> str | None:
        with open_checkpoint(str(checkpoint)) as c:
            return c.load()

    for i in range(200):
        table.transaction(
            *(f"INSERT INTO {table.name} VALUES ({i * 5 + j}, {j})" for j in range(5))
        )
    process = start()
    try:
        wait_for(saved, 60, "a first checkpoint")  # mid-stream: reading and delivering
        readers = {p for p in children(process.pid) if not tracker(p)}
        assert readers, log.read_text()[-3000:]
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    for pid in readers:  # the orphaned reader notices its parent is gone and exits
        wait_for(lambda pid=pid: not alive(pid), 10, f"reader {pid} to exit")
    for i in range(200, 300):
        table.transaction(f"INSERT INTO {table.name} VALUES ({i * 5}, {i})")
    end = table.last(start_position)
    process = start()
    try:
        wait_for(lambda: saved() == end, 120, "the restarted relay to catch up")
        assert process.poll() is None, log.read_text()[-3000:]
    except BaseException:
        process.kill()
        process.wait()
        raise
    readers = {p for p in children(process.pid) if not tracker(p)}
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0, log.read_text()[-3000:]
    assert not any(alive(pid) for pid in readers)
    truth = table.truth(start_position, end)
    assert sum(len(tx) for tx in truth) == 1100
    assert stored(store) == expected(truth)  # every change exactly once, in order per row


def test_transactions_cross_to_the_parent_whole_in_every_field() -> None:
    # the child sends a transaction's rows as tuples and what its changes share once; one
    # whose changes differ in what they usually share crosses as Change objects
    import datetime as dt
    import pickle
    from decimal import Decimal

    from rowcast import Action, Change
    from rowcast.sources._process import _pack, _unpack

    row = {"id": 1, "price": Decimal("1.50"), "at": dt.datetime(2024, 1, 1), "blob": b"\x00"}
    common = {"ts": 1.5, "txid": "0-1-7", "position": "binlog.000001:4", "source": "mysql"}
    streamed = [
        Change(Action.WRITE, "shop", "orders", 1, None, row, **common),
        Change(Action.UPDATE, "shop", "orders", 1, row, {**row, "id": 2}, **common),
        Change(Action.DELETE, None, "items", (1, "eu"), {"a": None}, None, **common),
    ]
    read = Change._reads("shop", "orders", [(1, row), (2, {**row, "id": 2})], *common.values())
    mixed = [streamed[0], Change(Action.WRITE, "shop", "orders", 3, None, row, ts=2.5)]
    for transaction in (streamed, read, mixed, streamed[:1]):
        packed = pickle.loads(pickle.dumps(_pack(transaction)))
        got = _unpack(packed)
        assert got == transaction
        assert [c.snapshot for c in got] == [c.snapshot for c in transaction]
        assert [type(c.pk) for c in got] == [type(c.pk) for c in transaction]
    assert isinstance(_pack(streamed), tuple)
    assert isinstance(_pack(read), tuple)
    assert _pack(mixed) is mixed


def written(db: Path) -> bool:
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("INSERT INTO t (data) VALUES ('live')")
    return True


def test_what_the_source_logs_in_the_child_is_logged_by_the_parent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a backfill's lines (taken, done) were lost with --source-process: no handler there
    db = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data TEXT)")
        conn.executemany("INSERT INTO t (data) VALUES (?)", [(f"r{i}",) for i in range(30)])
    url = f"sqlite:///{db}"
    source = ProcessSource(url, str(tmp_path / "pos"), tables=["t"])
    got: list[Any] = []
    with caplog.at_level("INFO", "rowcast"):
        reader = threading.Thread(target=lambda: [got.extend(t) for t in source], daemon=True)
        reader.start()
        try:
            wait_for(lambda: written(db) and got, 30)  # it reads: a request now reaches it
            TriggerSource(url).backfill(["t"], chunk=7)
            wait_for(lambda: sum(c.snapshot for c in got) >= 30, 60)
            wait_for(lambda: "backfill 1: done, " in caplog.text, 30)
        finally:
            source.stop()
            reader.join(30)
    (done,) = [r for r in caplog.records if r.getMessage().startswith("backfill 1: done, ")]
    assert done.name == "rowcast.sources.backfill"
    assert done.process != os.getpid()  # logged in the child, handled here

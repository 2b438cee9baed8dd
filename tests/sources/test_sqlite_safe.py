"""TriggerSource leaves nothing behind a tail and refuses typos (issue 17), no server needed.

A reader without a checkpoint (``rowcast tail``) removes, when the last such reader
stops, the triggers tails installed (and rowcast_changes when a tail made it); never
those a relay (a reader with a checkpoint) installed or uses.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rowcast import ConfigError
from rowcast.checkpoint import open_checkpoint
from rowcast.sources.sqlite import TriggerSource, readers
from rowcast.sources.sqlite.tails import TAIL
from tests.conftest import wait_for
from tests.sources.test_sqlite_source import db, fresh, path, read, streaming, url

__all__ = ["db", "path"]  # fixtures


def triggers(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY 1")
        return [name for (name,) in rows]


def tables(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")
        return [name for (name,) in rows]


TEST = ["rowcast_test_delete", "rowcast_test_insert", "rowcast_test_update"]


def relay(path: Path) -> TriggerSource:
    return TriggerSource(url(path), checkpoint=open_checkpoint(f"{path}.pos"), poll=0.02)


def test_a_tail_removes_what_it_installed_and_the_app_writes_on(
    path: Path, db: sqlite3.Connection
) -> None:
    with streaming(TriggerSource(url(path), poll=0.02)) as got:
        assert triggers(path) == TEST
        db.execute("INSERT INTO test (data) VALUES ('seen')")
        wait_for(lambda: got)
    assert triggers(path) == []  # was: left behind, filling rowcast_changes for ever
    assert tables(path) == ["test"]  # rowcast_changes too: the tail made it
    db.execute("INSERT INTO test (data) VALUES ('the app writes on')")


def test_a_tail_keeps_what_a_relay_installed(path: Path, db: sqlite3.Connection) -> None:
    relay(path).install()
    assert read(path) == []  # a tail reads, and stops
    assert triggers(path) == TEST
    db.execute("INSERT INTO test (data) VALUES ('x')")
    assert [c.after for tx in relay_read(path) for c in tx] == [{"id": 1, "data": "x"}]


def relay_read(path: Path) -> list[list]:  # type: ignore[type-arg]
    source = TriggerSource(
        url(path), start="start", end="now", checkpoint=open_checkpoint(f"{path}.pos")
    )
    return list(source)


def test_a_relay_that_starts_while_a_tail_reads_adopts_its_triggers(
    path: Path, db: sqlite3.Connection
) -> None:
    with streaming(TriggerSource(url(path), poll=0.02)):
        assert triggers(path) == TEST
        relay(path).install()  # a relay starts (its check) on the tail's triggers
    assert triggers(path) == TEST  # the relay's now: the tail left them


def test_the_last_of_two_tails_removes_the_triggers(path: Path) -> None:
    first = TriggerSource(url(path), poll=0.02)
    with streaming(first):
        with streaming(TriggerSource(url(path), poll=0.02)):
            assert triggers(path) == TEST
        assert triggers(path) == TEST  # the first still reads: the second left them
    assert triggers(path) == []


def test_a_killed_tail_leaves_its_triggers_until_the_next_tail_leaves(path: Path) -> None:
    code = (
        "import os, sys; from rowcast.sources.sqlite import TriggerSource; "
        f"source = iter(TriggerSource({url(path)!r}, poll=0.02)); "
        "import threading; threading.Timer(0.5, lambda: os._exit(9)).start(); next(source)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 9  # no exit
    assert triggers(path) == TEST
    with contextlib.closing(sqlite3.connect(path)) as conn:
        (dead,) = conn.execute(
            "SELECT count(*) FROM rowcast_state WHERE key LIKE ?", (f"{TAIL}%",)
        ).fetchone()
    assert dead >= 1  # its record and its marks
    assert read(path) == []  # the next tail: its pid is gone, so what it made goes too
    assert triggers(path) == []


def test_check_of_a_tail_installs_nothing(path: Path) -> None:
    TriggerSource(url(path)).check()
    assert triggers(path) == []
    assert tables(path) == ["test"]


def test_a_pattern_that_matches_no_table_is_refused_with_the_tables(tmp_path: Path) -> None:
    file = fresh(tmp_path / "app.db")
    checkpoint = open_checkpoint(str(tmp_path / "rd.pos"))
    for source in (
        TriggerSource(url(file), tables=["tset", "test"]),
        TriggerSource(url(file), tables=["tset", "test"], checkpoint=checkpoint),
    ):
        with pytest.raises(ConfigError) as caught:
            next(iter(source))
        assert "tables 'tset' match no table" in str(caught.value)
        assert "this database's tables are test" in str(caught.value)
        assert "--allow-empty" in str(caught.value)
    assert triggers(file) == []
    later = TriggerSource(url(file), tables=["later"], allow_empty=True, end="now")
    assert list(later) == []


def test_a_second_reader_of_one_checkpoint_is_refused_and_the_first_reads_on(
    path: Path, db: sqlite3.Connection
) -> None:
    with streaming(relay(path)) as got:
        wait_for(lambda: open_checkpoint(f"{path}.pos").load() is not None)
        second = relay(path)
        for attempt in (second.check, lambda: next(iter(second))):
            with pytest.raises(ConfigError) as caught:  # was: both read, both delivered
                attempt()
            said = str(caught.value)
            assert f"checkpoint {path}.pos is read by another reader, pid " in said
            assert "the same relay started twice?" in said
        db.execute("INSERT INTO test (data) VALUES ('the first reads on')")
        wait_for(lambda: got)
    assert [c.after for tx in got for c in tx] == [{"id": 1, "data": "the first reads on"}]
    assert relay_read(path) == []  # stopped, it let go: the next one reads


def reader(path: Path, then: str = "") -> list[str]:
    """The command of a child process that reads `path` for its checkpoint (`then`: Python
    run before it reads)."""
    code = (
        "from rowcast.checkpoint import open_checkpoint; "
        "from rowcast.sources.sqlite import TriggerSource; "
        f"source = iter(TriggerSource({url(path)!r}, poll=0.02, "
        f"checkpoint=open_checkpoint({str(path) + '.pos'!r}))); "
        f"{then}next(source)"
    )
    return [sys.executable, "-c", code]


def read_after_it(path: Path, db: sqlite3.Connection) -> None:
    """A change written while the reader was down is what the next reader reads."""
    db.execute("INSERT INTO test (data) VALUES ('written while it was down')")
    assert [c.after["data"] for tx in relay_read(path) for c in tx] == [  # type: ignore[index]
        "written while it was down"
    ]


def test_a_killed_readers_checkpoint_is_taken_over(path: Path, db: sqlite3.Connection) -> None:
    exits = "import os, threading; threading.Timer(0.5, lambda: os._exit(9)).start(); "
    assert subprocess.run(reader(path, exits), timeout=60).returncode == 9  # no exit
    read_after_it(path, db)


def test_a_killed_reader_not_yet_reaped_is_taken_over(path: Path, db: sqlite3.Connection) -> None:
    # a relay SIGKILLed, then restarted at once: its parent (here the test; in a container,
    # an init that reaps late) had not reaped it yet, and the restart was refused for the
    # zombie's pid, which signal 0 still finds
    child = subprocess.Popen(reader(path))
    try:
        wait_for(lambda: open_checkpoint(f"{path}.pos").load() is not None)  # it reads
        os.kill(child.pid, signal.SIGKILL)
        wait_for(lambda: Path(f"/proc/{child.pid}/stat").read_text().split()[2] == "Z")
        read_after_it(path, db)
    finally:
        child.wait()


@pytest.mark.parametrize("whose", ["this process", "another process"])
def test_a_dead_readers_record_is_taken_over_when_its_pid_runs_again(
    path: Path, db: sqlite3.Connection, whose: str
) -> None:
    # a container restarted after its relay was SIGKILLed: the new relay has the old one's
    # pid (pid 1, say), or another program took it; the record, made before that process
    # started, was taken for a reader that runs and the restart refused for ever
    assert relay_read(path) == []  # the tables made
    other = subprocess.Popen(["sleep", "60"]) if whose == "another process" else None
    pid = other.pid if other is not None else os.getpid()
    name = readers.name(open_checkpoint(f"{path}.pos"))
    an_hour_ago = int(time.time()) - 3600
    stale = f"{readers.OWNER}{socket.gethostname()} {pid} 0badc0de@{an_hour_ago} {name}"
    try:
        db.execute("INSERT INTO rowcast_state VALUES (?, 1)", (stale,))
        read_after_it(path, db)
        (left,) = db.execute(
            "SELECT count(*) FROM rowcast_state WHERE key = ?", (stale,)
        ).fetchone()
        assert left == 0
    finally:
        if other is not None:
            other.kill()
            other.wait()


def test_a_record_of_this_process_without_its_claims_time_still_refuses(
    path: Path, db: sqlite3.Connection
) -> None:
    # written by an earlier rowcast (no time in it): it may be another reader of this process
    assert relay_read(path) == []
    name = readers.name(open_checkpoint(f"{path}.pos"))
    record = f"{readers.OWNER}{socket.gethostname()} {os.getpid()} 0badc0de {name}"
    db.execute("INSERT INTO rowcast_state VALUES (?, 1)", (record,))
    with pytest.raises(ConfigError, match="is read by another reader"):
        relay_read(path)

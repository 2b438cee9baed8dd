"""``source.backfills()``: which readers of a request stopped for good (a tail killed
mid-backfill never resumes: its progress rows stay, not updated) and which only wait.

The rows are written as each kind of reader writes them, with the times set, into a
real SQLite file's ``rowcast_signal``; the killed tail itself is in test_cli_backfill.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from rowcast.errors import ConfigError
from rowcast.sources import _heartbeat, backfills
from rowcast.sources.signal import SignalTable
from rowcast.sources.sqlite import TriggerSource

OLD = 120.0  # seconds ago: over `backfills.STALE_AFTER`


def progress(rows: int, done: bool = False, **more: Any) -> dict[str, Any]:
    return {
        "tables": [["main", "rc_bf"]],
        "index": 1 if done else 0,
        "after": None,
        "rows": rows,
        "done": done,
        "cancelled": False,
        **more,
    }


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE rc_bf (id INTEGER PRIMARY KEY)")
    conn.close()
    SignalTable(lambda: sqlite3.connect(path, isolation_level=None), "sqlite").create()
    return path


def write(
    db: Path, kind: str, request: int | None, reader: str | None, data: Any, ago: float
) -> None:
    with sqlite3.connect(db, isolation_level=None) as conn:
        conn.execute(
            "INSERT INTO rowcast_signal (kind, request, reader, data, created) "
            "VALUES (?, ?, ?, ?, ?)",
            (kind, request, reader, json.dumps(data), time.time() - ago),
        )


def statuses(db: Path, **options: Any) -> dict[int, backfills.Status]:
    return {s.id: s for s in TriggerSource(f"sqlite:///{db}").backfills(**options)}


def test_a_tail_that_stopped_unfinished_is_abandoned_and_holds_nothing_up(db: Path) -> None:
    request = {"tables": ["rc_bf"], "where": None, "chunk": 10}
    for _ in range(5):
        write(db, "backfill", None, None, request, OLD + 10)
    relay, tail = "file:///var/pos", "tail:0123456789ab"
    # 1: a relay finished it; a tail killed mid-way
    write(db, "progress", 1, relay, progress(30, done=True, resumes=True), OLD)
    write(db, "progress", 1, tail, progress(10, resumes=False), OLD)
    # 2: only a tail took it, and it was killed
    write(db, "progress", 2, "tail:b", progress(10, resumes=False), OLD)
    # 3: a tail's request queued behind one it is reading now (its low watermark is new)
    write(db, "progress", 3, "tail:c", progress(0, resumes=False), OLD)
    write(db, "low", 2, "tail:c", {}, 0.5)
    # 4: a progress row of a rowcast before "resumes", and a relay killed (it resumes)
    write(db, "progress", 4, "tail:d", progress(10), OLD)
    write(db, "progress", 4, relay, progress(10, resumes=True), OLD)
    # 5: a tail reading now
    write(db, "progress", 5, "tail:e", progress(10, resumes=False), 0.5)
    found = statuses(db)
    assert [(r.reader, r.resumes, r.abandoned) for r in found[1].readers] == [
        (relay, True, False),
        (tail, False, True),
    ]
    assert found[1].done  # was: never, the killed tail held it up
    assert not found[1].abandoned
    assert [r.abandoned for r in found[2].readers] == [True]
    assert not found[2].done
    assert found[2].abandoned  # --wait stops waiting at once
    assert found[2].to_dict()["abandoned"]
    assert found[2].to_dict()["readers"][0]["abandoned"]
    assert [r.abandoned for r in found[3].readers] == [False]
    assert [(r.resumes, r.abandoned) for r in found[4].readers] == [(True, False), (True, False)]
    assert not found[4].done
    assert not found[4].abandoned
    assert [r.abandoned for r in found[5].readers] == [False]
    assert not found[5].abandoned


def test_how_long_before_a_tail_counts_as_stopped_can_be_set(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(db, "backfill", None, None, {"tables": ["rc_bf"]}, OLD + 10)
    write(db, "progress", 1, "tail:b", progress(10, resumes=False), OLD)
    assert statuses(db)[1].abandoned
    assert not statuses(db, stale_after=OLD * 2)[1].abandoned
    monkeypatch.setattr(backfills, "STALE_AFTER", OLD * 2)
    assert not statuses(db)[1].abandoned
    assert statuses(db, stale_after=30)[1].abandoned
    for wrong in (0, -1, "soon", float("nan")):
        with pytest.raises(ConfigError, match="stale_after is a number of seconds above 0"):
            statuses(db, stale_after=wrong)


def test_a_tails_heartbeat_keeps_its_old_progress_alive(db: Path) -> None:
    """A tail whose consumer keeps it waiting writes no progress, only ``alive`` rows
    (see rowcast.sources._heartbeat): its newest row of any kind counts."""
    for _ in range(3):
        write(db, "backfill", None, None, {"tables": ["rc_bf"]}, OLD + 10)
    for request, reader, beat in (
        (1, "tail:blocked", 1.0),
        (2, "tail:killed", OLD),
        (3, "tail:c", None),
    ):
        write(db, "progress", request, reader, progress(10, resumes=False), OLD)
        if beat is not None:
            write(db, "alive", None, reader, {}, beat)
    found = statuses(db)
    assert [(r.abandoned, r.updated is not None) for r in found[1].readers] == [(False, True)]
    assert not found[1].abandoned
    assert [r.abandoned for r in found[2].readers] == [True]  # its beats stopped too
    assert [r.abandoned for r in found[3].readers] == [True]
    # beats often enough for the default, and for any --stale-after of two beats or more
    assert _heartbeat.EVERY * 4 == backfills.STALE_AFTER


def test_unread_names_the_patterns_no_reader_reads_once_one_took_it(db: Path) -> None:
    write(db, "backfill", None, None, {"tables": ["rc_bf", "rc_x*"], "chunk": 10}, 1)
    (waiting,) = statuses(db).values()
    assert waiting.unread == []  # no reader yet: nothing to say of the patterns
    write(db, "progress", waiting.id, "relay.pos", progress(10, done=True), 1)
    (done,) = statuses(db).values()
    assert done.unread == ["rc_x*"]  # the relay read main.rc_bf only
    assert done.to_dict()["unread"] == ["rc_x*"]


def test_a_table_only_an_abandoned_tail_read_is_unread(db: Path) -> None:
    """A relay read rc_bf and finished; only a tail that stopped took rc_x too: rc_x was
    never read (was: done, nothing unread, and --wait exited 0)."""
    write(db, "backfill", None, None, {"tables": ["rc_bf", "rc_x"], "chunk": 10}, OLD + 10)
    write(db, "progress", 1, "relay.pos", progress(10, done=True), OLD)
    both = progress(5, resumes=False, tables=[["main", "rc_bf"], ["main", "rc_x"]])
    write(db, "progress", 1, "tail:0123456789ab", both, OLD)
    (status,) = statuses(db).values()
    assert [r.abandoned for r in status.readers] == [False, True]
    assert status.done
    assert status.unread == ["rc_x"]

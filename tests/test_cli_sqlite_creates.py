"""What ``rowcast backfill`` and a refused ``rowcast relay`` leave in a SQLite file: only
what the README's table says (a new user found the app's tables given triggers)."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from rowcast import ConfigError
from rowcast.checkpoint import open_checkpoint
from rowcast.cli import main
from rowcast.sources.sqlite import TriggerSource
from tests.conftest import streaming, wait_for


def schema(path: Path) -> list[tuple[str, str, str]]:
    """(type, name, table) of every table and trigger in the file."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(
            "SELECT type, name, tbl_name FROM sqlite_master WHERE type IN ('table', 'trigger') "
            "ORDER BY 1, 2"
        ).fetchall()


def fresh(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.execute("CREATE TABLE u (id INTEGER PRIMARY KEY, v TEXT)")
        conn.execute("INSERT INTO t VALUES (1, 'a')")


def test_a_backfill_request_gives_no_trigger_to_the_apps_tables(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    fresh(db)
    result = CliRunner().invoke(main, ["backfill", f"sqlite:///{db}", "--tables", "t"])
    assert result.exit_code == 0, result.output
    made = schema(db)
    assert [m for m in made if m[0] == "trigger" and m[2] != "rowcast_signal"] == []
    assert {name for kind, name, _ in made if kind == "table"} <= {
        "t",
        "u",
        "rowcast_signal",
        "sqlite_sequence",  # rowcast_signal's AUTOINCREMENT
        "rowcast_changes",  # what the signal's triggers write to: the request's way to readers
        "rowcast_layouts",
        "rowcast_readers",
        "rowcast_state",
    }
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        before = conn.execute("SELECT count(*) FROM rowcast_changes").fetchone()[0]
        conn.execute("INSERT INTO u VALUES (1, 'the app writes on')")
        after = conn.execute("SELECT count(*) FROM rowcast_changes").fetchone()[0]
    assert after == before  # nothing of the app's goes where no reader prunes it
    # a reader that starts from the start still sees the request, and runs it
    source = TriggerSource(f"sqlite:///{db}", start="start", poll=0.02)
    with streaming(source) as got:
        wait_for(lambda: any(c.snapshot for c in got))
    assert [(c.table, c.pk) for c in got if c.snapshot] == [("t", 1)]


def test_a_relay_refused_for_an_unknown_checkpoint_installs_nothing(tmp_path: Path) -> None:
    db = tmp_path / "shop.db"
    fresh(db)
    url = f"sqlite:///{db}"
    checkpoint = open_checkpoint(str(tmp_path / "relayB.pos"))
    TriggerSource(url).install()
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("INSERT INTO t VALUES (2, 'b')")
    list(TriggerSource(url, start="start", end="now", checkpoint=checkpoint))
    checkpoint.save("1")
    result = CliRunner().invoke(main, ["uninstall", url, "--yes"])
    assert result.exit_code == 0, result.output
    left = schema(db)
    relay = CliRunner().invoke(
        main,
        [
            "relay",
            url,
            "--to",
            f"sqlite:///{tmp_path / 'events.db'}",
            "--checkpoint",
            str(tmp_path / "relayB.pos"),
        ],
    )
    assert relay.exit_code == 2, relay.output
    assert "no record of that reader" in relay.output
    assert schema(db) == left  # refused before anything was written
    # the Python API too: check() and iterating refuse before installing
    source = TriggerSource(url, checkpoint=checkpoint, end="now")
    with pytest.raises(ConfigError, match="no record of that reader"):
        source.check()
    assert schema(db) == left
    with pytest.raises(ConfigError, match="no record of that reader"):
        list(source)
    assert schema(db) == left

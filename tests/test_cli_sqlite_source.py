"""``rowcast tail``, ``doctor`` and ``uninstall`` on a SQLite file (the trigger source)."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from rowcast import Change
from rowcast.checkpoint import open_checkpoint
from rowcast.cli import main
from rowcast.sources.sqlite import TriggerSource

ROWCAST = Path(sys.executable).with_name("rowcast")


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def sql(path: Path, *statements: str) -> None:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        for statement in statements:
            conn.execute(statement)


@pytest.fixture
def url(tmp_path: Path) -> str:
    path = tmp_path / "app.db"
    sql(
        path,
        "PRAGMA journal_mode = WAL",
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)",
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body BLOB)",
    )
    return f"sqlite:///{path}"


def path_of(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


def installed(url: str) -> list[str]:
    """What a relay installs when it starts (capture from now on)."""
    return TriggerSource(url, checkpoint=open_checkpoint(f"{path_of(url)}.pos")).install()


def triggers_of(url: str) -> list[str]:
    with contextlib.closing(sqlite3.connect(path_of(url))) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY 1")
        return [name for (name,) in rows]


def test_tail_json_prints_the_workload_and_the_filter(url: str) -> None:
    installed(url)
    sql(
        path_of(url),
        "INSERT INTO items (name) VALUES ('a'), ('b')",
        "UPDATE items SET name = 'c' WHERE id = 2",
        "INSERT INTO notes (body) VALUES (x'00ff')",
    )
    result = invoke("tail", url, "--from", "start", "--to", "now", "--format", "json")
    assert result.exit_code == 0, result.output
    changes = [Change.from_json(line) for line in result.output.splitlines()]
    assert [(c.name, c.pk) for c in changes] == [
        ("items_write", 1),
        ("items_write", 2),
        ("items_update", 2),
        ("notes_write", 1),
    ]
    assert changes[-1].after == {"id": 1, "body": b"\x00\xff"}
    only = invoke("tail", url, "--from", "start", "--to", "now", "--format", "json", "-t", "notes")
    assert [Change.from_json(line).table for line in only.output.splitlines()] == ["notes"]


def test_tail_table_format_has_a_summary(url: str) -> None:
    installed(url)
    sql(path_of(url), "INSERT INTO items (name) VALUES ('a')")
    result = invoke("tail", url, "--from", "start", "--to", "now")
    assert result.exit_code == 0, result.output
    assert "items_write" in result.output
    assert "1 changes in 1 transactions" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--from", "mysql-bin.000001:4"), "bad SQLite source start"),
        (("--from", "99"), "has no position 99"),
        (("--server-id", "5"), "mysql://"),
    ],
)
def test_tail_bad_options_exit_2(url: str, args: tuple[str, ...], message: str) -> None:
    result = invoke("tail", url, "--to", "now", *args)
    assert result.exit_code == 2
    assert message in result.output


def test_tail_a_missing_file_exits_2(tmp_path: Path) -> None:
    result = invoke("tail", f"sqlite:///{tmp_path}/missing.db")
    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert not (tmp_path / "missing.db").exists()  # never created


def test_tail_live_stops_cleanly_on_sigterm(url: str) -> None:
    tail = subprocess.Popen(
        [str(ROWCAST), "tail", url, "--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while len(triggers_of(url)) < 6:  # its triggers are in place
            assert tail.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.05)
        sql(path_of(url), "INSERT INTO items (name) VALUES ('live')")
        assert tail.stdout is not None
        line = tail.stdout.readline()
        assert Change.from_json(line).after == {"id": 1, "name": "live"}
        tail.send_signal(signal.SIGTERM)
        assert tail.wait(15) == 0
    finally:
        tail.kill()
        tail.communicate()
    assert triggers_of(url) == []  # was: left behind, filling rowcast_changes for ever
    assert "rowcast_changes" not in sql_tables(url)


@pytest.mark.parametrize("gap", [0.0, 0.02])
def test_tail_stops_cleanly_on_two_ctrl_c(url: str, gap: float) -> None:
    """A second Ctrl-C while the tail stops (removing its triggers) keeps the stop clean
    (was: exit 70 'release unlocked lock', or killed by the SIGINT, exit -2)."""
    tail = subprocess.Popen(
        [str(ROWCAST), "tail", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a shell
    )
    try:
        deadline = time.monotonic() + 30
        while len(triggers_of(url)) < 6:  # its triggers are in place
            assert tail.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.05)
        tail.send_signal(signal.SIGINT)
        time.sleep(gap)
        tail.send_signal(signal.SIGINT)
        _, err = tail.communicate(timeout=15)
    finally:
        tail.kill()
        tail.communicate()
    assert tail.returncode == 0, err
    assert "unexpectedly" not in err
    assert "Aborted!" not in err
    assert "0 changes in 0 transactions" in err
    assert triggers_of(url) == []


def test_doctor_before_and_after_install(url: str, tmp_path: Path) -> None:
    before = invoke("doctor", url)
    assert before.exit_code == 0, before.output  # as a missing slot: made by its reader
    assert "triggers on items" in before.output
    assert "a relay installs them when it starts" in before.output
    installed(url)
    after = invoke("doctor", url)
    assert after.exit_code == 0, after.output
    assert "All 6 checks passed" in after.output
    assert "installed, up to date" in after.output
    missing = invoke("doctor", f"sqlite:///{tmp_path}/missing.db")
    assert missing.exit_code == 2


def sql_tables(url: str) -> list[str]:
    with contextlib.closing(sqlite3.connect(path_of(url))) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")
        return [name for (name,) in rows]


def test_uninstall_lists_then_removes_the_triggers_of_some_tables(url: str) -> None:
    installed(url)
    dry = invoke("uninstall", url, "--tables", "notes")
    assert dry.exit_code == 0, dry.output
    assert "would drop trigger rowcast_notes_delete" in dry.output
    assert "dry run: nothing dropped" in dry.output
    assert len(triggers_of(url)) == 6
    result = invoke("uninstall", url, "--tables", "notes", "--yes")
    assert result.exit_code == 0, result.output
    assert result.output.split("\n")[:3] == [
        'dropped trigger rowcast_notes_delete: DROP TRIGGER "rowcast_notes_delete";',
        'dropped trigger rowcast_notes_insert: DROP TRIGGER "rowcast_notes_insert";',
        'dropped trigger rowcast_notes_update: DROP TRIGGER "rowcast_notes_update";',
    ]
    assert invoke("uninstall", url, "-t", "notes").output == "no rowcast trigger to remove\n"
    assert triggers_of(url) == [f"rowcast_items_{op}" for op in ("delete", "insert", "update")]


def test_uninstall_lists_everything_and_keeps_data_unless_told(url: str) -> None:
    installed(url)  # a relay's triggers, rowcast_changes and its checkpoint in the same file
    with open_checkpoint(url) as checkpoint:
        checkpoint.save("1")
    sql(path_of(url), "INSERT INTO items (name) VALUES ('pending')")
    dry = invoke("uninstall", url)
    assert dry.exit_code == 0, dry.output
    out = dry.output
    assert "would drop trigger rowcast_items_insert (on items: every write to it is copied" in out
    assert "would drop table rowcast_changes (capture: a SQLite source's changes, 1 row)" in out
    assert "kept (data) table rowcast_checkpoint (relay checkpoints, 1 row)" in out
    assert "1 table of data kept: --yes --include-data drops them too" in out
    assert "dry run: nothing dropped" in out
    assert len(triggers_of(url)) == 6
    result = invoke("uninstall", url, "--yes")
    assert result.exit_code == 0, result.output
    assert "dropped table rowcast_changes" in result.output
    assert triggers_of(url) == []
    assert [t for t in sql_tables(url) if t.startswith("rowcast_")] == ["rowcast_checkpoint"]
    sql(path_of(url), "INSERT INTO items (name) VALUES ('the app still writes')")
    everything = invoke("uninstall", url, "--yes", "--include-data")
    assert "dropped table rowcast_checkpoint" in everything.output
    assert sql_tables(url) == ["items", "notes"]
    assert "nothing of rowcast's" in invoke("uninstall", url).output


def test_uninstall_refuses_other_urls() -> None:
    result = invoke("uninstall", "redis://127.0.0.1/0")
    assert result.exit_code == 2
    assert "takes a sqlite://, postgresql:// or mysql:// URL" in result.output


@pytest.mark.parametrize("saved", ["0/16B3748", "mysql-bin.000001:4"])
def test_a_relay_given_another_kind_of_sources_checkpoint_names_it_and_installs_nothing(
    url: str, tmp_path: Path, saved: str
) -> None:
    pos = tmp_path / "other.pos"
    with open_checkpoint(str(pos)) as checkpoint:
        checkpoint.save(saved)  # a PostgreSQL or a MySQL relay's
    result = invoke("relay", url, "--to", "-", "--checkpoint", str(pos))
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert f"the checkpoint {pos} holds {saved!r}, which is not a SQLite position" in message
    assert "another kind of source" in message  # was: 'bad SQLite source position', and
    assert "cannot be placed" not in message  # a warning that backfills were not taken up
    assert triggers_of(url) == []

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
from rowcast.cli import main

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


def test_tail_json_prints_the_workload_and_the_filter(url: str) -> None:
    assert invoke("tail", url, "--to", "now").exit_code == 0  # installs the triggers
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
    invoke("tail", url, "--to", "now")
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
        while invoke("doctor", url).exit_code != 0:  # its triggers are in place
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


def test_doctor_before_and_after_install(url: str, tmp_path: Path) -> None:
    before = invoke("doctor", url)
    assert before.exit_code == 1
    assert "triggers on items" in before.output
    assert "rowcast tail URL --to now" in before.output
    invoke("tail", url, "--to", "now")
    after = invoke("doctor", url)
    assert after.exit_code == 0, after.output
    assert "All 6 checks passed" in after.output
    missing = invoke("doctor", f"sqlite:///{tmp_path}/missing.db")
    assert missing.exit_code == 2


def test_uninstall_removes_the_triggers(url: str) -> None:
    invoke("tail", url, "--to", "now")
    result = invoke("uninstall", url, "--tables", "notes")
    assert result.exit_code == 0, result.output
    assert result.output.split("\n")[:3] == [
        "dropped trigger rowcast_notes_delete",
        "dropped trigger rowcast_notes_insert",
        "dropped trigger rowcast_notes_update",
    ]
    assert invoke("uninstall", url, "-t", "notes").output == "no rowcast trigger to remove\n"
    both = invoke("uninstall", url, "-t", "items", "--drop-changes")
    assert both.exit_code == 2
    assert "not both" in both.output
    dropped = invoke("uninstall", url, "--drop-changes")
    assert dropped.exit_code == 0
    assert "dropped tables rowcast_changes" in dropped.output
    sql(path_of(url), "INSERT INTO items (name) VALUES ('the app still writes')")


def test_uninstall_refuses_other_urls() -> None:
    result = invoke("uninstall", "mysql://root@127.0.0.1/test")
    assert result.exit_code == 2
    assert "sqlite://" in result.output

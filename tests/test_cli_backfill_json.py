"""``rowcast backfill --format json``: every line on stdout is a JSON object or array (the
request's id, its final status with --wait, a cancel, --status), for a script to read."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from rowcast.cli import main
from rowcast.sources.sqlite import TriggerSource
from tests.test_cli_backfill import make_file


def lines(output: str) -> list[Any]:
    """Each line of `output` as JSON (fails on a line that is not)."""
    return [json.loads(line) for line in output.splitlines()]


def test_wait_prints_the_id_then_the_final_status_as_json(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    make_file(db, 30)
    url = f"sqlite:///{db}"
    source = TriggerSource(url, tables=["rc_bf"], start="start")
    reader = threading.Thread(target=lambda: [None for _ in source], daemon=True)
    reader.start()
    try:
        result = CliRunner().invoke(
            main, ["backfill", url, "-t", "rc_bf", "--wait", "--format", "json"]
        )
    finally:
        source.stop()
        reader.join(10)
    assert result.exit_code == 0, result.output
    asked, done = lines(result.stdout)  # was: {"id": 1}, then "backfill 1 done: 30 rows ..."
    assert asked == {"id": done["id"]}
    assert done["done"] is True
    assert done["tables"] == ["rc_bf"]
    assert sum(reader["rows"] for reader in done["readers"]) == 30


def test_status_and_cancel_print_json_lines(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    make_file(db, 10)
    url = f"sqlite:///{db}"
    asked = CliRunner().invoke(main, ["backfill", url, "-t", "rc_bf", "--format", "json"])
    assert asked.exit_code == 0, asked.output
    [request] = lines(asked.stdout)
    shown = CliRunner().invoke(main, ["backfill", url, "--status", "--format", "json"])
    assert shown.exit_code == 0, shown.output
    [found] = lines(shown.stdout)  # one document on one line (was: indented over many)
    assert [status["id"] for status in found] == [request["id"]]
    cancel = ["backfill", url, "--cancel", str(request["id"]), "--format", "json"]
    cancelled = CliRunner().invoke(main, cancel)
    assert cancelled.exit_code == 0, cancelled.output
    assert lines(cancelled.stdout) == [{"id": request["id"], "cancelled": True}]


def test_wait_that_gives_up_prints_the_status_it_left(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    make_file(db, 10)
    ask = ["backfill", f"sqlite:///{db}", "-t", "rc_bf", "--wait", "--timeout", "1"]
    result = CliRunner().invoke(main, [*ask, "--format", "json"])
    assert result.exit_code == 1, result.output
    asked, left = lines(result.stdout)
    assert left["id"] == asked["id"]
    assert left["readers"] == []
    assert not left["done"]
    assert "not done after 1 s" in result.stderr

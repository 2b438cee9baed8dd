"""``rowcast relay``: bad input exits 2 at start; the real command, run as a subprocess,
relays, logs JSON, serves metrics and stops cleanly on SIGTERM and Ctrl-C."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rowcast.checkpoint import open_checkpoint
from rowcast.cli import main
from rowcast.cli.relay_console import RelayDisplay
from rowcast.metrics import RelayStats
from tests.test_relay import (
    URL,
    Table,
    expected,
    free_port,
    ids,
    server_id,
    stored,
    wait_for,
)

ROWCAST = str(Path(sys.executable).with_name("rowcast"))


def relay(*args: str) -> Any:
    return CliRunner().invoke(main, ["relay", *args])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "pulsar://h/t"], "no rowcast sink for 'pulsar://h/t'"),
        (["--to", "sqlite:////etc/hostname/x.db"], "cannot make the directory '/etc/hostname'"),
        (["--to", "-", "--from", "garbage"], "bad binlog position 'garbage'"),
        (["--to", "-", "--checkpoint", "redis://127.0.0.1:1/0"], "connect failed"),
        (["--to", "-", "--checkpoint", "nosuch://x"], "no checkpoint backend for 'nosuch://x'"),
        (["--to", "-", "--source", "mysql://root@127.0.0.1:1/test"], "cannot reach the server"),
        (["--to", "-", "--source", "mysql://root@127.0.0.1:xx/test"], "bad port"),
        (["--to", "-", "--source", "ftp://h/x"], "no rowcast source for 'ftp://h/x'"),
        (
            ["--to", "-", "--source", "postgresql://postgres@127.0.0.1:1/test?slot=rc_x"],
            "cannot reach the server",
        ),
    ],
)
def test_a_bad_or_unreachable_url_exits_2_before_anything_runs(
    args: list[str], message: str, tmp_path: Path
) -> None:
    source = URL
    if "--source" in args:
        at = args.index("--source")
        source = args[at + 1]
        del args[at : at + 2]
    if "--checkpoint" not in args:
        args += ["--checkpoint", str(tmp_path / "pos")]
    result = relay(source, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert "Missing option '--to'" in relay(URL, "--checkpoint", "p").output
    assert relay(URL, "--to", "-").exit_code == 2  # no --checkpoint
    result = relay(URL, "--to", "-", "--checkpoint", "p", "--batch-size", "0")
    assert result.exit_code == 2
    assert "--batch-size" in result.output


def start_relay(table: Table, tmp_path: Path, start: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            ROWCAST,
            "relay",
            URL,
            "--to",
            "-",
            "--to",
            f"sqlite:///{tmp_path / 'events.db'}",
            "--checkpoint",
            str(tmp_path / "pos"),
            "--tables",
            f"test.{table.name}",
            "--from",
            start,
            "--server-id",
            str(server_id()),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def saved(tmp_path: Path) -> str | None:
    with open_checkpoint(str(tmp_path / "pos")) as checkpoint:
        return checkpoint.load()


def test_relay_runs_logs_json_serves_metrics_and_stops_on_sigterm_then_resumes(
    tmp_path: Path,
) -> None:
    table = Table()
    try:
        start = table.position()
        port = free_port()
        process = start_relay(
            table, tmp_path, start, "--log-format", "json", "--metrics-port", str(port)
        )
        table.execute(*(f"INSERT INTO {table.name} VALUES ({i}, 0)" for i in range(3)))
        middle = table.last(start)
        wait_for(lambda: saved(tmp_path) == middle, what="the relay to checkpoint")
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            metrics = reply.read().decode()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err

        first = table.truth(start, middle)
        assert [json.loads(line)["id"] for line in out.splitlines()] == ids(first)
        records = [json.loads(line) for line in err.splitlines()]  # every line: JSON
        assert [r["event"] for r in records if r.get("event") == "start"] == ["start"]
        assert records[-1]["event"] == "stop"
        assert records[-1]["position"] == middle
        assert records[-1]["changes"] == 3
        sink = f'sink="sqlite:///{tmp_path / "events.db"}"'
        assert f"rowcast_relay_changes_delivered_total{{{sink}}} 3.0" in metrics

        # meanwhile, more changes; the next run resumes at the checkpoint (--from is ignored)
        table.execute(f"UPDATE {table.name} SET n = 1", f"DELETE FROM {table.name} WHERE id = 0")
        end = table.last(start)
        process = start_relay(table, tmp_path, start)
        wait_for(lambda: saved(tmp_path) == end, what="the resumed relay to checkpoint")
        process.send_signal(signal.SIGINT)  # Ctrl-C: the same clean stop
        out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        rest = table.truth(middle, end)
        assert [json.loads(line)["id"] for line in out.splitlines()] == ids(rest)
        assert f"relayed 4 changes in 2 transactions to 2 sinks; checkpoint at {end}" in err
        assert stored(tmp_path / "events.db") == expected(first + rest)
    finally:
        table.drop()


def test_snapshot_initial_is_passed_to_the_source_or_refused_clearly(tmp_path: Path) -> None:
    table = Table()
    try:
        table.execute(f"INSERT INTO {table.name} VALUES (1, 10)")
        process = start_relay(table, tmp_path, "now", "--snapshot", "initial")
        try:
            # a snapshot saves where it begins ("at": null) before it hands out a row:
            # wait for the checkpoint of its delivered chunk
            wait_for(
                lambda: (
                    process.poll() is not None
                    or '"at":null' not in (saved(tmp_path) or '"at":null')
                ),
                what="the snapshot or an error",
            )
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=30)
        if process.returncode == 2:  # a source without snapshots
            assert "this source does not take --snapshot" in err
            return
        assert process.returncode == 0, err
        (line,) = out.splitlines()
        change = json.loads(line)
        assert (change["action"], change["after"], change.get("snapshot")) == (
            "write",
            {"id": 1, "n": 10},
            True,
        )
    finally:
        table.drop()


def test_a_json_log_has_a_drivers_warning_as_json_too(capsys: pytest.CaptureFixture[str]) -> None:
    # psycopg's "error ignored terminating <Pipeline>" came out as a bare line in a JSON log
    with RelayDisplay(RelayStats(["-"]), "json", interval=3600):
        logging.getLogger("rowcast.relay").info("a rowcast record")
        logging.getLogger("psycopg").warning("error ignored terminating %s", "<Pipeline>")
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(r["logger"], r["level"]) for r in records] == [
        ("rowcast.relay", "info"),
        ("psycopg", "warning"),
    ]

"""``rowcast consume``: bad input exits 2 at start; the real command, run as a subprocess,
handles relayed changes, logs JSON, serves metrics and stops cleanly on SIGTERM and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from rowcast.cli import main
from rowcast.sinks import open_sink
from rowcast.testing.consume import workload
from rowcast.testing.sink import closed_port
from tests.conftest import require_redis

ROWCAST = str(Path(sys.executable).with_name("rowcast"))
HANDLER = "rowcast.testing.consume:record"


@pytest.fixture
def stream() -> Iterator[str]:
    url = require_redis()
    key = f"consume-cli-test:{uuid.uuid4().hex}"
    yield f"{url}?stream={key}"
    client = redis.Redis.from_url(url)
    client.delete(key, f"{key}:dead")
    client.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["redis://127.0.0.1/0", "--handler", "nocolon"], "a handler is 'module:function'"),
        (["redis://127.0.0.1/0", "--handler", "no_such_mod_x:f"], "cannot import the handler"),
        (["redis://127.0.0.1/0", "--handler", "os:no_such"], "module 'os' has no 'no_such'"),
        (["redis://127.0.0.1/0", "--handler", "os:sep"], "is not callable"),
        (["pulsar://h/t", "--handler", HANDLER], "no rowcast consumer for 'pulsar://h/t'"),
        (["redis://127.0.0.1/0?claim_after=-1", "--handler", HANDLER], "claim_after must be"),
        (
            [f"redis://127.0.0.1:{closed_port()}/0?timeout=1", "--handler", HANDLER],
            "cannot reach the server",
        ),
    ],
)
def test_bad_input_or_an_unreachable_broker_exits_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["consume", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_the_handler_is_required() -> None:
    result = CliRunner().invoke(main, ["consume", "redis://127.0.0.1/0"])
    assert result.exit_code == 2
    assert "--handler" in result.output


def _lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def _wait(predicate: Callable[[], bool], process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while not predicate():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_consume_handles_logs_json_serves_metrics_and_stops_cleanly(
    stream: str, tmp_path: Path, stop: signal.Signals
) -> None:
    log = tmp_path / "handled.txt"
    sink = open_sink(stream)
    sink.deliver(workload(200, 20, table="cli"))
    port = closed_port()
    env = {**os.environ, "ROWCAST_CONSUME_RECORD": str(log)}
    process = subprocess.Popen(
        [
            *(ROWCAST, "consume", stream, "--handler", HANDLER, "--workers", "2"),
            *("--group", "cli", "--log-format", "json", "--metrics-port", str(port)),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait(lambda: _lines(log) >= 200, process)
        sink.deliver(workload(50, 5, table="cli"))  # live changes too
        _wait(lambda: _lines(log) >= 250, process)
        metrics = ""

        def scraped() -> bool:
            nonlocal metrics
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                metrics = reply.read().decode()
            return "rowcast_consume_changes_handled_total 250.0" in metrics

        _wait(scraped, process)  # counted once acknowledged, just after the handler returned
        process.send_signal(stop)
        _out, err = process.communicate(timeout=30)
    finally:
        sink.close()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "rowcast_consume_broker_up 1.0" in metrics
    for line in err.splitlines():
        json.loads(line)  # --log-format json: every stderr line is one JSON object
    assert _lines(log) == 250


def test_a_handler_in_the_current_directory_is_found(stream: str, tmp_path: Path) -> None:
    (tmp_path / "my_consume_handler.py").write_text(
        "def handle(changes):\n"
        "    with open('out.txt', 'a') as f:\n"
        "        f.writelines(f'{c.pk}\\n' for c in changes)\n"
    )
    sink = open_sink(stream)
    sink.deliver(workload(10, 10, table="cwd"))
    sink.close()
    process = subprocess.Popen(
        [ROWCAST, "consume", stream, "--handler", "my_consume_handler:handle"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait(lambda: _lines(tmp_path / "out.txt") >= 10, process)
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "10 changes handled, 0 duplicates skipped, 0 parked" in err

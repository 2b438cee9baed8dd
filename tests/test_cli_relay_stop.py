"""``rowcast relay`` stopping: a second Ctrl-C while it stops keeps the stop clean (exit 0,
the report ``stopped``, the checkpoint at what was delivered), never click's ``Aborted!``."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from rowcast.checkpoint import open_checkpoint
from rowcast.checkpoint.report import read_reports

ROWCAST = str(Path(sys.executable).with_name("rowcast"))
ROWS = 400  # ~1 kB each: far more than a pipe holds, so the stdout sink blocks


def sql(path: Path, *statements: str) -> None:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        for statement in statements:
            conn.execute(statement)


def start_relay(tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            ROWCAST,
            "relay",
            f"sqlite:///{tmp_path / 'app.db'}",
            "--to",
            "-",
            "--checkpoint",
            str(tmp_path / "rz.pos"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(check: object, what: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while not check():  # type: ignore[operator]
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def saved(tmp_path: Path) -> str | None:
    with open_checkpoint(str(tmp_path / "rz.pos")) as checkpoint:
        return checkpoint.load()


def test_a_second_ctrl_c_while_stopping_still_stops_cleanly(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    sql(db, "PRAGMA journal_mode = WAL", "CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
    process = start_relay(tmp_path)
    try:
        wait_for(lambda: saved(tmp_path) is not None, "the relay to own its start", process)
        rows = (f"INSERT INTO t (body) VALUES ('{'x' * 1000}')" for _ in range(ROWS))
        sql(db, "BEGIN", *rows, "COMMIT")
        time.sleep(1.5)  # a batch is read; its delivery blocks on the full stdout pipe
        process.send_signal(signal.SIGINT)
        time.sleep(0.3)  # the first one is handled: the relay is stopping
        process.send_signal(signal.SIGINT)
        time.sleep(0.3)
        out, err = process.communicate(timeout=30)  # reading unblocks the delivery
    finally:
        process.kill()
        process.communicate()
    assert "Aborted!" not in err
    assert process.returncode == 0, err
    delivered = [json.loads(line)["after"]["id"] for line in out.splitlines()]
    # what was read before the stop is delivered whole, in order (a loaded machine may
    # have read less than the whole transaction by then: the restart delivers the rest)
    assert delivered == list(range(1, len(delivered) + 1))
    assert len(delivered) > 64  # more than the pipe held: the stop came while blocked
    assert "already stopping" in err
    [report] = read_reports(str(tmp_path / "rz.pos"))
    assert report["state"] == "stopped", report
    at = saved(tmp_path)

    # a restart delivers what comes next, nothing lost or doubled
    process = start_relay(tmp_path)
    try:
        sql(db, "INSERT INTO t (body) VALUES ('next')")
        rest = []
        killer = threading.Timer(30, process.kill)  # a relay that never delivers it
        killer.start()
        assert process.stdout is not None
        for line in process.stdout:
            rest.append(json.loads(line)["after"]["id"])
            if rest[-1] == ROWS + 1:
                break
        killer.cancel()
        wait_for(lambda: saved(tmp_path) != at, "the restarted relay to checkpoint", process)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == 0, err
    rest += [json.loads(line)["after"]["id"] for line in out.splitlines()]
    assert rest == list(range(len(delivered) + 1, ROWS + 2))

"""A relay refuses a checkpoint another relay runs on (`rowcast.checkpoint.report.holder`).

Two relays saving one checkpoint save over each other's position, and the one behind
skips changes when it starts again. SQLite's readers table and a PostgreSQL slot refuse
the second reader themselves; a MariaDB relay given its own ``--server-id`` did not, so
the relay asks the checkpoint's report first: a fresh report that says it runs, of
another process (alive, on this machine), holds the checkpoint. The whole relays are
in test_cli_mysql_safe and test_new_user_session.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from rowcast.checkpoint import open_checkpoint
from rowcast.checkpoint.report import holder, refuse_a_held
from rowcast.errors import ConfigError


def report(**fields: Any) -> dict[str, Any]:
    return {
        "format": 1,
        "kind": "relay",
        "source": "mysql://root@db:3306/shop",
        "state": "running",
        "pid": 1,
        "host": "elsewhere",
        "interval": 5.0,
        "reported_at": time.time() - 1,
        **fields,
    }


@pytest.fixture(params=["file", "sqlite"])
def url(request: Any, tmp_path: Path) -> str:
    if request.param == "file":
        return str(tmp_path / "relay.pos")
    return f"sqlite:///{tmp_path}/checkpoints.db?name=shop"


def held(url: str, **fields: Any) -> dict[str, Any] | None:
    with open_checkpoint(url) as checkpoint:
        checkpoint.save_report(report(**fields))  # type: ignore[attr-defined]
    with open_checkpoint(url) as checkpoint:
        return holder(checkpoint)


def test_a_fresh_report_of_a_running_relay_elsewhere_holds_it(url: str) -> None:
    assert held(url) is not None
    assert held(url, state="retrying") is not None
    assert held(url, state="starting") is not None


def test_a_stopped_failed_or_stale_relay_holds_nothing(url: str) -> None:
    assert held(url, state="stopped") is None
    assert held(url, state="failed") is None
    assert held(url, reported_at=time.time() - 16) is None  # 3 intervals, at least 15 s
    assert held(url, reported_at=time.time() - 25, interval=10.0) is not None  # 30 s
    assert held(url, kind="consumer") is None


def test_on_this_machine_only_a_live_other_process_holds_it(url: str) -> None:
    here = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert held(url, host=here, pid=dead.pid) is None  # SIGKILLed and started again
    assert held(url, host=here, pid=os.getpid()) is None  # this process's own
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert held(url, host=here, pid=alive.pid) is not None
    finally:
        alive.kill()
        alive.wait()


def test_a_relay_killed_but_not_yet_reaped_holds_nothing(url: str) -> None:
    """A SIGKILLed relay whose parent (a supervisor) has not waited for it yet is a zombie:
    signal 0 still reaches it, but it runs no more (was: its restart refused)."""
    here = socket.gethostname()
    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        killed.kill()
        deadline = time.monotonic() + 10
        while (
            Path(f"/proc/{killed.pid}/stat").read_text().rpartition(")")[2].split()[0] not in "ZX"
        ):
            assert time.monotonic() < deadline, "the process did not die"
            time.sleep(0.01)
        assert held(url, host=here, pid=killed.pid) is None
    finally:
        killed.wait()


def test_a_pid_taken_by_a_process_started_after_the_relay_holds_nothing(url: str) -> None:
    """The killed relay's pid, reused by a process that started after the relay did, is
    not that relay."""
    here = socket.gethostname()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        long_ago = time.time() - 3600
        assert held(url, host=here, pid=other.pid, started_at=long_ago) is None
        assert held(url, host=here, pid=other.pid, started_at=time.time()) is not None
    finally:
        other.kill()
        other.wait()


def test_the_refusal_names_the_holder_and_the_fix(tmp_path: Path) -> None:
    url = str(tmp_path / "relay.pos")
    held(url, pid=4242, host="db-2")
    with open_checkpoint(url) as checkpoint, pytest.raises(ConfigError) as refused:
        refuse_a_held(checkpoint)
    said = str(refused.value)
    assert f"checkpoint {url} is in use: a relay from mysql://root@db:3306/shop" in said
    assert "(pid 4242 on db-2) said it was running 1 s ago" in said
    assert f"rowcast status {url}" in said
    assert "give this one its own --checkpoint" in said


def test_no_report_kept_holds_nothing(tmp_path: Path) -> None:
    with open_checkpoint(str(tmp_path / "relay.pos")) as checkpoint:
        assert holder(checkpoint) is None
        refuse_a_held(checkpoint)

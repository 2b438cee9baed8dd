"""One ``python -m rowcast relay`` child process of a matrix case: started, watched, ended.

The child's standard output goes to a file per run (the stdout sink's output),
its JSON log to one file for both runs. While a case waits for the destination,
`check` fails it at once when the child has exited or is retrying a delivery
(nothing in the matrix should need a retry), with the child's own words.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["WAIT", "CaseFailed", "RelayProcess"]

WAIT = 30.0  # seconds: a bound on each wait, never reached unless something is stuck
RETRIES = 3  # a delivery retried this many times fails the case


class CaseFailed(Exception):
    """The case cannot go on: its message says why, with the relay's last words."""


class RelayProcess:
    """``python -m rowcast relay SOURCE --to SINK --checkpoint FILE ...``, run after run."""

    def __init__(
        self, tmp: Path, source: str, args: list[str], sink: str, checkpoint: str | None = None
    ) -> None:
        self.tmp = tmp
        self.log = tmp / "relay.log"
        self.checkpoint = checkpoint or tmp / "checkpoint"
        self.command = [
            sys.executable,
            "-m",
            "rowcast",
            "relay",
            source,
            *args,
            "--to",
            sink,
            "--checkpoint",
            str(self.checkpoint),
            "--batch-size",
            "4",  # several batches per phase: the kill falls between two
            "--log-format",
            "json",
        ]
        self.runs = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, stdout: Path) -> None:
        self.runs += 1
        with stdout.open("wb") as out, self.log.open("ab") as err:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=err)

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records of every run so far (a line cut by SIGKILL left out)."""
        text = self.log.read_text() if self.log.exists() else ""
        found = []
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
        return found

    def last_words(self) -> str:
        """What the log ends with: its last record's message, or a traceback's last line."""
        text = self.log.read_text() if self.log.exists() else ""
        lines = [line for line in text.splitlines() if line.strip()]
        if not lines:
            return "(nothing logged)"
        try:
            return str(json.loads(lines[-1]).get("message"))
        except ValueError:
            return lines[-1].strip()

    def check(self) -> None:
        """Raise `CaseFailed` when the child has exited or keeps retrying a delivery."""
        assert self.process is not None
        status = self.process.poll()
        if status is not None:
            raise CaseFailed(f"the relay exited with status {status}: {self.last_words()}")
        for record in self.records():
            if record.get("event") == "retry" and record.get("attempt", 0) >= RETRIES:
                raise CaseFailed(
                    f"the relay retried a delivery {record['attempt']} times: {record.get('error')}"
                )

    def wait(self, condition: Callable[[], bool], what: str) -> None:
        """Poll `condition` while the child runs well; `CaseFailed` after `WAIT` seconds."""
        deadline = time.monotonic() + WAIT
        while not condition():
            self.check()
            if time.monotonic() > deadline:
                raise CaseFailed(f"timed out after {WAIT:.0f} s waiting for {what}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL, at once: no batch finished, no checkpoint saved."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> int:
        """SIGTERM, as a user's Ctrl-C: the batch in flight is finished; the exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(WAIT)
        except subprocess.TimeoutExpired:
            raise CaseFailed(f"the relay went on for {WAIT:.0f} s after SIGTERM") from None

    def close(self) -> None:
        """Kill a child still running (a case that failed half way)."""
        if self.process is not None and self.process.poll() is None:
            self.kill()

    def started_from(self) -> list[str | None]:
        """Where each run started: the checkpoint it resumed from (None: it was empty)."""
        return [r.get("position") for r in self.records() if r.get("event") == "start"]

    def changes_of_last_run(self) -> int | None:
        """How many changes the last run delivered, from its ``stop`` record."""
        stops = [r for r in self.records() if r.get("event") == "stop"]
        return stops[-1].get("changes") if stops else None

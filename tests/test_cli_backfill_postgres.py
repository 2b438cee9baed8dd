"""A real ``rowcast relay`` of PostgreSQL killed mid-backfill, restarted, ends equal to the table.

The table has rows from before the relay started (a composite key of text and
int); a writer updates, deletes and inserts random rows the whole time; the
backfill is asked for with ``source.backfill``; the relay is SIGKILLed once it
delivered part of it, and started again: it resumes from the chunk its checkpoint
holds (not from scratch). At the end, replaying the event store it filled gives
the table row for row, and each row's last event is the row as the table has it
(no row went back in time).
"""

from __future__ import annotations

import json
import random
import secrets
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from rowcast import Change
from rowcast.sources.postgres import LogicalSource
from tests.conftest import wait_for
from tests.relaying import checkpointed, relay, stored
from tests.sources.test_postgres import private_database

RUN = secrets.token_hex(3)
ROWS = 30000


def key(n: int) -> tuple[str, int]:
    return (f"r{n % 4}", n)


class Writer(threading.Thread):
    """Updates, deletes and inserts random rows of ``rc_bf``, each its own transaction."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.conn = psycopg2.connect(url)
        self.conn.autocommit = True
        self.live, self.next, self.writes = list(range(1, ROWS + 1)), ROWS + 1, 0
        self.done, self.random = threading.Event(), random.Random(11)

    def run(self) -> None:
        cur = self.conn.cursor()
        while not self.done.is_set():
            op = self.random.random()
            if op < 0.2:
                cur.execute("INSERT INTO rc_bf VALUES (%s, %s, 'w')", key(self.next))
                self.live.append(self.next)
                self.next += 1
            elif op < 0.8:
                n = self.live[self.random.randrange(len(self.live))]
                cur.execute(
                    "UPDATE rc_bf SET data = %s WHERE region = %s AND id = %s",
                    (f"u{self.writes}", *key(n)),
                )
            else:
                n = self.live.pop(self.random.randrange(len(self.live)))
                cur.execute("DELETE FROM rc_bf WHERE region = %s AND id = %s", key(n))
            self.writes += 1
            time.sleep(0.001)

    def finish(self) -> None:
        self.done.set()
        self.join(30)
        self.conn.close()


def start(url: str, tmp_path: Path) -> subprocess.Popen[str]:
    return relay(f"{url}?slot=rc_bfkill_{RUN}", tmp_path, "--tables", "rc_bf")


def past_chunks(tmp_path: Path) -> bool:
    """Whether the relay checkpointed a few chunks of the backfill, and delivered more."""
    read = [c for c in stored(tmp_path) if c.snapshot]
    saved = checkpointed(tmp_path)
    return len(read) >= 600 and saved is not None and lsn(saved) >= lsn(read[200].position)


def lsn(position: str | None) -> int:
    high, low = str(position).split("/")
    return (int(high, 16) << 32) | int(low, 16)


def done(url: str, request: int) -> bool:
    status = next(s for s in LogicalSource(url).backfills() if s.id == request)
    return status.done


@pytest.mark.server
def test_a_relay_killed_mid_backfill_resumes_and_no_row_goes_back_in_time(
    tmp_path: Path,
) -> None:
    with private_database(f"rc_bfkill_{RUN}") as url:
        conn = psycopg2.connect(url)
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("CREATE TABLE rc_bf (region TEXT, id INT, data TEXT, PRIMARY KEY (region, id))")
        rows = f"SELECT 'r' || (g % 4), g, 's' || g FROM generate_series(1, {ROWS}) g"
        cur.execute(f"INSERT INTO rc_bf {rows}")
        writer = Writer(url)
        process = start(url, tmp_path)
        try:
            wait_for(lambda: process.poll() is not None or checkpointed(tmp_path) is not None)
            writer.start()
            request = LogicalSource(url).backfill(["rc_bf"], chunk=50)
            wait_for(lambda: process.poll() is not None or past_chunks(tmp_path), seconds=60)
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=30)
            at_kill = checkpointed(tmp_path)
            before = [c for c in stored(tmp_path) if c.snapshot]
            assert not done(url, request), "the backfill was done: the test proves nothing"
            assert 0 < len(before) < ROWS
            time.sleep(0.5)  # the writer goes on while the relay is down
            process = start(url, tmp_path)
            wait_for(lambda: process.poll() is not None or done(url, request), seconds=120)
            writer.finish()
            cur.execute("INSERT INTO rc_bf VALUES ('marker', 0, 'm')")
            wait_for(
                lambda: (
                    process.poll() is not None
                    or any(c.pk == ("marker", 0) for c in stored(tmp_path))
                ),
                seconds=60,
            )
            assert process.poll() is None, process.communicate()[1]
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=30)
            assert process.returncode == 0, err
        finally:
            writer.done.set()
            if process.poll() is None:
                process.kill()
                process.communicate()
        records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        began = next(r for r in records if r.get("event") == "start")  # after opening's records
        assert began["position"] == at_kill  # it resumed from its checkpoint
        changes = stored(tmp_path)
        cur.execute("SELECT region, id, data FROM rc_bf")
        table = {(r, i): {"region": r, "id": i, "data": d} for r, i, d in cur.fetchall()}
        conn.close()
    state: dict[Any, Any] = {}
    last: dict[Any, Change] = {}
    for change in changes:
        last[change.pk] = change
        if change.action == "delete":
            state.pop(change.pk, None)
        else:
            state[change.pk] = change.after
    assert state == table  # replayed: the table, row for row
    for pk, change in last.items():  # each row's last event is the row as it is
        assert (change.after if change.action != "delete" else None) == table.get(pk), change
    read = [c for c in changes if c.snapshot]
    again = read[len(before) :]
    assert again
    assert again[0].pk != read[0].pk, "resumed from scratch"
    twice = {c.pk for c in again} & {c.pk for c in before}  # past the checkpoint only
    assert len(twice) < len(before)
    assert writer.writes > 300

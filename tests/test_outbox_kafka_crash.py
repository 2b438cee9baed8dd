"""The outbox relayed into Kafka exactly once, the relay killed right after a Kafka commit.

The outbox source deletes the rows it relayed once the checkpoint holds their
position, which is after the Kafka transaction that carried them committed: a relay
killed in between hands those transactions out again when it restarts. The relay
says so at start (a warning), and what it hands out again carries the same change
ids, so a consumer that skips ids it has seen (``rowcast consume``) handles each
change once; nothing is lost.

The relay here is ``rowcast relay`` in a subprocess whose Kafka sink ends the process
(``os._exit``, as SIGKILL would) right after its third commit: the worst moment,
every time, instead of a random kill that rarely lands there.
"""

from __future__ import annotations

import collections
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from rowcast.sources.sqlalchemy import SessionCapture
from tests import kafka
from tests.conftest import require_kafka
from tests.test_cli_relay import ROWCAST

pytestmark = pytest.mark.server

TRANSACTIONS = 20

# `rowcast relay` whose Kafka sink exits the process right after its third commit
DIES_AFTER_A_COMMIT = """
import os, sys
from rowcast.sinks import kafka
commit, commits = kafka.KafkaSink._commit, []
def dying(self, producer):
    commit(self, producer)
    commits.append(1)
    if len(commits) == 3:
        os._exit(9)
kafka.KafkaSink._commit = dying
from rowcast.cli import main
main(sys.argv[1:], prog_name="rowcast")
"""


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "item"
    id: Mapped[int] = mapped_column(primary_key=True)
    v: Mapped[int]


def test_a_relay_killed_after_a_commit_delivers_again_with_the_same_ids(tmp_path: Path) -> None:
    require_kafka()
    path = tmp_path / "app.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    sessions = sessionmaker(engine)
    with SessionCapture(sessions, outbox=True):
        for i in range(TRANSACTIONS):
            with sessions() as session:
                session.add(Item(id=i, v=i))
                session.commit()
    engine.dispose()
    topic = kafka.unique("rowcast-outbox-crash")
    args = [
        "relay",
        f"outbox+sqlite:///{path}",
        "--to",
        f"{kafka.KAFKA}?topic={topic}",
        "--checkpoint",
        f"{kafka.KAFKA}?topic={topic}.checkpoints&name=outbox",
        "--batch-size",
        "2",
    ]
    try:
        first = subprocess.run(
            [sys.executable, "-c", DIES_AFTER_A_COMMIT, *args, "--log-format", "json"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert first.returncode == 9, first.stderr[-3000:]
        # said while the relay opens, in the log's format (it was a bare line in JSON)
        records = [json.loads(line) for line in first.stderr.splitlines()]
        (warned,) = [r for r in records if r.get("event") == "redelivers"]
        assert warned["level"] == "warning"
        assert "exactly once holds for what this source hands out once" in warned["message"]
        assert "delivers those transactions again on restart" in warned["message"]
        second = subprocess.Popen(
            [ROWCAST, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        try:
            deadline = time.monotonic() + 60
            while _left(path):  # rows are deleted once relayed
                assert second.poll() is None, second.communicate()[1][-3000:]
                assert time.monotonic() < deadline, "the restarted relay to empty the outbox"
                time.sleep(0.1)
        finally:
            second.send_signal(signal.SIGTERM)
            _, log = second.communicate(timeout=60)
        assert second.returncode == 0, log[-3000:]
        labels = kafka.committed_transactions(f"{topic}.checkpoints")
        ids = []
        for message in kafka.read([topic]):
            headers = dict(message.headers())
            if headers["rowcast-transaction"].decode() in labels:  # tansu shows aborted ones
                ids.append((headers["rowcast-id"].decode(), message.value()))
        seen = collections.Counter(change_id for change_id, _ in ids)
        assert len(seen) == TRANSACTIONS  # nothing lost
        values = collections.defaultdict(set)
        for change_id, value in ids:
            values[change_id].add(value)
        assert all(len(v) == 1 for v in values.values())  # a copy is the same change
        again = sum(n - 1 for n in seen.values())
        # only what the killed relay had committed (3 batches of 2) can come again
        assert again <= 6, seen
        print(f"delivered again after the kill: {again} of {TRANSACTIONS}")
    finally:
        kafka.delete_topics(topic)


def _left(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM rowcast_outbox").fetchone()[0])


def test_a_source_read_in_a_child_process_says_it_too(tmp_path: Path) -> None:
    """``--source-process``: the relay sees a `ProcessSource`, which answers for its class."""
    from rowcast.sources._process import ProcessSource
    from rowcast.sources.outbox import OutboxSource

    url = f"outbox+sqlite:///{tmp_path / 'app.db'}"
    assert ProcessSource(url, str(tmp_path / "pos")).redelivers == OutboxSource.redelivers
    assert ProcessSource("sqlite:///app.db", str(tmp_path / "pos")).redelivers is None

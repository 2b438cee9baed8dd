"""``rowcast relay``'s first run owns its position from its first moment (issue 17).

The user's step, on each log source (MariaDB's binlog, PostgreSQL's logical
replication, SQLite's triggers), with the default ``--from now`` and an empty
checkpoint: the relay starts, a row is written, and the first run ends before
any sink took it: Ctrl-C or SIGKILL while Redis is down, or exit 3 on a first
batch refused for good. The restart, with a working sink, must deliver the row
(it began "from the source's now" again and never did).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pymysql
import pytest

from rowcast.checkpoint import open_checkpoint
from tests.conftest import require_server
from tests.sources.test_postgres import drop_slot, private_database
from tests.test_relay import RedisServer, wait_for

pytestmark = pytest.mark.server

ROWCAST = str(Path(sys.executable).with_name("rowcast"))
RUN = secrets.token_hex(3)
LIMIT = 60  # seconds any wait here may take before the test calls the relay hung
LOGS: dict[int, Path] = {}  # a relay's pid -> its log


class Database:
    """A source database with a table ``t (id INT PRIMARY KEY, n INT)``: its relay URL and
    a way to write to it."""

    def __init__(
        self, url: str, write: Callable[[str], None], lsn: Callable[[], str] | None = None
    ) -> None:
        self.url = url
        self.write = write
        self.lsn = lsn  # PostgreSQL: the server's WAL position now

    def now(self) -> str | None:
        """PostgreSQL: the WAL position now (None elsewhere)."""
        return self.lsn() if self.lsn is not None else None

    def kept(self, began: str | None, saved: str | None, written: str | None) -> bool:
        """Whether a checkpoint that was `began` and is `saved` holds nothing past a row
        whose write ended before `written`: unmoved, or (PostgreSQL, whose idle slot moves
        on with the server's keepalives) still before that."""
        if written is None or saved == began:
            return saved == began
        return _lsn(saved or "0/0") < _lsn(written)


@contextlib.contextmanager
def mariadb() -> Iterator[Database]:
    require_server("mysql")
    name = f"rc_first_{RUN}_{secrets.token_hex(2)}"
    conn = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
            cur.execute(f"CREATE TABLE {name}.t (id INT PRIMARY KEY, n INT)")

        def write(statement: str) -> None:
            with conn.cursor() as cur:
                cur.execute(f"USE {name}")
                cur.execute(statement)

        yield Database(f"mysql://root@127.0.0.1:3306/{name}", write)
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.close()


@contextlib.contextmanager
def postgresql() -> Iterator[Database]:
    with private_database(f"rc_first_{RUN}_{secrets.token_hex(2)}") as url:
        conn = psycopg2.connect(url)
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, n INT)")
        try:

            def now() -> str:
                cur.execute("SELECT pg_current_wal_lsn()")
                return str(cur.fetchone()[0])

            yield Database(url, cur.execute, now)
        finally:
            cur.execute("SELECT slot_name FROM pg_replication_slots")
            for (slot,) in cur.fetchall():
                drop_slot(cur, slot)
            conn.close()


@contextlib.contextmanager
def sqlite(tmp_path: Path) -> Iterator[Database]:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE t (id INT PRIMARY KEY, n INT)")
    try:
        yield Database(f"sqlite:///{path}", conn.execute)
    finally:
        conn.close()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()  # of this test's own: it goes down and comes back
    server.start()
    yield server
    server.kill()


@pytest.fixture(params=["mysql", "postgresql", "sqlite"])
def source(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    opened = {"mysql": mariadb, "postgresql": postgresql}.get(request.param)
    with opened() if opened is not None else sqlite(tmp_path) as database:
        yield database


def start(source: Database, sink: str, tmp_path: Path) -> subprocess.Popen[str]:
    """``rowcast relay`` from `source` (``--from`` left at now) to `sink`, JSON log in a file."""
    log = (tmp_path / "relay.log").open("a")
    try:
        checkpoint = str(tmp_path / "rd.pos")
        process = subprocess.Popen(
            [
                ROWCAST,
                "relay",
                source.url,
                "--to",
                sink,
                "--checkpoint",
                checkpoint,
                "--log-format",
                "json",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )
    finally:
        log.close()
    LOGS[process.pid] = tmp_path / "relay.log"
    return process


def _lsn(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def saved(tmp_path: Path) -> str | None:
    with open_checkpoint(str(tmp_path / "rd.pos")) as checkpoint:
        return checkpoint.load()


def events(tmp_path: Path) -> list[dict[str, Any]]:
    lines = (tmp_path / "relay.log").read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def until(process: subprocess.Popen[str], condition: Callable[[], Any], what: str) -> None:
    wait_for(lambda: process.poll() is not None or condition(), LIMIT, what)
    if process.poll() is not None:
        log = LOGS[process.pid].read_text()
        raise AssertionError(f"the relay exited ({process.returncode}) before {what}:\n{log}")


@contextlib.contextmanager
def relaying(source: Database, sink: str, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A relay that is stopped (SIGTERM) on leaving, if it still runs."""
    process = start(source, sink, tmp_path)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(LIMIT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def streamed(server: RedisServer) -> list[dict[str, Any]]:
    import redis

    client = redis.Redis(port=server.port)
    try:
        return [json.loads(f[b"body"]) for _, f in client.xrange("changes")]
    except redis.RedisError:
        return []
    finally:
        client.close()


@pytest.mark.parametrize("ending", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_a_first_run_stopped_while_its_sink_is_down_delivers_the_row_on_restart(
    source: Database, ending: signal.Signals, redis_server: RedisServer, tmp_path: Path
) -> None:
    sink = f"{redis_server.url}?stream=changes&timeout=1"
    with relaying(source, sink, tmp_path) as first:
        until(first, lambda: saved(tmp_path) is not None, "the relay recorded where it starts")
        began = saved(tmp_path)
        redis_server.kill()
        source.write("INSERT INTO t VALUES (1, 10)")
        written = source.now()
        until(
            first,
            lambda: any(e.get("event") == "retry" for e in events(tmp_path)),
            "the relay to retry the down sink",
        )
        first.send_signal(ending)
        first.wait(LIMIT)
    assert source.kept(began, saved(tmp_path), written)  # nothing delivered: nothing checkpointed
    redis_server.start()
    with relaying(source, sink, tmp_path) as second:
        until(second, lambda: streamed(redis_server), "the row delivered on restart")
    (change,) = streamed(redis_server)
    assert (change["table"], change["pk"], change["after"]) == ("t", 1, {"id": 1, "n": 10})


def test_a_first_batch_refused_for_good_is_delivered_after_the_fix(
    source: Database, tmp_path: Path
) -> None:
    refusing = tmp_path / "refusing.db"
    with contextlib.closing(sqlite3.connect(refusing)) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER CHECK (n < 100))")
    with relaying(source, f"sqlite:///{refusing}?mode=replicate", tmp_path) as first:
        until(first, lambda: saved(tmp_path) is not None, "the relay recorded where it starts")
        began = saved(tmp_path)
        source.write("INSERT INTO t VALUES (1, 1000)")
        written = source.now()
        assert first.wait(LIMIT) == 3
    (refused,) = [e for e in events(tmp_path) if e.get("event") == "refused"]
    assert "CHECK constraint failed" in refused["error"]
    assert source.kept(began, saved(tmp_path), written)
    working = tmp_path / "working.db"

    def replicated() -> list[tuple[Any, ...]]:
        if not working.exists():
            return []
        with (
            contextlib.closing(sqlite3.connect(working)) as conn,
            contextlib.suppress(sqlite3.OperationalError),  # no table yet
        ):
            return conn.execute("SELECT id, n FROM t").fetchall()
        return []

    with relaying(source, f"sqlite:///{working}?mode=replicate", tmp_path) as second:
        until(second, replicated, "the row delivered after the fix")
    assert replicated() == [(1, 1000)]

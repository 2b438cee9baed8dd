"""``--snapshot initial`` from the command line, on MySQL/MariaDB, PostgreSQL and SQLite.

``rowcast tail --snapshot initial`` prints the rows, then the changes; bad uses
exit 2 with the fix. A real ``rowcast relay`` process killed with SIGKILL in the
middle of a PostgreSQL or MariaDB snapshot, while a writer races it and after it
delivered rows past its checkpoint (one of which is then deleted, another moved
to a new key), resumes when started again: the event store it fills then holds
every row and change to rebuild the table exactly.
"""

from __future__ import annotations

import contextlib
import json
import random
import secrets
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import psycopg2
import pymysql
import pytest
from click.testing import CliRunner, Result

from rowcast import Change
from rowcast.cli import main
from rowcast.sources._snapshot import parse
from rowcast.testing.snapshot import replay
from tests.conftest import require_server, wait_for
from tests.relaying import checkpointed, relay, stored
from tests.sources.test_postgres import private_database
from tests.test_relay import server_id

RUN = secrets.token_hex(3)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def tail_json(*args: str) -> list[Change]:
    result = invoke("tail", *args, "--snapshot", "initial", "--to", "now", "--format", "json")
    assert result.exit_code == 0, result.output
    return [Change.from_json(line) for line in result.stdout.splitlines()]


def test_the_help_says_where_snapshots_work() -> None:
    for command in ("tail", "relay"):
        text = " ".join(invoke(command, "--help").output.split())
        assert "--snapshot [initial|never]" in text
        assert "--snapshot-chunk ROWS" in text
        assert "(MySQL/MariaDB, PostgreSQL, SQLite)" in text


def test_tail_snapshot_on_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, data TEXT)")
        conn.executemany("INSERT INTO items (data) VALUES (?)", [("a",), ("b",), ("c",)])
    changes = tail_json(f"sqlite:///{path}", "--snapshot-chunk", "2")
    assert [(c.name, c.pk, c.snapshot) for c in changes] == [
        ("items_write", i, True) for i in (1, 2, 3)
    ]
    assert len({c.position for c in changes}) == 2  # two chunks


@pytest.mark.server
def test_tail_snapshot_on_postgresql() -> None:
    with private_database(f"rc_clisnap_{RUN}") as url:
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE items (id INT PRIMARY KEY, data TEXT)")
            cur.execute("INSERT INTO items VALUES (1, 'a'), (2, 'b')")
            cur.execute("CREATE TABLE nokey (v INT)")
        changes = tail_json(url, "--tables", "items")
        assert [(c.name, c.pk, c.snapshot) for c in changes] == [
            ("items_write", 1, True),
            ("items_write", 2, True),
        ]
        refused = invoke("tail", url, "--tables", "nokey", "--snapshot", "initial", "--to", "now")
        assert refused.exit_code == 2, refused.output
        assert "no primary key and no replica identity" in refused.output
        assert "ALTER TABLE public.nokey REPLICA IDENTITY FULL;" in refused.output
        assert "Traceback" not in refused.output
        with psycopg2.connect(url) as conn, conn.cursor() as cur:  # a tail leaves nothing
            cur.execute(
                "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"
            )
            assert cur.fetchone()[0] == 0
            cur.execute("SELECT count(*) FROM pg_publication")
            assert cur.fetchone()[0] == 0


@pytest.mark.server
def test_tail_snapshot_on_mysql() -> None:
    require_server("mysql")
    database = f"rc_clisnap_{RUN}"
    admin = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE {database}")
            cur.execute(f"CREATE TABLE {database}.items (id INT PRIMARY KEY, data TEXT)")
            cur.execute(f"INSERT INTO {database}.items VALUES (1, 'a'), (2, 'b')")
        changes = tail_json(
            f"mysql://root@127.0.0.1:3306/{database}",
            "--tables",
            f"{database}.items",
            "--server-id",
            str(server_id()),
        )
        assert [(c.name, c.pk, c.snapshot) for c in changes] == [
            ("items_write", 1, True),
            ("items_write", 2, True),
        ]
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {database}")
        admin.close()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--from", "start"], "leave start at 'now'"),
        (["--snapshot-chunk", "0"], "--snapshot-chunk"),
    ],
)
def test_tail_snapshot_bad_usage_exits_2(tmp_path: Path, extra: list[str], message: str) -> None:
    path = tmp_path / "app.db"
    sqlite3.connect(path).close()
    result = invoke("tail", f"sqlite:///{path}", "--snapshot", "initial", *extra)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- a relay killed mid-snapshot

ROWS = 30000


class Writer(threading.Thread):
    """Inserts, updates and deletes rows of ``rc_kill`` by id, each its own transaction,
    on a DB-API connection of its own (psycopg2's or pymysql's: both write ``%s``)."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.conn = connect()
        self.live = list(range(1, ROWS + 1))
        self.next, self.writes = ROWS + 1, 0
        self.done = threading.Event()
        self.random = random.Random(5)

    def run(self) -> None:
        cur = self.conn.cursor()
        while not self.done.is_set():
            op = self.random.random()
            if op < 0.3:
                cur.execute("INSERT INTO rc_kill VALUES (%s, 'w')", (self.next,))
                self.live.append(self.next)
                self.next += 1
            elif op < 0.8:
                key = self.live[self.random.randrange(len(self.live))]
                cur.execute("UPDATE rc_kill SET data = %s WHERE id = %s", (f"u{self.writes}", key))
            else:
                key = self.live.pop(self.random.randrange(len(self.live)))
                cur.execute("DELETE FROM rc_kill WHERE id = %s", (key,))
            self.writes += 1
            time.sleep(0.001)

    def finish(self) -> None:
        self.done.set()
        self.join(30)
        self.conn.close()


def start(url: str, tmp_path: Path) -> subprocess.Popen[str]:
    # small chunks, a query each: the snapshot lasts seconds, past the relay's checkpoint
    # saves (every second), so that it is killed in the middle of it
    snapshot = ["--snapshot", "initial", "--snapshot-chunk", "5"]
    return relay(url, tmp_path, "--tables", "rc_kill", *snapshot)


def cut_key(position: str) -> int:
    """The last key a snapshot position says was read."""
    at = parse(position, str).at
    assert at is not None
    return int(at[2][0])


def past_the_checkpoint(tmp_path: Path) -> bool:
    """Whether the relay delivered a row past the key its checkpoint holds."""
    saved = checkpointed(tmp_path) or ""
    if '"at":["' not in saved:  # no chunk checkpointed yet
        return False
    last = stored(tmp_path, 1)
    return bool(last) and last[0].snapshot and last[0].pk > cut_key(saved) + 100


class Killing(NamedTuple):
    """A database whose ``rc_kill`` holds `ROWS` rows: the relay's URL, a cursor on it
    (autocommit), and how to open another connection to it (the writer's)."""

    url: str
    cur: Any
    connect: Callable[[], Any]


@contextlib.contextmanager
def postgresql_kill() -> Iterator[Killing]:
    with private_database(f"rc_clikill_{RUN}") as url:

        def connect() -> Any:
            conn = psycopg2.connect(url)
            conn.autocommit = True
            return conn

        conn = connect()
        cur = conn.cursor()
        cur.execute("CREATE TABLE rc_kill (id INT PRIMARY KEY, data TEXT)")
        cur.execute("ALTER TABLE rc_kill REPLICA IDENTITY FULL")
        cur.execute(f"INSERT INTO rc_kill SELECT g, 's' || g FROM generate_series(1, {ROWS}) g")
        try:
            yield Killing(url, cur, connect)
        finally:
            conn.close()


@contextlib.contextmanager
def mysql_kill() -> Iterator[Killing]:
    require_server("mysql")
    name = f"rc_clikill_{RUN}"

    def connect(database: str | None = name) -> Any:
        return pymysql.connect(host="127.0.0.1", user="root", database=database, autocommit=True)

    admin = connect(None)
    admin.cursor().execute(f"CREATE DATABASE {name}")
    try:
        conn = connect()
        cur = conn.cursor()
        cur.execute("CREATE TABLE rc_kill (id INT PRIMARY KEY, data TEXT) ENGINE=InnoDB")
        for first in range(1, ROWS + 1, 5000):
            rows = range(first, min(first + 5000, ROWS + 1))
            cur.execute("INSERT INTO rc_kill VALUES " + ", ".join(f"({i}, 's{i}')" for i in rows))
        try:
            yield Killing(f"mysql://root@127.0.0.1:3306/{name}", cur, connect)
        finally:
            conn.close()
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


@pytest.fixture(params=["postgresql", "mysql"])
def killing_db(request: pytest.FixtureRequest) -> Iterator[Killing]:
    with (postgresql_kill if request.param == "postgresql" else mysql_kill)() as database:
        yield database


@pytest.mark.server
def test_a_relay_killed_mid_snapshot_resumes_with_nothing_missed_or_doubled(
    killing_db: Killing, tmp_path: Path
) -> None:
    url, cur = killing_db.url, killing_db.cur
    writer = Writer(killing_db.connect)
    writer.start()
    process = start(url, tmp_path)
    try:
        # killed before the snapshot is done, having delivered rows past its checkpoint
        wait_for(lambda: process.poll() is not None or past_the_checkpoint(tmp_path), seconds=60)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
        at_kill = checkpointed(tmp_path) or ""
        assert at_kill.startswith("snapshot:")
        read_before = [c for c in stored(tmp_path) if c.snapshot]
        # mid-snapshot is what its checkpoint says (above): it may have handed out every
        # row by then, more than ROWS with the writer's inserts (30,009 once), and not
        # saved the end yet
        assert read_before, "not killed mid-snapshot: the test proves nothing"
        # rows it delivered past its checkpoint change or go while it is down
        past = [c.pk for c in read_before if c.pk > cut_key(at_kill)]
        assert len(past) >= 3, "nothing delivered past the checkpoint: the test proves nothing"
        cur.execute("DELETE FROM rc_kill WHERE id = %s", (past[0],))
        # updated, then gone: the consumer must follow the row to its delete
        cur.execute("UPDATE rc_kill SET data = 'then gone' WHERE id = %s", (past[1],))
        cur.execute("DELETE FROM rc_kill WHERE id = %s", (past[1],))
        cur.execute("UPDATE rc_kill SET data = 'then moved' WHERE id = %s", (past[-1],))
        cur.execute("UPDATE rc_kill SET id = -1 WHERE id = %s", (past[-1],))
        time.sleep(0.5)  # the writer goes on while the relay is down
        process = start(url, tmp_path)
        wait_for(
            lambda: (
                process.poll() is not None
                or not (checkpointed(tmp_path) or "snapshot:").startswith("snapshot:")
            ),
            seconds=120,
        )
        writer.finish()
        cur.execute("INSERT INTO rc_kill VALUES (0, 'marker')")
        wait_for(
            lambda: (
                process.poll() is not None
                or any(c.pk == 0 and not c.snapshot for c in stored(tmp_path, 20))
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
    assert began["position"] == at_kill  # it resumed from the snapshot's checkpoint
    changes = stored(tmp_path)
    cur.execute("SELECT id, data FROM rc_kill")
    assert replay(changes, reread=True) == dict(cur.fetchall())
    assert writer.writes > 100

"""A new user's session, walked in order on MariaDB, PostgreSQL and SQLite (issue 17).

Each source gets a database of its own and one test that goes where a new user
goes with the README open. The README's ``rowcast tail`` as pasted (pointed at
that database) shows a row; then a typo'd table and a wrong database. The
README's ``rowcast relay`` as pasted (its files in the test's directory, a Redis
stream beside its event store; on PostgreSQL it names a table without a key
first, and the user leaves that table out) is stopped with Ctrl-C right after an
INSERT, while its checkpoint holds only where it began, and started again; a
second copy of it is started on the same checkpoint; it is killed with SIGKILL
while the app writes, and started again. Every mistake exits 2 with one
paragraph naming the fix, never a traceback. At the end every change the app
made since the relay first started is in the event store exactly once and in the
Redis stream at least once (on PostgreSQL, the rows that were there come first,
read by ``--snapshot initial``), the app's writes work (on PostgreSQL, an UPDATE
of a table without a key that rowcast does not capture), and the tails left
nothing in the database.
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import psycopg2
import pymysql
import pytest

from rowcast import Change
from rowcast.checkpoint import open_checkpoint
from rowcast.store import EventStore
from tests.conftest import require_redis, require_server, wait_for
from tests.sources.test_postgres import private_database
from tests.test_cli_capture_bad_input import readme, with_tables, with_url

ROWCAST = str(Path(sys.executable).with_name("rowcast"))
RUN = secrets.token_hex(3)
LIMIT = 60  # seconds any one wait may take before the test calls it hung
Key = tuple[str, Any, Any]  # (action, pk, n): one change the app made to `orders`


# ----------------------------------------------------------------- the app's database


class App:
    """The app's database: its URL, its own autocommit connection, what rowcast left."""

    kind = ""
    #: the README's commands begin with this
    prefix = ""

    def __init__(self, url: str, execute: Callable[[str], Any], query: Callable[[str], Any]):
        self.url, self.execute, self._query = url, execute, query

    def rows(self) -> dict[int, int]:
        return {int(i): int(n) for i, n in self._query("SELECT id, n FROM orders")}

    def leftovers(self) -> list[str]:
        """What rowcast made in the database (a tail must leave nothing)."""
        raise NotImplementedError


class MariaDB(App):
    kind, prefix = "mysql", "mysql://"

    def leftovers(self) -> list[str]:
        return [str(t) for (t,) in self._query("SHOW TABLES") if str(t) != "orders"]


class PostgreSQL(App):
    kind, prefix = "postgresql", "postgresql://"

    def leftovers(self) -> list[str]:
        slots = self._query(
            "SELECT slot_name FROM pg_replication_slots WHERE database = current_database()"
        )
        publications = self._query("SELECT pubname FROM pg_publication")
        return [f"slot {s}" for (s,) in slots] + [f"publication {p}" for (p,) in publications]


class SQLite(App):
    kind, prefix = "sqlite", "sqlite://"

    def leftovers(self) -> list[str]:
        return [
            f"{kind} {name}"
            for kind, name in self._query("SELECT type, name FROM sqlite_master")
            if kind == "trigger" or name.startswith("rowcast")
        ]


@contextlib.contextmanager
def mariadb() -> Iterator[App]:
    require_server("mysql")
    name = f"rc_session_{RUN}"
    admin = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    conn = pymysql.connect(host="127.0.0.1", user="root", database=name, autocommit=True)
    cur = conn.cursor()

    def query(sql: str) -> Any:
        cur.execute(sql)
        return cur.fetchall()

    try:
        cur.execute("CREATE TABLE orders (id INT PRIMARY KEY, n INT)")
        yield MariaDB(f"mysql://root@127.0.0.1:3306/{name}", cur.execute, query)
    finally:
        conn.close()
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


@contextlib.contextmanager
def postgresql() -> Iterator[App]:
    with private_database(f"rc_session_{RUN}") as url:
        conn = psycopg2.connect(url)
        conn.autocommit = True
        cur = conn.cursor()

        def query(sql: str) -> Any:
            cur.execute(sql)
            return cur.fetchall()

        try:
            cur.execute("CREATE TABLE orders (id INT PRIMARY KEY, n INT)")
            cur.execute("CREATE TABLE app_log (at timestamptz DEFAULT now(), line text)")
            cur.execute("INSERT INTO app_log (line) VALUES ('started')")
            yield PostgreSQL(url, cur.execute, query)
        finally:
            conn.close()


@contextlib.contextmanager
def sqlite(tmp_path: Path) -> Iterator[App]:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path, isolation_level=None, timeout=LIMIT, check_same_thread=False)
    try:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, n INT)")
        yield SQLite(f"sqlite:///{path}", conn.execute, lambda sql: conn.execute(sql).fetchall())
    finally:
        conn.close()


@pytest.fixture(params=["mysql", "postgresql", "sqlite"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[App]:
    opened = {"mysql": mariadb, "postgresql": postgresql}.get(request.param)
    with opened() if opened is not None else sqlite(tmp_path) as database:
        yield database


class Workload:
    """The app's writes to ``orders``, each its own transaction with a new ``n``, and the
    change each one makes, in order (`made`)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.made: list[Key] = []
        self.live: list[int] = []
        self.ids = self.n = 0
        self.random = random.Random(17)

    def insert(self) -> None:
        self.ids += 1
        self.n += 1
        self.app.execute(f"INSERT INTO orders (id, n) VALUES ({self.ids}, {self.n})")
        self.live.append(self.ids)
        self.made.append(("write", self.ids, self.n))

    def step(self) -> None:
        op = self.random.random()
        if op < 0.4 or len(self.live) < 3:
            self.insert()
        elif op < 0.8:
            self.n += 1
            key = self.random.choice(self.live)
            self.app.execute(f"UPDATE orders SET n = {self.n} WHERE id = {key}")
            self.made.append(("update", key, self.n))
        else:
            key = self.live.pop(self.random.randrange(len(self.live)))
            self.app.execute(f"DELETE FROM orders WHERE id = {key}")
            self.made.append(("delete", key, None))


class Writer(threading.Thread):
    """The app writing on, a step every few milliseconds, until `finish`."""

    def __init__(self, workload: Workload) -> None:
        super().__init__(daemon=True)
        self.workload = workload
        self.done = threading.Event()
        self.failed: list[BaseException] = []

    def run(self) -> None:
        try:
            while not self.done.wait(0.005):
                self.workload.step()
        except BaseException as error:  # raised by finish()
            self.failed.append(error)

    def finish(self) -> None:
        self.done.set()
        self.join(LIMIT)
        if self.failed:
            raise self.failed[0]


# ----------------------------------------------------------------- what rowcast did


def key(change: Change) -> Key:
    if change.action == "delete":
        return ("delete", change.pk, None)
    return (str(change.action), change.pk, (change.after or {}).get("n"))


def stored(tmp_path: Path) -> list[Change]:
    """The changes in the relay's event store, in the order they were appended."""
    if not (tmp_path / "events.db").exists():
        return []
    with EventStore(f"sqlite:///{tmp_path / 'events.db'}") as store:
        return [Change(**event.data) for event in store.read_all()]


def streamed(redis_url: str, stream: str) -> list[Change]:
    import redis

    with redis.Redis.from_url(redis_url) as client:
        return [Change.from_json(fields[b"body"]) for _, fields in client.xrange(stream)]


def saved(tmp_path: Path) -> str | None:
    with open_checkpoint(str(tmp_path / "relay.pos")) as checkpoint:
        return checkpoint.load()


class Ran(NamedTuple):
    exit_code: int
    stdout: str
    stderr: str


def tail(args: list[str]) -> Ran:
    """``rowcast tail ... --to now`` as the user runs it: in a process of its own (what it
    logs on its way out is shown too)."""
    done = subprocess.run(
        [ROWCAST, *args, "--to", "now"], capture_output=True, text=True, timeout=LIMIT
    )
    assert "Traceback" not in done.stderr
    return Ran(done.returncode, done.stdout, done.stderr)


def refused(code: int, stderr: str, *fixes: str) -> None:
    """Exit 2 with one paragraph that holds each of `fixes`, without a traceback."""
    said = " ".join(stderr.split())
    assert code == 2, stderr
    assert "Traceback" not in stderr
    for fix in fixes:
        assert fix in said, f"{fix!r} not in: {said}"


def start(args: list[str], tmp_path: Path) -> subprocess.Popen[str]:
    with (tmp_path / "relay.log").open("a") as log:
        return subprocess.Popen([ROWCAST, *args], stdout=subprocess.DEVNULL, stderr=log, text=True)


def stop(process: subprocess.Popen[str], how: signal.Signals) -> int:
    process.send_signal(how)
    return process.wait(LIMIT)


def until(process: subprocess.Popen[str], condition: Callable[[], Any], tmp_path: Path) -> None:
    """Wait for `condition` while the relay runs; its log when it exited instead."""
    wait_for(lambda: process.poll() is not None or condition(), LIMIT)
    if process.poll() is not None:
        log = (tmp_path / "relay.log").read_text()
        raise AssertionError(f"the relay exited ({process.returncode}):\n{log}")


def has(tmp_path: Path, made: list[Key]) -> bool:
    return not collections.Counter(made) - collections.Counter(map(key, stored(tmp_path)))


# ----------------------------------------------------------------- the session


def readme_tail(app: App) -> list[str]:
    """The README's ``rowcast tail`` for the app's kind of database, on its URL (without
    its ``--to``: `tail` gives one)."""
    args = with_url(readme("tail", app.prefix), app.url)
    if "--to" in args:
        at = args.index("--to")
        args = args[:at] + args[at + 2 :]
    if app.kind == "mysql":  # its tables: 'test.*' is the README's database
        args = with_tables(args, f"{app.url.rpartition('/')[2]}.*")
    return args


def live_tail(app: App, workload: Workload) -> str:
    """The README's live tail in a process of its own, until it shows a row the app
    wrote, then Ctrl-C; what it printed."""
    process = subprocess.Popen(
        [ROWCAST, *readme_tail(app)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout or ()), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + LIMIT
        while not any("orders_write" in line for line in lines):  # ready only once it reads
            assert process.poll() is None, "the tail exited"
            assert time.monotonic() < deadline, "the tail shows nothing"
            workload.insert()
            time.sleep(0.3)
        code = stop(process, signal.SIGINT)
    finally:
        if process.poll() is None:
            process.kill()
        _, err = process.communicate()
        reader.join(LIMIT)
    assert code == 0, err
    assert "Traceback" not in err
    return "".join(lines)


def tails_and_mistakes(app: App, workload: Workload) -> None:
    """The README's tail shows what the app writes; typos are errors; nothing is left."""
    if app.kind == "sqlite":  # the README's: the rows there are, as JSON, then it ends
        for _ in range(3):
            workload.insert()
        result = tail(readme_tail(app))
        assert result.exit_code == 0, result.stderr
        rows = [Change.from_json(line) for line in result.stdout.splitlines()]
        assert {c.pk: c.after["n"] for c in rows if c.snapshot and c.after} == app.rows()
    else:
        shown = live_tail(app, workload)
        assert any(f"id={pk}, n=" in shown for pk in workload.live), shown
    assert app.leftovers() == [], "the tail left this behind"

    database = app.url.rpartition("/")[2]
    table = f"{database}.ordrs" if app.kind == "mysql" else "ordrs"
    typo = tail(with_tables(readme_tail(app), table))
    if app.kind == "sqlite":
        refused(typo.exit_code, typo.stderr, "'ordrs' match no table", "tables are orders")
    else:
        refused(typo.exit_code, typo.stderr, "ordrs matches no table", "orders")
    assert "--allow-empty" in typo.stderr

    wrong = app.url.replace("app.db", "ap.db") if app.kind == "sqlite" else f"{app.url}_typo"
    mistaken = tail(with_url(readme_tail(app), wrong))
    if app.kind == "mysql":
        refused(mistaken.exit_code, mistaken.stderr, f"database {database}_typo does not exist")
        assert database in mistaken.stderr.split("this server has")[1]  # what exists
    elif app.kind == "postgresql":
        refused(
            mistaken.exit_code,
            mistaken.stderr,
            f'database "{database}_typo" does not exist',
            "check the database name in the URL",
        )
        assert "DROP PUBLICATION" not in mistaken.stderr  # there is none to drop
    else:
        refused(mistaken.exit_code, mistaken.stderr, "no SQLite database at", "check the path")
        assert not Path(wrong.removeprefix("sqlite:///")).exists()  # nor made one
    assert app.leftovers() == [], "a refused tail left this behind"


def readme_relay(app: App, tmp_path: Path, sink: str) -> list[str]:
    """The README's relay on the app's URL, its files in `tmp_path`, and `sink` besides.
    SQLite has no relay line of its own: MariaDB's, on the SQLite URL."""
    args = with_url(readme("relay", "mysql://" if app.kind == "sqlite" else app.prefix), app.url)
    files = {"sqlite:///events.db": f"sqlite:///{tmp_path / 'events.db'}"}
    args = [files.get(a, str(tmp_path / "relay.pos") if a.endswith(".pos") else a) for a in args]
    if app.kind == "mysql":  # 'test.*': the README's database
        args = with_tables(args, f"{app.url.rpartition('/')[2]}.*")
    elif app.kind == "sqlite":
        args = with_tables(args, "orders")
    return [*args, "--to", sink]


@pytest.mark.server
def test_a_new_users_session(app: App, tmp_path: Path) -> None:
    redis_url = require_redis()
    stream = f"rc_session:{RUN}:{app.kind}"
    workload = Workload(app)
    try:
        tails_and_mistakes(app, workload)
        relay(app, workload, tmp_path, redis_url, stream)
    finally:
        import redis

        with redis.Redis.from_url(redis_url) as client:
            client.delete(stream)


def relay(app: App, workload: Workload, tmp_path: Path, redis_url: str, stream: str) -> None:
    args = readme_relay(app, tmp_path, f"{redis_url}?stream={stream}")
    if app.kind == "postgresql":  # 'public.*' holds app_log, which has no key
        first = subprocess.run([ROWCAST, *args], capture_output=True, text=True, timeout=LIMIT)
        refused(
            first.returncode,
            first.stderr,
            "public.app_log has no primary key and no replica identity",
            "ALTER TABLE public.app_log REPLICA IDENTITY FULL;",
        )
        assert app.leftovers() == [], "a refused relay left this behind"
        app.execute("UPDATE app_log SET line = 'the app writes on'")
        args = with_tables(args, "orders")  # the fix the message gives: leave it out

    # the first run: an INSERT, Ctrl-C before anything was delivered
    workload.made.clear()  # from here on every change is due (the rows there: a snapshot's)
    there: dict[Any, Any] = {}  # the rows the relay's changes apply to
    if app.kind == "postgresql":
        workload.made.extend(("write", pk, n) for pk, n in sorted(app.rows().items()))
    else:
        there = app.rows()
    process = start(args, tmp_path)
    try:
        until(process, lambda: (saved(tmp_path) or "snapshot:")[:9] != "snapshot:", tmp_path)
        workload.insert()
        assert stop(process, signal.SIGINT) == 0
        for _ in range(3):  # while it is down
            workload.step()

        # started again: what was written before and while it was down comes
        process = start(args, tmp_path)
        until(process, lambda: has(tmp_path, workload.made), tmp_path)

        # the same relay started twice: refused (the first's report says it runs), the
        # first reads on
        second = subprocess.run([ROWCAST, *args], capture_output=True, text=True, timeout=LIMIT)
        refused(
            second.returncode,
            second.stderr,
            f"checkpoint {tmp_path / 'relay.pos'} is in use: a relay from",
            "stop that relay first",
            "give this one its own --checkpoint",
        )

        # killed while the app writes, and started again
        writer = Writer(workload)
        writer.start()
        count = len(stored(tmp_path))
        until(process, lambda: len(stored(tmp_path)) >= count + 20, tmp_path)
        assert stop(process, signal.SIGKILL) == -signal.SIGKILL
        time.sleep(0.3)  # the app writes on while the relay is down
        process = start(args, tmp_path)
        until(process, lambda: len(stored(tmp_path)) >= count + 60, tmp_path)
        writer.finish()
        until(process, lambda: has(tmp_path, workload.made), tmp_path)
        assert stop(process, signal.SIGTERM) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log = (tmp_path / "relay.log").read_text()
    assert "Traceback" not in log

    made = collections.Counter(workload.made)
    delivered = [key(c) for c in stored(tmp_path)]
    assert collections.Counter(delivered) == made  # exactly once into the event store
    sent = [key(c) for c in streamed(redis_url, stream)]
    assert set(sent) == set(made)  # at least once into Redis
    assert len(sent) >= len(made)
    state = dict(there)
    for action, pk, n in delivered:  # the changes rebuild the table
        state.pop(pk) if action == "delete" else state.__setitem__(pk, n)
    assert state == app.rows()
    if app.kind == "postgresql":
        app.execute("UPDATE app_log SET line = 'and still writes'")  # never harmed

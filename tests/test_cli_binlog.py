"""``rowcast tail`` and ``rowcast doctor`` against the real MariaDB (binlog on).

Every table and user these tests make is named ``rc_cli_*`` and dropped at the
end; each ``tail`` reads with its own replica id, so that it never pushes
another reader of the same server off.
"""

from __future__ import annotations

import itertools
import queue
import random
import re
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, create_engine, make_url, text

from rowcast import Change
from rowcast.cli import main
from tests.conftest import require_server

pytestmark = pytest.mark.server

ROWCAST = Path(sys.executable).with_name("rowcast")
_server_ids = itertools.count(random.randrange(1_000_000, 2_000_000_000, 1000))


def server_id() -> str:
    return str(next(_server_ids))


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def server() -> str:
    """The SQLAlchemy URL of the test server (mysql+pymysql://...)."""
    return require_server("mysql")


@pytest.fixture(scope="module")
def url(server: str) -> str:
    """The same server as rowcast's users write it: mysql://..."""
    return make_url(server).set(drivername="mysql").render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def db(server: str) -> Iterator[Engine]:
    engine = create_engine(server)
    yield engine
    engine.dispose()


def sql(db: Engine, *statements: str) -> None:
    """Run `statements` in one transaction."""
    with db.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))


def binlog_position(db: Engine) -> str:
    with db.connect() as conn:
        row = conn.execute(text("SHOW MASTER STATUS")).one()
    return f"{row[0]}:{row[1]}"


TABLES = ("rc_cli_items", "rc_cli_notes", "rc_cli_sig")


@pytest.fixture(scope="module")
def workload(db: Engine) -> Iterator[str]:
    """Run a small workload on rc_cli_items and rc_cli_notes; the position before it."""
    for table in TABLES:
        sql(db, f"DROP TABLE IF EXISTS {table}")
    start = binlog_position(db)
    sql(db, "CREATE TABLE rc_cli_items (id INT PRIMARY KEY, name VARCHAR(40), price DECIMAL(8,2))")
    sql(db, "CREATE TABLE rc_cli_notes (k VARCHAR(10), n INT, body TEXT, PRIMARY KEY (k, n))")
    for statements in (
        [
            "INSERT INTO rc_cli_items VALUES (1, 'apple', 1.50), (2, 'pear', 2.25)",
            "INSERT INTO rc_cli_notes VALUES ('a', 1, 'hello')",
        ],
        ["UPDATE rc_cli_items SET price = 1.75 WHERE id = 1"],
        [
            "DELETE FROM rc_cli_items WHERE id = 2",
            "INSERT INTO rc_cli_notes VALUES ('a', 2, 'bye')",
        ],
        ["DELETE FROM rc_cli_notes WHERE k = 'a' AND n = 1"],
    ):
        sql(db, *statements)
    yield start
    for table in TABLES:
        sql(db, f"DROP TABLE IF EXISTS {table}")


def tail_json(url: str, start: str, *options: str) -> list[Change]:
    result = invoke(
        "tail", url, "--from", start, "--to", "now", "--format", "json", "--server-id", server_id(),
        *options,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return [Change.from_json(line) for line in result.stdout.splitlines()]


# ------------------------------------------------------------------ tail


def test_tail_json_prints_exactly_the_workload(url: str, workload: str) -> None:
    changes = tail_json(url, workload, "--tables", "test.rc_cli_*")
    assert [(c.name, c.pk) for c in changes] == [
        ("rc_cli_items_write", 1),
        ("rc_cli_items_write", 2),
        ("rc_cli_notes_write", ("a", 1)),
        ("rc_cli_items_update", 1),
        ("rc_cli_items_delete", 2),
        ("rc_cli_notes_write", ("a", 2)),
        ("rc_cli_notes_delete", ("a", 1)),
    ]
    write, update, delete = changes[0], changes[3], changes[4]
    assert write.before is None
    assert write.after == {"id": 1, "name": "apple", "price": Decimal("1.50")}
    assert update.before == {"id": 1, "name": "apple", "price": Decimal("1.50")}
    assert update.after == {"id": 1, "name": "apple", "price": Decimal("1.75")}
    assert update.changed == ("price",)
    assert delete.before == {"id": 2, "name": "pear", "price": Decimal("2.25")}
    assert delete.after is None
    assert changes[-1].before == {"k": "a", "n": 1, "body": "hello"}
    assert {(c.schema, c.source) for c in changes} == {("test", "mysql")}
    # one transaction: one txid and one position, shared by its changes
    assert len({(c.txid, c.position) for c in changes[:3]}) == 1
    assert len({c.txid for c in changes}) == 4


def test_tail_tables_filters_repeated_and_comma_separated(url: str, workload: str) -> None:
    notes = tail_json(url, workload, "--tables", "test.rc_cli_notes")
    assert [c.name for c in notes] == ["rc_cli_notes_write"] * 2 + ["rc_cli_notes_delete"]

    # a pattern that matches no table is a typo, unless the table is to come
    items = tail_json(url, workload, "--tables", "rc_cli_nothing,rc_cli_items", "--allow-empty")
    assert {c.table for c in items} == {"rc_cli_items"}
    assert len(items) == 4

    both = tail_json(url, workload, "-t", "rc_cli_items", "-t", "test.rc_cli_notes")
    assert len(both) == 7


def test_tail_table_format_shows_events_transactions_and_a_summary(url: str, workload: str) -> None:
    result = invoke(
        "tail", url, "--from", workload, "--to", "now", "--tables", "test.rc_cli_*",
        "--server-id", server_id(),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.stdout.splitlines() if line[:3].strip().isdigit()]
    assert [row[1] for row in rows] == [
        "rc_cli_items_write",
        "rc_cli_items_write",
        "rc_cli_notes_write",
        "rc_cli_items_update",
        "rc_cli_items_delete",
        "rc_cli_notes_write",
        "rc_cli_notes_delete",
    ]
    assert [row[0] for row in rows] == ["1", "1", "1", "2", "3", "3", "4"]
    assert "price: Decimal('1.50') -> Decimal('1.75')" in result.stdout
    assert "id=2, name='pear', price=Decimal('2.25')" in result.stdout
    headings = [line for line in result.stdout.splitlines() if "──  tx " in line]
    assert len(headings) == 4
    assert all(" at mysql-bin." in line and "UTC" in line for line in headings)
    assert "7 changes in 4 transactions" in result.stderr


@pytest.mark.parametrize("command", ["tail", "doctor"])
@pytest.mark.parametrize(
    ("change", "message"),
    [({"password": "wrong"}, "access denied"), ({"port": 1}, "cannot reach")],
)
def test_a_server_that_cannot_be_used_exits_2(
    url: str, command: str, change: dict[str, object], message: str
) -> None:
    bad = make_url(url).set(**change).render_as_string(hide_password=False)  # type: ignore[arg-type]
    result = invoke(command, bad)
    assert result.exit_code == 2, result.output
    error = result.stderr.splitlines()[-1]  # after the "tailing ..." line of tail
    assert error.startswith("error: ")
    assert message in error
    assert "wrong" not in result.stderr  # the password is masked
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("option", "value"), [("--from", "nonsense"), ("--from", "mysql-bin.000001:x"), ("--to", "x")]
)
def test_tail_a_bad_position_exits_2(url: str, option: str, value: str) -> None:
    result = invoke("tail", url, option, value)
    assert result.exit_code == 2, result.output
    assert f"error: bad binlog position {value!r}: expected 'file:offset'" in result.stderr


def test_tail_an_unknown_url_exits_2() -> None:
    result = invoke("tail", "oracle:///nowhere.db")
    assert result.exit_code == 2
    assert "no rowcast source for 'oracle:///nowhere.db'" in result.stderr


def test_multi_line_errors_print_whole_and_unstyled(monkeypatch: pytest.MonkeyPatch) -> None:
    from rowcast.errors import ConfigError

    message = "server cannot be read:\n  - log_bin is OFF: set it under [mysqld] in my.cnf [/x]"

    def refuse(url: str, **options: object) -> None:
        raise ConfigError(message)

    monkeypatch.setattr("rowcast.cli.tail.open_source", refuse)
    result = invoke("tail", "mysql://root@127.0.0.1/test")
    assert result.exit_code == 2
    assert result.stderr == f"error: {message}\n"


@pytest.fixture
def sig_table(db: Engine) -> Iterator[str]:
    """rc_cli_sig with one row written; the position before that write."""
    sql(db, "DROP TABLE IF EXISTS rc_cli_sig")
    sql(db, "CREATE TABLE rc_cli_sig (id INT PRIMARY KEY)")
    start = binlog_position(db)
    sql(db, "INSERT INTO rc_cli_sig VALUES (1)")
    yield start
    sql(db, "DROP TABLE IF EXISTS rc_cli_sig")


class Tail:
    """``rowcast tail`` in a subprocess, its stdout lines read by a thread (no hanging test)."""

    def __init__(self, url: str, *args: str, reader: bool = True) -> None:
        command = [str(ROWCAST), "tail", url, "--tables", "test.rc_cli_sig"]
        self.proc = subprocess.Popen(
            [*command, "--server-id", server_id(), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.stdout, self.lines = self.proc.stdout, queue.Queue[str]()
        self.reader = threading.Thread(target=self._read, daemon=True)
        if reader:  # without: the test reads stdout itself, and may close it
            self.reader.start()

    def _read(self) -> None:
        for line in self.stdout:
            self.lines.put(line)
        self.lines.put("")

    def wait_for(self, needle: str) -> str:
        while True:
            line = self.lines.get(timeout=30)
            if not line or needle in line:
                return line

    def finish(self) -> tuple[int, str]:
        """Wait for the exit: (status, stderr)."""
        try:
            status = self.proc.wait(timeout=15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if self.reader.is_alive():
                self.reader.join(timeout=5)
        _, stderr = self.proc.communicate()
        return status, stderr


def test_tail_stops_cleanly_on_sigterm(url: str, sig_table: str) -> None:
    tail = Tail(url, "--from", sig_table)
    assert "rc_cli_sig_write" in tail.wait_for("rc_cli_sig_write")  # streaming now
    tail.proc.send_signal(signal.SIGTERM)
    status, stderr = tail.finish()
    assert status == 0, stderr
    assert "1 changes in 1 transactions" in stderr
    assert "Traceback" not in stderr


def test_tail_json_into_a_closed_pipe_stops_quietly(url: str, db: Engine, sig_table: str) -> None:
    tail = Tail(url, "--from", sig_table, "--format", "json", reader=False)
    assert select.select([tail.stdout], [], [], 30)[0], "no output in 30s"
    assert Change.from_json(tail.stdout.readline()).pk == 1
    tail.stdout.close()  # like `| head -1`
    sql(db, "INSERT INTO rc_cli_sig VALUES (2)")  # its line cannot be written
    status, stderr = tail.finish()
    assert status == 0, stderr
    assert stderr == ""


# ------------------------------------------------------------------ doctor


def test_doctor_on_the_test_server_passes_every_check(url: str) -> None:
    result = invoke("doctor", url)
    assert result.exit_code == 0, result.output
    out = result.stdout
    for name in (
        "log_bin",
        "binlog_format",
        "binlog_row_image",
        "binlog_row_metadata",
        "privilege REPLICATION SLAVE",
        "privilege REPLICATION CLIENT",
    ):
        assert any(line.strip().startswith(f"✓ {name} ") for line in out.splitlines()), name
    assert "✗" not in out
    assert "server   " in out
    assert "MariaDB" in out
    assert "binlog          mysql-bin." in out
    assert "binlogs kept    " in out  # how many, and the oldest: a reader behind it is lost
    assert "binlog expiry   " in out
    assert "✓ database test " in out  # the URL's: it exists
    assert "All 7 checks passed" in out


@pytest.fixture
def noperm_url(url: str, db: Engine) -> Iterator[str]:
    sql(db, "DROP USER IF EXISTS 'rc_cli_noperm'@'%'")
    sql(db, "CREATE USER 'rc_cli_noperm'@'%' IDENTIFIED BY 'rc-cli-pw'")
    try:
        sql(db, "GRANT SELECT ON test.* TO 'rc_cli_noperm'@'%'")
        yield (
            make_url(url)
            .set(username="rc_cli_noperm", password="rc-cli-pw")
            .render_as_string(hide_password=False)
        )
    finally:
        sql(db, "DROP USER IF EXISTS 'rc_cli_noperm'@'%'")


def test_doctor_without_replication_privileges_prints_the_grants(noperm_url: str) -> None:
    result = invoke("doctor", noperm_url)
    assert result.exit_code == 1, result.output
    out = result.stdout
    assert "✓ log_bin " in out
    assert "✗ privilege REPLICATION SLAVE " in out
    assert "✗ privilege REPLICATION CLIENT " in out
    assert "fix: GRANT REPLICATION SLAVE ON *.* TO 'rc_cli_noperm'@'%';" in out
    assert "fix: GRANT REPLICATION CLIENT ON *.* TO 'rc_cli_noperm'@'%';" in out
    assert re.search(r"\n  binlog +unknown: ", out)  # SHOW MASTER STATUS needs the privilege
    assert "2 of 7 checks failed" in out
    assert "rc-cli-pw" not in result.output


def test_doctor_names_the_schemes_it_supports() -> None:
    result = invoke("doctor", "nosuch://me:secret@localhost/db")
    assert result.exit_code == 2
    assert "the URL must start with mariadb://, mysql://" in result.stderr
    assert "secret" not in result.stderr

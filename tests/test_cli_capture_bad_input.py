"""The README's capture commands with a new user's mistakes: exit 2 (doctor: 1), a message
with the fix and what exists, never a traceback, never silence (issue 17).

Each command is taken from the README as written (so the test follows it), pointed at
a database of this module's own, and given one mistake: a database that does not exist,
a typo'd table, a slot another reader owns, a table without a key, a position the
server can no longer give. On MariaDB, PostgreSQL and SQLite.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shlex
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pymysql
import pytest
from click.testing import CliRunner

from rowcast.checkpoint import open_checkpoint
from rowcast.sources.postgres import LogicalSource
from tests.conftest import require_server
from tests.sources.test_postgres import private_database
from tests.sources.test_postgres_safe import emptied

README = Path(__file__).parent.parent / "README.md"
ROWCAST = str(Path(sys.executable).with_name("rowcast"))
LIMIT = 60  # seconds a relay may run before the test calls it hung
RUN = secrets.token_hex(3)
MYSQL_DB = f"rc_badin_{RUN}"


def readme(command: str, url_prefix: str) -> list[str]:
    """The README's first ``rowcast <command> <url_prefix>...`` line, split as a shell would
    (without the prompt, the comment, a pipe), the URL being its second word."""
    for line in README.read_text().replace("\\\n", " ").splitlines():
        line = line.removeprefix("$ ")
        if not line.startswith("rowcast "):
            continue
        words = shlex.split(line, comments=True)
        if words[:2] == ["rowcast", command] and words[2:3] and words[2].startswith(url_prefix):
            return words[1 : words.index("|")] if "|" in words else words[1:]
    raise AssertionError(f"the README shows no `rowcast {command} {url_prefix}...` any more")


def with_url(args: list[str], url: str) -> list[str]:
    return [args[0], url, *args[2:]]


def with_tables(args: list[str], pattern: str) -> list[str]:
    """`args` with its table patterns replaced by `pattern` (or given it)."""
    out, skip = [], False
    for word in args:
        if skip:
            skip = False
            continue
        if word in ("--tables", "-t"):
            skip = True
            continue
        out.append(word)
    return [*out, "--tables", pattern]


def in_tmp(args: list[str], tmp_path: Path) -> list[str]:
    """The README relay's files (its checkpoint, its event store) in `tmp_path`."""
    files = {"relay.pos": str(tmp_path / "relay.pos")}
    files["sqlite:///events.db"] = f"sqlite:///{tmp_path / 'events.db'}"
    return [files.get(a, a) for a in args]


def invoke(args: list[str]) -> Any:
    """The command's result (exit_code, output, stderr); a relay in a process of its own with
    a time limit: one that runs for ever (the bug) fails the test instead of hanging it."""
    if args[0] == "relay":
        done = subprocess.run([ROWCAST, *args], capture_output=True, text=True, timeout=LIMIT)
        assert "Traceback" not in done.stderr
        return Ran(done.returncode, done.stdout + done.stderr, done.stderr)
    from rowcast.cli import main

    result = CliRunner().invoke(main, args)
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    return result


class Ran(NamedTuple):
    exit_code: int
    output: str
    stderr: str


def one_paragraph(result: Any) -> str:
    """stderr's error, lines joined: what the user reads."""
    return " ".join(result.stderr.split())


# ----------------------------------------------------------------- MariaDB


@pytest.fixture(scope="module")
def mysql_db() -> Iterator[str]:
    require_server("mysql")
    conn = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {MYSQL_DB}")
        cur.execute(f"CREATE TABLE {MYSQL_DB}.orders (id INT PRIMARY KEY)")
    try:
        yield f"mysql://root@127.0.0.1:3306/{MYSQL_DB}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {MYSQL_DB}")
        conn.close()


@pytest.mark.server
@pytest.mark.parametrize("command", ["tail", "relay"])
def test_mysql_a_database_that_does_not_exist(mysql_db: str, command: str, tmp_path: Path) -> None:
    args = readme(command, "mysql://")
    args = with_tables(with_url(args, f"{mysql_db}_typo"), "orders")
    if command == "relay":
        args = in_tmp(args, tmp_path)
    result = invoke([*args, "--to", "now"] if command == "tail" else args)
    assert result.exit_code == 2, result.output  # was: 0 changes for ever
    said = one_paragraph(result)
    assert f"database {MYSQL_DB}_typo does not exist" in said
    assert MYSQL_DB in said.split("this server has")[1]  # what exists
    doctor = invoke(with_url(readme("doctor", "mysql://"), f"{mysql_db}_typo"))
    assert doctor.exit_code == 1
    assert f"✗ database {MYSQL_DB}_typo" in doctor.output


@pytest.mark.server
def test_mysql_a_typod_table(mysql_db: str) -> None:
    args = with_tables(with_url(readme("tail", "mysql://"), mysql_db), "ordrs")
    result = invoke([*args, "--to", "now"])
    assert result.exit_code == 2, result.output
    said = one_paragraph(result)
    assert "tables ordrs matches no table" in said
    assert f"the tables of database {MYSQL_DB} are orders" in said
    assert "--allow-empty" in said
    assert invoke([*args, "--to", "now", "--allow-empty"]).exit_code == 0
    doctor = invoke([*with_url(readme("doctor", "mysql://"), mysql_db), "--tables", "ordrs"])
    assert doctor.exit_code == 1
    assert "✗ tables ordrs" in doctor.output


@pytest.mark.server
def test_mysql_a_checkpoint_in_purged_binlogs(mysql_db: str, tmp_path: Path) -> None:
    args = in_tmp(with_tables(with_url(readme("relay", "mysql://"), mysql_db), "orders"), tmp_path)
    with open_checkpoint(str(tmp_path / "relay.pos")) as saved:
        saved.save("mysql-bin.000000:4")  # older than any binlog the server keeps
    result = invoke(args)
    assert result.exit_code == 2, result.output  # was: a silent skip of what was lost
    said = one_paragraph(result)
    assert "the binlog of position mysql-bin.000000:4 was purged" in said
    assert (
        "copy the tables' rows as they are now (--snapshot initial, or rowcast backfill URL "
        "--tables ... once it streams again)" in said
    )


# ----------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="module")
def pg_base() -> Iterator[str]:
    with private_database(f"rc_badin_{RUN}") as url:
        yield url


@pytest.fixture
def pg(pg_base: str) -> Iterator[Any]:
    with emptied(pg_base) as cur:
        cur.execute("CREATE TABLE orders (id INT PRIMARY KEY)")
        yield cur


def readme_pg(command: str, url: str) -> list[str]:
    """The README's PostgreSQL command, on `url` (its ?query kept)."""
    args = readme(command, "postgresql://")
    query = args[1].partition("?")[2]
    return with_url(args, f"{url}?{query}" if query else url)


@pytest.mark.server
def test_postgresql_a_typod_table(pg_base: str, pg: Any) -> None:
    args = with_tables(readme_pg("tail", pg_base), "ordrs")
    result = invoke([*args, "--to", "now"])
    assert result.exit_code == 2, result.output  # was: a wildcard ran for ever, 0 changes
    said = one_paragraph(result)
    assert "tables ordrs matches no table" in said
    assert "this database's tables are public.orders" in said
    for pattern in ("ord*s_x", "public.ord?r"):
        assert invoke([*with_tables(args, pattern), "--to", "now"]).exit_code == 2
    assert invoke([*args, "--to", "now", "--allow-empty"]).exit_code == 0
    doctor = readme_pg("doctor", pg_base)  # the README's: ?tables=orders
    doctor = invoke([doctor[0], re.sub(r"tables=[^&]*", "tables=ordrs", doctor[1])])
    assert doctor.exit_code == 1
    assert "✗ tables ordrs" in doctor.output


@pytest.mark.server
def test_postgresql_a_table_without_a_key(pg_base: str, pg: Any) -> None:
    pg.execute("CREATE TABLE audit_log (at timestamptz, line text)")
    result = invoke([*readme_pg("tail", pg_base)[:2], "--to", "now"])
    assert result.exit_code == 2, result.output
    said = one_paragraph(result)
    assert "public.audit_log has no primary key and no replica identity" in said
    assert "ALTER TABLE public.audit_log REPLICA IDENTITY FULL;" in said
    pg.execute("UPDATE audit_log SET line = 'the app writes on'")


@pytest.mark.server
def test_postgresql_a_slot_another_reader_owns(pg_base: str, pg: Any, tmp_path: Path) -> None:
    relay = LogicalSource(pg_base, checkpoint=open_checkpoint(str(tmp_path / "rd.pos")))
    relay.setup()  # a relay's slot, the relay stopped
    args = readme_pg("tail", f"{pg_base}")
    args = [args[0], f"{pg_base}?slot={relay.slot}", "--from", "start", "--to", "now"]
    result = invoke(args)
    assert result.exit_code == 2, result.output
    said = one_paragraph(result)
    assert f"slot {relay.slot} belongs to another reader" in said
    assert "Leave out ?slot=" in said


@pytest.mark.server
def test_postgresql_from_a_position_behind_the_slot(pg_base: str, pg: Any) -> None:
    pg.execute("SELECT pg_current_wal_lsn()")
    past = str(pg.fetchone()[0])
    pg.execute("INSERT INTO orders VALUES (1)")
    args = readme_pg("tail", pg_base)  # the README's: ?slot=mine --from 0/16B3748 --to now
    args = [args[0], pg_base, "--from", past, "--to", "now"]
    result = invoke(args)
    assert result.exit_code == 2, result.output  # never 0 changes without a word
    said = one_paragraph(result)
    assert f"--from {past} is behind" in said
    assert "cannot read the past" in said


# ----------------------------------------------------------------- SQLite


@pytest.fixture
def app_db(tmp_path: Path) -> str:
    path = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    return f"sqlite:///{path}"


def test_sqlite_a_typod_table(app_db: str) -> None:
    shown = re.search(r"`(rowcast tail sqlite:///app\.db)`", README.read_text())
    assert shown is not None, "the README shows no `rowcast tail sqlite:///app.db` any more"
    args = with_tables(with_url(shlex.split(shown.group(1))[1:], app_db), "ordrs")
    result = invoke([*args, "--to", "now"])
    assert result.exit_code == 2, result.output
    said = one_paragraph(result)
    assert "tables 'ordrs' match no table" in said
    assert "this database's tables are orders" in said
    assert invoke([*args, "--to", "now", "--allow-empty"]).exit_code == 0
    doctor = invoke(["doctor", app_db, "--tables", "ordrs"])
    assert doctor.exit_code == 1
    assert "✗ tables ordrs" in doctor.output


def readme_slot_tail() -> list[str]:
    """The README's ``rowcast tail 'postgresql://...?slot=...' --from ...`` line."""
    for line in README.read_text().splitlines():
        if not line.startswith("$ rowcast tail"):
            continue
        words = shlex.split(line.removeprefix("$ "), comments=True)
        if words[:2] == ["rowcast", "tail"] and "?slot=" in words[2] and "--from" in words:
            return words[1:]
    raise AssertionError("the README shows no `rowcast tail postgresql://...?slot=` any more")


@pytest.mark.server
def test_postgresql_from_a_position_before_a_slot_that_does_not_exist(
    pg_base: str, pg: Any
) -> None:
    pg.execute("SELECT pg_current_wal_lsn()")
    past = str(pg.fetchone()[0])
    pg.execute("INSERT INTO orders VALUES (1)")
    slot = f"walkmine_{RUN}"
    args = readme_slot_tail()  # ?slot=mine --from 0/16B3748 --to now
    args = [args[0], f"{pg_base}?slot={slot}", "--from", past, "--to", "now"]
    result = invoke(args)
    assert result.exit_code == 2, result.output
    said = one_paragraph(result)
    assert f"slot {slot} does not exist yet" in said
    assert "nothing was created" in said
    pg.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    assert pg.fetchone()[0] == 0  # was: the slot stayed, holding WAL
    pg.execute("SELECT count(*) FROM pg_publication WHERE pubname = %s", (slot,))
    assert pg.fetchone()[0] == 0
    # from now it creates them, and says on stopping that they stay and how they go
    result = invoke([args[0], args[1], "--to", "now"])
    assert result.exit_code == 0, result.output
    said = one_paragraph(result)
    assert f"slot {slot} and publication {slot} stay" in said
    assert f"rowcast uninstall '{pg_base}'" in said


@pytest.mark.server
def test_postgresql_from_a_position_the_server_has_not_reached(pg_base: str, pg: Any) -> None:
    slot = f"walkahead_{RUN}"
    args = readme_slot_tail()
    result = invoke([args[0], f"{pg_base}?slot={slot}", "--from", "FF/0", "--to", "now"])
    assert result.exit_code == 2, result.output
    assert "has no position FF/0 yet" in one_paragraph(result)
    pg.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    assert pg.fetchone()[0] == 0  # was: the slot made, then the refusal

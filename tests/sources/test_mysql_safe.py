"""BinlogSource captures what the URL says and owns its server id (issue 17), on MariaDB.

Two databases of this module's own, ``rc_mysafe_<run>`` and ``rc_mysafe_<run>_b``,
dropped at the end. Each reader is given a server id of the test's own unless the
test is about the default one.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from rowcast import ConfigError
from rowcast.checkpoint import open_checkpoint
from rowcast.sources.mysql import BinlogSource
from rowcast.sources.mysql.owner import lock_name
from tests.conftest import require_server, streaming, wait_for
from tests.test_relay import kill_binlog_dumps_of, server_id

pytestmark = pytest.mark.server

RUN = secrets.token_hex(3)
DB = f"rc_mysafe_{RUN}"
OTHER = f"rc_mysafe_{RUN}_b"


def execute(conn: Any, *statements: str) -> None:
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def position(conn: Any) -> str:
    with conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        row = cur.fetchone()
    return f"{row[0]}:{row[1]}"


@pytest.fixture(scope="module")
def admin() -> Iterator[Any]:
    require_server("mysql")
    conn = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    for name in (DB, OTHER):
        execute(conn, f"CREATE DATABASE {name}", f"CREATE TABLE {name}.t (id INT PRIMARY KEY)")
    try:
        yield conn
    finally:
        for name in (DB, OTHER):
            execute(conn, f"DROP DATABASE IF EXISTS {name}")
        conn.close()


def url(database: str = DB) -> str:
    return f"mysql://root@127.0.0.1:3306/{database}"


# ----------------------------------------------------------------- scope and typos


def test_the_database_in_the_url_limits_capture(admin: Any) -> None:
    start = position(admin)
    execute(admin, f"INSERT INTO {DB}.t VALUES (1)", f"INSERT INTO {OTHER}.t VALUES (2)")
    mine = BinlogSource(url(), start=start, end="now", server_id=server_id())
    assert [(c.schema, c.pk) for tx in mine for c in tx] == [(DB, 1)]  # was: both databases
    every = BinlogSource(
        "mysql://root@127.0.0.1:3306", tables=[f"rc_mysafe_{RUN}*.t"], start=start, end="now"
    )
    assert [(c.schema, c.pk) for tx in every for c in tx] == [(DB, 1), (OTHER, 2)]


def test_a_database_that_does_not_exist_is_refused_with_those_that_do(admin: Any) -> None:
    source = BinlogSource(url(f"{DB}_typo"), server_id=server_id())
    with pytest.raises(ConfigError) as caught:
        source.check()
    message = str(caught.value)
    assert f"database {DB}_typo does not exist" in message
    assert DB in message.split("this server has")[1]
    assert "a URL without a database captures every one" in message
    with pytest.raises(ConfigError, match="does not exist"):
        next(iter(source))


def test_a_pattern_that_matches_no_table_is_refused_with_the_tables(admin: Any) -> None:
    for pattern in ("tt", "x*", f"{DB}.tt"):
        source = BinlogSource(url(), tables=[pattern, "t"], server_id=server_id())
        with pytest.raises(ConfigError) as caught:
            source.check()
        message = str(caught.value)
        assert f"tables {pattern} matches no table" in message
        assert f"the tables of database {DB} are t;" in message
        assert "--allow-empty" in message
        with pytest.raises(ConfigError, match="matches no table"):
            next(iter(source))


def test_a_pattern_of_another_database_says_the_url_limits_capture(admin: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        BinlogSource(url(), tables=[f"{OTHER}.t"], server_id=server_id()).check()
    assert f"it matches {OTHER}.t, outside {DB}" in str(caught.value)
    assert "leave it out of the URL" in str(caught.value)


def test_allow_empty_starts_and_captures_a_table_made_later(admin: Any) -> None:
    source = BinlogSource(
        url(),
        tables=["later"],
        allow_empty=True,
        start=position(admin),
        server_id=server_id(),
        heartbeat=0.2,
    )
    source.check()
    with streaming(source) as got:
        execute(admin, f"CREATE TABLE {DB}.later (id INT PRIMARY KEY)")
        execute(admin, f"INSERT INTO {DB}.later VALUES (7)")
        wait_for(lambda: len(got) == 1)
    assert [(c.table, c.pk) for c in got] == [("later", 7)]
    execute(admin, f"DROP TABLE {DB}.later")


# ----------------------------------------------------------------- a server id is one reader's


def holder(admin: Any, server: int) -> int | None:
    with admin.cursor() as cur:
        cur.execute("SELECT IS_USED_LOCK(%s)", (lock_name(server),))
        (connection,) = cur.fetchone()
    return connection


def test_a_second_reader_with_the_same_server_id_is_refused(admin: Any) -> None:
    shared = server_id()
    first = BinlogSource(url(), server_id=shared, heartbeat=0.2)
    with streaming(first) as got:
        wait_for(lambda: holder(admin, shared) is not None)
        second = BinlogSource(url(), server_id=shared, heartbeat=0.2)
        with pytest.raises(ConfigError) as caught:
            second.check()
        message = str(caught.value)
        assert f"server id {shared} is in use by another binlog reader" in message
        assert f"connection {holder(admin, shared)} (user root" in message
        assert "?server_id=" in message
        with pytest.raises(ConfigError, match="in use by another binlog reader"):
            next(iter(second))
        execute(admin, f"INSERT INTO {DB}.t VALUES (10)")  # the first reads on, undisturbed
        wait_for(lambda: len(got) == 1)
    wait_for(lambda: holder(admin, shared) is None)  # let go when it stopped
    BinlogSource(url(), server_id=shared).check()
    execute(admin, f"DELETE FROM {DB}.t WHERE id = 10")


def test_relays_with_one_checkpoint_share_an_id_and_tails_never(admin: Any, tmp_path: Path) -> None:
    checkpoint = open_checkpoint(str(tmp_path / "rd.pos"))
    relay = BinlogSource(url(), checkpoint=checkpoint, heartbeat=0.2)
    with streaming(relay):
        wait_for(lambda: holder(admin, relay.server_id) is not None)
        again = BinlogSource(url(), checkpoint=open_checkpoint(str(tmp_path / "rd.pos")))
        with pytest.raises(ConfigError, match="the same relay started twice"):
            again.check()
        tail = BinlogSource(url(), end="now")  # a random id of its own: no clash
        assert list(tail) == []
    checkpoint.close()


def test_a_reader_whose_connections_were_killed_takes_its_id_again(admin: Any) -> None:
    import os

    shared = server_id()
    source = BinlogSource(url(), server_id=shared, heartbeat=0.2)
    with streaming(source) as got:
        wait_for(lambda: holder(admin, shared) is not None)
        before = holder(admin, shared)
        execute(admin, f"KILL {before}")  # the lock's connection
        wait_for(lambda: kill_binlog_dumps_of(admin, os.getpid()) >= 1)  # and the stream's
        wait_for(lambda: holder(admin, shared) not in (None, before))
        execute(admin, f"INSERT INTO {DB}.t VALUES (20)")
        wait_for(lambda: len(got) == 1)
    assert [c.pk for c in got] == [20]
    execute(admin, f"DELETE FROM {DB}.t WHERE id = 20")


# ----------------------------------------------------------------- a checkpoint behind the server


def test_a_checkpoint_in_purged_binlogs_is_an_error_naming_the_recovery(
    admin: Any, tmp_path: Path
) -> None:
    with admin.cursor() as cur:
        cur.execute("SHOW BINARY LOGS")
        oldest = str(cur.fetchone()[0])
    purged = re.sub(r"\d+$", lambda m: "0" * len(m.group()), oldest)  # before every binlog
    checkpoint = open_checkpoint(str(tmp_path / "rd.pos"))
    checkpoint.save(f"{purged}:4")
    source = BinlogSource(url(), checkpoint=checkpoint, end="now", server_id=server_id())
    with pytest.raises(ConfigError) as caught:
        list(source)
    message = str(caught.value)
    assert f"the binlog of position {purged}:4 was purged" in message
    assert "empty the checkpoint and copy the tables' rows as they are now" in message
    assert (
        "(--snapshot initial, or rowcast backfill URL --tables ... once it streams again)"
        in message
    )
    assert checkpoint.load() == f"{purged}:4"  # nothing skipped silently

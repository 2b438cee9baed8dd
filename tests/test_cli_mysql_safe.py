"""``rowcast tail`` and ``relay`` on one MariaDB: each reader its own server id (issue 17).

The user's steps: a tail and a relay on the same URL at once (they kicked each other
off for ever, ~140 reconnect lines a minute each), and the same relay started twice
(the second must be refused, exit 2, the first undisturbed). A database of this
module's own, ``rc_mycli_<run>``.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from tests.conftest import require_server, wait_for

pytestmark = pytest.mark.server

ROWCAST = str(Path(sys.executable).with_name("rowcast"))
RUN = secrets.token_hex(3)
DB = f"rc_mycli_{RUN}"
URL = f"mysql://root@127.0.0.1:3306/{DB}"


@pytest.fixture(scope="module")
def admin() -> Iterator[Any]:
    require_server("mysql")
    conn = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {DB}")
        cur.execute(f"CREATE TABLE {DB}.t (id INT PRIMARY KEY)")
    try:
        yield conn
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {DB}")
        conn.close()


def insert(admin: Any, key: int) -> None:
    with admin.cursor() as cur:
        cur.execute(f"INSERT INTO {DB}.t VALUES ({key})")


def position(admin: Any) -> str:
    with admin.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        row = cur.fetchone()
    return f"{row[0]}:{row[1]}"


@contextlib.contextmanager
def running(*args: str, out: Path) -> Iterator[subprocess.Popen[str]]:
    """``rowcast ARGS`` with stdout to `out` and stderr beside it; SIGTERM on leaving."""
    with out.open("w") as stdout, out.with_suffix(".err").open("w") as stderr:
        process = subprocess.Popen([ROWCAST, *args], stdout=stdout, stderr=stderr, text=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def keys(out: Path) -> list[Any]:
    return [json.loads(line)["pk"] for line in out.read_text().splitlines() if line]


def test_a_tail_and_a_relay_on_one_url_both_read_without_kicking_each_other(
    admin: Any, tmp_path: Path
) -> None:
    start = position(admin)
    relay_out, tail_out = tmp_path / "relay.out", tmp_path / "tail.out"
    with (
        running(
            "relay", URL, "--to", "-", "--checkpoint", str(tmp_path / "rd.pos"), "--from", start,
            out=relay_out,
        ) as relay,
        running("tail", URL, "--format", "json", "--from", start, out=tail_out) as tail,
    ):  # fmt: skip
        for key in (1, 2, 3):
            insert(admin, key)
        wait_for(lambda: keys(relay_out) == [1, 2, 3] and keys(tail_out) == [1, 2, 3], 60)
        assert relay.poll() is None
        assert tail.poll() is None
    for err in (relay_out.with_suffix(".err"), tail_out.with_suffix(".err")):
        assert "reconnecting" not in err.read_text()  # was: kicked off, again and again


@pytest.mark.parametrize(
    "again",
    [
        [],  # refused by the checkpoint's report (and the server id derived from it)
        ["--server-id", "4242"],  # its own server id: the checkpoint's report alone
    ],
)
def test_the_same_relay_started_twice_is_refused_and_the_first_reads_on(
    admin: Any, tmp_path: Path, again: list[str]
) -> None:
    start = position(admin)
    args = ["relay", URL, "--to", "-", "--checkpoint", str(tmp_path / "rd.pos"), "--from", start]
    out = tmp_path / "first.out"
    with running(*args, out=out) as first:
        wait_for(lambda: (tmp_path / "rd.pos").exists() or first.poll() is not None, 60)
        report = tmp_path / ".rd.pos.report.json"
        said = report.read_text()
        second = subprocess.run(
            [ROWCAST, *args, *again], capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 2, second.stderr
        assert "is in use: a relay from" in second.stderr
        assert f"(pid {first.pid} on " in second.stderr
        assert "Traceback" not in second.stderr
        assert json.loads(report.read_text())["pid"] == json.loads(said)["pid"] == first.pid
        key = 10 + len(again)  # a key of its own in the module's table
        insert(admin, key)
        wait_for(lambda: keys(out) == [key] or first.poll() is not None, 60)
        assert first.poll() is None
    assert "reconnecting" not in out.with_suffix(".err").read_text()


def test_uninstall_lists_rowcast_tables_and_drops_data_only_when_told(admin: Any) -> None:
    from click.testing import CliRunner

    from rowcast.checkpoint import open_checkpoint
    from rowcast.cli import main

    with open_checkpoint(URL) as checkpoint:  # a relay's checkpoint, kept in the database
        checkpoint.save("mysql-bin.000001:4")
    dry = CliRunner().invoke(main, ["uninstall", URL])
    assert dry.exit_code == 0, dry.output
    assert f"kept (data) table {DB}.rowcast_checkpoint (relay checkpoints, 1 row)" in dry.output
    assert "the binlog source itself creates nothing in the database" in dry.output
    kept = CliRunner().invoke(main, ["uninstall", URL, "--yes"])
    assert kept.exit_code == 0, kept.output
    with admin.cursor() as cur:
        cur.execute(f"SHOW TABLES FROM {DB} LIKE 'rowcast%'")
        assert cur.fetchall() == (("rowcast_checkpoint",),)
    gone = CliRunner().invoke(main, ["uninstall", URL, "--yes", "--include-data"])
    assert f"dropped table {DB}.rowcast_checkpoint" in gone.output
    with admin.cursor() as cur:
        cur.execute(f"SHOW TABLES FROM {DB} LIKE 'rowcast%'")
        assert cur.fetchall() == ()
    assert f"nothing of rowcast's in {URL}" in CliRunner().invoke(main, ["uninstall", URL]).output


def test_uninstall_of_a_database_that_does_not_exist_is_an_error(admin: Any) -> None:
    # a typo in the database said "nothing of rowcast's in ..." with exit 0: the user
    # believed the real database clean
    from click.testing import CliRunner

    from rowcast.cli import main

    typo = f"mysql://root@127.0.0.1:3306/{DB}_typo"
    for args in (["uninstall", typo], ["uninstall", typo, "--yes"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, result.output
        assert f"database {DB}_typo does not exist" in result.output
        assert DB in result.output.replace(f"{DB}_typo", "")  # the databases there are
        assert "Traceback" not in result.output


@pytest.mark.parametrize("saved", ["0/16B3748", "42"])
def test_a_relay_given_another_kind_of_sources_checkpoint_names_it(
    admin: Any, tmp_path: Path, saved: str
) -> None:
    from click.testing import CliRunner

    from rowcast.checkpoint import open_checkpoint
    from rowcast.cli import main

    pos = tmp_path / "other.pos"
    with open_checkpoint(str(pos)) as checkpoint:
        checkpoint.save(saved)  # a PostgreSQL or a SQLite relay's
    result = CliRunner().invoke(main, ["relay", URL, "--to", "-", "--checkpoint", str(pos)])
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert f"the checkpoint {pos} holds {saved!r}, which is not a MySQL / MariaDB" in message
    assert "another kind of source" in message  # was: "bad binlog position '42'"

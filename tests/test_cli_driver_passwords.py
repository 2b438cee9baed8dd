"""The places each driver reads a password from keep working under rowcast.

MySQL / MariaDB: ``?read_default_file=~/.my.cnf`` in the URL has PyMySQL read the user
and password the URL leaves out from the option file's ``[client]`` group (the binlog
source, and every ``mysql://`` URL SQLAlchemy opens: checkpoint, replica, outbox).
PostgreSQL: libpq reads ``PGPASSWORD`` and the password file (``~/.pgpass``, or
``PGPASSFILE``). The test PostgreSQL trusts 127.0.0.1, so there the test reads back the
password libpq found for rowcast's own connection; the test MariaDB checks it.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
from click.testing import CliRunner

from rowcast.checkpoint import open_checkpoint
from rowcast.cli import main
from rowcast.sources.postgres.server import connect, parse_url
from tests.conftest import require_server

pytestmark = pytest.mark.server

PASSWORD = f"Pw-{uuid.uuid4().hex[:12]}!"


@pytest.fixture(scope="module")
def mysql_user() -> Iterator[str]:
    """A MariaDB user identified by PASSWORD, with its own database."""
    require_server("mysql")
    name = f"rcopt_{uuid.uuid4().hex[:8]}"
    root = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    with root.cursor() as cur:
        cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (name, PASSWORD))
        cur.execute(f"GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO {name}")
        cur.execute(f"CREATE DATABASE {name}")
        cur.execute(f"GRANT ALL ON {name}.* TO {name}")
    try:
        yield name
    finally:
        with root.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
            cur.execute("DROP USER IF EXISTS %s@'%%'", (name,))
        root.close()


def option_file(tmp_path: Path, user: str | None, password: str) -> Path:
    path = tmp_path / "my.cnf"
    who = f"user = {user}\n" if user else ""
    path.write_text(f"[client]\n{who}password = {password}\n")
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("in_file", ["user and password", "password"])
def test_the_binlog_source_reads_an_option_file(
    mysql_user: str, tmp_path: Path, in_file: str
) -> None:
    if in_file == "password":
        cnf = option_file(tmp_path, None, PASSWORD)
        url = f"mysql://{mysql_user}@127.0.0.1:3306/{mysql_user}?read_default_file={cnf}"
    else:
        cnf = option_file(tmp_path, mysql_user, PASSWORD)
        url = f"mysql://127.0.0.1:3306/{mysql_user}?read_default_file={cnf}"
    doctor = CliRunner().invoke(main, ["doctor", url])
    assert doctor.exit_code in (0, 1), doctor.output  # connected and checked the server
    assert "privilege REPLICATION SLAVE" in doctor.output
    tail = CliRunner().invoke(main, ["tail", url, "--to", "now"])
    assert tail.exit_code == 0, tail.output


def test_a_wrong_password_in_the_option_file_is_refused(mysql_user: str, tmp_path: Path) -> None:
    cnf = option_file(tmp_path, None, "not it")
    url = f"mysql://{mysql_user}@127.0.0.1:3306/{mysql_user}?read_default_file={cnf}"
    result = CliRunner().invoke(main, ["doctor", url])
    assert result.exit_code == 2
    assert f"access denied for user '{mysql_user}'" in result.output


def test_a_mysql_checkpoint_reads_an_option_file(mysql_user: str, tmp_path: Path) -> None:
    cnf = option_file(tmp_path, mysql_user, PASSWORD)
    url = f"mysql://127.0.0.1:3306/{mysql_user}?read_default_file={cnf}&name=opt"
    with open_checkpoint(url) as checkpoint:
        checkpoint.save("mysql-bin.000001:4")
        assert checkpoint.load() == "mysql-bin.000001:4"


@contextlib.contextmanager
def libpq_password(conninfo: str) -> Iterator[str | None]:
    conn = connect(parse_url(conninfo))
    try:
        yield conn.info.password
    finally:
        conn.close()


def test_postgresql_reads_pgpassword_and_the_password_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_server("postgresql")
    url = "postgresql://postgres@127.0.0.1:5432/test"
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    with libpq_password(url) as found:
        assert found == PASSWORD
    monkeypatch.delenv("PGPASSWORD")
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:5432:test:postgres:{PASSWORD}-file\n")
    pgpass.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    with libpq_password(url) as found:
        assert found == f"{PASSWORD}-file"
    # and through the command: the password is libpq's to find, rowcast asks for none
    result = CliRunner().invoke(main, ["doctor", url])
    assert result.exit_code in (0, 1), result.output


def test_a_missing_option_file_is_an_error(tmp_path: Path) -> None:
    url = f"mysql://app@127.0.0.1:3306/shop?read_default_file={tmp_path}/none.cnf"
    result = CliRunner().invoke(main, ["doctor", url])
    assert result.exit_code == 2
    assert f"read_default_file names no file: '{tmp_path}/none.cnf'" in result.output

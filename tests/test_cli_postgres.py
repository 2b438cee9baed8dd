"""``rowcast tail`` and ``rowcast doctor`` against the real PostgreSQL (wal_level=logical).

The tests run in a private database ``rc_pgcli_<run>``; each ``tail`` reads
through its own slot and publication, dropped at the end (the reader's
connection terminated first), also when a test fails.
"""

from __future__ import annotations

import itertools
import queue
import re
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
import pytest
from click.testing import CliRunner, Result

from rowcast import Change
from rowcast.cli import main
from tests.conftest import require_server
from tests.sources.test_postgres import drop_slot, private_database

pytestmark = pytest.mark.server

ROWCAST = Path(sys.executable).with_name("rowcast")
RUN = secrets.token_hex(3)
DATABASE = f"rc_pgcli_{RUN}"
_numbers = itertools.count(1)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with private_database(DATABASE) as url:
        yield url


@pytest.fixture(scope="module")
def db(base: str) -> Iterator[Any]:
    conn = psycopg2.connect(base)
    conn.autocommit = True
    yield conn.cursor()
    conn.close()


@pytest.fixture
def url(base: str, db: Any) -> Iterator[str]:
    """The private database's URL with a fresh slot and publication, dropped after."""
    name = f"rc_pgcli_{RUN}_{next(_numbers)}"
    yield f"{base}?slot={name}&publication={name}"
    drop_slot(db, name)
    db.execute(f"DROP PUBLICATION IF EXISTS {name}")


def lsn(db: Any) -> str:
    db.execute("SELECT pg_current_wal_lsn()")
    return str(db.fetchone()[0])


@pytest.fixture
def workload(url: str, db: Any) -> str:
    """A small workload on rc_items and rc_notes; the position before it."""
    db.execute("DROP TABLE IF EXISTS rc_items, rc_notes")
    db.execute("CREATE TABLE rc_items (id INT PRIMARY KEY, name TEXT, price NUMERIC(8, 2))")
    db.execute("CREATE TABLE rc_notes (k TEXT, n INT, body TEXT, PRIMARY KEY (k, n))")
    db.execute("ALTER TABLE rc_items REPLICA IDENTITY FULL")
    db.execute("ALTER TABLE rc_notes REPLICA IDENTITY FULL")
    # the slot and publication exist before the workload: what tail reads from them
    assert invoke("tail", url, "--tables", "rc_items,rc_notes", "--to", "now").exit_code == 0
    start = lsn(db)
    db.execute(
        "BEGIN; INSERT INTO rc_items VALUES (1, 'apple', 1.50), (2, 'pear', 2.25); "
        "INSERT INTO rc_notes VALUES ('a', 1, 'hello'); COMMIT"
    )
    db.execute("UPDATE rc_items SET price = 1.75 WHERE id = 1")
    db.execute(
        "BEGIN; DELETE FROM rc_items WHERE id = 2; INSERT INTO rc_notes VALUES ('a', 2, 'x')"
    )
    db.execute("COMMIT")
    db.execute("DELETE FROM rc_notes WHERE n = 1")
    return start


def tail_json(url: str, start: str, *options: str) -> list[Change]:
    result = invoke("tail", url, "--from", start, "--to", "now", "--format", "json", *options)
    assert result.exit_code == 0, result.output
    return [Change.from_json(line) for line in result.stdout.splitlines()]


def test_tail_json_prints_exactly_the_workload(url: str, workload: str) -> None:
    changes = tail_json(url, workload, "--tables", "rc_items,public.rc_notes")
    assert [(c.name, c.pk) for c in changes] == [
        ("rc_items_write", 1),
        ("rc_items_write", 2),
        ("rc_notes_write", ("a", 1)),
        ("rc_items_update", 1),
        ("rc_items_delete", 2),
        ("rc_notes_write", ("a", 2)),
        ("rc_notes_delete", ("a", 1)),
    ]
    update, delete = changes[3], changes[4]
    assert update.before == {"id": 1, "name": "apple", "price": Decimal("1.50")}
    assert update.after == {"id": 1, "name": "apple", "price": Decimal("1.75")}
    assert update.changed == ("price",)
    assert delete.before == {"id": 2, "name": "pear", "price": Decimal("2.25")}
    assert {(c.schema, c.source) for c in changes} == {("public", "postgres")}
    assert len({(c.txid, c.position) for c in changes[:3]}) == 1
    assert len({c.txid for c in changes}) == 4


def test_tail_table_format_and_the_tables_filter(url: str, workload: str) -> None:
    result = invoke("tail", url, "--from", workload, "--to", "now", "-t", "rc_notes")
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.stdout.splitlines() if line[:3].strip().isdigit()]
    assert [row[1] for row in rows] == ["rc_notes_write"] * 2 + ["rc_notes_delete"]
    headings = [line for line in result.stdout.splitlines() if "──  tx " in line]
    assert len(headings) == 3
    assert all(" at 0/" in line or (" at " in line and "/" in line) for line in headings)
    assert "3 changes in 3 transactions" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--from", "nonsense"), "error: bad PostgreSQL position 'nonsense': expected an LSN"),
        (("--to", "start"), "error: bad PostgreSQL position 'start'"),
        (("--server-id", "7"), "--server-id is for mysql:// and mariadb:// URLs"),
    ],
)
def test_tail_bad_options_exit_2(base: str, args: tuple[str, ...], message: str) -> None:
    result = invoke("tail", base, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_tail_stops_cleanly_on_sigterm(url: str, db: Any) -> None:
    db.execute("DROP TABLE IF EXISTS rc_sig")
    db.execute("CREATE TABLE rc_sig (id INT PRIMARY KEY)")
    db.execute("ALTER TABLE rc_sig REPLICA IDENTITY FULL")
    assert invoke("tail", url, "-t", "rc_sig", "--to", "now").exit_code == 0
    start = lsn(db)
    db.execute("INSERT INTO rc_sig VALUES (1)")
    proc = subprocess.Popen(
        [str(ROWCAST), "tail", url, "-t", "rc_sig", "--from", start],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
    try:
        while "rc_sig_write" not in lines.get(timeout=30):
            pass  # streaming now
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=15)
        stderr = proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    assert status == 0, stderr
    assert "1 changes in 1 transactions" in stderr
    assert "Traceback" not in stderr


# ------------------------------------------------------------------ doctor


def test_doctor_passes_every_check_on_a_ready_database(url: str, db: Any) -> None:
    db.execute("DROP TABLE IF EXISTS rc_doc")
    db.execute("CREATE TABLE rc_doc (id INT PRIMARY KEY)")
    db.execute("ALTER TABLE rc_doc REPLICA IDENTITY FULL")
    result = invoke("doctor", url + "&tables=rc_doc")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for check in (
        "wal_level",
        "replication privilege",
        "max_replication_slots",
        "max_wal_senders",
        "slot rc_pgcli_",
        "publication rc_pgcli_",
        "replica identity public.rc_doc",
    ):
        assert any(line.strip().startswith(f"✓ {check}") for line in out.splitlines()), check
    assert re.search(r"\n  server +PostgreSQL", out)
    assert re.search(rf"\n  database +{DATABASE}\n", out)
    assert re.search(r"\n  max_slot_wal_keep_size +(no limit|[0-9.]+ [kMGT]?B)", out)
    assert "✓ tables rc_doc " in out  # the pattern names a table
    assert "matches 1 table" in out
    assert "matches 1 tables" not in out
    assert "All 8 checks passed" in out


@pytest.fixture
def noperm_url(url: str, db: Any) -> Iterator[str]:
    role = f"rc_pgcli_{RUN}_noperm"
    db.execute(f"DROP ROLE IF EXISTS {role}")
    db.execute(f"CREATE ROLE {role} LOGIN")
    yield url.replace("postgresql://postgres@", f"postgresql://{role}@", 1)
    db.execute(f"DROP ROLE IF EXISTS {role}")


def test_doctor_prints_the_fix_for_each_failed_check(noperm_url: str, db: Any) -> None:
    db.execute("DROP TABLE IF EXISTS rc_doc_key")
    db.execute("CREATE TABLE rc_doc_key (id INT PRIMARY KEY)")
    result = invoke("doctor", noperm_url + "&tables=rc_doc_key")
    assert result.exit_code == 1, result.output
    out = result.stdout
    assert "✓ wal_level " in out
    assert "✗ replication privilege " in out
    assert f"fix: ALTER ROLE rc_pgcli_{RUN}_noperm REPLICATION;" in out
    # the publication needs CREATE on the database and the tables' ownership
    assert "✗ publication rc_pgcli_" in out
    assert "fix: GRANT CREATE ON DATABASE" in out
    # a primary key is enough: FULL only adds before images (no failure, a note)
    assert "✓ replica identity public.rc_doc_key  default (primary key): before images hold" in out
    assert "2 of 8 checks failed" in out


@pytest.mark.parametrize("command", ["tail", "doctor"])
def test_a_server_that_cannot_be_used_exits_2(command: str) -> None:
    require_server("postgresql")
    for bad, message in [
        ("postgresql://rc_pg_nobody:pw@127.0.0.1:5432/test", "access denied"),
        ("postgresql://postgres:secret@127.0.0.1:1/test", "cannot reach"),
    ]:
        result = invoke(command, bad)
        assert result.exit_code == 2, result.output
        error = result.stderr.splitlines()[-1]
        assert error.startswith("error: ")
        assert message in error
        assert "secret" not in result.stderr
        assert "Traceback" not in result.output

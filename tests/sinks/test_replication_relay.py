"""The README's replication commands, pasted: ``rowcast relay`` run as a subprocess from
MariaDB and from PostgreSQL into replicas, a column added at the source mid-run.

The commands are read from the README. Only names change (databases, schemas, slot,
files: unique to the run, on servers other tests share), and the MariaDB relay gets
``--server-id`` and ``--from``, so that it reads no other run's changes.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import signal
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2
import pymysql
import pytest

from tests.conftest import private_schema, require_server, wait_for
from tests.test_cli_relay import ROWCAST
from tests.test_relay import server_id

pytestmark = pytest.mark.server

README = Path(__file__).parents[2] / "README.md"
PG = "postgresql://postgres@127.0.0.1:5432/test"


def readme_commands() -> list[str]:
    """The commands of the README's replication section, continuation lines joined."""
    text = README.read_text()
    section = text[text.index("## Replication into another database") :]
    block = re.search(r"```console\n(.*?)```", section, re.S)
    assert block is not None
    joined = block.group(1).replace("\\\n", " ")
    return [line.removeprefix("$ ") for line in joined.splitlines() if line.startswith("$ ")]


def pasted(command: str, names: dict[str, str], *extra: str) -> list[str]:
    """`command` with the README's `names` (whole words) replaced, as argv."""
    words = "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))
    swapped = re.sub(rf"(?<![\w.-])({words})(?![\w-])", lambda m: names[m.group(1)], command)
    argv = shlex.split(swapped)
    assert argv[0] == "rowcast"
    return [ROWCAST, *argv[1:], *extra]


_started: list[subprocess.Popen[str]] = []


def start(argv: list[str]) -> subprocess.Popen[str]:
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _started.append(process)
    return process


@pytest.fixture(autouse=True)
def _no_relay_left() -> Iterator[None]:
    """Whatever a test fails on, the relays it started end with it."""
    yield
    while _started:
        process = _started.pop()
        if process.poll() is None:
            process.kill()
            process.communicate()


def ended(process: subprocess.Popen[str]) -> str:
    """The stderr of `process` once it exits; killed (and the test failed) after 60 s."""
    try:
        return process.communicate(timeout=60)[1]
    except subprocess.TimeoutExpired:
        process.kill()
        err = process.communicate()[1]
        pytest.fail(f"the relay did not end: {err[-2000:]}")


def until(process: subprocess.Popen[str], condition: Any, what: str) -> None:
    """Wait for `condition` while the relay runs; else fail with what the relay said."""
    deadline = time.monotonic() + 60
    while process.poll() is None and not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    if process.poll() is not None or not condition():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        pytest.fail(f"{what}: the relay said\n{ended(process)[-3000:]}")


def stop(process: subprocess.Popen[str]) -> str:
    """SIGTERM: the relay finishes its batch and exits 0; its stderr."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    err = ended(process)
    assert process.returncode == 0, err
    return err


def sqlite_rows(path: Path, table: str) -> list[tuple[Any, ...]]:
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(path)) as conn:
        try:
            return conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
        except sqlite3.OperationalError:  # not made yet
            return []


def declared(path: Path, table: str) -> dict[str, str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return {r[1]: r[2] for r in conn.execute(f"PRAGMA table_info({table})")}


# ---------------------------------------------------------------- MariaDB -> PostgreSQL, SQLite


@pytest.fixture
def shop() -> Iterator[tuple[Any, str]]:
    """A MariaDB database ``rc_shop_<random>`` with a table ``orders``; a connection to it.

    PostgreSQL's schema of the same name, which the relay makes, is dropped after too.
    """
    require_server("mysql")
    name = f"rc_shop_{uuid.uuid4().hex[:8]}"
    conn = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
        cur.execute(
            f"CREATE TABLE {name}.orders (id INT PRIMARY KEY, item VARCHAR(20), "
            "total DECIMAL(10, 2))"
        )
    try:
        yield conn, name
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.close()
        with contextlib.closing(psycopg2.connect(PG)) as pg:
            pg.autocommit = True
            pg.cursor().execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def test_the_readme_mariadb_replication_runs_as_pasted(
    shop: tuple[Any, str], tmp_path: Path
) -> None:
    conn, name = shop
    with conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        file, offset = cur.fetchone()[:2]
    files = {"replica.db": str(tmp_path / "replica.db"), "relay.pos": str(tmp_path / "relay.pos")}
    argv = pasted(
        readme_commands()[0],
        {"shop": name, **files},
        *("--server-id", str(server_id()), "--from", f"{file}:{offset}"),
    )
    process = start(argv)  # the PostgreSQL schema does not exist: the sink makes it
    try:
        with conn.cursor() as cur:
            cur.execute(f"INSERT INTO {name}.orders VALUES (1, 'tea', 3.50), (2, 'cake', 4.25)")
            cur.execute(f"UPDATE {name}.orders SET total = 3.75 WHERE id = 1")
            cur.execute(f"ALTER TABLE {name}.orders ADD COLUMN note VARCHAR(30)")
            cur.execute(f"INSERT INTO {name}.orders VALUES (3, 'pie', 5.00, 'warm')")
        want = [
            (1, "tea", Decimal("3.75"), None),
            (2, "cake", Decimal("4.25"), None),
            (3, "pie", Decimal("5.00"), "warm"),
        ]

        def replicated() -> list[tuple[Any, ...]]:
            with contextlib.closing(psycopg2.connect(PG)) as pg:
                cur = pg.cursor()
                cur.execute("SELECT to_regclass(%s)", (f"{name}.orders",))
                if cur.fetchone()[0] is None:
                    return []
                cur.execute(f"SELECT id, item, total, note FROM {name}.orders ORDER BY id")
                return [tuple(row) for row in cur.fetchall()]

        until(process, lambda: replicated() == want, "not replicated into PostgreSQL")
        replica = tmp_path / "replica.db"
        in_sqlite = [(i, item, note) for i, item, _, note in want]  # total: DECIMAL_TEXT
        until(
            process,
            lambda: [r[:2] + r[3:] for r in sqlite_rows(replica, "orders")] == in_sqlite,
            "not replicated into SQLite",
        )
    finally:
        err = stop(process)
    assert "Traceback" not in err
    assert declared(replica, "orders")["note"] == "VARCHAR(30)"  # the source's type


# ---------------------------------------------------------------- PostgreSQL -> SQLite


def pg_execute(*statements: str) -> None:
    with contextlib.closing(psycopg2.connect(PG)) as pg:
        pg.autocommit = True
        cur = pg.cursor()
        for statement in statements:
            cur.execute(statement)


def slot_active(slot: str) -> bool:
    with contextlib.closing(psycopg2.connect(PG)) as pg:
        cur = pg.cursor()
        cur.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        row = cur.fetchone()
    return bool(row and row[0])


def streaming(slot: str) -> bool:
    """A reader streams from `slot`: it chose where to start (a relay's "now") before."""
    with contextlib.closing(psycopg2.connect(PG)) as pg:
        cur = pg.cursor()
        cur.execute(
            "SELECT r.state FROM pg_replication_slots s JOIN pg_stat_replication r "
            "ON r.pid = s.active_pid WHERE s.slot_name = %s",
            (slot,),
        )
        row = cur.fetchone()
    return bool(row and row[0] in ("streaming", "catchup"))


@pytest.fixture
def two_schemas() -> Iterator[tuple[str, str, str]]:
    """Two PostgreSQL schemas, each with a table ``orders``, and a slot name; the slot and
    publication of that name are dropped after."""
    require_server("postgresql")
    slot = f"rc_replica_{uuid.uuid4().hex[:8]}"
    with private_schema("rc_shop") as shop, private_schema("rc_crm") as crm:
        pg_execute(
            f"CREATE TABLE {shop}.orders (id INT PRIMARY KEY, item TEXT)",
            f"CREATE TABLE {crm}.orders (id INT PRIMARY KEY, total NUMERIC(10, 2))",
        )
        try:
            yield shop, crm, slot
        finally:
            with contextlib.suppress(psycopg2.Error):
                pg_execute(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                    f"WHERE slot_name = '{slot}' AND active_pid IS NOT NULL"
                )
            wait_for(lambda: not slot_active(slot), 20)
            pg_execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                f"WHERE slot_name = '{slot}'",
                f"DROP PUBLICATION IF EXISTS {slot}",
            )


def test_the_readme_postgresql_replication_refuses_a_clash_then_runs_as_pasted(
    two_schemas: tuple[str, str, str], tmp_path: Path
) -> None:
    shop, crm, slot = two_schemas
    replica = tmp_path / "pg-replica.db"
    names = {
        "shop": shop,
        "crm": crm,
        "replica": slot,
        "pg-replica.db": str(replica),
        "pg.pos": str(tmp_path / "pg.pos"),
    }
    command = readme_commands()[1]
    assert "&map=crm.orders:crm_orders" in command

    # without map=, the two orders tables would share one replica table: refused
    process = start(pasted(command.replace("&map=crm.orders:crm_orders", ""), names))
    until(process, lambda: streaming(slot), "no stream from the slot")
    # shop's row first, so the relay has a position to resume from: an empty checkpoint
    # would start the next relay at "now", past the refused transaction
    pg_execute(f"INSERT INTO {shop}.orders VALUES (1, 'tea')")
    until(process, lambda: sqlite_rows(replica, "orders") == [(1, "tea")], "shop not replicated")
    pg_execute(f"INSERT INTO {crm}.orders VALUES (1, 9.50)")
    err = ended(process)
    assert process.returncode != 0
    message = " ".join(err.split())
    assert f"{crm}.orders and {shop}.orders would both replicate into table orders" in message
    assert f"map={crm}.orders:{crm}_orders" in message
    assert "Traceback" not in err
    assert sqlite_rows(replica, "orders") == [(1, "tea")]  # never crm's row

    # as pasted: it resumes where the refused one stopped, crm.orders into crm_orders
    process = start(pasted(command, names))
    try:
        until(process, lambda: sqlite_rows(replica, "crm_orders"), "crm.orders not replicated")
        # the source table gains a column: its replica gains it too
        pg_execute(
            f"ALTER TABLE {shop}.orders ADD COLUMN note VARCHAR(30)",
            f"INSERT INTO {shop}.orders VALUES (2, 'cake', 'warm')",
        )
        want = [(1, "tea", None), (2, "cake", "warm")]
        until(process, lambda: sqlite_rows(replica, "orders") == want, "no added column")
    finally:
        err = stop(process)
    assert sqlite_rows(replica, "orders") == want, err
    assert sqlite_rows(replica, "crm_orders") == [(1, "9.50")]  # DECIMAL_TEXT: exact
    assert declared(replica, "orders")["note"] == "VARCHAR(30)"

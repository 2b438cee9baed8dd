"""``rowcast relay`` on the real servers when a sink is wrong: exit 2 before the source
moves, exit 3 when a sink refuses a transaction for good (the checkpoint before it),
``--on-error dead-letter`` going on past it.

Each relay runs as a subprocess with a time limit: a relay that retries for ever
(what these cases did before sinks were checked and refusals told apart) fails the
test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from rowcast import Change
from rowcast.checkpoint import open_checkpoint
from rowcast.store import EventStore
from rowcast.testing.sink import closed_port
from tests.conftest import require_server
from tests.sinks import require_nats
from tests.test_cli_relay import ROWCAST
from tests.test_relay import URL, Table, server_id, wait_for

pytestmark = pytest.mark.server

PG = "postgresql://postgres@127.0.0.1:5432"
LIMIT = 90  # seconds any relay here may run before the test calls it hung


def run_relay(*args: str, until: Any = None, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``rowcast relay ARGS`` to its end; with `until`, SIGTERM once ``until()`` is true."""
    process = subprocess.Popen(
        [ROWCAST, "relay", *args, "--checkpoint", str(tmp_path / "pos")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if until is not None:
            wait_for(lambda: process.poll() is not None or until(), LIMIT, "the relay")
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=LIMIT)
    except BaseException:
        process.kill()
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def saved(tmp_path: Path) -> str | None:
    with open_checkpoint(str(tmp_path / "pos")) as checkpoint:
        return checkpoint.load()


def source_args(table: Table, start: str) -> list[str]:
    return [URL, "--tables", f"test.{table.name}", "--from", start]


# ---------------------------------------------------------------- exit 2: checked at start


@contextlib.contextmanager
def logical_database() -> Iterator[str]:
    """A fresh PostgreSQL database (the server has wal_level=logical), dropped after with
    any slot made in it."""
    require_server("postgresql")
    admin = f"{PG}/test"
    name = f"rc_fail_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            slots = conn.execute(
                "SELECT slot_name FROM pg_replication_slots WHERE database = %s", (name,)
            ).fetchall()
            for (slot,) in slots:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_an_unreachable_redis_exits_2_before_the_source_moves(tmp_path: Path) -> None:
    """The PostgreSQL source would make its slot and publication when checked: it is not."""
    with logical_database() as database:
        slot = f"rc_fail_{uuid.uuid4().hex[:8]}"
        sink = f"redis://127.0.0.1:{closed_port()}/0?timeout=2"
        source = f"{PG}/{database}?slot={slot}&publication={slot}"
        result = run_relay(source, "--to", sink, tmp_path=tmp_path)
        assert result.returncode == 2, result.stderr
        assert f"Redis sink {sink}" in result.stderr
        assert "Connection refused" in result.stderr
        assert "Traceback" not in result.stderr
        with psycopg.connect(f"{PG}/{database}", autocommit=True) as conn:
            slots = conn.execute(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            ).fetchone()
            publications = conn.execute(
                "SELECT count(*) FROM pg_publication WHERE pubname = %s", (slot,)
            ).fetchone()
        assert slots == (0,)
        assert publications == (0,)
    assert saved(tmp_path) is None


def test_a_nats_subject_overlapping_another_stream_exits_2_naming_it(tmp_path: Path) -> None:
    import nats

    prefix = f"rc_fail_{uuid.uuid4().hex[:8]}"
    other = f"{prefix}_typo"  # what `consume ?stream=<typo>` used to leave behind

    async def js(call: Any) -> None:
        nc = await nats.connect(require_nats(), connect_timeout=5, allow_reconnect=False)
        try:
            await call(nc.jetstream())
        finally:
            await nc.close()

    asyncio.run(js(lambda j: j.add_stream(name=other, subjects=[f"{prefix}.>"])))
    try:
        sink = f"{require_nats()}?stream={prefix}&prefix={prefix}&timeout=5"
        result = run_relay(URL, "--to", sink, tmp_path=tmp_path)
    finally:
        asyncio.run(js(lambda j: j.delete_stream(other)))
    assert result.returncode == 2, result.stderr
    assert f"they overlap the subjects of stream '{other}'" in result.stderr
    assert "nats stream rm" in result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- exit 3: refused for good


@pytest.fixture
def replica() -> Iterator[tuple[str, str]]:
    """A PostgreSQL schema with a table ``items`` whose ``n`` is SMALLINT (the source: INT)."""
    name = f"rc_fail_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{PG}/test", autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield name, "items"
    finally:
        with psycopg.connect(f"{PG}/test", autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")


def replica_rows(schema: str, table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(f"{PG}/test") as conn:
        return conn.execute(f"SELECT * FROM {schema}.{table} ORDER BY 1").fetchall()


@pytest.fixture
def poison(replica: tuple[str, str]) -> Iterator[tuple[Table, str, list[str]]]:
    """A source table and three transactions: the second one's value does not fit the
    replica's SMALLINT. Yields the table, the position before them and each one's end."""
    schema, _ = replica
    table = Table("rc_fail")
    with psycopg.connect(f"{PG}/test", autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {schema}.{table.name} (id int PRIMARY KEY, n smallint)")
    start = table.position()
    ends = []
    for statement in (
        f"INSERT INTO {table.name} VALUES (1, 1)",
        f"INSERT INTO {table.name} VALUES (2, 100000)",
        f"INSERT INTO {table.name} VALUES (3, 3)",
    ):
        table.execute(statement)
        ends.append(table.last(start))
    try:
        yield table, start, ends
    finally:
        table.drop()


def test_a_value_the_replica_cannot_hold_exits_3_with_the_checkpoint_before_it(
    replica: tuple[str, str], poison: tuple[Table, str, list[str]], tmp_path: Path
) -> None:
    schema, _ = replica
    table, start, ends = poison
    sink = f"{PG}/test?mode=replicate&schema={schema}"
    args = [*source_args(table, start), "--to", sink, "--server-id", str(server_id())]
    result = run_relay(*args, "--log-format", "json", tmp_path=tmp_path)
    assert result.returncode == 3, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    (refused,) = [r for r in records if r.get("event") == "refused"]
    assert "smallint out of range" in refused["error"]
    assert "change the column's type" in refused["fix"]
    assert refused["position"] == ends[1]
    assert refused["checkpoint"] == ends[0]
    assert saved(tmp_path) == ends[0]  # the first transaction, and not one more
    assert replica_rows(schema, table.name) == [(1, 1)]

    # fixed: the relay resumes at the refused transaction and delivers the rest
    with psycopg.connect(f"{PG}/test", autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {schema}.{table.name} ALTER n TYPE int")
    result = run_relay(*args, until=lambda: saved(tmp_path) == ends[2], tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert replica_rows(schema, table.name) == [(1, 1), (2, 100000), (3, 3)]


def test_a_refused_privilege_exits_3_and_leaves_the_checkpoint(
    replica: tuple[str, str], poison: tuple[Table, str, list[str]], tmp_path: Path
) -> None:
    schema, _ = replica
    table, start, _ = poison
    role = f"rc_fail_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{PG}/test", autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")  # no INSERT on the replica's table, no CREATE
        conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        conn.execute(f"GRANT SELECT ON {schema}.{table.name} TO {role}")
    try:
        sink = (
            f"postgresql://{role}@127.0.0.1:5432/test?mode=replicate&schema={schema}&create=false"
        )
        args = [*source_args(table, start), "--to", sink, "--server-id", str(server_id())]
        result = run_relay(*args, tmp_path=tmp_path)
    finally:
        with psycopg.connect(f"{PG}/test", autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")
    assert result.returncode == 3, result.stderr
    assert "permission denied for table" in result.stderr
    assert "grant the user" in result.stderr
    assert "--on-error dead-letter" in result.stderr
    assert "Traceback" not in result.stderr
    assert saved(tmp_path) == start  # unmoved from where it began: the first was refused
    assert replica_rows(schema, table.name) == []


def test_dead_letter_delivers_the_good_transactions_and_keeps_the_poison(
    replica: tuple[str, str], poison: tuple[Table, str, list[str]], tmp_path: Path
) -> None:
    schema, _ = replica
    table, start, ends = poison
    dead = f"sqlite:///{tmp_path / 'dead.db'}"
    result = run_relay(
        *source_args(table, start),
        "--to",
        f"{PG}/test?mode=replicate&schema={schema}",
        "--server-id",
        str(server_id()),
        "--on-error",
        "dead-letter",
        "--dead-letter",
        dead,
        until=lambda: saved(tmp_path) == ends[2],
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert replica_rows(schema, table.name) == [(1, 1), (3, 3)]
    with EventStore(dead) as store:
        (event,) = store.read_all()
    change = Change(**event.data)
    assert (change.table, change.pk, change.after) == (table.name, 2, {"id": 2, "n": 100000})
    why = event.metadata["dead_letter"]  # type: ignore[index]
    assert why["sink"] == f"{PG}/test?mode=replicate&schema={schema}"
    assert "smallint out of range" in why["error"]
    assert "change the column's type" in why["fix"]
    assert "put in" in result.stderr  # the dead letter is logged


def test_on_error_without_a_dead_letter_destination_exits_2(tmp_path: Path) -> None:
    result = run_relay(URL, "--to", "-", "--on-error", "dead-letter", tmp_path=tmp_path)
    assert result.returncode == 2
    assert "needs a dead-letter destination" in result.stderr
    result = run_relay(URL, "--to", "-", "--dead-letter", "redis://h/0", tmp_path=tmp_path)
    assert result.returncode == 2
    assert "cannot be a dead-letter destination" in result.stderr

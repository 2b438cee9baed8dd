"""MariaDB replicated into PostgreSQL and SQLite by a relay killed twice: replicas equal the source.

The binlog issue's seed workload, then 5,000 seeded random writes (inserts, updates,
deletes, key changes: single, several rows in one statement, two rows swapping keys;
some over ranges of rows; in transactions of 1 to 4 statements) on two tables of
their own: one with an integer key and several column types (varchar, decimal,
datetime(6), text, a nullable column), one with a composite (varchar, int) key. One
``rowcast relay`` subprocess delivers to both replicas at once and is killed with
SIGKILL twice while the workload runs, at a random transaction once that run has
checkpointed, each time started again from its file checkpoint (so changes are
delivered again). Once it has checkpointed the end
of the workload's last transaction it is stopped with SIGTERM, and every replica
table equals its source table row for row, with the same Python values.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
import signal
import subprocess
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pymysql

from rowcast.checkpoint import open_checkpoint
from rowcast.sources.mysql import BinlogSource
from tests.conftest import private_schema, require_server
from tests.sinks.test_sql import rows
from tests.sources.seed import SEED
from tests.test_cli_relay import ROWCAST
from tests.test_relay import URL, server_id, unique, wait_for

WRITES = 5000
KEYS = 300  # ids of the first table: 1..KEYS
TENANTS = ("north", "south", "east", "west")
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

ITEMS = """
CREATE TABLE {name} (
    id INT AUTO_INCREMENT PRIMARY KEY,
    data VARCHAR(20),
    price DECIMAL(10, 2) NOT NULL DEFAULT 0,
    at DATETIME(6) NOT NULL DEFAULT '2026-01-01 00:00:00',
    body TEXT NOT NULL DEFAULT '',
    note VARCHAR(40) NULL
)
"""
STOCK = """
CREATE TABLE {name} (
    tenant VARCHAR(10), k INT, qty INT NOT NULL, PRIMARY KEY (tenant, k)
)
"""


def connect() -> Any:
    return pymysql.connect(host="127.0.0.1", user="root", database="test", autocommit=True)


def binlog_position(conn: Any) -> str:
    with conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        row = cur.fetchone()
    return f"{row[0]}:{row[1]}"


# ---------------------------------------------------------------- the workload

Statement = tuple[str, tuple[Any, ...]]


class Workload:
    """The seed statements, then `WRITES` seeded random writes grouped in transactions.

    Keeps the live keys itself, so every statement succeeds; `done` counts the
    transactions committed so far; each of `gates` (at a third and at two thirds of
    the transactions) holds the writer until the test lets it go on, so each kill
    is sure to fall while the writer runs.
    """

    def __init__(self, items: str, stock: str, seed: int) -> None:
        self.items, self.stock = items, stock
        self.rng = random.Random(seed)
        self.live: set[int] = set()
        self.live_stock: set[tuple[str, int]] = set()
        seed_tx = [[(s.replace(" test ", f" {items} "), ())] for s in SEED]
        self.transactions = seed_tx + self._random()
        self.done = 0
        self.gates = {len(self.transactions) * i // 3: threading.Event() for i in (1, 2)}
        self.finished = threading.Event()
        self.error: BaseException | None = None

    def _random(self) -> list[list[Statement]]:
        transactions: list[list[Statement]] = []
        writes = 0
        while writes < WRITES:
            swap = self._swap() if self.rng.random() < 0.02 else None
            size = min(self.rng.choice((1, 1, 2, 3, 4)), WRITES - writes)
            transactions.append(swap or [self._statement() for _ in range(size)])
            writes += len(transactions[-1])
        return transactions

    def _swap(self) -> list[Statement] | None:
        """Two rows trade keys through a third key, in one transaction."""
        if len(self.live) < 2:
            return None
        a, b = self.rng.sample(sorted(self.live), 2)
        sql = f"UPDATE {self.items} SET id = %s WHERE id = %s"
        return [(sql, (-1, a)), (sql, (a, b)), (sql, (b, -1))]

    def _values(self) -> tuple[Any, ...]:
        rng = self.rng
        return (
            rng.choice(("a", "b", "ü", "naïve", "x" * 20, "")),
            Decimal(rng.randrange(-(10**6), 10**6)) / 100,
            dt.datetime(2026, 1, 1)
            + dt.timedelta(seconds=rng.randrange(10**7), microseconds=rng.randrange(10**6)),
            rng.choice(("", "body → ", "long ")) * rng.randrange(1, 50),
            rng.choice((None, None, "note", "é")),
        )

    def _statement(self) -> Statement:
        rng, t = self.rng, self.items
        if rng.random() < 0.25:
            return self._stock_statement()
        row = rng.randrange(1, KEYS + 1)
        if row not in self.live:
            self.live.add(row)
            sql = (
                f"INSERT INTO {t} (id, data, price, at, body, note) VALUES (%s, %s, %s, %s, %s, %s)"
            )
            return sql, (row, *self._values())
        roll = rng.random()
        if roll < 0.14:
            self.live.discard(row)
            return f"DELETE FROM {t} WHERE id = %s", (row,)
        if roll < 0.18:  # a new key
            free = sorted(set(range(1, KEYS + 1)) - self.live)
            if free:
                new = rng.choice(free)
                self.live.discard(row)
                self.live.add(new)
                return f"UPDATE {t} SET id = %s WHERE id = %s", (new, row)
        if roll < 0.2:  # several rows get new keys in one statement
            free = sorted(set(range(1, KEYS + 1)) - self.live)
            if len(free) >= 3:
                moves = dict(
                    zip(rng.sample(sorted(self.live), 3), rng.sample(free, 3), strict=True)
                )
                self.live = self.live - set(moves) | set(moves.values())
                cases = " ".join(f"WHEN {old} THEN {new}" for old, new in moves.items())
                where = ", ".join(map(str, moves))
                return f"UPDATE {t} SET id = CASE id {cases} END WHERE id IN ({where})", ()
        if roll < 0.23:  # several rows at once
            return f"UPDATE {t} SET price = price + 1, note = NULL WHERE id BETWEEN %s AND %s", (
                row,
                row + 15,
            )
        if roll < 0.25:
            self.live -= set(range(row, row + 6))
            return f"DELETE FROM {t} WHERE id BETWEEN %s AND %s", (row, row + 5)
        columns = rng.sample(("data", "price", "at", "body", "note"), rng.randrange(1, 4))
        values = dict(zip(("data", "price", "at", "body", "note"), self._values(), strict=True))
        sets = ", ".join(f"{c} = %s" for c in columns)
        return f"UPDATE {t} SET {sets} WHERE id = %s", (*(values[c] for c in columns), row)

    def _stock_statement(self) -> Statement:
        rng, t = self.rng, self.stock
        key = (rng.choice(TENANTS), rng.randrange(60))
        if key not in self.live_stock:
            self.live_stock.add(key)
            return f"INSERT INTO {t} VALUES (%s, %s, %s)", (*key, rng.randrange(100))
        roll = rng.random()
        if roll < 0.2:
            self.live_stock.discard(key)
            return f"DELETE FROM {t} WHERE tenant = %s AND k = %s", key
        if roll < 0.4:  # a new key: another tenant or another k
            new = (rng.choice(TENANTS), rng.randrange(60))
            if new not in self.live_stock:
                self.live_stock.discard(key)
                self.live_stock.add(new)
                return f"UPDATE {t} SET tenant = %s, k = %s WHERE tenant = %s AND k = %s", (
                    *new,
                    *key,
                )
        return f"UPDATE {t} SET qty = qty + %s WHERE tenant = %s AND k = %s", (
            rng.randrange(9),
            *key,
        )

    def run(self) -> None:
        conn = connect()
        try:
            with conn.cursor() as cur:
                for index, transaction in enumerate(self.transactions):
                    if index in self.gates:
                        self.gates[index].wait(60)
                    if len(transaction) > 1:
                        cur.execute("BEGIN")
                    for sql, args in transaction:
                        cur.execute(sql, args or None)
                    if len(transaction) > 1:
                        cur.execute("COMMIT")
                    self.done = index + 1
        except BaseException as e:
            self.error = e
        finally:
            conn.close()
            self.finished.set()


# ---------------------------------------------------------------- the places


@contextlib.contextmanager
def source_tables() -> Iterator[tuple[str, str]]:
    require_server("mysql")
    items, stock = unique("replcrash_items"), unique("replcrash_stock")
    conn = connect()
    try:
        with conn.cursor() as cur:
            cur.execute(ITEMS.format(name=items))
            cur.execute(STOCK.format(name=stock))
        yield items, stock
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {items}, {stock}")
        conn.close()


def source_rows(table: str) -> list[tuple[Any, ...]]:
    conn = connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT * FROM {table}")
            return sorted(cur.fetchall())  # sorted here: collations differ between databases
    finally:
        conn.close()


def last_position(tables: list[str], start: str) -> tuple[str, int]:
    """Where our last transaction since `start` ends (what the relay checkpoints), and how many."""
    conn = connect()
    try:
        end = binlog_position(conn)
    finally:
        conn.close()
    source = BinlogSource(URL, tables=tables, start=start, end=end, server_id=server_id())
    transactions = list(source)
    position = transactions[-1][-1].position
    assert position is not None
    return position, len(transactions)


# ---------------------------------------------------------------- the test


def test_replicas_equal_the_source_after_two_kills(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")  # shown when the test fails: Workload(..., seed) repeats the writes
    with source_tables() as (items, stock), private_schema("replcrash") as schema:
        run_and_check(tmp_path, seed, items, stock, schema)


def run_and_check(tmp_path: Path, seed: int, items: str, stock: str, schema: str) -> None:
    rng = random.Random(seed)
    workload = Workload(items, stock, seed)
    tables = [f"test.{items}", f"test.{stock}"]
    sqlite = tmp_path / "replica.db"
    checkpoint = tmp_path / "pos"
    log_path = tmp_path / "relay.log"
    conn = connect()
    start = binlog_position(conn)
    conn.close()
    command = [
        ROWCAST,
        "relay",
        URL,
        "--to",
        f"postgresql://postgres@127.0.0.1:5432/test?mode=replicate&schema={schema}",
        "--to",
        f"sqlite:///{sqlite}?mode=replicate",
        "--checkpoint",
        str(checkpoint),
        "--tables",
        ",".join(tables),
        "--from",
        start,
        "--server-id",
        str(server_id()),
        "--batch-size",
        "100",
        "--log-format",
        "json",
    ]

    def log() -> str:
        return log_path.read_text() if log_path.exists() else ""

    def start_relay(runs: int) -> subprocess.Popen[bytes]:
        with log_path.open("ab") as out:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=out)

        def started() -> bool:
            assert process.poll() is None, log()[-3000:]
            return log().count('"event":"start"') == runs

        wait_for(started, 60, "the relay to start")
        return process

    def saved() -> str | None:
        with contextlib.closing(open_checkpoint(str(checkpoint))) as opened:
            return opened.load()

    def kill(process: subprocess.Popen[bytes], after: int, gate: int) -> None:
        """SIGKILL once the writer is past transaction `after` and this run checkpointed."""
        resumed = saved()
        at = rng.randrange(after, gate)
        wait_for(lambda: workload.done >= at and saved() != resumed, 60, "the relay to work")
        assert process.poll() is None, log()[-3000:]
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills.append((workload.done, saved()))

    kills: list[tuple[int, str | None]] = []
    writer = threading.Thread(target=workload.run)
    process = start_relay(1)
    writer.start()
    try:
        after = len(SEED)
        for run, (gate, go_on) in enumerate(workload.gates.items(), 2):
            kill(process, after, gate)
            process = start_relay(run)
            go_on.set()
            after = gate + 1
        writer.join()
        assert workload.error is None, workload.error
        end, count = last_position(tables, start)  # a few transactions changed no row
        try:

            def caught_up() -> bool:
                assert process.poll() is None, log()[-3000:]
                return saved() == end

            wait_for(caught_up, 120, "the last relay to catch up")
        except BaseException:
            process.kill()
            process.wait()
            raise
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, log()[-3000:]
    finally:
        for go_on in workload.gates.values():
            go_on.set()
        writer.join()
        if process.poll() is None:
            process.kill()
            process.wait()

    print(f"{count} transactions; kills (transactions done, checkpoint): {kills}")
    starts = [json.loads(line) for line in log().splitlines() if '"event":"start"' in line]
    assert len(starts) == 3
    assert starts[0]["position"] is None  # the first run began at --from
    replicas = [("postgresql", POSTGRES, schema), ("sqlite", f"sqlite:///{sqlite}", None)]
    for table in (items, stock):
        expected = source_rows(table)
        assert len(expected) > 50, table  # the workload leaves rows to compare
        for name, url, in_schema in replicas:
            assert sorted(rows(url, table, in_schema)) == expected, f"{name} {table}, seed {seed}"

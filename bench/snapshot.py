"""How fast each log source reads an initial snapshot (``snapshot="initial"``).

A table of `--rows` rows (an integer key, a text, a number, a timestamp) is made in a
private PostgreSQL database, a private MariaDB database and a new SQLite file (WAL);
each source then reads it with ``snapshot="initial", end="now"`` (the rows, then
nothing: the log has nothing after them), `--rounds` times per chunk size, with no
subscriber (iteration only: rows read, typed, made into `Change`s). Reported are
medians in rows per second. A source whose server is down is left out. Timing
never fails the script; a row count that is wrong does. Everything made is dropped.

    python bench/snapshot.py --rows 100000 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator

NAME = f"rc_bench_snap_{os.getpid()}"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_URL = f"postgresql://postgres@127.0.0.1:5432/{NAME}"
MYSQL_URL = f"mysql://root@127.0.0.1:3306/{NAME}"


@contextlib.contextmanager
def postgres(rows: int) -> Iterator[Callable[[int], int]]:
    import psycopg2

    from rowcast.sources.postgres import LogicalSource

    admin = psycopg2.connect(PG_ADMIN)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {NAME}")
    try:
        with contextlib.closing(psycopg2.connect(PG_URL)) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE t (id INT PRIMARY KEY, data TEXT, n NUMERIC, ts TIMESTAMPTZ)")
            cur.execute(
                "INSERT INTO t SELECT g, 'row ' || g, g / 7.0, now() "
                f"FROM generate_series(1, {rows}) g"
            )
            conn.commit()

        def read(chunk: int) -> int:
            source = LogicalSource(
                PG_URL, tables=["t"], snapshot="initial", snapshot_chunk=chunk, end="now"
            )
            return sum(len(tx) for tx in source)

        yield read
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {NAME} WITH (FORCE)")
        admin.close()


@contextlib.contextmanager
def mysql(rows: int) -> Iterator[Callable[[int], int]]:
    import pymysql

    from rowcast.sources.mysql import BinlogSource

    admin = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {NAME}")
    try:
        with admin.cursor() as cur:
            cur.execute(
                f"CREATE TABLE {NAME}.t (id INT PRIMARY KEY, data TEXT, n DECIMAL(20, 6), "
                "ts TIMESTAMP(6) NULL)"
            )
            for first in range(0, rows, 10_000):
                values = ", ".join(
                    f"({i}, 'row {i}', {i / 7:.6f}, NOW())"
                    for i in range(first + 1, min(rows, first + 10_000) + 1)
                )
                cur.execute(f"INSERT INTO {NAME}.t VALUES {values}")

        def read(chunk: int) -> int:
            source = BinlogSource(
                MYSQL_URL, tables=[f"{NAME}.t"], snapshot="initial", snapshot_chunk=chunk, end="now"
            )
            return sum(len(tx) for tx in source)

        yield read
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {NAME}")
        admin.close()


@contextlib.contextmanager
def sqlite(rows: int) -> Iterator[Callable[[int], int]]:
    from rowcast.sources.sqlite import TriggerSource

    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "bench.db")
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data TEXT, n REAL, ts TEXT)")
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO t VALUES (?, ?, ?, datetime('now'))",
                ((i, f"row {i}", i / 7) for i in range(1, rows + 1)),
            )
            conn.execute("COMMIT")

        def read(chunk: int) -> int:
            source = TriggerSource(
                f"sqlite:///{path}", snapshot="initial", snapshot_chunk=chunk, end="now"
            )
            return sum(len(tx) for tx in source)

        yield read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunks", type=int, nargs="+", default=[1000, 10_000])
    args = parser.parse_args()
    print(f"{args.rows:,} rows, median of {args.rounds} rounds\n")
    print("| source | snapshot_chunk | median seconds | rows/s |")
    print("|---|---:|---:|---:|")
    for label, setup in (("postgresql", postgres), ("mysql", mysql), ("sqlite", sqlite)):
        try:
            made = setup(args.rows)
            read = made.__enter__()
        except Exception as error:  # a server that is down: left out
            print(f"| {label} | - | - | left out: {str(error).splitlines()[0]} |")
            continue
        try:
            for chunk in args.chunks:
                times = []
                for _ in range(args.rounds):
                    began = time.perf_counter()
                    count = read(chunk)
                    times.append(time.perf_counter() - began)
                    assert count == args.rows, f"{label} read {count} rows of {args.rows}"
                median = statistics.median(times)
                print(f"| {label} | {chunk:,} | {median:.2f} | {args.rows / median:,.0f} |")
        finally:
            made.__exit__(None, None, None)


if __name__ == "__main__":
    main()

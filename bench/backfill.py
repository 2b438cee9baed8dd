"""How fast a backfill reads a table while the log keeps streaming, and what it costs the stream.

For each database (a private PostgreSQL database, a private MariaDB database, a new
SQLite file in WAL mode), a table ``t`` of `--rows` rows (an integer key, a text, a
number, a timestamp) is made, then:

* **plain select**: ``SELECT * FROM t`` fetched whole through the same driver
  (``fetchmany``), `--rounds` times: the reference (median rows/s);
* a source reads the log (``t`` and ``lat``) with a checkpoint, saved as a relay
  saves it (every ``--checkpoint-interval`` s, the relay's default: 1; 0: after every
  transaction, an fsync each), while a writer (a process of its own, as the app's)
  commits one row into ``lat`` every ``1/--rate`` s. The stream's latency (a ``lat``
  change's arrival minus its ``commit()``'s return) is measured for `--idle` seconds, then
  ``source.backfill(["t"])`` is asked for and the time until every row of ``t`` came
  out (``snapshot=True``) gives the backfill's rows/s, with the stream's latency
  measured meanwhile.

Printed: rows/s of both, their ratio beside the target (0.5: the issue's), and the
stream's p50/p99 latency idle and during the backfill. A database whose server is
down is left out. Timing never fails the script; a row count that is wrong does.
Everything made (databases, slots, publications, files) is dropped.

    python bench/backfill.py --rows 1000000 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import operator
import os
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

NAME = f"rc_bench_bf_{os.getpid()}"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_URL = f"postgresql://postgres@127.0.0.1:5432/{NAME}"
MYSQL_URL = f"mysql://root@127.0.0.1:3306/{NAME}"
TARGET = 0.5  #: backfill rows/s over plain-select rows/s, at least
SNAPSHOT = operator.attrgetter("snapshot")


class Database(NamedTuple):
    url: str  #: the source's
    connect: Callable[[], Any]  #: a DB-API connection in autocommit mode
    mark: str  #: the driver's parameter mark


@contextlib.contextmanager
def postgres(rows: int) -> Iterator[Database]:
    import psycopg2
    import psycopg2.errors

    admin = psycopg2.connect(PG_ADMIN)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {NAME}")

    def connect() -> Any:
        conn = psycopg2.connect(PG_URL)
        conn.autocommit = True
        return conn

    try:
        with contextlib.closing(connect()) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE t (id INT PRIMARY KEY, data TEXT, n NUMERIC, ts TIMESTAMPTZ)")
            cur.execute(
                "INSERT INTO t SELECT g, 'row ' || g, g / 7.0, now() "
                f"FROM generate_series(1, {rows}) g"
            )
            cur.execute("CREATE TABLE lat (id SERIAL PRIMARY KEY, sent DOUBLE PRECISION)")
        yield Database(PG_URL, connect, "%s")
    finally:
        with admin.cursor() as cur:
            for _ in range(50):  # a walsender may outlive its client a moment
                cur.execute(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                    "WHERE database = %s AND active_pid IS NOT NULL",
                    (NAME,),
                )
                try:
                    cur.execute(
                        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                        "WHERE database = %s",
                        (NAME,),
                    )
                    break
                except psycopg2.errors.ObjectInUse:
                    time.sleep(0.1)
            cur.execute(f"DROP DATABASE IF EXISTS {NAME} WITH (FORCE)")
        admin.close()


@contextlib.contextmanager
def mysql(rows: int) -> Iterator[Database]:
    import pymysql

    admin = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {NAME}")

    def connect() -> Any:
        return pymysql.connect(host="127.0.0.1", user="root", database=NAME, autocommit=True)

    try:
        with contextlib.closing(connect()) as conn, conn.cursor() as cur:
            cur.execute(
                "CREATE TABLE t (id INT PRIMARY KEY, data TEXT, n DECIMAL(20, 6), "
                "ts TIMESTAMP(6) NULL)"
            )
            for first in range(0, rows, 10_000):
                values = ", ".join(
                    f"({i}, 'row {i}', {i / 7:.6f}, NOW())"
                    for i in range(first + 1, min(rows, first + 10_000) + 1)
                )
                cur.execute(f"INSERT INTO t VALUES {values}")
            cur.execute("CREATE TABLE lat (id INT AUTO_INCREMENT PRIMARY KEY, sent DOUBLE)")
        yield Database(MYSQL_URL, connect, "%s")
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {NAME}")
        admin.close()


@contextlib.contextmanager
def sqlite(rows: int) -> Iterator[Database]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.db")

        def connect() -> Any:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 30000")
            return conn

        with contextlib.closing(connect()) as conn:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data TEXT, n REAL, ts TEXT)")
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO t VALUES (?, ?, ?, datetime('now'))",
                ((i, f"row {i}", i / 7) for i in range(1, rows + 1)),
            )
            conn.execute("COMMIT")
            conn.execute("CREATE TABLE lat (id INTEGER PRIMARY KEY, sent REAL)")
        yield Database(f"sqlite:///{path}", connect, "?")


def plain_select(db: Database, rows: int) -> float:
    """Rows per second of ``SELECT * FROM t`` fetched whole."""
    with contextlib.closing(db.connect()) as conn:
        cur = conn.cursor()
        began = time.perf_counter()
        cur.execute("SELECT * FROM t")
        count = 0
        while batch := cur.fetchmany(10_000):
            count += len(batch)
        took = time.perf_counter() - began
    assert count == rows, f"plain select read {count} rows of {rows}"
    return rows / took


class Writer:
    """A process of its own (the app's, as in production) that commits one row into
    ``lat`` every 1/`rate` s from `start` to `stop`; `commits` then maps each id to its
    commit's time (``time.perf_counter``: the system's monotonic clock, the same in
    both processes).

    Not a thread of the bench's process: there it would take the GIL from the source
    100 times a second, and SQLite's driver hands the GIL over at every row it steps
    (a cost the plain select, run with no writer, does not pay)."""

    def __init__(self, db: Database, rate: float) -> None:
        context = multiprocessing.get_context("fork")  # `db.connect` is a closure
        self._go, self._done = context.Event(), context.Event()
        self._commits, sent = context.Pipe(duplex=False)
        self._process = context.Process(target=self._run, args=(db, rate, sent), daemon=True)
        self._process.start()  # before the reader's thread: a fork copies this one only
        self.commits: dict[int, float] = {}

    def start(self) -> None:
        self._go.set()

    def stop(self) -> None:
        self._done.set()
        self.commits = self._commits.recv() if self._commits.poll(30) else {}
        self._process.join(10)

    def _run(self, db: Database, rate: float, sent: Any) -> None:
        commits: dict[int, float] = {}
        try:
            self._go.wait()
            with contextlib.closing(db.connect()) as conn:
                cur = conn.cursor()
                n = 0
                while not self._done.wait(1 / rate):
                    n += 1
                    cur.execute(f"INSERT INTO lat (id, sent) VALUES ({db.mark}, 0)", (n,))
                    commits[n] = time.perf_counter()
        finally:
            sent.send(commits)


def stream_and_backfill(db: Database, rows: int, args: argparse.Namespace) -> dict[str, float]:
    from rowcast.checkpoint import open_checkpoint
    from rowcast.sources.base import open_source

    with tempfile.TemporaryDirectory() as tmp:
        writer = Writer(db, args.rate)
        checkpoint = open_checkpoint(os.path.join(tmp, "pos"))
        source: Any = open_source(db.url, tables=["t", "lat"], checkpoint=checkpoint)
        arrivals: dict[int, float] = {}
        backfilled = 0
        finished = threading.Event()
        failed: list[BaseException] = []

        def read() -> None:
            nonlocal backfilled
            saved = 0.0
            try:
                for transaction in source:
                    now = time.perf_counter()
                    # counted as the plain select counts its rows, not one by one in
                    # Python: a chunk's changes come in a transaction of their own
                    snapshots = sum(map(SNAPSHOT, transaction))
                    backfilled += snapshots
                    if snapshots < len(transaction):
                        for change in transaction:
                            if change.table == "lat" and change.action == "write":
                                arrivals[int(change.pk)] = now
                    if now - saved >= args.checkpoint_interval:
                        checkpoint.save(transaction[-1].position or "")
                        saved = now
                    if backfilled >= rows:
                        finished.set()
            except BaseException as error:
                failed.append(error)
                finished.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        time.sleep(1.0)  # the source reads the log
        writer.start()
        time.sleep(args.idle)
        began = time.perf_counter()
        asked: Any = open_source(db.url)
        asked.backfill(["t"], chunk=args.chunk)
        finished.wait(args.timeout)
        took = time.perf_counter() - began
        writer.stop()
        idle = {k: t for k, t in writer.commits.items() if t < began}
        during = {k: t for k, t in writer.commits.items() if t >= began}
        time.sleep(0.5)
        source.stop()
        reader.join(30)
        source.close()
        if failed:
            raise failed[0]
        assert backfilled == rows, f"the backfill handed out {backfilled} rows of {rows}"

        def latencies(commits: dict[int, float]) -> list[float]:
            return sorted(1000 * (arrivals[k] - t) for k, t in commits.items() if k in arrivals)

        quiet, busy = latencies(idle), latencies(during)
        return {
            "rows/s": rows / took,
            "idle p50": _pct(quiet, 50),
            "idle p99": _pct(quiet, 99),
            "busy p50": _pct(busy, 50),
            "busy p99": _pct(busy, 99),
        }


def _pct(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * pct / 100))]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="plain selects (median)")
    parser.add_argument("--chunk", type=int, default=10_000, help="rows per backfill chunk")
    parser.add_argument("--rate", type=float, default=100.0, help="stream commits per second")
    parser.add_argument(
        "--checkpoint-interval",
        type=float,
        default=1.0,
        help="seconds between checkpoint saves, as a relay's (0: after every transaction)",
    )
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of stream alone")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument(
        "--databases", nargs="+", default=["postgresql", "mysql", "sqlite"], metavar="DB"
    )
    args = parser.parse_args()
    makers = {"postgresql": postgres, "mysql": mysql, "sqlite": sqlite}
    print(
        f"backfill of {args.rows:,} rows, chunk {args.chunk:,}, while {args.rate:g} "
        "commits/s stream; plain select: median of "
        f"{args.rounds}; target ratio >= {TARGET}"
    )
    header = (
        f"{'database':<11} {'select rows/s':>14} {'backfill rows/s':>16} {'ratio':>6} "
        f"{'target':>7} {'p50 idle':>9} {'p99 idle':>9} {'p50 busy':>9} {'p99 busy':>9}"
    )
    print(header)
    print("-" * len(header))
    for name in args.databases:
        try:
            with makers[name](args.rows) as db:
                select = statistics.median(plain_select(db, args.rows) for _ in range(args.rounds))
                got = stream_and_backfill(db, args.rows, args)
        except (OSError, ImportError) as error:
            print(f"{name:<11} left out: {str(error).splitlines()[0]}")
            continue
        except Exception as error:  # a server that is down, a source that cannot backfill
            if "connect" not in str(error).lower() and "cannot backfill" not in str(error):
                raise
            print(f"{name:<11} left out: {str(error).splitlines()[0]}")
            continue
        ratio = got["rows/s"] / select
        print(
            f"{name:<11} {select:>14,.0f} {got['rows/s']:>16,.0f} {ratio:>6.2f} "
            f"{'met' if ratio >= TARGET else 'NOT met':>7} {got['idle p50']:>7.1f}ms "
            f"{got['idle p99']:>7.1f}ms {got['busy p50']:>7.1f}ms {got['busy p99']:>7.1f}ms"
        )


if __name__ == "__main__":
    main()

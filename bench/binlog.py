"""Read a MariaDB row binlog with rowcast's `BinlogSource` vs bare python-mysql-replication.

Throughput: `--rows` rows are inserted into ``rc_bench_rows`` in transactions of `--batch`, then
that exact binlog stretch is read `--rounds` times by each variant, interleaved: "bare" iterates
``BinLogStreamReader`` events and counts ``len(event.rows)``; "rowcast" runs
``BinlogSource(start=..., end=...)`` into a Hub with one counting subscriber. Reported are medians.
Latency: ``BinlogSource.run(hub)`` streams in a thread while single-row INSERTs commit at a steady
`--rate` for `--seconds`; latency is subscriber arrival minus the return of ``commit()``.
Timing never fails the script; a read that missed a row, or a commit that never arrived, does.
"""

import argparse
import contextlib
import os
import platform
import statistics
import threading
import time
from datetime import datetime, timedelta
from decimal import Decimal
from importlib.metadata import version
from typing import Any
from urllib.parse import unquote, urlsplit

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import GtidEvent, MariadbGtidEvent, QueryEvent, XidEvent
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from rowcast import Change, Hub
from rowcast.sources.mysql import BinlogSource

RATIO_TARGET = 0.8  # rowcast should read at least 80 % as fast as the bare loop
P99_TARGET_MS = 50.0
VARIANTS = ("bare", "rowcast")
COLUMNS = "name VARCHAR(64), qty INT, price DECIMAL(10,2), created_at DATETIME"
EVENTS = [GtidEvent, MariadbGtidEvent, QueryEvent, XidEvent, WriteRowsEvent, UpdateRowsEvent]
EVENTS.append(DeleteRowsEvent)  # the same event types BinlogSource asks for (less heartbeats)
SERVER_ID = 3_000_000_000 + os.getpid() % 1_000_000 * 10  # unique per run: never kick a peer off


Pos = tuple[str, int]  # binlog file name, offset


def settings(url: str) -> dict[str, Any]:
    u = urlsplit(url)
    user, password = unquote(u.username or "root"), unquote(u.password or "")
    return {"host": u.hostname, "port": u.port or 3306, "user": user, "passwd": password}


def connect(url: str) -> Any:
    s = settings(url)
    db = urlsplit(url).path.lstrip("/") or "test"
    return pymysql.connect(
        host=s["host"], port=s["port"], user=s["user"], password=s["passwd"], database=db
    )


def master_status(conn: Any) -> Pos:
    with conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        name, pos = cur.fetchone()[:2]
    return str(name), int(pos)


def order(file_pos: Pos) -> tuple[int, int]:
    return int(file_pos[0].rsplit(".", 1)[-1] or 0), file_pos[1]


def write_rows(conn: Any, rows: int, batch: int) -> tuple[Pos, Pos]:
    """Fill rc_bench_rows; the binlog stretch (before, after) holding exactly those inserts."""
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS rc_bench_rows")
        cur.execute(f"CREATE TABLE rc_bench_rows (id INT AUTO_INCREMENT PRIMARY KEY, {COLUMNS})")
        before = master_status(conn)
        sql = "INSERT INTO rc_bench_rows (name, qty, price, created_at) VALUES (%s, %s, %s, %s)"
        t0 = datetime(2024, 1, 1)
        for first in range(0, rows, batch):
            values = [
                (f"item-{i % 9973:05d}", i % 17 + 1, Decimal(i % 10000) / 4, t0 + timedelta(i))
                for i in range(first, min(first + batch, rows))
            ]
            cur.executemany(sql, values)
            conn.commit()
    return before, master_status(conn)


def read_bare(url: str, start: Pos, end: Pos, server_id: int) -> int:
    stream = BinLogStreamReader(
        connection_settings=settings(url),
        server_id=server_id,
        log_file=start[0],
        log_pos=start[1],
        resume_stream=True,
        blocking=True,
        is_mariadb=False,  # 1.0.17's MariaDB mode ignores log_file/log_pos: reads from binlog #1
        only_events=EVENTS,
    )
    count = 0
    try:
        for event in stream:
            if isinstance(event, WriteRowsEvent) and event.table == "rc_bench_rows":
                if order((stream.log_file, stream.log_pos)) <= order(start):
                    raise AssertionError(f"bare read rows from before {start}: wrong start")
                count += len(event.rows)
            if order((stream.log_file, stream.log_pos)) >= order(end):
                break
    finally:
        stream.close()
    return count


def read_rowcast(url: str, start: Pos, end: Pos, server_id: int) -> int:
    count, first = 0, ""

    def counted(change: Change) -> None:  # the hub would swallow an exception raised here
        nonlocal count, first
        first = first or change.position or "?:0"
        count += 1

    hub = Hub()
    hub.connect(counted)
    at = "{}:{}".format
    tables = ["test.rc_bench_rows"]
    BinlogSource(url, server_id=server_id, start=at(*start), end=at(*end), tables=tables).run(hub)
    name, _, pos = first.rpartition(":")
    if first and order((name, int(pos))) <= order(start):
        raise AssertionError(f"rowcast read rows from before {start} (at {first}): wrong start")
    return count


def throughput(args: argparse.Namespace, conn: Any) -> dict[str, list[float]]:
    start, end = write_rows(conn, args.rows, args.batch)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    readers = {"bare": read_bare, "rowcast": read_rowcast}
    for r in range(args.rounds):
        for k, variant in enumerate(VARIANTS if r % 2 == 0 else VARIANTS[::-1]):
            t = time.perf_counter()
            count = readers[variant](args.url, start, end, SERVER_ID + k + 1)
            times[variant].append(time.perf_counter() - t)
            if count != args.rows:  # the reader did not really read the stretch
                raise AssertionError(f"{variant} read {count} rows of {args.rows} (round {r})")
    return times


def latency(args: argparse.Namespace, conn: Any) -> dict[str, float]:
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS rc_bench_lat")
        cur.execute(f"CREATE TABLE rc_bench_lat (id INT AUTO_INCREMENT PRIMARY KEY, {COLUMNS})")
    conn.commit()
    arrived: dict[int, int] = {}
    hub = Hub()
    hub.connect(lambda change: arrived.setdefault(change.pk, time.perf_counter_ns()))
    source = BinlogSource(args.url, server_id=SERVER_ID + 5, tables=["test.rc_bench_lat"])
    thread = threading.Thread(target=source.run, args=(hub,), daemon=True)
    thread.start()
    sql = "INSERT INTO rc_bench_lat (name, qty, price, created_at) VALUES (%s, %s, %s, %s)"

    def insert(n: int) -> int:
        with conn.cursor() as cur:
            cur.execute(sql, (f"lat-{n}", n, Decimal(n) / 4, datetime.now()))
            pk = int(cur.lastrowid)
        conn.commit()
        return pk

    deadline = time.monotonic() + 30
    while not arrived:  # "now" is resolved when the thread starts reading: warm up until seen
        if time.monotonic() > deadline or not thread.is_alive():
            raise AssertionError("BinlogSource never delivered the warm-up insert")
        insert(-1)
        time.sleep(0.2)
    committed: dict[int, int] = {}
    total = int(args.rate * args.seconds)
    t0 = time.perf_counter()
    for n in range(total):
        delay = t0 + n / args.rate - time.perf_counter()  # absolute slots: no drift
        if delay > 0:
            time.sleep(delay)
        pk = insert(n)
        committed[pk] = time.perf_counter_ns()
    sending = time.perf_counter() - t0
    deadline = time.monotonic() + 10
    while any(pk not in arrived for pk in committed) and time.monotonic() < deadline:
        time.sleep(0.05)
    source.stop()
    thread.join(timeout=10)
    received = sum(pk in arrived for pk in committed)
    if received != total:
        raise AssertionError(f"{received} of {total} committed transactions reached the hub")
    ms = sorted((arrived[pk] - t) / 1e6 for pk, t in committed.items())
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    stats = {"achieved": total / sending, "sent": total, "received": received, "p99": p99}
    return stats | {"p50": ms[len(ms) // 2], "max": ms[-1], "min": ms[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="mysql://root@127.0.0.1:3306/test")
    parser.add_argument("--rows", type=int, default=100_000, help="rows in the binlog stretch")
    parser.add_argument("--batch", type=int, default=100, help="rows per inserted transaction")
    parser.add_argument("--rounds", type=int, default=3, help="reads of each variant")
    parser.add_argument("--rate", type=float, default=500.0, help="latency: transactions/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="latency: seconds of load")
    args = parser.parse_args()

    conn = connect(args.url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT VERSION()")
            server = cur.fetchone()[0]
        times = throughput(args, conn)
        lat = latency(args, conn)
    finally:
        conn.close()
        with contextlib.suppress(pymysql.err.MySQLError), connect(args.url) as clean:
            clean.cursor().execute("DROP TABLE IF EXISTS rc_bench_rows, rc_bench_lat")

    print(
        f"Python {platform.python_version()}, python-mysql-replication "
        f"{version('mysql-replication')}, server {server}"
    )
    print(f"{args.rows} rows in transactions of {args.batch}, {args.rounds} rounds, interleaved")
    for variant in VARIANTS:
        print(f"  {variant:<8} per-round seconds: " + ", ".join(f"{t:.3f}" for t in times[variant]))
    print(f"  every read saw exactly {args.rows} rows\n")
    medians = {variant: statistics.median(t) for variant, t in times.items()}
    print("| variant | median seconds | rows/s | ratio vs bare |")
    print("|---|---:|---:|---:|")
    for variant in VARIANTS:
        m = medians[variant]
        print(f"| {variant} | {m:.3f} | {args.rows / m:,.0f} | {medians['bare'] / m:.3f} |")
    ratio = medians["bare"] / medians["rowcast"]
    verdict = "met" if ratio >= RATIO_TARGET else "NOT met"
    print(f"\nthroughput ratio rowcast/bare = {ratio:.3f}; target >= {RATIO_TARGET}: {verdict}\n")
    print("| rate target | achieved rate | sent | received | p50 ms | p99 ms | max ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {args.rate:,.0f}/s | {lat['achieved']:,.1f}/s | {lat['sent']:.0f} "
        f"| {lat['received']:.0f} | {lat['p50']:.2f} | {lat['p99']:.2f} | {lat['max']:.2f} |"
    )
    verdict = "met" if lat["p99"] <= P99_TARGET_MS else "NOT met"
    print(f"\nlatency p99 = {lat['p99']:.2f} ms; target <= {P99_TARGET_MS:.0f} ms: {verdict}")
    print(f"(min {lat['min']:.2f} ms: < 0 when a row arrived before its commit() returned)")


if __name__ == "__main__":
    main()

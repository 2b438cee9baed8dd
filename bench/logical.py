"""Read PostgreSQL logical replication with rowcast's `LogicalSource` vs a bare psycopg2 loop.

Throughput: `--rows` rows are inserted into ``rc_bench_pg_rows`` in transactions of `--batch`,
after one pgoutput slot per read was made (a logical slot cannot rewind, so each read has its
own slot holding that same WAL stretch). Each variant then reads its slot up to the end of the
stretch, `--rounds` times, interleaved: "bare" is psycopg2's ``consume_stream`` with a consumer
that counts Insert messages and confirms each commit; "rowcast" runs
``LogicalSource(start="start", end=...)`` into a Hub with one counting subscriber (decoding
every row to Python values and a `Change` on the way). Reported are medians.
Latency: ``LogicalSource.run(hub)`` streams in a thread while single-row INSERTs commit at a
steady `--rate` for `--seconds`; latency is subscriber arrival minus the return of ``commit()``.
Timing never fails the script; a read that missed a row, or a commit that never arrived, does.
Every slot and the publication are dropped at the end, also on failure.
"""

import argparse
import os
import platform
import statistics
import threading
import time
from datetime import datetime, timedelta
from decimal import Decimal
from importlib.metadata import version
from typing import Any

import psycopg2
import psycopg2.extras

from rowcast import Change, Hub
from rowcast.sources.postgres import LogicalSource
from rowcast.sources.postgres.pgoutput import parse_lsn

RATIO_TARGET = 1.5  # issue 23: rowcast should read at least 1.5x as fast as the bare loop
P99_TARGET_MS = 50.0
VARIANTS = ("bare", "rowcast")
COLUMNS = "name TEXT, qty INT, price NUMERIC(10, 2), created_at TIMESTAMP"
NAME = f"rc_bench_pg_{os.getpid()}"  # slots and publication: unique per run


def connect(url: str) -> Any:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    return conn


def current_lsn(cur: Any) -> int:
    cur.execute("SELECT pg_current_wal_lsn()")
    return parse_lsn(cur.fetchone()[0])


def write_rows(cur: Any, rows: int, batch: int, slots: list[str]) -> int:
    """Make the slots, then fill rc_bench_pg_rows; the WAL position after the last commit."""
    cur.execute("DROP TABLE IF EXISTS rc_bench_pg_rows")
    cur.execute(f"CREATE TABLE rc_bench_pg_rows (id SERIAL PRIMARY KEY, {COLUMNS})")
    cur.execute("ALTER TABLE rc_bench_pg_rows REPLICA IDENTITY FULL")
    cur.execute(f"CREATE PUBLICATION {NAME} FOR TABLE rc_bench_pg_rows")
    for slot in slots:
        cur.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    sql = "INSERT INTO rc_bench_pg_rows (name, qty, price, created_at) VALUES %s"
    t0 = datetime(2024, 1, 1)
    for first in range(0, rows, batch):
        values = [
            (f"item-{i % 9973:05d}", i % 17 + 1, Decimal(i % 10000) / 4, t0 + timedelta(i))
            for i in range(first, min(first + batch, rows))
        ]
        cur.execute("BEGIN")
        psycopg2.extras.execute_values(cur, sql, values, page_size=batch)
        cur.execute("COMMIT")
    return current_lsn(cur)


def read_bare(url: str, slot: str, end: int) -> int:
    conn = psycopg2.connect(url, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    cur = conn.cursor()
    cur.start_replication(
        slot_name=slot,
        decode=False,
        options={"proto_version": "1", "publication_names": NAME},
    )
    count = 0

    def consume(msg: Any) -> None:
        nonlocal count
        kind = msg.payload[0]
        if kind == 73:  # 'I'
            count += 1
        elif kind == 67:  # 'C': confirm the transaction, stop past the stretch
            msg.cursor.send_feedback(flush_lsn=msg.data_start)
            if msg.data_start >= end:
                raise psycopg2.extras.StopReplication

    try:
        cur.consume_stream(consume)
    except psycopg2.extras.StopReplication:
        pass
    finally:
        conn.close()
    return count


def read_rowcast(url: str, slot: str, end: int) -> int:
    count = 0

    def counted(change: Change) -> None:
        nonlocal count
        count += 1

    hub = Hub()
    hub.connect(counted)
    at = f"{end >> 32:X}/{end & 0xFFFFFFFF:X}"
    source = LogicalSource(url, slot=slot, publication=NAME, start="start", end=at)
    source.run(hub)
    return count


def throughput(args: argparse.Namespace, cur: Any, slots: list[str]) -> dict[str, list[float]]:
    end = write_rows(cur, args.rows, args.batch, slots)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    readers = {"bare": read_bare, "rowcast": read_rowcast}
    free = iter(slots)
    for r in range(args.rounds):
        for variant in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
            t = time.perf_counter()
            count = readers[variant](args.url, next(free), end)
            times[variant].append(time.perf_counter() - t)
            if count != args.rows:  # the reader did not really read the stretch
                raise AssertionError(f"{variant} read {count} rows of {args.rows} (round {r})")
    return times


def latency(args: argparse.Namespace, cur: Any, slot: str) -> dict[str, float]:
    cur.execute("DROP TABLE IF EXISTS rc_bench_pg_lat")
    cur.execute(f"CREATE TABLE rc_bench_pg_lat (id SERIAL PRIMARY KEY, {COLUMNS})")
    cur.execute("ALTER TABLE rc_bench_pg_lat REPLICA IDENTITY FULL")
    cur.execute(f"ALTER PUBLICATION {NAME} ADD TABLE rc_bench_pg_lat")
    arrived: dict[int, int] = {}
    hub = Hub()
    hub.connect(lambda change: arrived.setdefault(change.pk, time.perf_counter_ns()))
    source = LogicalSource(args.url, slot=slot, publication=NAME, tables=["rc_bench_pg_lat"])
    thread = threading.Thread(target=source.run, args=(hub,), daemon=True)
    thread.start()
    sql = "INSERT INTO rc_bench_pg_lat (name, qty, price, created_at) VALUES (%s, %s, %s, %s)"

    def insert(n: int) -> int:
        cur.execute(sql + " RETURNING id", (f"lat-{n}", n, Decimal(n) / 4, datetime.now()))
        return int(cur.fetchone()[0])  # autocommit: committed when execute returns

    deadline = time.monotonic() + 30
    while not arrived:  # "now" is resolved when the thread starts reading: warm up until seen
        if time.monotonic() > deadline or not thread.is_alive():
            raise AssertionError("LogicalSource never delivered the warm-up insert")
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


def drop_everything(url: str, slots: list[str]) -> None:
    with connect(url) as conn:
        cur = conn.cursor()
        for slot in slots:
            for _ in range(100):
                cur.execute(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                    "WHERE slot_name = %s AND active_pid IS NOT NULL",
                    (slot,),
                )
                try:
                    cur.execute(
                        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                        "WHERE slot_name = %s",
                        (slot,),
                    )
                    break
                except psycopg2.errors.ObjectInUse:
                    time.sleep(0.1)
        cur.execute(f"DROP PUBLICATION IF EXISTS {NAME}")
        cur.execute("DROP TABLE IF EXISTS rc_bench_pg_rows, rc_bench_pg_lat")
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--rows", type=int, default=100_000, help="rows in the WAL stretch")
    parser.add_argument("--batch", type=int, default=100, help="rows per inserted transaction")
    parser.add_argument("--rounds", type=int, default=3, help="reads of each variant")
    parser.add_argument("--rate", type=float, default=500.0, help="latency: transactions/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="latency: seconds of load")
    args = parser.parse_args()

    slots = [f"{NAME}_{i}" for i in range(2 * args.rounds + 1)]
    conn = connect(args.url)
    try:
        cur = conn.cursor()
        cur.execute("SHOW server_version")
        server = cur.fetchone()[0]
        times = throughput(args, cur, slots[:-1])
        lat = latency(args, cur, slots[-1])
    finally:
        conn.close()
        drop_everything(args.url, slots)

    print(
        f"Python {platform.python_version()}, psycopg2 {version('psycopg2-binary')}, "
        f"psycopg {version('psycopg')}, PostgreSQL {server}"
    )
    print(f"{args.rows} rows in transactions of {args.batch}, {args.rounds} rounds, interleaved")
    for variant in VARIANTS:
        print(f"  {variant:<8} per-round seconds: " + ", ".join(f"{t:.3f}" for t in times[variant]))
    print(f"  every read saw exactly {args.rows} rows\n")
    medians = {variant: statistics.median(t) for variant, t in times.items()}
    print("| variant | median seconds | rows/s | ratio vs bare | target |")
    print("|---|---:|---:|---:|---:|")
    for variant in VARIANTS:
        m = medians[variant]
        target = f">= {RATIO_TARGET}" if variant == "rowcast" else ""
        print(
            f"| {variant} | {m:.3f} | {args.rows / m:,.0f} | {medians['bare'] / m:.3f} | {target} |"
        )
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

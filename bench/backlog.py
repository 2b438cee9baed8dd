"""A relay catching up a backlog: its memory (RSS) while it reads `--changes` row changes.

A backlog of `--changes` inserts (default 1,000,000, in transactions of `--tx-size` rows,
written by MariaDB itself with ``INSERT ... SELECT`` from its ``seq_1_to_N`` table) is
committed to a table of this run's own; then a relay reads that binlog stretch from its
start to its end into one sink (`--sink`: ``stdout`` to /dev/null, the default, or a URL
such as ``redis://127.0.0.1:6379/15?stream=...``), in a child process whose resident
memory is sampled every 0.2 s (``/proc/self/statm``) and whose peak is the kernel's
(``ru_maxrss``). Target: the peak under 250 MB. Every change must arrive (checked);
the figures never fail the script. Takes a few minutes at a million changes.

    python bench/backlog.py [--changes 1000000] [--tx-size 100] [--sink stdout]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import pymysql

TARGET_MB = 250
NAME = f"backlog_bench_{os.getpid()}"
SERVER_ID = 3_400_000_000 + os.getpid() % 1_000_000 * 10


def position(cur: Any) -> str:
    cur.execute("SHOW MASTER STATUS")
    name, pos = cur.fetchone()[:2]
    return f"{name}:{pos}"


def backlog(conn: Any, changes: int, tx_size: int) -> tuple[str, str]:
    with conn.cursor() as cur:
        cur.execute(
            f"CREATE TABLE {NAME} (id INT PRIMARY KEY, name VARCHAR(64), qty INT, "
            "price DECIMAL(10,2), created_at DATETIME)"
        )
        start = position(cur)
        for first in range(1, changes + 1, tx_size):
            last = min(first + tx_size - 1, changes)
            cur.execute(
                f"INSERT INTO {NAME} SELECT seq, CONCAT('item-', seq), seq % 17, "
                "(seq % 10000) / 4, '2024-01-01' + INTERVAL seq SECOND "
                f"FROM seq_{first}_to_{last}"
            )
            conn.commit()
        return start, position(cur)


def child(spec: dict[str, Any]) -> None:
    """The relay, in this process: print its figures as one JSON line."""
    from rowcast.checkpoint import open_checkpoint
    from rowcast.relay import Relay
    from rowcast.sinks.base import open_sink
    from rowcast.sinks.stdout import StdoutSink
    from rowcast.sources.mysql import BinlogSource

    page = os.sysconf("SC_PAGE_SIZE")
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            with open("/proc/self/statm") as f:
                samples.append(int(f.read().split()[1]) * page)

    sink = (
        StdoutSink(stream=open(os.devnull, "w"))  # noqa: SIM115 - closed with the sink
        if spec["sink"] == "stdout"
        else open_sink(spec["sink"])
    )
    source = BinlogSource(
        spec["url"],
        tables=[f"test.{spec['table']}"],
        start=spec["start"],
        end=spec["end"],
        server_id=spec["server_id"],
    )
    with open_checkpoint(spec["checkpoint"]) as checkpoint:
        relay = Relay(source, [sink], checkpoint, batch_size=spec["batch_size"])
        threading.Thread(target=sample, daemon=True).start()
        began = time.perf_counter()
        relay.run()
        seconds = time.perf_counter() - began
    done.set()
    sink.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {
                "changes": relay.stats.changes,
                "seconds": seconds,
                "peak": peak,
                "sampled_max": max(samples, default=0),
                "sampled_median": sorted(samples)[len(samples) // 2] if samples else 0,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="mysql://root@127.0.0.1:3306/test")
    parser.add_argument("--changes", type=int, default=1_000_000)
    parser.add_argument("--tx-size", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--sink", default="stdout", help="stdout, or a sink URL")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    parts = urlsplit(args.url)
    conn = pymysql.connect(
        host=parts.hostname, port=parts.port or 3306, user="root", database="test"
    )
    with tempfile.TemporaryDirectory(prefix="rowcast-bench-backlog-") as tmp:
        try:
            began = time.perf_counter()
            start, end = backlog(conn, args.changes, args.tx_size)
            written = time.perf_counter() - began
            spec = {
                "url": args.url,
                "table": NAME,
                "start": start,
                "end": end,
                "server_id": SERVER_ID,
                "sink": args.sink,
                "batch_size": args.batch_size,
                "checkpoint": f"{tmp}/pos",
            }
            run = subprocess.run(
                [sys.executable, __file__, "--child", json.dumps(spec)],
                capture_output=True,
                text=True,
                check=False,
            )
        finally:
            with contextlib.suppress(pymysql.MySQLError), conn.cursor() as cur:
                cur.execute(f"DROP TABLE IF EXISTS {NAME}")
            conn.close()
    if run.returncode:
        raise SystemExit(f"the relay failed:\n{run.stderr[-3000:]}")
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    if figures["changes"] != args.changes:
        raise SystemExit(f"relayed {figures['changes']} changes, not {args.changes}")
    mb = 1024 * 1024
    print(
        f"backlog of {args.changes:,} changes in transactions of {args.tx_size} "
        f"(written in {written:.0f} s), relayed to {args.sink} in batches of {args.batch_size}"
    )
    print("\n| changes | seconds | changes/s | peak RSS | sampled max | sampled median | target |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    peak = figures["peak"] / mb
    verdict = "met" if peak < TARGET_MB else "missed"
    print(
        f"| {figures['changes']:,} | {figures['seconds']:.1f} | "
        f"{figures['changes'] / figures['seconds']:,.0f} | {peak:.0f} MB | "
        f"{figures['sampled_max'] / mb:.0f} MB | {figures['sampled_median'] / mb:.0f} MB | "
        f"{verdict} (< {TARGET_MB} MB) |"
    )


if __name__ == "__main__":
    main()

"""What SQLite capture triggers cost an app's writes, and how fast `TriggerSource` delivers.

Write overhead: the same two workloads run on fresh WAL files, without and with rowcast's
triggers, `--rounds` times interleaved (medians reported). "batched": `--rows` INSERTs in
transactions of `--batch`, then an UPDATE and a DELETE of every row by key (three changes per
row), with ``synchronous=NORMAL``: CPU-bound, the worst case for triggers. "single": `--single`
INSERTs each in its own transaction with ``synchronous=FULL`` (sqlite3's default): what a
web app's requests do. Target: triggers cost at most 2x.
Floor: the batched workload once more with triggers that insert a constant row into the same
``rowcast_changes`` (no values): what any AFTER trigger writing a log row costs
before rowcast builds a single value, so what is left above it is rowcast's own.
Delivery: ``TriggerSource(start="start", end="now")`` reads every captured change into a Hub
with one counting subscriber (rows/s, beside the app's own write rate without triggers).
Latency: the source runs in a thread while single-row INSERTs commit at `--rate` for
`--seconds`; latency is subscriber arrival minus the return of the commit.
Instructions: with ``--instructions`` (needs valgrind), the batched workload of
`--instruction-rows` rows runs once more per variant under ``valgrind --tool=callgrind``, in a
child process, minus the same child writing no rows: instructions executed by the CPU (user
space), the same figure run after run however busy the machine is, where seconds move by 10-20 %.
It also runs with a NOT NULL ``name`` column in the app's table: a constraint that may abort
makes SQLite journal each INSERT of a transaction that has triggers, whatever they do, so such
tables keep less of what rowcast's abort-free triggers save.
Timing never fails the script; a change missed or delivered twice does.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from rowcast import Change, Hub
from rowcast.sources.sqlite import TriggerSource

OVERHEAD_TARGET = 2.0
TABLE = (
    "CREATE TABLE bench_rows (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, price REAL, "
    "data BLOB, created_at TEXT)"
)


def fresh(
    directory: Path, name: str, triggers: bool, constant: bool = False, strict: bool = False
) -> Path:
    path = directory / f"{name}.db"
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(TABLE.replace("name TEXT", "name TEXT NOT NULL") if strict else TABLE)
    if triggers:
        TriggerSource(f"sqlite:///{path}").install()
    if constant:
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
            for op in ("insert", "update", "delete"):
                conn.execute(f"DROP TRIGGER rowcast_bench_rows_{op}")
                conn.execute(
                    f"CREATE TRIGGER rowcast_bench_rows_{op} AFTER {op.upper()} ON bench_rows "
                    "BEGIN INSERT INTO rowcast_changes (layout) VALUES (1); END"
                )
    return path


def batched(path: Path, rows: int, batch: int) -> float:
    """The batched writes on `path`; seconds taken."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = NORMAL")
    started = time.perf_counter()
    for first in range(0, rows, batch):
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO bench_rows (name, qty, price, data, created_at) VALUES (?, ?, ?, ?, ?)",
            [
                (f"item {i}", i, i * 1.25, b"\x00\x01payload", "2024-05-01T12:00:00")
                for i in range(first, min(first + batch, rows))
            ],
        )
        conn.execute("COMMIT")
    for first in range(1, rows + 1, batch):
        keys = [(i,) for i in range(first, min(first + batch, rows + 1))]
        conn.execute("BEGIN")
        conn.executemany("UPDATE bench_rows SET qty = qty + 1 WHERE id = ?", keys)
        conn.execute("COMMIT")
        conn.execute("BEGIN")
        conn.executemany("DELETE FROM bench_rows WHERE id = ?", keys)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def single(path: Path, count: int) -> float:
    """One-row commits on `path`, each on disk when it returns; seconds taken."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = FULL")
    started = time.perf_counter()
    for i in range(count):
        conn.execute(
            "INSERT INTO bench_rows (name, qty, price, data, created_at) VALUES (?, ?, ?, ?, ?)",
            (f"single {i}", i, 0.5, b"x", "2024-05-01T12:00:00"),
        )
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def deliver(path: Path, expected: int) -> float:
    """Read every captured change with the source; seconds taken."""
    count = 0

    def on_change(change: Change) -> None:
        nonlocal count
        count += 1

    hub = Hub()
    hub.connect(on_change)
    started = time.perf_counter()
    TriggerSource(f"sqlite:///{path}", start="start", end="now").run(hub)
    elapsed = time.perf_counter() - started
    if count != expected:
        raise SystemExit(f"the source delivered {count} changes, expected {expected}")
    return elapsed


def latency(path: Path, rate: float, seconds: float) -> tuple[int, list[float]]:
    """Commit single rows at `rate` while the source streams; arrival - commit, in ms."""
    committed: dict[int, float] = {}
    arrived: dict[int, float] = {}

    def on_change(change: Change) -> None:
        arrived[change.pk] = time.perf_counter()

    hub = Hub()
    hub.connect(on_change)
    source = TriggerSource(f"sqlite:///{path}")
    thread = threading.Thread(target=source.run, args=(hub,))
    thread.start()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = NORMAL")
    try:
        while source.position is None:
            time.sleep(0.01)
        start = time.perf_counter()
        sent = 0
        while time.perf_counter() - start < seconds:
            due = start + sent / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            cursor = conn.execute("INSERT INTO bench_rows (name) VALUES ('live')")
            committed[int(cursor.lastrowid or 0)] = time.perf_counter()
            sent += 1
        deadline = time.perf_counter() + 10
        while len(arrived) < sent and time.perf_counter() < deadline:
            time.sleep(0.01)
    finally:
        source.stop()
        thread.join(15)
        conn.close()
    if set(arrived) != set(committed):
        raise SystemExit(f"{len(committed) - len(arrived)} live changes never arrived")
    return sent, sorted((arrived[k] - committed[k]) * 1000 for k in committed)


# name: (triggers, constant-row triggers, a NOT NULL column in the app's table)
VARIANTS = {
    "bare": (False, False, False),
    "triggers": (True, False, False),
    "constant": (True, True, False),
    "strict-bare": (False, False, True),
    "strict": (True, False, True),
}


def instructions(variant: str, rows: int, batch: int) -> int:
    """User-space instructions for the batched workload of `rows` rows, by callgrind."""
    counts = []
    for n in (rows, 0):
        run = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--callgrind-out-file=/dev/null",
                sys.executable,
                __file__,
                "--child",
                variant,
                str(n),
                str(batch),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        found = re.search(r"refs:\s+([\d,]+)", run.stderr)
        if found is None:
            raise SystemExit(f"no instruction count from valgrind: {run.stderr[-500:]}")
        counts.append(int(found.group(1).replace(",", "")))
    return counts[0] - counts[1]


def child(variant: str, rows: int, batch: int) -> None:
    """What `instructions` measures: a fresh file of `variant`, then the batched writes."""
    triggers, constant, strict = VARIANTS[variant]
    with tempfile.TemporaryDirectory(prefix="rowcast-bench-") as tmp:
        batched(fresh(Path(tmp), variant, triggers, constant, strict), rows, batch)


def instruction_table(rows: int, batch: int) -> None:
    if shutil.which("valgrind") is None:
        print("\n(--instructions: valgrind is not installed; apt-get install valgrind)")
        return
    counts = {variant: instructions(variant, rows, batch) for variant in VARIANTS}
    changes = 3 * rows
    print(f"\n| batched, {rows} rows: instructions (callgrind) | per change | vs no triggers |")
    print("|---|---:|---:|")
    for variant, label, bare in (
        ("bare", "without triggers", "bare"),
        ("triggers", "with triggers", "bare"),
        ("constant", "constant-row triggers (floor)", "bare"),
        ("strict-bare", "app table with a NOT NULL column, without triggers", "strict-bare"),
        ("strict", "app table with a NOT NULL column, with triggers", "strict-bare"),
    ):
        count = counts[variant]
        print(f"| {label} | {count / changes:,.0f} | {count / counts[bare]:.2f}x |")


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--single", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--instructions", action="store_true", help="count with callgrind too")
    parser.add_argument("--instruction-rows", type=int, default=6_000)
    args = parser.parse_args()
    counts = {"batched": 3 * args.rows, "single": args.single}
    changes = sum(counts.values())
    print(
        f"python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{platform.machine()}, {os.cpu_count()} cpus"
    )
    print(
        f"batched: {args.rows} rows inserted, updated and deleted in transactions of "
        f"{args.batch}; single: {args.single} one-row commits; {args.rounds} rounds\n"
    )
    times: dict[tuple[str, bool], list[float]] = {
        (name, triggers): [] for name in counts for triggers in (False, True)
    }
    reads: list[float] = []
    floor: list[float] = []
    with tempfile.TemporaryDirectory(prefix="rowcast-bench-") as tmp:
        directory = Path(tmp)
        for _ in range(args.rounds):
            for triggers in (False, True):
                path = fresh(directory, "app", triggers)
                times[("batched", triggers)].append(batched(path, args.rows, args.batch))
                times[("single", triggers)].append(single(path, args.single))
            reads.append(deliver(path, changes))
            floor_path = fresh(directory, "floor", True, constant=True)
            floor.append(batched(floor_path, args.rows, args.batch))
        print("| workload | without triggers | with triggers | changes/s with | overhead |")
        print("|---|---:|---:|---:|---:|")
        overheads = {}
        for name, count in counts.items():
            bare_s = statistics.median(times[(name, False)])
            with_s = statistics.median(times[(name, True)])
            overheads[name] = with_s / bare_s
            print(
                f"| {name} | {bare_s:.3f} s | {with_s:.3f} s | {count / with_s:,.0f} | "
                f"{with_s / bare_s:.2f}x |"
            )
        floor_s = statistics.median(floor)
        bare_s = statistics.median(times[("batched", False)])
        print(
            f"| batched, constant-row triggers (floor) | {bare_s:.3f} s | {floor_s:.3f} s | "
            f"{counts['batched'] / floor_s:,.0f} | {floor_s / bare_s:.2f}x |"
        )
        print()
        for name, overhead in overheads.items():
            verdict = "met" if overhead <= OVERHEAD_TARGET else "MISSED"
            print(f"trigger write overhead, {name}: {overhead:.2f}x; target <= 2x: {verdict}")
        batch_bare = statistics.median(times[("batched", False)])
        read = statistics.median(reads)
        print("\n| delivery | median seconds | changes/s | vs batched app writes, no triggers |")
        print("|---|---:|---:|---:|")
        print(
            f"| TriggerSource catch-up | {read:.3f} | {changes / read:,.0f} | "
            f"{(changes / read) / (counts['batched'] / batch_bare):.2f}x |"
        )
        path = fresh(directory, "live", True)
        sent, ms = latency(path, args.rate, args.seconds)
    p50, p99 = ms[len(ms) // 2], ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print("\n| live commits | rate/s | p50 ms | p99 ms | max ms |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {sent} | {args.rate:.0f} | {p50:.1f} | {p99:.1f} | {ms[-1]:.1f} |")
    print("(the source polls PRAGMA data_version every 50 ms while idle: p50 ~ half of that)")
    if args.instructions:
        instruction_table(args.instruction_rows, args.batch)


if __name__ == "__main__":
    main()

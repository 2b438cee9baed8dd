"""Time ORM commits on a SQLite file with and without rowcast's `SessionCapture`.

    .venv/bin/python bench/capture.py [--commits 1000] [--rows 100] [--rounds 5]

Each commit is one session: ``add_all()`` of `--rows` new objects, then ``commit()``.
Variant "plain" is bare SQLAlchemy; "capture" attaches ``SessionCapture(factory, hub=hub)``
with one counting subscriber. Every (round, variant) runs in a fresh interpreter on a
fresh database file, so the plain runs never carry the mapper listeners that rowcast
installs process-wide; rounds alternate which variant goes first. Reported: the median
of the per-round totals. Timing never makes this script fail; a missing change does.
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from time import perf_counter
from typing import Any

import sqlalchemy
from sqlalchemy import String, Text, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from rowcast import Change, Hub
from rowcast.sources.sqlalchemy import SessionCapture

TARGET = 1.15  # capture may cost at most 15 % more than plain
WARMUP = 20  # untimed commits per run (statement caches, mapper configuration)
VARIANTS = ("plain", "capture")
EPOCH = datetime(2024, 1, 1)
SYNC = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    sku: Mapped[str] = mapped_column(String(32))
    quantity: Mapped[int]
    price: Mapped[float]
    created_at: Mapped[datetime]
    note: Mapped[str | None] = mapped_column(Text)


def child(variant: str, db: Path, commits: int, rows: int) -> dict[str, Any]:
    """One timed run of `variant` against a new database file `db`."""
    engine = create_engine(f"sqlite:///{db}")  # SQLAlchemy's default pysqlite setup
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    received = 0

    def count(change: Change) -> None:
        nonlocal received
        received += 1

    capture = None
    if variant == "capture":
        hub = Hub()
        hub.connect(count)
        capture = SessionCapture(factory, hub=hub)

    def commit(n: int) -> None:
        with factory() as session:
            session.add_all(
                Order(
                    sku=f"SKU-{(n * rows + i) % 9973:05d}",
                    quantity=i % 17 + 1,
                    price=(n + i) * 0.25,
                    created_at=EPOCH + timedelta(seconds=n * rows + i),
                    note=None if i % 3 else f"order {n}/{i}",
                )
                for i in range(rows)
            )
            session.commit()

    for n in range(WARMUP):
        commit(n)
    received = 0
    start = perf_counter()
    for n in range(WARMUP, WARMUP + commits):
        commit(n)
    seconds = perf_counter() - start
    if capture is not None:
        capture.close()
    with engine.connect() as connection:
        pragma = connection.exec_driver_sql
        pragmas = {p: pragma(f"PRAGMA {p}").scalar() for p in ("journal_mode", "synchronous")}
    engine.dispose()
    return {"seconds": seconds, "received": received, "pragmas": pragmas}


def run(variant: str, db: str, commits: int, rows: int) -> dict[str, Any]:
    """`child` in a fresh interpreter (its stderr passes through)."""
    cmd = [sys.executable, __file__, "--child", variant, "--db", db]
    cmd += ["--commits", str(commits), "--rows", str(rows)]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=1000, help="timed commits per run")
    parser.add_argument("--rows", type=int, default=100, help="new rows per commit")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each variant")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.db, args.commits, args.rows)))
        return

    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    received, pragmas = 0, dict[str, Any]()
    with tempfile.TemporaryDirectory(prefix="rowcast-bench-") as tmp:
        for r in range(args.rounds):
            for variant in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
                out = run(variant, f"{tmp}/{variant}-{r}.db", args.commits, args.rows)
                times[variant].append(out["seconds"])
                received += out["received"]
                pragmas = out["pragmas"]
    expected = args.rounds * args.commits * args.rows
    if received != expected:  # the capture did not run (or lost changes): never a timing issue
        raise AssertionError(f"capture published {received} changes, expected {expected}")

    sync = SYNC.get(pragmas["synchronous"], pragmas["synchronous"])
    print(f"{args.rounds} rounds x {args.commits} commits x {args.rows} rows, one new file each")
    print(
        f"Python {platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}, "
        f"SQLite {sqlite3.sqlite_version}, SQLAlchemy default pragmas "
        f"(journal_mode={pragmas['journal_mode']}, synchronous={sync})"
    )
    for variant in VARIANTS:
        print(f"  {variant:<8} per-round seconds: " + ", ".join(f"{t:.3f}" for t in times[variant]))
    print(f"  capture subscriber received {received} changes (expected {expected})\n")
    plain = statistics.median(times["plain"])
    print("| variant | median seconds | commits/s | rows/s | ratio vs plain |")
    print("|---|---:|---:|---:|---:|")
    for variant in VARIANTS:
        median = statistics.median(times[variant])
        print(
            f"| {variant} | {median:.3f} | {args.commits / median:,.0f} "
            f"| {args.commits * args.rows / median:,.0f} | {median / plain:.3f} |"
        )
    ratio = statistics.median(times["capture"]) / plain
    verdict = "met" if ratio <= TARGET else "NOT met"
    print(f"\nratio capture/plain = {ratio:.3f}; target <= {TARGET:.2f}: {verdict}")


if __name__ == "__main__":
    main()

"""Time ORM commits on a SQLite file with and without rowcast's `SessionCapture`.

A commit is one session: ``add_all()`` of `--rows` new objects, then ``commit()``; "capture"
adds ``SessionCapture(factory, hub=hub)`` and one counting subscriber. Each (round, variant) runs
in a fresh interpreter on a new file, so "plain" never carries the mapper listeners rowcast
installs process-wide; rounds alternate which goes first; reported are medians of round totals.
Timing never fails the script; a change the subscriber did not get does.
"""

import argparse
import json
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta
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
SYNC = ("OFF", "NORMAL", "FULL", "EXTRA")  # PRAGMA synchronous values


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


def child(variant: str, db: str, commits: int, rows: int) -> dict[str, Any]:
    """One timed run of `variant` against a new database file `db`."""
    engine = create_engine(f"sqlite:///{db}")  # SQLAlchemy's default pysqlite setup
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    received = 0

    def count(change: Change) -> None:
        nonlocal received
        received += 1

    if variant == "capture":
        hub = Hub()
        hub.connect(count)
        SessionCapture(factory, hub=hub)  # stays attached: the session events hold it

    def commit(n: int) -> None:
        with factory() as session:
            session.add_all(
                Order(
                    sku=f"SKU-{(n * rows + i) % 9973:05d}",
                    quantity=i % 17 + 1,
                    price=(n + i) * 0.25,
                    created_at=datetime(2024, 1, 1) + timedelta(seconds=n * rows + i),
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
    with engine.connect() as connection:
        sql = connection.exec_driver_sql
        mode, sync = (sql(f"PRAGMA {p}").scalar_one() for p in ("journal_mode", "synchronous"))
    pragmas = f"journal_mode={mode}, synchronous={SYNC[sync]}"
    return {"seconds": seconds, "received": received, "pragmas": pragmas}


def run(variant: str, db: str, commits: int, rows: int) -> dict[str, Any]:
    """`child` in a fresh interpreter (its stderr passes through)."""
    cmd = [sys.executable, __file__, "--child", variant, "--db", db]
    cmd += ["--commits", str(commits), "--rows", str(rows)]
    return dict(json.loads(subprocess.check_output(cmd, text=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=1000, help="timed commits per run")
    parser.add_argument("--rows", type=int, default=100, help="new rows per commit")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each variant")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.db, args.commits, args.rows)))
        return

    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    received, pragmas = 0, ""
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

    print(f"{args.rounds} rounds x {args.commits} commits x {args.rows} rows, one new file each")
    print(
        f"Python {platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}, "
        f"SQLite {sqlite3.sqlite_version}, SQLAlchemy default pragmas ({pragmas})"
    )
    for variant in VARIANTS:
        print(f"  {variant:<8} per-round seconds: " + ", ".join(f"{t:.3f}" for t in times[variant]))
    print(f"  capture's subscriber received {received} changes, as expected\n")
    medians = {variant: statistics.median(t) for variant, t in times.items()}
    print("| variant | median seconds | commits/s | rows/s | ratio vs plain |")
    print("|---|---:|---:|---:|---:|")
    for variant in VARIANTS:
        median = medians[variant]
        print(
            f"| {variant} | {median:.3f} | {args.commits / median:,.0f} "
            f"| {args.commits * args.rows / median:,.0f} | {median / medians['plain']:.3f} |"
        )
    ratio = medians["capture"] / medians["plain"]
    verdict = "met" if ratio <= TARGET else "NOT met"
    print(f"\nratio capture/plain = {ratio:.3f}; target <= {TARGET}: {verdict}")


if __name__ == "__main__":
    main()

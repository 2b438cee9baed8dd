"""CPU instructions of the store, codec, capture and cache workloads, old commit beside this tree.

Issue 23 had to leave every figure of ``bench/store.py``, ``bench/capture.py`` and
``bench/cache.py`` within 5 % of the code before it. Their wall times move by up to a
third between runs on this shared machine, so the check is made in user-space CPU
instructions, which do not move with the load: each workload below runs in a child
interpreter under ``valgrind --tool=callgrind``, once with the older commit's ``src``
first on the path (checked out in a temporary git worktree), once with this tree's,
and the same child doing nothing but its imports is subtracted (for a workload that
reads, the child that only writes what it reads).

==================  ==============================================================
``store-write``     20 appends of 1,000 events to a new SQLite event store
``store-read``      reading those 20,000 events back
``store-singles``   2,000 appends of one event each
``codec-dumps``     ``rowcast.codec.dumps`` of 10,000 rows (the cache's and stores' writes)
``codec-loads``     ``loads`` of them
``capture-plain``   200 SQLAlchemy commits of 100 rows on a SQLite file
``capture``         the same with ``SessionCapture`` and one subscriber
``cache-hit``       100,000 ``MemoryCache.get`` hits
``cache-put``       100,000 ``MemoryCache.put``
==================  ==============================================================

Printed: instructions old, new, and new / old beside the 5 % bound (a ratio above 1.05
is flagged). Needs valgrind.

    python bench/instructions.py 84e884a            # the commit before issue 23
    python bench/instructions.py 84e884a store-write codec-dumps
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import checked_out  # bench/compare.py, beside this script

HERE = Path(__file__).resolve().parent.parent
BOUND = 1.05  #: new / old, at most


def _store(work: str, tmp: str) -> None:
    from rowcast.store import EventStore, NewEvent

    with EventStore(f"sqlite:///{tmp}/events.db") as store:
        if work == "store-singles":
            for i in range(2_000):
                store.append("singles", [NewEvent("Counted", {"delta": 1, "seq": i})])
            assert store.stream_version("singles") == 2_000
            return
        for first in range(0, 20_000, 1_000):  # store-read too: what it reads
            batch = [
                NewEvent("Counted", {"delta": 1, "seq": i}) for i in range(first, first + 1_000)
            ]
            store.append("counter", batch)
        if work == "store-read":
            assert sum(1 for _ in store.read("counter")) == 20_000


def _rows() -> list[dict[str, Any]]:
    import datetime as dt
    from decimal import Decimal

    t0 = dt.datetime(2024, 1, 1)
    return [
        {"id": i, "sku": f"SKU-{i:05d}", "qty": i % 17, "price": Decimal(i) / 4,
         "at": t0 + dt.timedelta(seconds=i), "note": None if i % 3 else f"order {i}"}
        for i in range(10_000)
    ]  # fmt: skip


def _codec(work: str, tmp: str) -> None:
    from rowcast.codec import dumps, loads

    rows = _rows()
    texts = [dumps(row) for row in rows]  # codec-loads too: what it reads
    if work == "codec-loads":
        assert [loads(text) for text in texts] == rows


def _capture(work: str, tmp: str) -> None:
    sys.path.insert(0, str(HERE / "bench"))
    import capture  # bench/capture.py: its model and its commits

    got = capture.child("capture" if work == "capture" else "plain", f"{tmp}/app.db", 200, 100)
    if work == "capture":
        assert got["received"] == 200 * 100


def _cache(work: str, tmp: str) -> None:
    from rowcast.cache import MemoryCache

    class User:  # bench/cache.py's
        __cache_keys__: ClassVar[list[str]] = ["id", "email"]

        def __init__(self, id: int) -> None:
            self.id, self.email, self.name, self.score = id, f"u{id}@bench.test", f"user {id}", 1.5

    cache = MemoryCache(maxsize=100_000)
    users = [User(i) for i in range(1_000)]
    cache.batch_put(users)
    for i in range(100_000):
        if work == "cache-hit":
            cache.get(User, {"id": i % 1_000})
        else:
            cache.put(users[i % 1_000])


WORKLOADS: dict[str, Callable[[str, str], None]] = {
    "store-write": _store,
    "store-read": _store,
    "store-singles": _store,
    "codec-dumps": _codec,
    "codec-loads": _codec,
    "capture-plain": _capture,
    "capture": _capture,
    "cache-hit": _cache,
    "cache-put": _cache,
}
#: a workload that reads what another writes writes it first: that one is taken off
_SETUP = {"store-read": "store-write", "codec-loads": "codec-dumps"}
#: what a workload imports before it starts (the "nothing" run imports the same)
IMPORTS = "rowcast.store rowcast.codec rowcast.cache rowcast.sources.sqlalchemy sqlalchemy"


def child(work: str) -> None:
    """Run `work` here (the "idle" workload: the imports alone)."""
    for module in IMPORTS.split():
        __import__(module)
    if work == "idle":
        return
    with tempfile.TemporaryDirectory() as tmp:
        WORKLOADS[work](work, tmp)


def instructions(tree: Path, work: str) -> int:
    """User-space instructions of `work` in a child with `tree`'s src first on the path."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree / "src"), str(HERE)]))
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            work,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode or not found:
        raise SystemExit(f"{work} failed in {tree}:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("rev", nargs="?", help="the older commit (e.g. 84e884a)")
    parser.add_argument("works", nargs="*", metavar="workload", help="default: every one")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return 0
    if not args.rev:
        parser.error("give the older commit, e.g. 84e884a")
    unknown = sorted(set(args.works) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; one of {', '.join(WORKLOADS)}")
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (apt-get install valgrind)")
    works = args.works or list(WORKLOADS)
    with checked_out(args.rev) as old:
        trees = {"old": old, "new": HERE}
        idle = {name: instructions(tree, "idle") for name, tree in trees.items()}
        print(f"user-space instructions (callgrind), {args.rev} / this tree; bound {BOUND}")
        print(f"| workload | {args.rev} | this tree | new / old | within 5 % |")
        print("|---|---:|---:|---:|---|")
        for work in works:
            setup = _SETUP.get(work)  # counted apart, then taken off
            old_n, new_n = (
                instructions(trees[n], work) - (instructions(trees[n], setup) if setup else idle[n])
                for n in ("old", "new")
            )
            ratio = new_n / old_n
            print(
                f"| {work} | {old_n:,} | {new_n:,} | {ratio:.3f} | "
                f"{'yes' if ratio <= BOUND else 'NO'} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""rowcast's SQLite `EventStore` vs py-event-sourcing vs a bare ``sqlite3.executemany``.

py-event-sourcing's own benchmark shape, in one process, each backend on a fresh temp file:
`--events` events appended to one stream in batches of `--batch`, built from payload dicts inside
the timing (a NewEvent; a CandidateEvent of JSON bytes with an idempotency key, as py-es's
benchmark gives ids: its faster batch path, while its singles go faster without; a bare row of a
time-ordered 16-byte id, as rowcast's UUIDv7s, and ``json.dumps`` text), all read back `--rounds`
times (rowcast decodes the JSON, py-es yields bytes, bare yields tuples), a snapshot saved and
restored `--restores` times, `--singles` single-event appends. "bare" is the physical limit of
rowcast's design: its table, indexes and PRAGMAs, one ``BEGIN IMMEDIATE``, ``SELECT max(version)``,
``executemany`` per append. Watch latency is measured only if the store has ``watch()``. Timing
never fails the script; a read, write or watch that missed an event, or a wrong restored snapshot,
does.
"""

import argparse
import asyncio
import json
import multiprocessing as mp
import platform
import random
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from importlib.metadata import version
from time import perf_counter
from typing import Any

from py_event_sourcing import CandidateEvent, sqlite_stream_factory

from rowcast.store import EventStore, NewEvent

STREAM, SINGLES, TYPE = "benchmark_stream", "singles", "Increment"
SYNC = {"full": "fsync of the WAL at every commit", "normal": "no fsync per commit"}
TARGETS = {("write", "py-es"): 4.0, ("write", "bare"): 0.8, ("read", "py-es"): 3.0}
TARGETS[("singles", "py-es")] = 10.0
RESTORE_MS, WATCH_P99_MS = 1.0, {"in-process": 5.0, "cross-process": 100.0}
BARE_SCHEMA = """
CREATE TABLE events (position INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT NOT NULL,
    version INTEGER NOT NULL, id BLOB NOT NULL UNIQUE, type TEXT NOT NULL, data TEXT NOT NULL,
    metadata TEXT, recorded_at REAL NOT NULL, UNIQUE (stream, version));
CREATE TABLE snapshots (stream TEXT NOT NULL, name TEXT NOT NULL, version INTEGER NOT NULL,
    state BLOB NOT NULL, is_bytes INTEGER NOT NULL, recorded_at REAL NOT NULL,
    PRIMARY KEY (stream, name)) WITHOUT ROWID;
"""
INSERT = "INSERT INTO events (stream, version, id, type, data, metadata, recorded_at) "
INSERT += "VALUES (?, ?, ?, ?, ?, ?, ?)"
HEAD = "SELECT coalesce(max(version), 0) FROM events WHERE stream = ?"
READ = "SELECT version, position, id, type, data, metadata, recorded_at FROM events "
READ += "WHERE stream = ? AND version > 0 ORDER BY version"
LOAD = "SELECT version, state, is_bytes, recorded_at FROM snapshots WHERE stream = ? AND name = ?"
Result = dict[str, float]  # write, read, singles: events/s; restore: ms


def payload(i: int) -> dict[str, Any]:
    return {"delta": 1, "seq": i}  # a small dict, as py-es's counter benchmark


def check(what: str, got: object, want: object) -> None:
    if got != want:  # the measured thing did not really run
        raise AssertionError(f"{what}: got {got!r}, expected {want!r}")


def timed(work: Callable[[], object], want: object, what: str) -> float:
    """Seconds `work()` took; it returns an event count or a restored state, checked."""
    t = perf_counter()
    got = work()
    seconds = perf_counter() - t
    check(what, got, want)
    return seconds


def median(work: Callable[[], object], want: object, what: str, rounds: int) -> float:
    return statistics.median(timed(work, want, what) for _ in range(rounds))


def result(args: argparse.Namespace, *seconds: float) -> Result:
    """Events/s from the seconds of write, read and singles, and the restore in ms."""
    n: int = args.events
    w, r, s, restore = seconds
    return {"write": n / w, "read": n / r, "singles": args.singles / s, "restore": restore * 1000}


def run_rowcast(url: str, args: argparse.Namespace) -> Result:
    n, state = args.events, {"count": args.events}
    with EventStore(url) as store:

        def write() -> int:
            for first in range(0, n, args.batch):
                last = min(first + args.batch, n)
                store.append(STREAM, [NewEvent(TYPE, payload(i)) for i in range(first, last)])
            return store.stream_version(STREAM)

        def singles() -> int:
            for i in range(args.singles):
                store.append(SINGLES, [NewEvent(TYPE, payload(i))])
            return store.stream_version(SINGLES)

        w = timed(write, n, "rowcast write")
        r = median(lambda: sum(e.type == TYPE for e in store.read(STREAM)), n, "read", args.rounds)
        store.save_snapshot(STREAM, state, n)
        load = store.load_snapshot  # bound once, as an application would
        restore = median(lambda: getattr(load(STREAM), "state", None), state, "", args.restores)
        return result(args, w, r, timed(singles, args.singles, "rowcast singles"), restore)


async def run_pyes(path: str, args: argparse.Namespace) -> Result:
    n, times = args.events, {"read": list[float](), "restore": list[float]()}
    async with sqlite_stream_factory(path) as open_stream, open_stream(STREAM) as stream:
        t = perf_counter()
        for first in range(0, n, args.batch):
            last = min(first + args.batch, n)
            batch = [(json.dumps(payload(i)).encode(), f"event-{i}") for i in range(first, last)]
            await stream.write(
                [CandidateEvent(type=TYPE, data=d, idempotency_key=k) for d, k in batch]
            )
        write = perf_counter() - t
        check("py-es write", stream.version, n)
        for _ in range(args.rounds):
            t, count = perf_counter(), 0
            async for event in stream.read():
                count += event.type == TYPE
            times["read"].append(perf_counter() - t)
            check("py-es read", count, n)
        await stream.snapshot(json.dumps({"count": n}).encode())
        for _ in range(args.restores):
            t = perf_counter()
            snapshot = await stream.load_snapshot()
            state = json.loads(snapshot.state) if snapshot else None
            times["restore"].append(perf_counter() - t)
            check("py-es restore", state, {"count": n})
        async with open_stream(SINGLES) as single:
            t = perf_counter()
            for i in range(args.singles):
                one = CandidateEvent(type=TYPE, data=json.dumps(payload(i)).encode())
                await single.write([one])
            singles = perf_counter() - t
            check("py-es singles", single.version, args.singles)
    read, restore = (statistics.median(times[k]) for k in ("read", "restore"))
    return result(args, write, read, singles, restore)


def run_bare(path: str, sync: str, args: argparse.Namespace) -> Result:
    n, dumps, inserting = args.events, json.dumps, [0.0]

    def ordered_id() -> bytes:  # milliseconds, then random bits: rowcast's id layout
        return ((time.time_ns() // 1_000_000) << 80 | random.getrandbits(80)).to_bytes(16, "big")

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {sync.upper()}")
    conn.executescript(BARE_SCHEMA)

    def append(stream: str, first: int, last: int) -> int:
        conn.execute("BEGIN IMMEDIATE")
        (v,) = conn.execute(HEAD, (stream,)).fetchone()
        now = time.time()
        rows = [
            (stream, v + k + 1, ordered_id(), TYPE, dumps(payload(i)), None, now)
            for k, i in enumerate(range(first, last))
        ]
        t = perf_counter()
        conn.executemany(INSERT, rows)
        conn.execute("COMMIT")
        inserting[0] += perf_counter() - t
        return int(v) + len(rows)

    def write() -> int:
        return [append(STREAM, f, min(f + args.batch, n)) for f in range(0, n, args.batch)][-1]

    w = timed(write, n, "bare write")
    insert = n / inserting[0]
    rows = lambda: sum(row[3] == TYPE for row in conn.execute(READ, (STREAM,)))  # noqa: E731
    r = median(rows, n, "bare read", args.rounds)
    state = json.dumps({"count": n}).encode()
    conn.execute("INSERT INTO snapshots VALUES (?, 'default', ?, ?, 0, ?)", (STREAM, n, state, 0))
    load = lambda: json.loads(conn.execute(LOAD, (STREAM, "default")).fetchone()[1])  # noqa: E731
    restore = median(load, {"count": n}, "bare restore", args.restores)
    s = timed(
        lambda: [append(SINGLES, i, i + 1) for i in range(args.singles)][-1], args.singles, ""
    )
    conn.close()
    return result(args, w, r, s, restore) | {"insert": insert}


def append_singles(url_or_store: Any, stream: str, n: int, gap: float, out: Any = None) -> Any:
    """{version: clock when its append returned}: perf_counter in-process; wall time, sent
    through `out`, in a spawned process (given a URL)."""
    clock, sent = (time.time if out else perf_counter), {}
    store = EventStore(url_or_store) if out else url_or_store
    for i in range(n):
        sent[store.append(stream, [NewEvent(TYPE, payload(i))]).version] = clock()
        time.sleep(gap)
    if out:
        store.close()
    return out.put(sent) if out else sent


def watcher(store: Any, stream: str, n: int, arrived: dict[int, float], clock: Any) -> None:
    for event in store.watch(stream, after=0):  # a new stream: nothing to catch up
        arrived.setdefault(event.version, clock())
        if len(arrived) >= n:
            break


def watch_latency(url: str, n: int, gap: float) -> dict[str, tuple[float, float]]:
    """In-process (one store) and cross-process p50/p99 ms; {} when there is no watch()."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    latency: dict[str, tuple[float, float]] = {}
    with EventStore(url) as store:
        for kind in ("in-process", "cross-process") if hasattr(store, "watch") else ():
            arrived: dict[int, float] = {}
            clock = perf_counter if kind == "in-process" else time.time
            args = (store, kind, n, arrived, clock)
            threading.Thread(target=watcher, args=args, daemon=True).start()
            time.sleep(0.2)  # let it subscribe: measure live delivery
            if kind == "in-process":
                sent = append_singles(store, kind, n, gap)
            else:
                proc = ctx.Process(target=append_singles, args=(url, kind, n, gap, queue))
                proc.start()
                sent = queue.get(timeout=300)
                proc.join(timeout=30)
            deadline = time.monotonic() + 30
            while len(arrived) < n and time.monotonic() < deadline:
                time.sleep(0.01)
            check(f"{kind} watch", len(arrived), n)
            ms = sorted((arrived[v] - t) * 1000 for v, t in sent.items())
            latency[kind] = ms[len(ms) // 2], ms[min(n - 1, int(n * 0.99))]
    return latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the big stream")
    parser.add_argument("--batch", type=int, default=10_000, help="events per batched append")
    parser.add_argument("--singles", type=int, default=2_000, help="single-event appends")
    parser.add_argument("--rounds", type=int, default=3, help="full reads per backend (median)")
    parser.add_argument("--restores", type=int, default=25, help="snapshot loads (median)")
    parser.add_argument("--watch-events", type=int, default=500, help="events per watch run")
    parser.add_argument("--watch-gap", type=float, default=0.002, help="seconds between them")
    args = parser.parse_args()

    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="rowcast-bench-") as tmp:
        results["rowcast (full)"] = run_rowcast(f"sqlite:///{tmp}/full.db", args)
        url = f"sqlite:///{tmp}/normal.db?synchronous=normal"
        results["rowcast (normal)"] = run_rowcast(url, args)
        results["py-event-sourcing"] = asyncio.run(run_pyes(f"{tmp}/pyes.db", args))
        for sync in SYNC:
            results[f"bare sqlite3 ({sync})"] = run_bare(f"{tmp}/bare-{sync}.db", sync, args)
        watch = watch_latency(f"sqlite:///{tmp}/watch.db", args.watch_events, args.watch_gap)

    versions = ", ".join(f"{p} {version(p)}" for p in ("rowcast", "py-event-sourcing"))
    header = [
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {versions}; "
        f"{platform.machine()}, {mp.cpu_count()} CPUs, files in {tempfile.gettempdir()}",
        f"{args.events:,} events in batches of {args.batch:,}, read {args.rounds} times (median);"
        f" {args.singles:,} single appends; restore: median of {args.restores} loads, decoded",
        f"all WAL; (full) = synchronous=FULL: {SYNC['full']} (rowcast's default)",
        f"(normal) = synchronous=NORMAL: {SYNC['normal']}; py-es always runs NORMAL\n",
        "| backend | write ev/s | read ev/s | singles/s | restore ms | write x py-es "
        "| read x py-es | singles x py-es | write x bare | read x bare | singles x bare |",
        "|---|" + "---:|" * 10,
    ]
    print("\n".join(header))
    pyes = results["py-event-sourcing"]
    for name, r in results.items():
        bare = results[f"bare sqlite3 ({'full' if 'full' in name else 'normal'})"]
        ratios = [r[k] / base[k] for base in (pyes, bare) for k in ("write", "read", "singles")]
        print(
            f"| {name} | {r['write']:,.0f} | {r['read']:,.0f} | {r['singles']:,.0f} "
            f"| {r['restore']:.3f} | " + " | ".join(f"{x:.2f}" for x in ratios) + " |"
        )
    print("\nx bare: against the bare row of the same synchronous mode (py-es: normal)")
    for sync in SYNC:
        rate = results[f"bare sqlite3 ({sync})"]["insert"]
        print(f"bare ({sync}): executemany + COMMIT alone, rows pre-built: {rate:,.0f} ev/s")
    for sync in SYNC:
        r, bare = results[f"rowcast ({sync})"], results[f"bare sqlite3 ({sync})"]
        print(f"\ntargets, rowcast ({sync}):")
        for (kind, against), goal in TARGETS.items():
            x = r[kind] / (pyes if against == "py-es" else bare)[kind]
            print(f"  {kind} >= {goal} x {against}: {x:.2f} x, {verdict(x >= goal)}")
        ms = r["restore"]
        print(f"  snapshot restore <= {RESTORE_MS} ms: {ms:.3f} ms, {verdict(ms <= RESTORE_MS)}")
    if not watch:
        print("\nwatch latency: not measured (this EventStore has no watch())")
    for kind, (p50, p99) in watch.items():
        target = WATCH_P99_MS[kind]
        print(
            f"\nwatch {kind}, {args.watch_events} single appends {args.watch_gap}s apart: p50 "
            f"{p50:.2f} ms, p99 {p99:.2f} ms; p99 <= {target:.0f} ms: {verdict(p99 <= target)}"
        )


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


if __name__ == "__main__":
    main()

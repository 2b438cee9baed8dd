"""rowcast's PostgreSQL `EventStore` vs eventsourcing's `PostgresApplicationRecorder`, one server.

Both write to the same PostgreSQL (``--url``, default the local test server), each in a schema
of its own made for the run and dropped at the end. Both keep a gap-free global order the same
way (every append serialized: rowcast by an advisory lock, eventsourcing by a table lock) and
NOTIFY on each commit. Measured in one process, one connection busy at a time, each measure
`--rounds` times, rounds alternating between the two libraries (so a load that drifts during the
run, on a shared machine, favours neither), the median reported:

* append: `--events` events to a new stream in batches of 100, then `--singles` single-event
  appends to another; payload dicts turned into events inside the timing (rowcast: a NewEvent, which
  makes its UUIDv7 id and codec JSON; eventsourcing: a StoredEvent of ``json.dumps`` bytes).
* read: the stream read back whole into a list (rowcast decodes each event's JSON into
  a dict, eventsourcing yields ``bytes``; rowcast reads in pages of 1,000, eventsourcing
  in one query), and the global order read whole and counted (``read_all`` vs
  ``select_notifications``, in pages of 1,000 for both), each event dropped once counted.
  No loop of this script's own runs over the events read, on either side.
* watch latency: single appends `--watch-gap` s apart, from this process and from a spawned
  one, to a `watch` thread in this process: p50 and p99 of append-returned -> event-seen.

Timing never fails the script; a read, write or watch that missed an event does.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from importlib.metadata import version
from time import perf_counter
from typing import Any
from urllib.parse import urlsplit

import psycopg
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore

from rowcast.store import EventStore, NewEvent, RecordedEvent

STREAM, SINGLES, TYPE = "bench-stream", "bench-singles", "Increment"
TARGET_X, WATCH_P99_MS = 1.5, 20.0
URL = os.environ.get("ROWCAST_BENCH_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/test")
Result = dict[str, float]  # events/s per measure


def payload(i: int) -> dict[str, Any]:
    return {"delta": 1, "seq": i}


def check(what: str, got: object, want: object) -> None:
    if got != want:  # the measured thing did not really run
        raise AssertionError(f"{what}: got {got!r}, expected {want!r}")


def seconds(work: Callable[[], object], want: object, what: str) -> float:
    """Seconds `work()` took; it returns what it counted, checked."""
    t = perf_counter()
    got = work()
    took = perf_counter() - t
    check(what, got, want)
    return took


Measures = dict[str, Callable[[int], float]]  # measure -> seconds of round r


def rowcast_measures(store: EventStore, args: argparse.Namespace) -> Measures:
    n, singles = args.events, args.singles

    def batches(r: int) -> float:
        stream = f"{STREAM}-{r}"

        def work() -> int:
            for first in range(0, n, 100):
                last = min(first + 100, n)
                store.append(stream, [NewEvent(TYPE, payload(i)) for i in range(first, last)])
            return store.stream_version(stream)

        return seconds(work, n, "rowcast batches")

    def ones(r: int) -> float:
        stream = f"{SINGLES}-{r}"

        def work() -> int:
            for i in range(singles):
                store.append(stream, [NewEvent(TYPE, payload(i))])
            return store.stream_version(stream)

        return seconds(work, singles, "rowcast singles")

    # The same work on both sides: the stream's events handed over in one list, the
    # global order counted as it goes by (eventsourcing: page by page, each page then
    # dropped; rowcast: its iterator drained in C, each event then dropped). No loop
    # of this script's own runs over the events, as eventsourcing's side has none.
    def read_stream(r: int) -> float:
        events: list[RecordedEvent] = []

        def work() -> int:
            events[:] = store.read(f"{STREAM}-0")
            return len(events)

        took = seconds(work, n, "rowcast read")
        check("rowcast data", sum(e.data["delta"] for e in events), n)  # decoded, not timed
        return took

    def read_all(r: int) -> float:
        total = args.rounds * (n + singles)

        def work() -> int:
            last = deque(enumerate(store.read_all(), 1), maxlen=1)
            return last[0][0] if last else 0

        return seconds(work, total, "rowcast read_all")

    return {
        "append x100": batches,
        "append x1": ones,
        "read stream": read_stream,
        "read all": read_all,
    }


def eventsourcing_measures(
    recorder: PostgresApplicationRecorder, args: argparse.Namespace
) -> Measures:
    n, singles = args.events, args.singles
    streams: dict[int, uuid.UUID] = {}

    def batches(r: int) -> float:
        stream = streams.setdefault(r, uuid.uuid4())

        def work() -> int:
            for first in range(0, n, 100):
                last = min(first + 100, n)
                recorder.insert_events(
                    [
                        StoredEvent(stream, i + 1, TYPE, json.dumps(payload(i)).encode())
                        for i in range(first, last)
                    ]
                )
            return recorder.select_events(stream, desc=True, limit=1)[0].originator_version

        return seconds(work, n, "eventsourcing batches")

    def ones(r: int) -> float:
        single = uuid.uuid4()

        def work() -> int:
            for i in range(singles):
                one = StoredEvent(single, i + 1, TYPE, json.dumps(payload(i)).encode())
                recorder.insert_events([one])
            return recorder.select_events(single, desc=True, limit=1)[0].originator_version

        return seconds(work, singles, "eventsourcing singles")

    def read_stream(r: int) -> float:
        return seconds(lambda: len(recorder.select_events(streams[0])), n, "es read")

    def read_all(r: int) -> float:
        def work() -> int:
            count, start = 0, 1
            while page := recorder.select_notifications(start, 1000):
                count += len(page)
                start = page[-1].id + 1
            return count

        return seconds(work, args.rounds * (n + singles), "eventsourcing read all")

    return {
        "append x100": batches,
        "append x1": ones,
        "read stream": read_stream,
        "read all": read_all,
    }


def compare(url: str, schema: str, es_schema: str, args: argparse.Namespace) -> dict[str, Result]:
    """Events/s per measure and library: rounds alternate between the two (median of each).

    Alternating keeps a load that drifts during the run (a shared machine) from
    favouring the one measured first. Each append round writes a stream of its own.
    """
    parts = urlsplit(url)
    datastore = PostgresDatastore(
        dbname=parts.path.lstrip("/"),
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password or "",
        schema=es_schema,
    )
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{es_schema}"')
        recorder = PostgresApplicationRecorder(datastore)
        recorder.create_table()
        with EventStore(f"{url}?schema={schema}") as store:
            sides = {
                "rowcast": rowcast_measures(store, args),
                "eventsourcing": eventsourcing_measures(recorder, args),
            }
            counts = {"append x100": args.events, "append x1": args.singles}
            counts |= {
                "read stream": args.events,
                "read all": args.rounds * (args.events + args.singles),
            }
            results: dict[str, Result] = {side: {} for side in sides}
            for measure, count in counts.items():
                times: dict[str, list[float]] = {side: [] for side in sides}
                for r in range(args.rounds):
                    for side, measures in sides.items():
                        times[side].append(measures[measure](r))
                for side in sides:
                    results[side][measure] = count / statistics.median(times[side])
            return results
    finally:
        datastore.close()


def append_singles(url: str, stream: str, n: int, gap: float, out: Any = None) -> Any:
    """{version: wall time when its append returned}; put on `out` when run in a process."""
    sent = {}
    with EventStore(url) as store:
        for i in range(n):
            sent[store.append(stream, [NewEvent(TYPE, payload(i))]).version] = time.time()
            time.sleep(gap)
    return out.put(sent) if out is not None else sent


def watch_latency(url: str, n: int, gap: float) -> dict[str, tuple[float, float]]:
    """p50 and p99 ms from an append returning to a watcher seeing it."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    latency = {}
    with EventStore(url) as store:
        for kind in ("in-process", "cross-process"):
            arrived: dict[int, float] = {}
            watch = store.watch(kind, timeout=30)  # LISTEN is in place when this returns

            def follow(watch: Any = watch, arrived: dict[int, float] = arrived) -> None:
                for event in watch:
                    arrived.setdefault(event.version, time.time())
                    if len(arrived) >= n:
                        return

            thread = threading.Thread(target=follow, daemon=True)
            thread.start()
            if kind == "in-process":
                sent = append_singles(url, kind, n, gap)  # another store object: via NOTIFY
            else:
                proc = ctx.Process(target=append_singles, args=(url, kind, n, gap, queue))
                proc.start()
                sent = queue.get(timeout=300)
                proc.join(timeout=30)
            thread.join(30)
            check(f"{kind} watch", len(arrived), n)
            ms = sorted((arrived[v] - t) * 1000 for v, t in sent.items())
            latency[kind] = ms[len(ms) // 2], ms[min(n - 1, int(n * 0.99))]
    return latency


def server_version(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        sync = conn.execute("SHOW synchronous_commit").fetchone()
    return f"PostgreSQL {row[0] if row else '?'} (synchronous_commit={sync[0] if sync else '?'})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=URL, help="the server (also $ROWCAST_BENCH_POSTGRESQL)")
    parser.add_argument("--events", type=int, default=50_000, help="events in batches of 100")
    parser.add_argument("--singles", type=int, default=1_000, help="single-event appends")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each measure (median)")
    parser.add_argument("--watch-events", type=int, default=500, help="events per watch run")
    parser.add_argument("--watch-gap", type=float, default=0.005, help="seconds between them")
    args = parser.parse_args()

    run = uuid.uuid4().hex[:8]
    ours, theirs = f"rc_store_bench_{run}", f"rc_store_bench_es_{run}"
    try:
        results = compare(args.url, ours, theirs, args)
        watch = watch_latency(f"{args.url}?schema={ours}", args.watch_events, args.watch_gap)
    finally:
        with psycopg.connect(args.url, autocommit=True) as conn:
            for schema in (ours, theirs):
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    rowcast, es = results["rowcast"], results["eventsourcing"]

    versions = ", ".join(f"{p} {version(p)}" for p in ("rowcast", "eventsourcing", "psycopg"))
    print(
        f"Python {platform.python_version()}, {server_version(args.url)} on loopback, {versions}; "
        f"{platform.machine()}, {mp.cpu_count()} CPUs\n"
        f"per round: {args.events:,} events appended in batches of 100, {args.singles:,} single "
        f"appends, the stream and the global order read; median of {args.rounds} rounds "
        "alternating between the two; events/s\n"
    )
    print("| measure | rowcast | eventsourcing | rowcast x eventsourcing | target |")
    print("|---|---:|---:|---:|---|")
    met = []
    for measure, ours_rate in rowcast.items():
        x = ours_rate / es[measure]
        met.append(x >= TARGET_X)
        print(
            f"| {measure} | {ours_rate:,.0f} | {es[measure]:,.0f} | {x:.2f} "
            f"| >= {TARGET_X} x: {verdict(x >= TARGET_X)} |"
        )
    for kind, (p50, p99) in watch.items():
        print(
            f"\nwatch {kind}, {args.watch_events} single appends {args.watch_gap}s apart: p50 "
            f"{p50:.2f} ms, p99 {p99:.2f} ms; p99 <= {WATCH_P99_MS:.0f} ms: "
            f"{verdict(p99 <= WATCH_P99_MS)}"
        )


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


if __name__ == "__main__":
    main()

"""How long the web console's pages take on a big SQLite store (1,000,000 events, 100,000 streams).

Builds the store once (``--path``, kept for the next run; rows inserted in bulk with
``sqlite3``, in the store's own tables, as a relay of a busy shop would have left them:
each row's changes interleaved with the others'), then serves the console in process
(Starlette's TestClient: no network in the way) and times each page: opening (the
console's startup and its first page), a prefix search, a page of streams far down
the list, a stream's events both ways, the global order newest first and a page deep
into it, a row's history and as of a time, Live's page and its first events. Each
page is asked `--rounds` times; the table shows the first answer and the median.
Nothing is asserted: the goal (each page well under a second) is in the table.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

from starlette.testclient import TestClient

from rowcast.store import EventStore
from rowcast.ui import ConsoleConfig, create_app

T0 = 1_767_600_000.0


def build(path: Path, streams: int, per_stream: int) -> None:
    """The store at `path`: `streams` rows of table ``orders``, `per_stream` changes each."""
    url = f"sqlite:///{path}"
    EventStore(url).close()  # the tables, as the store makes them
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous = OFF")
    insert = (
        "INSERT INTO rowcast_events (stream, version, id, type, data, metadata, recorded_at) "
        "VALUES (?, ?, ?, ?, ?, NULL, ?)"
    )
    position = 0
    for version in range(1, per_stream + 1):
        rows = []
        for pk in range(streams):
            position += 1
            before = None if version == 1 else {"id": pk, "qty": version - 1, "note": "x"}
            after = {"id": pk, "qty": version, "note": "x"}
            data = {
                "action": "write" if version == 1 else "update",
                "schema": "shop",
                "table": "orders",
                "pk": pk,
                "before": before,
                "after": after,
                "ts": T0 + position / 1000,
                "txid": str(position),
                "position": f"0/{position:X}",
                "source": "postgres",
            }
            kind = "orders_write" if version == 1 else "orders_update"
            rows.append(
                (
                    f"shop.orders-{pk}",
                    version,
                    uuid.uuid4().bytes,
                    kind,
                    json.dumps(data),
                    T0 + position / 1000,
                )
            )
        with conn:
            conn.executemany(insert, rows)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=Path("/tmp/rowcast-bench-ui.db"))
    parser.add_argument("--streams", type=int, default=100_000)
    parser.add_argument("--per-stream", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)  # Starlette 1.x's TestClient: httpx2
    if args.rebuild or not args.path.exists():
        print(f"building {args.streams:,} streams x {args.per_stream} events in {args.path} ...")
        if args.path.exists():
            args.path.unlink()
        took = timed(lambda: build(args.path, args.streams, args.per_stream))
        print(f"built in {took / 1000:.1f} s")
    size = os.path.getsize(args.path) / 1e6
    url = f"sqlite:///{args.path}"
    with EventStore(url, create=False) as store:
        head = store.stream_version("@all")
    middle = f"shop.orders-{args.streams // 2}"
    deep = head // 2
    at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(T0 + head / 2000))
    pages: list[tuple[str, str]] = [
        ("streams, a prefix search", "/streams?prefix=shop.orders-4242"),
        ("streams, a page far down", f"/streams?after=shop.orders-{args.streams - 60}"),
        ("a stream, newest first", f"/streams/{middle}"),
        ("a stream, oldest first", f"/streams/{middle}?order=oldest"),
        ("@all, newest first", "/streams/%40all"),
        ("@all, a page in the middle", f"/streams/%40all?before={deep}"),
        ("@all, oldest first", "/streams/%40all?order=oldest"),
        ("a row's history", f"/rows/{middle}"),
        ("a row as of a time", f"/rows/{middle}?at={at}"),
        ("live, the page", "/live"),
        ("live, its first 20 events", "/live/feed?recent=20"),
    ]
    print(f"store: {head:,} events, {args.streams:,} streams, {size:,.0f} MB")
    app = create_app(ConsoleConfig(store=url))
    rows: list[tuple[str, float, float]] = []
    start = time.perf_counter()
    with TestClient(app, base_url="http://127.0.0.1") as client:
        first = client.get("/streams")
        opened = (time.perf_counter() - start) * 1000
        assert first.status_code == 200, first.text[:300]
        assert "shop.orders-0" in first.text
        rows.append(("open: startup + the Streams page", opened, opened))
        for name, path in pages:
            if path.startswith("/live/feed"):
                times = [timed(lambda p=path: _first_events(client, p)) for _ in range(args.rounds)]
            else:
                times = [timed(lambda p=path: _get(client, p)) for _ in range(args.rounds)]
            rows.append((name, times[0], statistics.median(times)))
    width = max(len(name) for name, *_ in rows)
    print(f"\n{'page':<{width}}  {'first ms':>9}  {'median ms':>9}")
    for name, first_ms, median_ms in rows:
        print(f"{name:<{width}}  {first_ms:>9.1f}  {median_ms:>9.1f}")


def _get(client: TestClient, path: str) -> None:
    answer = client.get(path)
    assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])


def _first_events(client: TestClient, path: str) -> None:
    with client.stream("GET", path) as answer:
        seen = 0
        for line in answer.iter_lines():
            if line.startswith("id: "):
                seen += 1
                if seen == 20:
                    return


if __name__ == "__main__":
    main()

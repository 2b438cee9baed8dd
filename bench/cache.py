"""rowcast.cache against the references the cache issue names, side by side in one run.

1. In-process hits and puts: ``MemoryCache.get`` / ``put`` (key dicts, values copied both
   ways) vs a bare ``cachetools.TTLCache`` lookup / store and dogpile.cache's memory backend
   (``CacheRegion.get`` / ``set``). Best of `--rounds`, interleaved. Target: MemoryCache hit
   >= 0.5 x the bare TTLCache lookup.
2. ``RedisCache.batch_get`` of 1,000 keys vs 1,000 single ``get``s, with the round trips
   counted on the connection. Target: one round trip.
3. Change-to-invalidation latency: a ``BinlogSource`` feeds a Hub that a MemoryCache follows;
   single-row UPDATEs commit on MariaDB and the time from ``commit()`` returning to the entry
   being gone is measured by polling. Target: p99 <= 100 ms.

Needs the bench references: ``pip install cachetools dogpile.cache``; Redis on 6379 (db 15)
and MariaDB with its row binlog on 3306. Keys live under a namespace unique to the run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import timeit
import uuid
from typing import Any, ClassVar

try:
    import cachetools
    from dogpile.cache import make_region
except ImportError as error:  # the references are not rowcast's dependencies
    sys.exit(
        f"bench/cache.py compares with cachetools and dogpile.cache: {error}; "
        "pip install cachetools dogpile.cache"
    )
import pymysql
import redis

from rowcast import Hub
from rowcast.cache import MemoryCache, RedisCache
from rowcast.sources.mysql import BinlogSource

REDIS_URL = os.environ.get("ROWCAST_TEST_REDIS", "redis://127.0.0.1:6379/15")
MYSQL_URL = "mysql://root@127.0.0.1:3306/test"
HIT_TARGET, P99_TARGET_MS = 0.5, 100.0


class User:
    __cache_keys__: ClassVar[list[str]] = ["id", "email"]

    def __init__(self, id: int) -> None:
        self.id, self.email, self.name, self.score = id, f"u{id}@bench.test", f"user {id}", 1.5


def ops_per_second(stmt: str, env: dict[str, Any], number: int, rounds: int) -> float:
    best = min(timeit.repeat(stmt, globals=env, number=number, repeat=rounds))
    return number / best


def in_process(n: int, rounds: int) -> list[tuple[str, float, float]]:
    users = [User(i) for i in range(1000)]
    ours = MemoryCache(maxsize=100_000)
    ours.batch_put(users)
    ttl: Any = cachetools.TTLCache(maxsize=100_000, ttl=300)
    for u in users:
        ttl[u.id] = u
    region = make_region().configure("dogpile.cache.memory")
    for u in users:
        region.set(u.id, u)
    env = {"ours": ours, "ttl": ttl, "region": region, "User": User, "u": users[500]}
    rows = []
    for what, stmts in (
        ("hit", ("ours.get(User, {'id': 500})", "ttl[500]", "region.get(500)")),
        ("put", ("ours.put(u)", "ttl[500] = u", "region.set(500, u)")),
    ):
        rates = [ops_per_second(s, env, n, rounds) for s in stmts]
        rows.append((f"MemoryCache {what}", rates[0], rates[0] / rates[1]))
        rows.append((f"cachetools.TTLCache {what}", rates[1], 1.0))
        rows.append((f"dogpile.cache memory {what}", rates[2], rates[2] / rates[1]))
    return rows


class Counting(redis.Connection):
    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        Counting.sends += 1
        super().send_packed_command(command, check_health)


def batch(rounds: int) -> list[tuple[str, float, int]]:
    pool = redis.ConnectionPool.from_url(REDIS_URL, connection_class=Counting)
    namespace = f"bench-cache-{uuid.uuid4().hex[:8]}"
    cache = RedisCache(client=redis.Redis(connection_pool=pool), namespace=namespace)
    users = [User(i) for i in range(1000)]
    keys = [{"id": u.id} for u in users]
    try:
        cache.batch_put(users)
        rows = []
        for name, run in (
            ("RedisCache.batch_get(1,000 keys)", lambda: cache.batch_get(User, keys)),
            ("1,000 x RedisCache.get", lambda: [cache.get(User, k) for k in keys]),
        ):
            times, trips = [], 0
            for _ in range(rounds):
                before = Counting.sends
                start = time.perf_counter()
                found = run()
                times.append(time.perf_counter() - start)
                trips = Counting.sends - before
                assert all(f is not None for f in found)
            rows.append((name, min(times) * 1000, trips))
        return rows
    finally:
        cache.batch_delete(users)
        cache.close()


def invalidation(updates: int) -> list[float]:
    conn = pymysql.connect(host="127.0.0.1", user="root", database="test", autocommit=True)
    table = f"cache_bench_{uuid.uuid4().hex[:8]}"
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, email VARCHAR(64), n INT)")
        cur.execute(f"INSERT INTO {table} VALUES (1, 'u1@bench.test', 0)")
        cur.execute("SHOW MASTER STATUS")
        file, offset = cur.fetchone()[:2]
    cache, hub = MemoryCache(), Hub()
    cache.follow(hub, {f"test.{table}": User})
    source = BinlogSource(
        MYSQL_URL,
        start=f"{file}:{offset}",
        tables=[f"test.{table}"],
        server_id=3_300_000_000 + os.getpid() % 1_000_000,
    )
    thread = threading.Thread(target=source.run, args=(hub,), daemon=True)
    thread.start()
    user, latencies = User(1), []
    try:
        for i in range(updates):
            cache.put(user)
            with conn.cursor() as cur:
                cur.execute(f"UPDATE {table} SET n = %s WHERE id = 1", (i + 1,))
            committed = time.perf_counter()
            deadline = committed + 10
            while cache.get(User, {"id": 1}) is not None:
                if time.perf_counter() > deadline:
                    raise SystemExit(f"update {i} was never seen on the binlog")
                time.sleep(0.0002)
            latencies.append((time.perf_counter() - committed) * 1000)
            time.sleep(0.005)  # a steady trickle, not a flood
    finally:
        source.stop()
        thread.join(10)
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
        conn.close()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=100_000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--updates", type=int, default=200, help="UPDATEs to time")
    args = parser.parse_args()

    print(f"{'in-process (best of ' + str(args.rounds) + ')':<34}{'ops/s':>12}{'vs TTLCache':>14}")
    rows = in_process(args.number, args.rounds)
    for name, rate, ratio in rows:
        print(f"{name:<34}{rate:>12,.0f}{ratio:>13.2f}x")
    hit = rows[0][2]
    verdict = "met" if hit >= HIT_TARGET else "MISSED"
    print(f"target: MemoryCache hit >= {HIT_TARGET} x TTLCache: {verdict}")
    print()
    print(f"{'Redis, 1,000 keys':<34}{'best ms':>12}{'round trips':>14}")
    trips = batch(args.rounds)
    for name, ms, n in trips:
        print(f"{name:<34}{ms:>12.2f}{n:>14}")
    print(
        f"speed-up of the batch: {trips[1][1] / trips[0][1]:.0f}x; target 1 round trip: "
        f"{'met' if trips[0][2] == 1 else 'MISSED'}"
    )
    print()
    lat = sorted(invalidation(args.updates))
    p50 = statistics.median(lat)
    p99 = lat[min(len(lat) - 1, round(0.99 * len(lat)) - 1)]
    print(f"{'MariaDB commit -> entry gone':<34}{'p50 ms':>12}{'p99 ms':>14}")
    print(f"{f'{len(lat)} UPDATEs, binlog + follow':<34}{p50:>12.2f}{p99:>14.2f}")
    print(f"target p99 <= {P99_TARGET_MS:.0f} ms: {'met' if p99 <= P99_TARGET_MS else 'MISSED'}")


if __name__ == "__main__":
    main()

"""RedisCache against the real Redis of this machine (db 15, a fresh namespace per test)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from rowcast.cache import Cache, RedisCache, open_cache
from rowcast.errors import CacheError, ConfigError
from rowcast.testing.cache import CacheContract, User
from tests.conftest import require_redis


def drop_namespace(url: str, namespace: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


class TestRedisCache(CacheContract):
    @pytest.fixture(autouse=True)
    def _redis(self) -> Iterator[None]:
        self.url = require_redis()
        yield
        drop_namespace(self.url, self.namespace)

    def make_cache(self, namespace: str, **options: Any) -> Cache:
        return RedisCache(self.url, namespace=namespace, **options)


class Counting(redis.Connection):
    """Counts what is sent to the server: one send per round trip."""

    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        Counting.sends += 1
        super().send_packed_command(command, check_health)


@pytest.fixture
def counted() -> Iterator[RedisCache]:
    url = require_redis()
    pool = redis.ConnectionPool.from_url(url, connection_class=Counting)
    cache = RedisCache(client=redis.Redis(connection_pool=pool), namespace="test-cache-rt")
    cache.client.ping()
    yield cache
    drop_namespace(url, "test-cache-rt")
    cache.close()


def test_batches_are_one_round_trip_each(counted: RedisCache) -> None:
    users = [User(i, "acme", f"u{i}@acme.test") for i in range(1000)]
    for operation in (
        lambda: counted.batch_put(users),
        lambda: counted.batch_get(User, [{"id": i} for i in range(1000)]),
        lambda: counted.batch_delete(users),
    ):
        before = Counting.sends
        operation()
        assert Counting.sends - before == 1


def test_a_malformed_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="redis://"):
        RedisCache("localhost:6379")
    with pytest.raises(ConfigError, match="bad Redis URL"):
        RedisCache("redis://127.0.0.1:notaport/0")


def test_an_unreachable_server_is_a_cache_error() -> None:
    cache = open_cache("redis://127.0.0.1:1/0", timeout=1)
    with pytest.raises(CacheError, match=r"127\.0\.0\.1:1.*get failed") as failure:
        cache.get(User, {"id": 1})
    assert isinstance(failure.value.__cause__, redis.ConnectionError)
    with pytest.raises(CacheError, match="put failed"):
        cache.put(User(1, "acme", "a@acme.test"))

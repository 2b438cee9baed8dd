"""MemcachedCache against a real memcached (scripts/services.sh starts one on 11211)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from pymemcache.client.base import Client

from rowcast.cache import Cache, MemcachedCache, open_cache
from rowcast.cache._kv import Write
from rowcast.errors import CacheError, ConfigError
from rowcast.testing.cache import CacheContract, User
from tests.cache.conftest import require_memcached


class Tracked(MemcachedCache):
    """Remembers every key it wrote, so a test can remove them all (memcached lists none)."""

    def __init__(self, url: str, written: set[str], **options: Any) -> None:
        super().__init__(url, **options)
        self.written = written

    def _set_many(self, writes: Sequence[Write]) -> None:
        self.written.update(self._short(k) for keys, _, _ in writes for k in keys)
        super()._set_many(writes)

    def _add_leases(self, keys: Sequence[str], lease: bytes, ttl: float) -> list[bool]:
        self.written.update(self._short(k) for k in keys)
        return super()._add_leases(keys, lease, ttl)


class TestMemcachedCache(CacheContract):
    short_lifetime = 1  # memcached counts whole seconds

    @pytest.fixture(autouse=True)
    def _memcached(self) -> Iterator[None]:
        self.url = require_memcached()
        self.written: set[str] = set()
        yield
        host, _, port = self.url.removeprefix("memcached://").partition(":")
        client = Client((host, int(port)))
        client.delete_many(sorted(self.written), noreply=False)
        client.close()

    def make_cache(self, namespace: str, **options: Any) -> Cache:
        return Tracked(self.url, self.written, namespace=namespace, **options)

    def test_long_keys_are_hashed(self) -> None:
        cache = self.cache()
        name = "x" * 400
        cache.put(User(1, "acme", name))
        got = cache.get(User, {"tenant": "acme", "email": name})
        assert got is not None
        assert got.email == name


@pytest.mark.parametrize("url", ["127.0.0.1:11211", "redis://127.0.0.1", "memcached://h:port"])
def test_a_malformed_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="memcached://"):
        MemcachedCache(url)


def test_an_unreachable_server_is_a_cache_error() -> None:
    cache = open_cache("memcached://127.0.0.1:1", timeout=1)
    with pytest.raises(CacheError, match=r"127\.0\.0\.1:1.*get failed"):
        cache.get(User, {"id": 1})
    with pytest.raises(CacheError, match="delete failed"):
        cache.delete(User(1, "acme", "a@acme.test"))

"""MemoryCache: the contract, plus its own bound and isolation."""

from __future__ import annotations

import time
from typing import Any

import pytest

from rowcast.cache import Cache, MemoryCache, memory, open_cache
from rowcast.errors import ConfigError
from rowcast.testing.cache import CacheContract, User


class TestMemoryCache(CacheContract):
    shared = False

    def make_cache(self, namespace: str, **options: Any) -> Cache:
        return MemoryCache(namespace=namespace, **options)


def user(i: int, **attrs: Any) -> User:
    return User(i, "acme", f"u{i}@acme.test", **attrs)


def test_least_recently_used_goes_first() -> None:
    cache = MemoryCache(maxsize=4)  # two users of two keys each
    cache.put(user(1))
    cache.put(user(2))
    assert cache.get(User, {"id": 1}) is not None  # 1 is now more recent than 2
    assert cache.get(User, {"tenant": "acme", "email": "u1@acme.test"}) is not None
    cache.put(user(3))
    assert len(cache) == 4
    got = cache.batch_get(User, [{"id": 1}, {"id": 2}, {"id": 3}])
    assert [u is not None for u in got] == [True, False, True]


def test_mutable_values_are_copied_too() -> None:
    cache = MemoryCache()
    tags = ["a"]
    cache.put(user(1, tags=tags, meta={"n": 1}))
    tags.append("b")
    got = cache.get(User, {"id": 1})
    assert got is not None
    got.meta["n"] = 2
    again = cache.get(User, {"id": 1})
    assert again is not None
    assert (again.tags, again.meta) == (["a"], {"n": 1})


@pytest.mark.parametrize("maxsize", [0, -1, 1.5, True])
def test_a_wrong_maxsize_is_a_config_error(maxsize: Any) -> None:
    with pytest.raises(ConfigError, match="maxsize"):
        MemoryCache(maxsize=maxsize)


def test_open_cache_by_url() -> None:
    cache = open_cache("memory://", maxsize=10)
    assert isinstance(cache, MemoryCache)
    assert cache.maxsize == 10
    with pytest.raises(ConfigError, match="must start with"):
        open_cache("mongodb://localhost")


def test_an_unhashable_key_value_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="cache key value"):
        MemoryCache().get(User, {"id": [1]})


def test_a_wrong_declaration_is_a_config_error() -> None:
    class Bad:
        __cache_keys__ = ["id", ()]

    with pytest.raises(ConfigError, match="entry"):
        MemoryCache().get(Bad, {"id": 1})


def test_reading_an_expired_entry_keeps_a_write_made_meanwhile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reads take no lock: one that finds an entry expired must not drop what another
    thread wrote under the key since (a fresh value, or another reader's lease)."""
    cache = MemoryCache(lifetime=lambda u: 60 if u.name == "old" else None)
    cache.put(user(1, name="old"))
    later = time.monotonic() + 3600
    wrote: list[bool] = []

    def clock() -> float:  # the reader checks the expiry: a writer puts right then
        if not wrote:
            wrote.append(True)
            cache.put(user(1, name="new"))
        return later

    monkeypatch.setattr(memory, "_monotonic", clock)
    assert cache.get(User, {"id": 1}) is None  # expired when it was read
    got = cache.get(User, {"id": 1})
    assert got is not None
    assert got.name == "new"

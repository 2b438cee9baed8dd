"""ChainedCache: stockpyle's chained example over memory, Redis, memcached and a database."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import sessionmaker

from rowcast.cache import (
    Cache,
    ChainedCache,
    MemcachedCache,
    MemoryCache,
    RedisCache,
    SQLAlchemyCache,
)
from rowcast.errors import ConfigError
from rowcast.testing.cache import CacheContract
from rowcast.testing.cache import User as PlainUser
from tests.cache.conftest import require_memcached
from tests.cache.test_redis import drop_namespace
from tests.cache.test_sqlalchemy import Animal, Base, Puppy, User
from tests.conftest import require_redis, sqlite_engine


class TestMemoryOverRedis(CacheContract):
    shared = False  # each chain has its own memory layer: only one process's view

    @pytest.fixture(autouse=True)
    def _redis(self) -> Iterator[None]:
        self.url = require_redis()
        yield
        drop_namespace(self.url, self.namespace)

    def make_cache(self, namespace: str, **options: Any) -> Cache:
        return ChainedCache(
            [
                MemoryCache(namespace=namespace, **options),
                RedisCache(self.url, namespace=namespace, **options),
            ]
        )


class Hooked(RedisCache):
    """A Redis layer that runs `hook` once, right after its next read."""

    hook: Callable[[], None] | None = None

    def _get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        found = super()._get_many(keys)
        hook, self.hook = self.hook, None
        if hook is not None:
            hook()
        return found


@pytest.fixture
def layers(tmp_path: Path) -> Iterator[tuple[MemoryCache, Hooked, MemcachedCache, SQLAlchemyCache]]:
    url = require_redis()
    namespace = f"test-cache-chain-{tmp_path.name[-12:]}"
    engine = sqlite_engine(tmp_path / "chain.db")
    Base.metadata.create_all(engine)
    memcached = MemcachedCache(require_memcached(), namespace=namespace)
    redis_layer = Hooked(url, namespace=namespace)
    yield MemoryCache(), redis_layer, memcached, SQLAlchemyCache(sessionmaker(engine))
    drop_namespace(url, namespace)
    for i in range(1, 4):
        memcached.delete(User(id=i, tenant="acme", email=f"u{i}@acme.test"))
    memcached.close()
    redis_layer.close()
    engine.dispose()


def test_stockpyle_chained_example(layers: Any) -> None:
    memory, redis_layer, memcached, database = layers
    cache = ChainedCache([memory, redis_layer, memcached, database])
    cache.put(User(id=1, tenant="acme", email="u1@acme.test", name="Ada"))
    for layer in layers:  # written through to every layer
        got = layer.get(User, {"id": 1})
        assert got is not None
        assert got.name == "Ada"
    memory.clear()
    redis_layer.delete(User(id=1, tenant="acme", email="u1@acme.test"))
    got = cache.get(User, {"tenant": "acme", "email": "u1@acme.test"})  # from memcached
    assert got is not None
    assert got.name == "Ada"
    # back-filled into the layers above the one that had it
    assert memory.get(User, {"tenant": "acme", "email": "u1@acme.test"}) is not None
    assert redis_layer.get(User, {"tenant": "acme", "email": "u1@acme.test"}) is not None
    cache.delete(User(id=1, tenant="acme", email="u1@acme.test"))
    assert [layer.get(User, {"id": 1}) for layer in layers] == [None] * 4


def test_batch_get_back_fills_from_the_database(layers: Any) -> None:
    memory, redis_layer, memcached, database = layers
    cache = ChainedCache([memory, redis_layer, memcached, database])
    database.batch_put([User(id=i, tenant="acme", email=f"u{i}@acme.test") for i in (1, 2)])
    memory.put(User(id=3, tenant="acme", email="u3@acme.test"))
    got = cache.batch_get(User, [{"id": 1}, {"id": 9}, {"id": 3}, {"id": 2}])
    assert [u.id if u is not None else None for u in got] == [1, None, 3, 2]
    assert [u is not None for u in redis_layer.batch_get(User, [{"id": 1}, {"id": 2}])] == [
        True,
        True,
    ]


def test_no_stale_back_fill_when_an_invalidation_lands_between_the_layers(layers: Any) -> None:
    memory, redis_layer, _, _ = layers
    cache = ChainedCache([memory, redis_layer])
    old = PlainUser(1, "acme", "u1@acme.test", name="old")
    redis_layer.put(old)
    # the reader has read "old" from Redis; the writer's change now drops every layer
    redis_layer.hook = lambda: cache.delete(old)
    got = cache.get(PlainUser, {"id": 1})
    assert got is not None
    assert got.name == "old"  # what was read is returned...
    assert memory.get(PlainUser, {"id": 1}) is None  # ...but not back-filled
    assert cache.get(PlainUser, {"id": 1}) is None


def test_bad_layers_are_a_config_error() -> None:
    for layers in ([], [MemoryCache(), "redis://"], None):
        with pytest.raises(ConfigError, match="list of caches"):
            ChainedCache(layers)  # type: ignore[arg-type]


def test_a_base_class_read_finds_a_row_of_a_subclass(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path / "animals.db")
    Base.metadata.create_all(engine)
    database = SQLAlchemyCache(sessionmaker(engine))
    database.put(Puppy(id=5, name="Rex", license="L-5"))
    memory = MemoryCache()  # not polymorphic: a Puppy is not kept under Animal's keys
    cache = ChainedCache([memory, database])
    for got in (cache.get(Animal, {"id": 5}), cache.batch_get(Animal, [{"id": 5}])[0]):
        assert type(got) is Puppy
        assert got.name == "Rex"
    assert memory.get(Animal, {"id": 5}) is None  # returned, not cached
    polymorphic = MemoryCache(polymorphic=True)
    ChainedCache([polymorphic, database]).get(Animal, {"id": 5})
    assert type(polymorphic.get(Animal, {"id": 5})) is Puppy
    with pytest.raises(
        ConfigError, match=r"returned a User whose keys.*must return a Animal object"
    ):
        memory.get_or_load(Animal, {"id": 6}, lambda: PlainUser(6, "acme", "a@acme.test"))
    engine.dispose()

"""`CacheContract`: what every `rowcast.cache.Cache` store must do.

Subclass it in a test module and override `make_cache` (it gets a fresh
``namespace`` per test, and ``polymorphic``, ``lifetime`` and ``serializer``
options where the store has them)::

    class TestMemoryCache(CacheContract):
        def make_cache(self, namespace, **options):
            return MemoryCache(namespace=namespace, **options)

Models are `User` (``"id"`` and ``("tenant", "email")``), `Animal` / `Dog`
(own keys) / `Puppy` (inherits Dog's); a store of mapped classes sets its own
(attributes of the same names) and builds them with `new`. Class flags turn
off what a store cannot do: ``expires`` (lifetimes), ``serializers`` (the
serializer option), ``shared`` (two instances see one store, as two processes
do), ``database`` (the store is the database: a loaded object
is inserted, not cached under a lease), ``short_lifetime`` (seconds a store
can expire in).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any, ClassVar

import pytest

from rowcast.cache import Cache
from rowcast.errors import ConfigError

__all__ = ["Animal", "CacheContract", "Dog", "Puppy", "User", "wait_for"]


class User:
    __cache_keys__: ClassVar[list[Any]] = ["id", ("tenant", "email")]

    def __init__(self, id: int, tenant: str, email: str, name: str = "", **extra: Any) -> None:
        self.id, self.tenant, self.email, self.name = id, tenant, email, name
        self.__dict__.update(extra)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({vars(self)})"


class Animal:
    __cache_keys__: ClassVar[list[Any]] = ["id"]

    def __init__(self, id: int, name: str = "", license: str = "") -> None:
        self.id, self.name, self.license = id, name, license


class Dog(Animal):
    __cache_keys__: ClassVar[list[Any]] = ["id", "license"]


class Puppy(Dog):
    pass


def wait_for(condition: Callable[[], Any], seconds: float = 20) -> None:
    """Poll `condition` until it is true; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class CacheContract:
    """The behaviour every cache store shares; see `rowcast.cache.base`."""

    User: Any = User
    Animal: Any = Animal
    Dog: Any = Dog
    Puppy: Any = Puppy
    expires = True
    serializers = True
    database = False
    shared = True
    short_lifetime = 0.05

    def make_cache(self, namespace: str, **options: Any) -> Cache:
        """A store of the backend under test, its keys prefixed by `namespace`."""
        raise NotImplementedError

    def new(self, cls: Any, **attrs: Any) -> Any:
        """An object of `cls` with these attributes (override for mapped classes)."""
        return cls(**attrs)

    def user(self, id: int = 1, **attrs: Any) -> Any:
        values = {"tenant": "acme", "email": f"u{id}@acme.test", "name": f"user {id}"}
        return self.new(self.User, id=id, **{**values, **attrs})

    @pytest.fixture(autouse=True)
    def _caches(self) -> Iterator[None]:
        self.namespace = f"test-cache-{uuid.uuid4().hex[:12]}"
        self._made: list[Cache] = []
        yield
        for cache in self._made:
            cache.close()

    def cache(self, **options: Any) -> Cache:
        made = self.make_cache(self.namespace, **options)
        self._made.append(made)
        return made

    def two(self) -> tuple[Cache, Cache]:
        """Two clients of one store (as two processes have), or one for an unshared store."""
        first = self.cache()
        return (first, self.cache()) if self.shared else (first, first)

    # ------------------------------------------------------------ quick start

    def test_is_a_cache(self) -> None:
        assert isinstance(self.cache(), Cache)

    def test_quickstart_put_then_get(self) -> None:
        cache = self.cache()
        cache.put(self.user(123, name="Ada"))
        got = cache.get(self.User, {"id": 123})
        assert got is not None
        assert (got.id, got.name, type(got)) == (123, "Ada", self.User)
        assert cache.get(self.User, {"id": 124}) is None

    def test_alternate_keys_find_the_same_object(self) -> None:
        cache = self.cache()
        cache.put(self.user(7, tenant="acme", email="ada@acme.test"))
        by_email = cache.get(self.User, {"email": "ada@acme.test", "tenant": "acme"})
        by_tuple_order = cache.get(self.User, {"tenant": "acme", "email": "ada@acme.test"})
        assert by_email is not None
        assert by_tuple_order is not None
        assert by_email.id == by_tuple_order.id == 7
        assert cache.get(self.User, {"tenant": "other", "email": "ada@acme.test"}) is None

    def test_keys_are_typed(self) -> None:
        cache = self.cache()
        cache.put(self.user(123))
        assert cache.get(self.User, {"id": "123"}) is None
        assert cache.get(self.User, {"id": 123}) is not None

    def test_a_key_the_class_does_not_declare_is_a_config_error(self) -> None:
        cache = self.cache()
        with pytest.raises(ConfigError, match="no cache key"):
            cache.get(self.User, {"email": "a@b.test"})
        with pytest.raises(ConfigError, match="dict of attribute values"):
            cache.get(self.User, 1)  # type: ignore[arg-type]

    def test_a_class_without_keys_is_a_config_error(self) -> None:
        class Plain:
            pass

        with pytest.raises(ConfigError, match="__cache_keys__"):
            self.cache().get(Plain, {"id": 1})

    def test_put_replaces_under_every_key(self) -> None:
        cache = self.cache()
        cache.put(self.user(1, name="old"))
        cache.put(self.user(1, name="new"))
        for keydict in ({"id": 1}, {"tenant": "acme", "email": "u1@acme.test"}):
            got = cache.get(self.User, keydict)
            assert got is not None
            assert got.name == "new"

    def test_delete_removes_every_key_and_is_idempotent(self) -> None:
        cache = self.cache()
        user = self.user(1)
        cache.put(user)
        cache.put(self.user(2))
        cache.delete(user)
        cache.delete(user)
        assert cache.get(self.User, {"id": 1}) is None
        assert cache.get(self.User, {"tenant": "acme", "email": "u1@acme.test"}) is None
        assert cache.get(self.User, {"id": 2}) is not None

    # ------------------------------------------------------------ batches

    def test_batch_get_is_in_order_with_none_for_misses(self) -> None:
        cache = self.cache()
        cache.batch_put([self.user(i) for i in (1, 2, 3, 5)])
        got = cache.batch_get(self.User, [{"id": i} for i in (5, 4, 1, 3, 2, 9)])
        assert [u.id if u is not None else None for u in got] == [5, None, 1, 3, 2, None]
        assert cache.batch_get(self.User, []) == []

    def test_batch_get_mixes_key_shapes(self) -> None:
        cache = self.cache()
        cache.batch_put([self.user(i) for i in (1, 2)])
        got = cache.batch_get(
            self.User, [{"tenant": "acme", "email": "u2@acme.test"}, {"id": 1}, {"id": 3}]
        )
        assert [u.id if u is not None else None for u in got] == [2, 1, None]

    def test_batch_delete(self) -> None:
        cache = self.cache()
        users = [self.user(i) for i in range(1, 6)]
        cache.batch_put(users)
        cache.batch_delete(users[1:4])
        cache.batch_delete([])
        got = cache.batch_get(self.User, [{"id": i} for i in range(1, 6)])
        assert [u is not None for u in got] == [True, False, False, False, True]

    # ------------------------------------------------------------ isolation

    def test_values_are_isolated_from_later_mutation(self) -> None:
        cache = self.cache()
        user = self.user(1, name="before")
        cache.put(user)
        user.name = "changed after put"
        got = cache.get(self.User, {"id": 1})
        assert got is not None
        assert got.name == "before"
        got.name = "changed after get"
        again = cache.get(self.User, {"id": 1})
        assert again is not None
        assert again.name == "before"

    # ------------------------------------------------------------ loaders

    def test_get_or_load_loads_a_miss_once(self) -> None:
        cache = self.cache()
        calls: list[int] = []

        def load() -> Any:
            calls.append(1)
            return self.user(1, name="loaded")

        first = cache.get_or_load(self.User, {"id": 1}, load)
        second = cache.get_or_load(self.User, {"id": 1}, load)
        assert first is not None
        assert second is not None
        assert (first.name, second.name, len(calls)) == ("loaded", "loaded", 1)
        assert cache.get(self.User, {"id": 1}) is not None

    def test_get_or_load_caches_no_none_and_no_error(self) -> None:
        cache = self.cache()
        assert cache.get_or_load(self.User, {"id": 1}, lambda: None) is None

        def fail() -> Any:
            raise RuntimeError("database down")

        with pytest.raises(RuntimeError, match="database down"):
            cache.get_or_load(self.User, {"id": 1}, fail)
        # neither left a lease behind: the next reader loads at once
        got = cache.get_or_load(self.User, {"id": 1}, lambda: self.user(1))
        assert got is not None

    def test_no_stampede_one_loader_per_key(self) -> None:
        caches = self.two()
        calls: list[int] = []
        barrier = threading.Barrier(6)
        results: list[Any] = []

        def load() -> Any:
            calls.append(1)
            time.sleep(0.2)  # hold the lease while the others arrive
            return self.user(1, name="once")

        def read(cache: Cache) -> None:
            barrier.wait()
            results.append(cache.get_or_load(self.User, {"id": 1}, load))

        threads = [threading.Thread(target=read, args=(caches[i % 2],)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(calls) == 1
        assert [r.name for r in results] == ["once"] * 6

    def test_no_stale_fill_after_a_put_during_the_load(self) -> None:
        reader, writer = self.two()

        def load_then_writer_commits() -> Any:
            old = self.user(1, name="old")  # the reader has read the old row...
            writer.put(self.user(1, name="new"))  # ...a writer commits and writes through
            return old

        reader.get_or_load(self.User, {"id": 1}, load_then_writer_commits)
        got = reader.get(self.User, {"id": 1})
        assert got is not None
        assert got.name == "new"

    def test_no_stale_fill_after_an_invalidation_during_the_load(self) -> None:
        if self.database:
            pytest.skip("the store is the database: a loaded row is inserted")
        reader, writer = self.two()

        def load_then_writer_invalidates() -> Any:
            old = self.user(1, name="old")
            writer.delete(self.user(1, name="new"))  # the change stream drops the entries
            return old

        loaded = reader.get_or_load(self.User, {"id": 1}, load_then_writer_invalidates)
        assert loaded is not None
        assert loaded.name == "old"  # the reader still gets what it read...
        assert reader.get(self.User, {"id": 1}) is None  # ...but it is not cached

    def test_batch_get_or_load(self) -> None:
        cache = self.cache()
        cache.put(self.user(2))
        asked: list[Any] = []

        def load(keydicts: list[Any]) -> list[Any]:
            asked.extend(kd["id"] for kd in keydicts)
            return [self.user(kd["id"]) if kd["id"] != 3 else None for kd in keydicts]

        got = cache.batch_get_or_load(self.User, [{"id": i} for i in (1, 2, 3)], load)
        assert [u.id if u is not None else None for u in got] == [1, 2, None]
        assert asked == [1, 3]
        assert cache.get(self.User, {"id": 1}) is not None
        with pytest.raises(ConfigError, match="one result per key dict"):
            cache.batch_get_or_load(self.User, [{"id": 8}, {"id": 9}], lambda kds: [None])

    def test_batch_get_or_load_no_stale_fill(self) -> None:
        if self.database:
            pytest.skip("the store is the database: a loaded row is inserted")
        reader, writer = self.two()

        def load(keydicts: list[Any]) -> list[Any]:
            old = [self.user(kd["id"], name="old") for kd in keydicts]
            writer.put(self.user(1, name="new"))
            writer.delete(self.user(2))
            return old

        reader.batch_get_or_load(self.User, [{"id": 1}, {"id": 2}, {"id": 3}], load)
        got = reader.batch_get(self.User, [{"id": 1}, {"id": 2}, {"id": 3}])
        assert [u.name if u is not None else None for u in got] == ["new", None, "old"]

    # ------------------------------------------------------------ polymorphic

    def test_polymorphic_stores_under_each_ancestor_with_keys(self) -> None:
        cache = self.cache(polymorphic=True) if not self.database else self.cache()
        puppy = self.new(self.Puppy, id=10, name="Rex", license="L-10")
        cache.put(puppy)
        for cls, keydict in (
            (self.Animal, {"id": 10}),
            (self.Dog, {"license": "L-10"}),
            (self.Puppy, {"license": "L-10"}),
        ):
            got = cache.get(cls, keydict)
            assert got is not None, cls
            assert (type(got), got.name) == (self.Puppy, "Rex")
        cache.delete(puppy)
        assert cache.get(self.Animal, {"id": 10}) is None
        assert cache.get(self.Dog, {"license": "L-10"}) is None

    def test_not_polymorphic_stores_under_the_class_only(self) -> None:
        if self.database:
            pytest.skip("a database finds subclasses' rows by itself")
        cache = self.cache()
        cache.put(self.new(self.Dog, id=11, name="Fido", license="L-11"))
        assert cache.get(self.Dog, {"id": 11}) is not None
        assert cache.get(self.Animal, {"id": 11}) is None

    # ------------------------------------------------------------ lifetimes

    def test_a_lifetime_already_over_stores_nothing(self) -> None:
        if not self.expires:
            pytest.skip("the store does not expire entries")
        past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        for lifetime in (0, -1, dt.timedelta(0), past):
            cache = self.cache(lifetime=lifetime)
            cache.put(self.user(1))
            assert cache.get(self.User, {"id": 1}) is None, lifetime

    def test_lifetime_per_object_from_a_callback(self) -> None:
        if not self.expires:
            pytest.skip("the store does not expire entries")
        cache = self.cache(lifetime=lambda u: None if u.name == "keep" else 0)
        cache.batch_put([self.user(1, name="keep"), self.user(2, name="drop")])
        got = cache.batch_get(self.User, [{"id": 1}, {"id": 2}])
        assert [u is not None for u in got] == [True, False]
        # a put of an object whose lifetime is over removes its old entry
        cache.put(self.user(1, name="drop"))
        assert cache.get(self.User, {"id": 1}) is None

    def test_entries_expire(self) -> None:
        if not self.expires:
            pytest.skip("the store does not expire entries")
        long = dt.datetime.now() + dt.timedelta(hours=1)
        cache = self.cache(lifetime=lambda u: self.short_lifetime if u.id == 1 else long)
        cache.batch_put([self.user(1), self.user(2)])
        wait_for(lambda: cache.get(self.User, {"id": 1}) is None)
        assert cache.get(self.User, {"id": 2}) is not None

    def test_a_wrong_lifetime_is_a_config_error(self) -> None:
        if not self.expires:
            pytest.skip("the store does not expire entries")
        with pytest.raises(ConfigError, match="lifetime"):
            self.cache(lifetime="soon")

    # ------------------------------------------------------------ serializers

    def test_json_serializer_keeps_types(self) -> None:
        if not self.serializers:
            pytest.skip("the store has no serializer option")
        cache = self.cache(serializer="json")
        when = dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)
        cache.put(self.user(1, price=Decimal("12.50"), at=when, tags=["a", "b"]))
        got = cache.get(self.User, {"id": 1})
        assert got is not None
        assert (got.price, got.at, got.tags) == (Decimal("12.50"), when, ["a", "b"])
        puppy_cache = self.cache(serializer="json", polymorphic=True)
        puppy_cache.put(self.new(self.Puppy, id=3, name="Rex", license="L-3"))
        assert type(puppy_cache.get(self.Animal, {"id": 3})) is self.Puppy

    def test_a_wrong_serializer_is_a_config_error(self) -> None:
        if not self.serializers:
            pytest.skip("the store has no serializer option")
        with pytest.raises(ConfigError, match="serializer"):
            self.cache(serializer="yaml")

    def test_an_object_the_serializer_cannot_write_is_a_config_error(self) -> None:
        if not self.serializers:
            pytest.skip("the store has no serializer option")
        with pytest.raises(ConfigError, match="cannot cache"):
            self.cache().put(self.user(1, callback=lambda: None))

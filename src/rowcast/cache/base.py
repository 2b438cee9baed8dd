"""The cache contract: one API on every store, and how values are written.

An object is stored under every key its class declares in ``__cache_keys__``
(see `rowcast.cache._keys`) and can be fetched by any of them::

    cache.put(user)                                     # under "id" and ("tenant", "email")
    cache.get(User, {"id": 1})                          # -> a User, or None
    cache.get(User, {"tenant": "acme", "email": "a@acme.test"})
    cache.batch_get(User, [{"id": 1}, {"id": 2}])       # in order, None for a miss
    cache.get_or_load(User, {"id": 1}, lambda: load_user(1))

Promises every store keeps:

* ``get`` returns a copy: mutating it, or the object given to ``put``, never
  changes what is cached.
* ``batch_*`` results come in the order of their arguments.
* ``get_or_load`` runs one loader per key at a time (no stampede; across
  processes on the shared stores), and never leaves a stale entry behind: a
  ``put`` or ``delete`` of the key while the loader runs makes the loaded value
  go uncached (it is still returned). ``batch_get_or_load`` does the same for
  many keys, without waiting for other loaders.
* ``delete`` is idempotent; deleting what is not there is no error.
* ``polymorphic=True`` also stores an object under each ancestor class that
  declares ``__cache_keys__`` in its own body, so ``get(Animal, ...)`` finds a Dog.
  Without it, a loader asked for an Animal that returns a Dog has its Dog
  returned but not cached.
* A driver's error is raised as `rowcast.errors.CacheError` (its cause kept);
  a wrong key or declaration is a `rowcast.errors.ConfigError`.

``lifetime`` (the default for every put) is seconds (int or float), a
`datetime.timedelta`, a `datetime.datetime` to expire at (naive means local
time), None for no expiry, or a function of the object that returns one of
these. An object whose lifetime is already over is not stored (its old entries
are deleted). ``serializer`` is ``"pickle"`` (the default), ``"json"`` or a
`Serializer`.
"""

from __future__ import annotations

import abc
import datetime as dt
import pickle
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar, runtime_checkable

from .. import backends
from ..codec import dumps as json_dumps
from ..codec import loads as json_loads
from ..errors import CacheError, ConfigError
from .follow import Builder, Follower

if TYPE_CHECKING:
    from ..hub import Hub

__all__ = [
    "Cache",
    "JsonSerializer",
    "Lifetime",
    "PickleSerializer",
    "Serializer",
    "open_cache",
    "seconds_left",
    "serializer_of",
]

T = TypeVar("T")
KeyDict: TypeAlias = Mapping[str, Any]
Span: TypeAlias = int | float | dt.timedelta | dt.datetime | None
Lifetime: TypeAlias = Span | Callable[[Any], Span]


def seconds_left(lifetime: Lifetime, obj: object) -> float | None:
    """Seconds until `obj` expires under `lifetime` (None: never; <= 0: already over)."""
    span = lifetime(obj) if callable(lifetime) else lifetime
    if span is None:
        return None
    if isinstance(span, bool):
        raise ConfigError(f"a cache lifetime is seconds, a timedelta or a datetime, not {span!r}")
    if isinstance(span, int | float):
        return float(span)
    if isinstance(span, dt.datetime):
        now = dt.datetime.now(span.tzinfo) if span.tzinfo is not None else dt.datetime.now()
        return (span - now).total_seconds()
    if isinstance(span, dt.timedelta):
        return span.total_seconds()
    raise ConfigError(
        "a cache lifetime is seconds, a timedelta, a datetime, None or a function of the "
        f"object returning one of these, not {span!r}"
    )


# ------------------------------------------------------------------ serializers


@runtime_checkable
class Serializer(Protocol):
    """Turns a cached object into bytes and back; ``loads`` gets the class asked for."""

    name: str

    def dumps(self, obj: object) -> bytes: ...

    def loads(self, data: bytes, cls: type) -> Any: ...


class PickleSerializer:
    """`pickle` at its highest protocol: any picklable object, SQLAlchemy instances too.

    Only read what your own processes wrote: unpickling runs code named by the data.
    """

    name = "pickle"

    def __init__(self, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        self.protocol = protocol

    def dumps(self, obj: object) -> bytes:
        return pickle.dumps(obj, self.protocol)

    def loads(self, data: bytes, cls: type) -> Any:
        return pickle.loads(data)


def _mapped_columns(cls: type) -> list[str] | None:
    """The column attribute names of a SQLAlchemy-mapped class, None if it is not mapped."""
    from sqlalchemy import inspect
    from sqlalchemy.orm import Mapper

    mapper: Any = inspect(cls, raiseerr=False)
    if not isinstance(mapper, Mapper):
        return None
    return [prop.key for prop in mapper.column_attrs]


class JsonSerializer:
    """JSON with rowcast's typed codec (Decimal, datetime, bytes, UUID... come back as such).

    An object is written as its class name and its state: the column attributes of a
    SQLAlchemy-mapped object, else ``vars(obj)`` (or its ``__slots__``). It is read back
    as the class asked for or one of its subclasses, built without calling ``__init__``;
    no other class is ever imported, so cached data cannot run code.
    """

    name = "json"

    def __init__(self) -> None:
        self._columns: dict[type, list[str] | None] = {}
        self._classes: dict[tuple[type, str], type] = {}

    def _state(self, obj: object) -> dict[str, Any]:
        cls = type(obj)
        if cls not in self._columns:
            self._columns[cls] = _mapped_columns(cls)
        columns = self._columns[cls]
        if columns is not None:
            return {name: getattr(obj, name) for name in columns}
        if hasattr(obj, "__dict__"):
            return {k: v for k, v in vars(obj).items() if not k.startswith("_sa_")}
        slots = [s for c in cls.__mro__ for s in getattr(c, "__slots__", ())]
        return {s: getattr(obj, s) for s in slots if s != "__weakref__" and hasattr(obj, s)}

    def dumps(self, obj: object) -> bytes:
        cls = type(obj)
        try:
            text = json_dumps(
                {"class": f"{cls.__module__}.{cls.__qualname__}", "state": self._state(obj)}
            )
        except TypeError as e:
            raise ConfigError(f"cannot cache a {cls.__qualname__} as JSON: {e}") from e
        return text.encode()

    def _class(self, cls: type, name: str) -> type:
        found = self._classes.get((cls, name))
        if found is None:
            todo, seen = [cls], set()
            while todo and found is None:
                c = todo.pop()
                if c in seen:
                    continue
                seen.add(c)
                if f"{c.__module__}.{c.__qualname__}" == name:
                    found = c
                todo.extend(c.__subclasses__())
            if found is None:
                raise CacheError(f"cached JSON holds a {name}, which is not {cls.__qualname__}")
            self._classes[(cls, name)] = found
        return found

    def loads(self, data: bytes, cls: type) -> Any:
        doc = json_loads(data)
        target = self._class(cls, doc["class"])
        state: dict[str, Any] = doc["state"]
        if target not in self._columns:
            self._columns[target] = _mapped_columns(target)
        if self._columns[target] is not None:
            from sqlalchemy import inspect

            obj: Any = inspect(target).class_manager.new_instance()
            for name, value in state.items():
                setattr(obj, name, value)
            return obj
        obj = object.__new__(target)
        for name, value in state.items():
            object.__setattr__(obj, name, value)
        return obj


def serializer_of(serializer: str | Serializer) -> Serializer:
    """``"pickle"``, ``"json"`` or a `Serializer` instance, as a `Serializer`."""
    if serializer == "pickle":
        return PickleSerializer()
    if serializer == "json":
        return JsonSerializer()
    if isinstance(serializer, Serializer) and not isinstance(serializer, str):
        return serializer
    raise ConfigError(
        f"serializer must be 'pickle', 'json' or an object with dumps/loads, not {serializer!r}"
    )


# ------------------------------------------------------------------ the contract


class Cache(abc.ABC):
    """One API over every store; see the module docstring for what it promises."""

    polymorphic: bool = False

    @abc.abstractmethod
    def put(self, obj: object) -> None:
        """Store `obj` under each of its keys (replacing what was there)."""

    @abc.abstractmethod
    def get(self, cls: type[T], keydict: KeyDict) -> T | None:
        """The object of class `cls` under `keydict` (e.g. ``{"id": 1}``), or None."""

    @abc.abstractmethod
    def delete(self, obj: object) -> None:
        """Remove `obj` under each of its keys."""

    @abc.abstractmethod
    def batch_put(self, objs: Iterable[object]) -> None:
        """`put` each object, in as few round trips as the store allows."""

    @abc.abstractmethod
    def batch_get(self, cls: type[T], keydicts: Sequence[KeyDict]) -> list[T | None]:
        """`get` each key dict: results in order, None for a miss."""

    @abc.abstractmethod
    def batch_delete(self, objs: Iterable[object]) -> None:
        """`delete` each object, in as few round trips as the store allows."""

    @abc.abstractmethod
    def get_or_load(
        self, cls: type[T], keydict: KeyDict, loader: Callable[[], T | None]
    ) -> T | None:
        """The cached object, else ``loader()``'s result, cached unless the key was written
        or deleted meanwhile. One loader per key at a time; a None result is not cached.
        A loader's error is raised and nothing is cached."""

    @abc.abstractmethod
    def batch_get_or_load(
        self,
        cls: type[T],
        keydicts: Sequence[KeyDict],
        loader: Callable[[list[KeyDict]], Sequence[T | None]],
    ) -> list[T | None]:
        """`batch_get`, then ``loader(missed key dicts)`` (one result per key dict, in
        order) for the misses, cached as `get_or_load` caches."""

    @abc.abstractmethod
    def _forget(self, rows: Sequence[tuple[type, Mapping[str, Any]]]) -> None:
        """Drop the entries of (class, attribute values) pairs: what a row change stales."""

    @abc.abstractmethod
    def _remember(self, objs: Sequence[object]) -> None:
        """Store objects rebuilt from changed rows (a no-op where the store is the database)."""

    def close(self) -> None:  # noqa: B027 - most stores hold nothing to release
        """Release connections; the cache is not used afterwards. Idempotent."""

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def follow(
        self,
        hub: Hub,
        models: type | Iterable[type] | Mapping[str, type],
        *,
        refresh: bool | Builder = False,
    ) -> Follower:
        """Keep this cache true to the changes published on `hub`; see `rowcast.cache.follow`."""
        return Follower(self, hub, models, refresh=refresh)


def open_cache(url: str, **options: Any) -> Cache:
    """The cache store for `url`: ``memory://``, ``redis://host:6379/0``,
    ``memcached://host:11211``; `options` go to its class."""
    scheme = backends.scheme_of(url) if isinstance(url, str) else ""
    cls = backends.load("cache", str(url), scheme)
    if scheme == "memory":
        cache: Cache = cls(**options)
    else:
        cache = cls(url, **options)
    return cache

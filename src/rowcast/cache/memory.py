"""`MemoryCache`: the in-process store, and the reference for every other.

::

    cache = MemoryCache(maxsize=10_000, lifetime=300)

Entries are kept serialized (pickle by default), so neither the object given
to ``put`` nor one returned by ``get`` shares state with the cache. At most
``maxsize`` entries (an object under two keys is two) are kept; the least
recently used goes first. Expiry is checked on read, on the monotonic clock.
Thread-safe; not shared between processes (use Redis or memcached for that).
"""

from __future__ import annotations

import datetime as dt
import enum
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, TypeAlias, TypeVar

from ..errors import ConfigError
from ._kv import Fill, KeyValueCache, Write
from .base import KeyDict, Lifetime, PickleSerializer, Serializer, seconds_left

__all__ = ["MemoryCache"]

T = TypeVar("T")

_monotonic = time.monotonic
_new = object.__new__
# values that no one can change in place: a shallow copy of a dict of them is a deep one
_ATOMS = frozenset(
    {int, str, float, bool, type(None), bytes, Decimal, uuid.UUID, complex}
    | {dt.datetime, dt.date, dt.time, dt.timedelta, dt.timezone}
)


_Entry: TypeAlias = tuple[bytes, float | None, tuple[type, dict[str, Any]] | None]


class _Snapshot(bytes):
    """A stored value that is a plain object's class and state (a copy), not its pickle:
    what unpickling would give, at a tenth of the cost."""

    cls: type
    state: dict[str, Any]

    def __new__(cls, klass: type, state: dict[str, Any]) -> _Snapshot:
        self = super().__new__(cls, b"v")
        self.cls, self.state = klass, state
        return self


def _plain_state(obj: object) -> dict[str, Any] | None:
    """A copy of `obj`'s ``__dict__`` when pickling it would do no more than copy that;
    None when it holds anything mutable or its class pickles itself in its own way."""
    cls = type(obj)
    if (
        cls.__reduce_ex__ is not object.__reduce_ex__
        or cls.__reduce__ is not object.__reduce__
        or cls.__getstate__ is not object.__getstate__
        or hasattr(cls, "__setstate__")
        or hasattr(cls, "__slots__")
        or hasattr(cls, "__getnewargs_ex__")
        or hasattr(cls, "__getnewargs__")
    ):
        return None
    state = getattr(obj, "__dict__", None)
    if type(state) is not dict:
        return None
    for value in state.values():
        kind = type(value)
        if kind not in _ATOMS and not (
            isinstance(value, enum.Enum) or (kind is tuple and _atoms(value))
        ):
            return None
    return dict(state)


def _atoms(values: tuple[Any, ...]) -> bool:
    return all(type(v) in _ATOMS or (type(v) is tuple and _atoms(v)) for v in values)


class MemoryCache(KeyValueCache):
    """An LRU-bounded, expiring cache in this process (``maxsize=None``: unbounded)."""

    def __init__(
        self,
        maxsize: int | None = 10_000,
        lifetime: Lifetime = None,
        *,
        serializer: str | Serializer = "pickle",
        polymorphic: bool = False,
        lease: float = 30.0,
        namespace: str = "rowcast",
    ) -> None:
        if maxsize is not None and (
            isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1
        ):
            raise ConfigError(f"maxsize must be a positive int or None, not {maxsize!r}")
        super().__init__(
            namespace=namespace,
            serializer=serializer,
            lifetime=lifetime,
            polymorphic=polymorphic,
            lease=lease,
        )
        self.maxsize = maxsize
        # key -> (stored bytes, expiry on the monotonic clock, (class, state) of a _Snapshot)
        self._data: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        # pickling an object of plain values only makes a copy: keep that copy's state
        self._snapshots = isinstance(self.serializer, PickleSerializer)
        self._memo: dict[tuple[Any, ...], str] = {}
        self._memo_limit = 2 * maxsize if maxsize is not None else 100_000

    def __len__(self) -> int:
        """How many entries (keys) are held, expired ones included until read."""
        return len(self._data)

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._data.clear()

    # ------------------------------------------------------------ the hot path

    def _write_of(self, obj: object) -> Write:
        if self._snapshots:
            state = _plain_state(obj)
            if state is not None:
                return (
                    self._keys_of(obj),
                    _Snapshot(type(obj), state),
                    seconds_left(self.lifetime, obj),
                )
        return super()._write_of(obj)

    def _decode(self, raw: bytes | None, cls: type, key: str) -> Any:
        if type(raw) is _Snapshot:
            obj: Any = _new(raw.cls)
            obj.__dict__ = raw.state.copy()
            return obj
        return super()._decode(raw, cls, key)

    def get(self, cls: type[T], keydict: KeyDict) -> T | None:
        # written out: reads take no lock (one OrderedDict call is atomic), keys are memoized
        try:
            ((name, value),) = keydict.items()
            key = self._memo[(cls, name, type(value), value)]
        except (ValueError, KeyError, TypeError, AttributeError):
            key = self._memoize(cls, keydict)
        data = self._data
        entry = data.get(key)
        if entry is None:
            return None
        raw, expires, snapshot = entry
        if expires is not None and expires <= _monotonic():
            with self._lock:  # only this entry: another thread may have written since
                if data.get(key) is entry:
                    del data[key]
            return None
        try:  # noqa: SIM105 - contextlib.suppress costs a tenth of a hit
            data.move_to_end(key)
        except KeyError:  # deleted meanwhile: what we read was live when we read it
            pass
        if snapshot is not None:
            obj: Any = _new(snapshot[0])
            obj.__dict__ = snapshot[1].copy()
            found_copy: T = obj
            return found_copy
        found: T | None = self._decode(raw, cls, key)
        return found

    def _memoize(self, cls: type, keydict: KeyDict) -> str:
        key = self._key(cls, keydict)  # raises when keydict is wrong
        if len(keydict) == 1:
            ((name, value),) = keydict.items()
            if len(self._memo) >= self._memo_limit:
                self._memo.clear()
            self._memo[(cls, name, type(value), value)] = key
        return key

    # ------------------------------------------------------------ raw operations

    def _live(self, key: str, now: float) -> bytes | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        raw, expires, _ = entry
        if expires is not None and expires <= now:
            del self._data[key]
            return None
        return raw

    def _store(self, key: str, raw: bytes, ttl: float | None, now: float) -> None:
        data = self._data
        snapshot = (raw.cls, raw.state) if type(raw) is _Snapshot else None
        data[key] = (raw, None if ttl is None else now + ttl, snapshot)
        data.move_to_end(key)
        if self.maxsize is not None:
            while len(data) > self.maxsize:
                data.popitem(last=False)

    def _get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        now = _monotonic()
        with self._lock:
            found = [self._live(key, now) for key in keys]
            for key, raw in zip(keys, found, strict=True):
                if raw is not None:
                    self._data.move_to_end(key)
        return found

    def _set_many(self, writes: Sequence[Write]) -> None:
        now = _monotonic()
        with self._lock:
            for keys, raw, ttl in writes:
                for key in keys:
                    self._store(key, raw, ttl, now)

    def _delete_many(self, keys: Sequence[str]) -> None:
        with self._lock:
            for key in keys:
                self._data.pop(key, None)

    def _add_leases(self, keys: Sequence[str], lease: bytes, ttl: float) -> list[bool]:
        now = _monotonic()
        added = []
        with self._lock:
            for key in keys:
                free = self._live(key, now) is None
                if free:
                    self._store(key, lease, ttl, now)
                added.append(free)
        return added

    def _fill(self, fills: Sequence[Fill]) -> None:
        now = _monotonic()
        with self._lock:
            for key, lease, others, raw, ttl in fills:
                if self._live(key, now) == lease:
                    self._store(key, raw, ttl, now)
                    for other in others:
                        self._store(other, raw, ttl, now)

    def _release(self, leases: Sequence[tuple[str, bytes]]) -> None:
        now = _monotonic()
        with self._lock:
            for key, lease in leases:
                if self._live(key, now) == lease:
                    del self._data[key]

"""`KeyValueCache`: the Cache API over a store of bytes under string keys.

Memory, Redis and memcached stores implement six small operations on raw
keys (`_get_many`, `_set_many`, `_delete_many`, `_add_leases`, `_fill`,
`_release`); everything else (keys, serialization, lifetimes, loaders) lives
here once.

A stored value is one header byte and a payload: ``b"v"`` + the serialized
object, or ``b"l"`` + a random token for a *lease*. A reader that misses
adds a lease under the key (only if the key is empty), loads, and then
*fills*: writes the value only if its lease is still there, atomically.
A ``put`` overwrites the lease and a ``delete`` (an invalidation) removes
it, so a load that raced with a write is never cached: the classic stale
fill cannot happen. Other readers that find the lease wait for the value
instead of loading too (no stampede); a lease expires after ``lease``
seconds, so a loader that died holds nobody up for longer.
"""

from __future__ import annotations

import abc
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeAlias, TypeVar

from ..errors import ConfigError, RowcastError
from ._keys import class_keys, key_classes
from .base import Cache, KeyDict, Lifetime, Serializer, seconds_left, serializer_of

__all__ = ["KeyValueCache"]

log = logging.getLogger("rowcast.cache")

T = TypeVar("T")
VALUE = b"v"
LEASE = b"l"
_V = VALUE[0]

#: keys, stored bytes, seconds to live (None: no expiry)
Write: TypeAlias = tuple[list[str], bytes, float | None]
#: the leased key, the lease value, the object's other keys, stored bytes, seconds to live
Fill: TypeAlias = tuple[str, bytes, list[str], bytes, float | None]


class KeyValueCache(Cache):
    """A `Cache` over bytes under string keys; subclasses supply the six raw operations.

    ``namespace`` prefixes every key (``"<namespace>:<module>.<Class>|id=i1"``), so
    several applications or test runs can share one server.
    """

    def __init__(
        self,
        *,
        namespace: str = "rowcast",
        serializer: str | Serializer = "pickle",
        lifetime: Lifetime = None,
        polymorphic: bool = False,
        lease: float = 30.0,
    ) -> None:
        if not isinstance(namespace, str) or not namespace or any(c.isspace() for c in namespace):
            raise ConfigError(f"namespace must be a non-empty string without spaces: {namespace!r}")
        if isinstance(lease, bool) or not isinstance(lease, int | float) or not lease > 0:
            raise ConfigError(f"lease must be a positive number of seconds, not {lease!r}")
        if not callable(lifetime):
            seconds_left(lifetime, None)  # a wrong type fails now, not at the first put
        self.namespace = namespace
        self.serializer = serializer_of(serializer)
        self.lifetime = lifetime
        self.polymorphic = bool(polymorphic)
        self.lease = float(lease)
        self._prefix = namespace + ":"

    # ------------------------------------------------------------ raw operations

    @abc.abstractmethod
    def _get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The stored bytes of each key (None when absent), in order."""

    @abc.abstractmethod
    def _set_many(self, writes: Sequence[Write]) -> None:
        """Store each write's bytes under each of its keys, with its expiry."""

    @abc.abstractmethod
    def _delete_many(self, keys: Sequence[str]) -> None:
        """Remove the keys (absent ones are no error)."""

    @abc.abstractmethod
    def _add_leases(self, keys: Sequence[str], lease: bytes, ttl: float) -> list[bool]:
        """Store `lease` under each key that is absent; whether each one was stored."""

    @abc.abstractmethod
    def _fill(self, fills: Sequence[Fill]) -> None:
        """For each fill whose key still holds its lease value, atomically, store the bytes
        under that key (and, where the store can do it in the same atomic step, the other
        keys)."""

    @abc.abstractmethod
    def _release(self, leases: Sequence[tuple[str, bytes]]) -> None:
        """Remove each key that still holds the given lease value."""

    # ------------------------------------------------------------ helpers

    def _key(self, cls: type, keydict: KeyDict) -> str:
        return self._prefix + class_keys(cls).key_of(keydict)

    def _keys_of(self, obj: object) -> list[str]:
        prefix = self._prefix
        return [
            prefix + key
            for ck in key_classes(type(obj), self.polymorphic)
            for key in ck.keys_of_object(obj)
        ]

    def _write_of(self, obj: object) -> Write:
        keys = self._keys_of(obj)
        try:
            data = self.serializer.dumps(obj)
        except RowcastError:
            raise
        except Exception as e:
            raise ConfigError(
                f"cannot cache a {type(obj).__qualname__} with the {self.serializer.name} "
                f"serializer: {e}"
            ) from e
        return keys, VALUE + data, seconds_left(self.lifetime, obj)

    def _decode(self, raw: bytes | None, cls: type, key: str) -> Any:
        if raw is None or raw[0] != _V:
            return None
        try:
            return self.serializer.loads(raw[1:], cls)
        except Exception as e:  # written by another version of the code: a miss
            log.warning("dropping the unreadable cache entry %s: %s", key, e)
            self._delete_many([key])
            return None

    # ------------------------------------------------------------ the API

    def put(self, obj: object) -> None:
        self.batch_put((obj,))

    def batch_put(self, objs: Iterable[object]) -> None:
        writes: list[Write] = []
        expired: list[str] = []
        for obj in objs:
            write = self._write_of(obj)
            if write[2] is not None and write[2] <= 0:
                expired.extend(write[0])
            else:
                writes.append(write)
        if writes:
            self._set_many(writes)
        if expired:
            self._delete_many(expired)

    def get(self, cls: type[T], keydict: KeyDict) -> T | None:
        key = self._key(cls, keydict)
        found: T | None = self._decode(self._get_many((key,))[0], cls, key)
        return found

    def batch_get(self, cls: type[T], keydicts: Sequence[KeyDict]) -> list[T | None]:
        keys = [self._key(cls, kd) for kd in keydicts]
        if not keys:
            return []
        return [
            self._decode(raw, cls, key) for raw, key in zip(self._get_many(keys), keys, strict=True)
        ]

    def delete(self, obj: object) -> None:
        self._delete_many(self._keys_of(obj))

    def batch_delete(self, objs: Iterable[object]) -> None:
        keys = [key for obj in objs for key in self._keys_of(obj)]
        if keys:
            self._delete_many(keys)

    def _forget(self, rows: Sequence[tuple[type, Mapping[str, Any]]]) -> None:
        prefix = self._prefix
        keys = {
            prefix + key
            for cls, attrs in rows
            for ck in key_classes(cls, self.polymorphic)
            for key in ck.keys_of_row(attrs)
        }
        if keys:
            self._delete_many(sorted(keys))

    def _remember(self, objs: Sequence[object]) -> None:
        self.batch_put(objs)

    # ------------------------------------------------------------ loaders

    def get_or_load(
        self, cls: type[T], keydict: KeyDict, loader: Callable[[], T | None]
    ) -> T | None:
        key = self._key(cls, keydict)
        waited_until: float | None = None
        delay = 0.001
        while True:
            raw = self._get_many((key,))[0]
            if raw is not None and raw[0] == _V:
                found: T | None = self._decode(raw, cls, key)
                if found is not None:
                    return found
                raw = None
            if raw is None:
                lease = LEASE + os.urandom(12)
                if self._add_leases((key,), lease, self.lease)[0]:
                    return self._load_one(cls, key, lease, loader)
                continue  # somebody was faster: look again
            # another reader holds the lease: wait for its value
            now = time.monotonic()
            if waited_until is None:
                waited_until = now + self.lease
            elif now >= waited_until:  # its lease should have expired: a store bug
                return loader()
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _load_one(
        self, cls: type, key: str, lease: bytes, loader: Callable[[], T | None]
    ) -> T | None:
        try:
            obj = loader()
        except BaseException:
            self._release([(key, lease)])
            raise
        if obj is None:
            self._release([(key, lease)])
            return None
        try:
            self._fill(self._fills(cls, [(key, lease, obj)]))
        except BaseException:
            self._release([(key, lease)])
            raise
        return obj

    def _fills(self, cls: type, loaded: Iterable[tuple[str, bytes, object]]) -> list[Fill]:
        fills: list[Fill] = []
        for key, lease, obj in loaded:
            keys, data, ttl = self._write_of(obj)
            if key not in keys:
                self._release([(key, lease)])
                if isinstance(obj, cls) and type(obj) is not cls:
                    continue  # a subclass's object, not kept under `cls` unless polymorphic
                raise ConfigError(
                    f"the loader for {key!r} returned a {type(obj).__qualname__} whose keys are "
                    f"{keys}: it must return a {cls.__qualname__} object (or a subclass) whose key "
                    "attributes equal the key dict's values, of the same types"
                )
            if ttl is not None and ttl <= 0:
                self._release([(key, lease)])
                continue
            fills.append((key, lease, [k for k in keys if k != key], data, ttl))
        return fills

    def batch_get_or_load(
        self,
        cls: type[T],
        keydicts: Sequence[KeyDict],
        loader: Callable[[list[KeyDict]], Sequence[T | None]],
    ) -> list[T | None]:
        keys = [self._key(cls, kd) for kd in keydicts]
        if not keys:
            return []
        results: list[T | None] = [
            self._decode(raw, cls, key) for raw, key in zip(self._get_many(keys), keys, strict=True)
        ]
        missed = [i for i, found in enumerate(results) if found is None]
        if not missed:
            return results
        lease = LEASE + os.urandom(12)
        wanted = list(dict.fromkeys(keys[i] for i in missed))
        held = {
            k
            for k, ok in zip(wanted, self._add_leases(wanted, lease, self.lease), strict=True)
            if ok
        }
        try:
            loaded = list(loader([keydicts[i] for i in missed]))
            if len(loaded) != len(missed):
                raise ConfigError(
                    f"a batch loader must return one result per key dict: got {len(loaded)} "
                    f"for {len(missed)}"
                )
        except BaseException:
            self._release([(k, lease) for k in held])
            raise
        to_fill: list[tuple[str, bytes, object]] = []
        for i, obj in zip(missed, loaded, strict=True):
            results[i] = obj
            key = keys[i]
            if key in held:
                held.discard(key)
                if obj is not None:
                    to_fill.append((key, lease, obj))
        try:
            fills = self._fills(cls, to_fill)
            if fills:
                self._fill(fills)
        except BaseException:
            self._release([(key, lease) for key, _, _ in to_fill])
            raise
        finally:
            if held:  # loaded as None: let the next reader try
                self._release([(k, lease) for k in held])
        return results

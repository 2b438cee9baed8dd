"""`ChainedCache`: several stores as one, fastest first.

::

    cache = ChainedCache([MemoryCache(), RedisCache(url), SQLAlchemyCache(Session)])

* Reads go top-down and stop at the first hit; what a lower layer had is
  written back to the layers above it (back-fill). A back-fill is a
  `Cache.get_or_load` on each upper layer whose loader reads the layer below,
  so it has the same guarantees: one loader per key at a time, and a write or
  invalidation that lands meanwhile is never overwritten with the old value.
* Writes go through to every layer, bottom-up: the persistent layer first, so
  a failure there leaves no cache holding what the database refused.
* Deletes go to every layer, bottom-up. Followed changes (`Cache.follow`) are
  applied to every layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from ..errors import ConfigError
from .base import Cache, KeyDict

__all__ = ["ChainedCache"]

T = TypeVar("T")


class ChainedCache(Cache):
    """`layers` (at least one `Cache`), the fastest first."""

    def __init__(self, layers: Sequence[Cache]) -> None:
        layers = list(layers) if isinstance(layers, Iterable) else []
        if not layers or not all(isinstance(layer, Cache) for layer in layers):
            raise ConfigError(
                "ChainedCache needs a list of caches, fastest first, e.g. "
                "[MemoryCache(), RedisCache(url), SQLAlchemyCache(Session)]"
            )
        self.layers: list[Cache] = layers
        self.polymorphic = any(layer.polymorphic for layer in layers)

    def close(self) -> None:
        for layer in self.layers:
            layer.close()

    # ------------------------------------------------------------ writes: bottom-up

    def put(self, obj: object) -> None:
        for layer in reversed(self.layers):
            layer.put(obj)

    def batch_put(self, objs: Iterable[object]) -> None:
        objs = list(objs)
        for layer in reversed(self.layers):
            layer.batch_put(objs)

    def delete(self, obj: object) -> None:
        for layer in reversed(self.layers):
            layer.delete(obj)

    def batch_delete(self, objs: Iterable[object]) -> None:
        objs = list(objs)
        for layer in reversed(self.layers):
            layer.batch_delete(objs)

    def _forget(self, rows: Sequence[tuple[type, Mapping[str, Any]]]) -> None:
        for layer in reversed(self.layers):
            layer._forget(rows)

    def _remember(self, objs: Sequence[object]) -> None:
        for layer in reversed(self.layers):
            layer._remember(objs)

    # ------------------------------------------------------------ reads: top-down

    def get(self, cls: type[T], keydict: KeyDict) -> T | None:
        return self._get(0, cls, keydict, None)

    def get_or_load(
        self, cls: type[T], keydict: KeyDict, loader: Callable[[], T | None]
    ) -> T | None:
        return self._get(0, cls, keydict, loader)

    def _get(
        self, depth: int, cls: type[T], keydict: KeyDict, loader: Callable[[], T | None] | None
    ) -> T | None:
        layer = self.layers[depth]
        if depth == len(self.layers) - 1:
            if loader is None:
                return layer.get(cls, keydict)
            return layer.get_or_load(cls, keydict, loader)
        return layer.get_or_load(cls, keydict, lambda: self._get(depth + 1, cls, keydict, loader))

    def batch_get(self, cls: type[T], keydicts: Sequence[KeyDict]) -> list[T | None]:
        return self._batch(0, cls, list(keydicts), None)

    def batch_get_or_load(
        self,
        cls: type[T],
        keydicts: Sequence[KeyDict],
        loader: Callable[[list[KeyDict]], Sequence[T | None]],
    ) -> list[T | None]:
        return self._batch(0, cls, list(keydicts), loader)

    def _batch(
        self,
        depth: int,
        cls: type[T],
        keydicts: list[KeyDict],
        loader: Callable[[list[KeyDict]], Sequence[T | None]] | None,
    ) -> list[T | None]:
        layer = self.layers[depth]
        if depth == len(self.layers) - 1:
            if loader is None:
                return layer.batch_get(cls, keydicts)
            return layer.batch_get_or_load(cls, keydicts, loader)
        return layer.batch_get_or_load(
            cls, keydicts, lambda missed: self._batch(depth + 1, cls, missed, loader)
        )

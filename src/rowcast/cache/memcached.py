"""`MemcachedCache`: a cache shared by every process that reaches one memcached server.

::

    cache = MemcachedCache("memcached://127.0.0.1:11211", lifetime=300)

Built on pymemcache (``pip install 'rowcast[memcached]'``). ``get_many`` and
``set_many`` are one round trip each; expiry is memcached's own, in whole
seconds (rounded up). Leases are ``add`` and fills ``gets`` / ``cas`` on the
leased key, so a load never overwrites a newer write or an invalidation.
memcached has no multi-key atomic step, so a fill stores the value under the
key that was read only; its other keys are filled by ``put`` or by their own
reads. Keys longer than memcached's 250 bytes are replaced by their SHA-256.
The driver's errors are raised as `CacheError`.
"""

from __future__ import annotations

import hashlib
import math
import socket
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from .._url import masked
from ..backends import missing_extra
from ..errors import CacheError, ConfigError
from ._kv import Fill, KeyValueCache, Write
from .base import Lifetime, Serializer

__all__ = ["MemcachedCache"]

_MONTH = 30 * 24 * 3600  # memcached reads a larger expiry as a Unix time


def _pymemcache() -> Any:
    try:
        from pymemcache import exceptions
        from pymemcache.client.base import PooledClient
    except ImportError as e:  # pragma: no cover - the extra is installed in tests
        raise missing_extra("memcached", "MemcachedCache", e) from e
    return exceptions, PooledClient


def _expire(ttl: float | None) -> int:
    if ttl is None:
        return 0
    seconds = max(1, math.ceil(ttl))
    return seconds if seconds <= _MONTH else int(time.time()) + seconds


class MemcachedCache(KeyValueCache):
    """A cache in the memcached server at `url` (``memcached://host:11211``)."""

    def __init__(
        self,
        url: str,
        *,
        lifetime: Lifetime = None,
        serializer: str | Serializer = "pickle",
        polymorphic: bool = False,
        lease: float = 30.0,
        namespace: str = "rowcast",
        timeout: float = 5.0,
    ) -> None:
        super().__init__(
            namespace=namespace,
            serializer=serializer,
            lifetime=lifetime,
            polymorphic=polymorphic,
            lease=lease,
        )
        exceptions, pooled = _pymemcache()
        parts = urlsplit(url) if isinstance(url, str) else None
        try:
            port = parts.port if parts is not None else None
        except ValueError:
            port = -1
        if parts is None or parts.scheme != "memcached" or not parts.hostname or port == -1:
            raise ConfigError(
                f"MemcachedCache needs a URL like 'memcached://127.0.0.1:11211', not {url!r}"
            )
        self.url = masked(url)
        self.client = pooled(
            (parts.hostname, port or 11211),
            connect_timeout=timeout,
            timeout=timeout,
            no_delay=True,
            allow_unicode_keys=True,
        )
        self._errors = (exceptions.MemcacheError, OSError, socket.timeout)

    def close(self) -> None:
        self.client.close()

    def _failed(self, what: str, error: Exception) -> CacheError:
        return CacheError(f"memcached cache at {self.url}: {what} failed: {error!r}")

    @staticmethod
    def _short(key: str) -> str:
        if len(key) <= 200 or len(key.encode()) <= 250:
            return key
        namespace = key.partition(":")[0]
        return f"{namespace}:#{hashlib.sha256(key.encode()).hexdigest()}"

    def _get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        short = [self._short(k) for k in keys]
        try:
            found = self.client.get_many(short)
        except self._errors as e:
            raise self._failed("get", e) from e
        return [found.get(k) for k in short]

    def _set_many(self, writes: Sequence[Write]) -> None:
        by_expiry: dict[int, dict[str, bytes]] = {}
        for keys, raw, ttl in writes:
            values = by_expiry.setdefault(_expire(ttl), {})
            for key in keys:
                values[self._short(key)] = raw
        try:
            for expire, values in by_expiry.items():
                failed = self.client.set_many(values, expire=expire, noreply=False)
                if failed:
                    raise CacheError(f"memcached cache at {self.url}: not stored: {failed}")
        except self._errors as e:
            raise self._failed("put", e) from e

    def _delete_many(self, keys: Sequence[str]) -> None:
        try:
            self.client.delete_many([self._short(k) for k in keys], noreply=False)
        except self._errors as e:
            raise self._failed("delete", e) from e

    def _add_leases(self, keys: Sequence[str], lease: bytes, ttl: float) -> list[bool]:
        try:
            return [
                bool(self.client.add(self._short(k), lease, expire=_expire(ttl), noreply=False))
                for k in keys
            ]
        except self._errors as e:
            raise self._failed("lease", e) from e

    def _fill(self, fills: Sequence[Fill]) -> None:
        try:
            for key, lease, _others, raw, ttl in fills:
                short = self._short(key)
                value, token = self.client.gets(short)
                if value == lease:  # still ours: swap it for the value, unless it moves now
                    self.client.cas(short, raw, token, expire=_expire(ttl), noreply=False)
        except self._errors as e:
            raise self._failed("fill", e) from e

    def _release(self, leases: Sequence[tuple[str, bytes]]) -> None:
        try:
            for key, lease in leases:
                short = self._short(key)
                if self.client.get(short) == lease:
                    # not atomic, but deleting is always safe: at worst another reader's
                    # fresh lease goes and its value is not cached
                    self.client.delete(short, noreply=False)
        except self._errors as e:
            raise self._failed("release", e) from e

"""`RedisCache`: a cache shared by every process that reaches one Redis server.

::

    cache = RedisCache("redis://127.0.0.1:6379/0", lifetime=300)

Every batch operation is one round trip (``MGET``, one pipeline of ``SET``,
one ``DEL``, one script); expiry is Redis's own (``PX``). Leases are
``SET NX PX`` and fills a Lua compare-and-set, so a load never overwrites a
newer write or an invalidation, whichever process made it. Keys go to one
server (not a Cluster: a fill's keys may span slots). Needs the redis extra
(``pip install 'rowcast[redis]'``); the driver's errors are raised as
`CacheError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._url import masked
from ..backends import missing_extra
from ..errors import CacheError, ConfigError
from ._kv import Fill, KeyValueCache, Write
from .base import Lifetime, Serializer

__all__ = ["RedisCache"]

# KEYS: per fill, the leased key then its other keys. ARGV: per fill, the lease, the value,
# the milliseconds to live (0: none) and how many other keys follow.
_FILL = """
local k, a = 1, 1
while a <= #ARGV do
  local lease, value = ARGV[a], ARGV[a + 1]
  local ttl, others = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local owned = redis.call('GET', KEYS[k]) == lease
  for i = k, k + others do
    if owned then
      if ttl > 0 then redis.call('SET', KEYS[i], value, 'PX', ttl)
      else redis.call('SET', KEYS[i], value) end
    end
  end
  k, a = k + others + 1, a + 4
end
return 1
"""

_RELEASE = """
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i] then redis.call('DEL', KEYS[i]) end
end
return 1
"""


def _redis() -> Any:
    try:
        import redis
    except ImportError as e:  # pragma: no cover - the extra is installed in tests
        raise missing_extra("redis", "RedisCache", e) from e
    return redis


def _ms(ttl: float | None) -> int:
    return 0 if ttl is None else max(1, round(ttl * 1000))


class RedisCache(KeyValueCache):
    """A cache in Redis at `url` (``redis://[:password@]host:6379/db``, ``rediss://`` for
    TLS), or on a ready `client` (a ``redis.Redis`` that returns bytes)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Any = None,
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
        redis = _redis()
        if client is None:
            if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
                raise ConfigError(
                    f"RedisCache needs a URL like 'redis://127.0.0.1:6379/0', not {url!r}"
                )
            try:
                client = redis.Redis.from_url(
                    url, socket_timeout=timeout, socket_connect_timeout=timeout
                )
            except ValueError as e:
                raise ConfigError(f"bad Redis URL {masked(url)!r}: {e}") from e
        self.url = masked(url) if isinstance(url, str) else repr(client)
        self.client = client
        self._errors = (redis.RedisError,)
        self._fill_script = client.register_script(_FILL)
        self._release_script = client.register_script(_RELEASE)

    def close(self) -> None:
        self.client.close()

    def _failed(self, what: str, error: Exception) -> CacheError:
        return CacheError(f"Redis cache at {self.url}: {what} failed: {error}")

    def _get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        try:
            found: list[bytes | None] = self.client.mget(keys)
        except self._errors as e:
            raise self._failed("get", e) from e
        return found

    def _set_many(self, writes: Sequence[Write]) -> None:
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for keys, raw, ttl in writes:
                    for key in keys:
                        pipe.set(key, raw, px=_ms(ttl) or None)
                pipe.execute()
        except self._errors as e:
            raise self._failed("put", e) from e

    def _delete_many(self, keys: Sequence[str]) -> None:
        try:
            self.client.delete(*keys)
        except self._errors as e:
            raise self._failed("delete", e) from e

    def _add_leases(self, keys: Sequence[str], lease: bytes, ttl: float) -> list[bool]:
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.set(key, lease, nx=True, px=_ms(ttl))
                return [bool(ok) for ok in pipe.execute()]
        except self._errors as e:
            raise self._failed("lease", e) from e

    def _fill(self, fills: Sequence[Fill]) -> None:
        keys: list[str] = []
        args: list[Any] = []
        for key, lease, others, raw, ttl in fills:
            keys.append(key)
            keys.extend(others)
            args.extend((lease, raw, _ms(ttl), len(others)))
        try:
            self._fill_script(keys=keys, args=args)
        except self._errors as e:
            raise self._failed("fill", e) from e

    def _release(self, leases: Sequence[tuple[str, bytes]]) -> None:
        if not leases:
            return
        try:
            self._release_script(keys=[k for k, _ in leases], args=[v for _, v in leases])
        except self._errors as e:
            raise self._failed("release", e) from e

"""Write-through cache stores kept true by database change events.

::

    from rowcast.cache import ChainedCache, MemoryCache, RedisCache, SQLAlchemyCache

    cache = ChainedCache([MemoryCache(maxsize=10_000), RedisCache("redis://127.0.0.1:6379/0")])
    cache.put(user)                                   # under every key of User.__cache_keys__
    cache.get(User, {"id": 1})
    cache.follow(hub, User)                           # changed rows lose their entries

The contract is in `rowcast.cache.base`; each store is its own module, and
the Redis and memcached drivers are imported only when such a store is built.
"""

from .base import Cache, JsonSerializer, Lifetime, PickleSerializer, Serializer, open_cache
from .chain import ChainedCache
from .follow import Builder, Follower
from .memcached import MemcachedCache
from .memory import MemoryCache
from .redis import RedisCache
from .sqlalchemy import SQLAlchemyCache

__all__ = [
    "Builder",
    "Cache",
    "ChainedCache",
    "Follower",
    "JsonSerializer",
    "Lifetime",
    "MemcachedCache",
    "MemoryCache",
    "PickleSerializer",
    "RedisCache",
    "SQLAlchemyCache",
    "Serializer",
    "open_cache",
]

"""Every error rowcast raises, in one tree.

::

    RowcastError                 anything rowcast raises on purpose
    ├── ConfigError              bad URL, option, server setting or missing extra:
    │                            the message says exactly what to change
    ├── SourceError              a capture source failed while streaming
    ├── StoreError               the event store refused or failed an operation
    ├── SinkError                a relay sink could not deliver
    └── CacheError               a cache store failed

Driver errors are translated at the backend boundary (``raise X(...) from e``),
so the original error stays reachable as ``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "CacheError",
    "ConfigError",
    "RowcastError",
    "RowcastWarning",
    "SinkError",
    "SourceError",
    "StoreError",
]


class RowcastError(Exception):
    """Base class of every error rowcast raises on purpose."""


class ConfigError(RowcastError, ValueError):
    """A URL, an option, a server setting or an installed extra is wrong or missing."""


class SourceError(RowcastError):
    """A capture source failed while reading changes."""


class StoreError(RowcastError):
    """The event store refused or failed an operation."""


class SinkError(RowcastError):
    """A relay sink could not deliver a transaction."""


class CacheError(RowcastError):
    """A cache store failed."""


class RowcastWarning(UserWarning):
    """Something rowcast could not do and will not do silently (e.g. an uncapturable write)."""

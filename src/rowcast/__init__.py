"""rowcast: event sourcing and event broadcasting for databases.

Every committed row change becomes a `Change`, published on a `Hub`.
"""

from importlib.metadata import PackageNotFoundError, version

from .change import Action, Change
from .errors import (
    CacheError,
    ConfigError,
    RowcastError,
    RowcastWarning,
    SinkError,
    SourceError,
    StoreError,
)
from .hub import Hub

try:
    __version__ = version("rowcast")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "Action",
    "CacheError",
    "Change",
    "ConfigError",
    "Hub",
    "RowcastError",
    "RowcastWarning",
    "SinkError",
    "SourceError",
    "StoreError",
    "__version__",
]

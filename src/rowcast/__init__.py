"""rowcast: event sourcing and event broadcasting for databases.

Every committed row change becomes a `Change`, published on a `Hub`.
"""

from importlib.metadata import PackageNotFoundError as _NotInstalled
from importlib.metadata import version as _version

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
    __version__ = _version("rowcast")
except _NotInstalled:  # pragma: no cover - running from a source tree
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

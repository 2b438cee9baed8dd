"""rowcast: event sourcing and event broadcasting for databases.

Every committed row change becomes a `Change`, published on a `Hub`.
"""

from importlib.metadata import PackageNotFoundError as _NotInstalled
from importlib.metadata import version as _version

from .change import Action, Change
from .checkpoint import Checkpoint, open_checkpoint
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
from .sources import Source, open_source

try:
    __version__ = _version("rowcast")
except _NotInstalled:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "Action",
    "CacheError",
    "Change",
    "Checkpoint",
    "ConfigError",
    "Hub",
    "RowcastError",
    "RowcastWarning",
    "SinkError",
    "Source",
    "SourceError",
    "StoreError",
    "__version__",
    "open_checkpoint",
    "open_source",
]

"""rowcast: event sourcing and event broadcasting for databases.

Every committed row change becomes a `Change`, published on a `Hub`.
"""

from importlib.metadata import PackageNotFoundError as _NotInstalled
from importlib.metadata import version as _version

from .backends import register_backend
from .change import Action, Change
from .checkpoint import Checkpoint, open_checkpoint
from .errors import (
    AuditError,
    CacheError,
    ConfigError,
    DuplicateEventId,
    PermanentSinkError,
    RowcastError,
    RowcastWarning,
    SinkError,
    SourceError,
    StoreError,
    TransientSinkError,
    WrongExpectedVersion,
)
from .hub import Hub
from .sources import Source, open_source
from .store import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    AsyncEventStore,
    EventStore,
    NewEvent,
    RecordedEvent,
    Snapshot,
    StreamInfo,
    Subscription,
    Watch,
)

try:
    __version__ = _version("rowcast")
except _NotInstalled:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "Action",
    "AppendResult",
    "AsyncEventStore",
    "AuditError",
    "CacheError",
    "Change",
    "Checkpoint",
    "ConfigError",
    "DuplicateEventId",
    "EventStore",
    "Hub",
    "NewEvent",
    "PermanentSinkError",
    "RecordedEvent",
    "RowcastError",
    "RowcastWarning",
    "SinkError",
    "Snapshot",
    "Source",
    "SourceError",
    "StoreError",
    "StreamInfo",
    "Subscription",
    "TransientSinkError",
    "Watch",
    "WrongExpectedVersion",
    "__version__",
    "open_checkpoint",
    "open_source",
    "register_backend",
]

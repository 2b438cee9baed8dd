"""The event store: streams of events, one API on every backend.

``EventStore(url)`` opens the backend a URL names (``sqlite:///events.db`` is the
embedded default); `rowcast.store.base` holds the contract and its promises,
`rowcast.store.types` the values that an append takes and a read yields.
"""

from ._watch import Subscription, Watch
from .aio import AsyncEventStore, AsyncSubscription, AsyncWatch
from .base import EventStore
from .types import (
    ALL,
    ANY,
    DEFAULT_URL,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    Snapshot,
    StreamInfo,
    StreamState,
)

__all__ = [
    "ALL",
    "ANY",
    "DEFAULT_URL",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendResult",
    "AsyncEventStore",
    "AsyncSubscription",
    "AsyncWatch",
    "EventStore",
    "ExpectedVersion",
    "NewEvent",
    "RecordedEvent",
    "Snapshot",
    "StreamInfo",
    "StreamState",
    "Subscription",
    "Watch",
]

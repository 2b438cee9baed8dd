"""The event store: streams of events, one API on every backend.

``EventStore(url)`` opens the backend a URL names (``sqlite:///events.db`` is the
embedded default); `rowcast.store.base` holds the contract and its promises.
"""

from .aio import AsyncEventStore, AsyncSubscription, AsyncWatch
from .base import (
    ALL,
    ANY,
    DEFAULT_URL,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    EventStore,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    Snapshot,
    StreamState,
    Subscription,
    Watch,
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
    "StreamState",
    "Subscription",
    "Watch",
]

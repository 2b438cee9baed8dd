"""`MemoryBrokerSink`: changes published to an in-process broker (``memory://<name>?mode=broker``).

The sink side of `rowcast.consume.memory`: a relay in this process delivers to the
broker called ``<name>``, and ``open_consumer("memory://<name>", ...)`` reads it back,
with no server. ``mode=broker`` tells it from plain ``memory://``, the in-memory event
store (`rowcast.sinks.store.StoreSink`).

Each change is one message: the change id (`rowcast.sinks.base.change_id`) and body
``Change.to_json()``, in commit order. `deliver` returns once the broker holds the
batch; a re-delivered batch is published again, with the same ids (the consumer
skips them). A stopped broker (`MemoryBroker.stop`) is a `TransientSinkError`, a
closed sink a `PermanentSinkError`.
"""

from __future__ import annotations

from typing import Any

from .._url import masked
from ..consume.memory import broker, broker_name
from ..errors import ConfigError, PermanentSinkError, TransientSinkError
from .base import Batch, encoded

__all__ = ["MemoryBrokerSink"]


class MemoryBrokerSink:
    """Publishes each change to the in-process broker named by `url` (module docstring)."""

    def __init__(self, url: str, **options: Any) -> None:
        if options:
            raise ConfigError(f"the memory broker sink takes no options, not {sorted(options)}")
        self.url = masked(url)
        self.name = broker_name(url, "the memory broker sink")
        self._closed = False

    def __repr__(self) -> str:
        return f"<MemoryBrokerSink {self.url!r}{' closed' if self._closed else ''}>"

    def check(self) -> None:
        """The broker is running (it is made on first use); `TransientSinkError` if stopped."""
        if self._closed:
            raise PermanentSinkError(f"memory broker sink {self.url} is closed")
        try:
            broker(self.name).publish([])
        except ConnectionError as e:
            raise TransientSinkError(f"memory broker sink {self.url}: {e}") from e

    def deliver(self, batch: Batch) -> None:
        """Publish every change of `batch`, in commit order."""
        if self._closed:
            raise PermanentSinkError(f"memory broker sink {self.url} is closed")
        messages = [(change_id, body) for change_id, _, body in encoded(batch)]
        if not messages:
            return
        try:
            broker(self.name).publish(messages)
        except ConnectionError as e:
            raise TransientSinkError(f"memory broker sink {self.url}: {e}") from e

    def close(self) -> None:
        """Nothing to release; later deliveries are refused. Idempotent."""
        self._closed = True

"""Backends written outside rowcast, as an application would: registered by test_backends."""

from __future__ import annotations

import json
import threading
from typing import Any, ClassVar

from rowcast.checkpoint import BaseCheckpoint
from rowcast.errors import ConfigError
from rowcast.sinks.base import Batch, encoded
from rowcast.store.memory import MemoryEventStore


class LabelledStore(MemoryEventStore):
    """The memory store under a scheme of its own: ``labelled://<label>``."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__("memory://", **options)
        self.url = url
        self.label = url.split("://", 1)[1]


class ListSink:
    """Keeps the id and body of every change it is given, in `delivered`."""

    def __init__(self, url: str, **options: Any) -> None:
        self.url = url
        self.options = options
        self.delivered: list[tuple[str, str]] = []
        self.closed = False

    def deliver(self, batch: Batch) -> None:
        self.delivered += [(e.id, e.body) for e in encoded(batch)]

    def close(self) -> None:
        self.closed = True


class TeeSink(ListSink):
    """A ListSink registered for ``?mode=tee``."""


class DictCheckpoint(BaseCheckpoint):
    """Positions in a dict of this process, per ``dict://<space>`` and name."""

    saved: ClassVar[dict[tuple[str, str], str]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, url: str, name: str = "default") -> None:
        super().__init__(url, name)
        self.space = url.split("://", 1)[1].partition("?")[0]
        if not self.space:
            raise ConfigError(f"{url}: name a space, e.g. dict://relays")

    def _load(self) -> str | None:
        with self._lock:
            return self.saved.get((self.space, self.name))

    def _save(self, position: str) -> None:
        with self._lock:
            self.saved[self.space, self.name] = position

    # reports (`rowcast.checkpoint.report`): what `rowcast status` reads back
    reports: ClassVar[dict[tuple[str, str], str]] = {}

    def _save_report(self, text: str) -> None:
        with self._lock:
            self.reports[self.space, self.name] = text

    @classmethod
    def read_reports(cls, url: str, name: str | None = None) -> list[dict[str, Any]]:
        space = url.split("://", 1)[1].partition("?")[0]
        with cls._lock:
            texts = [t for (s, n), t in cls.reports.items() if s == space and name in (None, n)]
        return [json.loads(text) for text in texts]

"""StoreSink under the sink contract: the in-memory event store and a SQLite file, no server."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from rowcast.change import Change
from rowcast.sinks import open_sink
from rowcast.sinks.store import StoreSink
from rowcast.testing.sink import SinkContract

BAD_URLS = [
    ("memory://events", "a memory store URL is just 'memory://'"),
    ("sqlite:///x.db?synchronous=sometimes", "synchronous"),
]


class _StoreContract(SinkContract):
    deduplicates = True  # the store recognises the ids it holds
    order = "row"  # a stream per row; a batch is appended one stream at a time
    bad_urls = BAD_URLS

    sink: StoreSink

    def read_back(self) -> list[tuple[uuid.UUID, Change]]:
        return [(event.id, Change(**event.data)) for event in self.sink.store.read_all()]

    def failing_sink(self) -> StoreSink:
        sink = self.make_sink()
        sink.store.close()  # a store that is gone: closed, as a full disk or a lost file
        return sink


class TestMemoryStore(_StoreContract):
    def make_sink(self) -> StoreSink:
        sink = open_sink("memory://")
        assert isinstance(sink, StoreSink)
        return sink


class TestSQLiteStore(_StoreContract):
    @pytest.fixture
    def destination(self, tmp_path: Path) -> None:
        self.url = f"sqlite:///{tmp_path / 'events.db'}"

    def make_sink(self) -> StoreSink:
        sink = open_sink(self.url)
        assert isinstance(sink, StoreSink)
        return sink

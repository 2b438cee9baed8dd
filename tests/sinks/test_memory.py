"""MemoryBrokerSink (``memory://<name>?mode=broker``) under the sink contract, no server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from rowcast.change import Change
from rowcast.consume.memory import broker, remove_broker
from rowcast.sinks import open_sink
from rowcast.sinks.base import Sink
from rowcast.sinks.memory import MemoryBrokerSink
from rowcast.testing.sink import SinkContract


class TestMemoryBrokerSink(SinkContract):
    deduplicates = False  # a re-published change is kept again; consumers skip its id
    order = "total"  # one log per broker
    bad_urls = [
        ("memory://orders?mode=broker&mode=broker", "given twice"),
        ("memory://orders?mode=broker&maxlen=5", "unknown option 'maxlen'"),
        ("memory://?mode=broker", "names its broker"),
        ("memory://a/b?mode=broker", "names its broker"),
    ]

    @pytest.fixture
    def destination(self) -> Iterator[None]:
        self.name = f"sinks-test-{uuid.uuid4().hex[:10]}"
        yield
        remove_broker(self.name)
        remove_broker(f"{self.name}-down")

    def make_sink(self) -> Sink:
        sink = open_sink(f"memory://{self.name}?mode=broker")
        assert isinstance(sink, MemoryBrokerSink)
        return sink

    def read_back(self) -> list[tuple[uuid.UUID, Change]]:
        return [
            (uuid.UUID(message.id), Change.from_json(message.body))
            for message in broker(self.name).messages()
        ]

    def unreachable_url(self) -> str:
        down = f"{self.name}-down"
        broker(down).stop()
        return f"memory://{down}?mode=broker"

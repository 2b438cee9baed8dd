"""StdoutSink under the sink contract: what it printed on standard output, read back."""

from __future__ import annotations

import io
import json
import uuid

import pytest

from rowcast.change import Change
from rowcast.sinks import open_sink
from rowcast.sinks.base import Sink
from rowcast.sinks.stdout import StdoutSink
from rowcast.testing.sink import SinkContract


class TestStdoutSink(SinkContract):
    deduplicates = False  # a re-delivered batch is printed again, with its ids
    order = "total"  # one line per change, in commit order

    @pytest.fixture
    def destination(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.printed = ""

    def make_sink(self) -> Sink:
        return open_sink("-")  # writes to sys.stdout as it is at delivery: pytest's capture

    def read_back(self) -> list[tuple[uuid.UUID, Change]]:
        self.printed += self.capsys.readouterr().out
        arrived = []
        for line in self.printed.split("\n")[:-1]:  # JSON lines: not str.splitlines's U+2028
            fields = json.loads(line)
            change_id = uuid.UUID(fields.pop("id"))
            arrived.append((change_id, Change.from_dict(fields)))
        return arrived

    def failing_sink(self) -> Sink:
        closed = io.StringIO()
        closed.close()
        return StdoutSink(stream=closed)

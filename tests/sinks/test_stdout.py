"""StdoutSink under the sink contract: what it printed on standard output, read back."""

from __future__ import annotations

import contextlib
import io
import json
import uuid

import pytest

from rowcast.change import Change
from rowcast.errors import PermanentSinkError, TransientSinkError
from rowcast.sinks import open_sink
from rowcast.sinks.base import Sink, change_id
from rowcast.sinks.stdout import StdoutSink
from rowcast.testing.sink import SinkContract, transactions


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


def test_a_closed_stream_is_permanent_and_a_full_disk_transient() -> None:
    closed = io.StringIO()
    closed.close()
    with pytest.raises(PermanentSinkError, match="closed"):
        StdoutSink(stream=closed).deliver(transactions(1))
    with open("/dev/full", "w") as full:  # every write: ENOSPC
        with pytest.raises(TransientSinkError, match="No space left"):
            StdoutSink(stream=full).deliver(transactions(1))
        with contextlib.suppress(OSError):
            full.close()


def test_dead_letters_are_lines_with_the_error_after_the_id() -> None:
    out = io.StringIO()
    sink = StdoutSink(stream=out)
    sink.check()  # nothing to check
    batch = transactions(1, per_transaction=2)
    why = {"sink": "amqp://h/%2F", "error": "no queue is bound", "fix": None}
    sink.dead_letter(batch, why)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [list(line)[:2] for line in lines] == [["id", "dead_letter"]] * 2
    assert [line.pop("dead_letter") for line in lines] == [why, why]
    assert [uuid.UUID(line.pop("id")) for line in lines] == [
        change_id(c, i) for i, c in enumerate(batch[0])
    ]
    assert [Change.from_dict(line) for line in lines] == batch[0]

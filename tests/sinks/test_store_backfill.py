"""StoreSink and a backfill's rows: ``Change(snapshot=True)`` writes beside the stream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rowcast.change import Change
from rowcast.sinks import open_sink
from rowcast.sinks.store import StoreSink, stream_name


@pytest.fixture(params=["memory", "sqlite"])
def sink(request: pytest.FixtureRequest, tmp_path: Path) -> StoreSink:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'events.db'}"
    made = open_sink(url)
    assert isinstance(made, StoreSink)
    return made


def update(n: int, pk: int, old: int, new: int) -> Change:
    """Transaction `n`'s update of row `pk`'s qty from `old` to `new`."""
    before, after = {"id": pk, "qty": old}, {"id": pk, "qty": new}
    return Change("update", "shop", "orders", pk, before, after, n, f"t{n}", f"bin.1:{n}", "mysql")


def read(n: int, pk: int, qty: int) -> Change:
    """Row `pk` as a backfill read it, handed out with transaction `n`."""
    after = {"id": pk, "qty": qty}
    return Change(
        "write", "shop", "orders", pk, None, after, n, "backfill:1", f"bin.1:{n}", "mysql", True
    )


def history(sink: StoreSink, pk: int) -> list[tuple[bool, Any]]:
    stream = stream_name(read(0, pk, 0))
    return [
        (bool(event.data.get("snapshot")), Change(**event.data).after["qty"])  # type: ignore[index]
        for event in sink.store.read(stream)
    ]


def test_a_backfilled_row_is_an_event_in_its_row_stream(sink: StoreSink) -> None:
    sink.deliver([[update(1, 7, 1, 2)]])
    # the chunk goes out with the transaction of its high watermark, after that one's changes
    sink.deliver([[update(2, 8, 5, 6), read(2, 7, 2), read(2, 8, 6), read(2, 9, 4)]])
    sink.deliver([[update(3, 7, 2, 3)]])
    assert history(sink, 7) == [(False, 2), (True, 2), (False, 3)]  # not taken for a re-delivery
    assert history(sink, 8) == [(False, 6), (True, 6)]
    assert history(sink, 9) == [(True, 4)]
    event = next(sink.store.read(stream_name(read(0, 9, 0))))
    assert Change(**event.data) == read(2, 9, 4)  # the flag and every field survive
    sink.close()


def test_a_relay_resumed_before_a_chunk_reads_it_again_without_a_clash(sink: StoreSink) -> None:
    """A relay killed after the store took a chunk, before its checkpoint: the chunk's rows
    stay stored, and the relay resumed from the checkpoint re-delivers the log around them
    (without that chunk: it is read again, with new watermarks, later in the log)."""
    first = [[update(1, 7, 1, 2)], [update(2, 8, 5, 6), read(2, 7, 2)], [update(3, 7, 2, 3)]]
    sink.deliver(first)
    # resumed from before transaction 1: the log again, then the chunk read again at 4
    sink.deliver([[update(1, 7, 1, 2)], [update(2, 8, 5, 6)], [update(3, 7, 2, 3)]])
    sink.deliver([[update(3, 7, 2, 3)], [update(4, 9, 0, 1), read(4, 7, 3)]])
    assert history(sink, 7) == [(False, 2), (True, 2), (False, 3), (True, 3)]
    assert history(sink, 8) == [(False, 6)]
    sink.close()

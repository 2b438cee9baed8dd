"""OpenTelemetry spans (``rowcast[otel]``): a change followed by its id from the capture, through
the relay's delivery, to the consumer's handler (SQLite source, the in-process broker)."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rowcast import Change
from rowcast.checkpoint import open_checkpoint
from rowcast.consume import open_consumer
from rowcast.relay import Relay
from rowcast.sinks import open_sink
from rowcast.sources import open_source
from tests.conftest import wait_for

trace = pytest.importorskip("opentelemetry.trace")
sdk = pytest.importorskip("opentelemetry.sdk.trace")
export = pytest.importorskip("opentelemetry.sdk.trace.export")
in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")


@pytest.fixture(scope="module")
def spans() -> Iterator[Any]:
    """Every span rowcast ends, kept in memory (the process's one tracer provider)."""
    exporter = in_memory.InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, sdk.TracerProvider):
        provider = sdk.TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


def test_a_change_is_followed_from_capture_to_the_handler(spans: Any, tmp_path: Path) -> None:
    app = tmp_path / "app.db"
    with sqlite3.connect(app) as db:
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total INT)")
    checkpoint = open_checkpoint(str(tmp_path / "pos"))
    source = open_source(f"sqlite:///{app}", checkpoint=checkpoint, start="now")
    broker = f"trace-{uuid.uuid4().hex[:8]}"
    relay = Relay(source, [open_sink(f"memory://{broker}?mode=broker")], checkpoint)
    handled: list[Change] = []
    consumer = open_consumer(f"memory://{broker}", handled.extend, group="trace")
    threads = [threading.Thread(target=relay.run), threading.Thread(target=consumer.run)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: relay.stats.state == "running")
        with sqlite3.connect(app) as db:
            db.execute("INSERT INTO orders VALUES (7, 100)")
        wait_for(lambda: len(handled) == 1)
    finally:
        relay.stop()
        consumer.stop()
        for thread in threads:
            thread.join(30)
        checkpoint.close()
    by_name: dict[str, list[Any]] = {}
    for span in spans.get_finished_spans():
        by_name.setdefault(span.name, []).append(span)
    (capture,) = [
        s for s in by_name["rowcast.capture"] if s.attributes["rowcast.source"] == "sqlite"
    ]
    (change_id,) = capture.attributes["rowcast.change_ids"]
    assert capture.attributes["rowcast.changes"] == 1
    assert capture.attributes["rowcast.position"] == handled[0].position
    (deliver,) = [
        s for s in by_name["rowcast.deliver"] if change_id in s.attributes["rowcast.change_ids"]
    ]
    assert deliver.attributes["rowcast.sinks"] == (f"memory://{broker}?mode=broker",)
    (handle,) = [
        s for s in by_name["rowcast.handle"] if change_id in s.attributes["rowcast.change_ids"]
    ]
    assert handle.attributes["rowcast.positions"] == (handled[0].position,)
    assert capture.start_time <= deliver.start_time <= handle.start_time

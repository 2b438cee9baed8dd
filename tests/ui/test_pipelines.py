"""The Pipelines page: the reports of relays and consumers (`rowcast status`), sampled into
an hour of lag and rate, refreshed while open; a store that cannot be read says why,
without its password."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from rowcast.checkpoint import open_checkpoint
from rowcast.store import EventStore
from rowcast.ui import ConsoleConfig
from rowcast.ui.pipelines import Sampler, chart

from .conftest import served

pytest.importorskip("rowcast.status", reason="rowcast status (issue 21) is not in this rowcast")


def _report(state: str, lag: float, **more: Any) -> dict[str, Any]:
    return {
        "format": 1,
        "kind": "relay",
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "source": "postgresql://app:***@db/app",
        "slot": None,
        "sinks": ["redis://127.0.0.1:6379/0"],
        "state": state,
        "stalled": False,
        "position": "0/16B3748",
        "lag_seconds": lag,
        "rate": 12.5,
        "changes": 1200,
        "errors": 0,
        "last_error": None,
        "started_at": time.time() - 60,
        "reported_at": time.time(),
        "interval": 5,
        **more,
    }


def test_the_sampler_keeps_each_pipelines_lag_and_rate(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/checkpoints.db"
    checkpoint = open_checkpoint(url, name="orders-relay")
    sampler = Sampler([url])
    for lag in (0.5, 3.0):
        checkpoint.save_report(_report("running", lag))
        sampler.sample()
    checkpoint.close()
    entries, error, _ = sampler.snapshot()
    assert error is None
    (entry,) = entries
    assert (entry["name"], entry["state"]) == ("orders-relay", "running")
    history = sampler.history(entry)
    assert [lag for _, lag, _ in history] == pytest.approx([0.5, 3.0], abs=1)  # plus its age
    lag = chart(history, 1)
    assert len(lag.points.split()) == 2
    assert lag.top == history[1][1]


def test_the_page_shows_each_pipeline_and_its_problems(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/checkpoints.db"
    for name, report in [
        ("orders-relay", _report("running", 0.2)),
        ("audit-relay", _report("failed", 9.0, last_error="redis: connection refused")),
    ]:
        checkpoint = open_checkpoint(url, name=name)
        checkpoint.save_report(report)
        checkpoint.close()
    store = f"sqlite:///{tmp_path}/events.db"
    EventStore(store).close()
    config = ConsoleConfig(store=store, checkpoints=[url], status_interval=0.1)
    with served(config) as base, httpx.Client(base_url=base) as client:
        deadline = time.monotonic() + 10
        while "orders-relay" not in (page := client.get("/pipelines").text):
            assert time.monotonic() < deadline, page
            time.sleep(0.05)
    assert 'class="badge running"' in page
    assert 'class="badge failed"' in page
    assert "redis: connection refused" in page
    assert "<polyline" in page
    assert 'hx-trigger="every' in page  # refreshed while open


@pytest.mark.server
def test_a_store_that_cannot_be_read_is_named_without_its_password(tmp_path: Path) -> None:
    secret = "pw-never-shown-42"
    checkpoints = f"postgresql://nobody_ui:{secret}@127.0.0.1:5432/test"  # no such role
    store = f"sqlite:///{tmp_path}/events.db"
    EventStore(store).close()
    config = ConsoleConfig(store=store, checkpoints=[checkpoints], status_interval=0.1)
    with served(config) as base, httpx.Client(base_url=base) as client:
        deadline = time.monotonic() + 10
        while "cannot read the reports" not in (page := client.get("/pipelines").text):
            assert time.monotonic() < deadline, page
            time.sleep(0.05)
    assert secret not in page
    assert "postgresql://nobody_ui:***@127.0.0.1:5432/test" in page

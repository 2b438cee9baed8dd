"""Helpers of the console's tests: stores holding captured rows, a console served for real."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from rowcast import Change
from rowcast.sinks.store import stream_name
from rowcast.store import EventStore, NewEvent
from rowcast.ui import ConsoleConfig, create_app

FIELDS = [f.name for f in dataclasses.fields(Change) if f.name != "snapshot"]


def keep(store: EventStore, change: Change) -> None:
    """Append `change` as the store sink would (its stream, type and fields)."""
    data = {name: getattr(change, name) for name in FIELDS}
    store.append(stream_name(change), [NewEvent(change.name, data)])


def product_changes(pk: int = 1, ts: float = 1_767_600_000.0) -> list[Change]:
    """A product row written, updated twice (price, then stock) and deleted."""
    first = {"id": pk, "name": "pen", "price_cents": 150, "stock": 10}
    second = {**first, "price_cents": 135}
    third = {**second, "stock": 8}
    return [
        Change("write", "shop", "product", pk, None, first, ts, "t1", None, "sqlalchemy"),
        Change("update", "shop", "product", pk, first, second, ts + 60, "t2", None, "sqlalchemy"),
        Change("update", "shop", "product", pk, second, third, ts + 120, "t3", None, "sqlalchemy"),
        Change("delete", "shop", "product", pk, third, None, ts + 180, "t4", None, "sqlalchemy"),
    ]


@contextlib.contextmanager
def served(config: ConsoleConfig, root_path: str = "") -> Iterator[str]:
    """The console of `config` served by uvicorn in a thread; its base URL.

    With `root_path`, as behind a proxy that serves it under that path and strips it:
    requests go to the base URL without it, and its pages link under it.
    """
    app = create_app(config)
    sock = socket.socket()
    sock.bind((config.host, 0))
    sock.listen(64)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            root_path=root_path,
            timeout_graceful_shutdown=1,
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "the console did not start"
        assert time.monotonic() < deadline, "the console did not start within 20 s"
        time.sleep(0.02)
    try:
        yield f"http://{config.host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def config(store: str, **options: Any) -> ConsoleConfig:
    return ConsoleConfig(store=store, **options)

"""What the mixins of `EventStoreContract` share: its hooks, fixture and helpers."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from typing import Any

import pytest

from rowcast.errors import WrongExpectedVersion
from rowcast.store import EventStore, NewEvent, RecordedEvent

__all__ = [
    "RICH_DATA",
    "WAIT",
    "Background",
    "StoreContractBase",
    "append_in_process",
    "append_with_retries",
    "events",
    "in_streams",
]

WAIT = 20.0  # seconds: a bound that a test never reaches unless it is broken

RICH_DATA: Any = {
    "price": Decimal("12.50"),
    "at": dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC),
    "day": dt.date(2024, 5, 1),
    "blob": b"\x00\xffrowcast",
    "ref": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "pk": (1, "a"),
    "tags": {"x", "y"},
    "text": "é ü 中文 🚀 \t ' \" \\ \x00",
    "nested": [{"$ref": 1}, None, True, 1.5, -(2**70)],
}


def events(count: int, type: str = "happened", start: int = 0) -> list[NewEvent]:
    """`count` events of `type` whose data is ``{"n": start + i}``."""
    return [NewEvent(type, {"n": start + i}) for i in range(count)]


def append_with_retries(store: EventStore, stream: str, count: int, worker: int) -> None:
    """Append `count` single events, each with the expected version read just before."""
    for n in range(count):
        event = NewEvent("counted", {"worker": worker, "n": n})
        while True:
            try:
                store.append(stream, [event], expected_version=store.stream_version(stream))
                break
            except WrongExpectedVersion:
                continue


def append_in_process(url: str, stream: str, count: int, worker: int) -> None:
    """Runs in a spawned process: open the store at `url` and append there."""
    with EventStore(url) as store:
        append_with_retries(store, stream, count, worker)


def in_streams(watch: Iterable[RecordedEvent], *streams: str) -> Iterator[RecordedEvent]:
    """The events of `watch` in `streams` (a backend on a shared server has others too)."""
    return (e for e in watch if e.stream in streams)


class Background:
    """Runs `target` in a thread; `result()` joins it and re-raises what it raised."""

    def __init__(self, target: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: BaseException | None = None

        def main() -> None:
            try:
                self.value = target()
            except BaseException as e:  # handed to the test's thread by result()
                self.error = e

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()

    def blocked(self, seconds: float = 0.2) -> bool:
        """Whether the thread is still running after `seconds` (it should be blocked)."""
        self.thread.join(seconds)
        return self.thread.is_alive()

    def result(self, seconds: float = WAIT) -> Any:
        self.thread.join(seconds)
        assert not self.thread.is_alive(), "the thread did not end"
        if self.error is not None:
            raise self.error
        return self.value


class StoreContractBase:
    """The hooks a backend overrides and the fixture every mixin of the suite uses."""

    store: EventStore

    def make_store(self) -> EventStore:
        """Open a store of the backend under test."""
        raise NotImplementedError

    def shared_url(self) -> str | None:
        """A URL that opens the same data as `make_store`, from here or another process.

        None (the default) when the data lives in one instance only, as in
        memory: the tests that need a second instance or process then skip.
        """
        return None

    @pytest.fixture(autouse=True)
    def _store(self) -> Iterator[None]:
        self._opened: list[EventStore] = []
        self.store = self.open_store()
        yield
        for store in self._opened:
            store.close()

    def open_store(self) -> EventStore:
        """Another instance of the backend (`make_store`), closed at teardown."""
        store = self.make_store()
        self._opened.append(store)
        return store

    def require_shared_url(self) -> str:
        url = self.shared_url()
        if url is None:
            pytest.skip("this backend's data lives in one instance only")
        return url

    @staticmethod
    def stream() -> str:
        """A stream name no other test uses."""
        return f"test.stream-{uuid.uuid4().hex}"

    @staticmethod
    def subscription() -> str:
        """A subscription name no other test uses."""
        return f"test.subscription-{uuid.uuid4().hex}"

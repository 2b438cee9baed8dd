"""`AsyncEventStore`: the event store for asyncio, the twin of `rowcast.store.EventStore`.

The same methods and the same promises (see `rowcast.store.base`), as
coroutines, with ``read`` / ``read_all`` / ``watch`` as async iterators and
``aclose`` for ``close``::

    async with AsyncEventStore("sqlite:///events.db") as store:
        await store.append("order-1", [NewEvent("placed", {"total": 3})])
        async for event in store.read("order-1"):
            ...

How it works: every store owns one sync `EventStore` of the backend its URL
names and one private worker thread. Each call runs there in turn (so calls
keep the order they were made in, and the loop never waits on the database);
reads cross over in pages of `PAGE` events, so a long stream never holds the
loop. Opening the backend is the first job of that thread: ``AsyncEventStore(url)``
does no I/O, and a bad URL raises at ``async with`` or at the first call.

Watches and subscriptions block while they wait for new events, so each runs
on a thread of its own (a daemon thread: a forgotten one never keeps the
process from exiting). `AsyncWatch.aclose`, `AsyncEventStore.aclose` and the
cancellation of the task waiting on them close the sync watch, which frees the
thread at once.

Cancelling a task that awaits ``append`` does not undo the append: the thread
finishes it. Retry with the same `NewEvent` objects (same ids) to learn where
it went: appends are idempotent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from functools import partial
from itertools import islice
from typing import Any, Final, Self, TypeVar, cast

from ..errors import StoreError
from ._checks import check_count, check_stream
from ._watch import Subscription, Watch
from .base import EventStore
from .types import (
    ALL,
    ANY,
    DEFAULT_URL,
    AppendResult,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    Snapshot,
    StreamInfo,
)

__all__ = ["PAGE", "AsyncEventStore", "AsyncSubscription", "AsyncWatch", "Handler"]

PAGE: Final = 1000  #: events fetched per hop to the worker thread while reading

_T = TypeVar("_T")

#: A subscription handler: a function or a coroutine function taking one event.
Handler = Callable[[RecordedEvent], Awaitable[object] | object]


class _Worker:
    """One daemon thread running submitted calls in order (for calls that may block long)."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[
            tuple[Callable[[], Any], concurrent.futures.Future[Any]] | None
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        while (job := self._jobs.get()) is not None:
            call, future = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(call())
                except BaseException as e:  # handed to the awaiting task
                    future.set_exception(e)

    async def run(self, call: Callable[[], _T]) -> _T:
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()
        self._jobs.put((call, future))
        return await asyncio.wrap_future(future)

    def stop(self) -> None:
        """End the thread once the current call returns."""
        self._jobs.put(None)


def _next_or_none(watch: Watch) -> RecordedEvent | None:
    # StopIteration cannot cross a future; None says the watch ended
    return next(watch, None)


# ---------------------------------------------------------------- watches


class AsyncWatch:
    """New events as they are appended: an async iterator over a sync watch.

    Made by `AsyncEventStore.watch`. Iteration ends after `aclose` (from any
    task), when its store closes, or after `timeout` idle seconds if one was
    given. Cancelling the task that waits in ``async for`` closes the watch.
    Use ``async with`` (or `aclose`) to release it early.
    """

    def __init__(self, store: AsyncEventStore, opening: concurrent.futures.Future[Watch]):
        self._store = store
        self._opening = opening
        self._watch: Watch | None = None
        self._worker: _Worker | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> RecordedEvent:
        if self._closed or (self._watch is None and not await self._open()):
            raise StopAsyncIteration
        watch, worker = cast(Watch, self._watch), cast(_Worker, self._worker)
        try:
            event = await worker.run(partial(_next_or_none, watch))
        except asyncio.CancelledError:
            self._close_sync()
            raise
        if event is None:
            self._close_sync()
            raise StopAsyncIteration
        return event

    async def _open(self) -> bool:
        """Wait for the sync watch (opened on the store's thread); False: closed meanwhile."""
        try:
            self._watch = await asyncio.wrap_future(self._opening)
        except asyncio.CancelledError:
            self._opening.add_done_callback(_close_opened)
            self._finish()
            raise
        if self._closed:  # closed while it opened
            self._watch.close()
            return False
        self._worker = _Worker("rowcast-watch")
        return True

    def _close_sync(self) -> None:
        if self._watch is not None:
            self._watch.close()  # safe from any thread; unblocks the worker
        self._finish()

    def _finish(self) -> None:
        self._closed = True
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        self._store._watches.discard(self)

    async def aclose(self) -> None:
        """Stop watching; idempotent, and safe while another task waits in ``async for``."""
        if self._watch is None:  # still opening, or never iterated
            self._opening.add_done_callback(_close_opened)
        self._close_sync()

    async def __aenter__(self) -> Self:
        """Wait until the watch is open: from then on, every append, anywhere, reaches it."""
        if not self._closed and self._watch is None:
            await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _close_opened(future: concurrent.futures.Future[Watch]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()


# ---------------------------------------------------------------- subscriptions


class AsyncSubscription:
    """A named, durable subscription whose handler runs on the event loop.

    Made by `AsyncEventStore.subscribe`. The sync subscription does the work
    (and keeps its position in the store) on a thread of its own; each event
    is handed to the handler on the loop, and awaited when the handler is a
    coroutine function, before the position moves past it. A handler that
    raises ends `run` / `run_pending` with its error, the event not counted
    as handled.
    """

    def __init__(self, name: str, stream: str, sync: Subscription) -> None:
        self.name = name  #: the subscription's name, its key in the store
        self.stream = stream  #: the stream it follows (``"@all"``: every event)
        self._sync = sync

    @property
    def position(self) -> int:
        """Where it is: the version (position for ``"@all"``) of the last event handled."""
        return self._sync.position

    async def run_pending(self) -> int:
        """Handle the events stored after `position`, then return how many were handled."""
        return await self._call(self._sync.run_pending)

    async def run(self) -> None:
        """Handle events, stored then live, until `stop` (or the task is cancelled)."""
        await self._call(self._sync.run)

    def stop(self) -> None:
        """Make `run` return after the event in hand; safe from any task or thread."""
        self._sync.stop()

    async def _call(self, call: Callable[[], _T]) -> _T:
        # a thread per call: it blocks (in the handler, on the loop, or waiting for
        # events), and one that is not running leaves nothing behind
        worker = _Worker(f"rowcast-subscription-{self.name}")
        try:
            return await worker.run(call)
        except asyncio.CancelledError:
            self._sync.stop()  # the thread returns once the handler in hand is done
            raise
        finally:
            worker.stop()

    def __repr__(self) -> str:
        return f"<AsyncSubscription {self.name!r} to {self.stream!r} at {self.position}>"


def _on_loop(loop: asyncio.AbstractEventLoop, handler: Handler) -> Callable[[RecordedEvent], None]:
    """`handler` as the sync subscription calls it: run on `loop`, awaited if async."""

    async def call(event: RecordedEvent) -> None:
        result = handler(event)
        if inspect.isawaitable(result):
            await result

    def deliver(event: RecordedEvent) -> None:
        asyncio.run_coroutine_threadsafe(call(event), loop).result()

    return deliver


# ---------------------------------------------------------------- the store


class AsyncEventStore:
    """Streams of events for asyncio; see the module docstring and `rowcast.store.base`.

    ``AsyncEventStore(url, **options)`` takes the URLs and options of
    `EventStore`. Close it with `aclose` or ``async with``.
    """

    url: str  #: the URL it was opened with

    def __init__(self, url: str = DEFAULT_URL, **options: Any) -> None:
        if not isinstance(url, str):
            raise TypeError(f"an event store URL is a str, not {type(url).__name__}")
        self.url = url
        self._closed = False
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rowcast")
        self._opening = self._executor.submit(partial(EventStore, url, **options))
        self._watches: set[AsyncWatch] = set()
        self._subscriptions: set[AsyncSubscription] = set()

    # -- plumbing

    def _check_open(self, operation: str) -> None:
        if self._closed:
            raise StoreError(f"cannot {operation} event store {self.url}: it is closed")

    async def _run(self, operation: str, call: Callable[[EventStore], _T]) -> _T:
        """`call(sync_store)` on the store's thread, after every call made before it."""
        self._check_open(operation)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._in_thread, call)

    def _in_thread(self, call: Callable[[EventStore], _T]) -> _T:
        return call(self._opening.result())

    # -- the API of EventStore, as coroutines

    async def append(
        self,
        stream: str,
        events: Iterable[NewEvent],
        expected_version: ExpectedVersion = ANY,
    ) -> AppendResult:
        """`EventStore.append`: the batch atomically at the next versions of `stream`."""
        return await self._run("append to", lambda s: s.append(stream, events, expected_version))

    async def append_streams(
        self, appends: Iterable[tuple[str, Iterable[NewEvent]]]
    ) -> list[AppendResult]:
        """`EventStore.append_streams`: each stream's events as `append` does, at once."""
        return await self._run("append to", lambda s: s.append_streams(appends))

    def read(
        self,
        stream: str,
        after: int = 0,
        limit: int | None = None,
        backwards: bool = False,
    ) -> AsyncIterator[RecordedEvent]:
        """`EventStore.read` as an async iterator: ``async for event in store.read(s)``.

        Arguments are checked here (a bad one raises at the call); the events
        are fetched in pages of `PAGE` as the iterator is consumed.
        """
        check_stream(stream, allow_all=True)
        check_count(after, "after")
        check_count(limit, "limit", allow_none=True)
        self._check_open("read")
        return self._pages(lambda s: s.read(stream, after, limit, backwards))

    def read_all(
        self, after: int = 0, limit: int | None = None, backwards: bool = False
    ) -> AsyncIterator[RecordedEvent]:
        """`EventStore.read_all` as an async iterator (the global order)."""
        return self.read(ALL, after, limit, backwards)

    async def _pages(
        self, start: Callable[[EventStore], Iterator[RecordedEvent]]
    ) -> AsyncIterator[RecordedEvent]:
        def first(store: EventStore) -> tuple[Iterator[RecordedEvent], list[RecordedEvent]]:
            events = start(store)
            return events, list(islice(events, PAGE))

        events, page = await self._run("read", first)
        while True:
            for event in page:
                yield event
            if len(page) < PAGE:
                return
            page = await self._run("read", lambda _: list(islice(events, PAGE)))

    async def stream_version(self, stream: str) -> int:
        """`EventStore.stream_version`: 0 for no events; the last position for ``"@all"``."""
        return await self._run("read", lambda s: s.stream_version(stream))

    async def streams(self) -> dict[str, tuple[int, int]]:
        """`EventStore.streams`: name -> (version, position of its last event)."""
        return await self._run("read", lambda s: s.streams())

    async def list_streams(
        self, prefix: str = "", after: str | None = None, limit: int = 100
    ) -> list[StreamInfo]:
        """`EventStore.list_streams`: a page of streams by name, index-driven."""
        return await self._run("read", lambda s: s.list_streams(prefix, after, limit))

    async def delete_stream(self, stream: str) -> None:
        """`EventStore.delete_stream`."""
        await self._run("delete", lambda s: s.delete_stream(stream))

    async def save_snapshot(
        self, stream: str, state: Any, version: int, name: str = "default"
    ) -> None:
        """`EventStore.save_snapshot`: the latest version per (stream, name) wins."""
        await self._run(
            "save a snapshot to", lambda s: s.save_snapshot(stream, state, version, name)
        )

    async def load_snapshot(self, stream: str, name: str = "default") -> Snapshot | None:
        """`EventStore.load_snapshot`."""
        return await self._run("load a snapshot from", lambda s: s.load_snapshot(stream, name))

    # -- watching and subscribing

    def watch(
        self, stream: str = ALL, after: int | None = None, *, timeout: float | None = None
    ) -> AsyncWatch:
        """`EventStore.watch` as an async iterator: catch up after `after`, then live.

        ``after=None`` means from now: the watch starts after the calls made on
        this store before it (it is opened on the store's thread, in turn), and
        ``async with store.watch() as watch`` returns once it has started, so an
        append made by anyone after that reaches it.
        """
        check_stream(stream, allow_all=True)
        check_count(after, "after", allow_none=True)
        self._check_open("watch")

        def start() -> Watch:
            store = self._opening.result()
            return store.watch(stream, after, timeout=timeout)

        watch = AsyncWatch(self, self._executor.submit(start))
        self._watches.add(watch)
        return watch

    async def subscribe(self, name: str, handler: Handler, stream: str = ALL) -> AsyncSubscription:
        """A named, durable subscription to `stream`; `handler` may be sync or async.

        Its position is kept in the store, so a new subscription of the same
        name resumes after the last event handled. Start it with
        `AsyncSubscription.run` (until stopped) or `AsyncSubscription.run_pending`.
        """
        if not callable(handler):
            raise TypeError(f"a subscription handler is callable, not {type(handler).__name__}")
        deliver = _on_loop(asyncio.get_running_loop(), handler)
        sync = await self._run("subscribe to", lambda s: s.subscribe(name, deliver, stream))
        subscription = AsyncSubscription(name, stream, sync)
        self._subscriptions.add(subscription)
        return subscription

    # -- closing

    async def aclose(self) -> None:
        """Stop its watches and subscriptions and close the store; idempotent."""
        if self._closed:
            return
        self._closed = True
        for watch in list(self._watches):
            await watch.aclose()
        for subscription in self._subscriptions:
            subscription.stop()
        self._subscriptions.clear()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._close_sync)
        finally:
            self._executor.shutdown(wait=False)

    def _close_sync(self) -> None:
        if self._opening.exception() is None:
            self._opening.result().close()

    @property
    def closed(self) -> bool:
        """Whether `aclose` was called."""
        return self._closed

    async def __aenter__(self) -> Self:
        try:
            await asyncio.wrap_future(self._opening)  # a bad URL raises here
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url!r}{' closed' if self._closed else ''}>"

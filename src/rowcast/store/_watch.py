"""`Watch` and `Subscription` (exported by `rowcast.store.base`), and the `Notifier` behind them.

A watch is one loop that reads "the events after the last one returned" from
the store, and, when there are none, waits on the store's `Notifier` for a
change. Catch-up and live are that same loop, which is why nothing falls
between them. A subscription is a watch whose position is saved in the store
after each handled event.

The notifier is how a blocked watcher learns that the store changed, without
busy polling; each store owns one. Appends made through the store bump its
``sequence`` and wake every waiter at once (`notify`). Changes made elsewhere
(another process, or another store object on the same file) are found by the
backend's ``poll`` function, which must be cheap (SQLite: ``PRAGMA
data_version``): one waiter at a time, the *poller*, calls it every
`POLL_INTERVAL` seconds, and only while it waits, so a store whose watchers are
all busy or gone polls nothing. The other waiters sleep until notified; when
the poller leaves, it hands the role on.

A waiter never misses a change: it reads ``sequence`` *before* it looks for new
events, then waits only while ``sequence`` still has that value. A change made
after the look bumps ``sequence`` afterwards (after the commit, or at the next
poll), so the wait returns; a change made before the look is found by it, and
at worst costs one wake-up that finds nothing new.

The lock is reentrant so that `wake` (behind ``Watch.close`` and
``Subscription.stop``) may run in a signal handler that interrupted a thread
holding it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Final, Protocol, Self

from ..errors import StoreError
from .types import ALL, RecordedEvent

__all__ = ["POLL_INTERVAL", "Notifier", "Subscription", "Watch", "Watched"]

POLL_INTERVAL: Final = 0.05  #: seconds between two polls for changes made elsewhere
_PAGE: Final = 1000  # events fetched per look while catching up


class Notifier:
    """Wakes the watchers of one store; see the module docstring."""

    def __init__(self, poll: Callable[[], bool] | None = None) -> None:
        #: returns True when the data changed elsewhere since its last call; None when
        #: nothing else can write (a store in memory)
        self.poll = poll
        self._cond = threading.Condition(threading.RLock())
        self._sequence = 0
        self._closed = False
        self._poller: object | None = None

    @property
    def sequence(self) -> int:
        """A counter bumped by every change; read it before looking for events."""
        return self._sequence

    def notify(self) -> None:
        """Something changed: wake every waiter."""
        with self._cond:
            self._sequence += 1
            self._cond.notify_all()

    def wake(self) -> None:
        """Wake every waiter so that it checks its ``stopped`` condition."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        """The store closed: wake every waiter, for good."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wait(self, sequence: int, timeout: float | None, stopped: Callable[[], bool]) -> None:
        """Block until `sequence` is out of date, `stopped()`, the close, or `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        me = object()
        cond = self._cond
        try:
            while True:
                with cond:
                    if self._sequence != sequence or self._closed or stopped():
                        return
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return
                    polling = self.poll is not None and self._poller in (None, me)
                    if polling:
                        self._poller = me
                        remaining = (
                            POLL_INTERVAL if remaining is None else min(remaining, POLL_INTERVAL)
                        )
                    if cond.wait(remaining) or not polling:
                        continue
                    if self._sequence != sequence or self._closed or stopped():
                        return
                poll = self.poll
                if poll is not None and poll():  # outside the lock: it may do I/O
                    self.notify()
        finally:
            with cond:
                if self._poller is me:  # hand the role on to a waiter still waiting
                    self._poller = None
                    cond.notify_all()


class Watched(Protocol):
    """What a `Watch` and a `Subscription` use of their store: an `EventStore`'s internals.

    Named here, rather than imported, because the store module builds watches:
    rowcast.store.base imports this module, never the other way round.
    """

    _notifier: Notifier

    @property
    def closed(self) -> bool: ...

    def watch(
        self, stream: str = ..., after: int | None = None, *, timeout: float | None = None
    ) -> Watch: ...

    def _read(
        self, stream: str, after: int, limit: int | None, backwards: bool
    ) -> Iterator[RecordedEvent]: ...

    def _stream_version(self, stream: str) -> int: ...

    def _save_position(self, name: str, stream: str, position: int) -> None: ...


# ---------------------------------------------------------------- watches


class Watch(Iterator["RecordedEvent"]):
    """The events of a stream (or ``"@all"``) as they are committed; see `EventStore.watch`.

    Each ``next()`` returns the next event after the last one returned, blocking
    until there is one. It raises StopIteration, for good, after `close`, once
    the store is closed, or when ``timeout`` seconds pass without a new event.
    `close` may be called from another thread or a signal handler: a blocked
    ``next()`` then returns at once. A watch holds nothing between calls; an
    abandoned one needs no close.
    """

    def __init__(
        self, store: Watched, stream: str, after: int | None, timeout: float | None
    ) -> None:
        self._store = store
        self._stream = stream
        self._timeout = timeout
        self._buffer: deque[RecordedEvent] = deque()
        self._closed = False
        # For a stream: the position of its event at version `_after`, when known,
        # to notice that the stream was deleted (its versions start again at 1).
        self._position: int | None = None
        if stream == ALL:
            self._after = store._stream_version(ALL) if after is None else after
        elif after is None:
            last = list(store._read(stream, 0, 1, True))
            self._after, self._position = (last[0].version, last[0].position) if last else (0, None)
        else:
            self._after = after
            if after > 0:
                found = list(store._read(stream, after - 1, 1, False))
                if found and found[0].version == after:
                    self._position = found[0].position

    def __next__(self) -> RecordedEvent:
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        notifier = self._store._notifier
        while True:
            if self._closed or self._store.closed:
                self._closed = True
                self._buffer.clear()
                raise StopIteration
            if self._buffer:
                event = self._buffer.popleft()
                self._after = event.position if self._stream == ALL else event.version
                self._position = event.position
                return event
            sequence = notifier.sequence  # before the look: see rowcast.store._watch
            try:
                self._buffer.extend(self._fetch())
            except StoreError:
                if self._store.closed:
                    continue
                raise
            if self._buffer:
                continue
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                self._closed = True
                raise StopIteration
            notifier.wait(sequence, remaining, self._is_closed)

    def _fetch(self) -> list[RecordedEvent]:
        """The next stored events after the last one returned (one page at most)."""
        store, stream, after = self._store, self._stream, self._after
        if stream != ALL and after > 0 and self._position is not None:
            # read from the last event returned, to check that it is still there
            page = list(store._read(stream, after - 1, _PAGE + 1, False))
            if page and page[0].position == self._position:
                return page[1:]
            self._after = after = 0  # deleted since: whatever it holds now is new
            self._position = None
        return list(store._read(stream, after, _PAGE, False))

    def _is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """End the watch; safe from another thread or a signal handler; idempotent."""
        self._closed = True
        self._store._notifier.wake()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<Watch {self._stream!r} after {self._after}{state}>"


class Subscription:
    """A named, durable consumer of a stream (or ``"@all"``); see `EventStore.subscribe`.

    ``position`` is the stored position of the last event handled: a version for
    a stream, a global position for ``"@all"``; 0 before the first. `run` and
    `run_pending` call the handler once per event, in order, and store the
    event's position after the handler returned, so a consumer that crashes
    gets again at most the event it was handling. A handler that raises stops
    them: the error propagates and that event stays unhandled (it comes first
    next time).
    """

    name: str  #: the subscription's name, its key in the store
    stream: str  #: the stream it follows, or ``"@all"``
    position: int  #: the stored position of the last event handled (0: none yet)

    def __init__(
        self,
        store: Watched,
        name: str,
        handler: Callable[[RecordedEvent], object],
        stream: str,
        position: int,
    ) -> None:
        self.name = name
        self.stream = stream
        self.position = position
        self._store = store
        self._handler = handler
        self._stopped = False
        self._watch: Watch | None = None

    def run(self) -> None:
        """Handle the events after `position`, then each new one as it comes, until `stop`.

        Returns after `stop` (once the running handler returned) or when the
        store is closed. Raises `StoreError` when the store is closed already.
        """
        self._consume(None)

    def run_pending(self) -> int:
        """Handle the events stored after `position` now, then return how many."""
        return self._consume(0)

    def stop(self) -> None:
        """End `run` (or `run_pending`) for good; safe from another thread or a signal handler.

        A handler already running finishes and its event is stored as handled;
        a stopped subscription's `run` and `run_pending` return at once.
        """
        self._stopped = True
        watch = self._watch
        if watch is not None:
            watch.close()

    def _consume(self, timeout: float | None) -> int:
        if self._stopped:
            return 0
        if self._watch is not None:
            raise RuntimeError(f"subscription {self.name!r} is running already")
        store, stream, handler = self._store, self.stream, self._handler
        count = 0
        with store.watch(stream, after=self.position, timeout=timeout) as watch:
            self._watch = watch
            try:
                if self._stopped:  # stop() came before it could see the watch
                    return 0
                for event in watch:
                    handler(event)
                    position = event.position if stream == ALL else event.version
                    try:
                        store._save_position(self.name, stream, position)
                    except StoreError:
                        if store.closed:
                            break
                        raise
                    self.position = position
                    count += 1
                    if self._stopped:
                        break
            finally:
                self._watch = None
        return count

    def __repr__(self) -> str:
        return f"<Subscription {self.name!r} to {self.stream!r} at {self.position}>"

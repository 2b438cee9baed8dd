"""The live view: one watch of the store's global order, fanned out to every open page.

One thread follows ``store.watch("@all")`` (no polling: the store wakes it) and
hands each event to the asyncio loop, which offers it to every listener whose
filter takes it (a stream, a table, a type). A listener's queue is bounded: a
browser that cannot keep up loses the oldest events, and is told how many, rather
than growing the server's memory. A page that reconnects (EventSource does, with
the id of the last event it got) first catches up from the store, a bounded page
of it, so a short drop loses nothing.

If the store fails (a PostgreSQL restart, say), the thread says so to the
listeners, waits, and watches again from the last position it handed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, Final

from ..errors import StoreError
from ..store import ALL, EventStore, RecordedEvent, Watch

__all__ = ["QUEUE", "Broadcaster", "Listener", "LiveFilter"]

log = logging.getLogger("rowcast.ui")

QUEUE: Final = 1000  #: events held for one listener at most
CATCH_UP: Final = 500  #: events read back for a listener that reconnects
RETRY: Final = 1.0  #: seconds between two attempts to watch a failing store


@dataclass(frozen=True)
class LiveFilter:
    """Which events a listener wants: all by default."""

    stream: str = ALL
    table: str = ""
    type: str = ""

    def takes(self, event: RecordedEvent) -> bool:
        if self.stream != ALL and event.stream != self.stream:
            return False
        if self.type and self.type.lower() not in event.type.lower():
            return False
        if self.table:
            data = event.data
            table = data.get("table") if isinstance(data, dict) else None
            schema = data.get("schema") if isinstance(data, dict) else None
            names = {table, f"{schema}.{table}" if schema else table} if table else set()
            if self.table not in names:
                return False
        return True


class Listener:
    """One open live page: a bounded queue of what its filter takes."""

    def __init__(self, wanted: LiveFilter, size: int = QUEUE) -> None:
        self.filter = wanted
        self.queue: asyncio.Queue[RecordedEvent | str] = asyncio.Queue(size)
        self.dropped = 0

    def offer(self, item: RecordedEvent | str) -> None:
        """Queue `item` (an event or a notice); when full, lose the oldest."""
        if isinstance(item, RecordedEvent) and not self.filter.takes(item):
            return
        while self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(item)


class Broadcaster:
    """The one watch and its listeners (module docstring)."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._listeners: set[Listener] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watch: Watch | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.last = 0  #: the position of the last event handed on

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.last = self.store.stream_version(ALL)
        self._thread = threading.Thread(target=self._run, name="rowcast-ui-live", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        watch = self._watch
        if watch is not None:
            watch.close()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self._watch = self.store.watch(ALL, after=self.last)
                if self._stopped.is_set():
                    return
                for event in self._watch:
                    self.last = event.position
                    self._hand_on(event)
                return  # the watch ended: stopped, or the store closed
            except StoreError as error:
                log.warning("live view: %s; watching again in %gs", error, RETRY)
                self._hand_on(f"the store failed: {error}; trying again")
                self._stopped.wait(RETRY)

    def _hand_on(self, item: RecordedEvent | str) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._offer, item)

    def _offer(self, item: RecordedEvent | str) -> None:
        for listener in list(self._listeners):
            listener.offer(item)

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    async def follow(
        self, wanted: LiveFilter, last_id: int | None, recent: int = 20, heartbeat: float = 15.0
    ) -> AsyncIterator[RecordedEvent | str | None]:
        """The events `wanted` takes, from after `last_id` (a reconnect) or from now, with
        the last `recent` of them first; notices (str) say what was lost, and None comes
        after `heartbeat` seconds without anything."""
        listener = Listener(wanted)
        self._listeners.add(listener)  # before the catch-up read: nothing falls between
        try:
            sent = -1
            for event in await asyncio.to_thread(self._catch_up, wanted, last_id, recent):
                sent = event.position
                yield event
            while True:
                try:
                    item = await asyncio.wait_for(listener.queue.get(), heartbeat)
                except TimeoutError:
                    yield None
                    continue
                if listener.dropped:
                    yield f"{listener.dropped} events were dropped: this page was too slow"
                    listener.dropped = 0
                if isinstance(item, RecordedEvent) and item.position <= sent:
                    continue
                yield item
        finally:
            self._listeners.discard(listener)

    def _catch_up(self, wanted: LiveFilter, last_id: int | None, recent: int) -> list[Any]:
        if last_id is not None:
            found: Iterable[RecordedEvent] = self.store.read_all(after=last_id, limit=CATCH_UP)
            return [e for e in found if wanted.takes(e)]
        if recent <= 0:
            return []
        if wanted.stream != ALL:
            found = self.store.read(wanted.stream, backwards=True, limit=recent)
            return [e for e in found if wanted.takes(e)][::-1]
        picked = []
        for event in self.store.read_all(backwards=True, limit=CATCH_UP):
            if wanted.takes(event):
                picked.append(event)
                if len(picked) >= recent:
                    break
        return picked[::-1]

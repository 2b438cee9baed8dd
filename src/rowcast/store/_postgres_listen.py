"""`Listener`: the LISTEN connection of a PostgreSQL event store, on a thread of its own.

Watchers block on their store's `rowcast.store._watch.Notifier`; the listener
wakes them. It holds one connection that has run ``LISTEN <channel>`` and
sleeps in ``select()`` on that connection's socket (and on a pipe that `close`
writes to), so an idle store does no work and sends no query: no polling.
Each notification (every append commits one, from any process) calls
``on_notify``.

A dropped connection (a server restart, ``pg_terminate_backend``, a network
cut) is reconnected with a growing pause (up to `MAX_PAUSE` seconds), then
``on_notify`` is called once: watchers read again after the last event they
returned, so what was committed while nobody listened is found, and nothing
is yielded twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import threading
from collections.abc import Callable
from typing import Final

import psycopg

from ..errors import StoreError

__all__ = ["MAX_PAUSE", "Listener"]

log = logging.getLogger(__name__)

MAX_PAUSE: Final = 1.0  #: seconds at most between two attempts to reconnect


class Listener:
    """LISTENs on `channel` in a daemon thread; see the module docstring."""

    def __init__(
        self,
        conninfo: str,
        channel: str,
        on_notify: Callable[[], None],
        *,
        describe: str,
        timeout: float,
    ) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._on_notify = on_notify
        self._describe = describe
        self._timeout = timeout
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._error: BaseException | None = None
        self._wake_r, self._wake_w = os.pipe()
        #: the server process id of the current LISTEN connection (None between two)
        self.backend_pid: int | None = None
        #: how many times the connection was opened (1 + reconnections)
        self.connections = 0

    def start(self) -> None:
        """Listen from now on: returns once LISTEN is in place (at once if it is already).

        Raises `StoreError` when the first connection fails.
        """
        with self._lock:
            if self._stopped.is_set():
                raise StoreError(f"cannot watch event store {self._describe}: it is closed")
            if self._thread is not None and not self._thread.is_alive():
                # the first connection failed before: try again rather than fail for good
                self._thread, self._error = None, None
                self._ready.clear()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._main, name="rowcast-pg-listen", daemon=True
                )
                self._thread.start()
        self._ready.wait(self._timeout + 1)
        if self._error is not None:
            raise StoreError(
                f"event store {self._describe}: cannot listen for new events: {self._error}"
            ) from self._error
        if not self._ready.is_set():
            raise StoreError(
                f"event store {self._describe}: LISTEN did not succeed within {self._timeout}s"
            )

    def close(self) -> None:
        """Stop listening and end the thread; idempotent."""
        with self._lock:
            if self._stopped.is_set():
                return
            self._stopped.set()
            thread = self._thread
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if thread is not None:
            thread.join(self._timeout)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _main(self) -> None:
        pause = 0.05
        while not self._stopped.is_set():
            try:
                conn = psycopg.connect(self._conninfo, autocommit=True)
            except psycopg.Error as e:
                if not self._ready.is_set():  # the first attempt: tell start()
                    self._error = e
                    self._ready.set()
                    return
                self._stopped.wait(pause)
                pause = min(pause * 2, MAX_PAUSE)
                continue
            try:
                conn.execute(f'LISTEN "{self._channel}"')
                self.backend_pid = conn.info.backend_pid
                self.connections += 1
                pause = 0.05
                self._ready.set()
                self._on_notify()  # catch up with what came while nobody listened
                self._listen(conn)
            except psycopg.Error as e:
                if not self._ready.is_set():
                    self._error = e
                    self._ready.set()
                    return
            except Exception:  # a waker that failed must not end the listening for good
                log.exception("event store %s: listener error; reconnecting", self._describe)
                self._stopped.wait(pause)
                pause = min(pause * 2, MAX_PAUSE)
            finally:
                self.backend_pid = None
                conn.close()

    def _listen(self, conn: psycopg.Connection[object]) -> None:
        """Sleep until a notification (then call on_notify), the close, or a lost connection."""
        pgconn = conn.pgconn
        with selectors.DefaultSelector() as selector:
            selector.register(conn.fileno(), selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopped.is_set():
                ready = selector.select()
                if self._stopped.is_set():
                    return
                if not ready:
                    continue
                pgconn.consume_input()  # raises OperationalError once the connection is gone
                if pgconn.status != psycopg.pq.ConnStatus.OK:
                    return
                notified = False
                while pgconn.notifies() is not None:
                    notified = True
                if notified:
                    self._on_notify()

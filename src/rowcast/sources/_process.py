"""`ProcessSource`: any source read in a child process, so reading and delivering overlap.

A relay reads its source in a thread; with a binlog reader and a sink both
busy in Python they share one GIL and one core. ``ProcessSource(url,
checkpoint_url, **options)`` runs ``open_source(url,
checkpoint=open_checkpoint(checkpoint_url), **options)`` in a child started
with the ``spawn`` method (never ``fork``: the parent runs threads), and hands
its transactions to the parent through a bounded queue, several at a time.

The promises:

Order and wholeness
    The parent yields exactly the transactions the source yields, whole and in
    commit order: the child forwards them in order and never splits one.

Resuming
    The child opens the checkpoint at `checkpoint_url` itself, so the source
    resumes from (and sources that read it, like PostgreSQL's slot confirmation
    and the outbox's deletes, see) whatever the relay in the parent saved.

Stopping and dying
    The child ignores SIGINT (the parent handles Ctrl-C and SIGTERM); `stop` in
    the parent sets an event the child obeys, and iteration ends by joining the
    child (killing it if it has not gone within a few seconds). A child whose
    parent died (SIGKILL) notices within half a second and exits at once, so no
    orphan keeps a replication connection (a binlog ``server_id``) open.

Logging
    What rowcast logs in the child (a backfill taken up, done...) is handled by the
    parent's ``rowcast`` loggers, at the level the parent's ``rowcast`` logger had
    when the child started: the relay's log (text or JSON) holds it. A record may come
    before transactions the child read earlier but has not sent yet (they wait in its
    read-ahead), and one logged while the child stops may be lost.

Errors
    A source that fails in the child has its error sent through the queue: the
    parent raises `ConfigError` for a `ConfigError`, `SourceError` (with the
    child's message) for anything else, after every transaction read before it.
    A child that dies without a word is a `SourceError` naming its exit code.
    `check` runs the source's own `check` in the parent first, so a bad URL is
    found before any child starts.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .. import backends
from .._url import masked
from ..change import Change
from ..errors import ConfigError, SourceError
from ..hub import Hub
from .base import Source, open_source, publish_all
from .health import LogHealth

if TYPE_CHECKING:
    from multiprocessing.synchronize import Event

    from ..checkpoint import Checkpoint

__all__ = ["ProcessSource"]

_POLL = 0.1  # seconds between looks at the stop event while waiting
_PARENT_POLL = 0.5  # seconds between looks at whether the parent is alive
_JOIN = 5.0  # seconds the child has to stop before it is killed
_CHUNK = 1000  # at most this many changes per queue item (whole transactions)


class ProcessSource:
    """The source at `url` read in a child process; the Source protocol in the parent.

    `checkpoint_url` is where the child's source resumes from: the URL of the
    checkpoint the relay saves to. `checkpoint` is the parent's own object for
    it (the relay sets it when None; it is never sent to the child). `queue_size`
    bounds the queue in chunks of at most 1000 changes. Every other option goes
    to `open_source` in the child and must pickle.
    """

    def __init__(
        self,
        url: str,
        checkpoint_url: str,
        *,
        checkpoint: Checkpoint | None = None,
        queue_size: int = 8,
        **options: Any,
    ) -> None:
        if not isinstance(checkpoint_url, str) or not checkpoint_url:
            raise ConfigError(f"checkpoint_url must be a checkpoint URL, not {checkpoint_url!r}")
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise ConfigError(f"queue_size must be an int >= 1, not {queue_size!r}")
        self.url = url
        self._target = masked(url)  # how reports and logs name it
        self.checkpoint_url = checkpoint_url
        self.checkpoint = checkpoint
        self.queue_size = queue_size
        self.options = options
        self.start: str | None = options.get("start")  # None: the source's default
        self.position: str | None = None  # of the last transaction handed out
        self._context = multiprocessing.get_context("spawn")
        self._stopping = threading.Event()
        self._child_stop: Event | None = None
        self._local: Any = None  # the source opened here, for `health` only

    @property
    def redelivers(self) -> str | None:
        """The source's own `LogSource.redelivers` (said by its class: nothing is opened)."""
        return getattr(backends.load("source", self.url), "redelivers", None)

    def check(self) -> None:
        """Build the source here and run its own check, then close it.

        Raises what the source raises: `ConfigError` for a bad URL, an unreachable
        server or a server that needs configuring.
        """
        source = open_source(self.url, **self.options)
        try:
            source.check()
        finally:
            source.close()

    def close(self) -> None:
        """Close what `health` opened (an iteration joins its child when it ends)."""
        local, self._local = self._local, None
        if local is not None:
            local.close()

    def health(self, position: str | None) -> LogHealth:
        """The source's `health`, asked from this process (the child only reads)."""
        if self._local is None:
            self._local = open_source(self.url, checkpoint=self.checkpoint, **self.options)
        result: LogHealth = self._local.health(position)
        return result

    def run(self, hub: Hub) -> None:
        """Publish every transaction on `hub` until `stop`, saving to `checkpoint` if set."""
        publish_all(self, hub, self.checkpoint)

    def stop(self) -> None:
        """Make iteration end (the child stops and is joined); safe from a signal handler."""
        self._stopping.set()
        if self._child_stop is not None:
            self._child_stop.set()

    def __iter__(self) -> Iterator[list[Change]]:
        self._stopping.clear()
        items: Any = self._context.Queue(self.queue_size)
        child_stop = self._context.Event()
        self._child_stop = child_stop
        child = self._context.Process(
            target=_child,
            args=(
                self.url,
                self.checkpoint_url,
                self.options,
                items,
                child_stop,
                os.getpid(),
                logging.getLogger("rowcast").getEffectiveLevel(),
            ),
            name="rowcast-source",
            daemon=True,  # killed by multiprocessing if this interpreter exits first
        )
        child.start()
        try:
            while not self._stopping.is_set():
                try:
                    kind, payload = items.get(timeout=_POLL)
                except queue.Empty:
                    if not child.is_alive() and not self._stopping.is_set():  # (stopped: gone)
                        _raise_if_died(child, items)
                    continue
                if kind == "transactions":
                    for packed in payload:
                        transaction = _unpack(packed)
                        self.position = transaction[-1].position
                        yield transaction
                        if self._stopping.is_set():
                            return
                elif kind == "log":  # the child's, as if logged here
                    logging.getLogger(payload.name).handle(payload)
                elif kind == "end":
                    return
                elif kind == "ConfigError":
                    raise ConfigError(payload)
                else:
                    raise SourceError(f"the source process failed: {payload}")
        finally:
            child_stop.set()
            _join(child)
            items.close()
            items.cancel_join_thread()
            self._child_stop = None


def _raise_if_died(child: Any, items: Any) -> None:
    """After the child exited: nothing left in the queue means it died without a word."""
    child.join(_POLL)
    time.sleep(_POLL)  # its last item may still be in the pipe
    if items.empty():
        raise SourceError(
            f"the source process exited (code {child.exitcode}) without saying why; "
            "see its output above"
        )


def _join(child: Any) -> None:
    child.join(_JOIN)
    if child.is_alive():
        child.terminate()
        child.join(_JOIN)
    if child.is_alive():
        child.kill()
        child.join(_JOIN)


# ---------------------------------------------------------------------- the child


def _child(
    url: str,
    checkpoint_url: str,
    options: dict[str, Any],
    items: Any,
    stop: Event,
    parent: int,
    level: int = logging.WARNING,
) -> None:
    """The child's main: read the source, forward chunks of transactions until `stop`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    logger = logging.getLogger("rowcast")
    logger.setLevel(level)
    logger.addHandler(_ToParent(items, stop))
    logger.propagate = False  # only the parent's handlers write it
    threading.Thread(target=_die_with, args=(parent,), name="rowcast-parent", daemon=True).start()
    from ..checkpoint import open_checkpoint

    read: queue.Queue[Any] = queue.Queue(maxsize=_CHUNK)
    source: Source | None = None
    reader: threading.Thread | None = None
    try:
        try:
            checkpoint = open_checkpoint(checkpoint_url)
            source = open_source(url, checkpoint=checkpoint, **options)
        except BaseException as error:
            _send(items, stop, _failure(error))
            return
        reader = threading.Thread(
            target=_read, args=(source, read, stop), name="rowcast-source-reader", daemon=True
        )
        reader.start()
        _forward(read, items, stop)
    finally:
        stopped = stop.is_set()  # by the parent: it reads no more
        stop.set()
        if source is not None:
            source.stop()
        if reader is not None:
            reader.join(_JOIN)
        if source is not None:
            with contextlib.suppress(Exception):
                source.close()
        if stopped:  # never hang on exit over what no one will read
            items.cancel_join_thread()


class _ToParent(logging.Handler):
    """Sends the child's log records to the parent (ahead of what waits in the child's
    read-ahead): the relay's log (text or JSON) holds the source's lines (a backfill's
    start, end...)."""

    def __init__(self, items: Any, stop: Event) -> None:
        super().__init__()
        self.items, self.stop = items, stop

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record.msg, record.args = record.getMessage(), None  # what pickles
            if record.exc_info:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
                record.exc_info = None
            _send(self.items, self.stop, ("log", record))
        except Exception:  # logging never raises
            self.handleError(record)


def _die_with(parent: int) -> None:
    """Exit at once when the parent is gone: an orphan must not hold the server's slot."""
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL)
    os._exit(1)


def _read(source: Source, read: queue.Queue[Any], stop: Event) -> None:
    """The child's reader thread: the source's transactions, then "end" or a failure."""
    try:
        for transaction in source:
            if transaction and not _put(read, stop, transaction):
                return
        _put(read, stop, ("end", None))
    except BaseException as error:
        _put(read, stop, _failure(error))


def _forward(read: queue.Queue[Any], items: Any, stop: Event) -> None:
    """Send what the reader has ready, up to _CHUNK changes at a time, until an end."""
    while not stop.is_set():
        try:
            item = read.get(timeout=_POLL)
        except queue.Empty:
            continue
        chunk: list[list[Change]] = []
        count = 0
        while isinstance(item, list):
            chunk.append(item)
            count += len(item)
            if count >= _CHUNK:
                item = None
                break
            try:
                item = read.get_nowait()
            except queue.Empty:
                item = None
        if chunk and not _send(items, stop, ("transactions", [_pack(t) for t in chunk])):
            return
        if item is not None:  # ("end", None) or a failure: the last word
            _send(items, stop, item)
            return


def _put(read: queue.Queue[Any], stop: Event, item: Any) -> bool:
    while not stop.is_set():
        try:
            read.put(item, timeout=_POLL)
            return True
        except queue.Full:
            continue
    return False


def _send(items: Any, stop: Event, item: Any) -> bool:
    while not stop.is_set():
        try:
            items.put(item, timeout=_POLL)
            return True
        except queue.Full:
            continue
    return False


def _pack(transaction: list[Change]) -> Any:
    """`transaction` as it crosses to the parent: its rows as tuples and what its changes
    share once, when they share it (a source's transaction does), else the Changes.

    Half the pickling of Change objects, a third of their unpickling: the parent's
    time is the relay's.
    """
    first = transaction[0]
    shared = (first.ts, first.txid, first.position, first.source, first.snapshot)
    rows = []
    for c in transaction:
        if (c.ts, c.txid, c.position, c.source, c.snapshot) != shared:
            return transaction
        rows.append((c.action, c.schema, c.table, c.pk, c.before, c.after))
    return (*shared, rows)


def _unpack(packed: Any) -> list[Change]:
    """The transaction `_pack` sent."""
    if type(packed) is list:
        return packed
    ts, txid, position, source, snapshot, rows = packed
    return Change._rows(rows, ts, txid, position, source, snapshot)


def _failure(error: BaseException) -> tuple[str, str]:
    if isinstance(error, ConfigError):
        return "ConfigError", str(error)
    return "SourceError", f"{type(error).__name__}: {error}"

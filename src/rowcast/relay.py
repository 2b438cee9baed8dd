"""`Relay`: a source's transactions delivered to sinks, then checkpointed. At least once.

::

    checkpoint = open_checkpoint("relay.pos")
    source = open_source("mysql://root@127.0.0.1:3306/shop", checkpoint=checkpoint)
    sinks = [open_sink("sqlite:///events.db"), open_sink("redis://127.0.0.1:6379/0")]
    Relay(source, sinks, checkpoint).run()        # until stop(), SIGTERM in the CLI

The promises:

Order
    Transactions reach every sink whole and in commit order. Consecutive
    transactions are handed over together as one *batch*: whatever the source has
    ready, up to `batch_size` changes (a transaction larger than that is a batch
    of its own, never split). A sink slower than the source thus gets larger
    batches, which is how a relay keeps up with a busy database. Each sink
    delivers in a thread of its own, and the relay hands out the next batch
    (collected and encoded once for every sink, `rowcast.sinks.base.Shared`)
    while the sinks still deliver the last: two batches at most are out at once,
    and a fast sink need not wait for a slow one to finish the last batch.

At least once
    A batch is delivered to every sink, and each sink's `Sink.deliver` returns
    only when its destination acknowledged it; only once every sink has the batch
    and every batch before it may the position of the batch's last transaction be
    saved to the checkpoint. Saves happen at most
    every `checkpoint_interval` seconds (0: after every batch), when the relay is
    idle, and when it stops. A relay that dies at any moment therefore restarts
    from a position at or before the first change any sink may lack: nothing is
    lost, and what was delivered but not yet checkpointed (at most about
    `checkpoint_interval` seconds of changes) is delivered again. Every change
    carries a deterministic id (`rowcast.sinks.base.change_id`), so sinks that
    deduplicate (the event store, NATS JetStream) hold it once, and consumers of
    the others can. Exactly once: `Relay.exactly_once`, `rowcast._delivery.joined`.

Checked first
    `run` first calls every sink's `Sink.check` (and the dead-letter
    destination's): connected, authenticated, the destination there (or created)
    and writable. What is wrong is raised from `run` (a `ConfigError` with the fix,
    or a `SinkError`) before the source is read or the checkpoint loaded.
    ``check=False`` leaves that to whoever opened the sinks (``rowcast relay``
    checks them before it opens the source, so a wrong sink leaves the source's
    slot and position untouched).

Faults
    A sink that fails for now (`TransientSinkError`, or a `SinkError` it does not
    classify: down, gone mid-stream, full, a deadlock) is retried with the same
    batch, with exponential backoff (`backoff` doubling up to `max_backoff`
    seconds, jittered), for ever unless `max_attempts` is set; sinks that already
    acknowledged the batch are not sent it again, and the checkpoint does not move
    until every sink has it. The failing sink, its attempts in a row and its last
    error are in `Relay.stats` (`rowcast.metrics.SinkStats`), hence on the status
    line and in the metrics. A checkpoint that cannot be saved (`StoreError`) is
    retried the same way. The source reconnects on its own (a database restart, a
    killed connection); an error it gives up on ends `run` with that error once the
    transactions read before it are delivered. Any exception from a sink that is
    not a `SinkError` (a bug, `BrokenPipeError` from stdout) ends `run` at once,
    the checkpoint left before the batch.

Refusals
    A sink that refuses a batch for good (`PermanentSinkError`: a privilege, a
    missing schema, a constraint, a value it cannot hold) is given the batch's
    transactions one at a time, to find the one(s) it refuses (the poison) and
    deliver the others. Then, per sink, `on_error` says what happens:

    ``"stop"`` (the default)
        `run` raises a `PermanentSinkError` naming the sink, the refused
        transaction and the fix. The checkpoint is saved up to the transaction
        before it, when every sink has those, else left where it was: nothing from
        the refused transaction on is checkpointed. ``rowcast relay`` exits 3.
    ``"dead-letter"``
        each refused transaction goes to `dead_letter` (a
        `rowcast.sinks.deadletter.DeadLetterSink`, e.g. an event store) with the
        error beside each change, and the relay goes on: the checkpoint moves past it.
    ``"retry"``
        the refusal is retried like a transient failure, for ever (the relay
        before refusals were told apart).

Stopping
    `stop` (from a signal handler or another thread) lets the batches being
    delivered finish, saves the checkpoint, and `run` returns. A batch waiting for
    a failing sink is abandoned instead (and delivered again on restart).

Resuming
    The source must resume from the same checkpoint: a source opened without one
    (its ``checkpoint`` attribute None) is given it, and one reading another
    checkpoint is a `ConfigError`. The source's own ``start`` counts only when the
    checkpoint is empty.

Reporting
    Every second the relay asks its source where its log ends (its *head*) and
    works out its lag against it (`rowcast.monitor`: 0 at the head, growing while
    stuck) and whether it is stalled (not moving for `stall_after` seconds behind
    a moving head). Every `report_interval` seconds, and when it stops, it saves
    its report beside its checkpoint (`rowcast.checkpoint.report`), which
    ``rowcast status`` reads: its state (``starting``, ``running``,
    ``retrying``, ``stopped``, ``failed``), position, head, lag, rate and last
    error. A report that cannot be saved is logged and skipped.

Progress is in `Relay.stats` (`rowcast.metrics.RelayStats`) and in log
records of logger ``rowcast.relay``, each with an ``event`` attribute
(``start``, ``retry``, ``recovered``, ``abandoned``, ``dead_letter``,
``refused``, ``checkpoint_retry``, ``stalled``, ``unstalled``, ``stop``) and
the fields it names. With ``rowcast[otel]``, reading and delivering make
OpenTelemetry spans (`rowcast.tracing`).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import random
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from . import tracing
from ._delivery import Fanout, Pending, Refused, joined, modes
from .change import Change
from .checkpoint import Checkpoint
from .checkpoint.report import Reporting, refuse_a_held
from .errors import ConfigError, StoreError
from .metrics import RateMeter, RelayStats
from .monitor import HeadWatch, Monitor, relay_report
from .sinks.base import Shared, Sink
from .sinks.deadletter import DeadLetterSink
from .sources.base import Source

__all__ = ["Relay"]

log = logging.getLogger("rowcast.relay")

_END = object()  # the source has no more transactions
_POLL = 0.1  # seconds between looks at the stop flag while waiting
_GLANCE = 0.005  # seconds between looks at the sinks while waiting for the source
_DEPTH = 2  # batches the sinks have at once: the one being delivered, and the next


class _Failed:
    """The source raised: carried through the queue, raised after what came before it."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Relay:
    """Reads `source`, delivers to every sink of `sinks`, saves to `checkpoint` (see the module).

    `batch_size` bounds a batch in changes; `linger` is how long a batch may wait
    for more transactions once it has one (0: take what is ready, never wait).
    `backoff` and `max_backoff` are the first and longest pause between retries
    in seconds; `max_attempts` (None: no limit) ends `run` with the last error
    after that many failed attempts at one batch or save. `checkpoint_interval` is
    the least time in seconds between checkpoint saves. `on_error` (``"stop"``,
    ``"retry"`` or ``"dead-letter"``; one for every sink, or one per sink) and
    `dead_letter` say what a refused transaction comes to; `check` whether `run`
    checks the sinks first (the module docstring has both). `report_interval`
    (seconds; 0: none) is how often the report is saved beside the checkpoint,
    `stall_after` how long a position may stay behind a moving head before the
    relay counts as stalled. A relay runs once.
    """

    def __init__(
        self,
        source: Source,
        sinks: Iterable[Sink],
        checkpoint: Checkpoint,
        *,
        batch_size: int = 1000,
        linger: float = 0.0,
        backoff: float = 0.1,
        max_backoff: float = 30.0,
        max_attempts: int | None = None,
        checkpoint_interval: float = 1.0,
        on_error: str | Sequence[str] = "stop",
        dead_letter: DeadLetterSink | None = None,
        check: bool = True,
        report_interval: float = 5.0,
        stall_after: float = 120.0,
    ) -> None:
        self.sinks: list[Sink] = list(sinks)
        if not self.sinks:
            raise ConfigError("a relay needs at least one sink")
        self.on_error = modes(on_error, len(self.sinks), dead_letter)
        self.dead_letter = dead_letter
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be an int >= 1, not {batch_size!r}")
        for name, value in (
            ("linger", linger),
            ("backoff", backoff),
            ("max_backoff", max_backoff),
            ("checkpoint_interval", checkpoint_interval),
            ("report_interval", report_interval),
            ("stall_after", stall_after),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"{name} must be a number of seconds >= 0, not {value!r}")
        if max_attempts is not None and (not isinstance(max_attempts, int) or max_attempts < 1):
            raise ConfigError(f"max_attempts must be None or an int >= 1, not {max_attempts!r}")
        if source.checkpoint is None:
            source.checkpoint = checkpoint
        elif source.checkpoint is not checkpoint:
            raise ConfigError(
                "the source resumes from another checkpoint than the relay saves to; "
                "open the source with checkpoint=<the relay's checkpoint>"
            )
        self.source, self.checkpoint = source, checkpoint
        self.exactly_once = joined(self.sinks, checkpoint, source)  #: module docstring
        self.batch_size = batch_size
        self.linger = float(linger)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.max_attempts = max_attempts
        self.checkpoint_interval = float(checkpoint_interval)
        self.stats = RelayStats([sink.url for sink in self.sinks])
        self._check = bool(check)
        self._stopping = threading.Event()
        self._fanout = Fanout(
            self.sinks,
            self.stats,
            modes=self.on_error,
            dead_letter=dead_letter,
            stopping=self._stopping,
            pause=self._pause,
            max_attempts=max_attempts,
        )
        self.report_interval = float(report_interval)
        self.stall_after = float(stall_after)
        store = checkpoint if isinstance(checkpoint, Reporting) and report_interval else None
        rate = RateMeter()
        self.monitor = Monitor(
            lambda: relay_report(
                self.stats,
                rate,
                source=self.source,
                checkpoint=self.checkpoint.url,
                interval=self.report_interval,
                stall_after=self.stall_after,
            ),
            store,
            interval=self.report_interval,
            watch=HeadWatch(self.stats, source, self.stall_after),
        )
        self._carried: Any = None  # a transaction read that did not fit in the last batch
        self._room, self._queued = threading.Condition(), 0  # changes in the queue, and a wait
        self._unsaved: str | None = None  # delivered everywhere, not yet checkpointed
        self._saved_at = 0.0  # time.monotonic() of the last save

    # ------------------------------------------------------------------ the loop

    def check(self) -> None:
        """Check every sink and the dead-letter destination (`Sink.check`), in turn.

        Raises the first failure: a `ConfigError` or a `SinkError` naming the sink.
        A sink without a ``check`` method has nothing to check.
        """
        for sink in [*self.sinks, *([self.dead_letter] if self.dead_letter else [])]:
            check = getattr(sink, "check", None)
            if check is not None:
                check()

    def run(self) -> None:
        """Relay until `stop` or the end of the source; raises what ended it otherwise.

        A sink's refusal under ``on_error="stop"`` is a `PermanentSinkError`; another relay
        running on the checkpoint (its report says so), a `ConfigError` before anything.
        """
        refuse_a_held(self.checkpoint)  # before its first report would replace the other's
        self.monitor.run(self._run, self.stats)

    def _run(self) -> None:
        if self._check and not self._stopping.is_set():
            self.check()
        self.stats.resumed_from = self.checkpoint.load()
        self.stats.state = "running"
        start = self.source.start or "its default start"
        log.info(
            "relaying to %s from %s",
            ", ".join(sink.url for sink in self.stats.sinks),
            self.stats.resumed_from or f"the source's {start} (the checkpoint is empty)",
            extra={"event": "start", "position": self.stats.resumed_from},
        )
        # bounded by the changes it holds (`_put`): large transactions must not fill the memory
        transactions: queue.Queue[Any] = queue.Queue()
        reader = threading.Thread(
            target=self._read, args=(transactions,), name="rowcast-relay-source", daemon=True
        )
        self._fanout.start()
        reader.start()
        pending: collections.deque[Pending] = collections.deque()  # in commit order
        urls = [s.url for s in self.stats.sinks]
        final: Any = None
        try:
            while True:
                try:
                    if not self._settle(pending):
                        break  # stopped while a sink was failing
                except Refused as refused:
                    if refused.delivered:
                        self._delivered(pending[0].batch[: refused.delivered])
                    kept = self._unsaved or self.stats.position or self._owned_start()
                    raise refused.final(kept) from refused.error
                if pending and (
                    final is not None or self._stopping.is_set() or len(pending) >= _DEPTH
                ):
                    self._fanout.wait(pending[0], _POLL)  # for the oldest batch's sinks
                    continue
                if final is not None or self._stopping.is_set():
                    break
                batch, final = self._collect(transactions, pending)
                if batch:
                    shared = Shared(batch)  # encoded here, while the sinks deliver the last
                    end = tracing.delivery(shared, urls)
                    pending.append(self._fanout.submit(shared, end))
            if isinstance(final, _Failed):
                raise final.error
        finally:
            self._stopping.set()
            self.source.stop()
            if self._unsaved is not None:
                self._save()  # what every sink has: one attempt, as we are stopping
            reader.join(5)
            self._fanout.shutdown()
            if self.stats.position is None:
                self.stats.position = self._owned_start()
        log.info(
            "relay stopped at %s after %d changes",
            self.stats.position or self.stats.resumed_from or "the source's start",
            self.stats.changes,
            extra={"event": "stop", "position": self.stats.position, "changes": self.stats.changes},
        )

    def stop(self) -> None:
        """Finish the batch being delivered, save the checkpoint, return from `run`.

        Safe from a signal handler or another thread; before `run`, it makes `run`
        return at once.
        """
        self._stopping.set()

    def _read(self, transactions: queue.Queue[Any]) -> None:
        """The reader thread: the source's transactions into the queue, then _END or _Failed."""
        try:
            for transaction in self.source:
                tracing.captured(transaction)
                if transaction and not self._put(transactions, transaction):
                    return
            self._put(transactions, _END)
        except BaseException as error:  # handed to run(), which raises it
            self._put(transactions, _Failed(error))

    def _put(self, transactions: queue.Queue[Any], item: Any) -> bool:
        """Queue `item` once the queue holds fewer than two batches of changes (or none)."""
        size = len(item) if isinstance(item, list) else 0
        with self._room:
            while self._queued and self._queued + size > 2 * self.batch_size:
                if self._stopping.is_set():
                    return False
                self._room.wait(_POLL)
            if self._stopping.is_set():  # (after a wait)
                return False
            self._queued += size
        transactions.put(item)
        return True

    def _taken(self, item: Any) -> Any:
        """`item`, taken from the queue: its changes make room for the reader."""
        if isinstance(item, list):
            with self._room:
                self._queued -= len(item)
                self._room.notify()
        return item

    def _collect(
        self, transactions: queue.Queue[Any], pending: Sequence[Pending]
    ) -> tuple[list[list[Change]], Any]:
        """The next batch, and _END / _Failed when the source ended right after it; no
        batch when the oldest of `pending` (batches the sinks have) is settled first."""
        item, self._carried = self._carried, None
        while item is None:
            if self._stopping.is_set():
                return [], None
            # read before the queue is found empty: the reader moves the source's position
            # past a transaction only after it queued it, so nothing before `seen` is left
            seen = self.source.position
            with contextlib.suppress(queue.Empty):
                item = self._taken(transactions.get(timeout=_GLANCE if pending else _POLL))
            if item is None and pending:
                if self._fanout.outcome_known(pending[0]):
                    return [], None
                continue
            if item is None:  # idle
                if seen is not None:
                    self.stats.reached = seen  # reported, never saved
                if self._save_due():  # save what was delivered
                    self._save()
        batch: list[list[Change]] = []
        count = 0
        deadline = time.monotonic() + self.linger
        while True:
            if item is _END or isinstance(item, _Failed):
                return batch, item
            if batch and count + len(item) > self.batch_size:
                self._carried = item  # the first of the next batch
                return batch, None
            batch.append(item)
            count += len(item)
            if count >= self.batch_size:
                return batch, None
            try:
                wait = deadline - time.monotonic()
                item = self._taken(
                    transactions.get(timeout=wait) if wait > 0 else transactions.get_nowait()
                )
            except queue.Empty:
                return batch, None

    # ------------------------------------------------------------------ delivery

    def _settle(self, pending: collections.deque[Pending]) -> bool:
        """Count and checkpoint the oldest batches every sink has, in order; False when a
        batch was abandoned (stopped while a sink was failing). Raises what
        `Fanout.outcome` raises, the refused batch left first in `pending`."""
        while pending and (delivered := self._fanout.outcome(pending[0])) is not None:
            if not delivered:
                return False
            self._delivered(pending.popleft().batch)
            if self._save_due() and not self._save():
                return False  # stopped while the checkpoint was failing
        return True

    def _pause(self, attempt: int) -> float:
        return min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1)) * (
            0.5 + random.random() / 2
        )

    def _owned_start(self) -> str | None:
        """What the checkpoint holds before the first save: where the source began (a
        source saves it before it reads anything), or where the relay resumed from."""
        with contextlib.suppress(StoreError):
            return self.checkpoint.load()
        return self.stats.resumed_from

    def _delivered(self, batch: Sequence[Sequence[Change]]) -> None:
        """Count a batch every sink acknowledged; its position is now due for the checkpoint."""
        last = batch[-1][-1]
        stats = self.stats
        stats.changes += sum(len(transaction) for transaction in batch)
        stats.transactions += len(batch)
        stats.batches += 1
        stats.last_commit = last.ts
        stats.lag = max(0.0, time.time() - last.ts)
        if last.position is not None:
            self._unsaved = self.stats.reached = last.position

    def _save_due(self) -> bool:
        return (
            self._unsaved is not None
            and time.monotonic() - self._saved_at >= self.checkpoint_interval
        )

    def _save(self) -> bool:
        """Save the last delivered position, retrying a failing checkpoint; False if stopped."""
        position = self._unsaved
        attempt = 0
        while position is not None:
            try:
                self.checkpoint.save(position)
                break
            except StoreError as error:
                attempt += 1
                self.stats.checkpoint_errors += 1
                self.stats.checkpoint_failing = str(error)
                self.stats.note_error(f"checkpoint: {error}")
                pause = self._pause(attempt)
                log.warning(
                    "saving the checkpoint failed (attempt %d): %s; retrying in %.1fs",
                    attempt,
                    error,
                    pause,
                    extra={
                        "event": "checkpoint_retry",
                        "attempt": attempt,
                        "delay": round(pause, 3),
                        "error": str(error),
                    },
                )
                if self.max_attempts is not None and attempt >= self.max_attempts:
                    raise
                if self._stopping.wait(pause):
                    return False
        self.stats.position = position
        self.stats.checkpoint_failing = None
        self._unsaved = None
        self._saved_at = time.monotonic()
        return True

"""The broker-independent consumer: partitioning, retries, dead letters, duplicates.

A `Consumer` reads relayed changes from a broker (a `Transport`: Redis Streams, NATS
JetStream, RabbitMQ) and calls your handler with batches of `Change` objects. What it
promises, on every broker:

Per-row order
    Changes of one row (``schema.table:pk``) never run concurrently nor out of the
    order the broker delivered them in: each row is hashed (``zlib.crc32``) onto one
    of `workers` threads, and each thread handles its changes one batch after another.
    (A transport may hash a larger unit, `Delivery.lane`: Kafka hashes a partition,
    so that offsets are handled, hence committed, in order.)
    Rows of different partitions run in parallel. Threads, not processes: a handler
    that writes to a database, a cache or an HTTP service waits on I/O with the GIL
    released, and threads share one broker connection and one duplicate window.
    Several consumer processes in one group share the work, but keep row order only
    while none of them crashes: a dead consumer's changes are redelivered after
    later changes of the same rows may have run elsewhere, so make handlers
    idempotent (compare versions, upsert).

At least once
    A message is acknowledged only after the handler returned for it (or after it was
    parked in the dead-letter place). A consumer killed at any moment loses nothing:
    the broker redelivers what was not acknowledged (Redis: pending entries of a dead
    consumer are claimed after ``claim_after`` seconds; NATS: redelivered after
    ``ack_wait``; RabbitMQ: requeued when the connection drops). While a consumer
    runs, the messages it holds (queued locally or being handled) stay its own: on
    NATS it reports them in progress every third of ``ack_wait``, so a slow handler
    does not make JetStream hand them to another consumer of the group meanwhile.

Retries and dead letters
    A batch whose handler raises is retried whole, with exponential backoff
    (`backoff` doubling up to `max_backoff`, jittered), `attempts` times in all. If
    it still fails and holds several rows, each row's changes get one more attempt on
    their own, so that only the rows that fail are parked: written to the broker's
    dead-letter place with the error text (Redis: stream ``<key>:dead``; NATS: the
    dead-letter stream; RabbitMQ: the dead-letter queue), then acknowledged. A parked
    change is never dropped and never blocks other rows. Later changes of a parked
    row are parked too, without running the handler ("an earlier change of this row
    was parked"), so that replaying the dead letters keeps the row's order; the
    consumer remembers parked rows for as long as it runs (`parked_rows` of them,
    oldest forgotten first), until a change of the row comes back replayed
    (``rowcast dlq replay``). A message that is not a rowcast change is parked at once.

Duplicates
    Relays deliver at least once, so a change may arrive twice with the same change
    id (`rowcast.sinks.change_id`). Ids handled recently (the last `dedupe_window`)
    are acknowledged without running the handler again; a duplicate of a change still
    being handled is acknowledged with it.

Stopping
    `stop` (safe from a signal handler or another thread) lets each worker finish the
    batch it is running; its acknowledgements are sent, changes not yet started are
    left unacknowledged for redelivery, and `run` returns.

Reporting and tracing: ``report=`` (a checkpoint) gets its report every `report_interval`
s and at the end; handler calls are spans with ``rowcast[otel]`` (`rowcast.tracing`).
"""

from __future__ import annotations

import collections
import logging
import queue
import random
import threading
import time
import zlib
from collections.abc import Callable

from ..change import Change
from ..checkpoint.report import Reporting
from ..errors import ConfigError, RowcastError
from ..metrics import RateMeter
from ..monitor import Monitor, consumer_report
from ..tracing import handle
from .stats import ConsumerStats
from .transport import Delivery, Touching, Transport

__all__ = ["Consumer", "Handler"]

log = logging.getLogger("rowcast.consume")

Handler = Callable[[list[Change]], object]
"""Called with a batch of changes in delivery order; raising fails the whole batch."""


class _Outcome:
    __slots__ = ("done", "failures", "parked", "released")

    def __init__(self) -> None:
        self.failures = 0  # failed handler calls
        self.done: list[Delivery] = []
        self.parked: list[tuple[Delivery, str]] = []
        self.released: list[Delivery] = []


_STOPPED = object()


def _all_of(*steps: Callable[[], object]) -> None:
    """Run every step even if one fails; then raise the first `RowcastError`."""
    first: RowcastError | None = None
    for step in steps:
        try:
            step()
        except RowcastError as e:
            first = first or e
    if first is not None:
        raise first


def _describe(error: BaseException) -> str:
    return f"{type(error).__module__}.{type(error).__qualname__}: {error}"


class Consumer:
    """Reads changes from `transport` and calls `handler` with batches (see the module).

    `workers` threads, each handling batches of at most `batch_size` changes;
    at most `max_in_flight` messages fetched and not yet acknowledged (default:
    ``4 * workers * batch_size``). `attempts`, `backoff`, `max_backoff` shape the
    retries of a failing batch; `dedupe_window` is how many recent change ids are
    remembered (0: none). A consumer runs once.
    """

    def __init__(
        self,
        transport: Transport,
        handler: Handler,
        *,
        workers: int = 1,
        batch_size: int = 100,
        max_in_flight: int | None = None,
        attempts: int = 5,
        backoff: float = 0.2,
        max_backoff: float = 10.0,
        dedupe_window: int = 100_000,
        parked_rows: int = 100_000,
        poll: float = 1.0,
        report: Reporting | None = None,
        report_interval: float = 5.0,
    ) -> None:
        if not callable(handler):
            raise ConfigError(f"the handler must be callable, not {handler!r}")
        for name, value, least in (
            ("workers", workers, 1),
            ("batch_size", batch_size, 1),
            ("attempts", attempts, 1),
            ("dedupe_window", dedupe_window, 0),
            ("parked_rows", parked_rows, 1),
            ("max_in_flight", max_in_flight or 1, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"{name} must be an int >= {least}, not {value!r}")
        for name, seconds in (("backoff", backoff), ("max_backoff", max_backoff), ("poll", poll)):
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
                raise ConfigError(f"{name} must be a number of seconds > 0, not {seconds!r}")
        self.transport = transport
        self.url = transport.url
        self.handler = handler
        self.workers = workers
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight or 4 * workers * batch_size
        self.attempts = attempts
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.dedupe_window = dedupe_window
        self.parked_rows = parked_rows
        self.poll = float(poll)
        self.stats = ConsumerStats()
        rate = RateMeter()
        build = lambda: consumer_report(  # noqa: E731
            self.stats, rate, broker=self.url, handler=handler, interval=report_interval
        )
        self.monitor = Monitor(build, report, interval=report_interval)
        self._stopping = threading.Event()
        self._queues: list[queue.SimpleQueue[list[Delivery] | None]] = [
            queue.SimpleQueue() for _ in range(workers)
        ]
        self._outcomes: queue.SimpleQueue[_Outcome] = queue.SimpleQueue()
        self._inflight: dict[str, list[Delivery]] = {}  # change id -> its deliveries
        self._held = 0  # deliveries fetched and not yet settled
        self._touching = transport if isinstance(transport, Touching) else None
        self._touched = 0.0  # time.monotonic() of the last touch
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._threads: list[threading.Thread] = []
        self._ran = False

    def __repr__(self) -> str:
        return f"<Consumer {self.url!r} workers={self.workers}>"

    # ------------------------------------------------------------ the fetching thread

    def run(self) -> None:
        """Consume until `stop`; raises `RowcastError` if the broker cannot be reached at start.

        Broker failures later on are logged, counted in `stats`, and retried with
        backoff until the broker is back (nothing is acknowledged meanwhile).
        """
        if self._ran:
            raise ConfigError(f"{self!r} has already run; make a new consumer")
        self._ran = True
        self.monitor.run(self._run, self.stats)

    def _run(self) -> None:
        try:
            self.transport.connect()
            self.stats.state = "running"
            self._threads = [
                threading.Thread(
                    target=self._work, args=(i,), name=f"rowcast-consume-{i}", daemon=True
                )
                for i in range(self.workers)
            ]
            for thread in self._threads:
                thread.start()
            failures = 0
            while not self._stopping.is_set():
                try:
                    self._settle(wait=0.0)
                    self._keep_alive()
                    room = self.max_in_flight - self._held
                    if room <= 0:
                        self._settle(wait=min(self.poll, 0.5))
                        continue
                    wait = 0.02 if self._held else self.poll
                    fetched = self.transport.fetch(min(room, self.batch_size * 4), wait)
                    if failures:
                        failures, self.stats.failing = 0, None
                    self._dispatch(fetched)
                except RowcastError as e:
                    failures += 1
                    self._broker_failed(e, failures)
            self._drain()
        finally:
            self._stopping.set()
            for q in self._queues:
                q.put(None)
            for thread in self._threads:
                thread.join(timeout=1.0)
            self.transport.close()

    def stop(self) -> None:
        """Finish the batches being handled, acknowledge them, and return from `run`."""
        self._stopping.set()

    def _broker_failed(self, error: BaseException, failures: int) -> None:
        self.stats.errors += 1
        self.stats.failing = str(error)
        self.stats.note_error(f"broker: {error}")
        pause = self._pause(failures)
        log.warning(
            "broker error (attempt %d), retrying in %.1f s: %s",
            failures,
            pause,
            error,
            extra={"event": "broker_error", "attempt": failures, "error": str(error)},
        )
        self.transport.reset()
        self._stopping.wait(pause)

    def _drain(self) -> None:
        """After `stop`: settle what the workers finish or give back, then return."""
        deadline_logged = False
        started = time.monotonic()
        while self._held > 0:
            try:
                self._settle(wait=0.2)
                self._keep_alive()
            except RowcastError as e:
                log.warning("could not acknowledge while stopping: %s", e)
                return  # unacknowledged: the broker redelivers them
            if not deadline_logged and time.monotonic() - started > 5:
                deadline_logged = True
                log.info("waiting for %d changes being handled", self._held)

    def _dispatch(self, deliveries: list[Delivery]) -> None:
        if not deliveries:
            return
        stats = self.stats
        stats.received += len(deliveries)
        duplicates: list[Delivery] = []
        undecodable: list[tuple[Delivery, str]] = []
        parts: dict[int, list[Delivery]] = {}
        workers, inflight, seen = self.workers, self._inflight, self._seen
        for delivery in deliveries:
            if delivery.change is None:
                undecodable.append((delivery, delivery.problem or "not a rowcast change"))
                continue
            same = inflight.get(delivery.id)
            if same is not None:
                same.append(delivery)  # acknowledged with the first copy
                stats.duplicates += 1
            elif delivery.id in seen and not delivery.replay:
                duplicates.append(delivery)
            else:
                inflight[delivery.id] = [delivery]
                index = zlib.crc32(delivery.lane.encode()) % workers if workers > 1 else 0
                parts.setdefault(index, []).append(delivery)
        self._held += len(deliveries) - len(duplicates)
        for index, part in parts.items():
            self._queues[index].put(part)
        stats.duplicates += len(duplicates)
        _all_of(
            lambda: self.transport.ack(duplicates) if duplicates else None,
            lambda: self._park(undecodable) if undecodable else None,
        )

    def _keep_alive(self) -> None:
        """Touch every held delivery once `touch_every` passed since the last touch.

        Called from the fetching loop, whose every turn waits at most half a second.
        """
        transport = self._touching
        if transport is None or not self._inflight:
            return
        every = transport.touch_every
        now = time.monotonic()
        if not every or now - self._touched < every:
            return
        self._touched = now
        transport.touch([delivery for copies in self._inflight.values() for delivery in copies])

    def _settle(self, wait: float) -> None:
        """Acknowledge, park or give back what the workers finished."""
        try:
            outcome = self._outcomes.get(timeout=wait) if wait else self._outcomes.get_nowait()
        except queue.Empty:
            return
        done: list[Delivery] = []
        parked: list[tuple[Delivery, str]] = []
        released: list[Delivery] = []
        stats = self.stats
        while True:
            stats.retries += outcome.failures
            stats.handled += len(outcome.done)
            for delivery in outcome.done:
                done.extend(self._finish(delivery.id))
            parked.extend(outcome.parked)
            for delivery in outcome.released:
                released.extend(self._inflight.pop(delivery.id, ()))
            try:
                outcome = self._outcomes.get_nowait()
            except queue.Empty:
                break
        self._held -= len(done) + len(released)
        if done:
            last = done[-1].change
            if last is not None:
                stats.last_commit = last.ts
                stats.lag = max(0.0, time.time() - last.ts)
                stats.position = last.position
        # a failed ack: the broker redelivers those, and the seen ids skip them then
        _all_of(
            lambda: self.transport.ack(done) if done else None,
            lambda: self.transport.release(released) if released else None,
            lambda: self._park(parked) if parked else None,
        )

    def _finish(self, change_id: str) -> list[Delivery]:
        """Every delivery of `change_id` (copies included); remembers the id as seen."""
        copies = self._inflight.pop(change_id, [])
        if self.dedupe_window:
            seen = self._seen
            seen[change_id] = None
            if len(seen) > self.dedupe_window:
                seen.popitem(last=False)
        return copies

    def _park(self, parked: list[tuple[Delivery, str]]) -> None:
        records: list[tuple[Delivery, str]] = []
        for delivery, error in parked:
            copies = self._inflight.get(delivery.id, [delivery]) if delivery.change else [delivery]
            records.extend((copy, error) for copy in copies)
        try:
            self.transport.dead_letter(records)
        except RowcastError:
            for delivery, _ in parked:  # left unacknowledged: handled again when redelivered
                self._held -= len(self._inflight.pop(delivery.id, [delivery]))
            raise
        for delivery, error in parked:  # not seen: a replay of it is handled
            self._inflight.pop(delivery.id, None)
            log.warning(
                "parked %s in the dead-letter place: %s",
                delivery.row or delivery.id,
                error,
                extra={"event": "parked", "row": delivery.row, "id": delivery.id},
            )
        self._held -= len(records)
        self.stats.parked += len(records)

    # ------------------------------------------------------------ the workers

    def _pause(self, attempt: int) -> float:
        pause = min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1))
        return pause * (0.5 + random.random() / 2)

    def _work(self, index: int) -> None:
        source = self._queues[index]
        parked: collections.OrderedDict[str, str] = collections.OrderedDict()
        size = self.batch_size
        while True:
            part = source.get()
            if part is None:
                return
            batch = list(part)
            ending = False
            while len(batch) < size:
                try:
                    more = source.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    ending = True
                    break
                batch.extend(more)
            for start in range(0, len(batch), size):
                outcome = _Outcome()
                chunk = batch[start : start + size]
                if self._stopping.is_set():
                    outcome.released = chunk
                else:
                    self._handle(chunk, parked, outcome)
                self._outcomes.put(outcome)
            if ending:
                return

    def _handle(
        self, chunk: list[Delivery], parked: collections.OrderedDict[str, str], outcome: _Outcome
    ) -> None:
        ready: list[Delivery] = []
        for delivery in chunk:
            if delivery.replay:  # a dead letter replayed (`rowcast dlq replay`): tried again
                parked.pop(delivery.row, None)
            reason = parked.get(delivery.row)
            if reason is None:
                ready.append(delivery)
            else:
                outcome.parked.append(
                    (delivery, f"an earlier change of row {delivery.row} was parked: {reason}")
                )
        if not ready:
            return
        error = self._attempt(ready, self.attempts, outcome)
        if error is None:
            outcome.done.extend(ready)
            return
        rows: dict[str, list[Delivery]] = {}
        for delivery in ready:
            rows.setdefault(delivery.row, []).append(delivery)
        for row, group in rows.items():
            # each row alone once more, so that only the rows that fail are parked
            alone = error if len(rows) == 1 or error is _STOPPED else None
            if alone is None:
                alone = self._attempt(group, 1, outcome)
            if alone is None:
                outcome.done.extend(group)
            elif not isinstance(alone, BaseException):  # stopping: left for redelivery
                outcome.released.extend(group)
            else:
                reason = _describe(alone)
                parked[row] = reason
                if len(parked) > self.parked_rows:
                    parked.popitem(last=False)
                outcome.parked.extend((delivery, reason) for delivery in group)

    def _attempt(self, batch: list[Delivery], attempts: int, outcome: _Outcome) -> object:
        """None once the handler returned for `batch`; else the last error, or _STOPPED."""
        changes = [delivery.change for delivery in batch if delivery.change is not None]
        error: object = None
        for attempt in range(1, attempts + 1):
            try:
                handle(self.handler, changes, batch)
                return None
            except Exception as e:
                outcome.failures += 1
                error = e
                self.stats.note_error(f"handler: {_describe(e)}")
                log.info(
                    "handler failed on %d changes (attempt %d of %d): %s",
                    len(changes),
                    attempt,
                    attempts,
                    _describe(e),
                    extra={"event": "handler_error", "attempt": attempt, "error": _describe(e)},
                )
            if attempt < attempts and self._stopping.wait(self._pause(attempt)):
                return _STOPPED
        return error

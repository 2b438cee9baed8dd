"""How a relay hands a batch to its sinks: retries, refusals, the poison, dead letters.

Private to `rowcast.relay`, whose docstring states the promises. Each sink has a
thread of its own that delivers the batches `Fanout.submit` hands it, in order,
each until it takes it; so a sink's I/O and Python work overlap the others' and
the relay's, and a fast sink goes on to the next batch while a slow one is still
on the last. `Fanout.outcome` tells, batch by batch, once every sink has it:

* a sink that fails for now (`TransientSinkError`, or an unclassified `SinkError`)
  is given the same batch again after a pause, until it takes it;
* a sink that refuses for good (`PermanentSinkError`) is given the batch's
  transactions one at a time, to find the one(s) it refuses (the poison) and
  deliver the others; with ``on_error="stop"`` the first refused transaction ends
  the delivery (`Refused`), with ``"dead-letter"`` each goes to the dead-letter
  destination, and the batch counts as delivered; ``"retry"`` treats the refusal
  as a transient failure.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Final

from .change import Change
from .errors import ConfigError, PermanentSinkError, SinkError
from .metrics import RelayStats
from .sinks.base import Sink
from .sinks.deadletter import DeadLetterSink, reason

__all__ = ["MODES", "Fanout", "Pending", "Refused", "Stopped", "joined", "modes"]

log = logging.getLogger("rowcast.relay")

STOP: Final = "stop"
RETRY: Final = "retry"
DEAD_LETTER: Final = "dead-letter"
MODES: Final = (STOP, RETRY, DEAD_LETTER)

Transaction = Sequence[Change]


class Stopped(Exception):
    """`stop` came while a sink (or the dead-letter destination) was failing."""


class _Refusal(Exception):
    """Sink `i` refused for good (`refused`); `prefix`: its `Refused.delivered` counts
    when every other sink has the batch."""

    def __init__(self, refused: Refused, prefix: bool) -> None:
        super().__init__(str(refused))
        self.refused = refused
        self.prefix = prefix


class Refused(Exception):
    """`by` (a sink's URL, or the dead-letter destination's) refused `transaction` for
    good (`error`), and the relay is to stop.

    `delivered`: how many transactions of the batch, from its first, every sink has.
    """

    def __init__(
        self, by: str, transaction: Transaction, error: PermanentSinkError, delivered: int
    ) -> None:
        super().__init__(str(error))
        self.by = by
        self.transaction = transaction
        self.error = error
        self.delivered = delivered

    def final(self, kept: str | None) -> PermanentSinkError:
        """What the relay raises, the checkpoint `kept` where it is (and logs it)."""
        first, last = self.transaction[0], self.transaction[-1]
        error = self.error
        message = (
            f"{self.by} refused transaction {last.txid} for good ({len(self.transaction)} "
            f"changes, first {first.topic} pk {first.pk!r}, at {last.position}): {error.message}"
        )
        final = PermanentSinkError(message, error.fix)
        log.error(
            "%s; the relay stops, the checkpoint at %s",
            final,
            kept or "the source's start",
            extra={
                "event": "refused",
                "sink": self.by,
                "txid": last.txid,
                "position": last.position,
                "checkpoint": kept,
                "error": error.message,
                "fix": error.fix,
            },
        )
        return final


def modes(on_error: str | Sequence[str], sinks: int, dead_letter: object | None) -> list[str]:
    """What to do on a refusal, per sink: `on_error` checked (one value, or one per sink)."""
    given = [on_error] if isinstance(on_error, str) else list(on_error)
    if len(given) == 1:
        given *= sinks
    if len(given) != sinks:
        raise ConfigError(
            f"on_error has {len(given)} values for {sinks} sinks; give one, or one per sink"
        )
    for value in given:
        if value not in MODES:
            raise ConfigError(f"on_error is one of {', '.join(MODES)}, not {value!r}")
    if DEAD_LETTER in given and dead_letter is None:
        raise ConfigError(
            "on_error='dead-letter' needs a dead-letter destination (dead_letter=, "
            "--dead-letter URL: an event store URL or '-')"
        )
    if dead_letter is not None and DEAD_LETTER not in given:
        raise ConfigError(
            "a dead-letter destination is given, but no sink sends refused changes there: "
            "add on_error='dead-letter' (--on-error dead-letter), or leave it out"
        )
    return given


def joined(sinks: Sequence[Sink], checkpoint: object, source: object = None) -> bool:
    """Whether the relay's only sink writes `checkpoint` in its own transactions.

    A sink with a ``join(checkpoint)`` method (`rowcast.sinks.kafka.KafkaSink.join`)
    that returns True commits each batch with the position of its last transaction,
    so a relay killed at any moment resumes right after the last batch committed and
    the destination's transactional readers see every change once. With other sinks
    beside it (which a Kafka transaction cannot wait for), or another checkpoint,
    delivery stays at least once. A `source` that hands out again what was committed
    (its ``redelivers`` says when, e.g. the outbox) is warned about.
    """
    join = getattr(sinks[0], "join", None) if len(sinks) == 1 else None
    together = bool(join(checkpoint)) if join is not None else False
    redelivers = getattr(source, "redelivers", None)
    if together and redelivers:
        log.warning(
            "exactly once holds for what this source hands out once, not across a crash "
            "here: %s; a consumer that skips change ids it has seen (rowcast consume "
            "does) handles them once",
            redelivers,
            extra={"event": "redelivers"},
        )
    return together


def _size(batch: Sequence[Transaction]) -> int:
    return sum(len(transaction) for transaction in batch)


class Pending:
    """A batch handed to every sink, and what each made of it so far (`Fanout.outcome`)."""

    def __init__(
        self, number: int, batch: Sequence[Transaction], sinks: int, end: Callable[[], None]
    ) -> None:
        self.number = number  # of the batches handed out, from 1
        self.batch = batch
        self.count = _size(batch)
        self.results: list[str | None] = [None] * sinks  # per sink, once it is done with it
        self.failing: set[int] = set()  # sinks that failed an attempt at it
        self.refused: dict[int, tuple[Refused, bool]] = {}  # sink -> refusal, prefix counts
        self.error: BaseException | None = None  # to raise at once
        self.end = end  # ends its trace span


class Fanout:
    """Delivers batches to `sinks` (module docstring); counts in `stats`.

    `pause(attempt)` is the backoff before retry `attempt`; `stopping` ends waits;
    `max_attempts` (None: no limit) raises the last error after that many failures.
    """

    def __init__(
        self,
        sinks: Sequence[Sink],
        stats: RelayStats,
        *,
        modes: Sequence[str],
        dead_letter: DeadLetterSink | None,
        stopping: threading.Event,
        pause: Callable[[int], float],
        max_attempts: int | None,
    ) -> None:
        self.sinks = sinks
        self.stats = stats
        self.modes = modes
        self.dead_letter = dead_letter
        self.stopping = stopping
        self.pause = pause
        self.max_attempts = max_attempts
        self._queues: list[queue.SimpleQueue[Pending | None]] = []
        self._changed = threading.Condition()  # a sink is done with a batch, or failed at it
        self._handed = 0  # batches handed out
        # a refusal or an error (at the batch of that number) ends the run: no sink takes a
        # later batch
        self._halted = sys.maxsize
        self._burying = threading.Lock()  # one dead letter at a time, from any sink's thread

    def start(self) -> None:
        """Give each sink a thread of its own, which delivers its batches in order."""
        for i in range(len(self.sinks)):
            self._queues.append(queue.SimpleQueue())
            worker = threading.Thread(
                target=self._work, args=(i,), name=f"rowcast-relay-sink{i}", daemon=True
            )
            worker.start()

    def shutdown(self) -> None:
        """Let every sink's thread end once it is done with what it holds."""
        self._halted = 0
        for waiting in self._queues:
            waiting.put(None)

    # ------------------------------------------------------------------ a batch

    def submit(self, batch: Sequence[Transaction], end: Callable[[], None]) -> Pending:
        """Hand `batch` to every sink's thread; `end()` once its outcome is known."""
        self._handed += 1
        pending = Pending(self._handed, batch, len(self.sinks), end)
        for waiting in self._queues:
            waiting.put(pending)
        return pending

    def wait(self, pending: Pending, timeout: float) -> None:
        """Wait until `pending`'s outcome is known, at most `timeout` seconds."""
        with self._changed:
            self._changed.wait_for(lambda: self._decided(pending), timeout)

    def outcome(self, pending: Pending) -> bool | None:
        """None while `pending` is being delivered; True once every sink has it (or
        dead-lettered its poison); False when `stop` came while a sink was failing.

        Raises `Refused` for a refusal under ``"stop"`` (its `Refused.delivered` counting
        only when every other sink has the batch), any exception but a `SinkError` from a
        sink, and the last `SinkError` after `max_attempts`.
        """
        with self._changed:
            if not self._decided(pending):
                return None
        pending.end()
        if pending.error is not None:
            raise pending.error
        if pending.refused:
            first = min(pending.refused)
            refused, prefix = pending.refused[first]
            others = all(r == "ok" for i, r in enumerate(pending.results) if i != first)
            if refused.delivered and not (prefix and others):
                refused.delivered = 0
            raise refused
        if "stopped" in pending.results:
            log.warning(
                "stopped before every sink had the batch; it is delivered again on restart",
                extra={"event": "abandoned", "changes": pending.count},
            )
            return False
        return True

    def outcome_known(self, pending: Pending) -> bool:
        """Whether `outcome` would tell `pending`'s outcome now."""
        with self._changed:
            return self._decided(pending)

    def _decided(self, pending: Pending) -> bool:
        """Whether `pending`'s outcome is known (under `_changed`): every sink done with
        it, an error, or a refusal while every sink without it is failing."""
        if pending.error is not None:
            return True
        left = [i for i, result in enumerate(pending.results) if result is None]
        if not left:
            return True
        return bool(pending.refused) and all(i in pending.failing for i in left)

    def _work(self, i: int) -> None:
        """Sink `i`'s thread: its batches, in order, each until it takes it."""
        waiting = self._queues[i]
        ended = False  # a refusal, an error or a stop: this sink takes nothing more
        while (pending := waiting.get()) is not None:
            result = "skipped"
            if not ended and pending.number <= self._halted:
                try:
                    self._deliver(i, pending)
                    result = "ok"
                except Stopped:
                    result, ended = "stopped", True
                except _Refusal as refusal:
                    result, ended = "refused", True
                    self._halted = min(self._halted, pending.number)
                    with self._changed:
                        pending.refused[i] = (refusal.refused, refusal.prefix)
                except BaseException as error:  # raised by the relay
                    result, ended = "error", True
                    self._halted = min(self._halted, pending.number)
                    with self._changed:
                        pending.error = pending.error or error
            with self._changed:
                pending.results[i] = result
                self._changed.notify_all()

    def _deliver(self, i: int, pending: Pending) -> None:
        """Deliver `pending`'s batch to sink `i`, retrying failures, isolating refusals."""
        batch, attempt = pending.batch, 0
        while True:
            try:
                self.sinks[i].deliver(batch)
            except SinkError as error:
                if isinstance(error, PermanentSinkError) and self.modes[i] != RETRY:
                    self._isolate(i, batch, error)
                    return
                attempt += 1
                pause = self.pause(attempt)
                with self._changed:
                    pending.failing.add(i)
                    self._changed.notify_all()
                self._failed(i, error, attempt, pause)
                if self.stopping.wait(pause):
                    raise Stopped from error
            else:
                self._acked(i, pending.count)
                return

    # ------------------------------------------------------------------ the poison

    def _isolate(self, i: int, batch: Sequence[Transaction], error: PermanentSinkError) -> None:
        """Sink `i` refused `batch`: deliver it one transaction at a time, and stop at, or
        dead-letter, each one it refuses."""
        for k, transaction in enumerate(batch):
            refusal = error if len(batch) == 1 else self._alone(i, transaction)
            if refusal is None:
                continue
            self.stats.sinks[i].refused += 1
            if self.modes[i] == STOP:
                raise _Refusal(Refused(self.stats.sinks[i].url, transaction, refusal, k), True)
            try:
                with self._burying:
                    self._bury(i, transaction, refusal)
            except Refused as refused:  # by the dead-letter destination
                raise _Refusal(refused, False) from refused.error

    def _alone(self, i: int, transaction: Transaction) -> PermanentSinkError | None:
        """Deliver `transaction` alone to sink `i`, retrying transient failures: its refusal."""
        attempt = 0
        while True:
            try:
                self.sinks[i].deliver([transaction])
            except PermanentSinkError as error:
                return error
            except SinkError as error:
                attempt += 1
                pause = self.pause(attempt)
                self._failed(i, error, attempt, pause)
                if self.stopping.wait(pause):
                    raise Stopped from error
            else:
                self._acked(i, len(transaction))
                return None

    def _bury(self, i: int, transaction: Transaction, refusal: PermanentSinkError) -> None:
        """Put `transaction` in the dead-letter destination, with `refusal` beside it."""
        assert self.dead_letter is not None
        stats = self.stats.sinks[i]
        why = reason(stats.url, refusal)
        attempt = 0
        while True:
            try:
                self.dead_letter.dead_letter([transaction], why)
                break
            except PermanentSinkError as error:
                by = f"the dead-letter destination {self.dead_letter.url}"
                raise Refused(by, transaction, error, 0) from error
            except SinkError as error:
                attempt += 1
                pause = self.pause(attempt)
                log.warning(
                    "dead-letter destination %s failed (attempt %d): %s; retrying in %.1fs",
                    self.dead_letter.url,
                    attempt,
                    error,
                    pause,
                    extra={"event": "dead_letter_retry", "attempt": attempt, "error": str(error)},
                )
                if self.max_attempts is not None and attempt >= self.max_attempts:
                    raise
                if self.stopping.wait(pause):
                    raise Stopped from error
        stats.dead_letters += len(transaction)
        last = transaction[-1]
        log.warning(
            "sink %s refused transaction %s (%d changes, at %s): put in %s: %s",
            stats.url,
            last.txid,
            len(transaction),
            last.position,
            self.dead_letter.url,
            refusal,
            extra={
                "event": "dead_letter",
                "sink": stats.url,
                "txid": last.txid,
                "position": last.position,
                "changes": len(transaction),
                "destination": self.dead_letter.url,
                "error": refusal.message,
                "fix": refusal.fix,
            },
        )

    # ------------------------------------------------------------------ counting

    def _acked(self, i: int, count: int) -> None:
        stats = self.stats.sinks[i]
        stats.delivered += count
        stats.attempts = 0
        if stats.failing is not None:
            stats.failing = None
            log.info(
                "sink %s is delivering again",
                stats.url,
                extra={"event": "recovered", "sink": stats.url},
            )

    def _failed(self, i: int, error: SinkError, attempt: int, pause: float) -> None:
        """Count and log a failed attempt; raise `error` when it was the last allowed."""
        stats = self.stats.sinks[i]
        stats.errors += 1
        stats.attempts = attempt
        stats.failing = str(error)
        self.stats.note_error(f"{stats.url}: {error}")
        kind = "permanent" if isinstance(error, PermanentSinkError) else "transient"
        log.warning(
            "sink %s failed (attempt %d): %s; retrying in %.1fs",
            stats.url,
            attempt,
            error,
            pause,
            extra={
                "event": "retry",
                "sink": stats.url,
                "attempt": attempt,
                "delay": round(pause, 3),
                "error": str(error),
                "kind": kind,
            },
        )
        if self.max_attempts is not None and attempt >= self.max_attempts:
            raise error

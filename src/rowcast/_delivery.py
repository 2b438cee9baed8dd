"""How a relay hands a batch to its sinks: retries, refusals, the poison, dead letters.

Private to `rowcast.relay`, whose docstring states the promises. `Fanout.deliver`
gives a batch to every sink (each in a thread of its own when there are several)
and returns once every sink has it:

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
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from .change import Change
from .errors import ConfigError, PermanentSinkError, SinkError
from .metrics import RelayStats
from .sinks.base import Sink
from .sinks.deadletter import DeadLetterSink, reason

__all__ = ["MODES", "Fanout", "Refused", "Stopped", "joined", "modes"]

log = logging.getLogger("rowcast.relay")

STOP: Final = "stop"
RETRY: Final = "retry"
DEAD_LETTER: Final = "dead-letter"
MODES: Final = (STOP, RETRY, DEAD_LETTER)

Transaction = Sequence[Change]


class Stopped(Exception):
    """`stop` came while a sink (or the dead-letter destination) was failing."""


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


def joined(sinks: Sequence[Sink], checkpoint: object) -> bool:
    """Whether the relay's only sink writes `checkpoint` in its own transactions.

    A sink with a ``join(checkpoint)`` method (`rowcast.sinks.kafka.KafkaSink.join`)
    that returns True commits each batch with the position of its last transaction,
    so a relay killed at any moment resumes right after the last batch committed and
    the destination's transactional readers see every change once. With other sinks
    beside it (which a Kafka transaction cannot wait for), or another checkpoint,
    delivery stays at least once.
    """
    join = getattr(sinks[0], "join", None) if len(sinks) == 1 else None
    return bool(join(checkpoint)) if join is not None else False


def _size(batch: Sequence[Transaction]) -> int:
    return sum(len(transaction) for transaction in batch)


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
        self._pools: list[ThreadPoolExecutor] | None = None

    def start(self) -> None:
        """Give each sink a thread of its own, always the same one, when there are several."""
        if len(self.sinks) > 1:
            self._pools = [
                ThreadPoolExecutor(1, thread_name_prefix=f"rowcast-relay-sink{i}")
                for i in range(len(self.sinks))
            ]

    def shutdown(self) -> None:
        for pool in self._pools or ():
            pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ a batch

    def deliver(self, batch: Sequence[Transaction]) -> bool:
        """Every sink has `batch` (or dead-lettered its poison): True; stopped first: False.

        Raises `Refused` for a refusal under ``"stop"``, any exception but a `SinkError`
        from a sink at once, and the last `SinkError` after `max_attempts`.
        """
        try:
            return self._deliver(batch)
        except Stopped:
            log.warning(
                "stopped before every sink had the batch; it is delivered again on restart",
                extra={"event": "abandoned", "changes": _size(batch)},
            )
            return False

    def _deliver(self, batch: Sequence[Transaction]) -> bool:
        count = _size(batch)
        pending = list(range(len(self.sinks)))
        done: set[int] = set()
        attempt = 0
        while True:
            sent = self._send(batch, pending)
            for i in pending:
                if i not in sent:
                    self._acked(i, count)
                    done.add(i)
            errors: dict[int, SinkError] = {}
            for i, error in sent.items():
                if not isinstance(error, SinkError):
                    raise error
                errors[i] = error
            for i in sorted(errors):
                error = errors[i]
                if isinstance(error, PermanentSinkError) and self.modes[i] != RETRY:
                    del errors[i]
                    others = len(done) == len(self.sinks) - 1 and not errors
                    self._isolate(i, batch, error, others)
                    done.add(i)
            if not errors:
                return True
            attempt += 1
            pause = self.pause(attempt)
            for i, error in sorted(errors.items()):
                self._failed(i, error, attempt, pause)
            pending = sorted(errors)
            if self.stopping.wait(pause):
                raise Stopped

    def _send(self, batch: Sequence[Transaction], pending: list[int]) -> dict[int, Exception]:
        """One delivery attempt to each pending sink: the errors by sink index."""
        if self._pools is None:
            try:
                self.sinks[0].deliver(batch)
            except Exception as error:
                return {0: error}
            return {}
        futures = {i: self._pools[i].submit(self.sinks[i].deliver, batch) for i in pending}
        errors: dict[int, Exception] = {}
        for i, future in futures.items():
            failure = future.exception()
            if failure is not None:
                if not isinstance(failure, Exception):
                    raise failure
                errors[i] = failure
        return errors

    def _call(self, i: int, transaction: Transaction) -> None:
        """Deliver one transaction to sink `i`, in that sink's own thread."""
        if self._pools is None:
            self.sinks[i].deliver([transaction])
        else:
            self._pools[i].submit(self.sinks[i].deliver, [transaction]).result()

    # ------------------------------------------------------------------ the poison

    def _isolate(
        self, i: int, batch: Sequence[Transaction], error: PermanentSinkError, others: bool
    ) -> None:
        """Sink `i` refused `batch`: deliver it one transaction at a time, and stop at, or
        dead-letter, each one it refuses. `others`: every other sink has the batch."""
        for k, transaction in enumerate(batch):
            refusal = error if len(batch) == 1 else self._alone(i, transaction)
            if refusal is None:
                continue
            self.stats.sinks[i].refused += 1
            if self.modes[i] == STOP:
                raise Refused(self.stats.sinks[i].url, transaction, refusal, k if others else 0)
            self._bury(i, transaction, refusal)

    def _alone(self, i: int, transaction: Transaction) -> PermanentSinkError | None:
        """Deliver `transaction` alone to sink `i`, retrying transient failures: its refusal."""
        attempt = 0
        while True:
            try:
                self._call(i, transaction)
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

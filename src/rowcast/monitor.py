"""Watching a running relay or consumer: its lag against the source's head, stalls, reports.

`Monitor` is the thread: every `sample` seconds it calls `watch` (a relay's
`HeadWatch`); every `interval` seconds, and once more when it stops, it saves
`build()` (`relay_report`, `consumer_report`) to `store` as the report of the
checkpoint's name (`rowcast.checkpoint.report` has the format). A report that
cannot be saved is logged (once per distinct error) and never stops the work:
reports are for people, positions for correctness.
Lag against the source's head, and stalls: what a relay's monitor works out each second.

`LagMeter` turns one-second samples of the source's head into a lag in seconds
that means something: 0 while the reader's position is at the head (a relay with
nothing to do is not behind, however old its last change), else how long the head
has been past the position (so the lag of a stuck relay grows, one second a
second). Precisely, the lag is ``now - t`` where ``t`` is the first sample that
found the head past the latest sample at or before the position: a lower bound of
the age of the oldest change not yet delivered, exact to a sample interval.

`HeadWatch` is the relay's: it asks the source (`rowcast.sources.base.LogSource.health`:
a `rowcast.sources.health.LogHealth`), keeps the lag, the head and the log's health
in `rowcast.metrics.RelayStats`, and says when the relay *stalls*: its position has
not moved for `stall_after` seconds while the head was past it all that time (log
record ``stalled``, then ``unstalled`` when it moves again).
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ._url import masked
from .checkpoint.report import FORMAT, Reporting
from .metrics import RateMeter, RelayStats

if TYPE_CHECKING:
    from .consume.stats import ConsumerStats

__all__ = ["HeadWatch", "LagMeter", "Monitor", "consumer_report", "relay_report", "source_url"]

log = logging.getLogger("rowcast.report")
relay_log = logging.getLogger("rowcast.relay")

_KEEP = 100_000  # samples of the head kept (a day of seconds); older ones are forgotten


class Ends(Protocol):
    """What `Monitor.run` records a run's end in (a relay's or a consumer's stats)."""

    state: str

    def note_error(self, text: str) -> None: ...


class Monitor:
    """Calls `watch` every `sample` seconds and saves `build()` to `store` every
    `interval` seconds, in a daemon thread, from `start` to `stop` (module docstring)."""

    def __init__(
        self,
        build: Callable[[], dict[str, Any]],
        store: Reporting | None,
        *,
        interval: float = 5.0,
        watch: Callable[[], None] | None = None,
        sample: float = 1.0,
        hung_after: float = 5.0,
    ) -> None:
        self.build = build
        self.store = store
        self.interval = interval
        self.watch = watch
        self.sample = min(sample, interval) if interval > 0 else sample
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed: str | None = None  # the last error saving a report, logged once
        #: seconds a call of `watch` may take before it is said not to answer
        self.hung_after = max(hung_after, 2 * self.sample)
        self._watching: threading.Thread | None = None  # the last call of `watch`
        self._began = 0.0  # time.monotonic() of that call
        self._hung = False  # it has not returned within `hung_after`: said once

    def start(self) -> None:
        """Save the first report now, then watch and report in a thread."""
        self.report()
        self._thread = threading.Thread(target=self._loop, name="rowcast-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread and save the last report (idempotent)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._done.set()
        thread.join(30)
        watching = self._watching
        if watching is not None:  # a probe that answers: over before the source closes
            watching.join(self.hung_after)
        self.report()

    def run(self, work: Callable[[], None], stats: Ends) -> None:
        """`work()` between `start` and `stop`, its end in `stats`: failed with the
        error it raised (raised again), or stopped."""
        self.start()
        try:
            work()
        except BaseException as error:
            stats.state = "failed"
            stats.note_error(" ".join(str(error).split()) or type(error).__name__)
            raise
        else:
            stats.state = "stopped"
        finally:
            self.stop()

    def report(self) -> None:
        """Save one report now (errors logged, never raised)."""
        if self.store is None:
            return
        try:
            self.store.save_report(self.build())
        except Exception as error:
            text = str(error)
            if text != self._failed:
                log.warning(
                    "cannot save the report for rowcast status: %s",
                    text,
                    extra={"event": "report_error", "error": text},
                )
            self._failed = text
        else:
            self._failed = None

    def _loop(self) -> None:
        next_report = time.monotonic() + self.interval
        while not self._done.wait(self.sample):
            self._look()
            if self.interval > 0 and time.monotonic() >= next_report:
                next_report = time.monotonic() + self.interval
                self.report()

    def _look(self) -> None:
        """Call `watch` in a thread of its own and wait a sample for it; while a call has
        not returned (a server that took the probe's connection and went silent), start
        no other, and report on: a report gone stale says the relay has stopped."""
        if self.watch is None:
            return
        watching, now = self._watching, time.monotonic()
        if watching is not None and watching.is_alive():
            if now - self._began >= self.hung_after:
                self._hang(now - self._began)
            return
        if self._hung:
            self._hung = False
            relay_log.info(
                "the source answers again, after %.0fs",
                now - self._began,
                extra={"event": "source_answers"},
            )
        self._began = now
        watching = self._watching = threading.Thread(
            target=self._watch, name="rowcast-monitor-watch", daemon=True
        )
        watching.start()
        watching.join(self.sample)

    def _hang(self, waited: float) -> None:
        """The last call of `watch` has not returned for `waited` seconds: said once in
        the log, and in the stats (`HeadWatch.hung`) until it returns."""
        hung = getattr(self.watch, "hung", None)
        if hung is not None:
            hung(waited)
        if not self._hung:
            self._hung = True
            relay_log.warning(
                "asking the source about its log has not answered for %.0fs; the lag and "
                "the log's health are not updated until it does",
                waited,
                extra={"event": "source_error", "error": "the source does not answer"},
            )

    def _watch(self) -> None:
        assert self.watch is not None
        try:
            self.watch()
        except Exception:  # a bug in watching must not end the relay
            log.exception("watching the source failed")


class LagMeter:
    """The lag in seconds of a reader, from samples of the head (see the module)."""

    def __init__(self) -> None:
        # (time, head number or None); the first is the last sample at or before the
        # position, when one is known
        self._samples: collections.deque[tuple[float, int | None]] = collections.deque(maxlen=_KEEP)
        self._behind_since: float | None = None  # the first sample behind, since caught up

    def sample(self, health: Any, now: float) -> float:
        """The lag at `now`, given what the server said at `now`."""
        samples = self._samples
        if health.caught_up:
            samples.clear()
            samples.append((now, health.head_number))
            self._behind_since = None
            return 0.0
        if self._behind_since is None:
            self._behind_since = now
        samples.append((now, health.head_number))
        position = health.position_number
        if position is None:  # nothing to compare heads with: behind since first seen so
            return now - self._behind_since
        while len(samples) > 1 and _at_or_before(samples[1][1], position):
            samples.popleft()  # samples[0]: the last head the position has reached
        if _at_or_before(samples[0][1], position):
            return now - samples[1][0] if len(samples) > 1 else 0.0
        return now - samples[0][0]  # never seen at the position: behind since then

    def reset(self) -> None:
        self._samples.clear()
        self._behind_since = None


def _at_or_before(head: int | None, position: int) -> bool:
    return head is not None and head <= position


class HeadWatch:
    """Each call: ask `source` about the log at the relay's position; keep lag and stall
    in `stats` (see the module). Errors of the source are kept in ``stats.source_error``."""

    def __init__(self, stats: RelayStats, source: Any, stall_after: float) -> None:
        self.stats = stats
        self.source = source
        self.stall_after = stall_after
        self.meter = LagMeter()
        self._position: str | None = None
        self._moved = time.monotonic()  # when the position last changed

    def hung(self, seconds: float) -> None:
        """The last call has not returned for `seconds` (`Monitor`): in the stats until a
        call returns, the lag with it (it would stand still)."""
        stats = self.stats
        text = f"asking the source about its log has not answered for {seconds:.0f}s"
        if not (stats.source_error or "").startswith("asking the source"):
            stats.note_error(f"source: {text}")
        stats.source_error = text
        stats.lag_seconds = None

    def __call__(self) -> None:
        stats = self.stats
        position = stats.reached or stats.position or stats.resumed_from
        health = getattr(self.source, "health", None)
        if health is None:
            return
        try:
            found = health(position)
        except Exception as error:  # the server is away: keep the last values, say so
            text = " ".join(str(error).split()) or type(error).__name__
            if stats.source_error != text:
                relay_log.warning(
                    "cannot ask the source about its log: %s",
                    text,
                    extra={"event": "source_error", "error": text},
                )
                stats.note_error(f"source: {text}")
            stats.source_error = text
            return
        stats.source_error = None
        now = time.monotonic()
        if found.head is not None:
            stats.head, stats.head_at = found.head, time.time()
        stats.health = found
        stats.lag_bytes = found.behind_bytes
        stats.lag_changes = found.behind_changes
        if found.head is None:
            return  # no head to measure against: the commit time's lag stands
        stats.lag_seconds = lag = self.meter.sample(found, now)
        if position != self._position:
            self._position, self._moved = position, now
        stalled = lag >= self.stall_after and now - self._moved >= self.stall_after
        if stalled and not stats.stalled:
            relay_log.warning(
                "stalled: the position %s has not moved for %.0fs while the source's head "
                "went on to %s (lag %.0fs)",
                position,
                now - self._moved,
                found.head,
                lag,
                extra={"event": "stalled", "position": position, "head": found.head, "lag": lag},
            )
        elif stats.stalled and not stalled:
            relay_log.info(
                "moving again at %s",
                position,
                extra={"event": "unstalled", "position": position},
            )
        stats.stalled = stalled


def _common(kind: str, source: str, sinks: Sequence[str], interval: float) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "kind": kind,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "source": source,
        "sinks": list(sinks),
        "interval": interval,
    }


def source_url(source: Any) -> str:
    """The URL of `source`, password masked, as far as it tells it."""
    target = getattr(source, "_target", None)  # a LogSource's own, already masked
    if isinstance(target, str):
        return target
    url = getattr(source, "url", None)
    shown = getattr(url, "masked", url)
    return masked(shown) if isinstance(shown, str) else type(source).__name__


def relay_report(
    stats: RelayStats,
    rate: RateMeter,
    *,
    source: Any,
    checkpoint: str,
    interval: float,
    stall_after: float,
) -> dict[str, Any]:
    """A relay's report (`rowcast.checkpoint.report`) from its `stats`, now."""
    health = stats.health
    slot = getattr(source, "slot", None)
    if slot is None:  # a ProcessSource: its source of this process knows the slot
        slot = getattr(getattr(source, "_local", None), "slot", None)
    failing = stats.failing
    last_error = stats.last_error
    if failing:
        last_error = "; ".join(f"{sink.url}: {sink.failing}" for sink in failing)
    return {
        **_common("relay", source_url(source), [sink.url for sink in stats.sinks], interval),
        "slot": slot if isinstance(slot, str) else None,
        "checkpoint": checkpoint,
        "state": stats.state_now,
        "stalled": stats.stalled,
        "position": stats.reached or stats.position or stats.resumed_from,
        "checkpoint_position": stats.position or stats.resumed_from,
        "head": stats.head,
        "head_at": stats.head_at,
        "lag_seconds": stats.current_lag,
        "lag_bytes": stats.lag_bytes,
        "lag_changes": stats.lag_changes,
        "rate": round(rate(stats.changes), 3),
        "changes": stats.changes,
        "errors": stats.errors,
        "dead_letters": sum(sink.dead_letters for sink in stats.sinks),
        "last_commit": stats.last_commit,
        "last_error": last_error,
        "last_error_at": stats.last_error_at,
        "log": health.to_dict() if health is not None else None,
        "started_at": stats.started,
        "reported_at": time.time(),
        "stall_after": stall_after,
    }


def consumer_report(
    stats: ConsumerStats, rate: RateMeter, *, broker: str, handler: Any, interval: float
) -> dict[str, Any]:
    """A consumer's report (`rowcast.checkpoint.report`) from its `stats`, now."""
    name = getattr(handler, "__qualname__", None) or type(handler).__qualname__
    module = getattr(handler, "__module__", None)
    last_error = f"broker: {stats.failing}" if stats.failing else stats.last_error
    return {
        **_common("consumer", broker, [f"{module}:{name}" if module else name], interval),
        "slot": None,
        "state": stats.state_now,
        "stalled": False,
        "position": stats.position,
        "head": None,
        "head_at": None,
        "lag_seconds": stats.lag,
        "lag_bytes": None,
        "lag_changes": None,
        "rate": round(rate(stats.handled), 3),
        "changes": stats.handled,
        "errors": stats.errors + stats.retries,
        "parked": stats.parked,
        "duplicates": stats.duplicates,
        "last_commit": stats.last_commit,
        "last_error": last_error,
        "last_error_at": stats.last_error_at,
        "log": None,
        "started_at": stats.started,
        "reported_at": time.time(),
    }

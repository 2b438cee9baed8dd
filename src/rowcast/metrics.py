"""What a running relay counts, and serving it to Prometheus (``--metrics-port``).

`RelayStats` is written by the relay's delivery thread only, and read by anyone
(the live line, progress logs, a Prometheus scrape): plain counters, no lock,
a reader may see one batch's counts a moment early or late.

Prometheus metrics, collected from `RelayStats` when scraped (nothing on the
hot path)::

    rowcast_relay_changes_delivered_total{sink}       changes a sink acknowledged
    rowcast_relay_transactions_delivered_total        transactions acknowledged by every sink
    rowcast_relay_errors_total{component}             failed deliveries (component: the sink's
                                                      URL) and checkpoint saves ("checkpoint")
    rowcast_relay_lag_seconds                         delivery time minus commit time of the
                                                      last change delivered
    rowcast_relay_last_commit_timestamp_seconds       commit time of the last change delivered
    rowcast_relay_sink_up{sink}                       0 while a sink is failing, else 1
    rowcast_relay_sink_failed_attempts{sink}          failed attempts in a row at the batch
                                                      a sink is failing (0 when it is not)
    rowcast_relay_sink_last_error_info{sink,error}    1, while a sink is failing: its last error
    rowcast_relay_refused_transactions_total{sink}    transactions a sink refused for good
    rowcast_relay_dead_letters_total{sink}            changes sent to the dead-letter destination
    rowcast_lag_seconds                               lag against the source's head (0: at the
                                                      head; growing while stuck), as in
                                                      ``rowcast status`` and the status line
    rowcast_lag_bytes                                 bytes of log between position and head
    rowcast_source_head_position                      the source's head as a number
                                                      (`rowcast.sources.health.LogHealth`)
    rowcast_position                                  the relay's position, as the same number
    rowcast_stalled                                   1 while the relay is stalled
    rowcast_log_retained_bytes                        WAL the PostgreSQL slot retains

`serve` serves any Prometheus collector over HTTP: the relay's (`serve_metrics`)
and the consumer's (`rowcast.consume.stats.serve_metrics`).
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Iterator, Sequence
from typing import Any

from .backends import missing_extra
from .errors import ConfigError

__all__ = ["RateMeter", "RelayStats", "SinkStats", "serve", "serve_metrics"]


@dataclasses.dataclass
class SinkStats:
    """One sink's counts."""

    url: str
    delivered: int = 0  #: changes acknowledged
    errors: int = 0  #: failed deliveries
    failing: str | None = None  #: the last error while the sink is failing, else None
    attempts: int = 0  #: failed attempts in a row at the batch it is failing (0: delivering)
    refused: int = 0  #: transactions refused for good (`PermanentSinkError`)
    dead_letters: int = 0  #: changes of refused transactions sent to the dead-letter destination


class RelayStats:
    """Counters of one relay run (see the module docstring)."""

    def __init__(self, sink_urls: Sequence[str]) -> None:
        self.started = time.time()
        self.sinks = [SinkStats(url) for url in sink_urls]
        self.changes = 0  #: changes delivered to every sink and checkpointed
        self.transactions = 0
        self.batches = 0
        self.checkpoint_errors = 0
        self.position: str | None = None  #: the last position saved to the checkpoint
        self.resumed_from: str | None = None  #: the checkpoint's position at start
        self.last_commit: float | None = None  #: commit time (``ts``) of the last change delivered
        self.lag: float | None = None  #: delivery time minus `last_commit`, at that delivery
        #: "starting", "running", "stopped" or "failed" ("retrying" is `state_now`'s)
        self.state = "starting"
        #: where everything is handled up to: the last delivered position, or the source's
        #: position when it had nothing more (reported; never saved)
        self.reached: str | None = None
        self.head: str | None = None  #: the source's head at `head_at` (`rowcast.monitor`)
        self.head_at: float | None = None
        self.lag_seconds: float | None = None  #: lag against the head (`rowcast.monitor`)
        self.lag_bytes: int | None = None
        self.lag_changes: int | None = None
        self.stalled = False
        #: the source's last `rowcast.sources.health.LogHealth`, or None
        self.health: Any = None
        self.source_error: str | None = None  #: while the source cannot be asked about its log
        self.checkpoint_failing: str | None = None  #: the last error while saves fail
        self.last_error: str | None = None  #: the last failure of any kind, and when
        self.last_error_at: float | None = None

    def note_error(self, text: str) -> None:
        """Keep `text` as the last error, now."""
        self.last_error, self.last_error_at = text, time.time()

    @property
    def current_lag(self) -> float | None:
        """The lag in seconds everyone shows: against the head when the source tells its
        head, else delivery time minus commit time of the last change delivered."""
        return self.lag_seconds if self.lag_seconds is not None else self.lag

    @property
    def state_now(self) -> str:
        """`state`, or ``"retrying"`` while running with a sink or the checkpoint failing."""
        if self.state == "running" and (self.failing or self.checkpoint_failing):
            return "retrying"
        return self.state

    @property
    def errors(self) -> int:
        """Every failed delivery and checkpoint save so far."""
        return self.checkpoint_errors + sum(s.errors for s in self.sinks)

    @property
    def failing(self) -> list[SinkStats]:
        """The sinks failing right now."""
        return [s for s in self.sinks if s.failing is not None]


class RateMeter:
    """Changes per second over the last `window` seconds, from samples of a running total."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    def __call__(self, total: int, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        samples = self._samples
        samples.append((now, total))
        while len(samples) > 2 and now - samples[1][0] >= self.window:
            samples.popleft()
        first_time, first_total = samples[0]
        elapsed = now - first_time
        return (total - first_total) / elapsed if elapsed > 0 else 0.0


class _Collector:
    """A prometheus_client collector that reads `RelayStats` at scrape time."""

    def __init__(self, stats: RelayStats) -> None:
        self.stats = stats

    def describe(self) -> list[Any]:
        return []  # collected fresh on each scrape; nothing to register up front

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self.stats
        delivered = CounterMetricFamily(
            "rowcast_relay_changes_delivered",
            "Changes a sink acknowledged.",
            labels=["sink"],
        )
        up = GaugeMetricFamily(
            "rowcast_relay_sink_up", "0 while a sink is failing, else 1.", labels=["sink"]
        )
        errors = CounterMetricFamily(
            "rowcast_relay_errors",
            "Failed deliveries (per sink) and checkpoint saves (component=checkpoint).",
            labels=["component"],
        )
        attempts = GaugeMetricFamily(
            "rowcast_relay_sink_failed_attempts",
            "Failed attempts in a row at the batch a sink is failing (0 when it is not).",
            labels=["sink"],
        )
        last_error = GaugeMetricFamily(
            "rowcast_relay_sink_last_error_info",
            "1 while a sink is failing, labelled with its last error.",
            labels=["sink", "error"],
        )
        refused = CounterMetricFamily(
            "rowcast_relay_refused_transactions",
            "Transactions a sink refused for good.",
            labels=["sink"],
        )
        dead = CounterMetricFamily(
            "rowcast_relay_dead_letters",
            "Changes sent to the dead-letter destination.",
            labels=["sink"],
        )
        for sink in stats.sinks:
            delivered.add_metric([sink.url], sink.delivered)
            up.add_metric([sink.url], 0 if sink.failing else 1)
            errors.add_metric([sink.url], sink.errors)
            attempts.add_metric([sink.url], sink.attempts if sink.failing else 0)
            if sink.failing:
                last_error.add_metric([sink.url, sink.failing[:300]], 1)
            refused.add_metric([sink.url], sink.refused)
            dead.add_metric([sink.url], sink.dead_letters)
        errors.add_metric(["checkpoint"], stats.checkpoint_errors)
        yield from (delivered, up, errors, attempts, last_error, refused, dead)
        yield CounterMetricFamily(
            "rowcast_relay_transactions_delivered",
            "Transactions acknowledged by every sink and checkpointed.",
            value=stats.transactions,
        )
        if stats.lag is not None:
            yield GaugeMetricFamily(
                "rowcast_relay_lag_seconds",
                "Delivery time minus commit time of the last change delivered.",
                value=stats.lag,
            )
        if stats.last_commit is not None:
            yield GaugeMetricFamily(
                "rowcast_relay_last_commit_timestamp_seconds",
                "Commit time (UTC epoch seconds) of the last change delivered.",
                value=stats.last_commit,
            )
        yield from _lag_metrics(stats)


def _lag_metrics(stats: RelayStats) -> Iterator[Any]:
    """The metrics that agree with ``rowcast status`` and the status line."""
    from prometheus_client.core import GaugeMetricFamily

    health = stats.health
    for name, text, value in (
        (
            "lag_seconds",
            "Lag against the source's head, as rowcast status shows it.",
            stats.current_lag,
        ),
        ("lag_bytes", "Bytes of log between the position and the source's head.", stats.lag_bytes),
        (
            "source_head_position",
            "The source's head as a number (PostgreSQL: the LSN; MySQL: file number * 2**32 "
            "+ offset).",
            health.head_number if health else None,
        ),
        (
            "position",
            "The relay's position, as the same number.",
            health.position_number if health else None,
        ),
        (
            "log_retained_bytes",
            "WAL the PostgreSQL slot retains.",
            health.retained_bytes if health else None,
        ),
    ):
        if value is not None:
            yield GaugeMetricFamily(f"rowcast_{name}", text, value=value)
    yield GaugeMetricFamily(
        "rowcast_stalled",
        "1 while the position has not moved for --stall-after seconds behind a moving head.",
        value=1 if stats.stalled else 0,
    )


def serve_metrics(stats: RelayStats, port: int, addr: str = "0.0.0.0") -> Any:
    """Serve `stats` for Prometheus at ``http://<addr>:<port>/metrics``; returns the server.

    Needs prometheus-client (`ConfigError` naming the extra); a port in use is a
    `ConfigError` too. Stop it with ``server.shutdown()``.
    """
    return serve(_Collector(stats), port, addr)


def serve(collector: Any, port: int, addr: str = "0.0.0.0") -> Any:
    """Serve `collector` at ``http://<addr>:<port>/metrics`` on a daemon thread; returns the server.

    The collector is read at each scrape (``auto_describe`` off: nothing is collected
    up front). Needs prometheus-client (a `ConfigError` naming the extra); a port in
    use is a `ConfigError` too. Stop it with ``server.shutdown()``.
    """
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError as e:
        raise missing_extra("metrics", "--metrics-port", e) from e
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    try:
        server, _thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as e:
        raise ConfigError(f"cannot serve metrics on {addr}:{port}: {e.strerror or e}") from e
    return server

"""What a running consumer counts, and the Prometheus view of it (``--metrics-port``).

`ConsumerStats` is written by the consumer's fetching thread only and read by anyone
(the live line, progress logs, a scrape): plain counters, no lock.

Prometheus metrics, collected from `ConsumerStats` when scraped::

    rowcast_consume_changes_received_total     messages fetched from the broker
    rowcast_consume_changes_handled_total      changes the handler returned for (acknowledged)
    rowcast_consume_duplicates_total           re-deliveries skipped by change id
    rowcast_consume_parked_total               changes parked in the dead-letter place
    rowcast_consume_handler_errors_total       failed handler calls (each retry counts)
    rowcast_consume_broker_errors_total        failed broker operations (retried)
    rowcast_consume_lag_seconds                handling time minus commit time of the last
                                               change handled
    rowcast_consume_broker_up                  0 while the broker is failing, else 1
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from ..metrics import serve

__all__ = ["ConsumerStats", "serve_metrics"]


class ConsumerStats:
    """Counters of one consumer run (see the module docstring)."""

    def __init__(self) -> None:
        self.started = time.time()
        self.received = 0  #: messages fetched
        self.handled = 0  #: changes the handler returned for
        self.duplicates = 0  #: re-deliveries skipped
        self.parked = 0  #: messages written to the dead-letter place
        self.retries = 0  #: failed handler calls
        self.errors = 0  #: failed broker operations
        self.failing: str | None = None  #: the last broker error while it is failing
        self.last_commit: float | None = None  #: ``ts`` of the last change handled
        self.lag: float | None = None  #: handling time minus `last_commit`
        self.position: str | None = None  #: source position of the last change handled
        self.state = "starting"  #: "starting", "running", "stopped", "failed"
        self.last_error: str | None = None  #: the last failure (broker, handler), and when
        self.last_error_at: float | None = None

    def note_error(self, text: str) -> None:
        """Keep `text` as the last error, now."""
        self.last_error, self.last_error_at = text, time.time()

    @property
    def state_now(self) -> str:
        """`state`, or ``"retrying"`` while running with the broker failing."""
        return "retrying" if self.state == "running" and self.failing else self.state


class _Collector:
    def __init__(self, stats: ConsumerStats) -> None:
        self.stats = stats

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self.stats
        for name, text, value in (
            ("changes_received", "Messages fetched from the broker.", stats.received),
            ("changes_handled", "Changes the handler returned for.", stats.handled),
            ("duplicates", "Re-deliveries skipped by change id.", stats.duplicates),
            ("parked", "Changes parked in the dead-letter place.", stats.parked),
            ("handler_errors", "Failed handler calls.", stats.retries),
            ("broker_errors", "Failed broker operations.", stats.errors),
        ):
            yield CounterMetricFamily(f"rowcast_consume_{name}", text, value=value)
        yield GaugeMetricFamily(
            "rowcast_consume_broker_up",
            "0 while the broker is failing, else 1.",
            value=0 if stats.failing else 1,
        )
        if stats.lag is not None:
            yield GaugeMetricFamily(
                "rowcast_consume_lag_seconds",
                "Handling time minus commit time of the last change handled.",
                value=stats.lag,
            )


def serve_metrics(stats: ConsumerStats, port: int, addr: str = "0.0.0.0") -> Any:
    """Serve `stats` for Prometheus at ``http://<addr>:<port>/metrics``; returns the server.

    A missing prometheus-client or a port in use is a `ConfigError` (`rowcast.metrics.serve`).
    """
    return serve(_Collector(stats), port, addr)

"""``rowcast consume``: relayed changes from a broker to a handler of yours (`rowcast.consume`)."""

from __future__ import annotations

import logging
import os
import re
import sys
from urllib.parse import parse_qsl, urlsplit

import click
from rich.console import Console
from rich.text import Text

from ..checkpoint import Checkpoint, open_checkpoint
from ..consume import load_handler, open_consumer
from ..consume.stats import ConsumerStats, serve_metrics
from ..metrics import RelayStats
from .common import (
    LOG_FORMAT,
    METRICS_PORT,
    in_an_existing_directory,
    serving_metrics,
    stop_on_signals,
)
from .config_file import config_option
from .relay_console import RelayDisplay
from .urls import Url

__all__ = ["consume"]

log = logging.getLogger("rowcast.consume")


class ConsumeDisplay(RelayDisplay):
    """`rowcast relay`'s live line and progress records, showing a consumer's counts."""

    def __init__(self, stats: ConsumerStats, log_format: str, interval: float = 10.0) -> None:
        super().__init__(RelayStats(()), log_format, interval)
        self.consumer = stats

    def line(self) -> Text:
        stats = self.consumer
        rate = self._rate(stats.handled)
        lag = "-" if stats.lag is None else f"{stats.lag:.1f}s"
        text = Text.assemble(
            ("consuming ", "bold"),
            f"{stats.handled:,} handled  {rate:,.0f}/s  lag {lag}  "
            f"{stats.duplicates:,} duplicates  {stats.parked:,} parked",
        )
        if stats.failing:
            text.append(f"  broker failing: {stats.failing}", style="red")
        return text

    def progress(self) -> None:
        stats = self.consumer
        rate = self._rate(stats.handled)
        log.info(
            "%d handled, %.0f/s, %d duplicates, %d parked",
            stats.handled,
            rate,
            stats.duplicates,
            stats.parked,
            extra={
                "event": "progress",
                "received": stats.received,
                "handled": stats.handled,
                "rate": round(rate, 1),
                "duplicates": stats.duplicates,
                "parked": stats.parked,
                "retries": stats.retries,
                "errors": stats.errors,
                "lag": None if stats.lag is None else round(stats.lag, 3),
            },
        )


@click.command()
@config_option
@click.argument("url", type=Url("consumer"))
@click.option(
    "--handler",
    "handler_spec",
    required=True,
    metavar="MODULE:FUNCTION",
    help="Your function, called with a list of rowcast.Change (e.g. myapp.handlers:index); "
    "the current directory is importable.",
)
@click.option("--group", default="rowcast", show_default=True, help="The consumer group name.")
@click.option(
    "--workers",
    type=click.IntRange(1, 1024),
    default=1,
    show_default=True,
    help="Handler threads; one row's changes always go to the same one, in order.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    default=100,
    show_default=True,
    help="At most this many changes per handler call.",
)
@click.option(
    "--attempts",
    type=click.IntRange(1, 1000),
    default=5,
    show_default=True,
    help="Handler calls for a failing batch before its failing rows are parked.",
)
@click.option(
    "--backoff",
    type=click.FloatRange(0.001, 3600),
    default=0.2,
    show_default=True,
    help="Seconds before the first retry; doubled for each next one (at most 10 s).",
)
@click.option(
    "--dedupe-window",
    type=click.IntRange(0, 100_000_000),
    default=100_000,
    show_default=True,
    help="How many recent change ids to remember, to skip re-deliveries (0: none).",
)
@click.option(
    "--report",
    "report_url",
    metavar="URL",
    type=Url("checkpoint"),
    help="Save this consumer's report there every few seconds, for rowcast status: a "
    "checkpoint store URL (a file path, sqlite:///x.db, postgresql://, mysql://, redis://), "
    "named by ?name= (default consumer-<group>).",
)
@LOG_FORMAT
@METRICS_PORT
def consume(
    url: str,
    handler_spec: str,
    group: str,
    workers: int,
    batch_size: int,
    attempts: int,
    backoff: float,
    dedupe_window: int,
    report_url: str | None,
    log_format: str,
    metrics_port: int | None,
) -> None:
    """Call --handler with the changes a relay delivered to the broker at URL, at least once.

    URL is redis://host:6379/0 (?stream=KEY, or every rowcast:* stream),
    nats://host:4222 (?stream=rowcast&subject=rowcast.>),
    amqp://user:password@host:5672/%2F (?queue=NAME&bind=KEY) or
    kafka://host:9092?topics=T1,T2 (a consumer group; ^rowcast\\..* for every
    per-table topic); see rowcast.consume for every option. A change is acknowledged
    once the handler returned for it; a batch that keeps failing has its failing rows
    parked in the dead-letter place.

    The stream, key or queue must exist (the relay's sink creates its stream): an
    unknown one is an error that lists those there are. Add create=true to the URL
    to create it (e.g. nats://host:4222?stream=orders&create=true), so the consumer
    may start before the relay; a RabbitMQ queue must exist before the relay
    publishes, so start a group's first consumer with ?create=true.

    Stop with Ctrl-C (once or more) or SIGTERM: the batches being handled finish
    and are acknowledged, and the exit status is 0. A bad URL or handler, an unknown
    stream or queue, or an unreachable broker exits with status 2 before anything
    is handled. With --report, rowcast status shows it (state, rate, lag, last
    error).
    """
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # --handler myapp:fn from the project directory
    handler = load_handler(handler_spec)
    report: Checkpoint | None = None
    if report_url is not None:
        in_an_existing_directory("--report", report_url)
        default = "consumer-" + (re.sub(r"[^A-Za-z0-9_.-]+", "-", group).strip("-.") or "rowcast")
        has_name = "://" in report_url and "name" in dict(parse_qsl(urlsplit(report_url).query))
        report = open_checkpoint(report_url, "default" if has_name else default[:200])
    consumer = open_consumer(
        url,
        handler,
        group=group,
        workers=workers,
        batch_size=batch_size,
        attempts=attempts,
        backoff=backoff,
        dedupe_window=dedupe_window,
        report=report,
    )
    with (
        serving_metrics(serve_metrics, consumer.stats, metrics_port),
        stop_on_signals(consumer.stop, "finishing the changes being handled"),
        ConsumeDisplay(consumer.stats, log_format),
    ):
        consumer.run()
    if report is not None:
        report.close()
    stats = consumer.stats
    if log_format == "text":
        Console(stderr=True, highlight=False).print(
            f"consumed {consumer.url} as {group!r}: {stats.handled:,} changes handled, "
            f"{stats.duplicates:,} duplicates skipped, {stats.parked:,} parked",
            soft_wrap=True,
        )

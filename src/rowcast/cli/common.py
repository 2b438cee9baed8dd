"""What the commands share: options (``--format``, ``--tables``...), signals, metrics."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

__all__ = [
    "ALLOW_EMPTY",
    "CHANGES_FORMAT",
    "LOG_FORMAT",
    "METRICS_PORT",
    "SNAPSHOT",
    "SNAPSHOT_CHUNK",
    "TABLES",
    "format_option",
    "patterns",
    "serving_metrics",
    "stop_on_signals",
    "stop_on_sigterm",
]

S = TypeVar("S")
_F = TypeVar("_F", bound=Callable[..., Any])


def patterns(values: tuple[str, ...]) -> list[str]:
    """The table patterns of repeated, comma-separated ``--tables`` options."""
    return [p.strip() for value in values for p in value.split(",") if p.strip()]


def format_option(json_help: str) -> Callable[[_F], _F]:
    """``--format table|json``, the same on every command."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help=f"Readable rows, or {json_help}.",
    )


CHANGES_FORMAT = format_option("one Change.to_json() per line")
LOG_FORMAT = click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines on stderr as text (a live status line on a terminal) or JSON objects.",
)
TABLES = click.option(
    "--tables",
    "-t",
    multiple=True,
    metavar="PATTERN",
    help="Only these tables: patterns such as 'shop.*' or 'orders' "
    "(repeat the option or separate with commas).",
)
SNAPSHOT = click.option(
    "--snapshot",
    type=click.Choice(["initial", "never"]),
    default="never",
    show_default=True,
    help="'initial': first emit every existing row of the tables (snapshot=true writes), "
    "then stream from the exact point they were read at; nothing missed or doubled "
    "(MySQL/MariaDB, PostgreSQL, SQLite). Only when there is no position to resume from.",
)
SNAPSHOT_CHUNK = click.option(
    "--snapshot-chunk",
    type=click.IntRange(1, 1_000_000),
    metavar="ROWS",
    help="Rows per snapshot chunk, read by key (default 1000); a relay checkpoints each.",
)
ALLOW_EMPTY = click.option(
    "--allow-empty",
    is_flag=True,
    help="Start even when the URL's database or a --tables pattern names no table yet "
    "(tables created later are captured when they appear); without it that is a typo: "
    "exit status 2, with the tables that exist.",
)
METRICS_PORT = click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    metavar="PORT",
    help="Serve Prometheus metrics at http://0.0.0.0:PORT/metrics.",
)


@contextlib.contextmanager
def serving_metrics(serve: Callable[[S, int], Any], stats: S, port: int | None) -> Iterator[None]:
    """While inside, `serve` (a ``serve_metrics``) shows `stats` on `port`; None: no server.

    The server starts on entry, so a port in use fails before the work begins.
    """
    if port is None:
        yield
        return
    server = serve(stats, port)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def stop_on_sigterm(stop: Callable[[], None]) -> Iterator[None]:
    """While inside, SIGTERM calls `stop` (a source's, a watch's close) instead of killing us."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set signal handlers
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@contextlib.contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """SIGTERM and the first Ctrl-C call `stop`; a second Ctrl-C interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    interrupted = False

    def on_interrupt(signum: int, frame: Any) -> None:
        nonlocal interrupted
        if interrupted:
            raise KeyboardInterrupt
        interrupted = True
        stop()

    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, lambda signum, frame: stop()),
        signal.SIGINT: signal.signal(signal.SIGINT, on_interrupt),
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

"""What the commands share: options (``--format``, ``--tables``...), signals, metrics."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import click

from .._url import existing_directory, masked
from ..backends import scheme_of
from ..errors import ConfigError

__all__ = [
    "ALLOW_EMPTY",
    "CHANGES_FORMAT",
    "LOG_FORMAT",
    "METRICS_PORT",
    "SNAPSHOT",
    "SNAPSHOT_CHUNK",
    "TABLES",
    "format_option",
    "in_an_existing_directory",
    "patterns",
    "serving_metrics",
    "stop_on_signals",
    "stop_on_sigterm",
]

log = logging.getLogger("rowcast.cli")

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


def in_an_existing_directory(option: str, url: str) -> None:
    """A `ConfigError` naming the directory and the fix when the file that the checkpoint
    store `url` of `option` keeps (a file path, ``file://``, ``sqlite://``) is in a
    directory that does not exist: on the command line that is likelier a typo than
    intent, so it is not made (the library's checkpoints make it)."""
    scheme = scheme_of(url)
    if scheme in ("", "file"):
        path = unquote(urlsplit(url).path) if scheme else url
    elif scheme == "sqlite":
        path = unquote(urlsplit(url).path)[1:]  # sqlite:///rel.db, sqlite:////abs.db
        if path in ("", ":memory:") or path.startswith("file:"):
            return  # refused (or taken as it is) by the backend
        if path.startswith("~"):  # SQLite would look for a directory named ~ here
            whole = Path(path).expanduser()
            raise ConfigError(
                f"{option} {masked(url)}: a sqlite:/// URL does not expand '~'; give the "
                f"whole path: sqlite:///{whole}"
            )
    else:
        return  # a server's
    if path and not path.endswith(("/", "\\")):
        existing_directory(f"{option} {masked(url)}", Path(path).expanduser().absolute().parent)


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
def _off_the_main_thread() -> Iterator[Callable[[Callable[[], None]], None]]:
    """While inside, a function for signal handlers: ``call(fn)`` has `fn` called at once
    on a thread of its own.

    A handler runs in the main thread between two of its instructions, perhaps while it
    holds a lock that a stop takes (``threading.Event.set`` takes the lock that
    ``Event.wait`` holds as it wakes up, and a relay or a source waits so between
    polls): a stop called there waits for that lock for ever. `SimpleQueue.put` takes
    none a handler can meet.
    """
    asked: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()

    def serve() -> None:
        while (fn := asked.get()) is not None:
            fn()

    thread = threading.Thread(target=serve, name="rowcast-signals", daemon=True)
    thread.start()
    try:
        yield asked.put
    finally:
        asked.put(None)
        thread.join(5)


@contextlib.contextmanager
def stop_on_sigterm(stop: Callable[[], None]) -> Iterator[None]:
    """While inside, SIGTERM calls `stop` (a source's, a watch's close) instead of killing us."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set signal handlers
        return
    with _off_the_main_thread() as call:
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: call(stop))
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@contextlib.contextmanager
def stop_on_signals(stop: Callable[[], None], doing: str = "") -> Iterator[None]:
    """While inside, SIGTERM and Ctrl-C have `stop` called instead of interrupting.

    A second Ctrl-C (a user pressing it again, ``timeout -s INT`` delivering two) keeps
    the stop clean: a KeyboardInterrupt raised wherever the stop had got to would cut
    it short (a relay's batch abandoned, a tail's triggers left) and end with click's
    ``Aborted!``. It is logged, once, that the stop is under way (what it is `doing`)
    and that SIGKILL quits at once. Once a signal asked for the stop, further ones are
    ignored after the block too: the command is ending. `stop` is called on a thread
    of its own (`_off_the_main_thread`), the log record too.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    interrupts = 0
    stopping = False

    def still_stopping() -> None:
        log.warning(
            "already stopping%s (kill -KILL %d quits at once)",
            f": {doing}" if doing else "",
            os.getpid(),
            extra={"event": "stopping"},
        )

    def on_term(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        call(stop)

    def on_interrupt(signum: int, frame: Any) -> None:
        nonlocal interrupts, stopping
        interrupts += 1
        stopping = True
        call(stop)
        if interrupts == 2:
            call(still_stopping)

    with _off_the_main_thread() as call:
        previous = {
            signal.SIGTERM: signal.signal(signal.SIGTERM, on_term),
            signal.SIGINT: signal.signal(signal.SIGINT, on_interrupt),
        }
        try:
            yield
        finally:
            for signum, handler in previous.items():
                if stopping:  # the command ends: another Ctrl-C must not cut its last steps
                    handler = signal.SIG_IGN
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

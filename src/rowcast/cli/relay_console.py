"""What ``rowcast relay`` shows while it runs: a live line, log lines (text or JSON), progress.

On a terminal (``--log-format text``) a rich live line at the bottom of stderr
shows the rate, the lag and the checkpointed position, and log records print
above it. Elsewhere, and always with ``--log-format json``, a ``progress``
record is logged every `interval` seconds instead. JSON records are one object
per line on stderr::

    {"time":"2024-05-01T12:00:00.123+00:00","level":"info","logger":"rowcast.relay",
     "event":"progress","message":"...","changes":1200,"rate":950.2,"lag":0.41,
     "position":"mysql-bin.000003:1234"}

with the record's own fields (``event``, ``sink``, ``attempt``, ``delay``,
``error``...) beside the standard ones.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sys
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from ..codec import dumps
from ..metrics import RateMeter, RelayStats

__all__ = ["JsonFormatter", "RelayDisplay", "handler", "routed_logs"]

log = logging.getLogger("rowcast.relay")

_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        when = dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")
        line: dict[str, Any] = {
            "time": when,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return dumps(line)


def handler(log_format: str, live: Console | None = None) -> logging.Handler:
    """Where log records go in `log_format`: stderr, as JSON or text (printed above the
    live line of `live`, a terminal's console, when given)."""
    if log_format == "json":
        found: logging.Handler = logging.StreamHandler(sys.stderr)
        found.setFormatter(JsonFormatter())
    elif live is not None:
        from rich.logging import RichHandler

        found = RichHandler(console=live, show_path=False)
    else:
        found = logging.StreamHandler(sys.stderr)
        found.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return found


def _route(to: logging.Handler) -> None:
    # on the root logger: a driver's warning (psycopg, pika...) comes out in the same
    # format, not as a bare line in a JSON log; rowcast's own records propagate to it
    logging.getLogger().addHandler(to)
    logger = logging.getLogger("rowcast")
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)


@contextlib.contextmanager
def routed_logs(log_format: str) -> Iterator[None]:
    """Log records in `log_format` while inside: what a command says while it opens its
    source and sinks, before its display starts (a warning was a bare line in a JSON log)."""
    to = handler(log_format)
    _route(to)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(to)


def _describe_lag(lag: float | None) -> str:
    return "-" if lag is None else f"{lag:.1f}s"


class RelayDisplay:
    """Shows `stats` while inside: the live line on a terminal, else progress records.

    Also routes the ``rowcast`` loggers to stderr in `log_format` for as long.
    """

    def __init__(self, stats: RelayStats, log_format: str, interval: float = 10.0) -> None:
        self.stats = stats
        self.interval = interval
        self.console = Console(stderr=True, highlight=False)
        self.live_line = log_format == "text" and self.console.is_terminal
        self._rate = RateMeter()
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="rowcast-relay-display", daemon=True
        )
        self._live: Live | None = None
        self._handler = handler(log_format, self.console if self.live_line else None)

    def line(self) -> Text:
        """The live line: changes, rate, lag, position, any failing sink (its attempts in a
        row and last error), and the dead letters."""
        stats = self.stats
        rate = self._rate(stats.changes)
        text = Text.assemble(
            ("relaying ", "bold"),
            f"{stats.changes:,} changes  {rate:,.0f}/s  lag {_describe_lag(stats.current_lag)}  ",
            ("at ", "dim"),
            stats.reached or stats.position or stats.resumed_from or "start",
        )
        if stats.head is not None and stats.head != stats.reached:
            text.append(f"  head {stats.head}", style="dim")
        if stats.stalled:
            text.append("  stalled", style="bold red")
        for sink in stats.failing:
            text.append(
                f"  {sink.url} failing (attempt {sink.attempts}): {sink.failing}", style="red"
            )
        dead = sum(sink.dead_letters for sink in stats.sinks)
        if dead:
            text.append(f"  {dead:,} dead letters", style="yellow")
        if stats.checkpoint_errors and not stats.failing:
            text.append(f"  {stats.checkpoint_errors} checkpoint errors", style="yellow")
        return text

    def progress(self) -> None:
        """Log one ``progress`` record."""
        stats = self.stats
        rate = self._rate(stats.changes)
        log.info(
            "%d changes, %.0f/s, lag %s, at %s",
            stats.changes,
            rate,
            _describe_lag(stats.current_lag),
            stats.reached or stats.position or stats.resumed_from,
            extra={
                "event": "progress",
                "changes": stats.changes,
                "transactions": stats.transactions,
                "rate": round(rate, 1),
                "lag": None if stats.current_lag is None else round(stats.current_lag, 3),
                "lag_bytes": stats.lag_bytes,
                "position": stats.reached or stats.position or stats.resumed_from,
                "checkpoint": stats.position or stats.resumed_from,
                "head": stats.head,
                "state": stats.state_now,
                "stalled": stats.stalled,
                "errors": stats.errors,
                "dead_letters": sum(sink.dead_letters for sink in stats.sinks),
                "failing": [
                    {"sink": sink.url, "attempts": sink.attempts, "error": sink.failing}
                    for sink in stats.failing
                ],
            },
        )

    def _loop(self) -> None:
        pause = 0.25 if self._live is not None else self.interval
        while not self._done.wait(pause):
            if self._live is not None:
                self._live.update(self.line(), refresh=True)
            else:
                self.progress()

    def __enter__(self) -> RelayDisplay:
        _route(self._handler)
        if self.live_line:
            self._live = Live(
                self.line(),
                console=self.console,
                auto_refresh=False,
                redirect_stdout=sys.stdout.isatty(),  # the stdout sink prints above the line
                redirect_stderr=False,
            )
            self._live.start()
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join()
        if self._live is not None:
            self._live.update(self.line(), refresh=True)
            self._live.stop()
        logging.getLogger().removeHandler(self._handler)

"""What the ``rowcast`` command prints: changes and events as rows or JSON lines, checks, errors.

Everything here writes through rich (colours on a terminal, plain text in a
pipe) and never wraps a line: a long row or a multi-line message prints in
full, so it can be copied and grepped.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.text import Text

from ..change import Action, Change
from ..codec import dumps

if TYPE_CHECKING:
    from ..sources.base import Check
    from ..store import RecordedEvent

__all__ = [
    "ChangePrinter",
    "EventPrinter",
    "event_json",
    "human_size",
    "print_checks",
    "print_error",
]

_BACKGROUND = re.compile(r"\s*\(Background on this error at: \S+\)")
_STYLE = {Action.WRITE: "green", Action.UPDATE: "yellow", Action.DELETE: "red"}


def print_error(message: object) -> None:
    """``error: <message>`` on stderr, every line of it, with no markup read from it
    (nor the "background on this error" link that SQLAlchemy appends to its own)."""
    text = _BACKGROUND.sub("", str(message)).rstrip()
    console = Console(stderr=True, highlight=False)
    console.print(Text.assemble(("error:", "bold red"), " ", text), soft_wrap=True)


def _show(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.date | dt.time) else repr(value)


def _pk(pk: Any) -> str:
    if pk is None:  # a table without a primary key
        return "-"
    if isinstance(pk, tuple):
        return ",".join(dumps(part) for part in pk)
    return dumps(pk)


def _describe(change: Change) -> str:
    """The columns that changed, ``col: old -> new`` for updates."""
    if change.action is Action.UPDATE and change.before is not None and change.after is not None:
        old, new = change.before, change.after
        return ", ".join(f"{c}: {_show(old.get(c))} -> {_show(new.get(c))}" for c in change.changed)
    image = change.after if change.after is not None else change.before
    return ", ".join(f"{k}={_show(v)}" for k, v in (image or {}).items())


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class ChangePrinter:
    """Prints each transaction as it is published: aligned rows, or JSON lines.

    Connect it to a hub's ``"commit"`` signal. With `show_tx`, each
    transaction in table format starts with a line giving its txid, position
    and commit time. When stdout is closed (``| head``) it goes quiet and
    calls `on_closed` (a source's ``stop``, say).
    """

    def __init__(
        self,
        console: Console,
        fmt: str,
        *,
        show_tx: bool = False,
        on_closed: Callable[[], None] | None = None,
    ) -> None:
        self.console, self.fmt = console, fmt
        self.show_tx, self.on_closed = show_tx, on_closed
        self.transactions = self.changes = 0
        self.closed = False
        self._headed = False
        self._width = 16  # of the event column: grows to the longest name seen

    def header(self) -> None:
        """The column titles (table format), printed once."""
        if self.fmt == "table" and not self._headed:
            self._headed = True
            self.console.print(Text(f"{'tx':>3}  {'event':<16} {'pk':>6}  changed", style="bold"))

    def summary(self) -> str:
        return f"{self.changes} changes in {self.transactions} transactions"

    def __call__(self, sender: Any, changes: Sequence[Change], **_: Any) -> None:
        if self.closed:
            return
        self.transactions += 1
        self.changes += len(changes)
        try:
            if self.fmt == "json":
                for change in changes:
                    click.echo(change.to_json())  # click.echo flushes: one line at a time
            else:
                self._table(changes)
        except BrokenPipeError:  # `rowcast tail ... | head -3`: stop quietly
            self.closed = True
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            if self.on_closed is not None:
                self.on_closed()

    def _table(self, changes: Sequence[Change]) -> None:
        self.header()
        first = changes[0]
        if self.show_tx:
            where = f" at {first.position}" if first.position else ""
            self.console.print(
                Text(f"{'──':>3}  tx {first.txid}{where}, {_when(first.ts)}", style="dim"),
                soft_wrap=True,
            )
        for change in changes:
            line = Text(f"{self.transactions:>3}  ")
            self._width = max(self._width, len(change.name))
            line.append(f"{change.name:<{self._width}}", style=_STYLE[change.action])
            line.append(f" {_pk(change.pk):>6}  ")
            line.append(_describe(change))
            self.console.print(line, soft_wrap=True)


def _marks() -> tuple[str, str]:
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
    return ("✓", "✗") if encoding.startswith("utf") else ("ok", "XX")


def print_checks(console: Console, checks: Sequence[Check]) -> None:
    """One line per check: mark, name, current value; the fix under each failure."""
    good, bad = _marks()
    width = max((len(c.name) for c in checks), default=0)
    for check in checks:
        line = Text("  ")
        line.append(good if check.ok else bad, style="bold green" if check.ok else "bold red")
        line.append(f" {check.name:<{width}}  ")
        line.append(check.value, style="" if check.ok else "red")
        console.print(line, soft_wrap=True)
        if not check.ok and check.fix:
            console.print(Text.assemble("      fix: ", (check.fix, "bold")), soft_wrap=True)


# ---------------------------------------------------------------- event store


def event_json(event: RecordedEvent) -> str:
    """One event as a JSON object: its fields, data and metadata in the `rowcast.codec` JSON."""
    return dumps(
        {
            "stream": event.stream,
            "version": event.version,
            "position": event.position,
            "id": str(event.id),
            "type": event.type,
            "data": event.data,
            "metadata": event.metadata,
            "recorded_at": event.recorded_at,
        }
    )


def human_size(size: int) -> str:
    """``"12.3 MiB"``, ``"512 B"``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


class EventPrinter:
    """Prints recorded events: aligned rows (position, version, time, type, data) or JSON lines.

    With `show_stream` (reading ``"@all"``) each row names its stream too. The
    header comes with the first event, so nothing at all is printed for an
    empty stream. When stdout is closed (``| head``) it goes quiet and calls
    `on_closed` (a watch's ``close``, say).
    """

    def __init__(
        self,
        console: Console,
        fmt: str,
        *,
        show_stream: bool = False,
        on_closed: Callable[[], None] | None = None,
    ) -> None:
        self.console, self.fmt = console, fmt
        self.show_stream, self.on_closed = show_stream, on_closed
        self.events = 0
        self.closed = False
        self._type_width = 12
        self._stream_width = 16

    def __call__(self, event: RecordedEvent) -> None:
        if self.closed:
            return
        try:
            if self.fmt == "json":
                click.echo(event_json(event))
            else:
                self._row(event)
        except BrokenPipeError:  # `rowcast events read s | head -3`: stop quietly
            self.closed = True
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            if self.on_closed is not None:
                self.on_closed()
            return
        self.events += 1

    def _row(self, event: RecordedEvent) -> None:
        if self.events == 0:
            title = f"{'position':>8} {'version':>7}  {'recorded (UTC)':<19}  "
            if self.show_stream:
                title += f"{'stream':<{self._stream_width}} "
            title += f"{'type':<{self._type_width}} data"
            self.console.print(Text(title, style="bold"), soft_wrap=True)
        when = dt.datetime.fromtimestamp(event.recorded_at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        line = Text(f"{event.position:>8} {event.version:>7}  {when}  ")
        if self.show_stream:
            self._stream_width = max(self._stream_width, len(event.stream))
            line.append(f"{event.stream:<{self._stream_width}} ", style="cyan")
        self._type_width = max(self._type_width, len(event.type))
        line.append(f"{event.type:<{self._type_width}}", style="green")
        line.append(f" {dumps(event.data)}")
        self.console.print(line, soft_wrap=True)

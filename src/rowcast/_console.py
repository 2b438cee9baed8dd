"""What the ``rowcast`` command prints: changes as rows or JSON lines, checklists, errors.

Everything here writes through rich (colours on a terminal, plain text in a
pipe) and never wraps a line: a long row or a multi-line message prints in
full, so it can be copied and grepped.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.text import Text

from .change import Action, Change, dumps

if TYPE_CHECKING:
    from .sources._mysql_server import Check

__all__ = ["ChangePrinter", "print_checks", "print_error"]

_STYLE = {Action.WRITE: "green", Action.UPDATE: "yellow", Action.DELETE: "red"}


def print_error(message: object) -> None:
    """``error: <message>`` on stderr, every line of it, with no markup read from it."""
    console = Console(stderr=True, highlight=False)
    console.print(Text.assemble(("error:", "bold red"), " ", str(message)), soft_wrap=True)


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

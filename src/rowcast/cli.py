"""The ``rowcast`` command.

Each sub-command is a thin shell over the library: it parses options, opens
what the URLs name, and prints with rich. Later commands (``tail``,
``relay``, ``doctor``, ``events``) join the `main` group the same way.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
from typing import Any

import click
from rich.console import Console
from rich.text import Text

from . import __version__
from .change import Action, Change, dumps
from .errors import RowcastError
from .hub import Hub

__all__ = ["main"]

_STYLE = {Action.WRITE: "green", Action.UPDATE: "yellow", Action.DELETE: "red"}


class _Group(click.Group):
    """Turns a `RowcastError` into a one-line message and exit status 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RowcastError as error:
            Console(stderr=True).print(f"[bold red]error:[/] {error}", highlight=False)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rowcast")
def main() -> None:
    """rowcast: every committed row change of your database, as an event."""


def _show(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.date | dt.time) else repr(value)


def _describe(change: Change) -> str:
    """The columns that changed, ``col: old -> new`` for updates."""
    if change.action is Action.UPDATE and change.before is not None and change.after is not None:
        old, new = change.before, change.after
        return ", ".join(f"{c}: {_show(old.get(c))} -> {_show(new.get(c))}" for c in change.changed)
    image = change.after if change.after is not None else change.before
    return ", ".join(f"{k}={_show(v)}" for k, v in (image or {}).items())


class ChangePrinter:
    """Prints each change as it is published: aligned rows, or JSON lines."""

    def __init__(self, console: Console, fmt: str) -> None:
        self.console, self.fmt = console, fmt
        self.transactions = self.changes = 0

    def header(self) -> None:
        if self.fmt == "table":
            self.console.print(Text(f"{'tx':>3}  {'event':<16} {'pk':>6}  changed", style="bold"))

    def __call__(self, sender: Any, changes: list[Change], **_: Any) -> None:
        self.transactions += 1
        for change in changes:
            self.changes += 1
            if self.fmt == "json":
                try:
                    click.echo(change.to_json())
                except BrokenPipeError:  # `rowcast demo --format json | head`: stop quietly
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                    return
                continue
            line = Text(f"{self.transactions:>3}  ")
            line.append(f"{change.name:<16}", style=_STYLE[change.action])
            line.append(f" {dumps(change.pk):>6}  ")
            line.append(_describe(change))
            self.console.print(line, highlight=False, soft_wrap=True)


@main.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Readable rows, or one Change.to_json() per line.",
)
@click.option(
    "--db",
    type=click.Path(dir_okay=False),
    default=None,
    help="SQLite file to use (default: a temporary file, removed afterwards).",
)
def demo(fmt: str, db: str | None) -> None:
    """Capture a scripted workload on SQLite and print every change as it is published."""
    from ._demo import run

    console = Console(highlight=False)
    printer = ChangePrinter(console, fmt)
    hub = Hub()
    hub.signal("commit").connect(printer, weak=False)

    def say(step: str) -> None:
        if fmt == "table":
            console.print(Text(f"# {step}", style="dim"))

    if db and os.path.exists(db):
        raise click.UsageError(f"--db {db} exists; give a new file name (the demo creates it)")
    with tempfile.TemporaryDirectory(prefix="rowcast-demo-") as tmp:
        path = db or os.path.join(tmp, "demo.db")
        if fmt == "table":
            console.print(f"rowcast {__version__} demo on sqlite:///{path}\n")
            printer.header()
        run(f"sqlite:///{path}", hub, say)
    if fmt == "table":
        console.print(
            f"\n{printer.changes} changes in {printer.transactions} transactions published; "
            f"{hub.errors} receiver errors."
        )
    if hub.errors:
        sys.exit(1)

"""``rowcast demo``: a scripted workload on SQLite, every change printed as it is published."""

from __future__ import annotations

import os
import sys
import tempfile

import click
from rich.console import Console
from rich.text import Text

from .. import __version__
from ..hub import Hub
from .common import CHANGES_FORMAT
from .console import ChangePrinter

__all__ = ["demo"]


@click.command()
@CHANGES_FORMAT
@click.option(
    "--db",
    type=click.Path(dir_okay=False),
    default=None,
    help="SQLite file to use (default: a temporary file, removed afterwards).",
)
def demo(fmt: str, db: str | None) -> None:
    """Capture a scripted workload on SQLite and print every change as it is published."""
    from .demo_shop import run  # the ORM models: loaded for this command only

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

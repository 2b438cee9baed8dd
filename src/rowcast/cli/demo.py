"""``rowcast demo``: a scripted workload on SQLite, every change printed as it is published."""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import threading

import click
from rich.console import Console
from rich.text import Text

from .. import __version__
from ..change import Change
from ..errors import ConfigError
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
@click.option(
    "--ui",
    "with_ui",
    is_flag=True,
    help="Then show the changes in the web console (rowcast[ui]), a change every 2 s, "
    "until Ctrl-C.",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8750, show_default=True)
def demo(fmt: str, db: str | None, with_ui: bool, port: int) -> None:
    """Capture a scripted workload on SQLite and print every change as it is published.

    With --ui, the changes are also kept in an event store, and the web console
    (`rowcast ui`) shows it, while the demo goes on selling and restocking.
    """
    from .demo_shop import run  # the ORM models: loaded for this command only

    console = Console(highlight=False)
    printer = ChangePrinter(console, fmt)
    hub = Hub()
    hub.signal("commit").connect(printer, weak=False)

    def say(step: str) -> None:
        if fmt == "table":
            console.print(Text(f"# {step}", style="dim"))

    if db:
        _create(db)
    with tempfile.TemporaryDirectory(prefix="rowcast-demo-") as tmp:
        path = db or os.path.join(tmp, "demo.db")
        if fmt == "table":
            console.print(f"rowcast {__version__} demo on sqlite:///{path}\n")
            printer.header()
        store = _keeper(hub, tmp) if with_ui else None
        run(f"sqlite:///{path}", hub, say)
        if store is not None:
            _show(path, store, hub, port)
    if fmt == "table":
        console.print(
            f"\n{printer.changes} changes in {printer.transactions} transactions published; "
            f"{hub.errors} receiver errors."
        )
    if hub.errors:
        sys.exit(1)


def _keeper(hub: Hub, directory: str) -> str:
    """An event store in `directory` that keeps every change `hub` publishes; its URL."""
    from ..sinks.store import stream_name
    from ..store import EventStore, NewEvent

    url = f"sqlite:///{os.path.join(directory, 'events.db')}"
    store = EventStore(url)
    fields = [f.name for f in dataclasses.fields(Change) if f.name != "snapshot"]

    def keep(sender: object, changes: list[Change]) -> None:
        for change in changes:
            data = {name: getattr(change, name) for name in fields}
            store.append(stream_name(change), [NewEvent(change.name, data)])

    hub.signal("commit").connect(keep, weak=False)
    return url


def _show(path: str, store: str, hub: Hub, port: int) -> None:
    """Serve the console on `store` while the shop keeps changing, until Ctrl-C."""
    from ..ui.config import ConsoleConfig
    from ..ui.serve import serve
    from .demo_shop import keep_changing

    stop = threading.Event()
    changing = threading.Thread(
        target=keep_changing, args=(f"sqlite:///{path}", hub, stop), daemon=True
    )
    changing.start()
    try:
        serve(ConsoleConfig(store=store, source=f"sqlite:///{path}", port=port))
    finally:
        stop.set()
        changing.join(10)


def _create(db: str) -> None:
    """Create the empty file `db` for the demo, or say in one line why it cannot be."""
    fix = "give --db a new file name in a directory that exists, or leave --db out"
    try:
        os.close(os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        raise ConfigError(
            f"--db {db} exists; give a new file name (the demo creates it and fills it)"
        ) from None
    except FileNotFoundError:
        parent = os.path.dirname(os.path.abspath(db))
        raise ConfigError(f"--db {db}: the directory {parent} does not exist; {fix}") from None
    except OSError as e:
        raise ConfigError(f"--db {db}: cannot create the file ({e.strerror}); {fix}") from None

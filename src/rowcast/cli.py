"""The ``rowcast`` command.

Each sub-command is a thin shell over the library: it parses options, opens
what the URLs name, and prints with rich (see `rowcast._console`). A
`RowcastError` ends any of them with ``error: <message>`` on stderr and exit
status 2. Later commands (``relay``) join the `main` group the same way.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import click
from rich.console import Console
from rich.text import Text

from . import __version__
from ._cli_common import TABLES
from ._cli_common import patterns as table_patterns
from ._console import (
    ChangePrinter,
    EventPrinter,
    human_size,
    print_checks,
    print_error,
)
from ._url import masked
from .change import dumps
from .errors import ConfigError, RowcastError
from .hub import Hub
from .sources.base import diagnose, open_source
from .store import ALL, DEFAULT_URL, EventStore

__all__ = ["main"]


class _Group(click.Group):
    """Turns a `RowcastError` into ``error: <message>`` on stderr and exit status 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RowcastError as error:
            print_error(error)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rowcast")
def main() -> None:
    """rowcast: every committed row change of your database, as an event."""


_F = TypeVar("_F", bound=Callable[..., Any])


def _format_option(json_help: str) -> Callable[[_F], _F]:
    """``--format table|json``, the same on every command."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help=f"Readable rows, or {json_help}.",
    )


_FORMAT = _format_option("one Change.to_json() per line")


@main.command()
@_FORMAT
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


@main.command()
@click.argument("url")
@TABLES
@click.option(
    "--from",
    "start",
    metavar="now|start|POSITION",
    help="Where to begin: 'now' (the default), 'start' (the oldest change the server "
    "still has), or a position from a change or a checkpoint ('file:offset' or a GTID set "
    "on MySQL, an LSN such as '0/16B3748' on PostgreSQL).",
)
@click.option(
    "--to",
    "end",
    metavar="POSITION|now",
    help="Stop once this position is passed; 'now' is the server's position when tail starts.",
)
@_FORMAT
@click.option(
    "--server-id",
    type=click.IntRange(1, 2**32 - 1),
    help="MySQL/MariaDB: replica id to read the log with (default: a stable id derived from "
    "the URL); readers running at the same time need different ids.",
)
def tail(
    url: str,
    tables: tuple[str, ...],
    start: str | None,
    end: str | None,
    fmt: str,
    server_id: int | None,
) -> None:
    """Print every row change committed on the database at URL, as it is published.

    URL is mysql://user:password@host:3306/db (or mariadb://),
    postgresql://user@host:5432/db?slot=rowcast&publication=rowcast, or
    sqlite:///app.db (a position there is a rowcast_changes seq). Stop with
    Ctrl-C or SIGTERM; a summary goes to stderr (table format).
    """
    if server_id is not None and urlsplit(url).scheme.split("+")[0] not in ("mysql", "mariadb"):
        raise click.UsageError("--server-id is for mysql:// and mariadb:// URLs")
    options: dict[str, Any] = {}
    patterns = table_patterns(tables)
    if patterns:
        options["tables"] = patterns
    for name, value in (("start", start), ("end", end), ("server_id", server_id)):
        if value is not None:
            options[name] = value
    source = open_source(url, **options)

    err = Console(stderr=True, highlight=False)
    printer = ChangePrinter(Console(highlight=False), fmt, show_tx=True, on_closed=source.stop)
    hub = Hub()
    hub.signal("commit").connect(printer, weak=False)
    if fmt == "table":
        until = f" to {end}" if end else ""
        err.print(
            Text(f"tailing {masked(url)} from {start or 'now'}{until} (Ctrl-C to stop)", "dim"),
            soft_wrap=True,
        )
    with _stop_on_sigterm(source.stop):
        try:
            source.run(hub)
        except KeyboardInterrupt:
            source.stop()
    if fmt == "table":
        errors = f"; {hub.errors} receiver errors" if hub.errors else ""
        err.print(printer.summary() + errors)
    if hub.errors:
        sys.exit(1)


@contextlib.contextmanager
def _stop_on_sigterm(stop: Callable[[], None]) -> Iterator[None]:
    """While inside, SIGTERM calls `stop` (a source's, a watch's close) instead of killing us."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set signal handlers
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@main.command()
@click.argument("url")
def doctor(url: str) -> None:
    """Check that the server at URL can be read as a change source; print the fix for each problem.

    URL is a source's: mysql://user:password@host:3306/db (or mariadb://),
    postgresql://user@host:5432/db?slot=rowcast&publication=rowcast, sqlite:///app.db. Exit
    status: 0 when every check passes, 1 when one fails, 2 when the server cannot
    be used at all (unreachable, wrong password, unsupported URL).
    """
    report = diagnose(url)
    console = Console(highlight=False)
    console.print(Text.assemble(("rowcast doctor ", "bold"), report.target), soft_wrap=True)
    width = max((len(name) for name, _ in report.facts), default=0)
    facts = "".join(f"  {name:<{width}}   {value}\n" for name, value in report.facts)
    console.print(Text(facts), soft_wrap=True)
    print_checks(console, report.checks)
    failed = sum(not c.ok for c in report.checks)
    if failed:
        console.print(
            f"\n{failed} of {len(report.checks)} checks failed: apply the fixes above and run "
            "rowcast doctor again."
        )
        sys.exit(1)
    console.print(f"\nAll {len(report.checks)} checks passed: {report.ready}")


# ---------------------------------------------------------------- events


_STORE_URL = click.option(
    "--url",
    default=DEFAULT_URL,
    show_default=True,
    metavar="URL",
    envvar="ROWCAST_EVENTS_URL",
    help="The event store (also $ROWCAST_EVENTS_URL): sqlite:///path.db, sqlite:////abs/path.db.",
)
_EVENTS_FORMAT = _format_option("one JSON object per line")
_AFTER = click.option(
    "--after",
    type=click.IntRange(min=0),
    metavar="N",
    help="Only events after this version (a position for @all); exclusive.",
)


@main.group()
def events() -> None:
    """Look into an event store: streams, events, new events live."""


def _open_store(url: str) -> EventStore:
    """The store at `url`; a SQLite file that does not exist is an error, not created."""
    parts = urlsplit(url)
    if "://" in url and parts.scheme.split("+", 1)[0].lower() == "sqlite" and not parts.netloc:
        path = unquote(parts.path)
        database = path[1:] if path.startswith("/") else path
        if database not in ("", ":memory:") and not Path(database).expanduser().exists():
            raise ConfigError(
                f"no event store at {database!r}: the file does not exist "
                "(give the store with --url sqlite:///path.db)"
            )
    return EventStore(url)


@events.command("ls")
@_STORE_URL
@_EVENTS_FORMAT
def events_ls(url: str, fmt: str) -> None:
    """List streams with version and last position."""
    with _open_store(url) as store:
        streams = store.streams()
    names = sorted(streams)
    if fmt == "json":
        for name in names:
            version, position = streams[name]
            click.echo(dumps({"stream": name, "version": version, "position": position}))
        return
    if not names:
        return
    console = Console(highlight=False)
    width = max(16, *(len(name) for name in names))
    console.print(Text(f"{'stream':<{width}} {'version':>8} {'position':>10}", "bold"))
    for name in names:
        version, position = streams[name]
        console.print(f"{name:<{width}} {version:>8} {position:>10}", soft_wrap=True, markup=False)


@events.command("read")
@click.argument("stream")
@_STORE_URL
@_AFTER
@click.option("--limit", type=click.IntRange(min=0), metavar="N", help="At most N events.")
@_EVENTS_FORMAT
def events_read(stream: str, url: str, after: int | None, limit: int | None, fmt: str) -> None:
    """Print the events of STREAM (or @all).

    @all is every stream, in the global order. A stream that has no event
    prints nothing.
    """
    with _open_store(url) as store:
        reader = store.read(stream, after=after or 0, limit=limit)
        printer = EventPrinter(Console(highlight=False), fmt, show_stream=stream == ALL)
        for event in reader:
            printer(event)
            if printer.closed:
                break


@events.command("watch")
@click.argument("stream", default=ALL)
@_STORE_URL
@_AFTER
@_EVENTS_FORMAT
def events_watch(stream: str, url: str, after: int | None, fmt: str) -> None:
    """Print the events of STREAM (default @all) as they are appended.

    From now, or with --after N from the event after N (then live, with no
    gap). Stop with Ctrl-C or SIGTERM; a summary goes to stderr (table format).
    """
    err = Console(stderr=True, highlight=False)
    with _open_store(url) as store:
        watch = store.watch(stream, after)
        printer = EventPrinter(
            Console(highlight=False), fmt, show_stream=stream == ALL, on_closed=watch.close
        )
        if fmt == "table":
            start = "from now" if after is None else f"after {after}"
            err.print(
                Text(f"watching {stream} in {url} {start} (Ctrl-C to stop)", "dim"),
                soft_wrap=True,
            )
        with _stop_on_sigterm(watch.close):
            try:
                for event in watch:
                    printer(event)
            except KeyboardInterrupt:
                pass
            finally:
                watch.close()
    if fmt == "table":
        err.print(f"{printer.events} events")


@events.command("stats")
@_STORE_URL
@_EVENTS_FORMAT
def events_stats(url: str, fmt: str) -> None:
    """Count the streams and events; show the size of the store's files."""
    with _open_store(url) as store:
        streams = store.streams()
        last = store.stream_version(ALL)
        path: str | None = getattr(store, "path", None)
    count = sum(version for version, _ in streams.values())
    size = None
    if path is not None:
        size = sum(f.stat().st_size for f in (Path(path), Path(f"{path}-wal")) if f.exists())
    if fmt == "json":
        stats = {"streams": len(streams), "events": count, "last_position": last}
        click.echo(dumps({**stats, "path": path, "bytes": size}))
        return
    console = Console(highlight=False)
    console.print(f"store          {url}", soft_wrap=True, markup=False)
    console.print(f"streams        {len(streams)}")
    console.print(f"events         {count}")
    console.print(f"last position  {last}")
    where = f" ({path} and its WAL)" if path else ""
    console.print(
        f"size           {'-' if size is None else human_size(size)}{where}",
        soft_wrap=True,
        markup=False,
    )


# Commands kept in their own modules register themselves on `main` when imported.
for _module in ("_cli_events_init", "_cli_relay", "_cli_uninstall", "_cli_consume"):
    importlib.import_module(f".{_module}", __package__)

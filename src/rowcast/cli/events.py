"""``rowcast events``: look into an event store (streams, events, new events live), create one.

``ls``, ``read``, ``stats`` and ``watch`` only read: they open a store that exists
(`EventStore` with ``create=False``) and end with exit status 2 and the ``init``
command to run when the URL names none, creating nothing (not even an empty
SQLite file). ``rowcast events init URL [--schema NAME]`` creates a store's tables now. For
PostgreSQL, run it once with a role that may create (the store also creates
what is missing on first use, which needs that privilege): the application's
role then only needs USAGE on the schema and SELECT, INSERT, UPDATE, DELETE on
the tables. For SQLite it creates the file. Running it again changes nothing.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import click
from rich.console import Console
from rich.text import Text

from .._url import masked
from ..codec import dumps
from ..errors import ConfigError
from ..store import ALL, DEFAULT_URL, EventStore
from .common import format_option, stop_on_sigterm
from .console import EventPrinter, human_size
from .urls import Url

__all__ = ["events"]


_STORE_URL = click.option(
    "--url",
    type=Url("store"),
    default=DEFAULT_URL,
    show_default=True,
    metavar="URL",
    envvar="ROWCAST_EVENTS_URL",
    help="The event store (also $ROWCAST_EVENTS_URL): sqlite:///path.db, sqlite:////abs/path.db.",
)
_EVENTS_FORMAT = format_option("one JSON object per line")
_AFTER = click.option(
    "--after",
    type=click.IntRange(min=0),
    metavar="N",
    help="Only events after this version (a position for @all); exclusive.",
)


@click.group()
def events() -> None:
    """Look into an event store: streams, events, new events live."""


def _open_store(url: str) -> EventStore:
    """The store at `url`, which must exist: reading never creates a file, schema or table."""
    return EventStore(url, create=False)


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

    @all is every stream, in the global order. A stream that does not exist
    (it has no event) is exit status 1, said on stderr with streams there are;
    a store that does not exist or bad options: exit status 2.
    """
    with _open_store(url) as store:
        if stream != ALL and store.stream_version(stream) == 0:
            _no_such_stream(store, stream, url)
        reader = store.read(stream, after=after or 0, limit=limit)
        printer = EventPrinter(Console(highlight=False), fmt, show_stream=stream == ALL)
        for event in reader:
            printer(event)
            if printer.closed:
                break


def _no_such_stream(store: EventStore, stream: str, url: str) -> None:
    """Say on stderr that `stream` does not exist, with a few that do; exit status 1."""
    some = [info.stream for info in store.list_streams(limit=6)]
    more = ", ..." if len(some) > 5 else ""
    there = f"streams there include {', '.join(some[:5])}{more}" if some else "it has none"
    Console(stderr=True, highlight=False).print(
        f"stream {stream} does not exist in {masked(url)} (it has no event): {there} "
        "(rowcast events ls lists them all)",
        soft_wrap=True,
        markup=False,
    )
    raise SystemExit(1)


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
                Text(f"watching {stream} in {masked(url)} {start} (Ctrl-C to stop)", "dim"),
                soft_wrap=True,
            )
        with stop_on_sigterm(watch.close):
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
    console.print(f"store          {masked(url)}", soft_wrap=True, markup=False)
    console.print(f"streams        {len(streams)}")
    console.print(f"events         {count}")
    console.print(f"last position  {last}")
    where = f" ({path} and its WAL)" if path else ""
    console.print(
        f"size           {'-' if size is None else human_size(size)}{where}",
        soft_wrap=True,
        markup=False,
    )


_POSTGRES = ("postgresql", "postgres")


@events.command("init")
@click.argument("url", type=Url("store"))
@click.option(
    "--schema",
    metavar="NAME",
    help="PostgreSQL schema for the tables (default: ?schema= in URL, else the current one).",
)
def events_init(url: str, schema: str | None) -> None:
    """Create the event store at URL now: schema and tables (idempotent).

    \b
    rowcast events init postgresql://admin@db/app --schema events
    rowcast events init sqlite:///events.db
    """
    scheme = urlsplit(url).scheme.split("+", 1)[0].lower() if "://" in url else ""
    console = Console(highlight=False)
    if scheme in _POSTGRES:
        from ..store.postgres import init_schema

        name, tables = init_schema(url, schema=schema)
        console.print(
            f"event store ready in {masked(url)}, schema {name!r}: {', '.join(tables)}",
            soft_wrap=True,
            markup=False,
        )
        console.print(
            f"an application role needs: GRANT USAGE ON SCHEMA {name} and "
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {name}",
            soft_wrap=True,
            markup=False,
            style="dim",
        )
        return
    if schema is not None:
        raise ConfigError(f"--schema is for PostgreSQL URLs, not {masked(url)!r}")
    with EventStore(url) as store:
        where = getattr(store, "path", None) or masked(url)
    console.print(f"event store ready: {where}", soft_wrap=True, markup=False)

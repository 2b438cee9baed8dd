"""``rowcast tail``: every row change committed on a database, printed as it is published."""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import urlsplit

import click
from rich.console import Console
from rich.text import Text

from .._url import masked
from ..errors import ConfigError
from ..hub import Hub
from ..sources.base import open_source
from .common import (
    ALLOW_EMPTY,
    CHANGES_FORMAT,
    SNAPSHOT,
    SNAPSHOT_CHUNK,
    TABLES,
    stop_on_signals,
)
from .common import patterns as table_patterns
from .console import ChangePrinter
from .urls import Url

__all__ = ["tail"]


@click.command()
@click.argument("url", type=Url("source"))
@TABLES
@ALLOW_EMPTY
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
@SNAPSHOT
@SNAPSHOT_CHUNK
@CHANGES_FORMAT
@click.option(
    "--server-id",
    type=click.IntRange(1, 2**32 - 1),
    help="MySQL/MariaDB: replica id to read the log with (default: a random one, so that a "
    "tail never kicks a relay off); readers running at the same time need different ids.",
)
def tail(
    url: str,
    tables: tuple[str, ...],
    allow_empty: bool,
    start: str | None,
    end: str | None,
    snapshot: str,
    snapshot_chunk: int | None,
    fmt: str,
    server_id: int | None,
) -> None:
    """Print every row change committed on the database at URL, as it is published.

    URL is mysql://user:password@host:3306/db (or mariadb://; the database
    limits capture to it, none captures every database),
    postgresql://user@host:5432/db, or sqlite:///app.db (a position there is a
    rowcast_changes seq). With --snapshot initial it first prints every
    existing row (snapshot=true writes), then the changes from the point they
    were read at. A tail leaves nothing behind: on PostgreSQL it reads with a
    temporary slot and a publication of its own, dropped when it stops; on
    SQLite it removes the triggers it installed (never those a relay uses); on
    MySQL it reads with a random server id. The server is reached first (a
    wrong port or database: exit 2, before the 'tailing ...' line). Stop with
    Ctrl-C or SIGTERM; a summary goes to stderr (table format).
    """
    if server_id is not None and urlsplit(url).scheme.split("+")[0] not in ("mysql", "mariadb"):
        raise click.UsageError("--server-id is for mysql:// and mariadb:// URLs")
    options: dict[str, Any] = {}
    patterns = table_patterns(tables)
    if patterns:
        options["tables"] = patterns
    if snapshot != "never":
        options["snapshot"] = snapshot
    for name, value in (
        ("start", start),
        ("end", end),
        ("server_id", server_id),
        ("snapshot_chunk", snapshot_chunk),
    ):
        if value is not None:
            options[name] = value
    if allow_empty:
        options["allow_empty"] = True
    try:
        source = open_source(url, **options)
    except TypeError as e:  # an option this kind of source does not have
        raise ConfigError(f"{masked(url)}: this source does not take these options ({e})") from e

    err = Console(stderr=True, highlight=False)
    printer = ChangePrinter(Console(highlight=False), fmt, show_tx=True, on_closed=source.stop)
    hub = Hub()
    hub.signal("commit").connect(printer, weak=False)
    try:
        source.check()  # reach the server first: its error is the only line
        interrupted = False
    except KeyboardInterrupt:  # before it reads: nothing to stop
        interrupted = True
    if not interrupted:
        if fmt == "table":
            until = f" to {end}" if end else ""
            err.print(
                Text(f"tailing {masked(url)} from {start or 'now'}{until} (Ctrl-C to stop)", "dim"),
                soft_wrap=True,
            )
        # Ctrl-C (once or more) and SIGTERM stop it: it removes what it installed
        with stop_on_signals(source.stop, "removing what it installed"):
            source.run(hub)
    if fmt == "table":
        errors = f"; {hub.errors} receiver errors" if hub.errors else ""
        err.print(printer.summary() + errors)
    slot = getattr(source, "given_slot", None)
    if slot is not None:  # a lasting slot: it holds WAL until read again
        base, publication = masked(url).partition("?")[0], getattr(source, "publication", slot)
        err.print(
            f"slot {slot} and publication {publication} stay (the slot holds WAL "
            f"until read again): `rowcast uninstall '{base}'` lists them with the SQL that "
            "drops them (--yes drops every unused rowcast slot and publication there)",
            soft_wrap=True,
            markup=False,
        )
    if hub.errors:
        sys.exit(1)

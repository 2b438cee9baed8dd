"""``rowcast events init URL [--schema NAME]``: create an event store's tables now.

For PostgreSQL, run it once with a role that may create (the store also
creates what is missing on first use, which needs that privilege): the
application's role then only needs USAGE on the schema and SELECT, INSERT,
UPDATE, DELETE on the tables. For SQLite it creates the file. Running it
again changes nothing.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import click
from rich.console import Console

from ._url import masked
from .cli import events
from .errors import ConfigError
from .store import EventStore

__all__ = ["events_init"]

_POSTGRES = ("postgresql", "postgres")


@events.command("init")
@click.argument("url")
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
        from .store.postgres import init_schema

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

"""``rowcast uninstall``: remove what a trigger source installed in a SQLite database."""

from __future__ import annotations

from urllib.parse import urlsplit

import click
from rich.console import Console

from .._url import masked
from ..errors import ConfigError
from .common import patterns as table_patterns

__all__ = ["uninstall"]


@click.command()
@click.argument("url")
@click.option(
    "--tables",
    "-t",
    multiple=True,
    metavar="PATTERN",
    help="Only the triggers of these tables: patterns such as 'orders' or 'shop_*' "
    "(repeat the option or separate with commas). Default: every table's.",
)
@click.option(
    "--drop-changes",
    is_flag=True,
    help="Also drop rowcast_changes (with the changes not read yet), rowcast_layouts, "
    "rowcast_readers and rowcast_state; every table's triggers go with them.",
)
def uninstall(url: str, tables: tuple[str, ...], drop_changes: bool) -> None:
    """Remove rowcast's capture triggers from the SQLite database at URL (sqlite:///app.db).

    The app's tables and data are not touched. Stop the sources reading URL
    first: a running source installs its triggers again when it sees them gone.
    """
    if urlsplit(url).scheme.lower() != "sqlite":
        raise ConfigError(
            f"rowcast uninstall removes a sqlite:// source's triggers; {masked(url)} is not one "
            "(log sources install nothing in the database)"
        )
    from ..sources.sqlite import uninstall as remove
    from ..sources.sqlite.triggers import OWN

    patterns = table_patterns(tables)
    names = remove(url, patterns or None, drop_changes)
    console = Console(highlight=False)
    for name in names:
        console.print(f"dropped trigger {name}", soft_wrap=True, markup=False)
    if drop_changes:
        console.print("dropped tables " + ", ".join(OWN))
    elif not names:
        console.print("no rowcast trigger to remove", soft_wrap=True)

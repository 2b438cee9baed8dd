"""``rowcast uninstall``: remove what a trigger source installed in a SQLite database."""

from __future__ import annotations

from urllib.parse import urlsplit

import click
from rich.console import Console

from .._url import masked
from ..errors import ConfigError
from .common import patterns as table_patterns
from .urls import Url

__all__ = ["uninstall"]


@click.command()
@click.argument("url", type=Url("source"))
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
@click.option(
    "--yes",
    "--apply",
    "apply",
    is_flag=True,
    help="PostgreSQL: drop what is listed (without it, only list it and the SQL).",
)
def uninstall(url: str, tables: tuple[str, ...], drop_changes: bool, apply: bool) -> None:
    """Remove what rowcast left in the database at URL.

    sqlite:///app.db: rowcast's capture triggers (the app's tables and data are
    not touched; stop the sources reading URL first: a running source installs
    its triggers again when it sees them gone). postgresql://...: rowcast's
    replication slots and publications, listed with the SQL that drops them;
    --yes drops them (never a slot being read: it names the reader's pid).
    """
    scheme = urlsplit(url).scheme.lower().split("+", 1)[0]
    if scheme in ("postgresql", "postgres"):
        _postgres(url, apply)
        return
    if scheme != "sqlite":
        raise ConfigError(
            f"rowcast uninstall removes a sqlite:// source's triggers; {masked(url)} is not one "
            "(the MySQL binlog source installs nothing in the database)"
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


def _postgres(url: str, apply: bool) -> None:
    from ..sources.postgres.objects import uninstall as remove

    found = remove(url, apply=apply)
    console = Console(highlight=False)
    if not found:
        console.print(f"nothing of rowcast's in {masked(url)}", soft_wrap=True)
        return
    for leftover in found:
        reader = f", read now by pid {leftover.active_pid}" if leftover.active_pid else ""
        done = "dropped" if apply else "would drop"
        console.print(
            f"{done} {leftover.kind} {leftover.name} ({leftover.detail}{reader}): {leftover.sql}",
            soft_wrap=True,
            markup=False,
        )
    if not apply:
        console.print("dry run: nothing dropped; run again with --yes to drop these")

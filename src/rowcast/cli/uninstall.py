"""``rowcast uninstall``: list, then remove, what rowcast left in a database."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import click
from rich.console import Console

from .._url import masked
from .._words import counted
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
    help="SQLite: only the triggers of these tables: patterns such as 'orders' or 'shop_*' "
    "(repeat the option or separate with commas); rowcast's tables stay.",
)
@click.option(
    "--yes",
    "--apply",
    "apply",
    is_flag=True,
    help="Drop what is listed (without it, only list it with the SQL that drops it).",
)
@click.option(
    "--include-data",
    is_flag=True,
    help="With --yes, also drop rowcast's tables that hold data others write or keep: the "
    "outbox, checkpoints, an event store, a replica's registry, the backfill signal table "
    "(listed as kept otherwise).",
)
def uninstall(url: str, tables: tuple[str, ...], apply: bool, include_data: bool) -> None:
    """List what rowcast left in the database at URL; --yes removes it.

    sqlite:///app.db: the capture triggers and rowcast_changes with its helper
    tables (stop the relays reading URL first: a running one installs its
    triggers again). postgresql://...: replication slots and publications
    (never a slot being read: it names the reader's pid; never a slot rowcast
    did not make, which its publications record), rowcast_* tables and an
    event store's rowcast_append function (data).
    mysql://host/db (every database without one): the binlog source creates
    nothing there; rowcast's tables of data are listed. Tables that hold data
    (rowcast_outbox, rowcast_checkpoint, rowcast_signal, an event store's) are
    kept unless --include-data. The app's own tables and rows are never touched.
    """
    scheme = urlsplit(url).scheme.lower().split("+", 1)[0]
    patterns = table_patterns(tables)
    if patterns and scheme != "sqlite":
        raise click.UsageError("--tables is for sqlite:// URLs (a SQLite source's triggers)")
    if scheme in ("postgresql", "postgres"):
        from ..sources.postgres.objects import uninstall as remove

        _report(url, remove(url, apply=apply, include_data=include_data), apply, include_data)
    elif scheme == "sqlite" and patterns:
        _sqlite_tables(url, patterns, apply)
    elif scheme == "sqlite":
        from ..sources.sqlite import leftovers as sqlite

        found = sqlite.leftovers(url)
        dropped = sqlite.remove(url, include_data=include_data) if apply else []
        _report(url, found, apply, include_data, dropped)
    elif scheme in ("mysql", "mariadb"):
        from ..sources.mysql import leftovers as mysql

        found = mysql.leftovers(url)
        dropped = mysql.remove(url, include_data=include_data) if apply else []
        _report(url, found, apply, include_data, dropped)
        Console(highlight=False).print(
            "(the binlog source itself creates nothing in the database: a relay's position is "
            "in its checkpoint, its server id is held only while it reads)",
            soft_wrap=True,
        )
    else:
        raise ConfigError(
            f"rowcast uninstall takes a sqlite://, postgresql:// or mysql:// URL, not {masked(url)}"
        )


def _report(
    url: str,
    found: Sequence[Any],
    apply: bool,
    include_data: bool,
    dropped: Sequence[Any] | None = None,
) -> None:
    """One line per leftover: dropped, would be dropped, or kept (data)."""
    console = Console(highlight=False)
    gone = {(o.kind, o.name) for o in dropped} if dropped is not None else set()
    kept: dict[str, int] = {}
    for leftover in found:
        key = (leftover.kind, leftover.name)
        data = getattr(leftover, "data", False) and not include_data
        reader = f", read now by pid {leftover.active_pid}" if leftover.active_pid else ""
        if data:
            kept[leftover.kind] = kept.get(leftover.kind, 0) + 1
            done = "kept (data)"
        elif apply and (dropped is None or key in gone):
            done = "dropped"
        else:
            done = "would drop"
        console.print(
            f"{done} {leftover.kind} {leftover.name} ({leftover.detail}{reader}): {leftover.sql}",
            soft_wrap=True,
            markup=False,
        )
    if not found:
        console.print(f"nothing of rowcast's in {masked(url)}", soft_wrap=True)
        return
    if kept:
        what = " and ".join(counted(n, kind) for kind, n in kept.items())
        console.print(f"{what} of data kept: --yes --include-data drops them too")
    if not apply:
        console.print("dry run: nothing dropped; run again with --yes to drop these")


def _sqlite_tables(url: str, patterns: list[str], apply: bool) -> None:
    """The triggers of some tables only (rowcast's tables stay: others' triggers use them)."""
    from ..sources.sqlite import uninstall as remove
    from ..sources.sqlite.file import matcher
    from ..sources.sqlite.leftovers import leftovers

    wanted = matcher(tuple(patterns))
    found = [
        o
        for o in leftovers(url)
        if o.kind == "trigger" and wanted(o.detail.removeprefix("on ").split(":", 1)[0])
    ]
    if apply:
        remove(url, patterns)
    console = Console(highlight=False)
    for leftover in found:
        done = "dropped" if apply else "would drop"
        console.print(f"{done} trigger {leftover.name}: {leftover.sql}", soft_wrap=True)
    if not found:
        console.print("no rowcast trigger to remove", soft_wrap=True)
    elif not apply:
        console.print("dry run: nothing dropped; run again with --yes to drop these")

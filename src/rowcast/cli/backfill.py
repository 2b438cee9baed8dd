"""``rowcast backfill``: ask the relays reading a database to read tables again."""

from __future__ import annotations

import json
import shlex
import time
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from .._url import masked
from .._words import counted
from ..errors import ConfigError
from .common import TABLES, format_option
from .common import patterns as table_patterns
from .urls import Url

__all__ = ["backfill"]

_HINT_AFTER = 30.0  # seconds without a reader taking a request before saying so


@click.command()
@click.argument("url", type=Url("source"))
@TABLES
@click.option(
    "--where",
    metavar="SQL",
    help="Only the rows matching this SQL condition, e.g. \"created_at > '2026-01-01'\".",
)
@click.option(
    "--chunk",
    type=click.IntRange(1, 1_000_000),
    default=1000,
    show_default=True,
    metavar="ROWS",
    help="Rows read at a time (each between two watermarks; fewer when a read is slow).",
)
@click.option("--wait", is_flag=True, help="Return once every reader that took it is done.")
@click.option(
    "--timeout",
    type=click.FloatRange(0, min_open=True),
    metavar="SECONDS",
    help="With --wait: give up (exit 1) after this long; the backfill goes on.",
)
@click.option("--status", "show", is_flag=True, help="List the backfills and their progress.")
@click.option(
    "--stale-after",
    type=click.FloatRange(0, min_open=True),
    metavar="SECONDS",
    help="With --status or --wait: a tail that wrote no progress for this long stopped "
    "(abandoned: it never resumes). Default 60.",
)
@click.option("--cancel", type=click.IntRange(1), metavar="ID", help="Stop the backfill ID.")
@format_option("JSON (with --status: one object per backfill, see the README)")
def backfill(
    url: str,
    tables: tuple[str, ...],
    where: str | None,
    chunk: int,
    wait: bool,
    timeout: float | None,
    show: bool,
    stale_after: float | None,
    cancel: int | None,
    fmt: str,
) -> None:
    """Ask every relay reading URL to read --tables again while it streams.

    The request is a row of rowcast_signal in the database itself (created when
    missing; PostgreSQL: added to rowcast's publications), so it reaches every
    reader in its log, in order with the app's changes. Each reader reads the
    tables by key, a chunk at a time between two watermarks, and hands the rows
    out as snapshot=true writes; a row the app changes meanwhile comes from the
    log instead, so a backfilled row never overwrites a newer change. A relay
    killed mid-backfill resumes at its last checkpointed chunk; a tail resumes
    nothing: one that wrote no progress for --stale-after is abandoned.

    Exit status: 0 once recorded (--wait: once done), 1 when it failed, was
    cancelled, only tails that stopped took it, or --timeout passed, 2 on bad
    input.
    """
    from ..sources.base import open_source

    patterns = table_patterns(tables)
    given = sum(bool(x) for x in (patterns, show, cancel is not None))
    if given != 1:
        raise click.UsageError("give --tables to ask for a backfill, or --status, or --cancel ID")
    if (show or cancel is not None) and (where or wait):
        raise click.UsageError("--where and --wait go with --tables")
    if stale_after is not None and not (show or wait):
        raise click.UsageError("--stale-after goes with --status or --wait")
    source: Any = open_source(url)
    if not hasattr(source, "backfill"):
        raise ConfigError(f"{masked(url)}: this source cannot backfill")
    try:
        if show:
            _show(source.backfills(stale_after=stale_after), fmt)
        elif cancel is not None:
            source.cancel_backfill(cancel)
            click.echo(f"backfill {cancel}: cancel recorded; every reader stops it where it is")
        else:
            request = source.backfill(patterns, where=where, chunk=chunk)
            if fmt == "json":
                click.echo(json.dumps({"id": request}))
            else:
                click.echo(
                    f"backfill {request} recorded: every relay reading {masked(url)} reads "
                    f"{', '.join(patterns)} again (rowcast backfill {masked(url)} --status)"
                )
            if wait:
                _wait(source, url, request, timeout, stale_after)
    finally:
        source.close()


def _show(found: list[Any], fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps([status.to_dict() for status in found], indent=2))
        return
    console = Console(highlight=False)
    if not found:
        console.print("no backfill was asked for here (rowcast_signal holds none)")
        return
    table = Table("id", "tables", "where", "state", "reader", "at", "rows")
    for status in found:
        state = (
            "cancelled" if status.cancelled else "done" if status.done else "waiting for a reader"
        )
        first = (str(status.id), ", ".join(status.tables), status.where or "")
        if not status.readers:
            table.add_row(*first, state, "", "", "")
        for n, reader in enumerate(status.readers):
            row_state = (
                f"failed: {reader.error}"
                if reader.error
                else "cancelled"
                if reader.cancelled
                else "abandoned (the tail stopped)"
                if reader.abandoned
                else "captures none of them"
                if reader.done and not reader.tables
                else "done"
                if reader.done
                else "running"
            )
            at = reader.table or f"{reader.tables_done}/{reader.tables} tables"
            table.add_row(
                *(first if n == 0 else ("", "", "")),
                row_state,
                masked(reader.reader),
                at,
                f"{reader.rows:,}",
            )
    console.print(table)


def _abandoned(url: str, status: Any) -> str:
    """Why `status` will never finish, and how to run it again."""
    tails = [r.reader for r in status.readers if r.abandoned]
    which = "the tail that took it" if len(tails) == 1 else "the tails that took it"
    again = ["rowcast", "backfill", masked(url), "--tables", ",".join(status.tables)]
    if status.where:
        again += ["--where", status.where]
    return (
        f"backfill {status.id} will not finish: {which} ({', '.join(tails)}) stopped before "
        f"the end, and a tail resumes nothing. Ask again while a reader runs: {shlex.join(again)}"
        " (a rowcast relay on this database resumes a backfill after a kill; a tail does not)"
    )


def _wait(
    source: Any, url: str, request: int, timeout: float | None, stale_after: float | None
) -> None:
    """Follow `request` until every reader that took it is done (exit 1 on failure)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    began = time.monotonic()
    hinted = False
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True
    ) as progress:
        task = progress.add_task(f"backfill {request}: waiting for a reader", total=None)
        while True:
            found = source.backfills(stale_after=stale_after)
            status = next((s for s in found if s.id == request), None)
            if status is None:
                raise click.ClickException(f"backfill {request} is gone from rowcast_signal")
            failed = [r for r in status.readers if r.error]
            if failed:
                raise click.ClickException(
                    f"backfill {request} failed in {masked(failed[0].reader)}: {failed[0].error}"
                )
            if status.cancelled or any(r.cancelled for r in status.readers):
                raise click.ClickException(f"backfill {request} was cancelled")
            if status.abandoned:
                raise click.ClickException(_abandoned(url, status))
            if status.done and not any(r.tables for r in status.readers):
                raise click.ClickException(
                    f"backfill {request}: no reader captures {', '.join(status.tables)} (each "
                    "relay's --tables leaves them out): nothing was read"
                )
            if status.done:
                break
            if status.readers:
                rows = sum(r.rows for r in status.readers)
                at = ", ".join(
                    "abandoned" if r.abandoned else r.table or "done" for r in status.readers
                )
                progress.update(
                    task,
                    description=f"backfill {request}: {counted(len(status.readers), 'reader')}, "
                    f"{rows:,} rows, at {at}",
                )
            elapsed = time.monotonic() - began
            if not status.readers and elapsed > _HINT_AFTER and not hinted:
                hinted = True
                progress.console.print(
                    f"no reader has taken backfill {request} after {elapsed:.0f} s: is a relay "
                    "reading this database running? (rowcast status)"
                )
            if timeout is not None and elapsed > timeout:
                raise click.ClickException(
                    f"backfill {request} not done after {timeout:g} s (it goes on; "
                    "--status shows it)"
                )
            time.sleep(0.5)
    rows = sum(r.rows for r in status.readers)
    click.echo(
        f"backfill {request} done: {rows:,} rows by {counted(len(status.readers), 'reader')}"
    )

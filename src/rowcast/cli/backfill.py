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
    help="With --wait (refused without it): give up (exit 1) after this long; the "
    "backfill goes on.",
)
@click.option("--status", "show", is_flag=True, help="List the backfills and their progress.")
@click.option(
    "--stale-after",
    type=click.FloatRange(0, min_open=True),
    metavar="SECONDS",
    help="With --status or --wait: a tail not heard from for this long stopped (abandoned: "
    "it never resumes; a live one writes a row every 15 s at least, blocked output or "
    "not). Default 60.",
)
@click.option("--cancel", type=click.IntRange(1), metavar="ID", help="Stop the backfill ID.")
@format_option(
    "JSON, one document a line: the request's id (with --wait, then its final status), "
    "the cancel, or with --status the list of backfills (see the README)"
)
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
    nothing: one not heard from for --stale-after (on the database's clock) is
    abandoned.

    With --format json every line on stdout is JSON: {"id": N} once recorded,
    then with --wait the request's status where the wait left it (the objects
    of --status); progress and errors go to stderr.

    Exit status: 0 once recorded (--wait: once done), 1 when it failed, was
    cancelled, only tails that stopped took it, no reader captures one of its
    tables, or --timeout passed, 2 on bad input or a refusal of the database
    (a role without rights on rowcast_signal).
    """
    from ..sources.base import open_source

    patterns = table_patterns(tables)
    chunk_given = click.get_current_context().get_parameter_source("chunk") not in (
        click.core.ParameterSource.DEFAULT,
        None,
    )
    _check_options(bool(patterns), show, cancel is not None, where, chunk_given, wait, timeout)
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
            if fmt == "json":
                click.echo(json.dumps({"id": cancel, "cancelled": True}))
            else:
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
                _wait(source, url, request, timeout, stale_after, fmt)
    finally:
        source.close()


def _check_options(
    asking: bool,
    show: bool,
    cancel: bool,
    where: str | None,
    chunk: bool,
    wait: bool,
    timeout: float | None,
) -> None:
    """One of --tables, --status, --cancel; each other option only beside what it serves.

    A usage error (exit 2) names the options that conflict: an option given where it
    does nothing is more likely a mistake than intent.
    """
    given = [
        name for name, on in (("--tables", asking), ("--status", show), ("--cancel", cancel)) if on
    ]
    if not given:
        raise click.UsageError("give --tables to ask for a backfill, or --status, or --cancel ID")
    if len(given) > 1:
        raise click.UsageError(
            f"{' and '.join(given)} do not go together: --tables asks for a backfill, "
            "--status lists them, --cancel ID stops one; give one of them"
        )
    for option, on, served, goes_with in (
        ("--where", where is not None, asking, "--tables"),
        ("--chunk", chunk, asking, "--tables"),
        ("--wait", wait, asking, "--tables"),
        ("--timeout", timeout is not None, wait, "--wait"),
    ):
        if on and not served:
            raise click.UsageError(f"{option} goes with {goes_with}")


def _show(found: list[Any], fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps([status.to_dict() for status in found]))  # one line
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


def _ended_badly(url: str, status: Any) -> str | None:
    """Why `status` ended without its rows read (failed, cancelled...), or None."""
    failed = [r for r in status.readers if r.error]
    if failed:
        return f"backfill {status.id} failed in {masked(failed[0].reader)}: {failed[0].error}"
    if status.cancelled or any(r.cancelled for r in status.readers):
        return f"backfill {status.id} was cancelled"
    if status.abandoned:
        return _abandoned(url, status)
    if status.done and status.unread:
        read = [t for t in status.tables if t not in status.unread]
        return (
            f"backfill {status.id}: no reader captures {', '.join(status.unread)} (each "
            "relay's --tables leaves them out, or only a tail that stopped took them): "
            + (f"only {', '.join(read)} was read" if read else "nothing was read")
        )
    return None


def _print_status(status: Any, fmt: str) -> None:
    """With ``--format json``, where --wait left `status`: one JSON object on stdout."""
    if fmt == "json":
        click.echo(json.dumps(status.to_dict()))


def _wait(
    source: Any,
    url: str,
    request: int,
    timeout: float | None,
    stale_after: float | None,
    fmt: str,
) -> None:
    """Follow `request` until every reader that took it is done (exit 1 on failure).

    The progress line and hints go to stderr: stdout holds the result alone (with
    ``--format json``, the request's final status as one JSON object).
    """
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    began = time.monotonic()
    hinted = False
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        transient=True,
        console=Console(stderr=True, highlight=False),
    ) as progress:
        task = progress.add_task(f"backfill {request}: waiting for a reader", total=None)
        while True:
            found = source.backfills(stale_after=stale_after)
            status = next((s for s in found if s.id == request), None)
            if status is None:
                raise click.ClickException(f"backfill {request} is gone from rowcast_signal")
            problem = _ended_badly(url, status)
            if problem is not None:
                _print_status(status, fmt)
                raise click.ClickException(problem)
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
                _print_status(status, fmt)
                if not status.readers:  # "it goes on" would not be true: nothing reads it
                    raise click.ClickException(
                        f"backfill {request} not done after {timeout:g} s: no reader took it, "
                        f"it waits for a relay (or a tail) reading {masked(url)}: start one "
                        f"(rowcast relay {masked(url)} --to ... --checkpoint ...) and it takes "
                        f"it up; rowcast status shows what runs; --cancel {request} drops it"
                    )
                raise click.ClickException(
                    f"backfill {request} not done after {timeout:g} s (it goes on; "
                    "--status shows it)"
                )
            time.sleep(0.5)
    if fmt == "json":
        _print_status(status, fmt)
        return
    rows = sum(r.rows for r in status.readers)
    click.echo(
        f"backfill {request} done: {rows:,} rows by {counted(len(status.readers), 'reader')}"
    )

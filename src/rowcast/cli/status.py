"""``rowcast status``: the relays and consumers that report to a store (`rowcast.status`)."""

from __future__ import annotations

import collections
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..sources.health import size
from ..status import gather, healthy, source_keys
from .common import format_option
from .urls import Url

__all__ = ["status"]

_STYLE = {
    "running": "green",
    "starting": "cyan",
    "retrying": "yellow",
    "stopped": "dim",
    "stalled": "bold red",
    "stale": "bold red",
    "failed": "bold red",
}


def _seconds(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    if value < 60:
        return f"{value:.1f}s"
    if value < 3600:
        return f"{value / 60:.1f}m"
    return f"{value / 3600:.1f}h"


def _lag(entry: dict[str, Any]) -> str:
    parts = [_seconds(entry.get("lag_seconds"))]
    if isinstance(entry.get("lag_bytes"), int):
        parts.append(size(entry["lag_bytes"]))
    elif isinstance(entry.get("lag_changes"), int):
        parts.append(f"{entry['lag_changes']:,} changes")
    return " / ".join(parts)


def _log(entry: dict[str, Any]) -> str:
    log = entry.get("log") or {}
    if log.get("retained_bytes") is not None:
        limit = log.get("limit_bytes")
        of = f" of {size(limit)}" if limit else " (no limit)"
        return f"slot retains {size(log['retained_bytes'])}{of}"
    if log.get("needed_log"):
        expire = log.get("expire_seconds")
        keep = f", kept {_seconds(expire)}" if expire else ""
        return f"needs {log['needed_log']} (oldest {log.get('oldest_log')}{keep})"
    return ""


def table(entries: list[dict[str, Any]]) -> Group:
    """The entries as a rich table, then their problems and warnings."""
    grid = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("NAME", "KIND", "STATE", "POSITION", "HEAD", "LAG", "RATE", "REPORTED", "LOG"):
        grid.add_column(name, overflow="fold")
    notes = []
    named = collections.Counter(str(entry.get("name")) for entry in entries)
    for entry in entries:
        state = str(entry.get("state"))
        rate = entry.get("rate")
        name = str(entry.get("name"))
        if named[name] > 1:  # one name in several stores (every file's is "default")
            name = f"{name} ({entry.get('store')})"
        grid.add_row(
            name,
            str(entry.get("kind")),
            Text(state, style=_STYLE.get(state, "")),
            str(entry.get("position") or "-"),
            str(entry.get("head") or "-"),
            _lag(entry),
            f"{rate:,.1f}/s" if isinstance(rate, int | float) else "-",
            f"{_seconds(entry.get('age'))} ago",
            _log(entry),
        )
        for problem in entry.get("problems", ()):
            notes.append(Text.assemble((f"{name}: ", "bold"), (problem, "red")))
        if entry.get("last_error") and entry.get("state") in ("retrying", "running", "stalled"):
            notes.append(
                Text.assemble(
                    (f"{name}: ", "bold"), ("last error: ", "yellow"), str(entry["last_error"])
                )
            )
        for warning in entry.get("warnings", ()):
            notes.append(Text.assemble((f"{name}: ", "bold"), ("warning: ", "yellow"), warning))
    return Group(grid, *notes)


def document(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON document of ``--format json`` (see the README)."""
    return {"format": 1, "at": time.time(), "healthy": healthy(entries), "entries": entries}


@click.command()
@click.argument(
    "urls", nargs=-1, required=True, metavar="CHECKPOINT_URL...", type=Url("checkpoint")
)
@format_option("one JSON document (see the README)")
@click.option("--watch", is_flag=True, help="Redraw every --every seconds until Ctrl-C.")
@click.option(
    "--every",
    type=click.FloatRange(0.5, 3600),
    default=2.0,
    show_default=True,
    help="Seconds between redraws with --watch.",
)
@click.option(
    "--source",
    "source_urls",
    multiple=True,
    metavar="URL",
    type=Url("source"),
    help="A source URL with its password, to ask that source for its head (reports keep "
    "the URL with the password masked); repeat for several.",
)
@click.option(
    "--stale-after",
    type=click.FloatRange(1, None),
    metavar="SECONDS",
    help="A running reader whose report is older than this is stale (default: 3 of its "
    "report intervals, at least 15 s).",
)
def status(
    urls: tuple[str, ...],
    fmt: str,
    watch: bool,
    every: float,
    source_urls: tuple[str, ...],
    stale_after: float | None,
) -> None:
    """One line per relay and consumer reporting to each CHECKPOINT_URL: its state,
    position, the source's head, lag, rate, last error and the log kept for it.

    CHECKPOINT_URL is a relay's --checkpoint (a file path, sqlite:///x.db,
    postgresql://, mysql://, redis://, kafka://; ?name= for one of them) or a consumer's
    --report. A running reader whose report is too old is 'stale' (gone, e.g.
    killed); one whose position has not moved while the source's head did is
    'stalled'. Nothing is created or changed.

    Exit status: 0 when every reader found is healthy; 1 when one is failed,
    stale or stalled, its log is lost, or none reported (a checkpoint file that
    does not exist is named); 2 when a store cannot be read (a server that
    cannot be reached) or the options are wrong. Fit for a health check.
    """
    sources = source_keys(source_urls)

    def entries() -> list[dict[str, Any]]:
        return gather(urls, sources=sources, stale_after=stale_after)

    if not watch:
        found = entries()
        _print(found, fmt, urls)
        sys.exit(0 if healthy(found) else 1)
    found = []
    try:
        if fmt == "json":
            while True:
                found = entries()
                _print(found, fmt, urls)
                time.sleep(every)
        with Live(table(found), console=_console(), auto_refresh=False) as live:
            while True:
                found = entries()
                live.update(_view(found, urls), refresh=True)
                time.sleep(every)
    except KeyboardInterrupt:
        pass
    sys.exit(0 if healthy(found) else 1)


def missing_files(urls: tuple[str, ...]) -> list[str]:
    """The checkpoint files (plain paths, file:// URLs) among `urls` that do not exist."""
    missing = []
    for url in urls:
        if "://" in url and not url.startswith("file://"):
            continue
        path = unquote(urlsplit(url).path) if "://" in url else url
        if not Path(path).expanduser().exists():
            missing.append(path)
    return missing


def _console() -> Console:
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:  # a pipe, a log: whole lines, never cut to 80 columns
        console = Console(highlight=False, soft_wrap=True, width=400)
    return console


def _view(found: list[dict[str, Any]], urls: tuple[str, ...]) -> Any:
    if not found:
        return Text(f"nothing reports at {', '.join(urls)} yet")
    return table(found)


def _print(found: list[dict[str, Any]], fmt: str, urls: tuple[str, ...] = ()) -> None:
    if fmt == "json":
        click.echo(json.dumps(document(found), ensure_ascii=False, default=str))
        return
    console = _console()
    if not found:
        for path in missing_files(urls):
            Console(stderr=True, highlight=False).print(
                f"{path} does not exist: no relay has saved a checkpoint there (is the path "
                "the relay's --checkpoint, as it was given, from the directory it ran in?)",
                soft_wrap=True,
                markup=False,
            )
        Console(stderr=True, highlight=False).print(
            "no relay or consumer has reported there (rowcast relay reports beside its "
            "--checkpoint; rowcast consume with --report URL)",
            soft_wrap=True,
        )
        return
    console.print(table(found))

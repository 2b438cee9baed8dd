"""``rowcast dlq``: see, replay and drop dead letters (`rowcast.dlq`)."""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ..dlq import DeadLetters, open_dead_letters
from .common import format_option
from .urls import Url

__all__ = ["dlq"]

URL = click.argument("url", type=Url("dlq"))
GROUP = click.option(
    "--group",
    metavar="GROUP",
    help="Only the dead letters this consumer group parked (RabbitMQ: the group of the queue).",
)
YES = click.option("--yes", is_flag=True, help="Do it (without it, only say what would be done).")


@contextlib.contextmanager
def _opened(url: str, group: str | None) -> Iterator[DeadLetters]:
    letters = open_dead_letters(url, **({"group": group} if group else {}))
    try:
        yield letters
    finally:
        letters.close()


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _console() -> Console:
    console = Console(highlight=False, soft_wrap=True)
    return console if console.is_terminal else Console(highlight=False, soft_wrap=True, width=400)


def _nothing(letters: Any) -> str:
    looked = getattr(letters, "looked_at", None)  # where it looked, when it can say
    return f"no dead letters at {letters.url}" + (f": {looked}" if looked else "")


@click.group()
def dlq() -> None:
    """See, replay and drop dead letters.

    URL is a consumer's broker (redis://host:6379/0, ?stream=KEY for one stream;
    nats://host:4222, ?stream=NAME; amqp://host/%2F?queue=NAME or ?group=NAME;
    kafka://host:9092, ?group=NAME or ?dead_letter=TOPIC) or a relay's --dead-letter
    event store (sqlite:///dead.db, postgresql://...).
    """


@dlq.command("ls")
@URL
@GROUP
@format_option("one JSON object per place")
def ls(url: str, group: str | None, fmt: str) -> None:
    """Where dead letters are kept at URL, how many, the oldest and the newest."""
    with _opened(url, group) as letters:
        places = letters.places()
    if fmt == "json":
        for place in places:
            click.echo(json.dumps(place.__dict__))
        return
    if not places:
        click.echo(_nothing(letters))
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("PLACE", "COUNT", "OLDEST", "NEWEST"):
        table.add_column(name, justify="right" if name == "COUNT" else "left")
    for place in places:
        table.add_row(place.name, f"{place.count:,}", _when(place.oldest), _when(place.newest))
    _console().print(table)


@dlq.command("show")
@URL
@GROUP
@click.option("--limit", type=click.IntRange(1, None), default=100, show_default=True)
@format_option("one JSON object per dead letter (its change in full)")
def show(url: str, group: str | None, limit: int, fmt: str) -> None:
    """Each dead letter at URL: when, the row, what failed and why, how many times."""
    with _opened(url, group) as letters:
        found = letters.read(limit)
    times = collections.Counter(letter.change_id for letter in found if letter.change_id)
    if fmt == "json":
        for letter in found:
            data: dict[str, Any] = letter.to_dict()
            data["times"] = times.get(letter.change_id, 1) if letter.change_id else 1
            click.echo(json.dumps(data, default=str, ensure_ascii=False))
        return
    if not found:
        click.echo(_nothing(letters))
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("WHEN", "PLACE", "ROW", "CHANGE", "TIMES", "BY", "WHY"):
        table.add_column(name, overflow="fold")
    for letter in found:
        change = letter.change
        table.add_row(
            _when(letter.at),
            letter.place,
            letter.row or "-",
            change.topic if change is not None else "(not a change)",
            str(times.get(letter.change_id, 1) if letter.change_id else 1),
            letter.group or letter.origin or "-",
            " ".join(letter.why.split())[:300],
        )
    _console().print(table)


@dlq.command("replay")
@URL
@GROUP
@click.option(
    "--to",
    "to",
    metavar="SINK_URL",
    type=Url("sink"),
    help="For a relay's dead letters: the sink to deliver them to (a consumer's go back "
    "to where they came from).",
)
@YES
def replay(url: str, group: str | None, to: str | None, yes: bool) -> None:
    """Send the dead letters at URL back, in the order they were parked (each row's in
    order); a consumer's are removed once sent. Without --yes, only count them."""
    with _opened(url, group) as letters:
        if not yes:
            count = sum(place.count for place in letters.places())
            where = f" to {to}" if to else " where they came from"
            click.echo(
                f"{count:,} dead letters at {letters.url} would be replayed{where}; --yes does it"
            )
            return
        sent = letters.replay(to)
    click.echo(f"replayed {sent:,} dead letters from {letters.url}")


@dlq.command("drop")
@URL
@GROUP
@YES
def drop(url: str, group: str | None, yes: bool) -> None:
    """Delete the dead letters at URL. Without --yes, only count them."""
    with _opened(url, group) as letters:
        if not yes:
            count = sum(place.count for place in letters.places())
            click.echo(f"{count:,} dead letters at {letters.url} would be deleted; --yes does it")
            return
        dropped = letters.drop()
    click.echo(f"deleted {dropped:,} dead letters from {letters.url}")

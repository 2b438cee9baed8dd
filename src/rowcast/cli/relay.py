"""``rowcast relay``: a source's changes to sinks, at least once, resumable (`rowcast.relay`)."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import click
from rich.console import Console

from .._delivery import modes as on_error_modes
from .._url import masked
from ..checkpoint import Checkpoint, open_checkpoint
from ..checkpoint.report import refuse_a_held
from ..errors import ConfigError, PermanentSinkError
from ..metrics import serve_metrics
from ..relay import Relay
from ..sinks.base import Sink, open_sink
from ..sinks.deadletter import DeadLetterSink, open_dead_letter
from ..sources._process import ProcessSource
from ..sources.base import Source, open_source
from .common import (
    ALLOW_EMPTY,
    LOG_FORMAT,
    METRICS_PORT,
    SNAPSHOT,
    SNAPSHOT_CHUNK,
    TABLES,
    in_an_existing_directory,
    serving_metrics,
    stop_on_signals,
)
from .common import patterns as table_patterns
from .config_file import config_option
from .console import print_error
from .relay_console import RelayDisplay, routed_logs
from .urls import Url

__all__ = ["relay"]

_STOPPING = (
    "finishing the delivery in flight, then saving the checkpoint (what a kill leaves "
    "unsaved is delivered again on restart)"
)

# open_source keyword -> the option it comes from
_FLAGS = {
    "tables": "--tables",
    "start": "--from",
    "snapshot": "--snapshot",
    "snapshot_chunk": "--snapshot-chunk",
    "server_id": "--server-id",
    "allow_empty": "--allow-empty",
}


@click.command()
@config_option
@click.argument("source_url", metavar="SOURCE_URL", type=Url("source"))
@click.option(
    "--to",
    "sink_urls",
    type=Url("sink"),
    multiple=True,
    required=True,
    metavar="SINK_URL",
    help="Where to deliver (repeat for several): '-' (stdout, JSON lines), sqlite:///events.db, "
    "postgresql://..., redis://..., nats://..., amqp://..., kafka://...",
)
@click.option(
    "--checkpoint",
    "checkpoint_url",
    type=Url("checkpoint"),
    required=True,
    metavar="URL",
    help="Where the relay keeps its position: a file path, sqlite:///x.db (in a directory "
    "that exists), postgresql://, mysql://, redis://, kafka://...?topic= (exactly once with a "
    "Kafka sink) (add ?name=... to keep several relays in one place).",
)
@TABLES
@ALLOW_EMPTY
@click.option(
    "--from",
    "start",
    metavar="now|start|POSITION",
    help="Where to begin when the checkpoint is empty: 'now' (the default), 'start' (the "
    "oldest change the server still has) or a position; a saved checkpoint always wins.",
)
@SNAPSHOT
@SNAPSHOT_CHUNK
@click.option(
    "--batch-size",
    type=click.IntRange(1, 1_000_000),
    default=1000,
    show_default=True,
    help="At most this many changes per delivery (whole transactions; one larger is sent alone).",
)
@click.option(
    "--on-error",
    "on_error",
    type=click.Choice(["stop", "retry", "dead-letter"]),
    multiple=True,
    help="When a sink refuses a transaction for good: 'stop' (the default; exit status 3, "
    "the checkpoint before it), 'dead-letter' (put it in --dead-letter, with the error, "
    "and go on) or 'retry' (for ever). Once for every sink, or once per --to, in order.",
)
@click.option(
    "--dead-letter",
    "dead_letter_url",
    type=Url("sink"),
    metavar="URL",
    help="Where --on-error dead-letter puts refused transactions, each change with the "
    "error: an event store URL (sqlite:///dead.db, postgresql://...) or '-' (stdout).",
)
@click.option(
    "--stall-after",
    type=click.FloatRange(1, None),
    default=120.0,
    show_default=True,
    metavar="SECONDS",
    help="Count the relay as stalled (log, metric, rowcast status) when its position has "
    "not moved for this long while the source's head has.",
)
@click.option(
    "--report-interval",
    type=click.FloatRange(0.5, 3600),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="How often the relay saves its report beside the checkpoint, for rowcast status.",
)
@LOG_FORMAT
@METRICS_PORT
@click.option(
    "--source-process",
    is_flag=True,
    help="Read the source in a child process, so reading and delivering use two cores "
    "(faster with a busy binlog; the child stops with the relay).",
)
@click.option(
    "--server-id",
    type=click.IntRange(1, 2**32 - 1),
    help="Replica id to read a MySQL/MariaDB binlog with (default: derived from the "
    "checkpoint, the same every run); two readers with one id are refused.",
)
def relay(
    source_url: str,
    sink_urls: tuple[str, ...],
    checkpoint_url: str,
    tables: tuple[str, ...],
    allow_empty: bool,
    start: str | None,
    snapshot: str,
    snapshot_chunk: int | None,
    batch_size: int,
    on_error: tuple[str, ...],
    dead_letter_url: str | None,
    stall_after: float,
    report_interval: float,
    log_format: str,
    metrics_port: int | None,
    server_id: int | None,
    source_process: bool,
) -> None:
    """Deliver every change committed at SOURCE_URL to each --to sink, at least once.

    SOURCE_URL is one of these sources (each needs its extra, see the README):

    \b
      mysql://user:password@host:3306/db   MySQL/MariaDB binlog (or mariadb://)
        rowcast relay mysql://root@127.0.0.1:3306/shop --to - --checkpoint relay.pos
      postgresql://user@host:5432/db       PostgreSQL logical replication (pgoutput)
        rowcast relay 'postgresql://app@127.0.0.1/shop?slot=shop&publication=shop'
          --to redis://127.0.0.1:6379/0 --checkpoint relay.pos
      sqlite:///app.db                     SQLite, captured with triggers
        rowcast relay sqlite:///app.db --to sqlite:///events.db --checkpoint relay.pos
      outbox+<database url>                the transactional outbox of SessionCapture
        rowcast relay outbox+postgresql://app@127.0.0.1/shop --to nats://127.0.0.1:4222
          --checkpoint relay.pos

    --snapshot initial first delivers every existing row (each chunk checkpointed;
    a relay killed mid-snapshot resumes after the last chunk), then the changes
    from the point the rows were read at.

    Each batch of transactions is acknowledged by every sink before the position
    is saved to --checkpoint; a restarted relay resumes there. Nothing is skipped.

    Everything is opened and checked first, the sinks before the source: each
    sink connects, authenticates and makes sure its destination exists (or
    creates it) and takes writes. A bad URL, an unreachable server or a
    destination that cannot take the changes exits with status 2, the fix in
    the message, before the source is read (its position and slot untouched).

    While relaying, a sink that fails for now (unreachable, a timeout, a
    deadlock, full) is retried with backoff; the status line, the JSON log and
    the metrics show its attempts and last error. A sink that refuses a
    transaction for good (a privilege, a missing schema or column, a constraint,
    a value it cannot hold) is given the batch's transactions one by one to find
    the refused one, then --on-error decides: 'stop' (the default) exits with
    status 3, the error and its fix on stderr, the checkpoint before that
    transaction; 'dead-letter' puts it in --dead-letter and goes on.

    Every few seconds the relay saves a report beside its checkpoint (state,
    position, the source's head, lag, rate, last error): rowcast status
    CHECKPOINT_URL shows it.

    Stop with Ctrl-C or SIGTERM: the batch in flight is finished and
    checkpointed (Ctrl-C again while it stops changes nothing). Exit status: 0
    stopped cleanly; 2 bad configuration, a server unreachable at start, or a
    source error the relay gave up on; 3 a sink refused a transaction for good;
    70 an unexpected error (a bug: run again with ROWCAST_DEBUG=1 for the
    traceback, and report it).
    """
    with contextlib.ExitStack() as stack:
        opening = stack.enter_context(contextlib.ExitStack())
        opening.enter_context(routed_logs(log_format))  # warnings while opening, formatted
        in_an_existing_directory("--checkpoint", checkpoint_url)
        checkpoint = open_checkpoint(checkpoint_url)
        stack.callback(checkpoint.close)
        refuse_a_held(checkpoint)  # another relay runs on it: before anything is opened
        sinks: list[Sink] = []
        for url in sink_urls:
            replicate = ("mode", "replicate") in parse_qsl(urlsplit(url).query)
            # a replicating sink creates missing tables from the source's own schema
            sink = open_sink(url, source_url=source_url) if replicate else open_sink(url)
            stack.callback(sink.close)
            sinks.append(sink)
        dead_letter: DeadLetterSink | None = None
        if dead_letter_url is not None:
            dead_letter = open_dead_letter(dead_letter_url)
            stack.callback(dead_letter.close)
        if on_error and len(on_error) not in (1, len(sinks)):
            raise ConfigError(
                f"--on-error is given {len(on_error)} times for {len(sinks)} --to sinks; give "
                "it once (for every sink) or once per --to, in the same order"
            )
        modes = on_error_modes(list(on_error) or ["stop"], len(sinks), dead_letter)
        for checked in [*sinks, *([dead_letter] if dead_letter is not None else [])]:
            checked.check()  # before the source is opened: it moves nothing on failure
        source = _open_source(
            source_url,
            checkpoint,
            tables,
            start,
            snapshot,
            snapshot_chunk,
            server_id,
            checkpoint_url if source_process else None,
            allow_empty,
        )
        the_relay = Relay(
            source,
            sinks,
            checkpoint,
            batch_size=batch_size,
            on_error=modes,
            dead_letter=dead_letter,
            check=False,  # done above, before the source was opened
            stall_after=stall_after,
            report_interval=report_interval,
        )
        stack.enter_context(serving_metrics(serve_metrics, the_relay.stats, metrics_port))
        refused: PermanentSinkError | None = None
        opening.close()  # the display routes them from here
        with stop_on_signals(the_relay.stop, _STOPPING), RelayDisplay(the_relay.stats, log_format):
            try:
                the_relay.run()
            except BrokenPipeError:  # `rowcast relay ... --to - | head`: stop quietly
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except PermanentSinkError as error:  # logged by the relay (event "refused")
                refused = error
        stats = the_relay.stats
    at = stats.position or stats.resumed_from or "-"
    if log_format == "text":
        Console(stderr=True, highlight=False).print(
            f"relayed {stats.changes:,} changes in {stats.transactions:,} transactions to "
            f"{len(sinks)} sink{'s' if len(sinks) > 1 else ''}; checkpoint at {at}",
            soft_wrap=True,
        )
    if refused is not None:
        if log_format == "text":  # the JSON log has it as its "refused" record
            print_error(
                f"{refused}. The relay stopped with the checkpoint at {at}: fix that and "
                "start it again (it resumes there), or start it with --on-error dead-letter "
                "--dead-letter URL to set refused transactions aside."
            )
        click.get_current_context().exit(3)


def _open_source(
    url: str,
    checkpoint: Checkpoint,
    tables: tuple[str, ...],
    start: str | None,
    snapshot: str,
    snapshot_chunk: int | None,
    server_id: int | None,
    process_checkpoint_url: str | None = None,
    allow_empty: bool = False,
) -> Source:
    """The source, resuming from `checkpoint`, checked against its server when it can be.

    With `process_checkpoint_url`, the source checked here is then read in a child
    process (`ProcessSource`) that resumes from the checkpoint at that URL.
    """
    options: dict[str, Any] = {"checkpoint": checkpoint}
    patterns = table_patterns(tables)
    if patterns:
        options["tables"] = patterns
    if start is not None:
        options["start"] = start
    if server_id is not None:
        options["server_id"] = server_id
    if snapshot != "never":
        options["snapshot"] = snapshot
    if snapshot_chunk is not None:
        options["snapshot_chunk"] = snapshot_chunk
    if allow_empty:
        options["allow_empty"] = True
    try:
        source = open_source(url, **options)
    except TypeError as e:  # an option this kind of source does not have
        given = ", ".join(flag for name, flag in _FLAGS.items() if repr(name) in str(e))
        raise ConfigError(
            f"{masked(url)}: this source does not take {given or 'these options'} ({e})"
        ) from e
    source.check()  # reach the server now: a bad URL fails here, not later
    if process_checkpoint_url is not None:
        source.close()  # only checked here: the child opens its own
        return ProcessSource(url, process_checkpoint_url, **options)
    return source

"""The contract every source keeps, the base of log sources, and `open_source`.

A source reads a database's changes and yields *transactions*: non-empty
lists of `Change`, in commit order, each whole (never split, never merged).
Every change of a transaction carries the transaction's ``position``: where
reading can resume *after* it. So a consumer that saved the position of the
last transaction it handled restarts with no loss and no duplicate.

``start`` is ``"now"`` (the default: only what commits from now on),
``"start"`` (the oldest change the server still has) or a position string
from a Change or a checkpoint. A `Checkpoint` given as ``checkpoint=`` wins
over ``start`` when it holds a position, and `run` saves to it after the
hub's receivers returned from each transaction.

`Source` is the protocol the relay and the CLI use; `LogSource` is the base of
the sources that read a change log (binlog, logical replication, the SQLite
trigger table, the outbox) and holds what they share: see its docstring.
`rowcast.testing.source.SourceContract` checks a log source against it.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import logging
import sys
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from .. import backends
from .._url import masked
from ..change import Change
from ..errors import ConfigError, SourceError
from ..hub import Hub
from . import backfills as requests
from ._backfill import Backfill, Reads
from .health import LogHealth

if TYPE_CHECKING:
    from ..checkpoint import Checkpoint

__all__ = ["Check", "Diagnosis", "LogSource", "Source", "diagnose", "open_source"]

_FIRST_BACKOFF = 0.2  # seconds before the first reconnect; doubled after each failure
_MAX_BACKOFF = 5.0


@runtime_checkable
class Source(Protocol):
    """A stream of committed transactions from one database: what a relay reads.

    `checkpoint` is where reading resumes from (and what `run` saves to); a relay
    sets it when it is None. `start` is where reading begins when the checkpoint
    holds nothing (None: the source's own default), `position` where reading
    would resume (None until the source knows). `LogSource` spells out the rest.
    """

    checkpoint: Checkpoint | None

    @property
    def start(self) -> str | None:
        """``"now"``, ``"start"`` or a position: where reading begins without a checkpoint."""
        ...

    @property
    def position(self) -> str | None:
        """Where reading would resume: the end of the last transaction read, or None."""
        ...

    def __iter__(self) -> Iterator[list[Change]]:
        """Transactions in commit order; blocks for the next one."""
        ...

    def run(self, hub: Hub) -> None:
        """Publish every transaction on `hub` until `stop` is called."""
        ...

    def stop(self) -> None:
        """Stop reading; safe from another thread or a signal handler."""
        ...

    def check(self) -> None:
        """Reach the database now: `ConfigError` with the fix when it cannot be read."""
        ...

    def close(self) -> None:
        """Release what the source holds between iterations; idempotent."""
        ...


def publish_all(source: Source, hub: Hub, checkpoint: Checkpoint | None) -> None:
    """What `Source.run` does: publish, then save the position, one transaction at a time."""
    for transaction in source:
        hub.publish(transaction)
        position = transaction[-1].position
        if checkpoint is not None and position is not None:
            checkpoint.save(position)


def foreign_checkpoint(target: str, checkpoint: str, saved: str, expected: str) -> ConfigError:
    """The refusal of the checkpoint `checkpoint`, whose `saved` position is not `expected`
    (what a position of the source at `target` is)."""
    return ConfigError(
        f"{target}: the checkpoint {checkpoint} holds {saved!r}, which is not {expected}: it "
        "is the checkpoint of another kind of source (a PostgreSQL LSN, a MySQL binlog "
        "file:offset, a SQLite change number...), and nothing was created. Give this relay a "
        "checkpoint of its own (a new --checkpoint: it starts from now, or --from / --snapshot "
        "initial), or relay the source that one belongs to"
    )


class LogSource(abc.ABC):
    """A database's change log read as a `Source`: what every log source shares.

    The contract (`rowcast.testing.source.SourceContract` tests it):

    ``start``
        ``"now"``, ``"start"`` or a position of this source: where reading
        begins when `checkpoint` holds no position.
    ``end``
        None (read until stopped), ``"now"`` (the server's position when
        iteration starts) or a position: iteration ends once it is passed.
    ``checkpoint``
        None or a `Checkpoint`. When it holds a position, reading resumes right
        after it and `start` is ignored; `run` saves each transaction's position
        to it once the hub's receivers returned. A relay sets it when None.
        When it is empty, iteration saves where it starts (``"now"`` and
        ``"start"`` resolved to a position) before it hands out or drops
        anything: a reader owns its position from its first moment, so any
        exit before the first save resumes there, never at a later "now".
    ``position``
        Where reading would resume: the end of the last transaction read (None
        until the source knows). Reading again from it loses and repeats nothing.
    ``check()``
        Reaches the server now and raises `ConfigError` with every fix it needs
        (wrong password, unreachable host, a server setting, a privilege).
        Iteration does the same first, so nothing streams from a server that
        cannot be read.
    ``stop()``
        Ends iteration after the transaction being read: within a heartbeat or
        a poll when idle, at once during a reconnect wait. Safe from any thread
        and from a signal handler (it only sets an event). A stop before
        iteration begins is not kept: iterating starts afresh.
    ``close()``
        Releases what the source holds between iterations; idempotent. An
        iteration releases its own connections when it ends.
    ``health(position)``
        What the server says about its log for a reader at `position`
        (`rowcast.sources.health.LogHealth`: the head, how far behind, what is
        retained); one thread may call it while another iterates (it has a
        connection of its own). Unknown fields are None.
    Iteration
        Whole transactions in commit order. A lost connection or a restarting
        server is retried with backoff (0.2 s, doubling to 5 s, back to 0.2 s
        once a read succeeds) from the end of the last transaction handed out,
        so nothing is lost or repeated; a stop during the wait ends iteration
        quietly. Anything else ends iteration with `SourceError` (or the
        `ConfigError` that says what to change).

    A subclass calls ``super().__init__`` with the URL (password masked) that
    names it in messages, implements `check` and `_iterate`, and reads through
    `_reconnecting`, saying which errors are worth a reconnect (`_transient`).
    """

    #: what is read, for messages: "the binlog", "rowcast_outbox", ...
    reading: ClassVar[str] = "the change log"
    #: where reconnects are logged: the subclass's module logger
    _log: ClassVar[logging.Logger] = logging.getLogger("rowcast.sources")
    #: None, or when a crash makes it hand out again what a destination already
    #: committed with its position (an exactly-once relay warns, `rowcast.relay`)
    redelivers: ClassVar[str | None] = None

    def __init__(
        self, target: str, *, start: str, end: str | None, checkpoint: Checkpoint | None
    ) -> None:
        self.start: str = start
        self.end: str | None = end
        self.checkpoint: Checkpoint | None = checkpoint
        self.position: str | None = None
        self._target = target  # the URL, password masked
        self._stopping = threading.Event()
        self._ctl: Any = None  # a second connection for lookups while streaming, or None
        self._probe: Any = None  # a connection of `health`'s own, or None
        self._resumed = False  # whether this iteration's start came from the checkpoint

    # ------------------------------------------------------------------ the contract

    @abc.abstractmethod
    def check(self) -> None:
        """Raise `ConfigError` with every fix the server needs before it can be read."""

    def run(self, hub: Hub) -> None:
        """Publish every transaction on `hub` until `stop` (or the `end`), saving checkpoints."""
        publish_all(self, hub, self.checkpoint)

    def stop(self) -> None:
        """Stop after the transaction being read; safe from any thread or a signal handler."""
        self._stopping.set()

    def close(self) -> None:
        """Release the connections this source holds (iteration releases its own too)."""
        self._close_control()
        probe, self._probe = self._probe, None
        if probe is not None:
            with contextlib.suppress(Exception):
                probe.close()

    def health(self, position: str | None) -> LogHealth:
        """What the server says about its log for a reader at `position` (`LogHealth`).

        Nothing is known by default; a subclass that can ask its server asks through
        `_probing`. Raises the driver's error, or a `ConfigError`, when it cannot.
        """
        return LogHealth()

    def _probing(self, ask: Callable[[Any], LogHealth]) -> LogHealth:
        """``ask(connection)`` on a control connection of `health`'s own, kept between
        calls (closed by `close`, opened again after an error)."""
        try:
            if self._probe is None:
                self._probe = self._connect_control()
            return ask(self._probe)
        except Exception:
            probe, self._probe = self._probe, None
            if probe is not None:
                with contextlib.suppress(Exception):
                    probe.close()
            raise

    def __iter__(self) -> Generator[list[Change], None, None]:
        """Transactions in commit order (`close` the generator to stop reading early)."""
        self._stopping.clear()  # first: a stop() from now on must not be forgotten
        try:
            reads = self._backfill_reads()
            if reads is None:
                yield from self._iterate()
            else:
                checkpoint = self.checkpoint
                backfill = Backfill(
                    reads,
                    checkpoint.url if checkpoint is not None else None,
                    checkpoint.load() if checkpoint is not None else None,
                    self._stopping,
                    checkpoint,
                )
                yield from backfill.around(self._iterate())
        finally:
            self._close_control()

    # ------------------------------------------------------------------ backfills

    def backfill(
        self, tables: Sequence[str], *, where: str | None = None, chunk: int = 1000
    ) -> int:
        """Ask every reader of this database to read `tables` (patterns) again, only the
        rows matching `where` (SQL) when given, `chunk` rows at a time, while it streams;
        the request's id. See `rowcast.sources.signal` and ``rowcast backfill``."""
        with requests.answered(self._target):
            return requests.ask(self._reads_or_refuse(), self._target, tables, where, chunk)

    def cancel_backfill(self, request: int) -> None:
        """Ask every reader to stop the backfill `request`."""
        with requests.answered(self._target):
            requests.cancel(self._reads_or_refuse(), self._target, request)

    def backfills(self, *, stale_after: float | None = None) -> list[requests.Status]:
        """Every backfill asked of this database, with each reader's progress (a tail
        silent for `stale_after` seconds is abandoned: see `rowcast.sources.backfills`)."""
        with requests.answered(self._target):
            return requests.status(self._reads_or_refuse(), stale_after)

    def _backfill_reads(self) -> Reads | None:
        """What a backfill needs of this source (None: it cannot backfill)."""
        return None

    def _reads_or_refuse(self) -> Reads:
        reads = self._backfill_reads()
        if reads is None:
            raise ConfigError(f"{self._target}: {type(self).__name__} cannot backfill")
        return reads

    # ------------------------------------------------------------------ for subclasses

    @abc.abstractmethod
    def _iterate(self) -> Iterator[list[Change]]:
        """One iteration: check, resolve where to start, read until stopped or the end."""

    #: what a position of this source is, in the refusal of a checkpoint of another kind
    #: of source's (`_refuse_a_foreign_checkpoint`; None: the source checks its own)
    _POSITION: ClassVar[str | None] = None

    def _is_position(self, value: str) -> bool:
        """Whether `value`, a checkpoint's, can be a position of this source."""
        return True

    def _refuse_a_foreign_checkpoint(self) -> None:
        """Before anything is made or read (`check`, a relay's start): a `ConfigError` when
        the checkpoint holds what is no position of this source (another kind of
        source's). Not on each iteration: a transactional checkpoint's load is no mere
        read (with the Kafka sink's exactly-once checkpoint, one more load per iteration of
        an outbox relay doubled changes across a kill)."""
        if self._POSITION is None or self.checkpoint is None:
            return
        saved = self.checkpoint.load()
        if saved is not None and not self._is_position(saved):
            raise foreign_checkpoint(self._target, self.checkpoint.url, saved, self._POSITION)

    def _resume_from(self) -> str:
        """Where this iteration starts: the checkpoint's position when it holds one, else
        `start` (unchecked: the subclass checks it against its server)."""
        saved = self.checkpoint.load() if self.checkpoint is not None else None
        self._resumed = saved is not None
        return saved or self.start

    def _own_start(self, position: str) -> None:
        """Save `position`, where this iteration starts, to an empty checkpoint.

        A subclass calls it once it has resolved `start` against its server, before
        it hands out anything: from then on a restart resumes there (not at a later
        "now", which would skip what was written in between)."""
        if self.checkpoint is None or self._resumed:
            return
        self.checkpoint.save(position)
        self._resumed = True
        self._log.info(
            "%s: the checkpoint %s was empty: it now holds %s, where reading starts",
            self._target,
            self.checkpoint.url,
            position,
        )

    def _transient(self, error: Exception) -> bool:
        """Whether `error` means the connection or the server went away (worth a reconnect)."""
        return False

    def _fatal(self, error: Exception, where: str) -> Exception | None:
        """A `ConfigError` for an error that only a change of configuration fixes, or None."""
        return None

    def _reconnecting(
        self, read: Callable[[], Generator[list[Change], None, None]], where: Callable[[], str]
    ) -> Iterator[list[Change]]:
        """The transactions of ``read()``, opened again after each transient error.

        ``read()`` opens one connection and yields what it reads from where the last
        transaction handed out ended (it keeps that itself); an empty list means a
        successful read with nothing to hand out (it resets the backoff). It returns
        when stopped or at the end. `where` describes where reading resumes, for logs.
        """
        backoff = _FIRST_BACKOFF
        while not self._stopping.is_set():
            try:
                with contextlib.closing(read()) as transactions:
                    for transaction in transactions:
                        backoff = _FIRST_BACKOFF
                        if transaction:
                            yield transaction
                return  # stopped, or at the end
            except Exception as error:
                transient = self._transient(error)
                if transient and self._stopping.is_set():
                    return  # stopped while the server was away
                fatal = self._fatal(error, where())
                if fatal is not None:
                    raise fatal from error
                if not transient:
                    if isinstance(error, ConfigError | SourceError):
                        raise
                    raise SourceError(
                        f"{self._target}: reading {self.reading} failed: {str(error).strip()}"
                    ) from error
                reason = str(error).strip().splitlines()
                self._log.warning(
                    "lost %s (%s); reconnecting in %.1fs from %s",
                    self._target,
                    reason[0] if reason else type(error).__name__,
                    backoff,
                    where(),
                )
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
            finally:
                self._close_control()

    def _control(self) -> Any:
        """A second connection for lookups while streaming (opened once, closed on errors)."""
        if self._ctl is None:
            self._ctl = self._connect_control()
        return self._ctl

    def _connect_control(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no control connection")

    def _close_control(self) -> None:
        ctl, self._ctl = self._ctl, None
        if ctl is not None:
            with contextlib.suppress(Exception):  # already gone with the server
                ctl.close()


@dataclasses.dataclass(frozen=True)
class Check:
    """One line of ``rowcast doctor``: a setting, whether it is right, and the fix."""

    name: str
    ok: bool
    value: str
    fix: str = ""


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """What ``rowcast doctor URL`` prints: the target, facts about it, and the checks."""

    target: str  #: the URL, password masked
    facts: list[tuple[str, str]]  #: ("server", "10.11.6-MariaDB"), ("binlog", "mysql-bin.000003:4")
    checks: list[Check]
    ready: str  #: said when every check passes, e.g. "rowcast can read this server's binlog."


def open_source(url: str, **options: Any) -> Source:
    """The source for `url` (``mysql://user:password@host:3306/db?server_id=...``)."""
    source: Source = backends.load("source", url)(url, **options)
    return source


def diagnose(url: str) -> Diagnosis:
    """Check that the server at `url` can be read as a change source (``rowcast doctor``).

    Raises `ConfigError` when the URL is not a source's or the server cannot be used at
    all (unreachable, wrong password); failed checks are in the result, not raised.
    A source's module offers it as a function ``diagnose(url) -> Diagnosis``.
    """
    module = sys.modules[backends.load("source", url).__module__]
    check = getattr(module, "diagnose", None)
    if check is None:
        raise ConfigError(f"{masked(url)!r}: {module.__name__} has no diagnose(url) to run")
    result: Diagnosis = check(url)
    return result

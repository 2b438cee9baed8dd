"""Every committed row change of a SQLite database, captured by triggers.

::

    source = TriggerSource("sqlite:///app.db", tables=["orders", "items"])
    source.run(hub)                       # or: for transaction in source: ...

On its first read a source creates ``rowcast_changes`` and three AFTER
triggers (insert, update, delete) on each captured table: every ordinary
table of ``main`` by default, ``tables`` (``fnmatch`` patterns on ``"table"``
or ``"main.table"``) otherwise, never SQLite's own nor a ``rowcast_*`` table.
Every writer of the file, in any process or language, then records its
changes in the same transaction as its own writes: a rolled back write
leaves nothing, a committed one is never lost. `rowcast.sources.sqlite.triggers`
shows the table and how transactions are told apart.

Each `Change` has ``source="sqlite"``, ``schema="main"``, ``pk`` the primary
key value (a tuple for a composite key; the rowid for a table without one),
``before``/``after`` the whole row with the values SQLite stored (int,
float to the last bit, infinities and -0.0 included, str, bytes, None; no
conversion by declared type; SQLite stores NaN as NULL: the triggers copy
values into untyped columns, they never print them), ``position`` the
``seq`` of the transaction's last row (``"1234"``), ``txid``
``"<first seq>-<last seq>"`` and ``ts`` when a reader first found it committed
(the triggers read no clock, see `triggers`): within `poll` of the
commit while a source runs and keeps up, later while the app holds the write
lock.

Transactions come in commit order, whole, never split, each change once.
SQLite does not tell a trigger where a transaction ends, so rowcast finds
boundaries from the outside, and every one it finds is true (see
`triggers`): a commit that a waiting reader notices and seals
before the app's next write comes on its own; commits that follow each
other faster than that, or while no reader runs, may come merged into one
list. A merged list still holds only whole transactions, so its position is
as safe to resume from as any other.

The source waits by polling ``PRAGMA data_version`` every `poll` seconds
(shared memory, no disk I/O), only while it has nothing to read. On every
schema change (``PRAGMA schema_version``) it re-creates the triggers of
tables whose columns changed and installs those of new tables. Until it
does, the old triggers run: rows written after an ``ALTER TABLE`` and before
that carry the old column set (an added column is missing from their images,
a renamed table or column keeps its old name), and so does every write made
while no source reads. A column named by the triggers cannot be dropped
(SQLite refuses: "error in trigger rowcast_t_update"): drop the table's three
triggers in the migration's transaction; a running source re-creates them
after the commit, and changes committed in between are not captured, so
migrate while the app does not write to that table.

``rowcast_changes`` is pruned by `prune` (run by every reading source when
idle, every `prune_every` seconds): the transactions found committed more
than `retain` seconds ago that every checkpointed reader (a source given
``checkpoint=``, recorded in ``rowcast_readers``) has passed. Resuming from
a pruned position is a `ConfigError`. ``rowcast uninstall sqlite:///app.db``
removes the triggers.

``snapshot="initial"`` first hands out every existing row of the captured tables
(``write`` changes with ``snapshot=True``, in chunks of ``snapshot_chunk`` rows
by key), read in one view of the file with the end of ``rowcast_changes``, then
reads on from there: see `rowcast.sources.sqlite.snapshot`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Final

from ..._url import masked
from ...change import Change
from ...errors import ConfigError, SourceError
from ..base import Diagnosis, LogSource
from ..signal import NAME as SIGNAL
from . import readers, tails, triggers
from . import snapshot as snapshots
from .backfill import SqliteReads
from .decode import Decoder, Row
from .file import check_patterns, connect, matcher, parse_url

if TYPE_CHECKING:
    from ...checkpoint import Checkpoint

__all__ = ["TriggerSource", "diagnose"]

log = logging.getLogger("rowcast.sources.sqlite")

_PAGE: Final = 1000
_SELECT: Final = "SELECT * FROM rowcast_changes WHERE seq >= ? ORDER BY seq LIMIT ?"


def _position(value: str, what: str = "start") -> int:
    if not value.isdigit():
        raise ConfigError(
            f"bad SQLite source {what} {value!r}: expected 'now', 'start' or a position "
            "from a change or a checkpoint (the seq of a rowcast_changes row, e.g. '1234')"
        )
    return int(value)


class TriggerSource(LogSource):
    """A SQLite database's captured changes as a stream of `Change` transactions.

    `start` is ``"now"`` (default), ``"start"`` (the oldest row kept) or a
    position; a `checkpoint` holding a position wins over it, and `run` saves
    to it. `end` (``"now"`` or a position) makes iteration stop once that
    position is passed. `timeout` is how long a write of the source (trigger
    install, seal, prune) waits for the app's writers. See the module docstring.

    A file has no connection to lose: an error while reading is a `SourceError`
    at once (`LogSource` for the rest of the contract).
    """

    reading = "rowcast_changes"
    _log = log

    def __init__(
        self,
        url: str,
        *,
        tables: Iterable[str] | None = None,
        start: str | None = None,
        end: str | None = None,
        checkpoint: Checkpoint | None = None,
        retain: float | None = None,
        poll: float = 0.05,
        timeout: float = 30.0,
        prune_every: float = 60.0,
        server_id: int | None = None,
        snapshot: str = "never",
        snapshot_chunk: int = 1000,
        allow_empty: bool = False,
    ) -> None:
        self.path, options = parse_url(url)
        self.url = masked(url)  # the source's name in messages
        if server_id is not None:
            raise ConfigError("server_id is for mysql:// sources; a SQLite source has none")
        if isinstance(tables, str):
            raise ConfigError(f"tables= takes a list of patterns, not the string {tables!r}")
        if tables is None and "tables" in options:
            tables = options["tables"].split(",")
        self.tables = tuple(tables) if tables is not None else None
        start = start or options.get("start") or "now"
        if snapshots.is_position(start):
            snapshots.plan(start, snapshot)  # checks it
        elif start not in ("now", "start"):
            _position(start)
        snapshots.check_options(snapshot, snapshot_chunk, start)
        self.snapshot, self.snapshot_chunk = snapshot, snapshot_chunk
        self.snapshot_progress: snapshots.SnapshotProgress | None = None
        if end is not None and end != "now":
            _position(end, "end")
        raw = retain if retain is not None else options.get("retain", 86400.0)
        try:
            self.retain = float(raw)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"retain is a number of seconds, not {raw!r}") from e
        if not self.retain >= 0:
            raise ConfigError(f"retain is a number of seconds >= 0, not {raw!r}")
        super().__init__(self.url, start=start, end=end, checkpoint=checkpoint)
        self.poll, self.timeout, self.prune_every = poll, timeout, prune_every
        matches = matcher(self.tables)
        #: the app's tables read (snapshots, backfills); the log also carries rowcast_signal
        self._wanted: Callable[[str], bool] = lambda name: name != SIGNAL and bool(matches(name))
        self._capture: Callable[[str], bool] = lambda name: name == SIGNAL or self._wanted(name)
        self._schema: int | None = None
        self._decoder = Decoder(self._capture)
        self._incarnation: int | None = None  # of rowcast's tables, when this source read them
        self.allow_empty = bool(allow_empty)  # a pattern matching no table is no typo
        self._patterns_checked = False
        self._joined = False  # whether this tail is recorded in rowcast_state

    # ------------------------------------------------------------------ public

    def stop(self) -> None:
        """Stop after the transaction being handed out.

        Within `poll` seconds when idle, `timeout` when waiting for the app's write
        lock to record where a transaction ends (that transaction is not handed out).
        """
        super().stop()

    @property
    def temporary(self) -> bool:
        """Whether this reader leaves nothing behind (no checkpoint: a tail; see `tails`)."""
        return self.checkpoint is None

    _POSITION = "a SQLite position (the seq of a rowcast_changes row, e.g. '1234')"

    def _is_position(self, value: str) -> bool:
        return value.isdigit() or snapshots.is_position(value)

    def check(self) -> None:
        """Open the file and install the triggers now (a temporary reader: tried, rolled
        back): `ConfigError` says what is wrong."""
        self._refuse_a_foreign_checkpoint()
        if self.checkpoint is None:  # a tail
            with contextlib.closing(connect(self.path, self.timeout)) as conn:
                self._install(conn, keep=False)
        else:
            with contextlib.closing(connect(self.path, self.timeout)) as conn:
                readers.check_known(conn, self.checkpoint, self.url)  # before installing
            self.install()
            with contextlib.closing(connect(self.path, self.timeout)) as conn:
                readers.refuse_another(conn, self.checkpoint, self.url)

    def install(self) -> list[str]:
        """Create rowcast's tables and the captured tables' triggers now; their names, made."""
        with contextlib.closing(connect(self.path, self.timeout)) as conn:
            return [name for name, _, _ in self._install(conn).create]

    def prune(self) -> int:
        """Delete the rows every checkpointed reader has passed, older than `retain`; a count.

        Only whole transactions go (up to a sealed row), and the highest seq
        removed is kept, so a reader asking for an older position is refused.
        """
        with contextlib.closing(connect(self.path, self.timeout)) as conn:
            return self._prune(conn)

    def _backfill_reads(self) -> SqliteReads:
        return SqliteReads(self.path, self.url, self.timeout, self._capture)

    def _iterate(self) -> Iterator[list[Change]]:
        conn = connect(self.path, self.timeout)
        self._reading: str | None = None  # this reader's record in rowcast_state, claimed
        tail = tails.key() if self.temporary else None
        try:
            yield from self._stream(conn, tail)
        except sqlite3.Error as e:
            raise SourceError(f"{self.url}: reading rowcast_changes failed: {e}") from e
        finally:
            try:
                if tail is not None and self._joined:
                    tails.leave_logged(conn, tail, self.url)
                readers.release(conn, self._reading)
            finally:
                conn.close()

    # ------------------------------------------------------------------ internals

    def _install(
        self, conn: sqlite3.Connection, keep: bool = True, tail: str | None = None
    ) -> triggers.Plan:
        """Make rowcast's tables and triggers true (rolled back without `keep`); what the
        `tail` (its record) makes is marked as a tail's (see `tails`)."""
        if sqlite3.sqlite_version_info < triggers.SQLITE:
            raise ConfigError(
                f"{self.url}: this Python's SQLite is {sqlite3.sqlite_version}; the trigger "
                f"source needs {'.'.join(map(str, triggers.SQLITE))}+ (pragma_table_list)"
            )
        try:
            # the triggers and every seal must outlive a power loss: a seal lost would
            # let a later reader group the changes it bounds otherwise (other ids)
            conn.execute("PRAGMA synchronous = FULL")
            if not (self._patterns_checked or self.allow_empty):  # once: tables come and go
                check_patterns(conn, self.url, self.tables)
                self._patterns_checked = True
            mark = functools.partial(tails.mark, tail=tail) if tail else None
            done = triggers.apply(conn, self._capture, mark, keep)
            self._joined = self._joined or bool(tail and done.create)
            if keep and not tail and self.checkpoint is not None:
                tails.adopt(conn, self._capture)  # what tails made here is a relay's now
        except sqlite3.OperationalError as e:
            if "readonly" in str(e) or "read-only" in str(e):
                raise ConfigError(
                    f"{self.url}: rowcast must write to the database (triggers, "
                    f"rowcast_changes) but cannot: {e}; give this user write access to the "
                    "file and its directory"
                ) from e
            raise SourceError(f"{self.url}: installing the triggers failed: {e}") from e
        if not keep:  # only tried
            return done
        for name in done.drop:
            log.info("%s: dropped trigger %s", self.url, name)
        for name, _, _ in done.create:
            log.info("%s: created trigger %s", self.url, name)
        self._schema = conn.execute("PRAGMA schema_version").fetchone()[0]
        self._decoder.forget()  # layouts read again when needed: tables may have been remade
        incarnation = triggers.incarnation(conn)
        if self._incarnation is not None and incarnation != self._incarnation:
            raise SourceError(
                f"{self.url}: rowcast_changes was dropped and made again while this source "
                "read it (rowcast uninstall --yes?): the changes written in between "
                "are lost to it, and its position means nothing in the new table; start "
                "again (start='start', a new checkpoint)"
            )
        return done

    def _resolve(
        self, conn: sqlite3.Connection, start: str, own: bool = True
    ) -> tuple[int, int | None]:
        if self.checkpoint is None:
            return self._start(conn, start)
        # A checkpointed reader is recorded in rowcast_readers before it reads, in the
        # transaction that checks its start against what was pruned: from then on no
        # prune (of any source) takes a row it has not passed.
        conn.execute("BEGIN IMMEDIATE")
        try:
            readers.check_known(conn, self.checkpoint, self.url)
            cursor, end = self._start(conn, start)
            readers.record(conn, self.checkpoint, cursor)
            self._reading = readers.claim(conn, self.checkpoint, self.url)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if own:  # after the record: a saved position is always a known one
            self._own_start(str(cursor))
        return cursor, end

    def _start(self, conn: sqlite3.Connection, start: str) -> tuple[int, int | None]:
        """Where reading starts (after) and ends (None: never), checked against the table."""
        (last,) = conn.execute("SELECT coalesce(max(seq), 0) FROM rowcast_changes").fetchone()
        row = conn.execute("SELECT value FROM rowcast_state WHERE key = 'pruned'").fetchone()
        pruned = row[0] if row else 0
        if start == "now":
            cursor = max(last, pruned)
        elif start == "start":
            cursor = pruned
        else:
            cursor = _position(start, "position")
            if cursor < pruned:
                raise ConfigError(
                    f"{self.url}: the changes after position {cursor} were pruned (up to "
                    f"{pruned}), and reading on would skip them: copy the tables as they are "
                    "now (--snapshot initial with an emptied checkpoint, or rowcast backfill); "
                    "raise retain= so that it does not happen again"
                )
            if cursor > max(last, pruned):
                raise ConfigError(
                    f"{self.url} has no position {cursor}: its changes end at {last} "
                    "(a position from another database?)"
                )
        end = None
        if self.end == "now":
            # what a snapshot ends with ends a transaction: sealed under the write lock
            # that `last` was read in (the caller's), or read again under one's own
            if not conn.in_transaction:
                end, _ = triggers.seal_newest(conn)
            else:
                end = last
                if last:
                    triggers.seal(conn, last)
        elif self.end is not None:
            end = int(self.end)
        return cursor, end

    def _stream(self, conn: sqlite3.Connection, tail: str | None) -> Iterator[list[Change]]:
        self._incarnation = None
        self._joined = False  # whether a tail is recorded (it made something, or others did)
        if self.checkpoint is not None:  # a refusal installs nothing (asked again in _resolve)
            readers.check_known(conn, self.checkpoint, self.url)
        self._install(conn, tail=tail)
        if tail is not None and not self._joined:  # triggers other tails made: recorded,
            self._joined = tails.join_if_marked(conn, tail, self.url)  # so none removes them
        self._incarnation = triggers.incarnation(conn)
        cut = snapshots.plan(self._resume_from(), self.snapshot)
        start = (cut.point or "now") if cut else self._resume_from()
        cursor, end = self._resolve(conn, start, own=cut is None)  # a snapshot saves its own
        self.position = str(cursor)
        if cut is not None:  # the rows first, then what came after them (see `snapshot`)
            snapshot = snapshots.Snapshot(
                self.path,
                self.timeout,
                cut,
                self._wanted,
                self.snapshot_chunk,
                self._stopping,
                seal=lambda: self._seal_newest(conn),
                decoder=self._decoder,
                conn=conn,
                save=self.checkpoint.save if self.checkpoint is not None else None,
            )
            self.snapshot_progress = snapshot.progress
            for transaction in snapshot:
                yield transaction
                self.position = transaction[-1].position
            if self._stopping.is_set():
                return
            cursor = snapshot.resume
        last_prune = time.monotonic()
        while not self._stopping.is_set():
            if end is not None and cursor >= end:
                return
            (version,) = conn.execute("PRAGMA data_version").fetchone()  # before the look
            (schema,) = conn.execute("PRAGMA schema_version").fetchone()
            if schema != self._schema:
                self._install(conn, tail=tail)
            found = False
            for group in self._groups(conn, cursor):
                found = True
                cursor = group[-1][0]
                try:
                    changes = self._decoder.changes(conn, group)
                except (ValueError, KeyError, TypeError, IndexError) as e:
                    raise SourceError(
                        f"{self.url}: rows {group[0][0]} to {group[-1][0]} of rowcast_changes "
                        f"are malformed ({e}); were they written by hand?"
                    ) from e
                self.position = str(cursor)
                if changes:
                    yield changes
                if self._stopping.is_set() or (end is not None and cursor >= end):
                    return
            if found:
                continue
            if time.monotonic() - last_prune >= self.prune_every:
                last_prune = time.monotonic()
                self._prune(conn)
            while not self._stopping.wait(self.poll):
                if conn.execute("PRAGMA data_version").fetchone()[0] != version:
                    break

    def _groups(self, conn: sqlite3.Connection, after: int) -> Iterator[list[Row]]:
        """The rows after `after` as transactions (see `triggers`), up to now.

        Every group ends at a committed ``sealed`` before it is handed out, so
        every later reader groups the same rows the same way (a change's id is
        made of its group's position). A group that ends at the newest row waits
        until its seal is committed.
        """
        group: list[Row] = []
        while True:
            # a group carried on is read again from its last row, in the same snapshot as
            # the rows after it: another reader may have sealed that row since (a seal
            # only ever lands on the newest row, so no other row of the group can gain one)
            since = group[-1][0] if group else after + 1
            rows: list[Row] = conn.execute(_SELECT, (since, _PAGE + bool(group))).fetchall()
            if group:
                if not rows or rows[0][0] != since:
                    raise SourceError(
                        f"{self.url}: rows of rowcast_changes this source had read were "
                        "deleted under it: pruned by another source (give this one a "
                        "checkpoint=, or a longer retain) or deleted by hand"
                    )
                group[-1], rows = rows[0], rows[1:]
                if group[-1][2] is not None:
                    yield group
                    group = []
            for row in rows:
                group.append(row)
                if row[2] is not None:
                    yield group
                    group = []
            if rows:
                after = rows[-1][0]
            if len(rows) == _PAGE:
                continue
            if not group:
                return
            sealed = self._seal_newest(conn)
            if sealed is None:  # stopping while the app held the lock
                return
            newest, at = sealed
            if newest == group[-1][0]:
                group[-1] = (*group[-1][:2], at, *group[-1][3:])  # as the file now has it
                yield group
                return
            if newest < group[-1][0]:
                raise SourceError(f"{self.url}: rows of rowcast_changes were deleted by hand")
            # newer rows came meanwhile: the seal is on the newest, read on up to it

    def _seal_newest(self, conn: sqlite3.Connection) -> tuple[int, float | None] | None:
        """Seal the newest row and commit (durably): its seq, its seal. None: stopped.

        The newest row is read under the write lock, so a seal is only ever
        written on the row that is newest when it commits: no reader can have
        handed out a group that runs past it, and none will. Waits for the app's
        writers `timeout` seconds at a time, logging each wait, until `stop`.
        """
        while True:
            try:
                return triggers.seal_newest(conn)
            except sqlite3.OperationalError as e:  # locked for `timeout`: the app is busier
                if "locked" not in str(e) and "busy" not in str(e):
                    raise
                log.warning(
                    "%s: could not record where a transaction ends (%s); waiting to, "
                    "the changes before it wait too",
                    self.url,
                    e,
                )
                if self._stopping.is_set():
                    return None

    def _prune(self, conn: sqlite3.Connection) -> int:
        return readers.prune(conn, self.url, self.checkpoint, self.retain)


def diagnose(url: str) -> Diagnosis:
    """``rowcast doctor`` for a SQLite file: JSON support, journal mode, triggers, readers."""
    from .doctor import diagnose as run

    return run(url)

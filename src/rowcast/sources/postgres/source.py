"""Every committed row change of a PostgreSQL database, by logical replication (pgoutput).

::

    source = LogicalSource("postgresql://rowcast@db:5432/shop?slot=rowcast&tables=public.orders")
    source.run(hub)                       # or: for transaction in source: ...

The server is checked first (`ConfigError` with the fix: ``wal_level``, the
replication privilege, free slots and WAL senders, the slot's plugin and database,
the password, the host; a checkpoint whose slot is gone). Then the *publication*
(``FOR TABLE`` the chosen tables; a table without a key or replica identity is
refused first) and the *slot* are made when missing (`rowcast.sources.postgres.objects`:
their names and owners). Tables created later that match ``tables`` (``fnmatch``
patterns on ``"schema.table"`` or ``"table"``) join the publication at each ``heartbeat``.

One `Change` per row, published per transaction at its commit: ``txid`` is
the xid, ``position`` the LSN just after the commit record (``"0/16B3748"``;
reading from it resumes after that transaction), ``ts`` the commit time,
``schema`` the table's schema. ``pk`` is the primary key value (a tuple for a
composite key; the replica identity index's without one; None when the table has
neither). Types: ``rowcast.sources.postgres.types`` (None for NULL).

``before`` images need ``REPLICA IDENTITY FULL``. Without it an update has
``before=None`` (or the old key only, when the key changed), a delete has a
``before`` of the key columns only, and a TOASTed value the update did not
touch is `UNCHANGED` in ``after`` (PostgreSQL does not log it; with FULL it is
taken from ``before``). Tables without FULL are named in a warning with the
``ALTER TABLE`` that fixes them; ``replica_identity="full"`` (``?replica_identity=full``)
runs it. ``TRUNCATE`` is not a row change: logged as a warning, not published.

Delivery: a transaction is confirmed to the server (``confirmed_flush_lsn``) once
the consumer asks for the next one (`run`'s receivers returned, its checkpoint saved).
While idle or reading only filtered changes, the slot moves on with the server's
keepalives: it never holds WAL for nothing. A dropped connection or a restarting server
is read again with backoff after the last transaction handed out. ``start`` is ``"now"``
(the default), ``"start"`` (what the slot holds) or a position; a checkpoint wins.

``snapshot="initial"`` first hands out every existing row of the chosen tables
(``write`` changes with ``snapshot=True``), then streams from the point they were
read at: see `rowcast.sources.postgres.snapshot`. ``source.backfill([...])`` reads
tables again while every reader streams: `rowcast.sources.postgres.backfill`.
"""

from __future__ import annotations

import logging
import select
import time
from collections.abc import Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ...change import Change
from ...errors import ConfigError
from .. import _snapshot as snapshots
from ..base import LogSource
from ..health import LogHealth
from ..signal import NAME as SIGNAL
from . import health as _health
from . import objects, setup
from . import pgoutput as pgo
from .backfill import PostgresReads
from .doctor import diagnose
from .pgoutput import UNCHANGED, Unchanged, format_lsn, parse_lsn
from .rows import ROW_KINDS, RowDecoder
from .server import PgURL, check_name, connect, parse_url
from .snapshot import Snapshot, plan, snapshot_tables
from .stream import (
    Feedback,
    check_position,
    close_stream,
    confirmed,
    in_use,
    is_connection_error,
    keep_up,
    refuse_a_busy_slot,
    refuse_a_past_start,
    resolve_positions,
    temporary_slot,
)

if TYPE_CHECKING:
    from ...checkpoint import Checkpoint

__all__ = ["UNCHANGED", "LogicalSource", "Unchanged", "diagnose"]

log = logging.getLogger("rowcast.sources.postgres")


class LogicalSource(LogSource):
    """A PostgreSQL database's logical replication stream as `Change` transactions.

    `slot` and `publication` (or ``?slot=`` and ``?publication=`` in the URL) name
    the replication slot, whose confirmed position the server keeps, and the
    publication it reads through (default: the slot's name). Without a slot: one
    named after the `checkpoint`, or without one a temporary slot and publication
    that go when iteration ends. A slot is one reader's: another is refused.
    `end` (``"now"`` or a position) makes iteration stop once that position is
    passed instead of waiting for more. A `tables` pattern that matches no table is
    a `ConfigError` naming the tables, unless `allow_empty` (tables created later).
    `heartbeat` is how often (seconds) a reader with nothing pending wakes to notice
    `stop` and confirm the server's end of WAL (so a slot of idle tables keeps up
    while others write); `feedback` how often it tells the server its position.
    `snapshot`, `snapshot_chunk`: the module docstring; starting, checkpoints...: `LogSource`.
    """

    reading = "the replication stream"
    _log = log

    def __init__(
        self,
        url: str,
        *,
        slot: str | None = None,
        publication: str | None = None,
        tables: Iterable[str] | None = None,
        start: str | None = None,
        end: str | None = None,
        checkpoint: Checkpoint | None = None,
        replica_identity: str | None = None,
        heartbeat: float = 1.0,
        feedback: float = 10.0,
        snapshot: str = "never",
        snapshot_chunk: int = 1000,
        allow_empty: bool = False,
    ) -> None:
        self.url: PgURL = parse_url(url)
        options = self.url.options
        slot = slot or options.get("slot")
        publication = publication or options.get("publication")
        self._slot = check_name("slot", slot) if slot else None
        self._publication = check_name("publication", publication) if publication else None
        self._tail: str | None = None  # the name of a tail's temporary slot and publication
        if isinstance(tables, str):
            raise ConfigError(f"tables= takes a list of patterns, not the string {tables!r}")
        if tables is None and options.get("tables"):
            tables = options["tables"].split(",")
        self.tables = tuple(t.strip() for t in tables if t.strip()) if tables is not None else None
        start = start or options.get("start") or "now"
        check_position(start, "'now' or 'start'")
        snapshots.check_options(snapshot, snapshot_chunk, start)
        self.snapshot, self.snapshot_chunk = snapshot, snapshot_chunk
        self.snapshot_progress: snapshots.SnapshotProgress | None = None
        if end is not None:
            check_position(end, "or 'now'", start=False)
        identity = replica_identity or options.get("replica_identity") or "keep"
        if identity not in ("keep", "full"):
            raise ConfigError(f"replica_identity must be 'full' or 'keep', not {identity!r}")
        self.replica_identity = identity
        if feedback < 1:
            raise ConfigError(f"feedback is in seconds, at least 1 (psycopg2's), not {feedback!r}")
        super().__init__(self.url.masked, start=start, end=end, checkpoint=checkpoint)
        self.heartbeat, self.feedback = heartbeat, feedback
        self.allow_empty = bool(allow_empty)  # a pattern matching no table is no typo
        self._warned: set[str] = set()  # tables already named in a replica identity warning
        self._began = 0.0  # when this iteration began
        self._streamed = False  # whether it ever opened the stream
        self._own = False  # whether the publication is rowcast's (new tables join it)
        self._pending: tuple[Any, int] | None = None  # a tail's slot, made for its snapshot
        self._reached = False  # whether the server was reached (so objects may exist)

    # ------------------------------------------------------------------ names

    @property
    def given_slot(self) -> str | None:
        """The slot named by ``slot=`` or ``?slot=``, or None."""
        return self._slot

    @property
    def temporary(self) -> bool:
        """Whether this reader uses a temporary slot and publication (no ?slot=, no checkpoint)."""
        return self._slot is None and self.checkpoint is None

    @property
    def slot(self) -> str:
        """The replication slot: ?slot=, else derived from the checkpoint, else a tail's own."""
        if self._slot is not None:
            return self._slot
        if self.checkpoint is not None:
            return objects.derived_name(self.checkpoint)
        if self._tail is None:
            self._tail = objects.tail_name()
        return self._tail

    @property
    def publication(self) -> str:
        """The publication: ?publication=, else named as the slot."""
        return self._publication or self.slot

    @property
    def reader(self) -> str:
        """Who this reader is, as the comment of the publication it creates says."""
        if self.checkpoint is not None:
            return objects.reader_of(self.checkpoint)
        return objects.TEMPORARY if self.temporary else "a reader without a checkpoint"

    # ------------------------------------------------------------------ running

    def setup(self) -> None:
        """Check the server, then create the publication and the slot when missing.

        Idempotent; iteration does it first. Raises `ConfigError` with every fix the
        server needs; warns (``rowcast.sources.postgres`` logger) about tables without
        ``REPLICA IDENTITY FULL``, or sets it with ``replica_identity="full"``.
        """
        conn = connect(self.url)
        try:
            cur = conn.cursor()
            if self.temporary:  # only checked: a tail's publication lives while it reads
                cur.execute("BEGIN")
            else:  # before the slot is made: a checkpoint whose slot is gone
                self._refuse_a_past_start(cur)
            self._setup(cur, busy_ok=False)
        finally:
            conn.close()  # rolls back what a temporary reader made

    def check(self) -> None:
        """Reach the server and make it ready (`setup`) at once: ``rowcast relay``'s start."""
        self.setup()

    def drop(self) -> None:
        """Drop the slot and the publication when they exist (not one of the user's): the
        server then keeps no WAL for this source. A slot still being read: `ConfigError`."""
        conn = connect(self.url)
        try:
            objects.drop(conn.cursor(), None if self.temporary else self.slot, self.publication)
        except ConfigError as error:
            raise ConfigError(f"{self.url.masked}: {error}") from error
        finally:
            conn.close()

    def _iterate(self) -> Iterator[list[Change]]:
        try:
            yield from self._read()
        finally:
            if self.temporary and self._reached:  # a tail leaves nothing behind
                try:
                    self.drop()
                except ConfigError as error:
                    log.warning("%s; DROP PUBLICATION %s; removes it", error, self.publication)

    def _read(self) -> Iterator[list[Change]]:
        conn = connect(self.url)
        self._reached = True
        try:
            cur = conn.cursor()
            cut = plan(self._resume_from(), self.snapshot)
            if cut is None and not self.temporary:  # before the slot is made
                self._refuse_a_past_start(cur)
            self._own = self._setup(cur, busy_ok=True)
            start = (cut.point or "now") if cut else self._resume_from()
            resume, end = resolve_positions(
                cur, self.url.masked, self.slot, start, self.end, snapshot=cut is not None
            )
            if self.checkpoint is not None and cut is None:  # a snapshot saves its own
                self._own_start(format_lsn(resume or confirmed(cur, self.slot)))
        except BaseException:
            conn.close()
            raise
        if self._ctl is None:  # kept for the lookups while streaming: one connect less
            self._ctl = conn
        else:
            conn.close()
        explicit = resume != 0 and self._resume_from() not in ("now", "start")
        if cut is not None:
            snapshot = Snapshot(
                self.url,
                cut,
                lambda cur: snapshot_tables(cur, self.url.masked, self.tables, self.publication),
                self.snapshot_chunk,
                self._stopping,
                slot=self.slot if self.temporary else None,
                stream=None if self.temporary else (self.slot, self.publication, self.tables),
                save=self.checkpoint.save if self.checkpoint is not None else None,
            )
            self.snapshot_progress, last = snapshot.progress, None
            for transaction in snapshot:
                yield transaction
                self.position = last = transaction[-1].position
            if self._stopping.is_set() or not self._handed_over(last, snapshot.resume):
                return
            resume, self._pending = snapshot.resume, snapshot.pending
        self._began, self._streamed = time.monotonic(), False
        told = 0.0  # when the confirmed position was last sent
        handed = 0  # the end of the last transaction with changes handed out
        confirm = 0  # what the server may be told the consumer is done with
        looked = 0.0  # when the checkpoint was last read

        def replication() -> Generator[list[Change], None, None]:
            """One connection's worth: from `resume`, which it moves on."""
            nonlocal resume, told, handed, confirm, explicit, looked
            stream, begun = self._open_stream(resume)
            feedback = Feedback(stream, lambda lsn: keep_up(self.checkpoint, lsn))
            if resume and begun > resume:  # a tail's new temporary slot begins after it
                if explicit:
                    close_stream(stream, 0)
                    raise ConfigError(
                        f"{self.url.masked}: --from {format_lsn(resume)} is behind "
                        f"{format_lsn(begun)}, where this reader's temporary slot begins: it "
                        "cannot read the past. Read from a slot made before it (?slot=...), "
                        "or copy the rows as they are now (rowcast backfill URL --tables ...)"
                    )
                if self._streamed:
                    log.warning(
                        "the temporary slot died with its connection: changes committed "
                        "between %s and %s are not read",
                        format_lsn(resume),
                        format_lsn(begun),
                    )
            explicit = False
            self._streamed = True
            try:
                for changes, lsn in self._messages(feedback, end):
                    if lsn is None:  # the end is reached
                        return
                    yield changes
                    # the consumer asked for the next one: it took this transaction
                    now = time.monotonic()
                    if changes:
                        handed = lsn
                    idle = not changes and now - looked >= self.heartbeat
                    force = idle or now - told >= self.feedback  # idle: keep up with the server
                    if force or idle or self.checkpoint is None:
                        # before psycopg2 confirms the idle slot on to the server's end: the
                        # checkpoint never stays behind a confirmed position
                        confirm = self._confirmable(lsn, handed)
                        looked = now
                    if confirm or force:
                        feedback.send(confirm, force=force)
                    told = now if force else told
                    resume, self.position = lsn, format_lsn(lsn)
                    if end is not None and lsn >= end:
                        return
            finally:
                try:
                    last = self._confirmable(resume, handed)
                except Exception:  # the checkpoint is unreadable: confirm nothing new
                    last = confirm
                feedback.close(last)

        yield from self._reconnecting(
            replication, lambda: format_lsn(resume) if resume else f"slot {self.slot}"
        )

    def _backfill_reads(self) -> PostgresReads:
        return PostgresReads(self.url, self.publication, self.tables)

    def _transient(self, error: Exception) -> bool:
        return is_connection_error(error)

    def _fatal(self, error: Exception, where: str) -> Exception | None:
        busy = (getattr(error, "pgcode", None) or "") == "55006"
        patience = max(5 * self.heartbeat, 1.0)  # for a reader that is letting go
        if busy and not self._streamed and time.monotonic() - self._began > patience:
            return in_use(self.url.masked, self.slot)
        return None

    # ------------------------------------------------------------------ setting up

    def _refuse_a_past_start(self, cur: Any) -> None:
        start, checkpoint = self._resume_from(), self.checkpoint
        named = checkpoint.url if self._resumed and checkpoint else None
        others = [s for s in objects.slots_of(cur, self.reader) if s != self.slot] if named else []
        refuse_a_past_start(cur, self.url.masked, self.slot, start, named, others)

    def _setup(self, cur: Any, *, busy_ok: bool) -> bool:
        """Check and make what reading needs; whether the publication is rowcast's own."""
        if not busy_ok and not self.temporary:
            refuse_a_busy_slot(cur, self.url.masked, self.slot)
        return setup.prepare(
            cur,
            self.url.masked,
            self.slot,
            self.publication,
            self.url.user,
            self.tables,
            full=self.replica_identity == "full",
            warned=self._warned,
            reader=self.reader,
            temporary=self.temporary,
            allow_empty=self.allow_empty,
        )

    def _handed_over(self, last: str | None, point: int) -> bool:
        """After a snapshot: wait until the checkpoint holds `last` (the consumer has all
        it handed out), then save `point` there, where the stream begins (False: stopped).
        Not streamed before: psycopg2 confirms an idle slot past the snapshot's position."""
        if self.checkpoint is None:
            return True
        while last is not None and self.checkpoint.load() != last:
            if self._stopping.wait(self.heartbeat):
                return False
        self.checkpoint.save(format_lsn(point))
        return True

    def _confirmable(self, lsn: int, handed: int) -> int:
        """How far the slot may be confirmed, having read up to `lsn` (0: not at all).

        Without a checkpoint the consumer took what it asked past: `lsn`. With one (a
        relay, which reads ahead of what it delivered), what the checkpoint holds, or
        `lsn` once the checkpoint holds every transaction handed out: PostgreSQL never
        sends again what a slot confirmed, whatever position a restart asks for.
        """
        if self.checkpoint is None:
            return lsn
        saved = self.checkpoint.load()
        if snapshots.is_position(saved):  # a snapshot's: the slot stays where it began
            return 0
        done = parse_lsn(saved) if saved else 0
        if done < handed:
            return done
        if lsn > done:  # nothing of this reader's in between: the checkpoint moves on with
            # the slot, so a confirmed position past the checkpoint always means a loss
            self.checkpoint.save(format_lsn(lsn))
        return lsn

    # ------------------------------------------------------------------ streaming

    def _open_stream(self, resume: int) -> tuple[Any, int]:
        """The replication cursor, streaming from `resume`; and where a temporary slot made
        for it begins (0 for a lasting slot)."""
        pending, self._pending = self._pending, None  # a tail's slot, made with its snapshot
        conn = pending[0].connection if pending else connect(self.url, replication=True)
        begun = pending[1] if pending else 0
        try:
            cur = pending[0] if pending else conn.cursor()
            if self.temporary and not pending:
                begun = temporary_slot(cur, self.slot)
            cur.start_replication(
                slot_name=self.slot,
                decode=False,
                start_lsn=resume,
                options={"proto_version": "1", "publication_names": self.publication},
                status_interval=self.feedback * Feedback.STATUS_EVERY,  # it sends its own
            )
        except BaseException:
            conn.close()
            raise
        return cur, begun

    def _messages(
        self, feed: Feedback, end: int | None
    ) -> Iterator[tuple[list[Change], int | None]]:
        """(changes, end LSN) per transaction, changes empty when none is wanted;
        ``([], None)`` once `end` is reached."""
        cur, conn = feed.cur, feed.cur.connection
        read, decode = feed.read, pgo.decode
        captured = None if self.tables is None else (*self.tables, SIGNAL)  # backfills' too
        decoder = RowDecoder(captured, lambda: self._control().cursor())
        rows: list[Any] = []
        begin: pgo.Begin | None = None
        look = time.monotonic() + self.heartbeat  # when to look for new tables next
        idle, idle_end = look, 0  # when and where the server's end of WAL was last taken
        while not self._stopping.is_set():
            if self._own and begin is None and time.monotonic() >= look:
                setup.new_tables(
                    self._control().cursor(), self.publication, self.tables, self._warned
                )
                look = time.monotonic() + self.heartbeat
            msg = read()
            if msg is None:
                if begin is None and end is not None and cur.wal_end >= end:
                    yield [], None
                    return
                wal_end = cur.wal_end if begin is None and end is None else 0
                if wal_end and ((idle_end and wal_end != idle_end) or time.monotonic() >= idle):
                    # nothing pending: the server sent everything before its end of WAL,
                    # which keepalives move on while other tables write: taken at once
                    # (psycopg2 confirms it at its next feedback) after the first heartbeat
                    idle, idle_end = time.monotonic() + self.heartbeat, wal_end
                    yield [], wal_end
                    continue
                if not select.select([conn], [], [], self.heartbeat)[0] and end is not None:
                    feed.send(reply=True)  # where is the server? (its keepalive says)
                continue
            if msg.payload[0] in ROW_KINDS:  # most messages: read straight from their bytes
                if (row := decoder.change(msg.payload)) is not None:
                    rows.append(row)
                continue
            m = decode(msg.payload)
            kind = type(m)
            if kind is pgo.Begin:
                begin, rows = m, []  # type: ignore[assignment]
            elif kind is pgo.Commit:
                xid = begin.xid if begin is not None else None
                begin = None
                yield decoder.commit(rows, xid, m), m.end_lsn  # type: ignore[arg-type,union-attr]
                rows = []
            elif kind is pgo.Relation:
                decoder.relation(m)  # type: ignore[arg-type]
            elif kind is pgo.Truncate:
                decoder.truncate(m)  # type: ignore[arg-type]
            # Type: looked up with the relation's columns; Origin, Message: nothing to do

    def _connect_control(self) -> Any:
        return connect(self.url)

    def health(self, position: str | None) -> LogHealth:
        """The WAL head, how far `position` is behind it, and what this reader's slot retains."""
        slot = None if self.temporary else self.slot
        return self._probing(lambda conn: _health.health(conn.cursor(), slot, position))

"""Backfills while streaming: tables read again, chunk by chunk, between watermarks.

Private to `rowcast.sources` (`LogSource` runs a `Backfill` around its log when
its family gives it `Reads`). What a user sees is in `rowcast.sources.signal`
(the requests) and ``rowcast backfill``.

How a chunk stays true under concurrent writes (Netflix's DBLog, as Debezium's
incremental snapshots do it): the reader writes a *low* watermark row to
``rowcast_signal`` (committed), selects the next `chunk` rows of the table by
key, then writes a *high* watermark. Both come back in the log, in commit order
with the app's changes. Between them (up to the end of the transaction that
holds the high one), every row the log changes (by its key, and an update's old
key) is dropped from the chunk: the log's version is newer than the select's,
and the consumer has it already. The rest are handed out as ``write`` changes
with ``snapshot=True`` (Debezium's ``op: "r"``), appended to the transaction that
holds the high watermark (its position), so they are delivered and checkpointed
like any transaction, and no row of a chunk can overwrite a newer change
downstream. The log is only paused for the select of one chunk; the chunk's size
adapts so that a select takes about `_CHUNK_SECONDS` (never more rows than asked).
`_AHEAD` chunks are read ahead (the next one's watermarks are written after the
last one's high watermark, so windows never overlap in the log): the reader never
waits for its own watermarks to come back, and memory holds at most that many
chunks whatever the table's size.

Resumable: after each chunk the reader records its progress (the tables, the table it
is in, the last key, the rows so far, whether it ``resumes``) in a ``progress`` row with
the position of the transaction the chunk went out with (`rowcast.sources._progress`).
A reader restarted from its checkpoint takes up each request from its latest progress at
or before that position (a later one was not delivered: it is deleted, and the chunk read
again). A request made after the checkpoint comes again in the log. A reader without a
checkpoint (a tail) runs the requests it sees and resumes nothing (killed: `backfills`
tells it abandoned; alive, it beats while it has one unfinished, however long its consumer
or its log keeps it waiting: `rowcast.sources._heartbeat`).

Every reader that sees a request runs it, each with its own watermarks and progress
(``reader``: its checkpoint's URL): two relays on one database both deliver the backfill.
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from .._speedups import gc_paused
from .._words import counted
from ..change import Action, Change
from ..codec import dumps
from ..errors import ConfigError, SourceError
from . import _request, _where
from ._heartbeat import Heartbeat
from ._job import Job, Window
from ._progress import Progress
from ._rows import Chunk, Rows
from .signal import NAME, SignalRow, SignalTable

__all__ = ["Backfill", "Reads"]

log = logging.getLogger("rowcast.sources.backfill")

_CHUNK_SECONDS = 0.5  # what a chunk's select should take, at most about
_ATTEMPTS = 5  # chunks in a row that fail before a request is given up
_AHEAD = 2  # chunks read ahead of the log: one waits for its watermarks while one is read
_WRITE = Action.WRITE


class Reads(Protocol):
    """What a source family gives a `Backfill`: its signal table and its tables' rows."""

    #: ``Change.source`` of what it hands out ("mysql", "postgres", "sqlite")
    source: str

    def signals(self, durable: bool = True) -> SignalTable:
        """``rowcast_signal`` on a connection of its own (not `durable`: the engine's rows)."""
        ...

    def prepare(self, signals: SignalTable) -> None:
        """Make ``rowcast_signal`` when missing, and its changes part of the log."""
        ...

    def is_signal(self, change: Change) -> bool:
        """Whether `change` is of ``rowcast_signal``."""
        ...

    def tables(self, patterns: Sequence[str]) -> list[tuple[str, str]]:
        """The tables `patterns` match among those the reader captures, as ``(schema,
        table)`` of their changes, in order (none: another reader captures them); a
        `ConfigError` when a pattern matches no table of the database, or one has no key."""
        ...

    def chunk(
        self, schema: str, table: str, after: Any, where: str | None, size: int
    ) -> tuple[Chunk, Any]:
        """Up to `size` rows after key `after` (None: from the first) that match `where`, in
        key order, as ``(pk, image)`` the log gives them (or `Rows` that make them); and
        the last key read."""
        ...

    def old_key(self, change: Change) -> Any:
        """The key an update's before image holds (None when it does not hold it)."""
        ...

    def order(self, position: str) -> Any:
        """A value that orders positions of this source (`ValueError` for a foreign one)."""
        ...

    def close(self) -> None:
        """Release what it holds."""
        ...


class Backfill:
    """The backfills one reader runs around its log (see the module).

    `reader` names it in ``rowcast_signal`` (its checkpoint's URL; None: a tail),
    `resumed_from` is where its log resumes (its checkpoint's position, or None).
    """

    def __init__(
        self,
        reads: Reads,
        reader: str | None,
        resumed_from: str | None,
        stopping: threading.Event,
        checkpoint: Any = None,
    ) -> None:
        self.reads, self.stopping = reads, stopping
        self.reader = reader or f"tail:{uuid.uuid4().hex[:12]}"
        self.resumable = reader is not None
        self._at = resumed_from  # the position of the last transaction handed out
        self._queue: collections.deque[Job] = collections.deque()
        # requests this reader took (or finished): their rows' created (None: not known)
        self._known: dict[int, float | None] = {}
        self._windows: collections.deque[Window] = collections.deque()  # oldest first
        self._signals: SignalTable | None = None
        self._progress = Progress(
            self._table,
            self.reader,
            self.resumable,
            self._order,
            checkpoint,
            self.close_connections,
        )
        self._heartbeat = (
            None
            if self.resumable
            else Heartbeat(functools.partial(reads.signals, durable=False), self.reader)
        )

    # ------------------------------------------------------------------ the log

    def around(self, transactions: Iterator[list[Change]]) -> Iterator[list[Change]]:
        """`transactions` without ``rowcast_signal``'s changes, with the chunks of the
        requests they bring interleaved."""
        try:
            try:
                self._load()
            except Exception as error:  # what it had not finished would be forgotten
                raise SourceError(
                    f"reading {NAME} (the backfills this reader had not finished) failed: "
                    f"{str(error).strip()}"
                ) from error
            self._next_chunk()
            for transaction in transactions:
                kept = self._step(transaction)
                if kept:
                    self._beat()  # the consumer may keep it waiting here
                    yield kept
                if len(self._windows) < _AHEAD and self._queue:
                    self._next_chunk()
                self._beat()  # and so may the log
        finally:
            self.close()

    def close_connections(self) -> None:
        """Close what may have broken (opened again when next needed)."""
        signals, self._signals = self._signals, None
        if signals is not None:
            signals.close()
        self.reads.close()

    def close(self) -> None:
        """Release the connections; a tail (which resumes nothing) removes its rows."""
        if self._heartbeat is not None:
            self._heartbeat.stop()
        signals, self._signals = self._signals, None
        if signals is not None:
            if not self.resumable and (self._progress.marks or self._windows):
                try:
                    mine = [r.id for r in signals.rows() if r.reader == self.reader]
                    signals.delete(mine)
                except Exception as error:  # the database went away: rows stay, harmless
                    log.warning("backfills: %s's rows not removed: %s", self.reader, error)
            signals.close()
        self.reads.close()

    def _beat(self) -> None:
        """A tail beats while it has a backfill unfinished, so that a tail waiting for its
        consumer or its log is not taken for stopped (see `rowcast.sources._heartbeat`)."""
        if self._heartbeat is not None:
            self._heartbeat.keep(bool(self._queue))

    def _step(self, transaction: list[Change]) -> list[Change]:
        position = transaction[-1].position
        reads, windows = self.reads, self._windows
        if position is None or position.startswith("snapshot:"):
            return [c for c in transaction if not reads.is_signal(c)]
        kept: list[Change] = []
        for change in transaction:
            if reads.is_signal(change):
                if change.action == _WRITE and change.after is not None:
                    self._signal(SignalRow.from_image(change.after), position)
                continue
            kept.append(change)
            for window in windows:
                if not window.opened:
                    break  # the windows after an unopened one are not open either
                self._touch(window, change)
        self._at = position
        while windows and windows[0].closing:
            kept.extend(self._finish(windows.popleft(), position))
        return kept

    def _touch(self, window: Window, change: Change) -> None:
        schema, table = window.job.tables[window.index]
        if change.table != table or (change.schema or "") != schema:
            return
        pk = change.pk
        if pk is None or (type(pk) is tuple and None in pk):  # the row is its images
            window.images.update(dumps(i) for i in (change.before, change.after) if i)
            return
        window.touched.add(pk)
        if change.action == "update":
            old = self.reads.old_key(change)
            if old is not None and not (type(old) is tuple and None in old):
                window.touched.add(old)
            elif change.before:  # from a NULL in the key (SQLite): the row is its image
                window.images.add(dumps(change.before))

    def _signal(self, row: SignalRow, position: str) -> None:
        if row.kind in ("low", "high"):
            for window in self._windows:
                if row.id == window.low:
                    window.opened = True
                elif row.id == window.high:
                    window.closing = True
        elif row.kind == "backfill" and row.id not in self._known:
            self._take(row, position)
        elif row.kind == "backfill" and _another(self._known[row.id], row.created):
            self._remade(row, position)  # the same id, another request: a new table
        elif row.kind == "cancel" and row.request is not None:
            self._cancel(row.request, position)

    # ------------------------------------------------------------------ requests

    def _take(self, row: SignalRow, position: str) -> None:
        self._known[row.id] = row.created
        try:  # a row written by hand may hold anything
            patterns, where, size = _request.asked(row.data)
            tables = self.reads.tables(patterns)
        except (ConfigError, ValueError, TypeError) as error:
            log.error("backfill %d: refused: %s", row.id, error)
            self._progress.mark(row.id, {"done": True, "error": str(error)}, position)
            return
        job = Job(row.id, tables, where, size, step=size)
        log.info(
            "backfill %d: %s (%s)%s",
            row.id,
            counted(len(tables), "table"),
            ", ".join(".".join(t) for t in tables),
            f" where {job.where}" if job.where else "",
        )
        self._progress.mark(row.id, job.progress(), position)
        self._queue.append(job)

    def _cancel(self, request: int, position: str) -> None:
        for job in list(self._queue):
            if job.request == request:
                self._queue.remove(job)
                self._drop(job)
                self._progress.mark(request, job.progress(done=True, cancelled=True), position)
                log.info("backfill %d: cancelled after %d rows", request, job.rows)

    def _remade(self, row: SignalRow, position: str) -> None:
        """``rowcast_signal`` was dropped and made again (``rowcast uninstall``), and its
        ids start over: what this reader held of the old table went with it."""
        lost = ", ".join(str(job.request) for job in self._queue)
        log.warning(
            "backfills: %s was made again (request %d is a new one)%s",
            NAME,
            row.id,
            f"; backfills {lost} are dropped with the old table: ask again" if lost else "",
        )
        self._queue.clear()
        self._windows.clear()
        self._known.clear()
        self._progress.marks.clear()
        self._take(row, position)

    def _drop(self, job: Job) -> None:
        """Forget the windows of `job` (in place: `_step` holds the deque while a cancel in
        the middle of a transaction drops them, and must not hand them out after it)."""
        kept = [w for w in self._windows if w.job is not job]
        self._windows.clear()
        self._windows.extend(kept)

    def _load(self) -> None:
        """Take up what this reader had not finished at the position its log resumes from."""
        if not self.resumable or self._at is None or self._at.startswith("snapshot:"):
            return
        signals = self._table()
        if not signals.exists():
            return
        at = self._order(self._at)
        if at is None:
            log.warning(
                "backfills: the checkpoint's position %s cannot be placed in the log; the "
                "backfills this reader had not finished are not taken up",
                self._at,
            )
            return
        rows = signals.rows()
        cancelled = {r.request for r in rows if r.kind == "cancel"}
        created = {r.id: r.created for r in rows if r.kind == "backfill"}
        mine: dict[int, list[SignalRow]] = collections.defaultdict(list)
        for row in rows:
            if row.kind == "progress" and row.reader == self.reader and row.request is not None:
                mine[row.request].append(row)
        # the watermarks of windows a stop cut short: never coming back
        undelivered = [r.id for r in rows if r.kind in ("low", "high") and r.reader == self.reader]
        for request, marks in mine.items():
            kept = []
            for mark in marks:
                order = self._order(mark.position)
                if order is None or order > at:
                    undelivered.append(mark.id)  # after the checkpoint: not delivered
                else:
                    kept.append((mark, order))
            if not kept:
                continue  # taken after the checkpoint: the request comes again in the log
            self._known[request] = created.get(request)
            self._progress.marks[request] = [(m.id, o) for m, o in kept]
            latest = kept[-1][0].data
            if latest.get("done") or "tables" not in latest:
                continue
            job = Job.resumed(request, latest)
            if request in cancelled:  # while it was down: say so, or it reads running for ever
                self._progress.mark(request, job.progress(done=True, cancelled=True), self._at)
                continue
            self._queue.append(job)
            log.info(
                "backfill %d: resumed at %s after %r (%d rows so far)",
                request,
                ".".join(job.tables[job.index]) if job.index < len(job.tables) else "the end",
                job.after,
                job.rows,
            )
        signals.delete(undelivered)

    # ------------------------------------------------------------------ chunks

    def _next_chunk(self) -> None:
        """Open chunks' windows (low watermark, select, high watermark) up to `_AHEAD`."""
        while len(self._windows) < _AHEAD and self._queue and not self.stopping.is_set():
            job = self._queue[0]
            index, after = job.reading
            if index >= len(job.tables):
                if any(w.job is job for w in self._windows):
                    return  # read to its end: done once its last chunks are handed out
                self._queue.popleft()
                self._progress.mark(job.request, job.progress(done=True), self._at)
                log.info("backfill %d: done, %d rows", job.request, job.rows)
                continue
            schema, table = job.tables[index]
            try:
                signals = self._table()
                low = signals.write("low", request=job.request, reader=self.reader)
                began, asked = time.monotonic(), job.step
                with gc_paused():  # tens of thousands of objects that live on: see _speedups
                    rows, last = self.reads.chunk(schema, table, after, job.where, asked)
                took = time.monotonic() - began
                high = signals.write("high", request=job.request, reader=self.reader)
            except Exception as error:
                self._failed(job, error)
                return
            if rows and after is not None and last == after:  # never past it: for ever
                signals.delete([low, high])
                self._failed(job, ConfigError(_where.escaped(table, after, job.where)))
                return
            job.failures = 0
            if took > _CHUNK_SECONDS and job.step > 1:
                job.step = max(1, job.step // 2)
            elif took < _CHUNK_SECONDS / 4:
                job.step = min(job.size, job.step * 2)
            full = len(rows) >= asked
            job.reading = (index, last) if full else (index + 1, None)
            if not rows:  # the table is read: on to the next, no chunk to hand out
                signals.delete([low, high])
                if not any(w.job is job for w in self._windows):
                    job.index, job.after = index + 1, None
                continue
            self._windows.append(Window(job, index, low, high, rows, last, full))

    def _failed(self, job: Job, error: Exception) -> None:
        """A chunk that could not be read: tried again after the next transaction (the
        database may be back), given up after `_ATTEMPTS` in a row or a `ConfigError`."""
        self.close_connections()
        job.failures += 1
        if job.failures < _ATTEMPTS and not isinstance(error, ConfigError):
            log.warning(
                "backfill %d: reading a chunk failed (%s); trying again after the next transaction",
                job.request,
                str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__,
            )
            return
        self._queue.remove(job)
        self._drop(job)
        log.error("backfill %d: given up: %s", job.request, error)
        self._progress.mark(job.request, {**job.progress(done=True), "error": str(error)}, self._at)

    def _finish(self, window: Window, position: str) -> list[Change]:
        """The chunk's rows the log did not change in its window, at `position`."""
        job = window.job
        schema, table = job.tables[window.index]
        touched, rows, images = window.touched, window.rows, window.images
        at = (time.time(), f"backfill:{job.request}", position, self.reads.source)
        with gc_paused():
            if isinstance(rows, Rows) and not images:  # no pairs: made at once
                changes = rows.changes(schema, table, *at, skip=touched or None)
            else:
                kept = [row for row in rows if row[0] not in touched] if touched else list(rows)
                if images:  # a row whose image the log had may be one it changed: dropped
                    kept = [row for row in kept if dumps(row[1]) not in images]
                changes = Change._reads(schema, table, kept, *at)
        job.rows += len(changes)
        job.index, job.after = (
            (window.index, window.last) if window.full else (window.index + 1, None)
        )
        self._progress.mark(job.request, job.progress(), position, forget=[window.low, window.high])
        return changes

    # ------------------------------------------------------------------ rowcast_signal

    def _table(self) -> SignalTable:
        if self._signals is None:
            self._signals = self.reads.signals(durable=False)
        return self._signals

    def _order(self, position: str | None) -> Any:
        if position is None or position.startswith("snapshot:"):
            return None
        try:
            return self.reads.order(position)
        except (ValueError, TypeError):
            return None


def _another(known: float | None, created: float | None) -> bool:
    """Whether a request row made at `created` is not the one of that id made at `known`
    (a time unknown: taken to be the same)."""
    return known is not None and created is not None and abs(known - created) > 0.001

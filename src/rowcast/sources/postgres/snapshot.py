"""The initial snapshot of a PostgreSQL source: every existing row, then the slot from there.

Private to `rowcast.sources.postgres` (``LogicalSource(snapshot="initial")``).

How it stays consistent: a replication connection creates a ``TEMPORARY`` slot
with ``EXPORT_SNAPSHOT`` (a tail's own slot, or, beside a relay's lasting slot,
one made for the moment). PostgreSQL returns its *consistent point* and a
snapshot holding exactly the transactions that commit before it. A normal
connection imports that snapshot (``BEGIN ISOLATION LEVEL REPEATABLE READ; SET
TRANSACTION SNAPSHOT``) and reads every row of the chosen tables in it, table by
table in ``(schema, table)`` order, in chunks of `chunk` rows by key (keyset
pagination, ``WHERE (key) > (last) ORDER BY key LIMIT n``: bounded memory; see
`rowcast.sources.postgres.keyset`), each chunk one transaction of ``write``
changes with ``snapshot=True``. Then the slot streams from the consistent
point: the server sends exactly the transactions that commit after it, so
nothing is missed or doubled at the seam. A row read is what the stream gives
for it (the same loaders, the same ``pk``). A table without a key and with
``REPLICA IDENTITY FULL`` is read in one pass (``pk=None``); one without a key
or replica identity is refused, as capture refuses it.

Cut short and resumed (a relay killed mid-snapshot): an exported snapshot dies
with its connection, so it cannot be taken up again, but the checkpoint holds
the last chunk's position (`rowcast.sources._snapshot`: the consistent point and
the last key read) and the relay's slot was not confirmed past it. A restart
exports a new snapshot, hands out what the slot holds between the two points
(read with ``pg_logical_slot_peek_binary_changes``, which moves nothing) as the
`Seam` says, then reads the rest (the rows after that key, the tables after it)
and streams from the new point. Before streaming, a reader with a checkpoint
waits until the consumer has every chunk, and records the point as an LSN: the
slot is never confirmed past a snapshot's position (PostgreSQL would not send
again what a restart needs).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ...change import Change
from ...errors import ConfigError, SourceError
from .._snapshot import Cut, Seam, SnapshotProgress, is_position, parse, position
from . import keyset
from . import pgoutput as pgo
from .objects import is_ours
from .pgoutput import format_lsn, parse_lsn
from .publication import keyless_error
from .rows import ROW_KINDS, RowDecoder, lookup_types
from .server import PgURL, connect
from .setup import Table, chosen_tables, publication_state
from .stream import close_stream, exported_slot
from .types import TypeMap

__all__ = ["Snapshot", "plan", "snapshot_tables"]

log = logging.getLogger("rowcast.sources.snapshot")

_PG = "postgres"
_PATIENCE = 10.0  # seconds to wait for a slot that a killed reader's server process holds


def plan(start: str, snapshot: str) -> Cut | None:
    """The snapshot a reader starting at `start` reads or resumes, or None."""
    if is_position(start):
        return parse(start, parse_lsn)
    if start == "now" and snapshot == "initial":
        return Cut()
    return None


def snapshot_tables(
    cur: Any, target: str, patterns: Sequence[str] | None, publication: str
) -> list[Table]:
    """The tables a snapshot reads: those the reader's publication gives it, that `patterns`
    match. A table without a key or replica identity is refused, as capture refuses it."""
    pub = publication_state(cur, publication)
    ours = pub is None or is_ours(cur, publication)
    tables = chosen_tables(cur, patterns, None if ours else pub)
    if pub is not None and not ours and not pub.all_tables:
        tables = [t for t in tables if (t.schema, t.name) in pub.tables]
    keyless = [t for t in tables if not t.keyed]
    if keyless:
        raise keyless_error(target, keyless)
    return tables


class Snapshot:
    """One run of a snapshot, new or resumed (`cut`), of the tables `tables` gives.

    Iterate it for its transactions; afterwards `resume` is the LSN to stream from.
    With `slot` (a tail's), the exporting temporary slot is that one, kept to
    stream from: `pending` (its replication cursor and where it begins). Without,
    one is made for the export only, and `stream` is the lasting slot (and
    `publication`) a resumed snapshot reads what happened in between from. `save`
    records where a new snapshot begins before its first chunk (a checkpoint's).
    """

    def __init__(
        self,
        url: PgURL,
        cut: Cut,
        tables: Callable[[Any], list[Table]],
        chunk: int,
        stopping: threading.Event,
        *,
        slot: str | None = None,
        stream: tuple[str, str, Sequence[str] | None] | None = None,
        save: Callable[[str], None] | None = None,
    ) -> None:
        if cut.point and stream is None:
            raise ConfigError(
                f"{url.masked}: a snapshot cut short resumes from the slot it began with: "
                "give ?slot= (rowcast relay's own slot is named after its checkpoint)"
            )
        self.url, self.cut, self.chunk, self.stopping = url, cut, chunk, stopping
        self._tables, self._slot, self._stream, self._save = tables, slot, stream, save
        self.progress = SnapshotProgress()
        self.resume = 0
        self.pending: tuple[Any, int] | None = None
        self._layouts: dict[tuple[str, str], keyset.Layout] = {}
        self._ctl: Any = None  # compares keys while the snapshot is open

    def __iter__(self) -> Iterator[list[Change]]:
        conn = connect(self.url)
        try:
            yield from self._read(conn.cursor())
        except Exception as error:
            if isinstance(error, ConfigError | SourceError):
                raise
            raise SourceError(f"{self.url.masked}: the snapshot failed: {error}") from error
        finally:
            conn.close()
            if self._ctl is not None:
                self._ctl.close()
            if self.pending is not None and (not self.progress.done or self.stopping.is_set()):
                close_stream(self.pending[0], 0)
                self.pending = None

    def _export(self, cur: Any) -> int:
        """Import into `cur`'s new transaction the snapshot a temporary slot exports; the
        slot's consistent point. A tail's slot is kept (`pending`); another one goes."""
        conn = connect(self.url, replication=True)
        try:
            replication = conn.cursor()
            lsn, name = exported_slot(replication, self._slot)
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cur.execute("SET TRANSACTION SNAPSHOT %s", (name,))
        except BaseException:
            conn.close()
            raise
        if self._slot:
            self.pending = (replication, lsn)
        else:
            conn.close()  # imported: the snapshot lives on in `cur`'s transaction
        # a slow consumer keeps this transaction open (and idle) for as long as it takes
        cur.execute("SET LOCAL statement_timeout = 0")
        cur.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
        return lsn

    def _read(self, cur: Any) -> Iterator[list[Change]]:
        point = self._export(cur)
        here, begin = format_lsn(point), self.cut.at
        if self.cut.point:  # resumed: what happened since, as the consumer needs it
            seam = Seam(begin, self._greater, self._old_key)
            # first pass: which rows it deletes (see Seam.learn)
            for changes, _ in self._between(parse_lsn(self.cut.point), point):
                if self.stopping.is_set():
                    return
                seam.learn(changes)
            for changes, end in self._between(parse_lsn(self.cut.point), point):
                if self.stopping.is_set():
                    return
                kept = seam.keep(changes, position(format_lsn(end), begin))
                if kept:
                    yield kept
        elif self._save is not None:
            self._save(position(here, None))
        tables = sorted(self._tables(cur), key=lambda t: (t.schema, t.name))
        if begin is not None:
            tables = [t for t in tables if (t.schema, t.name) >= begin[:2]]
        layouts = [(t, self._layout(cur, t.schema, t.name)) for t in tables]
        progress = self.progress
        progress.tables = len(tables)
        progress.estimate = keyset.estimate(cur, [layout.oid for _, layout in layouts])
        log.info("snapshot of %d tables (~%d rows) at %s", len(tables), progress.estimate, here)
        ts, txid, types = time.time(), f"snapshot:{here}", TypeMap()
        for table, layout in layouts:
            types.learn(layout.oids, lambda oids: lookup_types(cur, oids))
            loader = types.rows(layout.columns, layout.oids)
            pk_of = layout.pk_of
            schema, name = table.schema, table.name
            after = begin[2] if begin is not None and begin[:2] == (schema, name) else None
            progress.table = f"{schema}.{name}"
            for rows, last in keyset.chunks(cur, table, layout, after, self.chunk):
                if self.stopping.is_set():
                    return
                at = position(here, (schema, name, last))
                images = map(loader.new, rows)
                yield Change._reads(
                    schema, name, ((pk_of(i), i) for i in images), ts, txid, at, _PG
                )
                progress.rows += len(rows)
            progress.tables_done += 1
            log.info("snapshot: %s read (%d rows so far)", table.sql, progress.rows)
        cur.execute("COMMIT")
        progress.table, progress.done, self.resume = None, True, point
        log.info("snapshot done: %d rows; streaming from %s", progress.rows, here)

    def _between(self, start: int, end: int) -> Iterator[tuple[list[Change], int]]:
        """The transactions the lasting slot holds that end after `start`, up to `end`
        (both LSNs), each with its end: peeked, so the slot stays where it is."""
        assert self._stream is not None
        slot, publication, patterns = self._stream
        conn = connect(self.url)
        try:
            cur, ctl = conn.cursor(), self._control()
            decoder = RowDecoder(patterns, lambda: ctl)
            self._peek(cur, slot, publication, end)
            rows: list[Any] = []
            xid = None
            while True:
                cur.execute("FETCH FORWARD 1000 FROM rowcast_between")
                batch = cur.fetchall()
                if not batch:
                    return
                for (data,) in batch:
                    data = bytes(data)
                    if data[0] in ROW_KINDS:
                        row = decoder.change(data)
                        if row is not None:
                            rows.append(row)
                        continue
                    m = pgo.decode(data)
                    kind = type(m)
                    if kind is pgo.Begin:
                        rows, xid = [], m.xid  # type: ignore[union-attr]
                    elif kind is pgo.Commit:
                        if m.end_lsn > end:  # type: ignore[union-attr]
                            return  # after the new snapshot: streamed from there
                        if m.end_lsn > start and rows:  # type: ignore[union-attr]
                            yield decoder.commit(rows, xid, m), m.end_lsn  # type: ignore
                        rows = []
                    elif kind is pgo.Relation:
                        decoder.relation(m)  # type: ignore[arg-type]
        finally:
            conn.close()

    def _peek(self, cur: Any, slot: str, publication: str, end: int) -> None:
        """Open a cursor on what `slot` holds up to `end`, once the slot is free: the server
        process of a reader that was killed lets go of it in a moment."""
        deadline = time.monotonic() + _PATIENCE
        while True:
            cur.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,))
            row = cur.fetchone()
            if row is None or row[0] is None or time.monotonic() > deadline:
                break
            if self.stopping.wait(0.2):
                break
        cur.execute("BEGIN")
        cur.execute(
            "DECLARE rowcast_between NO SCROLL CURSOR FOR SELECT data FROM "
            "pg_logical_slot_peek_binary_changes(%s, %s, NULL, 'proto_version', '1', "
            "'publication_names', %s)",
            (slot, format_lsn(end), publication),
        )

    # ------------------------------------------------------------------ keys

    def _control(self) -> Any:
        if self._ctl is None:
            self._ctl = connect(self.url)
        return self._ctl.cursor()

    def _layout(self, cur: Any, schema: str, table: str) -> keyset.Layout:
        layout = self._layouts.get((schema, table))
        if layout is None:
            layout = keyset.describe(cur, self.url.masked, schema, table)
            self._layouts[(schema, table)] = layout
        return layout

    def _greater(
        self, schema: str, table: str, pk: tuple[Any, ...], after: tuple[Any, ...]
    ) -> bool:
        cur = self._control()
        return keyset.greater(cur, self._layout(cur, schema, table), pk, after)

    def _old_key(self, change: Change) -> Any:
        """The key an update's before image has, when it holds the whole key."""
        if change.before is None:
            return None
        layout = self._layout(self._control(), change.schema or "", change.table)
        return keyset.old_key(layout, change)

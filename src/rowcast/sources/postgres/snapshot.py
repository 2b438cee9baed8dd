"""The initial snapshot of a PostgreSQL source: every existing row, then the slot from there.

Private to `rowcast.sources.postgres` (``LogicalSource(snapshot="initial")``).

How it stays consistent: a replication connection creates a ``TEMPORARY``
slot with ``EXPORT_SNAPSHOT`` (a tail's own slot, or a slot made for the moment
beside a relay's lasting one). PostgreSQL returns the slot's *consistent point*
and a snapshot that holds exactly the transactions that commit before it. A
normal connection imports that snapshot (``BEGIN ISOLATION LEVEL REPEATABLE
READ; SET TRANSACTION SNAPSHOT``) and reads every row of the chosen tables in
it, table by table in ``(schema, table)`` order, in chunks of `chunk` rows by
key (keyset pagination, ``WHERE (key) > (last) ORDER BY key LIMIT n``: bounded
memory), each chunk one transaction of ``write`` changes with ``snapshot=True``.
Then the slot streams from the consistent point: the server sends only the
transactions that commit after it, so nothing is missed or doubled at the seam.
Values are read in the server's text form and parsed by the same loaders as the
stream's (`rowcast.sources.postgres.types`), so a row read is what the stream
gives for it; ``pk`` too (the primary key, or the replica identity index's
columns). A table without a key and with ``REPLICA IDENTITY FULL`` is read in
one pass (``pk=None``); one without a key or identity is refused, as capture
refuses it.

Cut short and resumed (a relay killed mid-snapshot): an exported snapshot dies
with its connection, so it cannot be taken up again. The checkpoint holds the
last chunk's position (`rowcast.sources._snapshot`: the first consistent point
and the last key read); a restart exports a new snapshot, reads the rest (the
rows after that key, the tables after it) in it, and streams the relay's slot
from the first consistent point (never confirmed past it meanwhile), leaving
out each change to a row that was read after the change committed (`Seam`).
Each row is read once, each change after its read arrives once. Keys are
compared in the table's own order by the server (collations included).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ...change import Action, Change
from ...errors import ConfigError, SourceError
from .._snapshot import Cut, Seam, SnapshotProgress, is_position, parse
from .objects import is_ours
from .pgoutput import format_lsn, parse_lsn
from .publication import keyless_error
from .rows import lookup_types
from .server import PgURL, connect, psycopg2
from .setup import Table, chosen_tables, publication_state, quote
from .stream import close_stream, exported_slot
from .types import TypeMap

if TYPE_CHECKING:
    from ...checkpoint import Checkpoint

__all__ = ["Snapshot", "confirm_snapshot", "plan", "snapshot_tables"]

log = logging.getLogger("rowcast.sources.snapshot")

_WRITE = Action.WRITE


@dataclasses.dataclass(frozen=True)
class _Layout:
    """A table as a snapshot reads it and compares its keys."""

    oid: int
    columns: tuple[str, ...]  #: as pgoutput sends them: no dropped nor generated column
    oids: tuple[int, ...]
    key: tuple[str, ...]  #: the key's columns in index order: the order rows are read in
    pk: tuple[str, ...]  #: the same columns in the order the stream's ``pk`` has them
    casts: tuple[str, ...]  #: per key column: ``::type COLLATE collation``

    def pk_of(self, image: dict[str, Any]) -> Any:
        """The ``pk`` of a row, as the stream gives it: a value, a tuple, or None."""
        if len(self.pk) == 1:
            return image[self.pk[0]]
        return tuple(image[k] for k in self.pk) if self.pk else None


def plan(start: str, snapshot: str) -> Cut | None:
    """The snapshot a reader starting at `start` reads, resumes or catches up after, or None."""
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


def confirm_snapshot(
    checkpoint: Checkpoint,
    saved: str,
    chunk: str | None,
    lsn: int,
    handed: int,
    at: Callable[[int], str],
) -> int:
    """How far a slot may be confirmed while the checkpoint holds a snapshot's position
    `saved` (0: not at all), having streamed up to `lsn`; `handed` is the end of the last
    streamed transaction handed out (0: none yet), `chunk` the last chunk's position.

    The slot stays where a restart streams from until the checkpoint moves on: until
    the consumer has every chunk, and nothing streamed is pending, the checkpoint
    moves with the slot to `at(lsn)` (a snapshot position still while the `Seam`
    filters, the LSN after).
    """
    cut = parse(saved, parse_lsn)
    if cut.streamed is None:
        if saved != chunk or handed:  # chunks or a transaction not delivered yet
            return 0
        done = 0
    else:
        done = parse_lsn(cut.streamed)
        if done < handed:
            return done
    if lsn > done:
        checkpoint.save(at(lsn))
    return lsn


class Snapshot:
    """One run of a snapshot: new, resumed, or done and catching up (`cut.streamed`).

    Iterate it for the chunks; afterwards `resume` is the LSN to stream from, `seam`
    (None: every change is wanted) filters what the stream gives from there, and
    `pending` is the replication cursor of `slot` (and where it begins) when given:
    a tail's temporary slot, made with the snapshot to stream from. Without `slot`,
    a temporary slot is made only to export the snapshot. `control` gives a cursor
    for key comparisons while streaming.
    """

    def __init__(
        self,
        url: PgURL,
        cut: Cut,
        tables: Callable[[Any], list[Table]],
        chunk: int,
        stopping: threading.Event,
        control: Callable[[], Any],
        slot: str | None = None,
    ) -> None:
        self.url, self.cut, self.chunk, self.stopping = url, cut, chunk, stopping
        self._tables, self._control, self._slot = tables, control, slot
        self.progress = SnapshotProgress()
        self.resume = 0
        self.seam: Seam | None = None
        self.pending: tuple[Any, int] | None = None
        self._release: Any = None  # the connection of a slot made only to export
        self._layouts: dict[tuple[str, str], _Layout] = {}

    def __iter__(self) -> Iterator[list[Change]]:
        if self.cut.streamed is not None:  # read already: only the stream's filter is left
            self.progress.done = True
            self._streaming(parse_lsn(self.cut.streamed))
            return
        conn = connect(self.url)
        try:
            yield from self._read(conn.cursor())
        except Exception as error:
            if isinstance(error, ConfigError | SourceError):
                raise
            raise SourceError(f"{self.url.masked}: the snapshot failed: {error}") from error
        finally:
            conn.close()
            if not self.progress.done and self.pending is not None:
                close_stream(self.pending[0], 0)
                self.pending = None

    def _export(self) -> tuple[int, str]:
        """Make a temporary slot that exports its snapshot: (its consistent point, its name).

        A tail's slot is kept (`pending`); one made only for the export goes once the
        snapshot is imported (`_release`: its connection, closed then).
        """
        conn = connect(self.url, replication=True)
        try:
            cur = conn.cursor()
            lsn, name = exported_slot(cur, self._slot)
        except BaseException:
            conn.close()
            raise
        self._release = None if self._slot else conn
        if self._slot:
            self.pending = (cur, lsn)
        return lsn, name

    def _streaming(self, resume: int) -> None:
        self.resume = resume
        if self.cut.resumed:
            self.seam = Seam(self.cut, parse_lsn, self._greater, self._old_key)

    def _read(self, cur: Any) -> Iterator[list[Change]]:
        point, name = self._export()
        try:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cur.execute("SET TRANSACTION SNAPSHOT %s", (name,))
        finally:  # imported (or failed): the slot made only to export it may go
            if self._release is not None:
                self._release.close()
        # a slow consumer keeps this transaction open (and idle) for as long as it takes
        cur.execute("SET LOCAL statement_timeout = 0")
        cur.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
        here, cut, begin = format_lsn(point), self.cut, self.cut.at
        if begin is None:
            cut = Cut(here)
        else:
            cut = dataclasses.replace(cut, resumed=(*cut.resumed, (begin, here)), at=None)
        self.cut = cut
        tables = sorted(self._tables(cur), key=lambda t: (t.schema, t.name))
        if begin is not None:
            tables = [t for t in tables if (t.schema, t.name) >= (begin[0], begin[1])]
        layouts = [(t, self._layout(cur, t.schema, t.name)) for t in tables]
        self.progress.tables = len(tables)
        self.progress.estimate = _estimate(cur, [layout.oid for _, layout in layouts])
        log.info(
            "snapshot of %d tables (~%d rows) at %s", len(tables), self.progress.estimate, here
        )
        ts, txid = time.time(), f"snapshot:{here}"
        types = TypeMap()
        for table, layout in layouts:
            types.learn(layout.oids, lambda oids: lookup_types(cur, oids))
            loader = types.rows(layout.columns, layout.oids)
            _raw(cur, layout.oids)
            after = None
            if begin is not None and begin[:2] == (table.schema, table.name):
                after = begin[2]
            schema, name = table.schema, table.name
            self.progress.table = f"{schema}.{name}"
            for rows, last in _chunks(cur, table, layout, after, self.chunk):
                if self.stopping.is_set():
                    return
                position = cut.position((schema, name, last))
                changes = [
                    Change(
                        _WRITE,
                        schema,
                        name,
                        layout.pk_of(image),
                        None,
                        image,
                        ts,
                        txid,
                        position,
                        "postgres",
                        True,
                    )
                    for image in map(loader.new, rows)
                ]
                yield changes
                self.progress.rows += len(changes)
            self.progress.tables_done += 1
            log.info("snapshot: %s read (%d rows so far)", table.sql, self.progress.rows)
        cur.execute("COMMIT")
        self.progress.table, self.progress.done = None, True
        self._streaming(parse_lsn(cut.origin))
        log.info("snapshot done: %d rows; streaming from %s", self.progress.rows, cut.origin)

    # ------------------------------------------------------------------ keys

    def _layout(self, cur: Any, schema: str, table: str) -> _Layout:
        layout = self._layouts.get((schema, table))
        if layout is None:
            layout = self._layouts[(schema, table)] = _describe(cur, self.url.masked, schema, table)
        return layout

    def _greater(
        self, schema: str, table: str, pk: tuple[Any, ...], after: tuple[Any, ...]
    ) -> bool:
        """``pk > after`` in the table's key order, as the server compares them."""
        layout = self._layout(self._control().cursor(), schema, table)
        if len(layout.pk) != len(pk) or len(layout.key) != len(after):
            return True  # the key changed since: the row was read again
        values = dict(zip(layout.pk, pk, strict=True))
        left = ", ".join(f"%s{cast}" for cast in layout.casts)
        cur = self._control().cursor()
        cur.execute(
            f"SELECT ROW({left}) > ROW({left})",
            [*(_text(values[k]) for k in layout.key), *after],
        )
        return bool(cur.fetchone()[0])

    def _old_key(self, change: Change) -> Any:
        """The key an update's before image has, when it holds the whole key."""
        if change.before is None:
            return None
        layout = self._layout(self._control().cursor(), change.schema or "", change.table)
        if not layout.pk or any(k not in change.before for k in layout.pk):
            return None
        if len(layout.pk) == 1:
            return change.before[layout.pk[0]]
        return tuple(change.before[k] for k in layout.pk)


def _describe(cur: Any, target: str, schema: str, table: str) -> _Layout:
    """How `table` is read: its columns as pgoutput sends them, its key, how keys compare."""
    cur.execute(
        "SELECT c.oid, c.relreplident FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
        (schema, table),
    )
    found = cur.fetchone()
    if found is None:
        raise SourceError(f"table {quote(schema, table)} is gone")
    oid, identity = int(found[0]), str(found[1])
    cur.execute(
        "SELECT a.attname, a.atttypid, format_type(a.atttypid, NULL), CASE WHEN "
        "a.attcollation <> 0 THEN quote_ident(cn.nspname) || '.' || quote_ident(co.collname) "
        "END FROM pg_attribute a LEFT JOIN pg_collation co ON co.oid = a.attcollation "
        "LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace WHERE a.attrelid = %s "
        "AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum",
        (oid,),
    )
    columns = [(str(n), int(t), str(f), c) for n, t, f, c in cur.fetchall()]
    # the key the stream gives: the replica identity index's, else the primary key's
    cur.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY (i.indkey) WHERE i.indrelid = %s AND CASE WHEN %s = 'i' "
        "THEN i.indisreplident ELSE i.indisprimary END "
        "ORDER BY array_position(i.indkey::int2[], a.attnum)",
        (oid, identity),
    )
    key = tuple(str(name) for (name,) in cur.fetchall())
    if identity == "n" or (identity in ("d", "i") and not key):
        raise keyless_error(target, [Table(schema, table, identity, bool(key), True)])
    # pgoutput flags the key columns in column order; with FULL the source asks for the
    # primary key, in key order
    pk = key if identity == "f" else tuple(n for n, _, _, _ in columns if n in key)
    kinds = {n: (f, c) for n, _, f, c in columns}
    casts = tuple(
        f"::{kinds[k][0]}" + (f" COLLATE {kinds[k][1]}" if kinds[k][1] else "") for k in key
    )
    return _Layout(
        oid,
        tuple(n for n, _, _, _ in columns),
        tuple(t for _, t, _, _ in columns),
        key,
        pk,
        casts,
    )


def _estimate(cur: Any, oids: list[int]) -> int:
    if not oids:
        return 0
    cur.execute(
        "SELECT coalesce(sum(greatest(reltuples, 0)), 0)::bigint FROM pg_class "
        "WHERE oid = ANY (%s::oid[])",
        (oids,),
    )
    return int(cur.fetchone()[0])


def _raw(cur: Any, oids: tuple[int, ...]) -> None:
    """Make the connection hand these types' values over in the server's text form."""
    ext = psycopg2().extensions
    caster = ext.new_type(tuple(set(oids)), "ROWCAST_TEXT", lambda value, _: value)
    ext.register_type(caster, cur.connection)


def _chunks(
    cur: Any, table: Table, layout: _Layout, after: Any, size: int
) -> Iterator[tuple[list[tuple[bytes | None, ...]], Any]]:
    """The table's rows (text form, as bytes) after key `after`, `size` at a time, with the
    key of the last one (as text: where the next chunk begins)."""
    names = ", ".join(quote(c) for c in layout.columns) or "NULL"
    source = f"SELECT {names} FROM {table.sql}"
    if not layout.key:  # no key to page by: one pass, read again whole when cut short
        cur.execute(f"DECLARE rowcast_snapshot NO SCROLL CURSOR FOR {source}")
        while rows := _fetch(cur, f"FETCH FORWARD {int(size)} FROM rowcast_snapshot"):
            yield rows, None
        cur.execute("CLOSE rowcast_snapshot")
        return
    keys = ", ".join(quote(k) for k in layout.key)
    at = [layout.columns.index(k) for k in layout.key]
    params = ", ".join(f"%s{cast}" for cast in layout.casts)
    last = after
    while True:
        where = f" WHERE ROW({keys}) > ROW({params})" if last is not None else ""
        cur.execute(f"{source}{where} ORDER BY {keys} LIMIT {int(size)}", list(last or ()))
        rows = [tuple(None if v is None else v.encode() for v in row) for row in cur.fetchall()]
        if not rows:
            return
        last = tuple(rows[-1][i].decode() for i in at)  # type: ignore[union-attr]
        yield rows, last
        if len(rows) < size:
            return


def _fetch(cur: Any, statement: str) -> list[tuple[bytes | None, ...]]:
    cur.execute(statement)
    return [tuple(None if v is None else v.encode() for v in row) for row in cur.fetchall()]


def _text(value: Any) -> str:
    """A key value as the server's input function reads it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, float):
        return repr(value)
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    if hasattr(value, "days") and hasattr(value, "microseconds"):  # timedelta
        return f"{value.days} days {value.seconds} seconds {value.microseconds} microseconds"
    return str(value)

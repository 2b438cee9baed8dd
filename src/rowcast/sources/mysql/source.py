"""Every committed row change of a MySQL or MariaDB server, from its row-based binlog.

::

    source = BinlogSource("mysql://root@127.0.0.1:3306/test", tables=["test.*"])
    source.run(hub)                       # or: for transaction in source: ...

The server is checked first (`ConfigError` with the fix when the binlog is
off, not ROW, row images or metadata not FULL, a privilege is missing, the
password is wrong or the host unreachable). Then one `Change` per row image,
published per transaction at its XID / COMMIT: ``txid`` is the GTID
(MariaDB ``domain-server-seq``, MySQL ``uuid:n``) or else the xid,
``position`` is ``"<binlog file>:<offset>"`` of the transaction's end, ``ts``
its commit time. ``pk`` is the table's primary key value (a tuple for a
composite key); a table without a primary key gives ``pk=None``, with full
images all the same. Column names come from the binlog itself
(``binlog_row_metadata=FULL``), so changes after an ``ALTER TABLE`` carry the
new columns. Types: integers (unsigned too), ``Decimal``, float, str
(utf8mb4), bytes, date, naive datetime for DATETIME, aware UTC datetime for
TIMESTAMP, timedelta for TIME, int for YEAR and BIT, parsed JSON (MariaDB's
JSON columns too), str for ENUM, set for SET, None for NULL.

Reading resumes from ``start`` (``"now"``, ``"start"``, ``"file:pos"`` or a
GTID set) or from a checkpoint; when the connection drops or the server
restarts it reconnects with backoff and resumes after the last transaction
it handed out, so nothing is lost or repeated.

``snapshot="initial"`` (Debezium's and Maxwell's initial snapshot) first hands
out every existing row of the chosen tables as ``write`` changes with
``snapshot=True``, read in one consistent snapshot in chunks of
``snapshot_chunk`` rows by primary key, then streams the binlog from the
position that snapshot matches: nothing missed or doubled at the seam. It runs
only when there is no position to resume from (no checkpointed position, and
``start`` left at ``"now"``); a ``snapshot:...`` position (a snapshot's own
changes carry one) resumes a snapshot that was cut short. `snapshot_progress`
tells how far it got. Details in `rowcast.sources.mysql.snapshot`.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ...backends import missing_extra
from ...change import Change
from ...errors import ConfigError
from .._snapshot import check_options
from ..base import Diagnosis, LogSource
from ..health import LogHealth
from ..signal import NAME as SIGNAL
from . import _events, owner, scope
from . import health as _health
from . import server as _server
from . import snapshot as _snapshot
from ._decode import Decoders, Row
from .backfill import MysqlReads
from .positions import GTID_SET as _GTID_SET
from .positions import file_pos as _file_pos
from .positions import is_position, reaches
from .positions import order as binlog_order
from .server import ServerURL, connect, is_connection_error, parse_url, pymysql_connect, server_code

if TYPE_CHECKING:
    from ...checkpoint import Checkpoint

__all__ = ["BinlogSource"]

log = logging.getLogger("rowcast.sources.mysql")


def _replication() -> Any:
    try:
        import pymysqlreplication
        from pymysqlreplication import event, row_event
    except ImportError as e:  # pragma: no cover - the extra is installed in tests
        raise missing_extra("mysql", "reading a MySQL/MariaDB binlog", e) from e
    return pymysqlreplication, event, row_event


_RECOVER = (
    "the changes since are gone from the server, and reading on would skip them. To "
    "recover, copy the tables as they are now (--snapshot initial with an emptied "
    "checkpoint, or rowcast backfill URL --tables ... once it streams again), then read "
    "on from there"
)


def _order(position: str) -> tuple[int, int]:
    """A sortable key for ``file:offset`` (files are numbered)."""
    _file_pos(position)
    return binlog_order(position)


class BinlogSource(LogSource):
    """A MySQL / MariaDB row-based binlog as a stream of `Change` transactions.

    The URL's database limits capture to it (a URL without one captures every
    database); `tables` are ``fnmatch`` patterns on ``"schema.table"`` or
    ``"table"`` within that. A database that does not exist or a pattern that
    matches no table is a `ConfigError` naming what exists, unless `allow_empty`
    (tables created later). `server_id` is this client's replica id: by default
    derived from the `checkpoint` (a relay: the same every run), or random
    without one (a tail); a second reader with the same id is refused (see
    `rowcast.sources.mysql.owner`). `end` (``"now"`` or a ``file:pos``) makes
    iteration stop once that position is passed instead of waiting for more.
    `snapshot` (``"initial"`` or ``"never"``) and `snapshot_chunk`: see the module
    docstring. Starting, checkpoints, stopping and reconnecting: `LogSource`.
    """

    reading = "the binlog"
    _log = log

    def __init__(
        self,
        url: str,
        *,
        server_id: int | None = None,
        tables: Iterable[str] | None = None,
        start: str | None = None,
        end: str | None = None,
        checkpoint: Checkpoint | None = None,
        heartbeat: float = 1.0,
        snapshot: str = "never",
        snapshot_chunk: int = 1000,
        allow_empty: bool = False,
    ) -> None:
        self.url: ServerURL = parse_url(url)
        options = self.url.options
        if isinstance(tables, str):
            raise ConfigError(f"tables= takes a list of patterns, not the string {tables!r}")
        if tables is None and "tables" in options:
            tables = options["tables"].split(",")
        self.tables = tuple(tables) if tables is not None else None
        raw_id = server_id if server_id is not None else options.get("server_id")
        try:
            self._server_id = int(raw_id) if raw_id is not None else None
        except ValueError as e:
            raise ConfigError(f"server_id must be an integer, not {raw_id!r}") from e
        if self._server_id is not None and not 1 <= self._server_id < 2**32:
            raise ConfigError(f"server_id must be from 1 to 4294967295, not {raw_id!r}")
        self._random_id: int | None = None
        self.allow_empty = bool(allow_empty)
        start = start or options.get("start") or "now"
        if _snapshot.is_position(start):
            _snapshot.parse(start)
        elif start not in {"now", "start"} and not _GTID_SET.match(start):
            _file_pos(start)
        check_options(snapshot, snapshot_chunk, start)
        self.snapshot = snapshot
        self.snapshot_chunk = snapshot_chunk
        self.snapshot_progress: _snapshot.SnapshotProgress | None = None
        if end is not None and end != "now":
            _file_pos(end, "or 'now'")
        super().__init__(self.url.masked, start=start, end=end, checkpoint=checkpoint)
        self.heartbeat = heartbeat  # seconds: how soon an idle reader notices `stop`
        self._wanted: dict[tuple[str, str], bool] = {}
        # the binlog's rows of the app's tables chosen, and of rowcast_signal (backfills)
        self._decoder = Decoders(self._captures, self._control)

    @property
    def server_id(self) -> int:
        """The replica id this source reads with: given, derived from the checkpoint, or
        (without one) random."""
        if self._server_id is not None:
            return self._server_id
        if self.checkpoint is not None:
            return owner.derived_id(self.url, self.checkpoint)
        if self._random_id is None:
            self._random_id = owner.random_id()
        return self._random_id

    # ------------------------------------------------------------------ running

    _POSITION = "a MySQL / MariaDB position (a binlog file:offset such as 'mysql-bin.000003:4')"

    def _is_position(self, value: str) -> bool:
        return is_position(value)

    def check(self) -> None:
        """Raise `ConfigError` with every fix the server needs before it can be read, or
        when the database or a table pattern names nothing, or another reader reads with
        this source's server id (or a checkpoint of another kind of source is given)."""
        self._refuse_a_foreign_checkpoint()
        conn = connect(self.url)
        try:
            self._check(conn)
            owner.refuse_a_taken_id(conn, self.url.masked, self.server_id, self._patience)
        finally:
            conn.close()

    @property
    def _patience(self) -> float:
        """How long to wait for the server id of a reader that is letting go (seconds)."""
        return max(5 * self.heartbeat, 2.0)

    def _check(self, conn: Any) -> None:
        problems = [c for c in _server.diagnose(conn, self.url.user) if not c.ok]
        if not problems and not self.allow_empty:
            problems = scope.problems(conn, self.url.database, self.tables)
        if problems:
            lines = "\n".join(f"  - {c.name} {_is(c.value)}: {c.fix}" for c in problems)
            raise ConfigError(f"{self.url.masked} cannot be read as a binlog source:\n{lines}")

    def _iterate(self) -> Iterator[list[Change]]:
        conn = connect(self.url)
        try:
            self._check(conn)
        finally:
            conn.close()
        hold = owner.Hold(self.url, self.server_id, self._patience)
        hold.take()  # before anything is saved: a second reader with this id moves nothing
        try:
            yield from self._read(hold)
        finally:
            hold.release()

    def _read(self, hold: owner.Hold) -> Iterator[list[Change]]:
        conn = connect(self.url)
        try:
            resume, end = self._resolve_positions(conn)
        finally:
            conn.close()
        if _snapshot.is_position(resume):  # a new snapshot saves where it begins itself
            snapshot = _snapshot.Snapshot(
                self.url,
                self._wants,
                resume,
                self.snapshot_chunk,
                self._stopping,
                between=self._between,
                save=self.checkpoint.save if self.checkpoint is not None else None,
            )
            self.snapshot_progress = snapshot.progress
            for chunk in snapshot:
                yield chunk
                self.position = chunk[-1].position
            if self._stopping.is_set():
                return
            resume = snapshot.resume
        else:
            self._own_start(resume)
        if end is not None and not _GTID_SET.match(resume) and _order(resume) >= _order(end):
            return  # nothing to read before the end

        def binlog() -> Generator[list[Change], None, None]:
            """One connection's worth: from `resume`, which it moves on."""
            nonlocal resume
            hold.keep(now=True)  # after a lost connection: still this reader's id?
            stream = self._open_stream(resume)
            reached = None if end is None else reaches(end, _order)
            try:
                for transaction, position in self._transactions(stream):
                    hold.keep()
                    if position is None:  # idle: nothing more to read for now
                        if reached is not None and reached(self._at(stream)):
                            return
                        yield []
                        continue
                    yield transaction
                    resume = self.position = position
                    if reached is not None and reached(position):
                        return
            finally:
                stream.close()

        yield from self._reconnecting(binlog, lambda: resume)

    def _between(self, start: str, end: str) -> Iterator[tuple[list[Change], str]]:
        """The binlog's transactions that end after `start`, up to `end`, with their ends."""
        if _order(start) >= _order(end):
            return
        stream = self._open_stream(start)
        reached = reaches(end, _order)
        try:
            for transaction, position in self._transactions(stream):
                if position is not None and _order(position) <= _order(end) and transaction:
                    yield transaction, position
                if reached(position or self._at(stream)):
                    return
        except Exception as error:
            fatal = self._fatal(error, start)
            if fatal is None:
                raise
            raise fatal from error
        finally:
            stream.close()

    def _transient(self, error: Exception) -> bool:
        return is_connection_error(error)

    def _fatal(self, error: Exception, where: str) -> Exception | None:
        if server_code(error) == 1236:  # the server has no such position
            return ConfigError(
                f"{self.url.masked} cannot send the binlog from {where}: {error.args[-1]} "
                f"(purged?): {_RECOVER}"
            )
        return None

    # ------------------------------------------------------------------ internals

    def _resolve_positions(self, conn: Any) -> tuple[str, str | None]:
        start = self._resume_from()
        if start == "now" and self.snapshot == "initial":
            start = _snapshot.PREFIX  # a new snapshot
        with conn.cursor() as cur:
            cur.execute("SHOW MASTER STATUS")
            row = cur.fetchone()
            if row is None:
                raise ConfigError(f"{self.url.masked}: SHOW MASTER STATUS is empty: log_bin off?")
            now = f"{row[0]}:{row[1]}"
            cur.execute("SHOW BINARY LOGS")
            logs = {str(name): int(size) for name, size, *_ in cur.fetchall()}
        if start == "start":
            start = f"{min(logs, key=lambda name: _order(f'{name}:0'))}:4"
        elif _snapshot.is_position(start):
            _snapshot.parse(start)  # one from a checkpoint is checked here
        elif not _GTID_SET.match(start) and start != "now":
            name, offset = _file_pos(start)
            if name not in logs or offset > logs[name]:
                oldest = min(logs, key=lambda n: _order(f"{n}:0"))
                if _order(f"{name}:0") < _order(f"{oldest}:0"):
                    raise ConfigError(f"{self.url.masked}: {_health.purged(start, oldest)}")
                raise ConfigError(
                    f"{self.url.masked} has no binlog position {start}: its binlogs run from "
                    f"{oldest}:4 to {now} (a position from another server?)"
                )
        if start == "now":
            start = now
        end = now if self.end == "now" else self.end
        return start, end

    def _open_stream(self, resume: str) -> Any:
        replication, event, _ = _replication()
        kwargs: dict[str, Any] = {"is_mariadb": False}
        if _GTID_SET.match(resume):
            kwargs["auto_position"] = resume
            kwargs["is_mariadb"] = self._is_mariadb()
        else:
            # by file and offset even on MariaDB: the library's MariaDB mode ignores them
            # and reads from the first binlog's start
            kwargs["log_file"], kwargs["log_pos"] = _file_pos(resume)
        return replication.BinLogStreamReader(
            connection_settings=self.url.settings(),
            pymysql_wrapper=pymysql_connect,
            enable_logging=False,
            server_id=self.server_id,
            resume_stream=True,
            blocking=True,
            slave_heartbeat=self.heartbeat,
            # the library reads up to the dump's format description, then `_events` reads on
            only_events=[event.FormatDescriptionEvent],
            **kwargs,
        )

    def _is_mariadb(self) -> bool:
        with self._control().cursor() as cur:
            cur.execute("SELECT VERSION()")
            return "mariadb" in str(cur.fetchone()[0]).lower()

    def _connect_control(self) -> Any:
        return connect(self.url)

    def health(self, position: str | None) -> LogHealth:
        """The binlog head, how far `position` is behind it, and how near its purge it is."""
        return self._probing(lambda conn: _health.health(conn, position))

    def _transactions(self, stream: Any) -> Iterator[tuple[list[Change], str | None]]:
        """(changes, end position) per transaction: changes empty for DDL or filtered ones;
        ``([], None)`` when the server is idle (a heartbeat)."""
        E = _events
        rows: list[Row] = []
        gtid: str | None = None
        in_transaction = False
        xa: str | None = None  # the XA transaction being written
        prepared: dict[str, list[Any]] = {}  # XA transactions prepared, not yet committed
        read = E.events(stream, self._decoder)
        for kind, timestamp, value, flags in read:
            if self._stopping.is_set():
                return
            if kind == E.ROWS:
                rows.extend(value)
            elif kind == E.XID:
                yield self._commit(rows, gtid or str(value), timestamp, stream), self._at(stream)
                rows, gtid, in_transaction = [], None, False
            elif kind == E.GTID:
                gtid, rows = value, []
                if flags is not None:
                    # MariaDB logs no BEGIN: a GTID event without FL_STANDALONE opens one
                    in_transaction = not flags & 1
            elif kind == E.HEARTBEAT:
                yield [], None
            elif kind == E.XA_PREPARE:
                if xa is not None:
                    prepared[xa] = rows
                yield [], self._at(stream)  # committed or not, it is no longer in this log group
                rows, gtid, in_transaction, xa = [], None, False, None
            elif kind == E.QUERY:
                query = value.strip()
                upper = query.upper()
                if upper == "BEGIN":
                    rows, in_transaction = [], True
                elif upper in {"COMMIT", "ROLLBACK"}:
                    # a transaction on non-transactional tables ends this way; their rows
                    # were written even by a ROLLBACK
                    yield self._commit(rows, gtid or "", timestamp, stream), self._at(stream)
                    rows, gtid, in_transaction = [], None, False
                elif upper.startswith(("XA START", "XA END")):  # MariaDB logs only XA END
                    xa, in_transaction = _xid(query), True
                elif upper.startswith("XA PREPARE"):  # how MariaDB logs it
                    prepared[_xid(query)] = rows
                    yield [], self._at(stream)
                    rows, gtid, in_transaction, xa = [], None, False, None
                elif upper.startswith("XA COMMIT"):
                    key = _xid(query).removesuffix(" ONE PHASE")
                    done = prepared.pop(key, []) + rows
                    yield self._commit(done, gtid or key, timestamp, stream), self._at(stream)
                    rows, gtid, in_transaction, xa = [], None, False, None
                elif upper.startswith("XA ROLLBACK"):
                    prepared.pop(_xid(query), None)
                    yield [], self._at(stream)
                    rows, gtid, in_transaction, xa = [], None, False, None
                elif not in_transaction:  # DDL, its own transaction: column caches are stale
                    self._decoder.forget()
                    read.forget()
                    yield [], self._at(stream)
                    rows, gtid = [], None
                # else SAVEPOINT, ROLLBACK TO, XA END inside a transaction: its rows go on

    @staticmethod
    def _at(stream: Any) -> str:
        return f"{stream.log_file}:{stream.log_pos}"

    def _commit(
        self,
        rows: list[Row],
        txid: str,
        ts: float,
        stream: Any,
    ) -> list[Change]:
        return Change._rows(rows, float(ts), txid, self._at(stream), "mysql")

    def _wants(self, schema: str, table: str) -> bool:
        """Whether the app's table is read (snapshots, backfills); never rowcast_signal."""
        key = (schema, table)
        wanted = self._wanted.get(key)
        if wanted is None:
            wanted = table != SIGNAL and scope.captures(
                self.url.database, self.tables, schema, table
            )
            self._wanted[key] = wanted
        return wanted

    def _captures(self, schema: str, table: str) -> bool:
        """Whether the binlog's rows of the table are decoded: the app's tables read, and
        the URL's database's rowcast_signal (how backfills are asked for)."""
        if table == SIGNAL:
            return schema == self.url.database
        return self._wants(schema, table)

    # ------------------------------------------------------------------ backfills

    def _backfill_reads(self) -> MysqlReads | None:
        """None without a database in the URL (no rowcast_signal to read: the relay
        streams without backfills; asking for one says to name the database)."""
        if not self.url.database:
            if self.checkpoint is not None:  # a relay: rowcast backfill would wait for it
                log.warning(
                    "%s names no database: this relay takes no backfill (asked through "
                    "<database>.rowcast_signal); name one in the URL to take them",
                    self.url.masked,
                )
            return None
        return MysqlReads(self.url, self._wants)

    def _reads_or_refuse(self) -> MysqlReads:
        return MysqlReads(self.url, self._wants)


def diagnose(url: str) -> Diagnosis:
    """``rowcast doctor`` for a MySQL / MariaDB URL (`rowcast.sources.mysql.doctor`)."""
    from .doctor import diagnose as run

    return run(url)


def _is(value: str) -> str:
    """``is <value>``, or the value itself when it says what it is ("matches no table")."""
    return value if value.startswith(("matches", "does not")) else f"is {value}"


def _xid(query: str) -> str:
    """The xid of an ``XA <verb> <xid>`` statement, as the binlog spells it."""
    parts = query.split(None, 2)
    return parts[2].strip() if len(parts) == 3 else ""

"""`OutboxSource`: the ``rowcast_outbox`` table read as a queue (see `rowcast.sources.outbox`)."""

from __future__ import annotations

import collections
import fnmatch
import json
import logging
import threading
import weakref
from collections.abc import Generator, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from ..._url import masked
from ...change import Change
from ...errors import ConfigError, SourceError
from ..base import Check, Diagnosis, LogSource
from .engine import engine as _engine

if TYPE_CHECKING:
    from ...checkpoint import Checkpoint

__all__ = ["OUTBOX", "OutboxSource", "create_table", "diagnose", "write"]

log = logging.getLogger("rowcast.sources.outbox")

OUTBOX = sa.Table(
    "rowcast_outbox",
    sa.MetaData(),
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("txid", sa.String(64), nullable=False),
    sa.Column("idx", sa.Integer(), nullable=False),
    sa.Column("body", sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb"), nullable=False),
    sa.Index("ix_rowcast_outbox_txid", "txid"),
    sqlite_autoincrement=True,  # a rowid alone is reused once the table is empty
    mysql_charset="utf8mb4",
)
"""The outbox table: ``id`` (sequence), ``txid``, ``idx`` (place in the transaction), ``body``."""

_CHUNK = 500
_ready: weakref.WeakSet[sa.Engine] = weakref.WeakSet()
_ready_lock = threading.Lock()


def create_table(engine: sa.Engine) -> None:
    """Create `OUTBOX` in `engine`'s database when it is missing (once per engine)."""
    if engine in _ready:
        return
    with _ready_lock:
        if engine in _ready:
            return
        try:
            with engine.begin() as conn:
                OUTBOX.create(conn, checkfirst=True)
        except sa.exc.SQLAlchemyError:
            if not sa.inspect(engine).has_table(OUTBOX.name):  # else another process won
                raise
        _ready.add(engine)


def write(connection: sa.Connection, txid: str, first: int, changes: Sequence[Change]) -> None:
    """Insert `changes` as outbox rows ``first, first + 1, ...`` of transaction `txid`."""
    rows = []
    for index, change in enumerate(changes, first):
        try:
            body = change.to_json()
        except (TypeError, ValueError) as e:
            raise SourceError(f"rowcast cannot write {change.topic} to the outbox: {e}") from e
        rows.append({"txid": txid, "idx": index, "body": body})
    connection.execute(OUTBOX.insert(), rows)


def _connect_error(url: str, error: sa.exc.SQLAlchemyError) -> ConfigError:
    reason = (str(getattr(error, "orig", None) or error).strip().splitlines() or ["?"])[0]
    return ConfigError(
        f"{masked(url)}: cannot use the outbox database ({reason}): "
        "is the server running, and are the URL's user, password and database right?"
    )


def _retryable(error: BaseException) -> bool:
    """A lost connection or a restarting server, as opposed to a query that cannot work."""
    if isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, sa.exc.OperationalError):  # SQLite says "no such table" this way too
        return not any(m in str(error.orig).lower() for m in ("no such table", "no such column"))
    return isinstance(error, sa.exc.InterfaceError)


class OutboxSource(LogSource):
    """The ``rowcast_outbox`` table of the database at ``outbox+<url>``, as a `Source`.

    `tables` are ``fnmatch`` patterns on ``"schema.table"`` or ``"table"`` (rows of
    other tables are removed without being handed out); `batch` is how many
    rows one read takes at most; `end="now"` makes iteration stop once the
    outbox is empty instead of polling. See the module docstring for the order,
    the deletion and the costs; `LogSource` for starting, stopping and retrying.
    """

    reading = "rowcast_outbox"
    _log = log
    redelivers = (
        "the relayed rows are deleted from rowcast_outbox after the destination "
        "committed them, not in its transaction: a relay killed in between delivers "
        "those transactions again on restart (same positions and change ids)"
    )

    def __init__(
        self,
        url: str,
        *,
        start: str | None = None,
        checkpoint: Checkpoint | None = None,
        tables: Iterable[str] | None = None,
        end: str | None = None,
        poll: float = 0.2,
        batch: int = 1000,
        snapshot: str = "never",
    ) -> None:
        if isinstance(tables, str):
            raise ConfigError(f"tables= takes a list of patterns, not the string {tables!r}")
        if snapshot != "never":
            raise ConfigError(
                "the outbox source has no snapshot: it relays what SessionCapture(outbox=True) "
                "wrote; use snapshot='never'"
            )
        if end not in (None, "now"):
            raise ConfigError(f"end= of an outbox source is 'now' or None, not {end!r}")
        if not (poll > 0 and batch > 0):
            raise ConfigError(f"poll and batch must be positive, not {poll!r} and {batch!r}")
        _check_position(start)
        super().__init__(masked(url), start=start or "now", end=end, checkpoint=checkpoint)
        self.url = masked(url)
        self.tables = tuple(tables) if tables is not None else None
        self.poll = poll
        self.batch = batch
        self._engine = _engine(url)
        self._lock = threading.Lock()
        self._unacked: collections.deque[tuple[str, list[int]]] = collections.deque()
        self._done: list[int] = []  # ids acknowledged, to delete before the next read

    # ------------------------------------------------------------------ the contract

    def check(self) -> None:
        """Reach the database and create the outbox table if missing; `ConfigError` if not."""
        try:
            create_table(self._engine)
            with self._engine.connect() as conn:
                conn.execute(sa.select(OUTBOX.c.id).limit(1)).all()
        except sa.exc.SQLAlchemyError as e:
            raise _connect_error(self.url, e) from e

    def ack(self, position: str) -> None:
        """The consumer is done with the transaction at `position` and every one before it.

        Their rows are deleted before the next read. Unknown positions are ignored.
        """
        with self._lock:
            if all(p != position for p, _ in self._unacked):
                return
            while self._unacked:
                done, ids = self._unacked.popleft()
                self._done.extend(ids)
                if done == position:
                    break

    def close(self) -> None:
        """Release the connections (iteration also releases them when it ends)."""
        self._engine.dispose()

    def _iterate(self) -> Iterator[list[Change]]:
        start = self._resume_from()
        _check_position(start)  # one from a checkpoint is checked here
        try:
            create_table(self._engine)
            self._forget_delivered(start)
        except sa.exc.SQLAlchemyError as e:
            raise _connect_error(self.url, e) from e
        try:
            yield from self._reconnecting(self._poll, lambda: "the oldest row not relayed")
        finally:
            try:
                if self.checkpoint is not None:  # a consumer that stopped after saving it
                    saved = self.checkpoint.load()
                    if saved is not None:
                        self.ack(saved)
                self._delete_done()
            except sa.exc.SQLAlchemyError as e:  # delivered again next time: never lost
                log.warning("could not remove relayed rows from %s: %s", self.url, e)
            self._engine.dispose()  # no connection outlives an iteration

    def _poll(self) -> Generator[list[Change], None, None]:
        """Read the outbox until stopped (or empty, with ``end="now"``): `[]` after each read."""
        while not self._stopping.is_set():
            transactions = self._read()
            yield []  # read: the database answers
            if not transactions:
                if self.end == "now":
                    return
                self._stopping.wait(self.poll)
                continue
            for position, ids, changes in transactions:
                if not changes and self.checkpoint is not None:
                    # nothing to deliver, but the transactions handed out before it
                    # may not be delivered yet: its rows go with the last of them
                    with self._lock:
                        if self._unacked:
                            self._unacked[-1][1].extend(ids)
                        else:
                            self._done.extend(ids)
                    continue
                with self._lock:
                    self._unacked.append((position, ids))
                self.position = position
                if changes:
                    yield changes
                if self.checkpoint is None or not changes:
                    self.ack(position)  # the consumer came back for more: it is done
                if self._stopping.is_set():
                    return

    def _transient(self, error: Exception) -> bool:
        return isinstance(error, sa.exc.SQLAlchemyError) and _retryable(error)

    # ------------------------------------------------------------------ internals

    def _forget_delivered(self, start: str) -> None:
        """Delete the rows of the transaction a checkpoint says was delivered."""
        if not start.isdigit():
            return
        with self._engine.begin() as conn:
            txid = conn.execute(
                sa.select(OUTBOX.c.txid).where(OUTBOX.c.id == int(start))
            ).scalar_one_or_none()
            if txid is not None:
                conn.execute(
                    sa.delete(OUTBOX).where(OUTBOX.c.txid == txid, OUTBOX.c.id <= int(start))
                )

    def _delete_done(self) -> None:
        with self._lock:
            done, self._done = self._done, []
        try:
            with self._engine.begin() as conn:
                for at in range(0, len(done), _CHUNK):
                    conn.execute(sa.delete(OUTBOX).where(OUTBOX.c.id.in_(done[at : at + _CHUNK])))
        except BaseException:
            with self._lock:
                self._done[:0] = done  # deleted next time
            raise

    def _read(self) -> list[tuple[str, list[int], list[Change]]]:
        """The next transactions: (position, outbox ids, wanted changes), in position order."""
        if self.checkpoint is not None:
            saved = self.checkpoint.load()
            if saved is not None:
                self.ack(saved)
        self._delete_done()
        with self._lock:
            pending = {i for _, ids in self._unacked for i in ids}
        columns = (OUTBOX.c.id, OUTBOX.c.txid, OUTBOX.c.idx, OUTBOX.c.body)
        limit = self.batch + len(pending)
        complete: int | None = None  # with a full page: only transactions up to this id
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(*columns).order_by(OUTBOX.c.id).limit(limit)).all()
            txids = list({row.txid for row in rows if row.id not in pending})
            if len(rows) == limit and txids:
                # the page may end inside transactions: take those whose last id is at most
                # the smallest last id of the transactions it touches, read whole
                complete = min(
                    conn.execute(
                        sa.select(sa.func.max(OUTBOX.c.id))
                        .where(OUTBOX.c.txid.in_(txids))
                        .group_by(OUTBOX.c.txid)
                    ).scalars()
                )
                touched = sa.select(OUTBOX.c.txid).where(OUTBOX.c.id <= complete)
                rows = conn.execute(
                    sa.select(*columns).where(OUTBOX.c.txid.in_(touched)).order_by(OUTBOX.c.id)
                ).all()
        groups: dict[str, list[Any]] = {}
        for row in rows:
            if row.id not in pending:
                groups.setdefault(row.txid, []).append(row)
        found = []
        for members in groups.values():
            position = max(row.id for row in members)
            if complete is not None and position > complete:
                continue  # a transaction with a smaller last id may lie beyond the page
            members.sort(key=lambda row: row.idx)
            changes = [self._change(row.body, str(position)) for row in members]
            wanted = [c for c in changes if self._wants(c)]
            found.append((position, [row.id for row in members], wanted))
        found.sort(key=lambda item: item[0])
        return [(str(position), ids, changes) for position, ids, changes in found]

    def _change(self, body: str, position: str) -> Change:
        try:
            data = json.loads(body)  # raw: from_dict restores the tagged values
            data["position"] = position
            return Change.from_dict(data)
        except (TypeError, ValueError) as e:
            raise SourceError(f"{self.url}: an outbox row is not a rowcast Change: {e}") from e

    def _wants(self, change: Change) -> bool:
        if self.tables is None:
            return True
        full = f"{change.schema}.{change.table}"
        return any(
            fnmatch.fnmatchcase(full, p) or fnmatch.fnmatchcase(change.table, p)
            for p in self.tables
        )


def _check_position(position: str | None) -> None:
    if position is not None and position not in ("now", "start") and not position.isdigit():
        raise ConfigError(
            f"bad outbox position {position!r}: expected an outbox id such as '1042' "
            "(the position of a relayed change), 'now' or 'start'"
        )


def diagnose(url: str) -> Diagnosis:
    """``rowcast doctor`` for ``outbox+<url>``: the table exists and can be read (in a
    read-only session: doctor never writes)."""
    engine = _engine(url, read_only=True)
    target = masked(url)
    try:
        with engine.connect() as conn:
            version = str(conn.dialect.server_version_info or "")
            exists = sa.inspect(conn).has_table(OUTBOX.name)
            checks = [
                Check(
                    "table rowcast_outbox",
                    exists,
                    "present" if exists else "missing",
                    ""
                    if exists
                    else "run the app with SessionCapture(..., outbox=True) or the relay once "
                    "(either creates it), or rowcast.sources.outbox.create_table(engine)",
                )
            ]
            pending = "unknown"
            if exists:
                try:
                    pending = str(
                        conn.execute(sa.select(sa.func.count()).select_from(OUTBOX)).scalar()
                    )
                    checks.append(Check("read rowcast_outbox", True, "ok"))
                except sa.exc.SQLAlchemyError as e:
                    conn.rollback()
                    checks.append(
                        Check(
                            "read rowcast_outbox",
                            False,
                            str(getattr(e, "orig", e)).splitlines()[0],
                            "GRANT SELECT, DELETE ON rowcast_outbox TO the relay's user",
                        )
                    )
    except sa.exc.SQLAlchemyError as e:
        raise _connect_error(url, e) from e
    finally:
        engine.dispose()
    facts = [("database", f"{engine.dialect.name} {version}".strip()), ("pending rows", pending)]
    return Diagnosis(target, facts, checks, "rowcast can relay this database's outbox.")

"""Capture the row changes a SQLAlchemy `Session` makes, published after commit.

::

    capture = SessionCapture(Session, hub=hub)          # or a sessionmaker,
    ...                                                 # a scoped_session, one session
    capture.close()                                     # detach

What is captured, and how:

* Objects flushed by the unit of work (``add``, attribute changes, ``delete``,
  cascades and delete-orphans) are recorded by mapper events as each row is
  written, so autoincrement keys are known; images are plain dicts of column
  name -> value taken at flush time. Values the session does not hold
  (expired attributes, server defaults, ``flag_modified`` mutations) are read
  from the database inside the same transaction: before the UPDATE / DELETE
  for a before image, after the flush for an after image.
* ORM-enabled and Core ``session.execute(update(...))`` / ``delete(...)``
  statements: the affected rows are selected (``FOR UPDATE`` where the
  database has it) before the statement and again after it, by primary key.
  ``insert(...)`` statements whose rows carry their primary keys are captured
  the same way (an upsert that found its row is an ``update``).
* Not captured, with a `RowcastWarning` where the session can see it:
  ``session.execute(text("UPDATE ..."))``, Core ``update(table)`` run with a
  list of parameter sets, ``insert(...)`` whose rows leave their key to the
  database, bulk statements on tables without a primary key, bulk updates of
  primary keys, link rows of many-to-many ``secondary`` tables. Not captured
  either: the second UPDATE of ``relationship(post_update=True)``. The legacy
  ``Session.bulk_insert_mappings`` / ``bulk_update_mappings`` /
  ``bulk_save_objects`` bypass every hook and are not captured: use
  ``session.add_all()`` or ``session.execute(insert(Model), rows)``. Writes
  made by other programs are a job for a log source (binlog, logical
  replication, SQLite triggers).

Changes are published to the Hub after the transaction commits, in the order
the rows were written, as one transaction. ``rollback()`` drops what was
recorded; rolling back a SAVEPOINT drops only what was recorded inside it.
State lives in each session's ``info``, so sessions and threads never mix.
An update with no net column change publishes nothing. Each Change has
``source="sqlalchemy"``, ``ts`` the commit time, ``txid`` a fresh uuid per
transaction, ``position`` None; ``schema`` is the table's schema or the
connection's default one (``main`` for SQLite, the database for MySQL).

With ``outbox=True`` the changes are also written, as they are recorded, into
the table ``rowcast_outbox`` of the database the rows went to, inside the same
transaction (at the end of each flush, and after each captured bulk statement),
for `rowcast.sources.outbox.OutboxSource` to relay out of the process: see
that module for the table and the guarantees. A rollback, or a SAVEPOINT rolled
back, takes its outbox rows with it. Writing the outbox is part of the flush: a
change that cannot be written (a value the JSON codec refuses) fails the flush,
so the commit never happens without its changes. The Hub still gets every
change in-process after the commit, as without the outbox, with the same
``txid`` as the outbox rows (``ts`` differs: the outbox's is the flush time).
The table is created when missing, on a connection of its own, the first time
each engine is used (a migration can create it instead: ``OUTBOX``).
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Table, TextClause, event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import (
    ORMExecuteState,
    Session,
    SessionTransaction,
    UOWTransaction,
    scoped_session,
    sessionmaker,
)

from .._orm.bulk import capture_bulk
from .._orm.flush import install_mapper_events
from .._orm.rows import Plan, Record, fill_missing, schema_of
from .._orm.state import BEFORE, CAPTURES, ROUTES, Pending, warn
from ..change import Change
from ..errors import ConfigError
from ..hub import Hub

if TYPE_CHECKING:
    from ..checkpoint import Checkpoint

__all__ = ["SessionCapture"]

log = logging.getLogger("rowcast.sources.sqlalchemy")

_DML = re.compile(r"^\s*(insert|update|delete|replace|merge|upsert)\b", re.IGNORECASE)


class SessionCapture:
    """Publish every committed row change that sessions of `target` make.

    `target` is a `Session` subclass, a `sessionmaker`, a `scoped_session` or
    one `Session`. `tables` limits capture to these table names (``"name"`` or
    ``"schema.name"``). `outbox` also writes every change into the transaction's
    own ``rowcast_outbox`` table (see the module docstring). `close()` detaches it.

    It is also a `rowcast.sources.Source`, with no position (nothing to resume
    from: ``checkpoint`` is never read) and ``start="now"``: iterating yields the
    transactions committed from then on, as they commit (held in memory until
    taken), until `stop` or `close`; `run` publishes them on another hub too.
    """

    start: str | None = "now"
    position: str | None = None

    def __init__(
        self,
        target: type[Session] | sessionmaker[Any] | scoped_session[Any] | Session,
        hub: Hub | None = None,
        tables: Iterable[str] | None = None,
        outbox: bool = False,
    ) -> None:
        valid = isinstance(target, Session | sessionmaker | scoped_session) or (
            isinstance(target, type) and issubclass(target, Session)
        )
        if not valid:
            raise ConfigError(
                "SessionCapture needs a Session class, a sessionmaker, a scoped_session or "
                f"a Session, not {target!r}"
            )
        if isinstance(tables, str):
            raise ConfigError(f"tables= takes a list of table names, not the string {tables!r}")
        self.hub = hub if hub is not None else Hub()
        self.tables = frozenset(tables) if tables is not None else None
        self._target = target
        self.outbox = outbox
        self._wanted: dict[tuple[str, str | None], bool] = {}
        self._listeners: list[tuple[str, Callable[..., Any]]] = [
            ("after_begin", self._join),
            ("before_flush", self._before_flush),
            ("after_flush", self._after_flush),
            ("do_orm_execute", self._on_execute),
            ("after_commit", self._after_commit),
            ("after_soft_rollback", self._after_soft_rollback),
            ("after_transaction_end", self._after_transaction_end),
        ]
        if outbox:
            bind = _bind_of(target)
            if bind is not None:
                _create_outbox(bind)  # a database that cannot have one fails here, not later
            self._listeners.insert(0, ("after_begin", self._prepare_outbox))
        install_mapper_events()
        for name, fn in self._listeners:
            event.listen(target, name, fn)
        self.closed = False
        self.checkpoint: Checkpoint | None = None
        self._readers: list[queue.SimpleQueue[list[Change] | None]] = []  # of iterations
        self._readers_lock = threading.Lock()

    def close(self) -> None:
        """Detach from the target; changes not yet committed are not published."""
        if self.closed:
            return
        self.closed = True
        for name, fn in self._listeners:
            event.remove(self._target, name, fn)
        self.stop()

    def check(self) -> None:
        """Nothing to reach: the capture runs inside the app's own sessions."""

    def stop(self) -> None:
        """End every iteration (and `run`); the hub still gets each commit until `close`."""
        for reader in tuple(self._readers):
            reader.put(None)  # SimpleQueue.put: safe from a signal handler

    def __iter__(self) -> Iterator[list[Change]]:
        """The transactions committed from this call on, until `stop` or `close`."""
        reader: queue.SimpleQueue[list[Change] | None] = queue.SimpleQueue()
        with self._readers_lock:
            self._readers = [*self._readers, reader]
        transactions = self._take(reader)
        weakref.finalize(transactions, self._forget, reader)  # also if never started
        return transactions

    def _take(self, reader: queue.SimpleQueue[list[Change] | None]) -> Iterator[list[Change]]:
        try:
            while (changes := reader.get()) is not None:
                yield changes
        finally:
            self._forget(reader)

    def _forget(self, reader: queue.SimpleQueue[list[Change] | None]) -> None:
        with self._readers_lock:
            self._readers = [r for r in self._readers if r is not reader]

    def run(self, hub: Hub) -> None:
        """Publish the transactions committed from now on on `hub` too, until `stop`."""
        for changes in self:
            if hub is not self.hub:  # its own hub has them already
                hub.publish(changes)

    def __enter__(self) -> SessionCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wants(self, table: Table, schema: str | None) -> bool:
        """Whether rows of `table` (in `schema`) are captured."""
        if self.tables is None:
            return True
        key = (table.name, schema)
        wanted = self._wanted.get(key)
        if wanted is None:
            wanted = table.name in self.tables or f"{schema}.{table.name}" in self.tables
            self._wanted[key] = wanted
        return wanted

    # ------------------------------------------------------------ session events

    def _join(self, session: Session, *args: Any) -> Pending:
        pending: Pending = session.info.setdefault(CAPTURES, {}).setdefault(self, Pending())
        return pending

    def _before_flush(self, session: Session, *args: Any) -> None:
        pending = self._join(session)
        pending.at(session)
        if self.outbox:
            pending.mark = pending.end()
        session.info.pop(ROUTES, None)
        session.info.pop(BEFORE, None)  # a failed flush may have left before images

    def _after_flush(self, session: Session, flush_context: UOWTransaction) -> None:
        pending = session.info.get(CAPTURES, {}).get(self)
        if pending is None:
            return
        if pending.gaps:
            by_plan: dict[tuple[Connection, Plan], list[dict[str, Any]]] = {}
            for connection, plan, image in pending.gaps:
                by_plan.setdefault((connection, plan), []).append(image)
            pending.gaps.clear()
            for (connection, plan), images in by_plan.items():
                fill_missing(connection, plan, images)
        if self.outbox and not self.closed:
            self._write_outbox(session, pending, pending.since(pending.mark))

    def _prepare_outbox(self, session: Session, transaction: Any, connection: Connection) -> None:
        if not self.closed:
            _create_outbox(connection.engine)  # once per engine, before this one writes

    def _write_outbox(self, session: Session, pending: Pending, records: list[Record]) -> None:
        """Insert `records` into the outbox of the database each one's table lives in."""
        if not records:
            return
        from .outbox import write

        if pending.txid is None:
            pending.txid = uuid.uuid4().hex
        changes = _changes(records, time.time(), pending.txid)
        connections: dict[Table, Connection] = {}
        groups: dict[Connection, list[Change]] = {}
        for record, change in zip(records, changes, strict=True):
            table = record.plan.table
            connection = connections.get(table)
            if connection is None:
                connection = connections[table] = session.connection(
                    bind_arguments={"clause": table}
                )
            groups.setdefault(connection, []).append(change)
        for connection, group in groups.items():
            write(connection, pending.txid, pending.written, group)
            pending.written += len(group)

    def _after_commit(self, session: Session) -> None:
        if session.in_nested_transaction():
            return  # a SAVEPOINT was released: its changes wait for the real commit
        pending = session.info.get(CAPTURES, {}).pop(self, None)
        if pending is None or self.closed:
            return
        try:
            changes = _changes(pending.records(), time.time(), pending.txid or uuid.uuid4().hex)
        except Exception:  # never break a commit that the database already made
            log.exception("rowcast could not build the changes of a committed transaction")
            return
        self.hub.publish(changes)
        for reader in self._readers:
            reader.put(changes)

    def _after_soft_rollback(self, session: Session, previous: SessionTransaction) -> None:
        pending = session.info.get(CAPTURES, {}).get(self)
        if pending is None:
            return
        boundary: SessionTransaction | None = previous
        while boundary is not None and not (boundary.nested or boundary.parent is None):
            boundary = boundary.parent
        if boundary is not None:
            pending.discard(boundary)

    def _after_transaction_end(self, session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is None:
            captures = session.info.get(CAPTURES)
            if captures is not None:
                captures.pop(self, None)
            session.info.pop(BEFORE, None)

    # ------------------------------------------------------ bulk statements

    def _on_execute(self, state: ORMExecuteState) -> Any:
        statement = state.statement
        if isinstance(statement, TextClause):
            if _DML.match(statement.text):
                warn(f"raw SQL is not captured by SessionCapture: {statement.text[:60]!r}")
            return None
        if not (state.is_update or state.is_delete or state.is_insert):
            return None
        table = getattr(statement, "table", None)
        if not isinstance(table, Table):
            return None
        session = state.session
        connection = session.connection(bind_arguments=state.bind_arguments)
        schema = schema_of(table, connection)
        if not self.wants(table, schema):
            return None
        if session.autoflush and state.execution_options.get("autoflush", True):
            # SQLAlchemy autoflushes only after this hook: the rows selected before the
            # statement must include pending objects, or their update is lost
            session.flush()
        pending = self._join(session)
        pending.at(session)
        # a later capture's hook runs inside invoke_statement(): each records for itself
        if not self.outbox:
            return capture_bulk(state, table, connection, pending, schema)
        mark = pending.end()
        result = capture_bulk(state, table, connection, pending, schema)
        self._write_outbox(session, pending, pending.since(mark))
        return result


def _changes(records: Iterable[Record], ts: float, txid: str) -> list[Change]:
    """The Changes of a transaction's records."""
    return [
        Change(
            action,
            schema,
            plan.table.name,
            plan.pk_of(before if after is None else after),
            before,
            after,
            ts,
            txid,
            None,
            "sqlalchemy",
        )
        for action, plan, schema, before, after in records
    ]


def _bind_of(target: Any) -> Any:
    """The engine or connection sessions of `target` are bound to, when it says."""
    if isinstance(target, scoped_session):
        target = target.session_factory
    if isinstance(target, sessionmaker):
        return target.kw.get("bind")
    if isinstance(target, Session):
        return target.bind
    return None


def _create_outbox(bind: Any) -> None:
    from sqlalchemy import Engine

    from .outbox import create_table

    engine = bind if isinstance(bind, Engine) else getattr(bind, "engine", None)
    if not isinstance(engine, Engine):
        return
    try:
        create_table(engine)
    except SQLAlchemyError as e:
        raise ConfigError(
            f"SessionCapture(outbox=True) cannot create table rowcast_outbox in "
            f"{engine.url.render_as_string(hide_password=True)}: {getattr(e, 'orig', e)}"
        ) from e

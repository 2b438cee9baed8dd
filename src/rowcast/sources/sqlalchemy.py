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
  database, bulk statements on tables without a primary key. The legacy
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
"""

from __future__ import annotations

import itertools
import logging
import re
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from sqlalchemy import Connection, Table, TextClause, event, inspect, select
from sqlalchemy.orm import (
    InstanceState,
    Mapper,
    ORMExecuteState,
    Session,
    SessionTransaction,
    UOWTransaction,
    scoped_session,
    sessionmaker,
)

from ..change import Action, Change
from ..errors import ConfigError, RowcastWarning
from ..hub import Hub
from ._rows import MISSING, Plan, Record, fetch, fill_missing, mapper_keys, plans_of, table_plan

__all__ = ["SessionCapture"]

log = logging.getLogger("rowcast.sources.sqlalchemy")

_CAPTURES = "rowcast.captures"  # session.info: {SessionCapture: _Pending}
_BEFORE = "rowcast.before"  # session.info: {InstanceState: [before images]}
_ROUTES = "rowcast.routes"  # session.info, for one flush: {(Mapper, Connection): [_Route]}
_DML = re.compile(r"^\s*(insert|update|delete|replace|merge|upsert)\b", re.IGNORECASE)


class _Pending:
    """What one capture recorded in one session's open transaction, by savepoint."""

    __slots__ = ("frames", "gaps", "tx")

    def __init__(self) -> None:
        self.frames: list[tuple[SessionTransaction, list[Record]]] = []
        # after images with values only the database knows, filled after the flush
        self.gaps: list[tuple[Connection, Plan, dict[str, Any]]] = []
        self.tx: SessionTransaction | None = None  # innermost transaction of this flush

    def at(self, session: Session) -> None:
        """Record into the innermost open transaction (root or SAVEPOINT) from now on."""
        self.tx = session.get_nested_transaction() or session.get_transaction()

    def add(self, record: Record) -> None:
        tx = self.tx
        assert tx is not None
        if not self.frames or self.frames[-1][0] is not tx:
            self.frames.append((tx, []))
        self.frames[-1][1].append(record)

    def discard(self, boundary: SessionTransaction) -> None:
        """Forget what was recorded in `boundary` and the savepoints inside it."""

        def inside(tx: SessionTransaction | None) -> bool:
            while tx is not None:
                if tx is boundary:
                    return True
                tx = tx.parent
            return False

        self.frames = [frame for frame in self.frames if not inside(frame[0])]

    def records(self) -> Iterable[Record]:
        for _, records in self.frames:
            yield from records


class SessionCapture:
    """Publish every committed row change that sessions of `target` make.

    `target` is a `Session` subclass, a `sessionmaker`, a `scoped_session` or
    one `Session`. `tables` limits capture to these table names (``"name"`` or
    ``"schema.name"``). `close()` detaches it.
    """

    def __init__(
        self,
        target: type[Session] | sessionmaker[Any] | scoped_session[Any] | Session,
        hub: Hub | None = None,
        tables: Iterable[str] | None = None,
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
        _install_mapper_events()
        for name, fn in self._listeners:
            event.listen(target, name, fn)
        self.closed = False

    def close(self) -> None:
        """Detach from the target; changes not yet committed are not published."""
        if self.closed:
            return
        self.closed = True
        for name, fn in self._listeners:
            event.remove(self._target, name, fn)

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

    def _join(self, session: Session, *args: Any) -> _Pending:
        pending: _Pending = session.info.setdefault(_CAPTURES, {}).setdefault(self, _Pending())
        return pending

    def _before_flush(self, session: Session, *args: Any) -> None:
        self._join(session).at(session)
        session.info.pop(_ROUTES, None)
        session.info.pop(_BEFORE, None)  # a failed flush may have left before images
        _warn_links(session)

    def _after_flush(self, session: Session, flush_context: UOWTransaction) -> None:
        pending = session.info.get(_CAPTURES, {}).get(self)
        if pending is None or not pending.gaps:
            return
        by_plan: dict[tuple[Connection, Plan], list[dict[str, Any]]] = {}
        for connection, plan, image in pending.gaps:
            by_plan.setdefault((connection, plan), []).append(image)
        pending.gaps.clear()
        for (connection, plan), images in by_plan.items():
            fill_missing(connection, plan, images)

    def _after_commit(self, session: Session) -> None:
        if session.in_nested_transaction():
            return  # a SAVEPOINT was released: its changes wait for the real commit
        pending = session.info.get(_CAPTURES, {}).pop(self, None)
        if pending is None or self.closed:
            return
        try:
            ts, txid = time.time(), uuid.uuid4().hex
            changes = [
                Change(
                    r.action,
                    r.schema,
                    r.plan.table.name,
                    r.plan.pk_of(r.after if r.after is not None else r.before),
                    r.before,
                    r.after,
                    ts,
                    txid,
                    None,
                    "sqlalchemy",
                )
                for r in pending.records()
            ]
        except Exception:  # never break a commit that the database already made
            log.exception("rowcast could not build the changes of a committed transaction")
            return
        self.hub.publish(changes)

    def _after_soft_rollback(self, session: Session, previous: SessionTransaction) -> None:
        pending = session.info.get(_CAPTURES, {}).get(self)
        if pending is None:
            return
        boundary: SessionTransaction | None = previous
        while boundary is not None and not (boundary.nested or boundary.parent is None):
            boundary = boundary.parent
        if boundary is not None:
            pending.discard(boundary)

    def _after_transaction_end(self, session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is None:
            captures = session.info.get(_CAPTURES)
            if captures is not None:
                captures.pop(self, None)
            session.info.pop(_BEFORE, None)

    # ------------------------------------------------------ bulk statements

    def _on_execute(self, state: ORMExecuteState) -> Any:
        statement = state.statement
        if isinstance(statement, TextClause):
            if _DML.match(statement.text):
                _warn(f"raw SQL is not captured by SessionCapture: {statement.text[:60]!r}")
            return None
        if not (state.is_update or state.is_delete or state.is_insert):
            return None
        table = getattr(statement, "table", None)
        if not isinstance(table, Table):
            return None
        session = state.session
        connection = session.connection(bind_arguments=state.bind_arguments)
        schema = _schema(table, connection)
        if not self.wants(table, schema):
            return None
        pending = self._join(session)
        pending.at(session)
        # a later capture's hook runs inside invoke_statement(): each records for itself
        return _capture_bulk(state, table, connection, pending, schema)


# -------------------------------------------------------------------- helpers


def _warn(message: str) -> None:
    """Warn, pointing at the caller's line rather than inside SQLAlchemy or rowcast."""
    frame, level = sys._getframe(1), 2  # 2: the caller of _warn
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(
        ("sqlalchemy.", "rowcast.")
    ):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, RowcastWarning, stacklevel=level)


_links: dict[Mapper[Any], tuple[str, ...]] = {}


def _warn_links(session: Session) -> None:
    """Many-to-many link rows are written without mapper events: say so, never drop silently."""
    deleted = session.deleted
    for obj in itertools.chain(session.new, session.dirty, deleted):
        state: InstanceState[Any] = inspect(obj)
        keys = _links.get(state.mapper)
        if keys is None:
            keys = _links[state.mapper] = tuple(
                r.key
                for r in state.mapper.relationships
                if r.secondary is not None and not r.viewonly
            )
        for key in keys:
            if obj in deleted or state.attrs[key].history.has_changes():
                table = state.mapper.relationships[key].secondary
                _warn(
                    f"rows of the many-to-many table {getattr(table, 'name', table)!r} are not "
                    "captured; map it as a class (an association object) to capture them"
                )
                return


def _schema(table: Table, connection: Connection) -> str | None:
    return table.schema or connection.dialect.default_schema_name


def _capture_bulk(
    state: ORMExecuteState,
    table: Table,
    connection: Connection,
    pending: _Pending,
    schema: str | None,
) -> Any:
    """Run a bulk INSERT / UPDATE / DELETE, recording the rows it touched."""
    plan = table_plan(table, state.bind_mapper)
    statement: Any = state.statement
    params = state.parameters
    if not plan.pk:
        _warn(f"bulk statement on {table.name!r}, which has no primary key, is not captured")
        return None
    if state.is_insert or (state.is_executemany and statement.whereclause is None):
        # rows named by their primary keys in the parameters (ORM bulk by pk, insert)
        rows: Any = params if isinstance(params, list) else [params or {}]
        if state.is_insert and not rows[0]:
            rows = [dict(statement.compile().params)]  # insert(...).values(...)
        keys = [_pk_from_params(plan, row) for row in rows]
        if any(k is None for k in keys):
            what = "INSERT whose primary keys are left to the database (or a multi-row VALUES)"
            if not state.is_insert:
                what = "UPDATE with several parameter sets that do not all name the primary key"
            _warn(f"bulk {what} on {table.name!r} is not captured")
            return None
        old = fetch(connection, plan, keys)
    elif state.is_executemany:
        _warn(f"bulk UPDATE/DELETE on {table.name!r} with several parameter sets is not captured")
        return None
    elif state.is_update and _sets_primary_key(statement, plan):
        _warn(f"bulk UPDATE that changes primary keys of {table.name!r} is not captured")
        return None
    else:
        # in key order, so that the changes of one statement come out the same every time
        query = select(*[table.c[n] for n, _ in plan.columns]).order_by(
            *[table.c[n] for n in plan.pk]
        )
        if statement.whereclause is not None:
            query = query.where(statement.whereclause)
        rows_before = connection.execute(query.with_for_update(), params or {})
        old = {}
        names = [n for n, _ in plan.columns]
        for row in rows_before:
            image = dict(zip(names, row, strict=True))
            old[plan.pk_of(image)] = image
        keys = list(old)
    result: Any = state.invoke_statement()
    if statement.returning_column_descriptions:
        result = result.freeze()()  # read RETURNING rows now: the queries below share the cursor
    if state.is_delete:
        new: dict[Any, dict[str, Any]] = {}
    else:
        new = fetch(connection, plan, keys)
    for key in keys:
        before, after = old.get(key), new.get(key)
        if after is None and before is None:
            continue
        if after is None:
            action = Action.DELETE
        elif before is None:
            action = Action.WRITE
        elif before == after:
            continue
        else:
            action = Action.UPDATE
        pending.add(Record(action, plan, schema, before, after))
    return result


def _sets_primary_key(statement: Any, plan: Plan) -> bool:
    values = getattr(statement, "_values", None) or {}  # the SET clause of update().values()
    names = {getattr(key, "name", None) or getattr(key, "key", key) for key in values}
    return not names.isdisjoint(plan.pk)


def _pk_from_params(plan: Plan, row: Mapping[str, Any]) -> Any:
    values = []
    for name in plan.pk:
        key = next((k for n, k in plan.columns if n == name), name)
        if key in row:
            values.append(row[key])
        elif name in row:
            values.append(row[name])
        else:
            return None
    return values[0] if len(values) == 1 else tuple(values)


# ------------------------------------------------------ mapper (flush) events

_installed = False


def _install_mapper_events() -> None:
    """Listen to every mapper's flush events once; they look up captures per session."""
    global _installed
    if _installed:
        return
    _installed = True
    event.listen(Mapper, "before_update", _before_update, raw=True)
    event.listen(Mapper, "before_delete", _before_delete, raw=True)
    event.listen(Mapper, "after_insert", _after_insert, raw=True)
    event.listen(Mapper, "after_update", _after_update, raw=True)
    event.listen(Mapper, "after_delete", _after_delete, raw=True)


def _captures_of(state: InstanceState[Any]) -> dict[SessionCapture, _Pending] | None:
    session = state.session
    return session.info.get(_CAPTURES) or None if session is not None else None


def _before_update(mapper: Mapper[Any], connection: Connection, state: InstanceState[Any]) -> None:
    if _captures_of(state) is not None and not mapper_keys(mapper).isdisjoint(
        state.committed_state
    ):
        _stash_before(mapper, connection, state)


def _before_delete(mapper: Mapper[Any], connection: Connection, state: InstanceState[Any]) -> None:
    if _captures_of(state) is not None:
        _stash_before(mapper, connection, state)


def _stash_before(mapper: Mapper[Any], connection: Connection, state: InstanceState[Any]) -> None:
    """Keep the row as it is in the database now, before the UPDATE or DELETE runs."""
    images = []
    for plan in plans_of(mapper):
        image = plan.image(state.dict, state.committed_state)
        if MISSING in image.values():
            for name, value in zip(plan.pk, state.identity or (), strict=False):
                if image[name] is MISSING:
                    image[name] = value
            fill_missing(connection, plan, [image])
        images.append(image)
    session = state.session
    assert session is not None
    session.info.setdefault(_BEFORE, {})[state] = images


def _pop_before(state: InstanceState[Any]) -> list[dict[str, Any]] | None:
    session = state.session
    stash = session.info.get(_BEFORE) if session is not None else None
    return stash.pop(state, None) if stash else None


class _Route(NamedTuple):
    """Where rows of one table of one mapper go during a flush."""

    nth: int  # the table's place in mapper.tables
    plan: Plan
    schema: str | None
    pendings: list[_Pending]  # of the captures that want the table


def _routes(
    session: Session, mapper: Mapper[Any], connection: Connection, action: Action
) -> list[_Route]:
    """The routes of `mapper`'s rows, worked out once per flush (rows are many)."""
    cache: dict[tuple[Mapper[Any], Connection], list[_Route]] = session.info.setdefault(_ROUTES, {})
    routes = cache.get((mapper, connection))
    if routes is None:
        routes = []
        captures = [(c, p) for c, p in session.info.get(_CAPTURES, {}).items() if not c.closed]
        for index, plan in enumerate(plans_of(mapper)):
            schema = _schema(plan.table, connection)
            pendings = [p for c, p in captures if c.wants(plan.table, schema)]
            if pendings:
                routes.append(_Route(index, plan, schema, pendings))
        cache[(mapper, connection)] = routes
    return routes[::-1] if action is Action.DELETE else routes  # subclass rows go first


def _record(
    action: Action,
    mapper: Mapper[Any],
    connection: Connection,
    state: InstanceState[Any],
    befores: list[dict[str, Any]] | None,
) -> None:
    """Record the row(s) `state` was written to, for every capture of its session."""
    session = state.session
    if session is None or not session.info.get(_CAPTURES):
        return
    values = state.dict
    for index, plan, schema, pendings in _routes(session, mapper, connection, action):
        before = befores[index] if befores is not None else None
        after = None
        if action is not Action.DELETE:
            after = plan.image(values)
            if not values.keys() >= plan.keys:
                if before is not None:
                    committed = state.committed_state
                    for name, key in plan.columns:
                        if (
                            after[name] is MISSING
                            and key not in committed
                            and name not in plan.generated
                        ):
                            after[name] = before[name]  # unchanged, and no onupdate
                if MISSING in after.values():
                    pendings[0].gaps.append((connection, plan, after))
            if after == before:
                continue  # marked dirty, no net change
        record = Record(action, plan, schema, before, after)
        for pending in pendings:
            pending.add(record)


def _after_insert(mapper: Mapper[Any], connection: Connection, state: InstanceState[Any]) -> None:
    _record(Action.WRITE, mapper, connection, state, None)


def _after_update(mapper: Mapper[Any], connection: Connection, state: InstanceState[Any]) -> None:
    befores = _pop_before(state)
    if befores is not None:
        _record(Action.UPDATE, mapper, connection, state, befores)


def _after_delete(mapper: Mapper[Any], connection: Connection, state: InstanceState[Any]) -> None:
    befores = _pop_before(state)
    if befores is not None:
        _record(Action.DELETE, mapper, connection, state, befores)

"""Revision rows written by the session itself, in the transaction of the change.

Private to `rowcast.audit`. The ORM row capture it shares with
`rowcast.sources.sqlalchemy` (`rowcast._orm`) records what each flush and each
bulk statement wrote (after images with autoincrement keys and server defaults
read back); these hooks then insert the revision rows with Core statements on
the session's own connection: after the flush (``after_flush``, never
``session.add`` mid-flush) and right after a bulk statement. Being in the same
transaction, a rollback, or the rollback of a SAVEPOINT, takes the revisions
along with the change.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Table, event, inspect
from sqlalchemy.orm import (
    Mapper,
    ORMExecuteState,
    Session,
    SessionTransaction,
    UOWTransaction,
)

from .._orm.bulk import capture_bulk
from .._orm.flush import install_mapper_events
from .._orm.rows import MISSING, Plan, fill_missing, schema_of
from .._orm.state import BEFORE, CAPTURES, ROUTES, Pending
from ..change import Action
from ._clock import clock
from ._tables import Audited, audited_table, generation

TXID = "rowcast.audit.txid"  # session.info: the rev_txid of the open transaction


class _AuditCapture:
    """What the shared flush / bulk hooks record for: rows of versioned tables."""

    closed = False

    def wants(self, table: Table, schema: str | None) -> bool:
        return audited_table(table) is not None


CAPTURE = _AuditCapture()
_installed = [False]


def install() -> None:
    """Listen on every session, once (called when the first table is versioned)."""
    if _installed[0]:
        return
    _installed[0] = True
    install_mapper_events()
    event.listen(Session, "before_flush", _before_flush)
    event.listen(Session, "after_flush", _after_flush)
    event.listen(Session, "do_orm_execute", _on_execute)
    event.listen(Session, "after_transaction_end", _after_transaction_end)


# ------------------------------------------------------------------ which flushes


_needs: dict[type, bool] = {}
_needs_generation = [-1]


def _mapper_needs(mapper: Mapper[Any], seen: set[Mapper[Any]]) -> bool:
    """Whether flushing `mapper`'s objects can write a versioned row (cascades included)."""
    if mapper in seen:
        return False
    seen.add(mapper)
    if any(audited_table(table) is not None for table in mapper.tables):
        return True
    for relationship in mapper.relationships:
        for target in relationship.mapper.self_and_descendants:
            if _mapper_needs(target, seen):
                return True
    return False


def _class_needs(cls: type) -> bool:
    if _needs_generation[0] != generation():
        _needs.clear()
        _needs_generation[0] = generation()
    needs = _needs.get(cls)
    if needs is None:
        mapper: Any = inspect(cls, raiseerr=False)
        needs = _needs[cls] = isinstance(mapper, Mapper) and _mapper_needs(mapper, set())
    return needs


def _flush_needs_audit(session: Session) -> bool:
    return any(
        _class_needs(type(obj))
        for obj in itertools.chain(session.new, session.dirty, session.deleted)
    )


# ------------------------------------------------------------------ session events


def _join(session: Session) -> Pending:
    pending: Pending = session.info.setdefault(CAPTURES, {}).setdefault(CAPTURE, Pending())
    pending.frames.clear()  # a flush that failed may have left records
    pending.gaps.clear()
    pending.at(session)
    return pending


def _before_flush(session: Session, *args: Any) -> None:
    session.info.pop(ROUTES, None)  # routes name the captures of one flush
    session.info.pop(BEFORE, None)
    if _flush_needs_audit(session):
        _join(session)
    else:  # spare the flush the capture's work (before images) for unversioned rows
        captures = session.info.get(CAPTURES)
        if captures:
            captures.pop(CAPTURE, None)


def _after_flush(session: Session, flush_context: UOWTransaction) -> None:
    pending = session.info.get(CAPTURES, {}).get(CAPTURE)
    if pending is None or not pending.frames:
        return

    def connection_for(table: Table) -> Connection:
        return session.connection(bind_arguments={"clause": table})

    by_plan: dict[tuple[Connection, Plan], list[dict[str, Any]]] = {}
    for connection, plan, image in pending.gaps:
        by_plan.setdefault((connection, plan), []).append(image)
    pending.gaps.clear()
    for (connection, plan), images in by_plan.items():
        fill_missing(connection, plan, images)
    write(session, pending, connection_for)


def _on_execute(state: ORMExecuteState) -> Any:
    if not (state.is_update or state.is_delete or state.is_insert):
        return None
    table = getattr(state.statement, "table", None)
    if not isinstance(table, Table) or audited_table(table) is None:
        return None
    session = state.session
    if session.autoflush and state.execution_options.get("autoflush", True):
        # SQLAlchemy autoflushes only after these hooks: the rows selected before the
        # statement must include pending objects
        session.flush()
    connection = session.connection(bind_arguments=state.bind_arguments)
    pending = _join(session)
    result = capture_bulk(state, table, connection, pending, schema_of(table, connection))
    if result is None:  # not capturable (it warned): the statement runs as usual
        pending.frames.clear()
        return None
    write(session, pending, lambda table: connection)
    return result


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(TXID, None)
        captures = session.info.get(CAPTURES)
        if captures:
            captures.pop(CAPTURE, None)


# ------------------------------------------------------------------ writing


def write(
    session: Session, pending: Pending, connection_for: Callable[[Table], Connection]
) -> None:
    """Insert one revision row per recorded row change, in order, then forget them."""
    records = list(pending.records())
    pending.frames.clear()
    if not records:
        return
    txid = session.info.get(TXID)
    if txid is None:
        txid = session.info[TXID] = uuid.uuid4().hex
    unfilled: dict[Plan, list[dict[str, Any]]] = {}
    for record in records:
        if record.after is not None and MISSING in record.after.values():
            unfilled.setdefault(record.plan, []).append(record.after)
    for plan, images in unfilled.items():  # gaps another capture of the session held
        fill_missing(connection_for(plan.table), plan, images)
    # (audited, new row or None for a delete, the old key of a delete)
    todo: list[tuple[Audited, dict[str, Any] | None, dict[str, Any] | None]] = []
    for action, plan, _, before, after in records:
        audited = audited_table(plan.table)
        assert audited is not None
        if action is Action.DELETE:
            todo.append((audited, None, before))
            continue
        if action is Action.UPDATE and audited.moved(before, after):
            todo.append((audited, None, before))  # the row is gone from its old key
        todo.append((audited, after, None))
    start = clock.take(len(todo))
    rows: dict[Audited, list[dict[str, Any]]] = {}
    for n, (audited, values, key) in enumerate(todo):
        row = audited.row(values, key, start + n * 1e-6, txid)
        rows.setdefault(audited, []).append(row)
    for audited, batch in rows.items():
        connection_for(audited.table).execute(audited.insert, batch)

"""Capture of bulk statements run through ``session.execute()``.

The rows an INSERT / UPDATE / DELETE statement touches are selected before
and after it, by primary key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Table, false, select, update
from sqlalchemy.orm import ORMExecuteState

from ..change import Action
from .rows import Plan, Record, fetch, table_plan
from .state import Pending, warn


def capture_bulk(
    state: ORMExecuteState,
    table: Table,
    connection: Connection,
    pending: Pending,
    schema: str | None,
) -> Any:
    """Run a bulk INSERT / UPDATE / DELETE, recording the rows it touched."""
    plan = table_plan(table, state.bind_mapper)
    statement: Any = state.statement
    params = state.parameters
    if not plan.pk:
        warn(f"bulk statement on {table.name!r}, which has no primary key, is not captured")
        return None
    _lock_for_write(connection, table, plan)
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
            warn(f"bulk {what} on {table.name!r} is not captured")
            return None
        old = fetch(connection, plan, keys)
    elif state.is_executemany:
        warn(f"bulk UPDATE/DELETE on {table.name!r} with several parameter sets is not captured")
        return None
    elif state.is_update and _sets_primary_key(statement, plan):
        warn(f"bulk UPDATE that changes primary keys of {table.name!r} is not captured")
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


def _lock_for_write(connection: Connection, table: Table, plan: Plan) -> None:
    """On SQLite, take the write lock before the rows are read (as FOR UPDATE does
    elsewhere; SQLite ignores it): read first, the statement's write would be the upgrade
    of a read, which SQLite refuses at once while another connection writes ("database is
    locked", the busy timeout never waited), where the statement alone waits its turn.
    A write that changes no row takes it: ``UPDATE t SET pk = pk WHERE 0 = 1``."""
    if connection.dialect.name != "sqlite":
        return
    key = table.c[plan.pk[0]]
    connection.execute(update(table).where(false()).values({key: key}))


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

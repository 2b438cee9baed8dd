"""Row images of mapped objects and tables, for the SQLAlchemy session capture.

How an ORM object becomes a ``{column: value}`` dict, which
values the session cannot know without asking the database, and how those
are fetched in one query per table.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import enum
import operator
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Connection, Table, select, tuple_
from sqlalchemy.orm import Mapper
from sqlalchemy.orm.base import NO_VALUE
from sqlalchemy.orm.exc import UnmappedColumnError

from ..change import Action

MISSING: Any = object()
"""Marks a column whose value the session does not hold (expired or never loaded)."""

_CHUNK = 500


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """How to read one table's row out of an instance of one mapper."""

    table: Table
    columns: tuple[tuple[str, str], ...]  # (column name, attribute key)
    pk: tuple[str, ...]  # primary key column names
    keys: frozenset[str]  # attribute keys of `columns`
    pk_of: Callable[[Any], Any]  # image -> pk value (a tuple when composite)
    generated: frozenset[str]  # columns the database sets on UPDATE (onupdate, triggers)
    mutable: tuple[str, ...]  # columns whose values can change in place (JSON, arrays...)

    def image(
        self, values: dict[str, Any], committed: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The row as the instance holds it; `committed` gives old values (before image).

        Values the instance does not hold are `MISSING`.
        """
        if not committed and values.keys() >= self.keys:  # the common case
            image = {name: values[key] for name, key in self.columns}
        elif committed:
            image = {}
            for name, key in self.columns:
                value = (
                    committed.get(key, MISSING) if key in committed else values.get(key, MISSING)
                )
                image[name] = MISSING if value is NO_VALUE else value
        else:
            image = {name: values.get(key, MISSING) for name, key in self.columns}
        for name in self.mutable:  # a later in-place change must not reach this image
            value = image[name]
            if value is not None and value is not MISSING:
                image[name] = copy.deepcopy(value)
        return image


_plans: dict[Mapper[Any], tuple[Plan, ...]] = {}
_keys: dict[Mapper[Any], frozenset[str]] = {}
_plans_lock = threading.Lock()


def _no_pk(image: dict[str, Any]) -> None:
    return None


_IMMUTABLE = (int, float, str, bytes, bool, Decimal, dt.date, dt.time, dt.timedelta, uuid.UUID)


def _is_mutable(column: ColumnElement[Any]) -> bool:
    """Whether values of `column` are Python objects that can change in place."""
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return True
    return not (issubclass(python_type, _IMMUTABLE) or issubclass(python_type, enum.Enum))


def _make_plan(table: Table, columns: list[tuple[str, str]], pk: tuple[str, ...]) -> Plan:
    keys = frozenset(key for _, key in columns)
    generated = frozenset(
        name
        for name, _ in columns
        if table.c[name].onupdate is not None or table.c[name].server_onupdate is not None
    )
    mutable = tuple(name for name, _ in columns if _is_mutable(table.c[name]))
    pk_of = operator.itemgetter(*pk) if pk else _no_pk
    return Plan(table, tuple(columns), pk, keys, pk_of, generated, mutable)


def plans_of(mapper: Mapper[Any]) -> tuple[Plan, ...]:
    """The (cached) `Plan` of each table `mapper` writes, base table first."""
    plans = _plans.get(mapper)
    if plans is not None:
        return plans
    made = []
    for table in mapper.tables:
        assert isinstance(table, Table)
        columns = []
        for column in table.columns:
            try:
                prop = mapper.get_property_by_column(column)
            except UnmappedColumnError:
                continue
            columns.append((column.name, prop.key))
        pk = tuple(c.name for c in table.primary_key.columns) or tuple(
            c.name for c in mapper.primary_key if c.table is table
        )
        made.append(_make_plan(table, columns, pk))
    with _plans_lock:
        plans = _plans[mapper] = tuple(made)
        _keys[mapper] = frozenset().union(*(plan.keys for plan in plans))
    return plans


def mapper_keys(mapper: Mapper[Any]) -> frozenset[str]:
    """Attribute keys of every column `mapper` maps (to tell column changes apart)."""
    keys = _keys.get(mapper)
    if keys is None:
        plans_of(mapper)
        keys = _keys[mapper]
    return keys


def table_plan(table: Table, mapper: Mapper[Any] | None) -> Plan:
    """A plan for rows of `table` read straight from the database (bulk statements)."""
    if mapper is not None:
        for plan in plans_of(mapper):
            if plan.table.name == table.name and plan.table.schema == table.schema:
                return plan
    columns = [(c.name, c.name) for c in table.columns]
    return _make_plan(table, columns, tuple(c.name for c in table.primary_key.columns))


def schema_of(table: Table, connection: Connection) -> str | None:
    """The table's schema, or the connection's default one (``main`` on SQLite)."""
    return table.schema or connection.dialect.default_schema_name


def fetch(connection: Connection, plan: Plan, pks: Iterable[Any]) -> dict[Any, dict[str, Any]]:
    """Rows of `plan.table` by primary key, as images keyed by pk."""
    table = plan.table
    key_cols = [table.c[name] for name in plan.pk]
    cols = [table.c[name] for name, _ in plan.columns]
    found: dict[Any, dict[str, Any]] = {}
    wanted = list(dict.fromkeys(pks))
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        where = key_cols[0].in_(chunk) if len(key_cols) == 1 else tuple_(*key_cols).in_(chunk)
        for row in connection.execute(select(*cols).where(where)):
            image = dict(zip([c.name for c in cols], row, strict=True))
            found[plan.pk_of(image)] = image
    return found


def fill_missing(connection: Connection, plan: Plan, images: Sequence[dict[str, Any]]) -> None:
    """Replace `MISSING` values in `images` by the database's, in one query per chunk."""
    gaps = [image for image in images if MISSING in image.values()]
    if not gaps:
        return
    rows = fetch(connection, plan, (plan.pk_of(image) for image in gaps))
    for image in gaps:
        row = rows.get(plan.pk_of(image), {})
        for name, value in image.items():
            if value is MISSING:
                image[name] = row.get(name)


class Record(NamedTuple):
    """One captured row change, before the commit gives it a time and a txid."""

    action: Action
    plan: Plan
    schema: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None

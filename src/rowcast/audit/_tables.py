"""The versioned tables: one `Audited` entry per table, and the `Revision` rows.

Private to `rowcast.audit`. Every versioned table gets one `Audited` entry that
says where its revisions go (the ``<table>_rev`` table and its mapped class)
and how a row of it becomes a revision row; the functions below find it by
model table, by name, by revision table name or by model class.
`rowcast.audit._model` makes the entries (`Versioned`, `versioned()`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, ClassVar

from sqlalchemy import Table
from sqlalchemy.orm import Mapper

__all__ = [
    "REV_COLUMNS",
    "Audited",
    "Revision",
    "add",
    "audited_model",
    "audited_name",
    "audited_rev_name",
    "audited_table",
    "generation",
]

REV_COLUMNS = ("rev_id", "rev_created", "rev_isdelete", "rev_txid")


class Audited:
    """One versioned table: the model table, its revision table and revision class."""

    __slots__ = ("columns", "insert", "mapper", "pk", "rev_class", "rev_table", "table")

    def __init__(
        self, mapper: Mapper[Any], table: Table, rev_table: Table, rev_class: type[Revision]
    ) -> None:
        self.mapper = mapper
        self.table = table
        self.rev_table = rev_table
        self.rev_class = rev_class
        self.columns = tuple(c.name for c in table.columns)  # copied into every revision
        self.pk = tuple(c.name for c in table.primary_key.columns)
        self.insert = rev_table.insert()

    def row(
        self,
        values: Mapping[str, Any] | None,
        key: Mapping[str, Any] | None,
        created: float,
        txid: str | None,
        rev_id: str | None = None,
    ) -> dict[str, Any]:
        """The revision row of a write / update (`values`: the new row) or a delete (`key`)."""
        if values is not None:
            get = values.get
            row = {name: get(name) for name in self.columns}
        else:
            assert key is not None
            row = dict.fromkeys(self.columns)
            for name in self.pk:
                row[name] = key.get(name)
        row["rev_id"] = rev_id or str(uuid.uuid4())
        row["rev_created"] = created
        row["rev_isdelete"] = values is None
        row["rev_txid"] = txid
        return row

    def moved(self, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> bool:
        """Whether an update changed the row's primary key (its old key then ends in a delete)."""
        if before is None or after is None:
            return False
        return any(
            name in before and name in after and before[name] != after[name] for name in self.pk
        )


class Revision:
    """Base class of every ``Model.Revision``: one row of a ``<table>_rev`` table.

    Attributes are ``rev_id``, ``rev_created``, ``rev_isdelete``, ``rev_txid``
    and one per column of the model's table, named after the column.
    """

    __audited__: ClassVar[Audited]

    def __repr__(self) -> str:
        names = (*REV_COLUMNS, *self.__audited__.columns)
        shown = ", ".join(f"{name}={getattr(self, name, None)!r}" for name in names)
        return f"{type(self).__name__}({shown})"


# model table -> Audited; the latest declaration of a (schema, name) wins by name
_by_table: dict[Table, Audited] = {}
_by_name: dict[tuple[str | None, str], Audited] = {}
_by_rev_name: dict[tuple[str | None, str], Audited] = {}
_generation = [0]  # bumped on every registration: caches keyed on it start over


def add(audited: Audited) -> None:
    """Record a newly versioned table (`rowcast.audit._model.register` makes them)."""
    table, rev_table = audited.table, audited.rev_table
    _by_table[table] = audited
    _by_name[(table.schema, table.name)] = audited
    _by_rev_name[(rev_table.schema, rev_table.name)] = audited
    _generation[0] += 1


def generation() -> int:
    """Changes whenever a table is versioned (for caches of "does this need audit")."""
    return _generation[0]


def audited_table(table: Any) -> Audited | None:
    """The `Audited` entry of a model table (None when it is not versioned)."""
    return _by_table.get(table)


def audited_name(schema: str | None, name: str) -> Audited | None:
    """The versioned table called `name` in `schema` (as declared on the model)."""
    return _by_name.get((schema, name))


def audited_rev_name(schema: str | None, name: str) -> Audited | None:
    """The versioned table whose revision table is called `name` in `schema`."""
    return _by_rev_name.get((schema, name))


def audited_model(model: Any) -> Audited:
    """The `Audited` entry of a versioned model class; `TypeError` for anything else."""
    found = None
    if isinstance(model, type):
        table = getattr(model, "__table__", None)
        found = _by_table.get(table) if isinstance(table, Table) else None
    if found is None:
        raise TypeError(
            f"{model!r} is not a versioned model: inherit rowcast.audit.Versioned "
            "(or call rowcast.audit.versioned(cls) once it is mapped)"
        )
    return found

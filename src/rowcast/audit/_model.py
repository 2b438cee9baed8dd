"""Revision tables: the `Versioned` mixin, `versioned()`, and the registry behind them.

Private to `rowcast.audit`. Every versioned table gets one `Audited` entry that
says where its revisions go (the ``<table>_rev`` table and its mapped class)
and how a row of it becomes a revision row.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar

from sqlalchemy import (
    Boolean,
    Column,
    Delete,
    Double,
    Engine,
    Index,
    String,
    Table,
    Update,
    event,
    inspect,
)
from sqlalchemy.orm import Mapper

from ..errors import AuditError, ConfigError

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
_lock = threading.RLock()
_generation = [0]  # bumped on every registration: caches keyed on it start over


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


def _revision_table(table: Table) -> Table:
    taken = [c.name for c in table.columns if c.name in REV_COLUMNS]
    if taken:
        raise ConfigError(
            f"table {table.fullname!r} has columns named {taken}, which its revision table "
            f"uses for itself ({', '.join(REV_COLUMNS)}); rename them to version this table"
        )
    if not table.primary_key.columns:
        raise ConfigError(f"table {table.fullname!r} has no primary key: it cannot be versioned")
    name = f"{table.name}_rev"
    key = f"{table.schema}.{name}" if table.schema else name
    if key in table.metadata.tables:
        raise ConfigError(
            f"table {key!r} already exists in the MetaData of {table.fullname!r}: "
            "rowcast.audit makes that revision table itself; drop your declaration"
        )
    pk = [c.name for c in table.primary_key.columns]
    copies = [
        Column(c.name, c.type, nullable=c.primary_key is False, autoincrement=False)
        for c in table.columns
    ]
    rev = Table(
        name,
        table.metadata,
        Column("rev_id", String(36), primary_key=True),
        Column("rev_created", Double(), nullable=False),
        Column("rev_isdelete", Boolean(), nullable=False),
        Column("rev_txid", String(100)),
        *copies,
        schema=table.schema,
        comment=f"append-only revisions of {table.fullname} (rowcast.audit)",
    )
    # history and as_of look revisions up by key, in time order
    Index(None, *[rev.c[n] for n in pk], rev.c.rev_created)
    return rev


def register(mapper: Mapper[Any]) -> Audited | None:
    """Version the table `mapper` maps (its local table); idempotent."""
    table = mapper.local_table
    if not isinstance(table, Table):
        raise ConfigError(
            f"{mapper.class_.__name__} is not mapped to a table: it cannot be versioned"
        )
    with _lock:
        found = _by_table.get(table)
        if found is not None:
            if "Revision" not in mapper.class_.__dict__:
                mapper.class_.Revision = found.rev_class
            return found
        rev_table = _revision_table(table)
        rev_class: type[Revision] = type(
            f"{mapper.class_.__name__}Revision",
            (Revision,),
            {"__module__": mapper.class_.__module__, "__doc__": f"A revision of {table.fullname}."},
        )
        mapper.registry.map_imperatively(rev_class, rev_table)
        audited = Audited(mapper, table, rev_table, rev_class)
        rev_class.__audited__ = audited
        mapper.class_.Revision = rev_class
        _by_table[table] = audited
        _by_name[(table.schema, table.name)] = audited
        _by_rev_name[(rev_table.schema, rev_table.name)] = audited
        _generation[0] += 1
        _install_guards(rev_class)
    from ._session import install  # the session hooks, once any table is versioned

    install()
    return audited


def _on_mapped(mapper: Mapper[Any], cls: type) -> None:
    if isinstance(mapper.local_table, Table) and mapper.local_table not in _by_table:
        register(mapper)
    elif "Revision" not in cls.__dict__ and mapper.local_table in _by_table:
        cls.Revision = _by_table[mapper.local_table].rev_class  # type: ignore[attr-defined]


class Versioned:
    """Declarative mixin: every change of the model's rows is kept in ``<table>_rev``.

    ``class Reservation(Versioned, Base): ...`` gives ``Reservation.Revision``,
    mapped to ``reservations_rev`` in the same schema and `MetaData` (so
    ``Base.metadata.create_all()`` makes it). It has ``rev_id`` (a uuid
    string, the primary key), ``rev_created`` (UTC epoch seconds),
    ``rev_isdelete``, ``rev_txid`` (shared by the revisions of one
    transaction) and a copy of every column of the table: the primary key
    columns not null and indexed, every other one nullable, with no defaults,
    foreign keys nor unique constraints. Subclasses mapped to tables of their
    own (joined inheritance) get a revision table of their own.
    """

    Revision: ClassVar[type[Any]]


event.listen(Versioned, "after_mapper_constructed", _on_mapped, propagate=True)


def versioned(cls: type) -> type:
    """Version a model class you cannot change (it must be mapped already); returns it.

    Works as a decorator below the declarative base. Subclasses declared later
    with tables of their own are not versioned by this call; version them too.
    """
    try:
        mapper: Any = inspect(cls)
    except Exception as e:
        raise TypeError(f"versioned() needs a mapped class, not {cls!r}") from e
    if not isinstance(mapper, Mapper):
        raise TypeError(f"versioned() needs a mapped class, not {cls!r}")
    register(mapper)
    return cls


# ------------------------------------------------------------------ append-only


def _refuse_flush(mapper: Mapper[Any], connection: Any, target: Any) -> None:
    raise AuditError(
        f"{type(target).__name__} rows are append-only revisions: they are never updated "
        "nor deleted (revert() writes a new revision instead)"
    )


def _install_guards(rev_class: type) -> None:
    event.listen(rev_class, "before_update", _refuse_flush)
    event.listen(rev_class, "before_delete", _refuse_flush)
    _install_statement_guard()


_guarded = [False]


def _install_statement_guard() -> None:
    if _guarded[0]:
        return
    _guarded[0] = True
    event.listen(Engine, "before_execute", _refuse_statement)


def _refuse_statement(conn: Any, clause: Any, *args: Any) -> None:
    """UPDATE / DELETE of a revision table, by ORM or Core statement, raises."""
    if isinstance(clause, Update | Delete):
        table = clause.table
        name = getattr(table, "name", None)
        if name is not None and (getattr(table, "schema", None), name) in _by_rev_name:
            raise AuditError(
                f"{getattr(table, 'fullname', name)} holds append-only revisions: "
                f"{type(clause).__name__.removeprefix('Annotated').upper()} is refused"
            )


# ------------------------------------------------------------------ clock


class Clock:
    """UTC epoch seconds that never repeat nor go back in this process (1 us apart)."""

    def __init__(self) -> None:
        self._last = 0.0
        self._lock = threading.Lock()

    def take(self, count: int, at: float | None = None) -> float:
        """The first of `count` increasing times, 1 us apart, no earlier than `at` (or now)."""
        with self._lock:
            start = max(time.time() if at is None else at, self._last + 1e-6)
            self._last = start + (count - 1) * 1e-6
        return start


clock = Clock()

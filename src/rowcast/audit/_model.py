"""Versioning a model: the `Versioned` mixin and `versioned()`.

Private to `rowcast.audit`. Versioning a table makes its revision table
(``<table>_rev``) and class, records them in `rowcast.audit._tables`, guards
them as append-only, and installs the session hooks of `rowcast.audit._session`
that write the revisions.
"""

from __future__ import annotations

import threading
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
from ._session import install
from ._tables import REV_COLUMNS, Audited, Revision, add, audited_rev_name, audited_table

_lock = threading.RLock()  # one registration at a time


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
        found = audited_table(table)
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
        add(audited)
        _install_guards(rev_class)
    install()  # the session hooks, once any table is versioned
    return audited


def _on_mapped(mapper: Mapper[Any], cls: type) -> None:
    found = audited_table(mapper.local_table)
    if isinstance(mapper.local_table, Table) and found is None:
        register(mapper)
    elif "Revision" not in cls.__dict__ and found is not None:
        cls.Revision = found.rev_class  # type: ignore[attr-defined]


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
        if name is not None and audited_rev_name(getattr(table, "schema", None), name):
            raise AuditError(
                f"{getattr(table, 'fullname', name)} holds append-only revisions: "
                f"{type(clause).__name__.removeprefix('Annotated').upper()} is refused"
            )

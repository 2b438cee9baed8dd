"""Reading revisions back: `history`, `as_of`, and `revert`.

Private to `rowcast.audit`. Revisions of one row are ordered by
``rev_created`` (then ``rev_id``, for revisions written by other processes at
the very same microsecond).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import UnmappedColumnError

from ._tables import Audited, Revision, audited_model


def _key(audited: Audited, pk: Any) -> tuple[Any, ...]:
    values = tuple(pk) if isinstance(pk, tuple | list) else (pk,)
    if len(values) != len(audited.pk) or any(v is None for v in values):
        columns = ", ".join(audited.pk)
        shape = "one value" if len(audited.pk) == 1 else f"a tuple of {len(audited.pk)} values"
        raise ValueError(
            f"{audited.table.fullname} has the primary key ({columns}): pass {shape}, not {pk!r}"
        )
    return values


def _where(audited: Audited, pk: Any) -> ColumnElement[bool]:
    rev = audited.rev_table
    return and_(
        *(rev.c[name] == value for name, value in zip(audited.pk, _key(audited, pk), strict=True))
    )


def _epoch(when: float | dt.datetime) -> float:
    if isinstance(when, dt.datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)  # naive means UTC, as rev_created is
        return when.timestamp()
    if isinstance(when, int | float) and not isinstance(when, bool):
        return float(when)
    raise TypeError(f"when must be UTC epoch seconds or a datetime, not {when!r}")


def history(session: Session, model: type, pk: Any) -> list[Any]:
    """Every revision of the row of `model` whose primary key is `pk`, oldest first.

    `pk` is the key value, or a tuple for a composite key. Pending changes of
    the session are flushed first (autoflush), so their revisions are included.
    Raises `TypeError` when `model` is not versioned.
    """
    audited = audited_model(model)
    rev = audited.rev_table
    query: Select[Any] = (
        select(audited.rev_class)
        .where(_where(audited, pk))
        .order_by(rev.c.rev_created, rev.c.rev_id)
    )
    return list(session.scalars(query))


def as_of(session: Session, model: type, pk: Any, when: float | dt.datetime) -> Any:
    """The row as it was at `when` (UTC epoch seconds, or a datetime; naive is UTC).

    Returns the latest ``model.Revision`` written at or before `when`, or None
    when the row did not exist yet or was deleted then.
    """
    audited = audited_model(model)
    rev = audited.rev_table
    query: Select[Any] = (
        select(audited.rev_class)
        .where(_where(audited, pk), rev.c.rev_created <= _epoch(when))
        .order_by(rev.c.rev_created.desc(), rev.c.rev_id.desc())
        .limit(1)
    )
    found = session.scalars(query).first()
    return None if found is None or found.rev_isdelete else found


def revert(session: Session, revision: Any) -> Any:
    """Bring the row back to the state `revision` holds; returns the model object.

    The row is updated when it exists, added again when it was deleted since,
    and deleted when `revision` is a delete (then None is returned). This is a
    change like any other: it is written at the next flush, with a revision of
    its own, and undone by a rollback. Revisions are never rewritten.
    """
    if not isinstance(revision, Revision):
        raise TypeError(f"revert() needs a Model.Revision, not {revision!r}")
    audited = type(revision).__audited__
    mapper = audited.mapper
    key = tuple(getattr(revision, name) for name in audited.pk)
    current = session.get(mapper.class_, key[0] if len(key) == 1 else key)
    if revision.rev_isdelete:  # type: ignore[attr-defined]
        if current is not None:
            session.delete(current)
        return None
    target = current if current is not None else mapper.class_manager.new_instance()
    for column in audited.table.columns:
        try:
            attribute = mapper.get_property_by_column(column).key
        except UnmappedColumnError:
            continue  # a column the model does not map
        setattr(target, attribute, getattr(revision, column.name))
    if current is None:
        session.add(target)
    return target

"""Capture of the rows a session's flush writes, through mapper events.

The listeners are installed once for every mapper (by the first capture, the
session source's or the audit's) and find their captures in ``session.info``; a session without a
capture costs them a dict lookup.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sqlalchemy import Connection, event
from sqlalchemy.orm import InstanceState, Mapper, Session

from ..change import Action
from .rows import MISSING, Plan, Record, fill_missing, mapper_keys, plans_of, schema_of
from .state import BEFORE, CAPTURES, ROUTES, Capture, Pending, warn

_installed = False


def install_mapper_events() -> None:
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


def _captures_of(state: InstanceState[Any]) -> dict[Capture, Pending] | None:
    session = state.session
    return session.info.get(CAPTURES) or None if session is not None else None


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
    session.info.setdefault(BEFORE, {})[state] = images


def _pop_before(state: InstanceState[Any]) -> list[dict[str, Any]] | None:
    session = state.session
    stash = session.info.get(BEFORE) if session is not None else None
    return stash.pop(state, None) if stash else None


class _Route(NamedTuple):
    """Where rows of one table of one mapper go during a flush."""

    nth: int  # the table's place in mapper.tables
    plan: Plan
    schema: str | None
    pendings: list[Pending]  # of the captures that want the table


# module constants: an enum member looked up on its class costs ~100 ns, and rows are many
_WRITE, _UPDATE, _DELETE = Action.WRITE, Action.UPDATE, Action.DELETE
_new_record = tuple.__new__  # Record(...) without NamedTuple's Python-level __new__


def _routes(
    session: Session, mapper: Mapper[Any], connection: Connection, action: Action
) -> list[_Route]:
    """The routes of `mapper`'s rows, worked out once per flush (rows are many)."""
    cache: dict[tuple[Mapper[Any], Connection], tuple[list[_Route], list[_Route]]]
    cache = session.info.setdefault(ROUTES, {})
    both = cache.get((mapper, connection))
    if both is None:
        routes = []
        captures = [(c, p) for c, p in session.info.get(CAPTURES, {}).items() if not c.closed]
        for index, plan in enumerate(plans_of(mapper)):
            schema = schema_of(plan.table, connection)
            pendings = [p for c, p in captures if c.wants(plan.table, schema)]
            if pendings:
                routes.append(_Route(index, plan, schema, pendings))
        both = cache[(mapper, connection)] = (routes, routes[::-1])  # subclass rows go first
    return both[1] if action is _DELETE else both[0]


def _record(
    action: Action,
    mapper: Mapper[Any],
    connection: Connection,
    state: InstanceState[Any],
    befores: list[dict[str, Any]] | None,
) -> None:
    """Record the row(s) `state` was written to, for every capture of its session."""
    session = state.session
    if session is None or not session.info.get(CAPTURES):
        return
    values = state.dict
    held = values.keys()
    for nth, plan, schema, pendings in _routes(session, mapper, connection, action):
        before = befores[nth] if befores is not None else None
        after = None
        if action is not _DELETE:
            if held >= plan.keys and not plan.mutable:  # the common case, inlined
                after = {name: values[key] for name, key in plan.columns}
            else:
                after = plan.image(values)
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
        record: Record = _new_record(Record, (action, plan, schema, before, after))
        for pending in pendings:
            frames = pending.frames
            if frames and frames[-1][0] is pending.tx:
                frames[-1][1].append(record)
            else:
                pending.add(record)


def _after_insert(mapper: Mapper[Any], connection: Connection, state: InstanceState[Any]) -> None:
    _check_links(mapper, state, deleting=False)
    _record(_WRITE, mapper, connection, state, None)


def _after_update(mapper: Mapper[Any], connection: Connection, state: InstanceState[Any]) -> None:
    _check_links(mapper, state, deleting=False)
    befores = _pop_before(state)
    if befores is not None:
        _record(_UPDATE, mapper, connection, state, befores)


def _after_delete(mapper: Mapper[Any], connection: Connection, state: InstanceState[Any]) -> None:
    _check_links(mapper, state, deleting=True)
    befores = _pop_before(state)
    if befores is not None:
        _record(_DELETE, mapper, connection, state, befores)


_links: dict[Mapper[Any], tuple[str, ...]] = {}


def _check_links(mapper: Mapper[Any], state: InstanceState[Any], deleting: bool) -> None:
    """Many-to-many link rows are written without mapper events: say so, never drop silently."""
    keys = _links.get(mapper)
    if keys is None:
        keys = _links[mapper] = tuple(
            r.key for r in mapper.relationships if r.secondary is not None and not r.viewonly
        )
    if not keys or _captures_of(state) is None:
        return
    for key in keys:
        if state.attrs[key].history.has_changes() or (deleting and state.dict.get(key, True)):
            table = mapper.relationships[key].secondary
            warn(
                f"rows of the many-to-many table {getattr(table, 'name', table)!r} are not "
                "captured; map it as a class (an association object) to capture them"
            )
            return

"""Objects made as drafts of their class's layout, for `rowcast._speedups.accelerated`.

A draft is an instance of a class with the same slots as the real one but none of its
checks (a frozen dataclass's ``__setattr__``, ``UUID.__init__``'s): its slots take
plain stores, then its ``__class__`` is switched to the real class. The result is
the very object the constructor makes (the same layout, the same values), at a third
to half the cost. Right by construction only: each function here is given values its
caller made itself (rows it read, ids it stored). Their plain counterparts are the
constructors (`rowcast._speedups.pure`); tests/test_speedups.py checks they agree.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = ["recorded_events", "snapshot_rows", "snapshot_writes", "uuid_from_bytes"]

T = TypeVar("T")


class _UUIDDraft(uuid.UUID):
    """A UUID in the making: its slots take plain stores; adds no slot, so its
    ``__class__`` can become `uuid.UUID`."""

    __slots__ = ()
    __init__ = object.__init__
    __setattr__ = object.__setattr__  # type: ignore[assignment]


_UNKNOWN_SAFETY = uuid.SafeUUID.unknown


@functools.cache
def draft_of(cls: Any) -> Callable[[], Any]:
    """A class of `cls`'s slots (the same layout) without its frozen ``__setattr__``."""
    draft: Callable[[], Any] = type(f"{cls.__name__}Draft", (), {"__slots__": cls.__slots__})
    return draft


def slotted(cls: Any) -> bool:
    """Whether all of `cls`'s slots are its own, on `object`, with no ``__dict__`` (a draft
    of them can stand for it; a subclass of such a class is made by its constructor)."""
    return (
        getattr(cls, "__base__", None) is object
        and not getattr(cls, "__dictoffset__", 1)
        and "__slots__" in vars(cls)
    )


def uuid_from_bytes(raw: bytes) -> uuid.UUID:
    # UUID(bytes=...) checks its argument and costs a quarter of a store's read
    value = _UUIDDraft()
    value.int = int.from_bytes(raw, "big")
    value.is_safe = _UNKNOWN_SAFETY
    value.__class__ = uuid.UUID
    made: uuid.UUID = value
    return made


def recorded_events(
    event_class: Callable[..., T],
    rows: Sequence[Sequence[Any]],
    stream: str | None,
    values: list[Any],
) -> list[T]:
    draft, uuid_draft, uuid_class = draft_of(event_class), _UUIDDraft, uuid.UUID
    from_bytes, unknown = int.from_bytes, _UNKNOWN_SAFETY
    events: list[Any] = []
    append = events.append
    for row, data, meta in zip(rows, values[::2], values[1::2], strict=True):
        if stream is None:
            name, version, position, raw, type_, _, _, recorded = row
        else:
            version, position, raw, type_, _, _, recorded = row
            name = stream
        id_ = uuid_draft()
        id_.int = from_bytes(raw, "big")
        id_.is_safe = unknown
        id_.__class__ = uuid_class
        event = draft()
        event.stream = name
        event.version = version
        event.position = position
        event.id = id_
        event.type = type_
        event.data = data
        event.metadata = meta
        event.recorded_at = recorded
        event.__class__ = event_class
        append(event)
    return events


def snapshot_writes(cls: Callable[..., T], write: Any, *at: Any) -> list[T]:
    # plain slot stores, no checks (each has its after image by construction): a third
    # of the constructor's cost. A class with a __dict__ is made by its constructor
    schema, table, rows, ts, txid, position, source = at
    if not slotted(cls):
        return [cls(write, schema, table, pk, None, after, ts, txid, position, source, True)
                for pk, after in rows]  # fmt: skip
    draft = draft_of(cls)
    made: list[Any] = []
    append = made.append
    for pk, after in rows:
        change = draft()
        change.action = write
        change.schema = schema
        change.table = table
        change.pk = pk
        change.before = None
        change.after = after
        change.ts = ts
        change.txid = txid
        change.position = position
        change.source = source
        change.snapshot = True
        change.__class__ = cls
        append(change)
    return made


def snapshot_rows(
    cls: Callable[..., T],
    write: Any,
    rows: Sequence[Sequence[Any]],
    make: Callable[[Sequence[Any]], dict[str, Any]],
    key: int | tuple[int, ...],
    skip: set[Any] | None,
    *at: Any,
) -> list[T]:
    """`snapshot_writes` of `rows` of values, each's image made by `make`: the fallback
    of the C path where rowcast._cspeedups was not built."""
    if isinstance(key, int):
        keys: list[Any] = [row[key] for row in rows]
    else:
        keys = [tuple(row[i] for i in key) for row in rows]
    if skip:
        pairs = [(pk, make(row)) for pk, row in zip(keys, rows, strict=True) if pk not in skip]
    else:
        pairs = list(zip(keys, map(make, rows), strict=True))
    schema, table, ts, txid, position, source = at
    return snapshot_writes(cls, write, schema, table, pairs, ts, txid, position, source)

"""The one value everything in rowcast speaks: a `Change` of one row.

A source turns what its database did into Changes; every subscriber, sink,
store, audit table and cache only ever sees Changes. A Change is frozen and
its images are plain dicts of column name -> Python value, so it is safe to
hand to other threads and to keep after the session that made it is gone.

`Change.to_json` / `Change.from_json` write and read a Change with the tagged
JSON codec of `rowcast.codec`, which keeps the Python types a database gives
back (Decimal, datetime, bytes, UUID...), so that a Change survives a trip
through a broker unchanged. A composite primary key is written as a plain JSON
array and read back as a tuple.

A `Change` is written as a JSON object with the members ``action``, ``schema``,
``table``, ``pk``, ``before``, ``after``, ``ts``, ``txid``, ``position`` and
``source``, always present (null when empty), plus ``"snapshot": true`` on the
rows an initial snapshot read (Debezium's ``op: "r"``, Maxwell's
``bootstrap-insert``). ``snapshot`` is left out when false, so that a change
of a live transaction is written exactly as before the field existed, and an
object without it reads back as ``snapshot=False``.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import _speedups
from .codec import (
    decode,
    dumps,
    dumps_encoded,
    dumps_flat_rows,
    dumps_ready,
    encode,
    is_flat_row,
    loads,
)

# the codec's names were defined here first: kept importable from here
__all__ = ["Action", "Change", "decode", "dumps", "encode", "loads"]


class Action(enum.StrEnum):
    """What happened to the row."""

    WRITE = "write"
    UPDATE = "update"
    DELETE = "delete"


# ---------------------------------------------------------------- Change

_TOP = frozenset({str, int, float, type(None)})  # what to_dict writes without `encode`


def _encode_pk(pk: Any) -> Any:
    return [encode(v) for v in pk] if type(pk) is tuple else encode(pk)


def _decode_pk(pk: Any) -> Any:
    return tuple(pk) if type(pk) is list else pk


@dataclasses.dataclass(frozen=True, slots=True, init=False)
class Change:
    """One committed change of one row.

    ``before`` is the row as it was (None for a write), ``after`` the row as it
    is now (None for a delete); both map column names to values. ``pk`` is the
    primary key value, a tuple for a composite key. ``ts`` is the commit time
    (UTC epoch seconds, now when not given), ``txid`` identifies the
    transaction (GTID, xid, LSN or a uuid) and ``position`` is where a source
    can resume after the transaction, when it has such a position.
    ``snapshot`` is True for a ``write`` that an initial snapshot read from a
    table as it already was, rather than a change a transaction made.
    """

    action: Action
    schema: str | None
    table: str
    pk: Any
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    ts: float = dataclasses.field(default_factory=time.time)
    txid: str | None = None
    position: str | None = None
    source: str | None = None
    snapshot: bool = False

    # Written by hand: a dataclass-made frozen __init__ costs twice as much, and
    # sources make one Change per row.
    def __init__(
        self,
        action: Action | str,
        schema: str | None,
        table: str,
        pk: Any,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
        ts: float | None = None,
        txid: str | None = None,
        position: str | None = None,
        source: str | None = None,
        snapshot: bool = False,
    ) -> None:
        if type(action) is not Action:
            try:
                action = Action(action)
            except ValueError:
                raise ValueError(
                    f"Change.action must be one of 'write', 'update', 'delete', not {action!r}"
                ) from None
        if not isinstance(table, str) or not table:
            raise ValueError(f"Change.table must be a non-empty string, not {table!r}")
        if action is Action.DELETE:
            if before is None:
                raise ValueError("a 'delete' Change needs its before image")
        elif after is None:
            raise ValueError(f"a {action.value!r} Change needs its after image")
        if snapshot is not False:
            if snapshot is not True:
                raise ValueError(f"Change.snapshot must be True or False, not {snapshot!r}")
            if action is not Action.WRITE:
                raise ValueError("only a 'write' Change can be a snapshot read")
        _set_action(self, action)
        _set_schema(self, schema)
        _set_table(self, table)
        _set_pk(self, pk)
        _set_before(self, before)
        _set_after(self, after)
        _set_ts(self, time.time() if ts is None else ts)
        _set_txid(self, txid)
        _set_position(self, position)
        _set_source(self, source)
        _set_snapshot(self, snapshot)

    @property
    def name(self) -> str:
        """meepo's event name: ``"<table>_<action>"``, e.g. ``"test_write"``."""
        return f"{self.table}_{self.action.value}"

    @property
    def topic(self) -> str:
        """``"<action>@<schema>.<table>"``, or ``"<action>@<table>"`` without a schema."""
        if self.schema:
            return f"{self.action.value}@{self.schema}.{self.table}"
        return f"{self.action.value}@{self.table}"

    @property
    def changed(self) -> tuple[str, ...]:
        """Columns whose value differs between ``before`` and ``after``.

        Every column of the new row for a write, of the old row for a delete.
        """
        before, after = self.before or {}, self.after or {}
        if self.action is Action.WRITE:
            return tuple(after)
        if self.action is Action.DELETE:
            return tuple(before)
        missing = object()
        keys = list(after) + [k for k in before if k not in after]
        return tuple(k for k in keys if before.get(k, missing) != after.get(k, missing))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (values encoded as in the module docstring)."""
        return self._fields(encode(self.before), encode(self.after))

    def _fields(self, before: Any, after: Any) -> dict[str, Any]:
        """`to_dict`'s dict, with the images given (encoded, or flat and JSON-ready)."""
        data: dict[str, Any] = {
            "action": self.action.value,
            "schema": self.schema,
            "table": self.table,
            "pk": _encode_pk(self.pk),
            "before": before,
            "after": after,
            "ts": self.ts,
            "txid": self.txid,
            "position": self.position,
            "source": self.source,
        }
        if self.snapshot:
            data["snapshot"] = True
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Change:
        """The Change that `to_dict` made `data` from."""
        missing = {"action", "table", "pk"} - set(data)
        if missing:
            raise ValueError(f"not a rowcast Change: missing {sorted(missing)}")
        return cls._restore({k: decode(v) for k, v in data.items()})

    def to_json(self) -> str:
        """Compact JSON, the body of every relayed message: ``to_dict()`` written as JSON."""
        before, after = self.before, self.after
        if not (
            _TOP.issuperset(map(type, (self.schema, self.ts, self.txid)))
            and _TOP.issuperset(map(type, (self.position, self.source)))
            and (type(self.ts) is not float or math.isfinite(self.ts))
        ):  # what JSON cannot hold is refused by json itself
            return dumps_encoded(self.to_dict())
        if is_flat_row(before) and is_flat_row(after):
            # the common row: its values written in one pass, not copied by `encode` first
            return dumps_flat_rows(self._fields(before, after))
        return dumps_ready(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes) -> Change:
        """The Change that `to_json` wrote."""
        data = loads(text)
        if not isinstance(data, dict) or not {"action", "table", "pk"} <= set(data):
            raise ValueError("not a rowcast Change: expected a JSON object with action, table, pk")
        return cls._restore(data)

    @classmethod
    def _rows(
        cls,
        rows: Sequence[tuple[Action, str | None, str, Any, Any, Any]],
        ts: float,
        txid: str | None,
        position: str | None,
        source: str | None,
        snapshot: bool = False,
    ) -> list[Change]:
        """The changes of one transaction's rows ``(action, schema, table, pk, before,
        after)``, made without `__init__`'s checks: for a source whose rows are right by
        construction (an `Action`, a table, the image its action needs)."""
        new = object.__new__
        made = []
        for action, schema, table, pk, before, after in rows:
            change = new(cls)
            _set_action(change, action)
            _set_schema(change, schema)
            _set_table(change, table)
            _set_pk(change, pk)
            _set_before(change, before)
            _set_after(change, after)
            _set_ts(change, ts)
            _set_txid(change, txid)
            _set_position(change, position)
            _set_source(change, source)
            _set_snapshot(change, snapshot)
            made.append(change)
        return made

    @classmethod
    def _reads(
        cls,
        schema: str | None,
        table: str,
        rows: Iterable[tuple[Any, dict[str, Any]]],
        ts: float,
        txid: str | None,
        position: str | None,
        source: str | None,
    ) -> list[Change]:
        """The ``snapshot=True`` writes of rows ``(pk, image)`` a snapshot or a backfill read
        from `table` (a non-empty name), made without `__init__`'s checks (each has its
        after image by construction): `rowcast._speedups.snapshot_writes`."""
        at = (schema, table, rows, ts, txid, position, source)
        return _speedups.snapshot_writes(cls, Action.WRITE, *at)

    @classmethod
    def from_debezium(
        cls,
        value: Mapping[str, Any] | str | bytes,
        key: Mapping[str, Any] | str | bytes | None = None,
    ) -> Change:
        """The Change of a Debezium change event's `value` and `key` (`rowcast.debezium`):
        JSON text or parsed, with or without the JSON converter's schema; without the key,
        ``pk`` is None. A tombstone (null value) or another message is a `ValueError`."""
        from ._connect import change_fields

        return cls(**change_fields(value, key))

    @classmethod
    def _restore(cls, data: Mapping[str, Any]) -> Change:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"not a rowcast Change: unknown fields {sorted(unknown)}")
        kwargs = dict(data)
        kwargs["pk"] = _decode_pk(kwargs["pk"])
        return cls(**kwargs)


# what a frozen dataclass's __init__ does, without the look-ups (`rowcast._speedups`)
(
    _set_action,
    _set_schema,
    _set_table,
    _set_pk,
    _set_before,
    _set_after,
    _set_ts,
    _set_txid,
    _set_position,
    _set_source,
    _set_snapshot,
) = _speedups.slot_setters(Change)

"""The one value everything in rowcast speaks: a `Change` of one row.

A source turns what its database did into Changes; every subscriber, sink,
store, audit table and cache only ever sees Changes. A Change is frozen and
its images are plain dicts of column name -> Python value, so it is safe to
hand to other threads and to keep after the session that made it is gone.

The JSON codec (`dumps` / `loads`, `Change.to_json` / `Change.from_json`)
keeps the Python types a database gives back, so that a Change survives a trip
through a broker unchanged. JSON's own types are written as they are; other
values become one-key objects whose key starts with ``$``:

==================  ======================================================
Python              JSON
==================  ======================================================
``Decimal``         ``{"$decimal": "12.50"}`` (exponent kept)
``datetime``        ``{"$datetime": "2024-05-01T12:00:00+00:00"}`` (ISO 8601;
                    naive stays naive, aware keeps its UTC offset, and a
                    ``ZoneInfo`` zone its name: ``"...-05:00[America/New_York]"``)
``date``, ``time``  ``{"$date": "2024-05-01"}``, ``{"$time": "12:00:00"}``
``timedelta``       ``{"$timedelta": [days, seconds, microseconds]}``
``bytes``           ``{"$bytes": "<base64>"}`` (``bytearray``, ``memoryview`` come back
                    as ``bytes``)
``UUID``            ``{"$uuid": "..."}``
``set``/frozenset   ``{"$set": [...]}``, ``{"$frozenset": [...]}`` (sorted when possible)
``tuple``           ``{"$tuple": [...]}`` (a namedtuple comes back a plain tuple)
NaN, +-infinity     ``{"$float": "nan"}``, ``{"$float": "inf"}``, ``{"$float": "-inf"}``
dict, non-str keys  ``{"$map": [[key, value], ...]}``
``Enum`` member     its ``value`` (the enum class is not kept)
==================  ======================================================

A dict of your own whose only key starts with ``$`` is written with one more
``$`` in front of that key and read back as it was, so no data can be taken
for a tag. A composite primary key is written as a plain JSON array and read
back as a tuple. An aware ``datetime`` whose tzinfo is neither a ``ZoneInfo``
nor a ``timezone`` (pytz, dateutil) comes back with a fixed-offset ``timezone``
at the same instant; a ``time`` keeps a fixed offset only (a zone has no offset
without a date). Integers are limited to Python's 4300 digits for ``str()``.
Any other type raises `TypeError` naming it.

A `Change` is written as a JSON object with the members ``action``, ``schema``,
``table``, ``pk``, ``before``, ``after``, ``ts``, ``txid``, ``position`` and
``source``, always present (null when empty), plus ``"snapshot": true`` on the
rows an initial snapshot read (Debezium's ``op: "r"``, Maxwell's
``bootstrap-insert``). ``snapshot`` is left out when false, so that a change
of a live transaction is written exactly as before the field existed, and an
object without it reads back as ``snapshot=False``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import json
import math
import time
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["Action", "Change", "decode", "dumps", "encode", "loads"]


class Action(enum.StrEnum):
    """What happened to the row."""

    WRITE = "write"
    UPDATE = "update"
    DELETE = "delete"


# ---------------------------------------------------------------- the codec


def _encode_float(value: float) -> Any:
    if math.isfinite(value):
        return value
    return {"$float": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}


def _sorted_if_possible(items: Any) -> list[Any]:
    try:
        return sorted(items)
    except TypeError:
        return list(items)


def _encode_datetime(value: dt.datetime) -> Any:
    if isinstance(value.tzinfo, ZoneInfo):  # RFC 9557: keep the zone, not just the offset
        return {"$datetime": f"{value.isoformat()}[{value.tzinfo.key}]"}
    return {"$datetime": value.isoformat()}


# the tagged types met most, by exact type: found in one look-up, before the checks below
_LEAVES: dict[type, Callable[[Any], Any]] = {
    Decimal: lambda v: {"$decimal": str(v)},
    dt.datetime: _encode_datetime,
    dt.date: lambda v: {"$date": v.isoformat()},
    dt.time: lambda v: {"$time": v.isoformat()},
    dt.timedelta: lambda v: {"$timedelta": [v.days, v.seconds, v.microseconds]},
    bytes: lambda v: {"$bytes": base64.b64encode(v).decode("ascii")},
    uuid.UUID: lambda v: {"$uuid": str(v)},
}


def encode(value: Any) -> Any:
    """Turn a Python value into one that `json.dumps` writes and `decode` restores."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        return _encode_float(value)
    leaf = _LEAVES.get(kind)
    if leaf is not None:
        return leaf(value)
    if isinstance(value, Mapping):
        if all(type(k) is str for k in value):
            if len(value) == 1:
                ((key, item),) = value.items()
                if key.startswith("$"):
                    return {"$" + key: encode(item)}
            return {k: encode(v) for k, v in value.items()}
        return {"$map": [[encode(k), encode(v)] for k, v in value.items()]}
    if kind is list:
        return [encode(v) for v in value]
    if kind is tuple:
        return {"$tuple": [encode(v) for v in value]}
    if isinstance(value, enum.Enum):
        return encode(value.value)
    # bool and int subclasses other than enums (numpy-like) fall through to int
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return _encode_float(value)
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, dt.datetime):
        return _encode_datetime(value)
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, dt.time):
        return {"$time": value.isoformat()}
    if isinstance(value, dt.timedelta):
        return {"$timedelta": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    if isinstance(value, frozenset):
        return {"$frozenset": [encode(v) for v in _sorted_if_possible(value)]}
    if isinstance(value, set):
        return {"$set": [encode(v) for v in _sorted_if_possible(value)]}
    if isinstance(value, tuple):  # namedtuples (e.g. composite types) become plain tuples
        return {"$tuple": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    raise TypeError(
        f"rowcast cannot encode a value of type {kind.__module__}.{kind.__qualname__}; "
        "convert it to a JSON, datetime, Decimal, UUID or bytes value first"
    )


def _datetime(text: str) -> dt.datetime:
    if not text.endswith("]"):
        return dt.datetime.fromisoformat(text)
    stamp, key = text[:-1].split("[", 1)
    fixed = dt.datetime.fromisoformat(stamp)
    zoned = fixed.replace(tzinfo=ZoneInfo(key))
    if zoned.utcoffset() != fixed.utcoffset():
        zoned = zoned.replace(fold=1)  # the second of two wall times that repeat
    return zoned


_TAGS: dict[str, Callable[[Any], Any]] = {
    "$decimal": Decimal,
    "$datetime": _datetime,
    "$date": dt.date.fromisoformat,
    "$time": dt.time.fromisoformat,
    "$timedelta": lambda v: dt.timedelta(days=v[0], seconds=v[1], microseconds=v[2]),
    "$bytes": lambda v: base64.b64decode(v),
    "$uuid": uuid.UUID,
    "$set": set,
    "$frozenset": frozenset,
    "$tuple": tuple,
    "$float": float,
    "$map": lambda pairs: dict(pairs),
}


def _hook(obj: dict[str, Any]) -> Any:
    """Restore one JSON object whose members are already restored."""
    if len(obj) != 1:
        return obj
    ((key, item),) = obj.items()
    if not key.startswith("$"):
        return obj
    if key.startswith("$$"):
        return {key[1:]: item}
    try:
        restore = _TAGS[key]
    except KeyError:
        raise ValueError(f"unknown rowcast JSON tag {key!r}") from None
    try:
        return restore(item)
    except (TypeError, ValueError, LookupError, ArithmeticError) as e:
        raise ValueError(f"malformed rowcast JSON value {obj!r}: {e}") from e


def decode(value: Any) -> Any:
    """Restore a value made by `encode` (or parsed from JSON that `dumps` wrote)."""
    if type(value) is dict:
        return _hook({k: decode(v) for k, v in value.items()})
    if type(value) is list:
        return [decode(v) for v in value]
    return value


# built once: json.dumps / json.loads with options build a new encoder / decoder per call
_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_decoder = json.JSONDecoder(object_hook=_hook)
_PLAIN = frozenset({str, int, bool, type(None)})
_STR = frozenset({str})
# JSONEncoder.encode builds its C encoder on every call; build it once (CPython)
_make = getattr(json.encoder, "c_make_encoder", None)
if _make is not None:
    _c_encode = _make(
        None, _encoder.default, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )

    def _to_json(value: Any) -> str:
        return "".join(_c_encode(value, 0))

    # the same, tagging the `_LEAVES` types that JSON has no type for: rows that `_flat` passed
    _c_encode_rows = _make(
        None, lambda value: _LEAVES[type(value)](value), json.encoder.encode_basestring, None,
        ":", ",", False, False, False,
    )  # fmt: skip

    def _rows_to_json(value: Any) -> str:
        return "".join(_c_encode_rows(value, 0))

else:  # pragma: no cover - other Pythons

    def _to_json(value: Any) -> str:
        return _encoder.encode(value)

    _rows_encoder = json.JSONEncoder(
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=lambda v: _LEAVES[type(v)](v),
    )

    def _rows_to_json(value: Any) -> str:
        return _rows_encoder.encode(value)


# Row values the C encoder writes as `encode` would, given `encode` as its default: JSON's
# own exact types (which it writes as they are) and types it does not know at all (which
# it hands to `encode`). Not float (NaN, infinity: checked apart), nor dict, list, tuple,
# or subclasses of str and int, which it would write without asking.
_LEAF = frozenset({str, int, bool, type(None), *_LEAVES})
_TOP = frozenset({str, int, float, type(None)})  # what to_dict writes without `encode`


def _flat(row: Any) -> bool:
    """True if writing `row` with `_rows_to_json` gives what `encode(row)` then JSON gives."""
    if row is None:
        return True
    if type(row) is not dict or not _STR.issuperset(map(type, row)):
        return False
    if len(row) == 1 and next(iter(row)).startswith("$"):
        return False  # its key gets one more "$"
    if _LEAF.issuperset(map(type, row.values())):
        return True
    return all(type(v) in _LEAF or (type(v) is float and math.isfinite(v)) for v in row.values())


def dumps(value: Any) -> str:
    """Write a value as compact JSON that `loads` turns back into the same value."""
    if (
        type(value) is dict
        and len(value) != 1  # a one-key dict may need its "$" escaped
        and _PLAIN.issuperset(map(type, value.values()))
        and _STR.issuperset(map(type, value))
    ):
        return _to_json(value)  # already plain JSON: nothing to tag (the common event)
    return _to_json(encode(value))


def loads(text: str | bytes) -> Any:
    """Read JSON written by `dumps`."""
    return _decoder.decode(text.decode() if isinstance(text, bytes | bytearray) else text)


# ---------------------------------------------------------------- Change


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
        if (
            _flat(before)
            and _flat(after)
            and _TOP.issuperset(map(type, (self.schema, self.ts, self.txid)))
            and _TOP.issuperset(map(type, (self.position, self.source)))
        ):  # the common row: its values written in one pass, not copied by `encode` first
            return _rows_to_json(self._fields(before, after))
        return _to_json(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes) -> Change:
        """The Change that `to_json` wrote."""
        data = loads(text)
        if not isinstance(data, dict) or not {"action", "table", "pk"} <= set(data):
            raise ValueError("not a rowcast Change: expected a JSON object with action, table, pk")
        return cls._restore(data)

    @classmethod
    def _restore(cls, data: Mapping[str, Any]) -> Change:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"not a rowcast Change: unknown fields {sorted(unknown)}")
        kwargs = dict(data)
        kwargs["pk"] = _decode_pk(kwargs["pk"])
        return cls(**kwargs)


# the slots' own setters: what a frozen dataclass's __init__ does, without the lookups
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
) = (vars(Change)[f.name].__set__ for f in dataclasses.fields(Change))

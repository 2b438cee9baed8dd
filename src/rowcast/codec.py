"""The tagged JSON codec: JSON that keeps the Python types a database gives back.

`dumps` writes a value as compact JSON and `loads` reads it back equal and of
the same types, so that a `rowcast.Change`, an event's data or a cached object
survives a trip through a broker, a store or a cache unchanged. JSON's own
types are written as they are; other values become one-key objects whose key
starts with ``$`` (a *tag*):

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
for a tag; an unknown tag is a `ValueError` when read. An aware ``datetime``
whose tzinfo is neither a ``ZoneInfo`` nor a ``timezone`` (pytz, dateutil)
comes back with a fixed-offset ``timezone`` at the same instant; a ``time``
keeps a fixed offset only (a zone has no offset without a date). Integers are
limited to Python's 4300 digits for ``str()``. Any other type raises
`TypeError` naming it.

The layers, for code that drives `json` itself: `encode` turns a value into a
JSON-ready one (tags in place) and `decode` undoes it; `dumps_encoded` writes a
JSON-ready value; `object_hook` is the hook of a `json.JSONDecoder` that reads
what `dumps` wrote (the event stores parse pages of events with it);
`is_flat_row` and `dumps_flat_rows` write row images without copying them
first (`rowcast.Change.to_json`).
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import json
import math
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from . import _speedups

__all__ = [
    "decode",
    "dumps",
    "dumps_encoded",
    "dumps_flat_rows",
    "dumps_ready",
    "encode",
    "is_flat_row",
    "loads",
    "object_hook",
]


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


def _tag_leaf(value: Any) -> Any:
    """The tagged form of a leaf of a flat row (`is_flat_row`): the `_LEAVES` type it is."""
    kind = type(value)
    if kind is Decimal:  # the two met most, tagged without a second call
        return {"$decimal": str(value)}
    if kind is dt.datetime and value.tzinfo is None:
        return {"$datetime": value.isoformat()}
    return _LEAVES[kind](value)


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


def object_hook(obj: dict[str, Any]) -> Any:
    """Restore one JSON object whose members are already restored.

    The ``object_hook`` of a `json.JSONDecoder` that reads what `dumps` wrote
    (``json.loads(text, object_hook=object_hook) == loads(text)``), for code that
    drives the decoder itself (``raw_decode``, a scanner over many values).
    """
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
        return object_hook({k: decode(v) for k, v in value.items()})
    if type(value) is list:
        return [decode(v) for v in value]
    return value


# built once: json.dumps / json.loads with options build a new encoder / decoder per call
_decoder = json.JSONDecoder(object_hook=object_hook)
_PLAIN = frozenset({str, int, bool, type(None)})
_STR = frozenset({str})
# compact JSON writers, built once (`rowcast._speedups`); json's TypeError for other types
_write = _speedups.json_writer(json.JSONEncoder().default)
# json's own, which refuses NaN and infinity wherever they are (orjson writes null)
_write_strict = _speedups.pure.json_writer(json.JSONEncoder().default)
# the same, tagging the `_LEAVES` types that JSON has no type for: rows `is_flat_row` passed
_write_rows = _speedups.json_writer(_tag_leaf)


def dumps_encoded(value: Any) -> str:
    """Compact JSON of a value that is JSON-ready already (what `encode` returns).

    A NaN or an infinity (which `encode` tags) is a `ValueError`.
    """
    return _write_strict(value)


def dumps_ready(value: Any) -> str:
    """`dumps_encoded` of what `encode` returned (so no NaN, no infinity), unchecked.

    For rowcast's own hot paths (`rowcast.Change.to_json`): written by the accelerated
    writer (`rowcast._speedups.json_writer`).
    """
    return _write(value)


def dumps_flat_rows(value: Any) -> str:
    """Compact JSON of a JSON-ready value that holds flat rows (`is_flat_row`) as they are.

    Their leaf values are tagged as they are written: one pass, no copy.
    """
    return _write_rows(value)


# Row values the JSON encoder writes as `encode` would, given `encode` as its default: JSON's
# own exact types (which it writes as they are) and types it does not know at all (which
# it hands to `encode`). Not float (NaN, infinity: checked apart), nor dict, list, tuple,
# or subclasses of str and int, which it would write without asking; nor UUID, which the
# accelerated writer (orjson) writes as a plain string.
_LEAF = frozenset({str, int, bool, type(None), *_LEAVES}) - (
    set() if _speedups.active is _speedups.pure else {uuid.UUID}
)


def is_flat_row(row: Any) -> bool:
    """True if `dumps_flat_rows` writes `row` as `dumps_encoded(encode(row))` does.

    A flat row is None or a dict of str keys (not one key starting with ``$``)
    to values that need no copy to be written: JSON's own exact types, finite
    floats, and the tagged leaf types (Decimal, datetime, date, time,
    timedelta, bytes; UUID too under ``ROWCAST_PURE=1``).
    """
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
        return _write(value)  # already plain JSON: nothing to tag (the common event)
    return _write(encode(value))


def loads(text: str | bytes) -> Any:
    """Read JSON written by `dumps`."""
    return _decoder.decode(text.decode() if isinstance(text, bytes | bytearray) else text)

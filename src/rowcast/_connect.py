"""Column values as Kafka Connect's JSON converter writes them for Debezium, and back.

`field(value)` is a column value's JSON value and its Kafka Connect schema (type,
and for Debezium's logical types their ``name``); `read(json_value, schema)` turns it
back. The table of types is in `rowcast.debezium`, whose envelope uses them.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from . import codec

__all__ = ["field", "read"]

_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_DATE = dt.date(1970, 1, 1)
_UTC = dt.UTC
_DECIMAL = "org.apache.kafka.connect.data.Decimal"


def field(val: Any) -> tuple[Any, dict[str, Any]]:
    """(the JSON value, its Kafka Connect schema) of one column value."""
    kind = type(val)
    if val is None:
        return None, {"type": "string"}
    if kind is bool:
        return val, {"type": "boolean"}
    if kind is int:
        return val, {"type": "int64"}
    if kind is float:
        if val != val or val in (float("inf"), float("-inf")):
            return str(val), {"type": "double"}
        return val, {"type": "double"}
    if kind is str:
        return val, {"type": "string"}
    if isinstance(val, Decimal) and val.is_finite():
        sign, digits, exponent = val.as_tuple()
        unscaled = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
        size = max(1, (unscaled.bit_length() + 8) // 8)
        raw = unscaled.to_bytes(size, "big", signed=True)
        scale = -int(exponent)
        return base64.b64encode(raw).decode(), {
            "type": "bytes",
            "name": _DECIMAL,
            "version": 1,
            "parameters": {"scale": str(scale)},
        }
    if isinstance(val, dt.datetime):
        if val.tzinfo is not None and val.utcoffset() is not None:
            text = val.astimezone(_UTC).replace(tzinfo=None).isoformat() + "Z"
            return text, {"type": "string", "name": "io.debezium.time.ZonedTimestamp"}
        micros = (val - _EPOCH) // dt.timedelta(microseconds=1)
        return micros, {"type": "int64", "name": "io.debezium.time.MicroTimestamp"}
    if isinstance(val, dt.date):
        return (val - _EPOCH_DATE).days, {"type": "int32", "name": "io.debezium.time.Date"}
    if isinstance(val, dt.time):
        if val.tzinfo is not None and val.utcoffset() is not None:
            moment = dt.datetime.combine(_EPOCH_DATE, val).astimezone(_UTC)
            text = moment.time().isoformat() + "Z"
            return text, {"type": "string", "name": "io.debezium.time.ZonedTime"}
        micros = ((val.hour * 60 + val.minute) * 60 + val.second) * 1_000_000 + val.microsecond
        return micros, {"type": "int64", "name": "io.debezium.time.MicroTime"}
    if isinstance(val, dt.timedelta):
        micros = val // dt.timedelta(microseconds=1)
        return micros, {"type": "int64", "name": "io.debezium.time.MicroDuration"}
    if isinstance(val, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(val)).decode(), {"type": "bytes"}
    if isinstance(val, uuid.UUID):
        return str(val), {"type": "string", "name": "io.debezium.data.Uuid"}
    if isinstance(val, dict | list):
        try:
            return json.dumps(val, separators=(",", ":")), {
                "type": "string",
                "name": "io.debezium.data.Json",
            }
        except (TypeError, ValueError):
            pass
    if isinstance(val, set | frozenset) and all(type(v) is str for v in val):
        return ",".join(sorted(val)), {"type": "string", "name": "io.debezium.data.EnumSet"}
    return codec.dumps(val), {"type": "string", "name": "rowcast.Tagged"}


def read(val: Any, schema: Mapping[str, Any] | None) -> Any:
    """A column value back from its JSON value and (when there is one) its schema."""
    if val is None or schema is None:
        return val
    name = schema.get("name")
    kind = schema.get("type")
    if name == _DECIMAL:
        unscaled = int.from_bytes(base64.b64decode(val), "big", signed=True)
        scale = int((schema.get("parameters") or {}).get("scale", 0))
        return Decimal(f"{unscaled}E{-scale}")  # exact, whatever the context's precision
    if name == "io.debezium.time.ZonedTimestamp":
        return dt.datetime.fromisoformat(val.replace("Z", "+00:00"))
    if name == "io.debezium.time.MicroTimestamp":
        return _EPOCH + dt.timedelta(microseconds=val)
    if name == "io.debezium.time.Timestamp":
        return _EPOCH + dt.timedelta(milliseconds=val)
    if name == "io.debezium.time.NanoTimestamp":
        return _EPOCH + dt.timedelta(microseconds=val // 1000)
    if name == "io.debezium.time.Date":
        return _EPOCH_DATE + dt.timedelta(days=val)
    if name == "io.debezium.time.ZonedTime":
        return dt.time.fromisoformat(val.replace("Z", "+00:00"))
    if name in ("io.debezium.time.MicroTime", "io.debezium.time.Time"):
        micros = val if name.endswith("MicroTime") else val * 1000
        return (_EPOCH + dt.timedelta(microseconds=micros)).time()
    if name == "io.debezium.time.MicroDuration":
        return dt.timedelta(microseconds=val)
    if name == "io.debezium.data.Uuid":
        return uuid.UUID(val)
    if name == "io.debezium.data.Json":
        return json.loads(val)
    if name == "io.debezium.data.EnumSet":
        return set(val.split(",")) if val else set()
    if name == "rowcast.Tagged":
        return codec.loads(val)
    if kind == "bytes":
        return base64.b64decode(val)
    if kind in ("double", "float") and isinstance(val, str):
        return float(val)
    return val

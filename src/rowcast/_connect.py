"""Kafka Connect's JSON for Debezium: column values written and read back, and a change
event read back into a change's fields.

`field(value)` is a column value's JSON value and its Kafka Connect schema (type,
and for Debezium's logical types their ``name``); `read(json_value, schema)` turns it
back. `change_fields(value, key)` reads a whole event (`rowcast.Change.from_debezium`).
The table of types is in `rowcast.debezium`, which writes the envelope. Nothing here
imports `rowcast.change`, which imports this module when a change is read back.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from . import codec

__all__ = ["change_fields", "field", "read"]

_SOURCES: Final = {"postgresql": "postgres", "rowcast": None}
_ACTIONS: Final = {"c": "write", "r": "write", "u": "update", "d": "delete"}

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


# ---------------------------------------------------------------- change events


def _loaded(data: Mapping[str, Any] | str | bytes) -> Any:
    return json.loads(data) if isinstance(data, str | bytes) else data


def _fields(schema: Mapping[str, Any] | None, field: str) -> dict[str, Any] | None:
    """The column schemas of struct field `field` of an envelope schema."""
    if schema is None:
        return None
    for spec in schema.get("fields", ()):
        if spec.get("field") == field:
            return {f["field"]: f for f in spec.get("fields", ())}
    return None


def _row(image: Mapping[str, Any] | None, schemas: dict[str, Any] | None) -> Any:
    if image is None:
        return None
    return {c: read(v, None if schemas is None else schemas.get(c)) for c, v in image.items()}


def change_fields(
    value: Mapping[str, Any] | str | bytes, key: Mapping[str, Any] | str | bytes | None = None
) -> dict[str, Any]:
    """The fields of the `rowcast.Change` a Debezium change event's `value` and `key` make
    (`rowcast.debezium.from_debezium`); `ValueError` for a tombstone or another message."""
    data = _loaded(value)
    if data is None:
        raise ValueError("a tombstone (null value) is no change: skip it")
    schema = data.get("schema") if isinstance(data, dict) and "payload" in data else None
    payload = data["payload"] if schema is not None or "payload" in data else data
    if not isinstance(payload, dict) or payload.get("op") not in _ACTIONS:
        raise ValueError("not a Debezium change event: expected op c, r, u or d")
    source = payload.get("source") or {}
    op = payload["op"]
    us = source.get("ts_us")
    ts = us / 1_000_000 if us is not None else (source.get("ts_ms") or 0) / 1000
    position = source.get("position")
    if position is None and source.get("file") is not None and source.get("pos") is not None:
        position = f"{source['file']}:{source['pos']}"
    if position is None and source.get("lsn") is not None:
        lsn = int(source["lsn"])
        position = f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"
    transaction = payload.get("transaction") or {}
    txid = transaction.get("id")
    if txid is None and source.get("txId") is not None:
        txid = str(source["txId"])
    connector = source.get("connector")
    return {
        "action": _ACTIONS[op],
        "schema": source.get("schema", source.get("db")),
        "table": source["table"],
        "pk": _pk(key),
        "before": _row(payload.get("before"), _fields(schema, "before")),
        "after": _row(payload.get("after"), _fields(schema, "after")),
        "ts": ts,
        "txid": txid,
        "position": position,
        "source": _SOURCES.get(connector, connector) if connector else None,
        "snapshot": op == "r",
    }


def _pk(key: Mapping[str, Any] | str | bytes | None) -> Any:
    data = _loaded(key) if key is not None else None
    if data is None:
        return None
    schema = data.get("schema") if "payload" in data and "schema" in data else None
    payload = data["payload"] if schema is not None else data
    columns = None if schema is None else {f["field"]: f for f in schema.get("fields", ())}
    values = [read(v, None if columns is None else columns.get(c)) for c, v in payload.items()]
    return values[0] if len(values) == 1 else tuple(values)

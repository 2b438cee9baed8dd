"""Debezium's change event envelope: a `Change` written as Debezium writes one, and read back.

`value(change)` is the event's value: ``before``, ``after``, ``source``, ``op``,
``ts_ms`` / ``ts_us`` / ``ts_ns`` and the ``transaction`` block; with
``schemas=True``, wrapped as Kafka Connect's JSON converter wraps it
(``{"schema": ..., "payload": ...}``, ``schemas.enable=true``), else the payload
alone. `key(change)` is Debezium's key: a struct of the primary key's columns
(``{"id": 1004}``), wrapped the same way. `from_debezium(value, key)`
(``Change.from_debezium``) reads either back; with schemas, a change comes back
equal to the one written.

========================  ==============================================================
``op``                    ``c`` write, ``u`` update, ``d`` delete, ``r`` a snapshot read
``source.connector``      ``mysql``, ``postgresql`` (rowcast's ``postgres``), else
                          rowcast's source name (``sqlite``, ``sqlalchemy``, ``outbox``)
``source.name``           the logical name (the sink's ``prefix``, default ``rowcast``)
``source.ts_ms/us/ns``    the commit time (`Change.ts`, to the microsecond)
``source.snapshot``       true for a snapshot read
``source.db``             MySQL: the database (`Change.schema`); PostgreSQL: the sink's
                          ``db=`` option when given, else null
``source.schema``         PostgreSQL (and rowcast's own sources): `Change.schema`
``source.table``          `Change.table`
MySQL: ``file``, ``pos``  of the position (``mysql-bin.000003:154``), ``row`` the
                          change's index in its transaction, ``server_id`` 0,
                          ``gtid``, ``thread``, ``query`` null
PostgreSQL: ``lsn``       the position as an integer, ``sequence`` ``[null, "<lsn>"]``,
                          ``txId`` the transaction id as an integer, ``xmin`` null
``source.position``       rowcast's own: the position string, as the change has it
``transaction``           ``id`` (`Change.txid`), ``total_order`` (1-based index in the
                          transaction), ``data_collection_order`` (1-based index among
                          the transaction's changes of that table)
``ts_ms/us/ns``           when the event was written
========================  ==============================================================

Values, as Debezium's default converters give them (``decimal.handling.mode=precise``,
``time.precision.mode=adaptive_time_microseconds``, ``binary.handling.mode=bytes``):

==================  ===========================================================
int, float, bool    ``int64``, ``double``, ``boolean``
str                 ``string``
Decimal             ``bytes``: the unscaled value, big-endian two's complement,
                    base64; ``org.apache.kafka.connect.data.Decimal`` with its
                    ``scale`` in the schema (without the schema it cannot be read
                    back as a Decimal)
datetime, aware     ``io.debezium.time.ZonedTimestamp``: ISO 8601 in UTC, ``...Z``
datetime, naive     ``io.debezium.time.MicroTimestamp``: microseconds since the epoch
date                ``io.debezium.time.Date``: days since the epoch
time                ``io.debezium.time.MicroTime``: microseconds since midnight (an
                    aware time: ``io.debezium.time.ZonedTime``, ISO 8601 in UTC)
timedelta           ``io.debezium.time.MicroDuration``: microseconds
bytes               ``bytes``: base64
UUID                ``io.debezium.data.Uuid``: its text
dict, list          ``io.debezium.data.Json``: the JSON text
set                 ``io.debezium.data.EnumSet``: the members, comma-separated
anything else       ``rowcast.Tagged``: rowcast's tagged JSON (`rowcast.codec`)
==================  ===========================================================

The key's columns are the row image's columns whose values make up `Change.pk`, in
order (a change carries the key's values, not its column names): the first column of
the image holding each value. A pk that no column holds is written as ``pk`` (``pk0``,
``pk1``... for a composite one).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from functools import lru_cache
from typing import Any, Final

from ._connect import field as _field
from .change import Action, Change

__all__ = ["DebeziumFormat", "from_debezium", "key", "value"]

_CONNECTORS: Final = {"postgres": "postgresql"}
_OPS: Final = {Action.WRITE: "c", Action.UPDATE: "u", Action.DELETE: "d"}


@lru_cache(maxsize=1)
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"rowcast-{version('rowcast')}"
    except PackageNotFoundError:
        return "rowcast"


# ---------------------------------------------------------------- values


def _image(row: Mapping[str, Any] | None) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(the image as JSON values, each column's schema)."""
    if row is None:
        return None, {}
    values: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for column, val in row.items():
        values[column], schemas[column] = _field(val)
    return values, schemas


# ---------------------------------------------------------------- the envelope


def _connector(change: Change) -> str:
    source = change.source or "rowcast"
    return _CONNECTORS.get(source, source)


def _lsn(position: str) -> int | None:
    high, sep, low = position.partition("/")
    try:
        return (int(high, 16) << 32) | int(low, 16) if sep else None
    except ValueError:
        return None


def _source(change: Change, name: str, db: str | None, row: int) -> dict[str, Any]:
    connector = _connector(change)
    us = int((Decimal(change.ts) * 1_000_000).to_integral_value())  # sources give microseconds
    source: dict[str, Any] = {
        "version": _version(),
        "connector": connector,
        "name": name,
        "ts_ms": us // 1000,
        "ts_us": us,
        "ts_ns": us * 1000,
        "snapshot": change.snapshot,
    }
    position = change.position
    if connector == "mysql":
        file, _, pos = (position or "").rpartition(":")
        source.update(
            db=db or change.schema,
            table=change.table,
            server_id=0,
            gtid=None,
            file=file or None,
            pos=int(pos) if pos.isdigit() else None,
            row=row,
            thread=None,
            query=None,
        )
    elif connector == "postgresql":
        lsn = _lsn(position or "")
        txid = change.txid
        source.update(
            db=db,
            sequence=json.dumps([None, str(lsn)]) if lsn is not None else None,
            schema=change.schema,
            table=change.table,
            txId=int(txid) if txid is not None and txid.isdigit() else None,
            lsn=lsn,
            xmin=None,
        )
    else:
        source.update(db=db, schema=change.schema, table=change.table)
    source["position"] = position
    return source


def _columns(change: Change) -> list[str]:
    """The names of the key's columns (module docstring)."""
    image = change.after if change.after is not None else change.before or {}
    values = list(change.pk) if type(change.pk) is tuple else [change.pk]
    names: list[str] = []
    for index, wanted in enumerate(values):
        for column, val in image.items():
            if column not in names and type(val) is type(wanted) and val == wanted:
                names.append(column)
                break
        else:
            names.append("pk" if len(values) == 1 else f"pk{index}")
    return names


def key(change: Change, *, name: str = "rowcast", schemas: bool = False) -> dict[str, Any]:
    """Debezium's key of `change`: its primary key's columns (module docstring)."""
    values = list(change.pk) if type(change.pk) is tuple else [change.pk]
    payload: dict[str, Any] = {}
    fields = []
    for column, val in zip(_columns(change), values, strict=True):
        payload[column], schema = _field(val)
        fields.append({**schema, "optional": False, "field": column})
    if not schemas:
        return payload
    struct = {
        "type": "struct",
        "fields": fields,
        "optional": False,
        "name": f"{_logical(name, change)}.Key",
    }
    return {"schema": struct, "payload": payload}


def _logical(name: str, change: Change) -> str:
    return ".".join(part for part in (name, change.schema, change.table) if part)


def value(
    change: Change,
    *,
    name: str = "rowcast",
    db: str | None = None,
    schemas: bool = False,
    total_order: int = 1,
    data_collection_order: int = 1,
    now: float | None = None,
) -> dict[str, Any]:
    """Debezium's value of `change`, the `total_order`-th (from 1) change of its transaction
    and the `data_collection_order`-th of its table there (module docstring)."""
    before, before_schema = _image(change.before)
    after, after_schema = _image(change.after)
    ns = time.time_ns() if now is None else int(now * 1_000_000_000)
    payload: dict[str, Any] = {
        "before": before,
        "after": after,
        "source": _source(change, name, db, total_order - 1),
        "op": "r" if change.snapshot else _OPS[change.action],
        "ts_ms": ns // 1_000_000,
        "ts_us": ns // 1000,
        "ts_ns": ns,
        "transaction": None
        if change.txid is None
        else {
            "id": change.txid,
            "total_order": total_order,
            "data_collection_order": data_collection_order,
        },
    }
    if not schemas:
        return payload
    columns: dict[str, Any] = {}
    for column in [*(after or {}), *(c for c in before or {} if c not in (after or {}))]:
        if (after or {}).get(column) is not None:
            columns[column] = after_schema[column]
        elif (before or {}).get(column) is not None:
            columns[column] = before_schema[column]
        else:  # null in both images: its type is not known here
            columns[column] = after_schema.get(column) or before_schema[column]
    logical = _logical(name, change)
    row = {
        "type": "struct",
        "fields": [{**s, "optional": True, "field": c} for c, s in columns.items()],
        "optional": True,
        "name": f"{logical}.Value",
    }
    return {"schema": _envelope(change, logical, row, payload["source"]), "payload": payload}


def _envelope(
    change: Change, logical: str, row: dict[str, Any], source: dict[str, Any]
) -> dict[str, Any]:
    def described(val: Any) -> dict[str, Any]:
        return _field(val)[1]

    connector = _connector(change)
    ts = [{"type": "int64", "optional": True, "field": f} for f in ("ts_ms", "ts_us", "ts_ns")]
    source_fields = [
        {**described(v), "optional": k not in ("version", "connector", "name"), "field": k}
        for k, v in source.items()
    ]
    for spec in source_fields:  # fields whose value is null here keep their real type
        if spec["field"] in ("pos", "row", "server_id", "txId", "lsn", "xmin"):
            spec["type"] = "int64" if spec["field"] not in ("row", "server_id") else "int32"
        elif spec["field"] == "snapshot":
            spec["type"] = "boolean"
    transaction = {
        "type": "struct",
        "fields": [
            {"type": "string", "optional": False, "field": "id"},
            {"type": "int64", "optional": False, "field": "total_order"},
            {"type": "int64", "optional": False, "field": "data_collection_order"},
        ],
        "optional": True,
        "name": "event.block",
        "version": 1,
        "field": "transaction",
    }
    return {
        "type": "struct",
        "fields": [
            {**row, "field": "before"},
            {**row, "field": "after"},
            {
                "type": "struct",
                "fields": source_fields,
                "optional": False,
                "name": f"io.debezium.connector.{connector}.Source",
                "field": "source",
            },
            {"type": "string", "optional": False, "field": "op"},
            *ts,
            transaction,
        ],
        "optional": False,
        "name": f"{logical}.Envelope",
        "version": 2,
    }


# ---------------------------------------------------------------- reading it back


def from_debezium(
    value: Mapping[str, Any] | str | bytes, key: Mapping[str, Any] | str | bytes | None = None
) -> Change:
    """The `Change` of a Debezium change event: its `value` (with or without the JSON
    converter's schema) and its `key` (the primary key; without it ``pk`` is None).

    Raises `ValueError` for a tombstone (a null value) or what is not a change event.
    """
    return Change.from_debezium(value, key)


# ---------------------------------------------------------------- for sinks


class DebeziumFormat:
    """How a sink writes changes with ``format=debezium``: each change's key and value
    JSON, in order, numbering each transaction's changes (``transaction`` block)."""

    def __init__(
        self, *, name: str = "rowcast", db: str | None = None, schemas: bool = False
    ) -> None:
        self.name = name
        self.db = db
        self.schemas = schemas

    def events(self, batch: Sequence[Sequence[Change]]) -> list[tuple[Change, str, str]]:
        """(change, key JSON, value JSON) of every change of `batch`, in commit order."""
        now = time.time()
        events = []
        dumps = json.dumps
        for transaction in batch:
            per_table: dict[tuple[str | None, str], int] = {}
            for index, change in enumerate(transaction, 1):
                table = (change.schema, change.table)
                per_table[table] = order = per_table.get(table, 0) + 1
                val = value(
                    change,
                    name=self.name,
                    db=self.db,
                    schemas=self.schemas,
                    total_order=index,
                    data_collection_order=order,
                    now=now,
                )
                k = key(change, name=self.name, schemas=self.schemas)
                events.append(
                    (change, dumps(k, separators=(",", ":")), dumps(val, separators=(",", ":")))
                )
        return events

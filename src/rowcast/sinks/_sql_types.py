"""Column types of a replica and the values written into them (private to `rowcast.sinks.sql`).

A target column's type comes from the source's column (`generic`: a type any target
database can create) or, without the source's definition, from the values of the
changes (`type_of`). `adapt` turns a row's values into what the target's column
types take.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

__all__ = [
    "DecimalText",
    "adapt",
    "column_type",
    "decimals_as_text",
    "for_dialect",
    "generic",
    "type_of",
]


class DecimalText(sa.types.UserDefinedType[decimal.Decimal]):
    """Decimal kept exactly, as text, where the database has no decimal type (SQLite).

    Declared ``DECIMAL_TEXT``: SQLite gives the column text affinity, so even a
    20-digit unsigned BIGINT is stored exactly, and a sink that reflects the
    table later knows the column by that name.
    """

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "DECIMAL_TEXT"

    def bind_processor(self, dialect: Any) -> Any:
        return lambda value: None if value is None else str(value)

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        return lambda value: None if value is None else decimal.Decimal(str(value))


def decimals_as_text(table: sa.Table, conn: sa.Connection | None = None) -> None:
    """On SQLite: decimal columns (and those made as DECIMAL_TEXT) keep Decimals exactly."""
    declared = {}
    if conn is not None:  # reflected: DECIMAL_TEXT came back as TEXT, so ask SQLite
        pragma = f"PRAGMA table_info({conn.dialect.identifier_preparer.quote(table.name)})"
        declared = {row[1]: str(row[2]).upper() for row in conn.exec_driver_sql(pragma)}
    for column in table.columns:
        kind = column.type
        numeric = isinstance(kind, sa.Numeric) and not isinstance(kind, sa.Float)
        if numeric or declared.get(column.name) == "DECIMAL_TEXT":
            column.type = DecimalText()


def column_type(source: sa.Column[Any] | None, values: Iterable[Any]) -> sa.types.TypeEngine[Any]:
    """The type of a new target column: the `source` column's, else that of the `values`."""
    values = list(values)
    if source is None:
        return type_of(values)
    kind = generic(source.type)
    # MariaDB's JSON is LONGTEXT: the values say JSON
    if isinstance(kind, sa.String) and isinstance(type_of(values), sa.JSON):
        return sa.JSON()
    return kind


def for_dialect(kind: sa.types.TypeEngine[Any], dialect: str) -> sa.types.TypeEngine[Any]:
    """`kind` as `dialect` keeps its values whole.

    MySQL's defaults lose them: DATETIME and TIME drop the microseconds (``fsp=6``
    keeps them), a DECIMAL without precision is DECIMAL(10,0) (a value-typed decimal
    becomes DECIMAL(65,30)).
    """
    if dialect not in {"mysql", "mariadb"}:
        return kind
    from sqlalchemy.dialects import mysql

    if isinstance(kind, sa.DateTime):
        return mysql.DATETIME(timezone=kind.timezone, fsp=6)
    if isinstance(kind, sa.Time):
        return mysql.TIME(fsp=6)
    if isinstance(kind, sa.Numeric) and not isinstance(kind, sa.Float) and kind.precision is None:
        return mysql.DECIMAL(65, 30)
    return kind


def generic(kind: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
    """A source column type as a generic SQLAlchemy type any target database can create."""
    name = type(kind).__name__.upper()
    if name in {"ENUM", "SET"}:
        return sa.Text()
    if name == "YEAR":
        return sa.SmallInteger()
    if name == "BIT":
        return sa.BigInteger()
    if getattr(kind, "unsigned", False) and name == "BIGINT":
        return sa.Numeric(20, 0)
    try:
        generic = kind.as_generic()
    except NotImplementedError:
        return sa.Text()
    if isinstance(generic, sa.Float):
        return sa.Double() if isinstance(generic, sa.Double) else sa.Float()
    if isinstance(generic, sa.String) and not isinstance(generic, sa.Enum):
        return sa.Text() if generic.length is None else sa.String(generic.length)
    return generic


def type_of(values: Iterable[Any]) -> sa.types.TypeEngine[Any]:
    """A column type for the first non-null of `values` (Text when all are null)."""
    for value in values:
        if value is None:
            continue
        if isinstance(value, bool):
            return sa.Boolean()
        if isinstance(value, int):
            return sa.BigInteger() if -(2**63) <= value < 2**63 else sa.Numeric(39, 0)
        if isinstance(value, float):
            return sa.Double()
        if isinstance(value, decimal.Decimal):
            return sa.Numeric()
        if isinstance(value, bytes):
            return sa.LargeBinary()
        if isinstance(value, dt.datetime):
            return sa.DateTime(timezone=value.tzinfo is not None)
        if isinstance(value, dt.date):
            return sa.Date()
        if isinstance(value, dt.time):
            return sa.Time()
        if isinstance(value, dt.timedelta):
            return sa.Interval()
        if isinstance(value, uuid.UUID):
            return sa.Uuid()
        if isinstance(value, dict | list):
            return sa.JSON()
        return sa.Text()
    return sa.Text()


def adapt(table: sa.Table, row: dict[str, Any], zones: bool) -> dict[str, Any]:
    """`row` as the target's column types take it (MySQL TIME arrives as a timedelta...).

    `zones`: the database has a time zone type (PostgreSQL); elsewhere an aware
    datetime is written as its UTC time, which the driver would write as its wall
    clock time in its own zone, dropping the zone.
    """
    out = {}
    for name, value in row.items():
        kind = table.c[name].type
        if isinstance(value, dt.datetime) and value.tzinfo is not None and not zones:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        elif isinstance(value, dt.timedelta) and isinstance(kind, sa.Time):
            value = (dt.datetime.min + value).time()
        elif isinstance(value, set | frozenset) and not isinstance(kind, sa.JSON):
            value = ",".join(sorted(map(str, value)))
        elif isinstance(value, dict | list) and not isinstance(kind, sa.JSON):
            value = json.dumps(value)
        elif isinstance(value, uuid.UUID) and not isinstance(kind, sa.Uuid):
            # a uuid column reflected as CHAR(32) (SQLite): as SQLAlchemy's Uuid stores it
            value = value.hex if getattr(kind, "length", None) == 32 else str(value)
        out[name] = value
    return out

"""PostgreSQL column values, from pgoutput's text form to Python, by type OID.

Private to `rowcast.sources.postgres`. The parsing is psycopg 3's own loaders
(C-accelerated with ``psycopg[binary]``), used without a connection: the
replication session is opened with ``DateStyle=ISO``, ``IntervalStyle=postgres``
and ``TimeZone=UTC`` so that the server writes what those loaders read.

=========================================  ===========================================
PostgreSQL                                 Python
=========================================  ===========================================
smallint, integer, bigint, oid             int
numeric                                    Decimal (NaN and infinities too)
real, double precision                     float
text, varchar, char(n), name, xml          str
boolean                                    bool
bytea                                      bytes
uuid                                       uuid.UUID
date, time, timestamp                      date, time, naive datetime
time with time zone                        time with a fixed-offset tzinfo
timestamp with time zone                   aware datetime in UTC
interval                                   timedelta (a month is 30 days, a year 365.25)
json, jsonb                                parsed: dict, list, str, int, float, bool, None
arrays of any of these (any dimension)     lists (NULL elements: None)
enums, domains                             str; a domain as its base type
anything else (inet, ranges, money, ...)   str: the server's text
=========================================  ===========================================

A value the Python type cannot hold (``'infinity'::date``, a BC date) stays
the server's text (a str), with one warning per column, rather than stopping
the stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ...backends import missing_extra
from .pgoutput import UNCHANGED, Value

log = logging.getLogger("rowcast.sources.postgres")

__all__ = ["RowLoader", "TypeMap"]

# psycopg's loaders kept as they are; every other type reads as str (its text form)
_TYPED = (
    *("int2", "int4", "int8", "oid", "numeric", "float4", "float8"),
    *("text", "varchar", "bpchar", "name", "xml", "bool", "bytea", "uuid"),
    *("date", "time", "timetz", "timestamp", "timestamptz", "interval", "json", "jsonb"),
)

# one row of pg_type, for the types pgoutput does not know by OID (enums, domains, ...)
PgType = tuple[int, str, str, int, int, str]  # oid, name, typtype, typelem, typbasetype, delim
TypeLookup = Callable[[Sequence[int]], list[PgType]]


def _psycopg() -> Any:
    try:
        import psycopg
        from psycopg import adapt, postgres, pq
        from psycopg.types import TypeInfo, array, string
    except ImportError as e:  # pragma: no cover - the extra is installed in tests
        raise missing_extra("postgres", "reading PostgreSQL", e) from e
    return psycopg, adapt, postgres, pq, TypeInfo, array, string


class TypeMap:
    """Which loader reads which type OID, learning non-built-in types as they appear."""

    def __init__(self) -> None:
        psycopg, adapt, postgres, pq, type_info, array, string = _psycopg()
        self._adapt, self._array, self._type_info = adapt, array, type_info
        self._text = pq.Format.TEXT
        self.adapters = adapt.AdaptersMap()
        for name in _TYPED:
            oid = postgres.types[name].oid
            cls = psycopg.adapters.get_loader(oid, self._text)
            if cls is not None:  # else (xml, name): the text loader below
                self.adapters.register_loader(oid, cls)
        self.adapters.register_loader(0, string.TextLoader)  # unknown OIDs read as str
        self.known: set[int] = set()
        for info in postgres.types:
            self.known.add(info.oid)
            if info.array_oid:
                self.known.add(info.array_oid)
                array.register_array(info, self.adapters)

    def learn(self, oids: Iterable[int], lookup: TypeLookup) -> None:
        """Look up the OIDs not known yet (catalog queries) and register their loaders."""
        pending = sorted(set(oids) - self.known)
        rows: dict[int, PgType] = {}
        while pending:  # an array's element or a domain's base may be new too
            self.known.update(pending)
            found = lookup(pending)
            rows.update((row[0], row) for row in found)
            pending = sorted({o for row in found for o in (row[3], row[4]) if o} - self.known)
        for oid, _, typtype, _, base, _ in rows.values():
            if typtype == "d":  # a domain reads as its base type
                while base in rows and rows[base][2] == "d":
                    base = rows[base][4]
                cls = self.adapters.get_loader(base, self._text)
                if cls is not None:
                    self.adapters.register_loader(oid, cls)
        for oid, name, _, elem, _, delimiter in rows.values():
            if elem:  # an array: of its elements' type (str when unknown)
                element = rows[elem][1] if elem in rows else name.lstrip("_")
                info = self._type_info(element, elem, oid, delimiter=delimiter)
                self._array.register_array(info, self.adapters)

    def rows(self, names: Sequence[str], oids: Sequence[int]) -> RowLoader:
        """A loader for rows of these columns (after `learn` of their OIDs)."""
        return RowLoader(self, names, oids)


class RowLoader:
    """Turns one relation's rows into ``{column: value}`` dicts (a chunk's: tuples)."""

    __slots__ = ("_loaders", "_transformer", "_warned", "names")

    def __init__(self, types: TypeMap, names: Sequence[str], oids: Sequence[int]) -> None:
        self.names = tuple(names)
        self._transformer = types._adapt.Transformer(types.adapters)
        self._transformer.set_loader_types(list(oids), types._text)
        single = types._adapt.Transformer(types.adapters)
        self._loaders = [single.get_loader(oid, types._text) for oid in oids]
        self._warned: set[int] = set()

    def image(self, row: Sequence[Value]) -> dict[str, Any]:
        """The row as Python values; an unchanged TOASTed value stays `UNCHANGED`."""
        if UNCHANGED in row:
            values = self._load([None if v is UNCHANGED else v for v in row])
            for i, value in enumerate(row):
                if value is UNCHANGED:
                    values[i] = UNCHANGED
        else:
            values = self._load(row)
        return dict(zip(self.names, values, strict=True))

    def new(self, row: Sequence[Value]) -> dict[str, Any]:
        """An inserted row (never has `UNCHANGED` values)."""
        try:
            values = self._transformer.load_sequence(row)
        except Exception:  # a value Python cannot hold: load one by one, keep the text
            values = [self._one(i, v) for i, v in enumerate(row)]
        return dict(zip(self.names, values))  # noqa: B905 - as many by protocol

    def result(self, result: Any) -> list[tuple[Any, ...]]:
        """Every row of a psycopg 3 result in text form (its columns: this loader's) at
        once (``Transformer.load_rows``: in C), each as a tuple of Python values in the
        order of `names` (a backfill's chunk: `rowcast.sources._rows.Rows`)."""
        transformer = self._transformer
        transformer.set_pgresult(result, set_loaders=False)
        try:
            return transformer.load_rows(0, result.ntuples, tuple)  # type: ignore[no-any-return]
        except Exception:  # a value Python cannot hold: row by row, keeping the text
            width = range(result.nfields)
            return [
                tuple(self._load([result.get_value(i, c) for c in width]))
                for i in range(result.ntuples)
            ]

    def key(self, row: Sequence[Value], indexes: Sequence[int]) -> dict[str, Any]:
        """Only the columns at `indexes` (the others were not sent: a key-only old row)."""
        values = self._load(row)
        return {self.names[i]: values[i] for i in indexes}

    def _load(self, row: Sequence[Any]) -> list[Any]:
        try:
            return list(self._transformer.load_sequence(row))
        except Exception:  # a value Python cannot hold: load one by one, keep the text
            return [self._one(i, v) for i, v in enumerate(row)]

    def _one(self, index: int, value: Any) -> Any:
        if value is None:
            return None
        try:
            return self._loaders[index].load(value)
        except Exception as error:
            if index not in self._warned:
                self._warned.add(index)
                log.warning(
                    "column %s: %s; its values that Python cannot hold are kept as the "
                    "server's text (first: %r)",
                    self.names[index],
                    error,
                    value,
                )
            return bytes(value).decode()

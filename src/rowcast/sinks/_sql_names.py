"""Which target table each source table replicates into (private to `rowcast.sinks.sql`).

A source table ``schema.table`` replicates into the target table ``table``, or the
one the sink's ``map`` option names (``map=shop.orders:shop_orders,crm.orders:crm_orders``).
Two source tables never share one target table by accident: the sink records in the
target's ``rowcast_replicas`` table which source table each of its tables replicates
(and whether the sink created it), and refuses a second source table for it, whether
it comes in the same process or in a relay started later, with the ``map`` that
gives it a table of its own.
"""

from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa

from ..errors import ConfigError

__all__ = ["REGISTRY", "Names", "Source", "parse_map", "shown"]

REGISTRY = "rowcast_replicas"
Source = tuple[str | None, str]
"""A source table: (schema, table)."""


def shown(source: Source) -> str:
    """``schema.table``, or ``table`` without a schema."""
    schema, table = source
    return table if schema is None else f"{schema}.{table}"


def parse_map(url: str, value: str | Mapping[str, str] | None) -> dict[Source, str]:
    """The ``map`` option (``schema.table:target,...`` or a mapping) as source -> target."""
    if value is None:
        return {}
    pairs = list(value.items()) if isinstance(value, Mapping) else []
    if isinstance(value, str):
        for item in filter(None, (part.strip() for part in value.split(","))):
            source, _, target = item.rpartition(":")
            pairs.append((source, target))
    result: dict[Source, str] = {}
    for source, target in pairs:
        schema, dot, table = str(source).partition(".")
        if not (schema and dot and table and target):
            raise ConfigError(
                f"{url}: map takes schema.table:target pairs separated by commas "
                f"(map=shop.orders:shop_orders,crm.orders:crm_orders), not {source}:{target}"
            )
        if (schema, table) in result:
            raise ConfigError(f"{url}: {schema}.{table} is mapped twice in map=")
        if target == REGISTRY:
            raise ConfigError(f"{url}: {REGISTRY} is the sink's own table; map to another name")
        for other, taken in result.items():
            if taken == target:
                first, second = sorted([shown(other), f"{schema}.{table}"])
                raise ConfigError(f"{url}: {first} and {second} are both mapped to {target}")
        result[(schema, table)] = target
    return result


def _registry(schema: str | None) -> sa.Table:
    return sa.Table(
        REGISTRY,
        sa.MetaData(schema=schema),
        sa.Column("target_table", sa.String(255), primary_key=True),
        sa.Column("source_schema", sa.String(255)),
        sa.Column("source_table", sa.String(255), nullable=False),
        sa.Column("created", sa.Boolean, nullable=False),  # by the sink; else it existed
    )


class Names:
    """The target table of each source table, and the record that keeps them apart."""

    def __init__(self, url: str, mapping: dict[Source, str], schema: str | None) -> None:
        self.url = url
        self._map = mapping
        self._registry = _registry(schema)
        self._claimed: dict[str, Source] = {}  # target -> source, in this process

    def target(self, source: Source) -> str:
        """The table `source` replicates into; a `ConfigError` if another one of this
        process does already."""
        name = self._map.get(source, source[1])
        if name == REGISTRY:
            raise ConfigError(
                f"{self.url}: {REGISTRY} is the sink's own table; give {shown(source)} "
                f"another with map=<schema>.{REGISTRY}:<table>"
            )
        owner = self._claimed.setdefault(name, source)
        if owner != source:
            first, second = sorted([shown(owner), shown(source)])
            both = ",".join(_pair(s) for s in (owner, source) if s[0] is not None)
            raise ConfigError(
                f"{self.url}: {first} and {second} would both replicate into table {name}; "
                f"give one a table of its own: add {_hint(source, owner)} to the sink's URL "
                f"(or name both: map={both})"
            )
        return name

    def record(
        self, conn: sa.Connection, name: str, source: Source, *, created: bool, create: bool
    ) -> None:
        """Record in ``rowcast_replicas`` that table `name` (`created` by the sink or not)
        replicates `source`, or refuse when it records another source table for it.

        The record is made when missing if the sink may `create`; else it is kept only
        where it exists.
        """
        registry = self._registry
        if create:
            registry.create(conn, checkfirst=True)
        elif not sa.inspect(conn).has_table(REGISTRY, schema=registry.schema):
            return
        c = registry.c
        row = conn.execute(
            sa.select(c.source_schema, c.source_table).where(c.target_table == name)
        ).first()
        if row is None:
            conn.execute(
                registry.insert().values(
                    target_table=name,
                    source_schema=source[0],
                    source_table=source[1],
                    created=created,
                )
            )
        elif (row[0], row[1]) != source:
            quoted = name.replace("'", "''")
            where = f"{registry.schema}.{REGISTRY}" if registry.schema else REGISTRY
            raise ConfigError(
                f"{self.url}: table {name} replicates {shown((row[0], row[1]))} "
                f"({REGISTRY} records it); {shown(source)} would share it: give it a table "
                f"of its own with {_hint(source, (row[0], row[1]))}. If {name} should replicate "
                f"{shown(source)} instead, empty it and delete its record: "
                f"DELETE FROM {where} WHERE target_table = '{quoted}';"
            )


def _pair(source: Source) -> str:
    """``schema.table:schema_table``: a ``map`` entry giving `source` a table of its own."""
    return f"{shown(source)}:{source[0]}_{source[1]}"


def _hint(source: Source, other: Source) -> str:
    """The ``map`` option that separates `source` from `other` (only a table with a
    schema can be mapped)."""
    return f"map={_pair(source if source[0] is not None else other)}"

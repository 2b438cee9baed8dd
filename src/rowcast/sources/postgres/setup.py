"""What a PostgreSQL server needs before rowcast can read it, checked and (where safe) made.

Private to `rowcast.sources.postgres` and ``rowcast doctor``. Every function
takes a cursor of an autocommit connection. Checks come with the statement
that fixes them; the source raises the failed server checks as one
`ConfigError`, and only warns about replica identities (see `identity_checks`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import re
from collections.abc import Sequence
from typing import Any

from ...errors import ConfigError
from ..base import Check
from .server import psycopg2

__all__ = [
    "PubState",
    "Table",
    "all_checks",
    "chosen_tables",
    "create_publication",
    "create_slot",
    "identity_checks",
    "is_literal",
    "prepare",
    "publication_state",
    "quote",
    "server_checks",
    "set_full_identity",
]

log = logging.getLogger("rowcast.sources.postgres")

_PLAIN = re.compile(r"[a-z_][a-z0-9_$]*")
_IDENTITY = {"d": "default", "n": "nothing", "f": "full", "i": "index"}


def quote(*names: str) -> str:
    """``schema.table`` as SQL would need it written (double quotes only where needed)."""
    return ".".join(n if _PLAIN.fullmatch(n) else '"' + n.replace('"', '""') + '"' for n in names)


def is_literal(pattern: str) -> bool:
    return not any(c in pattern for c in "*?[")


def matches(patterns: Sequence[str], schema: str, table: str) -> bool:
    full = f"{schema}.{table}"
    return any(fnmatch.fnmatchcase(full, p) or fnmatch.fnmatchcase(table, p) for p in patterns)


@dataclasses.dataclass(frozen=True)
class Table:
    schema: str
    name: str
    identity: str  #: pg_class.relreplident: d, n, f or i
    has_pk: bool

    @property
    def sql(self) -> str:
        return quote(self.schema, self.name)


@dataclasses.dataclass(frozen=True)
class PubState:
    all_tables: bool
    tables: frozenset[tuple[str, str]]  #: (schema, table) published, when not all_tables
    publishes: str  #: e.g. "insert, update, delete, truncate"


def _user_tables(cur: Any) -> list[Table]:
    cur.execute(
        "SELECT n.nspname, c.relname, c.relreplident, EXISTS (SELECT 1 FROM pg_index i "
        "WHERE i.indrelid = c.oid AND i.indisprimary) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') "
        "AND NOT c.relispartition AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg\\_%%' ORDER BY 1, 2"
    )
    return [Table(str(s), str(t), str(r), bool(pk)) for s, t, r, pk in cur.fetchall()]


def publication_state(cur: Any, publication: str) -> PubState | None:
    """The publication as it is, or None when it does not exist."""
    cur.execute(
        "SELECT puballtables, concat_ws(', ', CASE WHEN pubinsert THEN 'insert' END, "
        "CASE WHEN pubupdate THEN 'update' END, CASE WHEN pubdelete THEN 'delete' END, "
        "CASE WHEN pubtruncate THEN 'truncate' END) FROM pg_publication WHERE pubname = %s",
        (publication,),
    )
    row = cur.fetchone()
    if row is None:
        return None
    cur.execute(
        "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s",
        (publication,),
    )
    tables = frozenset((str(s), str(t)) for s, t in cur.fetchall())
    return PubState(bool(row[0]), tables, str(row[1]))


def chosen_tables(cur: Any, patterns: Sequence[str] | None, pub: PubState | None) -> list[Table]:
    """The tables a source reads: those matching `patterns`, else the published ones."""
    tables = _user_tables(cur)
    if patterns is not None:
        return [t for t in tables if matches(patterns, t.schema, t.name)]
    if pub is not None and not pub.all_tables:
        return [t for t in tables if (t.schema, t.name) in pub.tables]
    return tables


def server_checks(cur: Any, slot: str, publication: str, user: str) -> list[Check]:
    """wal_level, the replication privilege, free slots and senders, the slot itself."""
    cur.execute(
        "SELECT current_setting('wal_level'), current_setting('max_replication_slots')::int, "
        "current_setting('max_wal_senders')::int, (SELECT count(*) FROM pg_replication_slots), "
        "(SELECT count(*) FROM pg_stat_replication), r.rolsuper, r.rolreplication, "
        "current_database() FROM pg_roles r WHERE r.rolname = current_user"
    )
    wal_level, max_slots, max_senders, slots, senders, superuser, replication, db = cur.fetchone()
    role = quote(user) if user else "current_user"
    cur.execute(
        "SELECT slot_type, plugin, database, active_pid, confirmed_flush_lsn, "
        "pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)) "
        "FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    )
    found = cur.fetchone()
    checks = [
        Check(
            "wal_level",
            wal_level == "logical",
            wal_level,
            "" if wal_level == "logical" else "ALTER SYSTEM SET wal_level = logical; then "
            "restart the server (scripts/services.sh does it)",
        ),
        Check(
            "replication privilege",
            bool(superuser or replication),
            "superuser" if superuser else ("granted" if replication else "missing"),
            "" if superuser or replication else f"ALTER ROLE {role} REPLICATION;",
        ),
        Check(
            "max_replication_slots",
            found is not None or slots < max_slots,
            f"{max_slots} ({slots} used)",
            "" if found is not None or slots < max_slots else
            f"ALTER SYSTEM SET max_replication_slots = {max_slots + 10}; then restart the "
            "server (or drop unused slots: SELECT pg_drop_replication_slot(slot_name) FROM "
            "pg_replication_slots WHERE NOT active;)",
        ),
        Check(
            "max_wal_senders",
            senders < max_senders,
            f"{max_senders} ({senders} used)",
            "" if senders < max_senders else
            f"ALTER SYSTEM SET max_wal_senders = {max_senders + 10}; then restart the server",
        ),
    ]  # fmt: skip
    checks.append(_slot_check(slot, found, db))
    return checks


def _slot_check(slot: str, found: Any, db: str) -> Check:
    name = f"slot {slot}"
    if found is None:
        return Check(name, True, "missing: rowcast creates it on its first read")
    kind, plugin, database, pid, confirmed, held = found
    other = f"choose another ?slot= name, or drop it: SELECT pg_drop_replication_slot('{slot}');"
    if kind != "logical" or plugin != "pgoutput":
        return Check(name, False, f"a {kind} slot using {plugin or 'no plugin'}", other)
    if database != db:
        return Check(name, False, f"belongs to database {database!r}", other)
    value = f"pgoutput, confirmed up to {confirmed}, holding {held} of WAL"
    if pid is not None:
        return Check(
            name,
            False,
            f"{value}, in use by pid {pid}",
            "stop its other reader first, or give this one its own ?slot= name",
        )
    return Check(name, True, value)


def publication_checks(
    publication: str,
    pub: PubState | None,
    patterns: Sequence[str] | None,
    tables: Sequence[Table],
    superuser: bool,
) -> list[Check]:
    """The publication: exists, or can be made; holds every table named literally."""
    name = f"publication {publication}"
    if pub is None:
        literal = patterns is not None and all(is_literal(p) for p in patterns)
        if literal:
            return [Check(name, True, "missing: rowcast creates it FOR TABLE the chosen tables")]
        return [
            Check(
                name,
                superuser,
                "missing: rowcast creates it FOR ALL TABLES",
                ""
                if superuser
                else f"CREATE PUBLICATION {publication} FOR ALL TABLES; as a "
                "superuser, or name the tables with ?tables=schema.table,...",
            )
        ]
    value = "FOR ALL TABLES" if pub.all_tables else f"FOR {len(pub.tables)} tables"
    ok = all(a in pub.publishes for a in ("insert", "update", "delete"))
    fix = "" if ok else (
        f"ALTER PUBLICATION {publication} SET (publish = 'insert, update, delete, truncate');"
    )  # fmt: skip
    checks = [Check(name, ok, f"{value}, publishes {pub.publishes or 'nothing'}", fix)]
    if not pub.all_tables and patterns is not None:
        names = [p for p in patterns if is_literal(p)]
        for table in tables:
            if (table.schema, table.name) not in pub.tables and matches(
                names, table.schema, table.name
            ):
                checks.append(
                    Check(
                        f"{name} has {table.schema}.{table.name}",
                        False,
                        "missing: its changes would never arrive",
                        f"ALTER PUBLICATION {publication} ADD TABLE {table.sql};",
                    )
                )
    return checks


def identity_checks(tables: Sequence[Table]) -> list[Check]:
    """REPLICA IDENTITY FULL for each table: without it updates and deletes carry no before."""
    checks = []
    for table in tables:
        ok = table.identity == "f"
        value = _IDENTITY.get(table.identity, table.identity)
        if table.identity == "d":
            value += " (primary key)" if table.has_pk else ", no primary key"
        fix = ""
        if not ok:
            fix = f"ALTER TABLE {table.sql} REPLICA IDENTITY FULL;"
            if table.identity == "n" or (table.identity == "d" and not table.has_pk):
                fix += " (once published, the server refuses its UPDATEs and DELETEs without it)"
            else:
                fix += " (else updates and deletes carry the key only, no before image)"
        checks.append(Check(f"replica identity {table.schema}.{table.name}", ok, value, fix))
    return checks


def create_publication(
    cur: Any, publication: str, patterns: Sequence[str] | None, tables: Sequence[Table]
) -> str:
    """CREATE PUBLICATION: FOR TABLE the chosen tables when all `patterns` are literal
    names, else FOR ALL TABLES. Returns what it made; a literal name that matches no
    table is a `ConfigError`."""
    pg = psycopg2()
    sql = pg.sql
    if patterns is not None and all(is_literal(p) for p in patterns):
        for pattern in patterns:
            if not any(matches([pattern], t.schema, t.name) for t in tables):
                raise ConfigError(
                    f"tables: no table {pattern!r} to publish: create it first, or fix the name"
                )
        names = sql.SQL(", ").join(sql.Identifier(t.schema, t.name) for t in tables)
        what = sql.SQL("FOR TABLE {}").format(names)
    else:
        what = sql.SQL("FOR ALL TABLES")
    statement = sql.SQL("CREATE PUBLICATION {} {}").format(sql.Identifier(publication), what)
    try:
        cur.execute(statement)
    except pg.errors.DuplicateObject:  # made by another reader just now: use it
        return "existing"
    except pg.Error as error:
        raise ConfigError(
            f"cannot create publication {publication}: {str(error).strip()} (create it as a "
            f"superuser: {statement.as_string(cur)};)"
        ) from error
    return str(statement.as_string(cur))


def create_slot(cur: Any, slot: str) -> None:
    """A pgoutput slot named `slot` (it waits for transactions running now to end)."""
    pg = psycopg2()
    try:
        cur.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    except pg.errors.DuplicateObject:  # made by another reader just now: use it
        pass
    except pg.Error as error:
        raise ConfigError(f"cannot create replication slot {slot}: {str(error).strip()}") from error


def set_full_identity(cur: Any, tables: Sequence[Table]) -> list[Table]:
    """ALTER TABLE ... REPLICA IDENTITY FULL where it is not; the tables changed."""
    pg = psycopg2()
    done = []
    for table in tables:
        if table.identity == "f":
            continue
        statement = pg.sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(
            pg.sql.Identifier(table.schema, table.name)
        )
        try:
            cur.execute(statement)
        except pg.Error as error:
            raise ConfigError(
                f"replica_identity=full: cannot alter {table.schema}.{table.name}: "
                f"{str(error).strip()} (run as its owner: {statement.as_string(cur)};)"
            ) from error
        done.append(table)
    return done


def all_checks(
    cur: Any, slot: str, publication: str, user: str, patterns: Sequence[str] | None
) -> list[Check]:
    """Every check ``rowcast doctor`` prints: server, slot, publication, each table."""
    checks = server_checks(cur, slot, publication, user)
    pub = publication_state(cur, publication)
    tables = chosen_tables(cur, patterns, pub)
    superuser = checks[1].value == "superuser"
    checks += publication_checks(publication, pub, patterns, tables, superuser)
    return checks + identity_checks(tables)


def prepare(
    cur: Any,
    target: str,
    slot: str,
    publication: str,
    user: str,
    patterns: Sequence[str] | None,
    *,
    full: bool,
    warned: set[str],
) -> None:
    """What a source does before it reads: check the server (one `ConfigError` with every
    fix), set or warn about replica identities (each table once: `warned`), create the
    publication and the slot when missing."""
    checks = server_checks(cur, slot, publication, user)
    pub = publication_state(cur, publication)
    tables = chosen_tables(cur, patterns, pub)
    superuser = checks[1].value == "superuser"
    checks += publication_checks(publication, pub, patterns, tables, superuser)
    problems = [c for c in checks if not c.ok and not c.name.startswith("slot ")]
    if problems:
        lines = "\n".join(f"  - {c.name} is {c.value}: {c.fix}" for c in problems)
        raise ConfigError(f"{target} cannot be read by logical replication:\n{lines}")
    found = next(c for c in checks if c.name == f"slot {slot}")
    if not found.ok and "in use" not in found.value:  # in use: the reader may be letting go
        raise ConfigError(f"{target}: slot {slot} is {found.value}: {found.fix}")
    if full:
        for table in set_full_identity(cur, tables):
            log.info("set REPLICA IDENTITY FULL on %s.%s", table.schema, table.name)
        tables = chosen_tables(cur, patterns, pub)
    for check in identity_checks(tables):
        if not check.ok and check.name not in warned:
            warned.add(check.name)
            log.warning(
                "%s is %s: %s (or read with replica_identity=full)",
                check.name,
                check.value,
                check.fix,
            )
    if pub is None:
        log.info("created publication: %s", create_publication(cur, publication, patterns, tables))
    if found.value.startswith("missing"):
        create_slot(cur, slot)
        log.info("created replication slot %s (pgoutput)", slot)

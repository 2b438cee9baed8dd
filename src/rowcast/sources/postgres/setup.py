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
from collections.abc import Sequence
from typing import Any

from ..._words import counted
from ...errors import ConfigError
from ..base import Check
from ..signal import NAME as SIGNAL
from .health import lost
from .objects import comment, is_ours, slot_reader
from .publication import (
    add_tables,
    create_publication,
    keyless_error,
    missing_signal,
    quote,
    record,
    signal_fix,
)
from .server import psycopg2

__all__ = [
    "PubState",
    "Table",
    "all_checks",
    "chosen_tables",
    "create_slot",
    "identity_checks",
    "is_literal",
    "may_create",
    "new_tables",
    "pattern_checks",
    "prepare",
    "publication_state",
    "quote",
    "server_checks",
    "set_full_identity",
]

log = logging.getLogger("rowcast.sources.postgres")

_IDENTITY = {"d": "default", "n": "nothing", "f": "full", "i": "index"}


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
    owned: bool = True  #: whether the current user owns it (may publish it)

    @property
    def sql(self) -> str:
        return quote(self.schema, self.name)

    @property
    def keyed(self) -> bool:
        """Whether the server can log its updates and deletes (a key or FULL identity)."""
        return self.identity in ("f", "i") or (self.identity == "d" and self.has_pk)


@dataclasses.dataclass(frozen=True)
class PubState:
    all_tables: bool
    tables: frozenset[tuple[str, str]]  #: (schema, table) published, when not all_tables
    publishes: str  #: e.g. "insert, update, delete, truncate"


def _user_tables(cur: Any) -> list[Table]:
    cur.execute(
        "SELECT n.nspname, c.relname, c.relreplident, EXISTS (SELECT 1 FROM pg_index i "
        "WHERE i.indrelid = c.oid AND i.indisprimary), pg_has_role(c.relowner, 'USAGE') "
        "FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') "
        "AND NOT c.relispartition AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg\\_%%' AND c.relname <> %s ORDER BY 1, 2",
        (SIGNAL,),
    )
    return [Table(str(s), str(t), str(r), bool(k), bool(o)) for s, t, r, k, o in cur.fetchall()]


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
        "pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)), wal_status "
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
    kind, plugin, database, pid, confirmed, held, wal_status = found
    other = f"choose another ?slot= name, or drop it: SELECT pg_drop_replication_slot('{slot}');"
    if kind != "logical" or plugin != "pgoutput":
        return Check(name, False, f"a {kind} slot using {plugin or 'no plugin'}", other)
    if database != db:
        return Check(name, False, f"belongs to database {database!r}", other)
    if wal_status == "lost":
        return Check(name, False, "invalidated (wal_status lost)", lost(slot))
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
    may_create: bool,
    ours: bool,
) -> list[Check]:
    """The publication: exists, or may be made; holds every table named literally."""
    name = f"publication {publication}"
    if pub is None:
        listed = f"FOR TABLE the {len(tables)} chosen tables"
        if may_create:
            return [Check(name, True, f"missing: rowcast creates it {listed}")]
        strangers = ", ".join(t.sql for t in tables if not t.owned) or "-"
        return [
            Check(
                name,
                False,
                f"missing, and this user may not create it {listed}",
                "GRANT CREATE ON DATABASE <the database> TO <this user>; and make it the owner "
                f"of the tables it does not own ({strangers}), or read as a superuser",
            )
        ]
    value = "FOR ALL TABLES" if pub.all_tables else f"FOR {counted(len(pub.tables), 'table')}"
    ok = all(a in pub.publishes for a in ("insert", "update", "delete"))
    fix = "" if ok else (
        f"ALTER PUBLICATION {publication} SET (publish = 'insert, update, delete, truncate');"
    )  # fmt: skip
    checks = [Check(name, ok, f"{value}, publishes {pub.publishes or 'nothing'}", fix)]
    if not pub.all_tables and patterns is not None and not ours:
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
    """Each table's replica identity: a failure without a key (the server would refuse the
    app's UPDATEs and DELETEs once the table is published); a key only is fine, though
    updates and deletes then carry the key alone as before image (FULL gives every column)."""
    checks = []
    for table in tables:
        value = _IDENTITY.get(table.identity, table.identity)
        if table.identity == "d":
            value += " (primary key)" if table.has_pk else ", no primary key"
        ok = table.keyed
        fix = ""
        if not ok:
            fix = (
                f"ALTER TABLE {table.sql} REPLICA IDENTITY FULL; (once published, the server "
                "refuses its UPDATEs and DELETEs without it), or leave it out with --tables"
            )
        elif table.identity != "f":
            value += ": before images hold the key only"
        checks.append(Check(f"replica identity {table.schema}.{table.name}", ok, value, fix))
    return checks


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


def may_create(cur: Any, tables: Sequence[Table]) -> bool:
    """Whether this user may CREATE PUBLICATION FOR TABLE `tables`: a superuser, or CREATE
    on the database and the owner of each table."""
    cur.execute(
        "SELECT rolsuper, has_database_privilege(current_database(), 'CREATE') "
        "FROM pg_roles WHERE rolname = current_user"
    )
    superuser, create = cur.fetchone()
    return bool(superuser) or (bool(create) and all(t.owned for t in tables))


def pattern_checks(cur: Any, patterns: Sequence[str] | None) -> list[Check]:
    """Each pattern matches a table: one that matches none is a typo (or a table to come)."""
    if not patterns:
        return []
    tables = _user_tables(cur)
    names = [f"{t.schema}.{t.name}" for t in tables]
    shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
    checks = []
    for pattern in patterns:
        count = sum(matches([pattern], t.schema, t.name) for t in tables)
        if count:
            checks.append(Check(f"tables {pattern}", True, f"matches {counted(count, 'table')}"))
        else:
            checks.append(
                Check(
                    f"tables {pattern}",
                    False,
                    "matches no table",
                    f"fix the pattern (on schema.table or table): this database's tables are "
                    f"{shown or 'none'}; --allow-empty if they are created later",
                )
            )
    return checks


def all_checks(
    cur: Any,
    slot: str | None,
    publication: str | None,
    user: str,
    patterns: Sequence[str] | None,
) -> list[Check]:
    """Every check ``rowcast doctor`` prints: server, slot, publication, each table.

    Without a `slot` (and `publication`), what a tail would make: a temporary slot and
    a publication of its own."""
    checks = server_checks(cur, slot or "", publication or "", user)
    if slot is None:
        checks[-1] = Check(
            "slot",
            True,
            "none named: a tail makes a temporary one, a relay one named after its checkpoint",
        )
    pub = publication_state(cur, publication) if publication else None
    ours = publication is None or pub is None or is_ours(cur, publication)
    tables = chosen_tables(cur, patterns, None if ours else pub)
    checks += publication_checks(
        publication or "(a tail's own)", pub, patterns, tables, may_create(cur, tables), ours
    )
    return checks + pattern_checks(cur, patterns) + identity_checks(tables)


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
    reader: str,
    temporary: bool,
    allow_empty: bool = False,
) -> bool:
    """What a source does before it reads: check the server (one `ConfigError` with every
    fix), refuse a slot that is another reader's and tables without a key (before anything
    is created), set or warn about replica identities (each table once: `warned`), create
    the publication (listing the tables) and, unless `temporary`, the slot when missing.
    Returns whether the publication is rowcast's own (tables created later join it)."""
    checks = server_checks(cur, slot, publication, user)
    pub = publication_state(cur, publication)
    ours = pub is None or is_ours(cur, publication)
    tables = chosen_tables(cur, patterns, None if ours else pub)
    checks += publication_checks(
        publication, pub, patterns, tables, pub is not None or may_create(cur, tables), ours
    )
    problems = [c for c in checks if not c.ok and not c.name.startswith("slot ")]
    if not problems and not allow_empty:
        problems = [c for c in pattern_checks(cur, patterns) if not c.ok]
    if problems:
        lines = "\n".join(
            f"  - {c.name} {'' if c.value.startswith('matches') else 'is '}{c.value}: {c.fix}"
            for c in problems
        )
        raise ConfigError(f"{target} cannot be read by logical replication:\n{lines}")
    found = next(c for c in checks if c.name == f"slot {slot}")
    if not temporary:
        if not found.ok and "in use" not in found.value:  # in use: it may be letting go
            state = found.value if found.value.startswith("belongs") else f"is {found.value}"
            raise ConfigError(f"{target}: slot {slot} {state}: {found.fix}")
        owner = slot_reader(cur, slot)
        if owner is not None and owner.startswith("checkpoint ") and owner != reader:
            raise ConfigError(
                f"{target}: slot {slot} belongs to another reader ({owner}): reading it would "
                "move its position, and that reader would never get the changes read here. "
                "Leave out ?slot= (rowcast tail then reads with a temporary slot of its own; "
                "a relay with one named after its checkpoint), or give this reader its own name"
            )
    adding = list(tables) if pub is None else []
    if pub is not None and ours and not pub.all_tables:
        adding = [t for t in tables if (t.schema, t.name) not in pub.tables]
    if full:
        for table in set_full_identity(cur, adding):
            log.info("set REPLICA IDENTITY FULL on %s.%s", table.schema, table.name)
        tables = chosen_tables(cur, patterns, None if ours else pub)
        adding = [t for t in tables if any(t.sql == a.sql for a in adding)]
    keyless = [t for t in adding if not t.keyed]
    if keyless:
        raise keyless_error(target, keyless)
    for check in identity_checks(tables):
        if check.ok and check.value != "full" and check.name not in warned:
            warned.add(check.name)
            shown = check.name.removeprefix("replica identity ")
            log.warning(
                "%s is %s: ALTER TABLE %s REPLICA IDENTITY FULL; (or read with "
                "?replica_identity=full in the URL, which runs it; it stays)",
                check.name,
                check.value,
                quote(*shown.split(".", 1)),
            )
    lacking = missing_signal(cur, publication, pub.all_tables or pub.tables if pub else None)
    signal = [Table(*lacking, "d", True)] if lacking and ours else []
    if lacking and not ours and publication not in warned:  # a user's publication
        warned.add(publication)
        log.warning("%s: backfills asked of this database never reach this reader: %s",
                    publication, signal_fix(publication, lacking))  # fmt: skip
    if pub is None:
        made = create_publication(cur, publication, [*tables, *signal], comment(slot, reader))
        log.info("created publication: %s", made)
    elif adding or signal:
        for table in add_tables(cur, publication, [*adding, *signal]):
            log.info("added %s to publication %s", table.sql, publication)
    if not temporary and found.value.startswith("missing"):
        create_slot(cur, slot)
        log.info("created replication slot %s (pgoutput)", slot)
        if slot_reader(cur, slot) is None:  # no publication of rowcast's names it: one does
            record(cur, slot, reader)
    return ours


def new_tables(
    cur: Any, publication: str, patterns: Sequence[str] | None, warned: set[str]
) -> list[Table]:
    """Add the tables matching `patterns` (every table when None) that rowcast's own
    `publication` lacks, created since it was made; a keyless one is left out, with a
    warning (once: `warned`). The tables added."""
    pub = publication_state(cur, publication)
    if pub is None or pub.all_tables:
        return []
    missing = [
        t for t in chosen_tables(cur, patterns, None) if (t.schema, t.name) not in pub.tables
    ]
    keyed = []
    for table in missing:
        if table.keyed:
            keyed.append(table)
        elif table.sql not in warned:
            warned.add(table.sql)
            log.warning(
                "new table %s is not captured: it has no primary key and no replica identity "
                "(published, the app's UPDATEs on it would fail); ALTER TABLE %s REPLICA "
                "IDENTITY FULL; and it is added at the next look",
                table.sql,
                table.sql,
            )
    added = add_tables(cur, publication, keyed)
    for table in added:
        log.info("added new table %s to publication %s", table.sql, publication)
    return added

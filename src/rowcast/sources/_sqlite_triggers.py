"""The SQL side of the SQLite trigger source: its tables, its triggers, and keeping them true.

Three triggers per captured table, named ``rowcast_<table>_insert``,
``rowcast_<table>_update`` and ``rowcast_<table>_delete`` (AFTER, FOR EACH
ROW), each insert one row into ``rowcast_changes``:

==========  =================================================================
``seq``     INTEGER PRIMARY KEY: commit order (see below)
``tbl``     the table's name; ``op``: ``write``, ``update`` or ``delete``
``pk``      JSON array of the primary key's values (the rowid when none)
``before``  JSON object of the old row (NULL for a write)
``after``   JSON object of the new row (NULL for a delete)
``ts``      UTC epoch seconds when the row was written (millisecond precision)
``tc``      the writer connection's ``total_changes()``
``sealed``  1 when a reader found that a transaction ends at this row
==========  =================================================================

Values are JSON as ``json_object`` writes them, except REAL (``["r", "%!.17g"]``,
which keeps every bit; ``json_object`` keeps 15 digits and writes infinity as
bare ``Inf``) and BLOB (``["b", "<hex>"]``; ``json_object`` refuses blobs). A
column value is never a JSON array otherwise, so a two-item array is a tag.
(Measured on SQLite 3.40, batched writes: one ``quote(x) || ',' || ...``
string per image is no faster than these JSON images, ``quote()`` costing
~130 ns a call, and it cuts text at a NUL; a trigger that inserts a constant
row already costs ~1.8x the bare writes, one that builds any text image ~2.9x.)

SQLite runs one writer at a time and gives a new row the highest ``seq`` plus
one (pruning never removes the newest row, so ``seq`` never goes back), so
the rows of one transaction are contiguous and in the order the statements
wrote them, and a later commit always has higher seqs. (AUTOINCREMENT would
cost every trigger an update of ``sqlite_sequence``.)
SQLite has no transaction id that a trigger can read: to a trigger, the next
statement of the same transaction and the first of the next transaction on
the same connection look the same. Boundaries are therefore found from
outside, and only true ones are ever found: the newest row ends a transaction
(a reader reads it and records that as ``sealed`` in one write transaction,
committed before it hands out the rows up to it); and within one
transaction ``tc`` never decreases, so a row whose ``tc`` is below the row's
before it starts a new transaction (of another connection). Rows between two
found boundaries are one transaction or several consecutive whole ones. As
a seal only goes on the row that is newest when it commits, no seal ever
lands inside rows a reader has handed out as one group: every reader,
later or restarted, groups the same rows alike, so ids made of a group's
position stay the same.
(The writer's ``PRAGMA data_version`` would tell more connections apart, but
reading it costs every trigger a fifth of its time.)

``rowcast_readers`` keeps each checkpointed reader's position (to know which
rows every one of them has passed) and ``rowcast_state`` the highest seq
removed (``pruned``), so that resuming before it is refused, not silently
lossy.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Final, NamedTuple

__all__ = [
    "CHANGES",
    "Plan",
    "Table",
    "apply",
    "create_tables",
    "plan",
    "remove",
    "seal_newest",
    "tables",
    "trigger_name",
]

CHANGES: Final = "rowcast_changes"
PREFIX: Final = "rowcast_"
_OPS: Final = (("insert", "write", "NEW"), ("update", "update", None), ("delete", "delete", "OLD"))
_CHUNK: Final = 60  # columns per json_object call: SQLite allows 127 arguments by default
_TS: Final = "(julianday('now') - 2440587.5) * 86400.0"

_SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS {CHANGES} (
    seq INTEGER PRIMARY KEY,
    tbl TEXT NOT NULL,
    op TEXT NOT NULL,
    pk TEXT,
    before TEXT,
    after TEXT,
    ts REAL NOT NULL,
    tc INTEGER,
    sealed INTEGER
);
CREATE TABLE IF NOT EXISTS rowcast_readers (
    name TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rowcast_state (key TEXT PRIMARY KEY, value INTEGER NOT NULL)
"""


class Table(NamedTuple):
    """A table to capture: its name, columns (in order) and primary key (or rowid) columns."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    integer: str | None = None  #: the rowid's name or alias (it holds integers only)


class Plan(NamedTuple):
    """What it takes to make the triggers true: names to drop, (name, sql) to create."""

    drop: list[str]
    create: list[tuple[str, str]]


def ident(name: str) -> str:
    """`name` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """`text` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def trigger_name(table: str, op: str) -> str:
    return f"{PREFIX}{table}_{op}"


def create_tables(conn: sqlite3.Connection) -> None:
    """Create rowcast's tables when missing (inside the caller's write transaction)."""
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)


def has_tables(conn: sqlite3.Connection) -> bool:
    found = conn.execute(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN "
        f"('{CHANGES}', 'rowcast_readers', 'rowcast_state')"
    ).fetchone()[0]
    return bool(found == 3)


def tables(conn: sqlite3.Connection, wanted: Callable[[str], bool]) -> list[Table]:
    """The ordinary tables of ``main`` that `wanted` accepts; never SQLite's nor rowcast's own."""
    kinds = {
        name: "without" if without else "rowid"
        for name, without in conn.execute(
            "SELECT name, wr FROM pragma_table_list WHERE schema = 'main' AND type = 'table' "
            "ORDER BY name"
        )
        if not name.startswith(("sqlite_", PREFIX)) and wanted(name)
    }
    names = list(kinds)
    found = []
    for name in names:
        info = conn.execute(
            "SELECT name, pk, upper(type) FROM pragma_table_xinfo(?) WHERE hidden != 1 "
            "ORDER BY cid",
            (name,),
        ).fetchall()
        columns = tuple(column for column, _, _ in info)
        key = tuple(column for column, pk, _ in sorted(info, key=lambda c: c[1]) if pk)
        integer = None
        if not key:  # a rowid table: its rowid, under a name no column hides
            taken = {column.lower() for column in columns}
            integer = next((a for a in ("rowid", "_rowid_", "oid") if a not in taken), None)
            key = (integer,) if integer else ()
        elif (
            len(key) == 1
            and kinds[name] == "rowid"
            and next(kind for column, _, kind in info if column == key[0]) == "INTEGER"
            and not conn.execute(  # "INTEGER PRIMARY KEY DESC" is an index, not the rowid
                "SELECT 1 FROM pragma_index_list(?) WHERE origin = 'pk'", (name,)
            ).fetchone()
        ):
            integer = key[0]  # INTEGER PRIMARY KEY: the rowid's alias
        found.append(Table(name, columns, key, integer))
    return found


def _value(ref: str, integer: bool = False) -> str:
    if integer:
        return ref
    return (
        f"CASE typeof({ref}) WHEN 'real' THEN json_array('r', printf('%!.17g', {ref})) "
        f"WHEN 'blob' THEN json_array('b', hex({ref})) ELSE {ref} END"
    )


def _image(row: str, columns: tuple[str, ...], integer: str | None) -> str:
    parts = []
    for i in range(0, len(columns), _CHUNK):
        pairs = ", ".join(
            f"{literal(c)}, {_value(f'{row}.{ident(c)}', c == integer)}"
            for c in columns[i : i + _CHUNK]
        )
        parts.append(f"json_object({pairs})")
    if len(parts) == 1:
        return parts[0]
    # join the objects' members: each ends with one "}" and starts with one "{" (its
    # values are never objects, so trimming takes exactly those)
    inner = [f"rtrim({parts[0]}, '}}')"]
    inner += [f"trim({p}, '{{}}')" for p in parts[1:-1]]
    inner.append(f"ltrim({parts[-1]}, '{{')")
    return " || ',' || ".join(inner)


def trigger_sql(table: Table, op: str) -> str:
    """The CREATE TRIGGER statement for `op` (insert, update, delete) on `table`."""
    action, row = next((a, r) for o, a, r in _OPS if o == op)
    key_row = row or "NEW"
    values = (_value(f"{key_row}.{ident(c)}", c == table.integer) for c in table.key)
    pk = f"json_array({', '.join(values)})"
    before = _image("OLD", table.columns, table.integer) if op != "insert" else "NULL"
    after = _image("NEW", table.columns, table.integer) if op != "delete" else "NULL"
    return (
        f"CREATE TRIGGER {ident(trigger_name(table.name, op))} AFTER {op.upper()} ON "
        f"{ident(table.name)} BEGIN INSERT INTO {CHANGES} "
        "(tbl, op, pk, before, after, ts, tc) VALUES "
        f"({literal(table.name)}, '{action}', {pk if table.key else 'NULL'}, {before}, "
        f"{after}, {_TS}, total_changes()); END"
    )


def installed(conn: sqlite3.Connection) -> dict[str, tuple[str, str]]:
    """rowcast's triggers: name -> (table, sql)."""
    return {
        name: (table, sql)
        for name, table, sql in conn.execute(
            "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger' "
            "AND substr(name, 1, 8) = ? AND instr(sql, ?) > 0",
            (PREFIX, f"INSERT INTO {CHANGES} "),
        )
    }


def plan(conn: sqlite3.Connection, wanted: Callable[[str], bool]) -> Plan:
    """What to drop and create so that every wanted table has its three current triggers.

    Triggers of tables that are not wanted stay (another reader may want them),
    except those whose name no longer matches their table (it was renamed).
    """
    have = installed(conn)
    drop: list[str] = []
    create: list[tuple[str, str]] = []
    for table in tables(conn, wanted):
        for op, _, _ in _OPS:
            name = trigger_name(table.name, op)
            sql = trigger_sql(table, op)
            current = have.get(name)
            if current == (table.name, sql):
                continue
            if current is not None:
                drop.append(name)
            create.append((name, sql))
    for name, (owner, _) in have.items():
        if name not in {trigger_name(owner, op) for op, _, _ in _OPS}:
            drop.append(name)
    return Plan(drop, create)


def apply(conn: sqlite3.Connection, wanted: Callable[[str], bool]) -> Plan:
    """Create rowcast's tables and make the triggers true, in one write transaction.

    Plans first without the write lock and takes it only when there is work:
    a reader that finds everything in place writes nothing. Returns what it did.
    """
    if has_tables(conn) and not any(plan(conn, wanted)):
        return Plan([], [])
    conn.execute("BEGIN IMMEDIATE")
    try:
        create_tables(conn)
        work = plan(conn, wanted)  # again, under the lock: another reader may have done it
        for name in work.drop:
            conn.execute(f"DROP TRIGGER IF EXISTS {ident(name)}")
        for _, sql in work.create:
            conn.execute(sql)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return work


def remove(conn: sqlite3.Connection, wanted: Callable[[str], bool], drop_tables: bool) -> list[str]:
    """Drop rowcast's triggers on the wanted tables (all with `drop_tables`, and its tables)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        names = [
            name
            for name, (table, _) in sorted(installed(conn).items())
            if drop_tables or wanted(table)
        ]
        for name in names:
            conn.execute(f"DROP TRIGGER IF EXISTS {ident(name)}")
        if drop_tables:
            for table in (CHANGES, "rowcast_readers", "rowcast_state"):
                conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return names


def seal_newest(conn: sqlite3.Connection) -> int:
    """Mark the newest row ``sealed`` in a write transaction of its own; its seq (0: none).

    The row is read under the write lock, so it is still the newest when the seal
    commits. Durable when this returns on a connection with ``synchronous = FULL``
    (a source's). Raises `sqlite3.OperationalError` when the lock is not had in
    the connection's timeout.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute(
            f"SELECT seq, sealed FROM {CHANGES} ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if row is not None and not row[1]:
            conn.execute(f"UPDATE {CHANGES} SET sealed = 1 WHERE seq = ?", (row[0],))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return int(row[0]) if row is not None else 0

"""The SQL side of the SQLite trigger source: its tables, its triggers, and keeping them true.

Three triggers per captured table, named ``rowcast_<table>_insert``,
``rowcast_<table>_update`` and ``rowcast_<table>_delete`` (AFTER, FOR EACH
ROW), each insert one row into ``rowcast_changes``:

==========  =================================================================
``seq``     INTEGER PRIMARY KEY: commit order (see below)
``layout``  the ``rowcast_layouts`` row that says what ``v0``, ``v1``... hold
``sealed``  when a reader found that a transaction ends at this row
            (``julianday()``, UTC), NULL for every other row
``v0``...   the row's values, untyped columns, so each keeps what SQLite stored
==========  =================================================================

A layout (``id``, ``tbl``, ``op``: ``write``, ``update`` or ``delete``,
``columns``: JSON array of the image's column names, ``key``: JSON array of
the key's slots in an image, ``width``: slots per image, ``spill``: 1 when
the values go to a table of their own) is made when its triggers are, and
its id is a constant in their SQL. An image takes ``width`` slots: the
columns in order, then the rowid when it is the key and no column holds it.
A write's new row and a delete's old row start at ``v0``; an update's old
row does, its new row follows at ``v<width>``; the key of an update is the
new row's.

A trigger copies values and constants, nothing else: no function (not even
a clock), no constraint on ``rowcast_changes``. Either would let SQLite's
trigger program abort, and a statement with triggers that may abort needs a
statement journal: every statement of an app's explicit transaction would
copy each page it touches first, about 3,300 CPU instructions a change, a
third of what the app's own write costs (SQLite 3.40, measured with
``bench/triggers.py --instructions``: 1.70x the app's batched writes without
``julianday()`` and ``total_changes()`` in the triggers, 2.06x with them).
So the clock is read by readers, not writers: a change's ``ts`` is when a
reader found its transaction committed (the ``sealed`` of its group's last
row): while a reader runs and keeps up, within `poll` of the commit, later
when the app holds the write lock (the seal waits for it).

SQLite stores every column of a row, trailing NULLs too, so every change
pays for the widest layout kept inline: ``rowcast_changes`` gets ``v``
columns added (one ``ALTER TABLE`` each, once) only up to `INLINE` values.
A layout of more values spills: its triggers insert the ``rowcast_changes``
row with no values, then the values into ``rowcast_spill_<layout id>``
(``seq``, ``v0``...: made for it, exactly as wide), keyed by that row's seq
(``last_insert_rowid()``: a spilled change pays for the statement journal).

SQLite runs one writer at a time and gives a new row the highest ``seq`` plus
one (pruning never removes the newest row, so ``seq`` never goes back), so
the rows of one transaction are contiguous and in the order the statements
wrote them, and a later commit always has higher seqs. (AUTOINCREMENT would
cost every trigger an update of ``sqlite_sequence``.)
SQLite has no transaction id that a trigger can read, so boundaries are
found from outside, and only true ones are ever found: the newest row ends a
transaction, and a reader that reads it records that as ``sealed`` in one
write transaction, committed before it hands out the rows up to it. Rows
between two seals are one transaction or several consecutive whole ones. As
a seal only goes on the row that is newest when it commits, no seal ever
lands inside rows a reader has handed out as one group: every reader,
later or restarted, groups the same rows alike, so ids made of a group's
position stay the same.

``rowcast_readers`` keeps each checkpointed reader's position (to know which
rows every one of them has passed) and ``rowcast_state`` the highest seq
removed (``pruned``), so that resuming before it is refused, not silently
lossy, and a random ``incarnation`` drawn when the tables were made, so that
a reader notices them dropped and made again under it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Final, NamedTuple

from ...errors import ConfigError
from ..signal import NAME as SIGNAL

__all__ = [
    "CHANGES",
    "FIXED",
    "INLINE",
    "LAYOUTS",
    "SPILL",
    "SQLITE",
    "Plan",
    "Table",
    "apply",
    "create_tables",
    "incarnation",
    "plan",
    "remove",
    "seal",
    "seal_newest",
    "spills",
    "tables",
    "trigger_name",
]

CHANGES: Final = "rowcast_changes"
LAYOUTS: Final = "rowcast_layouts"
OWN: Final = (CHANGES, LAYOUTS, "rowcast_readers", "rowcast_state")
PREFIX: Final = "rowcast_"
FIXED: Final = 3  # seq, layout, sealed: the values start at this column
INLINE: Final = 64  # values a layout may keep in rowcast_changes; more spill
SPILL: Final = "rowcast_spill_"
SQLITE: Final = (3, 37, 0)  # pragma_table_list; RETURNING (3.35)
_OPS: Final = (("insert", "write"), ("update", "update"), ("delete", "delete"))
_UNIX_EPOCH: Final = 2440587.5  # julianday('1970-01-01')

_SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS {CHANGES} (
    seq INTEGER PRIMARY KEY,
    layout INTEGER,
    sealed REAL
);
CREATE TABLE IF NOT EXISTS {LAYOUTS} (
    id INTEGER PRIMARY KEY,
    tbl TEXT NOT NULL,
    op TEXT NOT NULL,
    columns TEXT NOT NULL,
    key TEXT NOT NULL,
    width INTEGER NOT NULL,
    spill INTEGER NOT NULL
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

    @property
    def slots(self) -> tuple[str, ...]:
        """What an image holds: the columns, then the rowid when it is the key and hidden."""
        if self.key and self.key[0] not in self.columns:
            return (*self.columns, self.key[0])
        return self.columns


class Layout(NamedTuple):
    """A ``rowcast_layouts`` row, as its triggers write and readers find it."""

    table: str
    op: str  #: write, update or delete
    columns: str  #: JSON array of the image's column names
    key: str  #: JSON array of the key's slots in an image
    width: int  #: slots per image
    spill: int  #: 1: the values go to ``rowcast_spill_<id>``, 0: into rowcast_changes

    @property
    def values(self) -> int:
        """Values per change: both images for an update, one for the others."""
        return self.width * (2 if self.op == "update" else 1)


class Plan(NamedTuple):
    """What it takes to make the triggers true: names to drop, (name, table, op) to create."""

    drop: list[str]
    create: list[tuple[str, Table, str]]


def epoch(julian: float) -> float:
    """A ``ts`` as UTC epoch seconds."""
    return (julian - _UNIX_EPOCH) * 86400.0


def julian(seconds: float) -> float:
    """UTC epoch `seconds` as a ``ts``."""
    return seconds / 86400.0 + _UNIX_EPOCH


def ident(name: str) -> str:
    """`name` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def trigger_name(table: str, op: str) -> str:
    return f"{PREFIX}{table}_{op}"


def create_tables(conn: sqlite3.Connection) -> None:
    """Create rowcast's tables when missing (inside the caller's write transaction).

    Raises `ConfigError` for a ``rowcast_changes`` of an older rowcast's format.
    """
    if outdated(conn):
        raise ConfigError(
            f"{CHANGES} holds changes in an older rowcast's format: read what it holds "
            "with that version, then drop it (rowcast uninstall URL --yes) and "
            "start the source again"
        )
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT OR IGNORE INTO rowcast_state VALUES ('incarnation', abs(random()))")


def incarnation(conn: sqlite3.Connection) -> int:
    """A random number drawn when rowcast's tables were made: it changes when they are remade."""
    row = conn.execute("SELECT value FROM rowcast_state WHERE key = 'incarnation'").fetchone()
    return int(row[0]) if row else 0


def outdated(conn: sqlite3.Connection) -> bool:
    """Whether ``rowcast_changes`` is of an older format (JSON images; a writer's clock)."""
    found = conn.execute(
        f"SELECT 1 FROM pragma_table_info('{CHANGES}') WHERE name IN ('after', 'tc')"
    ).fetchone()
    return found is not None


def has_tables(conn: sqlite3.Connection) -> bool:
    names = ", ".join(f"'{name}'" for name in OWN)
    found = conn.execute(
        f"SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ({names})"
    ).fetchone()[0]
    return bool(found == len(OWN))


def tables(conn: sqlite3.Connection, wanted: Callable[[str], bool]) -> list[Table]:
    """The ordinary tables of ``main`` that `wanted` accepts; never SQLite's nor rowcast's own
    but ``rowcast_signal`` (captured for backfills: `rowcast.sources.signal`)."""
    names = [
        name
        for (name,) in conn.execute(
            "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table' "
            "ORDER BY name"
        )
        if (name == SIGNAL or not name.startswith(("sqlite_", PREFIX))) and wanted(name)
    ]
    found = []
    for name in names:
        info = conn.execute(
            "SELECT name, pk FROM pragma_table_xinfo(?) WHERE hidden != 1 ORDER BY cid", (name,)
        ).fetchall()
        columns = tuple(column for column, _ in info)
        key = tuple(column for column, pk in sorted(info, key=lambda c: c[1]) if pk)
        if not key:  # a rowid table: its rowid, under a name no column hides
            taken = {column.lower() for column in columns}
            rowid = next((a for a in ("rowid", "_rowid_", "oid") if a not in taken), None)
            key = (rowid,) if rowid else ()
        found.append(Table(name, columns, key))
    return found


def layout(table: Table, op: str) -> Layout:
    """The layout of `op`'s (insert, update, delete) rows for `table`."""
    action = next(a for o, a in _OPS if o == op)
    slots = table.slots
    values = len(slots) * (2 if op == "update" else 1)
    return Layout(
        table.name,
        action,
        json.dumps(table.columns),
        json.dumps([slots.index(k) for k in table.key]),
        len(slots),
        int(values > INLINE),
    )


def _layout_ids(conn: sqlite3.Connection) -> dict[Layout, int]:
    if not has_tables(conn):
        return {}
    return {
        Layout(*shape): id_
        for id_, *shape in conn.execute(
            f"SELECT id, tbl, op, columns, key, width, spill FROM {LAYOUTS}"
        )
    }


def trigger_sql(table: Table, op: str, layout_id: int, spill: bool = False) -> str:
    """The CREATE TRIGGER statement for `op` (insert, update, delete) on `table`."""
    rows = {"insert": ("NEW",), "update": ("OLD", "NEW"), "delete": ("OLD",)}[op]
    values = "".join(f", {row}.{ident(slot)}" for row in rows for slot in table.slots)
    targets = "".join(f", v{i}" for i in range(len(table.slots) * len(rows)))
    if spill:
        body = (
            f"INSERT INTO {CHANGES} (layout) VALUES ({layout_id}); "
            f"INSERT INTO {SPILL}{layout_id} (seq{targets}) VALUES (last_insert_rowid(){values});"
        )
    else:
        body = f"INSERT INTO {CHANGES} (layout{targets}) VALUES ({layout_id}{values});"
    return (
        f"CREATE TRIGGER {ident(trigger_name(table.name, op))} AFTER {op.upper()} ON "
        f"{ident(table.name)} BEGIN {body} END"
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
    Reads only.
    """
    have = installed(conn)
    ids = _layout_ids(conn)
    drop: list[str] = []
    create: list[tuple[str, Table, str]] = []
    for table in tables(conn, wanted):
        for op, _ in _OPS:
            name = trigger_name(table.name, op)
            current = have.get(name)
            shape = layout(table, op)
            id_ = ids.get(shape)
            if id_ is not None and current == (
                table.name,
                trigger_sql(table, op, id_, bool(shape.spill)),
            ):
                continue
            if current is not None:
                drop.append(name)
            create.append((name, table, op))
    for name, (owner, _) in have.items():
        if name not in {trigger_name(owner, op) for op, _ in _OPS}:
            drop.append(name)
    return Plan(drop, create)


def _widen(conn: sqlite3.Connection, values: int) -> None:
    """Give ``rowcast_changes`` at least `values` (at most `INLINE`) value columns."""
    have = conn.execute(
        f"SELECT count(*) FROM pragma_table_info('{CHANGES}') WHERE name GLOB 'v[0-9]*'"
    ).fetchone()[0]
    for i in range(have, values):
        conn.execute(f"ALTER TABLE {CHANGES} ADD COLUMN v{i}")


def _spill_table(conn: sqlite3.Connection, table: Table, layout_id: int, values: int) -> None:
    columns = "".join(f", v{i}" for i in range(values))
    try:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {SPILL}{layout_id} (seq INTEGER PRIMARY KEY{columns})"
        )
    except sqlite3.OperationalError as e:
        if "too many columns" not in str(e):
            raise
        raise ConfigError(
            f"table {table.name!r} has {len(table.columns)} columns: a change of it takes "
            f"{values} values, more than this SQLite's column limit lets a table hold; "
            "leave it out with tables="
        ) from e


def spills(conn: sqlite3.Connection) -> list[str]:
    """The names of the ``rowcast_spill_<id>`` tables."""
    return [
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND substr(name, 1, ?) = ? "
            "ORDER BY name",
            (len(SPILL), SPILL),
        )
    ]


def apply(
    conn: sqlite3.Connection,
    wanted: Callable[[str], bool],
    inside: Callable[[sqlite3.Connection, Plan, bool], None] | None = None,
    keep: bool = True,
) -> Plan:
    """Create rowcast's tables and make the triggers true, in one write transaction.

    Plans first without the write lock and takes it only when there is work:
    a reader that finds everything in place writes nothing. Returns what it did.
    `inside(conn, plan, made)` runs in that transaction at its end (`made`: rowcast's
    tables were made in it); without `keep` the transaction is rolled back (a check).
    """
    if has_tables(conn) and not outdated(conn) and not any(plan(conn, wanted)):
        return Plan([], [])
    conn.execute("BEGIN IMMEDIATE")
    try:
        made = not has_tables(conn)
        create_tables(conn)
        work = plan(conn, wanted)  # again, under the lock: another reader may have done it
        for name in work.drop:
            conn.execute(f"DROP TRIGGER IF EXISTS {ident(name)}")
        ids = _layout_ids(conn)
        for _, table, op in work.create:
            shape = layout(table, op)
            id_ = ids.get(shape)
            if id_ is None:
                id_ = conn.execute(
                    f"INSERT INTO {LAYOUTS} (tbl, op, columns, key, width, spill) "
                    "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                    shape,
                ).fetchone()[0]
                ids[shape] = id_
            if shape.spill:
                _spill_table(conn, table, id_, shape.values)
            else:
                _widen(conn, shape.values)
            conn.execute(trigger_sql(table, op, id_, bool(shape.spill)))
        if inside is not None:
            inside(conn, work, made)
        conn.execute("COMMIT" if keep else "ROLLBACK")
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
            for table in (*OWN, *spills(conn)):
                conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return names


def seal_newest(conn: sqlite3.Connection) -> tuple[int, float | None]:
    """Seal the newest row in a write transaction of its own: its seq (0: none) and seal.

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
        if row is None:
            conn.execute("COMMIT")
            return 0, None
        sealed = row[1] if row[1] is not None else seal(conn, row[0])
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return int(row[0]), sealed


def seal(conn: sqlite3.Connection, seq: int) -> float:
    """Record in the caller's write transaction that a transaction ends at `seq`; the seal."""
    (sealed,) = conn.execute(
        f"UPDATE {CHANGES} SET sealed = coalesce(sealed, julianday()) WHERE seq = ? "
        "RETURNING sealed",
        (seq,),
    ).fetchone()
    return float(sealed)

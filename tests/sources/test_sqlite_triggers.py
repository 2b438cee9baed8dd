"""The trigger SQL itself: what SQLite makes of the statements rowcast's triggers run."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from rowcast.sources.sqlite import TriggerSource, triggers

# opcodes that can end a statement with an error: one in a trigger's program makes
# SQLite keep a statement journal for every statement of an app's transaction
ABORTING = {"Function", "PureFunc", "HaltIfNull", "AggStep", "AggFinal", "VUpdate"}


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(tmp_path / "app.db", isolation_level=None)
    conn.execute(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, qty INTEGER "
        "CHECK (qty >= 0), price REAL DEFAULT 0, data BLOB)"
    )
    conn.execute("CREATE TABLE pairs (a TEXT, b INTEGER, c, PRIMARY KEY (a, b)) WITHOUT ROWID")
    conn.execute("CREATE TABLE loose (x, y)")  # keyed by its hidden rowid
    yield conn
    conn.close()


def bodies(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """(trigger name, statement) for every statement of rowcast's triggers."""
    found = []
    for name, sql in conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' ORDER BY name"
    ):
        body = sql[sql.index(" BEGIN ") + 7 : sql.rindex(" END")]
        found += [(name, s.strip()) for s in body.split(";") if s.strip()]
    return found


def test_the_triggers_can_never_abort_so_app_statements_need_no_statement_journal(
    tmp_path: Path, db: sqlite3.Connection
) -> None:
    """No function (no clock), no constraint: the program of each statement copies only.

    A trigger program that may abort makes SQLite journal every page that each of
    an app's statements touches, inside explicit transactions: about a third of
    what the app's write costs (bench/triggers.py --instructions).
    """
    TriggerSource(f"sqlite:///{tmp_path / 'app.db'}").install()
    statements = bodies(db)
    assert len(statements) == 9
    for name, statement in statements:
        # NEW.x / OLD.x only mean something in a trigger: any value compiles alike
        standalone = re.sub(r'\b(?:NEW|OLD)\.(?:"(?:[^"]|"")*"|\w+)', "NULL", statement)
        program = db.execute(f"EXPLAIN {standalone}").fetchall()
        opcodes = {row[1] for row in program}
        assert not opcodes & ABORTING, (name, opcodes & ABORTING)
        errors = [row for row in program if row[1] == "Halt" and row[3] != 0]
        assert not errors, (name, errors)
    (table,) = db.execute(
        "SELECT sql FROM sqlite_master WHERE name = ?", (triggers.CHANGES,)
    ).fetchone()
    assert not re.search(r"NOT NULL|CHECK|UNIQUE|REFERENCES|DEFAULT", table, re.IGNORECASE)


def test_a_function_in_a_trigger_would_be_found(db: sqlite3.Connection) -> None:
    """The check above sees what it looks for: a clock or a NOT NULL column."""
    db.execute("CREATE TABLE probe (seq INTEGER PRIMARY KEY, layout INTEGER NOT NULL, v0)")
    clock = {
        r[1] for r in db.execute("EXPLAIN INSERT INTO probe (layout, v0) VALUES (1, julianday())")
    }
    assert "Function" in clock
    null = {r[1] for r in db.execute("EXPLAIN INSERT INTO probe (layout, v0) VALUES (NULL, 1)")}
    assert "HaltIfNull" in null

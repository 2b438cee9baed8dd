"""A chunk's rows as the driver gave them (`rowcast.sources._rows.Rows`): the same pairs
and the same Changes as the pairs other sources' chunks hold, on every path (this file
also runs under ``ROWCAST_PURE=1``), from SQLite tables of every kind of key."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from rowcast import Change
from rowcast.sources._rows import Rows
from rowcast.sources.sqlite import triggers
from rowcast.sources.sqlite.keys import Keys

AT = (1.5, "backfill:1", "9", "sqlite")


def _pairs_made(rows: Rows, skip: set[Any] | None = None) -> list[Change]:
    """What the pairs of `rows` are made into on the plain way (`Change._reads`)."""
    pairs = [pair for pair in rows if not skip or pair[0] not in skip]
    return Change._reads("main", "t", pairs, *AT)


def test_rows_are_the_pairs_of_their_values() -> None:
    rows = Rows([(1, "a", 99), (2, None, 98)], ("id", "v"), 0)  # a hidden value after
    assert len(rows) == 2
    assert bool(rows)
    assert not Rows([], ("id",), 0)
    assert list(rows) == [(1, {"id": 1, "v": "a"}), (2, {"id": 2, "v": None})]
    assert rows[-1] == (2, {"id": 2, "v": None})
    assert rows[1:] == [(2, {"id": 2, "v": None})]
    assert repr(rows) == "<Rows of id, v: 2>"
    composite = Rows([(1, "a"), (2, "b")], ("id", "v"), (1, 0))
    assert [pk for pk, _ in composite] == [("a", 1), ("b", 2)]
    composite.extend(Rows([(3, "c")], ("id", "v"), (1, 0)))
    assert [pk for pk, _ in composite] == [("a", 1), ("b", 2), ("c", 3)]


@pytest.mark.parametrize("skip", [None, set(), {2}, {1, 2, 3}, {("a", 1)}])
def test_rows_make_the_changes_their_pairs_make(skip: set[Any] | None) -> None:
    for key in (0, (1, 0)):
        rows = Rows([(1, "a", 7), (2, None, 8), (3, "c", 9)], ("id", "v"), key)
        made = rows.changes("main", "t", *AT, skip=skip)
        assert made == _pairs_made(rows, skip)
        assert all(type(c) is Change and c.snapshot for c in made)


TABLES = {
    "rowid": "CREATE TABLE t (v TEXT, n REAL)",  # keyed by the hidden rowid
    "alias": "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, n REAL)",
    "text": "CREATE TABLE t (k TEXT COLLATE NOCASE PRIMARY KEY, v TEXT, n REAL)",
    "composite": "CREATE TABLE t (a INT, b TEXT, v TEXT, n REAL, PRIMARY KEY (b, a))",
    "nullable": "CREATE TABLE t (k, v TEXT, n REAL, PRIMARY KEY (k))",  # NULLs in the key
    "without rowid": "CREATE TABLE t (k INT PRIMARY KEY, v TEXT, n REAL) WITHOUT ROWID",
}


@pytest.mark.parametrize("kind", sorted(TABLES))
def test_sqlite_chunks_are_rows_that_make_what_their_pairs_make(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute(TABLES[kind])
        names = [r[1] for r in conn.execute("PRAGMA table_info(t)")]
        for i in range(25):
            values = {"id": i + 1, "k": None if kind == "nullable" and i % 7 == 0 else f"k{i}"}
            values |= {"a": i % 4, "b": f"b{i // 4}", "v": f"row {i}", "n": i / 7}
            conn.execute(
                f"INSERT INTO t ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                [values[n] for n in names],
            )
        (table,) = triggers.tables(conn, lambda name: name == "t")
        read: list[Any] = []
        for rows, _ in Keys(conn).chunks(conn, table, None, 4):
            assert isinstance(rows, Rows)
            made = rows.changes("main", "t", *AT)
            assert made == _pairs_made(rows)
            assert list(made[0].after or {}) == names  # the columns, never the hidden rowid
            read.extend(c.after["v"] for c in made if c.after)
        assert sorted(read) == sorted(f"row {i}" for i in range(25))  # each row once

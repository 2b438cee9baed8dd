"""A backfill's ``--where`` stays one condition (`rowcast.sources._where`).

``1=1) OR (1=1`` is valid SQL inside ``WHERE (...) AND (key > ?)``, where it matches
every row whatever the key: each chunk read the table from its first row again, and a
2,000-row table was delivered 136 times before it was cancelled. It is refused when
asked for, and by a reader that finds such a request in its log (written by hand).
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from rowcast.change import Change
from rowcast.checkpoint import open_checkpoint
from rowcast.errors import ConfigError
from rowcast.sources._request import asked, shown
from rowcast.sources._where import check
from rowcast.sources.signal import SignalTable
from rowcast.sources.sqlite import TriggerSource
from rowcast.testing.snapshot import _until, running

ESCAPES = [
    "1=1) OR (1=1",
    "id > 0) OR (id < 0",
    "(id > 0",
    "id > 0)",
    "id > 0; DELETE FROM t",
    "id > 0 -- and the rest",
    "id > 0 /* hidden */",
    "name = 'open",
    'id > 0 AND "odd',
]

FINE = [
    "id > 10",
    "status = 'open' AND (qty > 0 OR draft)",
    "name = 'a) OR (b'",  # parentheses inside a string
    "name = 'O''Brien'",  # a doubled quote
    '"weird)name" = 1',  # a quoted name
    "`col(1)` = 2",
    "data #>> '{a,b}' = 'x'",  # PostgreSQL's JSON path operator
    "a - -b > 0",
    "((a = 1) OR (b = 2)) AND c",
]


@pytest.mark.parametrize("where", ESCAPES)
def test_a_condition_that_is_not_one_is_refused_with_the_fix(where: str) -> None:
    with pytest.raises(ConfigError, match="must be one SQL condition") as refused:
        check(where)
    assert repr(where) in str(refused.value)


@pytest.mark.parametrize("where", FINE)
def test_one_condition_passes_whatever_its_strings_hold(where: str) -> None:
    check(where)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data TEXT)")
    conn.executemany("INSERT INTO t (data) VALUES (?)", [(f"r{i}",) for i in range(20)])
    conn.close()
    return path


def written(db: Path, data: str) -> bool:
    with sqlite3.connect(db, isolation_level=None) as conn:
        conn.execute("INSERT INTO t (data) VALUES (?)", (data,))
    return True


def test_asking_with_an_escaping_where_records_nothing(db: Path) -> None:
    source = TriggerSource(f"sqlite:///{db}")
    with pytest.raises(ConfigError, match="1=1\\) OR \\(1=1"):
        source.backfill(["t"], where="1=1) OR (1=1")
    assert source.backfills() == []


def test_a_reader_refuses_such_a_request_written_by_hand(db: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{db}"
    reader = TriggerSource(url, tables=["t"], checkpoint=open_checkpoint(str(tmp_path / "pos")))
    with running(reader) as got:
        _until(lambda: written(db, "started") and got, "the stream")
        first = TriggerSource(url).backfill(["t"], where="id < 0")  # makes rowcast_signal
        signals = SignalTable(lambda: sqlite3.connect(db, isolation_level=None), "sqlite")
        request = signals.write("backfill", {"tables": ["t"], "where": "1=1) OR (1=1", "chunk": 5})
        signals.close()
        _until(lambda: all(s.done for s in TriggerSource(url).backfills()), "the refusal")
        written(db, "after")
        _until(lambda: any(c.after and c.after["data"] == "after" for c in got), "after")
    asked, status = TriggerSource(url).backfills()
    assert (asked.id, status.id) == (first, request)
    (refusal,) = status.readers
    assert "must be one SQL condition" in (refusal.error or "")
    assert not any(c.snapshot for c in got)  # not one row read, let alone the table forever


def test_a_condition_that_escapes_past_the_check_is_given_up_not_read_for_ever(
    tmp_path: Path,
) -> None:
    """The check knows the standard quotes, not every dialect's (SQLite's ``[name]``,
    MySQL's backslash escapes, PostgreSQL's dollar quotes): a condition that escapes
    through one reads no row past the last key, and the reader gives the backfill up,
    with the reason, after that chunk (was: the first rows read again and again, for
    ever)."""
    db = tmp_path / "odd.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute('CREATE TABLE t (id INTEGER PRIMARY KEY, data TEXT, "(" INT, ")" INT)')
    conn.executemany("INSERT INTO t (data) VALUES (?)", [(f"r{i}",) for i in range(20)])
    conn.close()
    escaping = "[(] IS NULL) OR (1=1 OR [)] IS NULL"  # balanced for the check, not for SQL
    check(escaping)
    url = f"sqlite:///{db}"
    reader = TriggerSource(url, tables=["t"], checkpoint=open_checkpoint(str(tmp_path / "pos")))
    with running(reader) as got:
        _until(lambda: written(db, "started") and got, "the stream")
        request = TriggerSource(url).backfill(["t"], where=escaping, chunk=5)
        _until(lambda: all(s.done for s in TriggerSource(url).backfills()), "the give-up")
    (status,) = TriggerSource(url).backfills()
    assert status.id == request
    (gave_up,) = status.readers
    assert "reads no row past key" in (gave_up.error or ""), gave_up
    assert sum(c.snapshot for c in got) <= 10  # two chunks at most, never the table again


def by_hand(db: Path, tmp_path: Path, data: dict[str, object]) -> tuple[int, list[Change]]:
    """A request `data` written into rowcast_signal by hand while a reader of ``t`` runs,
    until every request is done: its id, and what the reader handed out."""
    url = f"sqlite:///{db}"
    reader = TriggerSource(url, tables=["t"], checkpoint=open_checkpoint(str(tmp_path / "pos")))
    with running(reader) as got:
        _until(lambda: written(db, "started") and got, "the stream")
        TriggerSource(url).backfill(["t"], where="id < 0")  # makes rowcast_signal
        signals = SignalTable(lambda: sqlite3.connect(db, isolation_level=None), "sqlite")
        request = signals.write("backfill", data)
        signals.close()
        _until(lambda: all(s.done for s in TriggerSource(url).backfills()), "the request")
    return request, got


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"tables": ["t"], "where": 5}, "where is an SQL condition in a string, not 5"),
        ({"tables": ["t"], "where": ["id > 0"]}, "where is an SQL condition in a string"),
        ({"tables": 5}, "tables is a list of table names or patterns, not 5"),
        ({"tables": ["t", 7]}, "tables is a list of table names or patterns"),
        ({"tables": ["t"], "chunk": "many"}, "chunk is a number of rows, not 'many'"),
    ],
)
def test_a_request_written_by_hand_with_values_of_the_wrong_type_is_refused_at_once(
    db: Path, tmp_path: Path, data: dict[str, object], error: str
) -> None:
    request, got = by_hand(db, tmp_path, data)
    status = next(s for s in TriggerSource(f"sqlite:///{db}").backfills() if s.id == request)
    (refusal,) = status.readers
    assert error in (refusal.error or "")
    assert not any(c.snapshot for c in got)


def test_a_request_written_by_hand_may_name_its_tables_in_one_string(
    db: Path, tmp_path: Path
) -> None:
    _, got = by_hand(db, tmp_path, {"tables": "t", "where": "id <= 3"})  # as --tables t
    assert sorted(c.pk for c in got if c.snapshot) == [1, 2, 3]


@pytest.mark.parametrize(
    ("chunk", "error"),
    [
        (float("inf"), "chunk is a number of rows, not inf"),
        (float("nan"), "chunk is a number of rows, not nan"),
        (2.5, "chunk is a number of rows, not 2.5"),
        (True, "chunk is a number of rows, not True"),
        ([5], "chunk is a number of rows, not [5]"),
        (0, "from 1 to 2,147,483,647, not 0"),
        (10**29, "from 1 to 2,147,483,647"),
    ],
)
def test_a_requests_chunk_is_a_number_of_rows(chunk: object, error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        asked({"tables": ["t"], "chunk": chunk})
    assert shown({"tables": ["t"], "chunk": chunk})[2] == 0  # --status shows it all the same


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"tables": " , "}, "tables names no table"),
        ({"tables": []}, "tables names no table"),
        ({"tables": ["t"], "where": 0}, "where is an SQL condition in a string, not 0"),
        ({"tables": ["t"], "where": False}, "not False"),
        ({"tables": ["t"], "where": {}}, "not {}"),
    ],
)
def test_a_request_whose_values_are_empty_or_false_is_refused_not_read_whole(
    data: dict[str, object], error: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        asked(data)


def test_a_request_as_rowcast_writes_it_and_its_tables_in_one_string_read_alike() -> None:
    assert asked({"tables": ["t", "t2"], "where": None, "chunk": 500}) == (["t", "t2"], None, 500)
    assert asked({"tables": "t, t2", "where": " "}) == (["t", "t2"], None, 1000)
    assert asked({"tables": ["t"], "chunk": "20"})[2] == 20
    assert shown({"tables": "t, t2", "where": 5}) == (["t", "t2"], "5", 1000)


@pytest.mark.parametrize("chunk", [0, 2**31, True])
def test_asking_with_a_chunk_no_reader_would_take_records_nothing(db: Path, chunk: int) -> None:
    source = TriggerSource(f"sqlite:///{db}")
    with pytest.raises(ConfigError, match="chunk is a number of rows from 1 to 2,147,483,647"):
        source.backfill(["t"], chunk=chunk)
    assert source.backfills() == []

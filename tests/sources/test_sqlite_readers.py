"""Several readers of one file: boundaries and ts come from seals (see _sqlite_triggers).

Two readers of one file must group the same rows alike and give them the same
ts (a change's id is made of its group's position). These tests make another
reader seal a row that this reader has already read as unsealed, then the app
commit again, at the two moments `_groups` carries a group on: before it seals
the newest row itself, and between two pages. Also: the seal a running source
puts into a group in memory is the one later readers read, and rows pruned under
a reader.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rowcast import Change, SourceError
from rowcast.sources.sqlite import TriggerSource
from tests.conftest import wait_for
from tests.sources import test_sqlite_source as base
from tests.sources.test_sqlite_source import groups, read, streaming, url

path = base.path  # fixtures: a WAL file with a `test` table, the app's connection
db = base.db


def stamps(transactions: list[list[Change]]) -> list[tuple[str | None, str | None, float]]:
    """(txid, position, ts) of each transaction: what every reader must agree on."""
    return [(tx[-1].txid, tx[-1].position, tx[-1].ts) for tx in transactions]


class SealsLater(TriggerSource):
    """A source that runs `meanwhile` once, right before it first seals the newest row.

    As if it were slower than another reader: the real `_seal_newest` follows.
    """

    def __init__(self, *args: Any, meanwhile: Callable[[], None], **options: Any) -> None:
        super().__init__(*args, **options)
        self._meanwhile: Callable[[], None] | None = meanwhile

    def _seal_newest(self, conn: sqlite3.Connection) -> tuple[int, float | None] | None:
        if self._meanwhile is not None:
            action, self._meanwhile = self._meanwhile, None
            action()
        return super()._seal_newest(conn)


class PagesLater(TriggerSource):
    """A source that runs `meanwhile` once, right before its second page of rows is read.

    The hook is SQLite's statement trace on the source's own (real) connection: it
    runs before the statement takes its snapshot.
    """

    def __init__(self, *args: Any, meanwhile: Callable[[], None], **options: Any) -> None:
        super().__init__(*args, **options)
        self._meanwhile: Callable[[], None] | None = meanwhile
        self._pages = 0
        self.failed: list[BaseException] = []

    def _install(self, conn: sqlite3.Connection, *args: Any, **options: Any) -> Any:
        done = super()._install(conn, *args, **options)
        conn.set_trace_callback(self._traced)
        return done

    def _traced(self, statement: str) -> None:
        if not statement.startswith("SELECT * FROM rowcast_changes WHERE seq >="):
            return
        self._pages += 1
        if self._pages == 2 and self._meanwhile is not None:
            action, self._meanwhile = self._meanwhile, None
            try:
                action()
            except BaseException as e:  # a trace callback's exception would be lost
                self.failed.append(e)


def first_transaction(source: TriggerSource) -> list[Change]:
    transactions = iter(source)
    try:
        return next(transactions)
    finally:
        transactions.close()  # type: ignore[attr-defined]


def test_a_seal_put_by_another_reader_on_the_last_row_read_ends_the_group(
    path: Path, db: sqlite3.Connection
) -> None:
    """Rows 1-2 read unsealed; reader A seals 2 and hands out 1-2; the app commits 3.

    This reader then seals the newest row (3), reads on from 2 to it and hands out
    1-3 as one group (ts: the seal of 3), where A and every later reader have 1-2
    and 3 (ts: the seal of 2): other ids for the same changes.
    """
    TriggerSource(url(path)).install()
    db.execute("INSERT INTO test (data) VALUES ('a')")
    db.execute("INSERT INTO test (data) VALUES ('b')")
    other: list[list[Change]] = []

    def meanwhile() -> None:
        other.extend(read(path))  # seals row 2
        db.execute("INSERT INTO test (data) VALUES ('c')")  # row 3

    first = first_transaction(SealsLater(url(path), start="start", meanwhile=meanwhile))
    assert groups(other) == [("2", 2)]
    later = read(path)
    assert groups(later) == [("2", 2), ("3", 1)]
    assert stamps([first]) == stamps(later)[:1]


def test_a_seal_put_by_another_reader_between_two_pages_ends_the_group(
    path: Path, db: sqlite3.Connection
) -> None:
    """The same between pages (_PAGE = 1000 rows): a full page ends at the newest row.

    Another reader seals row 1000 and the app commits row 1001 before the second
    page is read: this reader hands out 1-1001 as one group, every other 1-1000, 1001.
    """
    TriggerSource(url(path)).install()
    db.execute("BEGIN")
    db.executemany("INSERT INTO test (data) VALUES (?)", [(str(i),) for i in range(1000)])
    db.execute("COMMIT")
    other: list[list[Change]] = []

    def meanwhile() -> None:
        other.extend(read(path))  # seals row 1000
        db.execute("INSERT INTO test (data) VALUES ('late')")  # row 1001

    source = PagesLater(url(path), start="start", meanwhile=meanwhile)
    first = first_transaction(source)
    assert source.failed == []
    assert groups(other) == [("1000", 1000)]
    later = read(path)
    assert groups(later) == [("1000", 1000), ("1001", 1)]
    assert stamps([first]) == stamps(later)[:1]


def test_ts_a_running_source_sealed_itself_is_what_every_later_reader_reads(
    path: Path, db: sqlite3.Connection
) -> None:
    """The seal `_groups` puts into a group it sealed itself is the one in the file.

    A running source hands out each commit after sealing it (the group's last row
    is patched in memory with the seal); a later reader reads the seal from the
    file. Both must be the same float, for narrow (inline) and wide (spilled) rows,
    and for a group that spans pages.
    """
    columns = [f"c{i}" for i in range(40)]  # an update's 82 values spill
    db.execute(f"CREATE TABLE rc_wide (id INTEGER PRIMARY KEY, {', '.join(columns)})")
    TriggerSource(url(path)).install()  # capture from now on (a tail's triggers go with it)
    with streaming(TriggerSource(url(path))) as got:
        db.execute("INSERT INTO test (data) VALUES ('a')")
        wait_for(lambda: len(got) == 1)
        db.execute(f"INSERT INTO rc_wide VALUES (1, {', '.join('?' * 40)})", list(range(40)))
        wait_for(lambda: len(got) == 2)
        db.execute("UPDATE rc_wide SET c0 = 'x'")  # spilled, the group's last row
        wait_for(lambda: len(got) == 3)
        db.execute("BEGIN")
        db.executemany("INSERT INTO test (data) VALUES (?)", [(str(i),) for i in range(2500)])
        db.execute("COMMIT")
        wait_for(lambda: sum(map(len, got)) == 2503)
    assert got[2][0].after is not None
    assert got[2][0].after["c0"] == "x"
    assert all(ts is not None for _, _, ts in stamps(got))
    assert stamps(read(path)) == stamps(got)
    assert stamps(read(path)) == stamps(got)  # and again


def test_rows_read_then_pruned_by_another_source_fail_the_reader_not_merge(
    path: Path, db: sqlite3.Connection
) -> None:
    """A source with no checkpoint is not protected from another's prune: it says so."""
    TriggerSource(url(path)).install()
    db.execute("INSERT INTO test (data) VALUES ('a')")
    db.execute("INSERT INTO test (data) VALUES ('b')")

    def meanwhile() -> None:
        db.execute("INSERT INTO test (data) VALUES ('c')")
        read(path)  # seals row 3
        assert TriggerSource(url(path), retain=0).prune() == 2  # never the newest row

    with pytest.raises(SourceError, match=r"deleted under it.*checkpoint="):
        first_transaction(SealsLater(url(path), start="start", meanwhile=meanwhile))

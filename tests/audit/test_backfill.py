"""AuditSink and snapshot reads (a backfill's rows): a revision only when the row is news."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

from rowcast import Change
from rowcast.audit import AuditSink, history

from .test_sink import TS, row, schema_of, tx


def backfill(
    models: SimpleNamespace, n: int, *rows: tuple[str, Any, dict[str, Any]]
) -> list[Change]:
    """The chunk a backfill hands out at transaction `n`: snapshot writes of (table, pk, row)."""
    schema = schema_of(models)
    return [
        Change(
            "write",
            schema,
            table,
            pk,
            None,
            image,
            TS + n,
            f"backfill:{n}",
            f"bin.1:{n}",
            "mysql",
            True,
        )
        for table, pk, image in rows
    ]


@pytest.fixture
def latest_queries(engine: Engine) -> Iterator[list[str]]:
    """The statements that looked up latest revisions, as they run."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "rowcast_rank" in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def test_a_backfill_adds_revisions_only_for_rows_it_tells_something_new(
    engine: Engine,
    factory: sessionmaker[Session],
    models: SimpleNamespace,
    latest_queries: list[str],
) -> None:
    sink = AuditSink(engine)
    sink.write(tx(models, 1, ("write", "reservations", 1, None, row(1, 6))))
    sink.write(tx(models, 2, ("write", "reservations", 2, None, row(2, 3))))
    sink.write(tx(models, 3, ("update", "reservations", 2, row(2, 3), row(2, 4))))
    sink.write(tx(models, 4, ("write", "reservations", 3, None, row(3, 1))))
    sink.write(tx(models, 5, ("delete", "reservations", 3, row(3, 1), None)))
    sink.write(tx(models, 6, ("write", "reservations", 5, None, row(5, 2))))
    sink.write(
        tx(models, 7, ("write", "audit_pair", (1, "x"), None, {"a": 1, "b": "x", "value": 1}))
    )
    assert sink.written == 7
    latest_queries.clear()
    chunk = backfill(
        models,
        8,
        ("reservations", 1, row(1, 6)),  # as its latest revision: nothing
        ("reservations", 2, row(2, 4)),  # as its latest (an update's): nothing
        ("reservations", 3, row(3, 9)),  # its latest revision is a delete: news
        ("reservations", 4, row(4, 8)),  # never audited (the audit missed it): news
        ("reservations", 5, row(5, 7, name="Bob")),  # differs from its latest: news
        ("audit_pair", (1, "x"), {"a": 1, "b": "x", "value": 1}),  # a composite key: same
        ("audit_pair", (2, "y"), {"a": 2, "b": "y", "value": 5}),  # new
    )
    assert sink.write(chunk) == 4
    assert sink.unchanged == 3
    assert len(latest_queries) == 2  # one per table for the whole chunk, not one per row
    with factory() as session:
        parties = {
            pk: [(r.rev_isdelete, r.party) for r in history(session, models.Reservation, pk)]
            for pk in (1, 2, 3, 4, 5)
        }
        pairs = [r.value for r in history(session, models.Pair, (2, "y"))]
        assert [r.value for r in history(session, models.Pair, (1, "x"))] == [1]
    assert parties == {
        1: [(False, 6)],
        2: [(False, 3), (False, 4)],
        3: [(False, 1), (True, None), (False, 9)],
        4: [(False, 8)],
        5: [(False, 2), (False, 7)],
    }
    assert pairs == [5]
    # re-delivered (a relay retrying): nothing more
    assert sink.write(chunk) == 0
    # the same backfill run again later: every row repeats its latest revision now
    assert sink.write(backfill(models, 9, *[(c.table, c.pk, c.after) for c in chunk])) == 0  # type: ignore[misc]


def test_a_snapshot_read_after_a_change_of_its_transaction_compares_with_that(
    engine: Engine, factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    sink = AuditSink(engine)
    sink.write(tx(models, 1, ("write", "reservations", 1, None, row(1, 6))))
    changes = tx(models, 2, ("update", "reservations", 1, row(1, 6), row(1, 4)))
    changes += backfill(models, 2, ("reservations", 1, row(1, 4)))  # the update's values
    assert sink.write(changes) == 1
    changes = tx(models, 3, ("delete", "reservations", 1, row(1, 4), None))
    changes += backfill(models, 3, ("reservations", 1, row(1, 4)))  # back after the delete
    assert sink.write(changes) == 2
    with factory() as session:
        assert [(r.rev_isdelete, r.party) for r in history(session, models.Reservation, 1)] == [
            (False, 6),
            (False, 4),
            (True, None),
            (False, 4),
        ]


def test_an_initial_snapshot_into_empty_audit_tables_records_every_row(
    engine: Engine, factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    sink = AuditSink(engine)
    rows = [("reservations", n, row(n, n)) for n in range(1, 1201)]  # over a query's keys
    assert sink.write(backfill(models, 1, *rows)) == 1200
    assert sink.write(backfill(models, 2, *rows)) == 0
    assert sink.unchanged == 1200
    with factory() as session:
        assert [r.party for r in history(session, models.Reservation, 1200)] == [1200]

"""Revisions written by the session, in the transaction of the change, on every database."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Engine, delete, event, insert, inspect, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, load_only, sessionmaker

from rowcast import Hub, RowcastWarning
from rowcast.audit import AuditError, AuditSink, as_of, history
from rowcast.sources.sqlalchemy import SessionCapture

STEVE = {"name": "Steve", "date": dt.date(2015, 4, 15), "time": dt.time(19, 0)}


def revisions(session: Session, model: Any, *columns: str) -> list[tuple[Any, ...]]:
    """(rev_isdelete, *columns) of every revision of `model`, oldest first."""
    rev = model.Revision
    query = select(rev.rev_isdelete, *(getattr(rev, c) for c in columns))
    return [tuple(row) for row in session.execute(query.order_by(rev.rev_created))]


def test_seed_timeline_gives_exactly_these_revisions(
    factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    Reservation = models.Reservation
    with factory() as session:
        steve = Reservation(**STEVE, party=6)  # the key is left to the database
        session.add(steve)
        session.commit()
        steve.party = 4
        session.commit()
        session.delete(steve)
        session.commit()

        assert Reservation.Revision.__table__.name == "reservations_rev"
        columns = ("id", "name", "date", "time", "party")
        assert revisions(session, Reservation, *columns) == [
            (False, 1, "Steve", dt.date(2015, 4, 15), dt.time(19, 0), 6),
            (False, 1, "Steve", dt.date(2015, 4, 15), dt.time(19, 0), 4),
            (True, 1, None, None, None, None),
        ]
        first, second, third = history(session, Reservation, 1)
        assert as_of(session, Reservation, 1, first.rev_created - 1) is None
        assert (
            as_of(session, Reservation, 1, (first.rev_created + second.rev_created) / 2).party == 6
        )
        assert (
            as_of(session, Reservation, 1, (second.rev_created + third.rev_created) / 2).party == 4
        )
        assert as_of(session, Reservation, 1, third.rev_created + 1) is None


def test_revision_rows_carry_their_bookkeeping(
    factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    Reservation = models.Reservation
    with factory() as session:
        session.add_all([Reservation(**STEVE, party=2), Reservation(**STEVE, party=3)])
        session.commit()
        session.add(Reservation(**STEVE, party=5))
        session.commit()
        revs = history(session, Reservation, 1) + history(session, Reservation, 2)
        revs += history(session, Reservation, 3)
    assert {len(r.rev_id) for r in revs} == {36}
    assert len({r.rev_id for r in revs}) == 3
    assert all(isinstance(r.rev_created, float) for r in revs)
    assert revs[0].rev_created < revs[1].rev_created < revs[2].rev_created
    assert abs(revs[2].rev_created - dt.datetime.now(dt.UTC).timestamp()) < 600
    assert revs[0].rev_txid == revs[1].rev_txid != revs[2].rev_txid  # one per transaction
    assert "party=2" in repr(revs[0])


def test_server_defaults_and_onupdate_values_are_in_the_revision(
    factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    Stamped = models.Stamped
    with factory() as session:
        obj = Stamped(name="x")
        session.add(obj)
        session.commit()
        obj.name = "y"  # expired by the commit: edits is set by the database
        session.commit()
        rows = revisions(session, Stamped, "id", "name", "status", "edits")
    assert rows == [(False, 1, "x", "new", 0), (False, 1, "y", "new", 1)]


def test_update_without_net_change_writes_no_revision(
    factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    with factory() as session:
        obj = models.Reservation(**STEVE, party=6)
        session.add(obj)
        session.commit()
        obj.party = 6
        session.commit()
        assert len(history(session, models.Reservation, obj.id)) == 1


def test_rollback_leaves_no_revision(
    factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    Reservation = models.Reservation
    with factory() as session:
        session.add(Reservation(id=1, **STEVE, party=6))
        session.flush()  # the revision is in the database, inside the transaction
        assert len(history(session, Reservation, 1)) == 1
        session.rollback()
        assert history(session, Reservation, 1) == []


def test_a_changed_primary_key_ends_the_old_key_history(
    factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    """A row whose key changes is gone under its old key: as_of the old key says None."""
    Reservation = models.Reservation
    with factory() as session:
        obj = Reservation(id=1, **STEVE, party=6)
        session.add(obj)
        session.commit()
        obj.id = 2
        session.commit()
        *_, last = history(session, Reservation, 1)
        assert (last.rev_isdelete, last.id, last.party) == (True, 1, None)
        assert as_of(session, Reservation, 1, last.rev_created + 1) is None
        (moved,) = history(session, Reservation, 2)
        assert (moved.rev_isdelete, moved.party, moved.rev_txid) == (False, 6, last.rev_txid)
        assert as_of(session, Reservation, 2, moved.rev_created + 1).party == 6


def test_savepoint_rollback_takes_only_its_own_revisions(
    factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    Reservation = models.Reservation
    with factory() as session:
        obj = Reservation(id=1, **STEVE, party=6)
        session.add(obj)
        session.flush()
        savepoint = session.begin_nested()
        obj.party = 4
        session.add(Reservation(id=2, **STEVE, party=2))
        session.flush()
        savepoint.rollback()
        with session.begin_nested():  # released: its revision stays
            obj.party = 8
        session.commit()
        rows = revisions(session, Reservation, "id", "party")
    assert rows == [(False, 1, 6), (False, 1, 8)]


def test_failed_flush_writes_nothing_then_or_later(
    factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    Stamped = models.Stamped
    with factory() as session:
        session.add(Stamped(id=1, name="a"))
        session.commit()
        session.add_all([Stamped(id=2, name="b"), Stamped(id=3, name="a")])  # not unique
        with pytest.raises(IntegrityError):
            session.commit()
        session.rollback()
        session.add(Stamped(id=4, name="d"))
        session.commit()
        assert revisions(session, Stamped, "id") == [(False, 1), (False, 4)]


def test_bulk_update_and_delete_statements_write_revisions(
    factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    Reservation = models.Reservation
    with factory() as session:
        session.add_all([Reservation(id=i, **STEVE, party=i) for i in (1, 2, 3)])
        session.commit()
        session.execute(update(Reservation).where(Reservation.party >= 2).values(party=9))
        session.execute(delete(Reservation).where(Reservation.id == 3))
        table = Reservation.__table__
        session.execute(update(table).where(table.c.id == 1).values(name="Phil"))  # Core
        session.commit()
        rows = revisions(session, Reservation, "id", "name", "party")
    assert rows[3:] == [
        (False, 2, "Steve", 9),
        (False, 3, "Steve", 9),
        (True, 3, None, None),
        (False, 1, "Phil", 1),
    ]


def test_bulk_statement_sees_pending_objects(
    factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    Reservation = models.Reservation
    with factory() as session:
        session.add(Reservation(id=1, **STEVE, party=1))  # not flushed yet
        session.execute(update(Reservation).values(party=2))
        session.commit()
        assert revisions(session, Reservation, "party") == [(False, 1), (False, 2)]
    with factory() as session, session.no_autoflush:
        session.add(Reservation(id=2, **STEVE, party=1))
        session.execute(update(Reservation).where(Reservation.id == 1).values(party=3))
        session.commit()
        assert revisions(session, Reservation, "id", "party")[2:] == [(False, 1, 3), (False, 2, 1)]


def test_bulk_insert_with_keys_and_bulk_update_by_key(
    factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    Pair = models.Pair
    with factory() as session:
        session.execute(
            insert(Pair), [{"a": 1, "b": "x", "value": 1}, {"a": 2, "b": "y", "value": 2}]
        )
        session.execute(update(Pair), [{"a": 1, "b": "x", "value": 10}])
        session.commit()
        assert [(r.rev_isdelete, r.value) for r in history(session, Pair, (1, "x"))] == [
            (False, 1),
            (False, 10),
        ]
        assert len(history(session, Pair, [2, "y"])) == 1


def test_rolled_back_bulk_statement_leaves_no_revision(
    factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    Reservation = models.Reservation
    with factory() as session:
        session.add(Reservation(id=1, **STEVE, party=1))
        session.commit()
        session.execute(update(Reservation).values(party=5))
        session.rollback()
        assert len(history(session, Reservation, 1)) == 1


def test_insert_leaving_keys_to_the_database_warns(
    factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    with factory() as session:
        with pytest.warns(RowcastWarning, match="not captured"):
            session.execute(insert(models.Reservation), [{**STEVE, "party": 1}])
        session.commit()


def test_delete_orphan_cascade_from_an_unversioned_parent(
    factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    Parent, Child = models.Parent, models.Child
    with factory() as session:
        parent = Parent(id=1, name="p", children=[Child(id=1, name="a"), Child(id=2, name="b")])
        session.add(parent)
        session.commit()
        parent.children.pop(0)  # orphan
        session.commit()
        session.delete(parent)  # cascades to the other child, loaded at flush time
        session.commit()
        rows = revisions(session, Child, "id", "name")
    assert sorted(rows[:2]) == [(False, 1, "a"), (False, 2, "b")]
    assert rows[2:] == [(True, 1, None), (True, 2, None)]


def test_unversioned_models_cost_no_extra_query(
    engine: Engine, factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    Plain = models.Plain
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement.split()[0].upper())

    with factory() as session:
        session.add(Plain(id=1, data="a"))
        session.commit()
        obj = session.scalars(select(Plain).options(load_only(Plain.data))).one()
        event.listen(engine, "before_cursor_execute", count)
        try:
            obj.data = "b"  # `count` is not loaded: a before image would need a SELECT
            session.commit()
        finally:
            event.remove(engine, "before_cursor_execute", count)
    assert [s for s in statements if s in {"SELECT", "INSERT", "UPDATE"}] == ["UPDATE"]


def test_revisions_are_append_only(
    engine: Engine, factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    Reservation = models.Reservation
    Revision = Reservation.Revision
    with factory() as session:
        session.add(Reservation(id=1, **STEVE, party=6))
        session.commit()
        (rev,) = history(session, Reservation, 1)
        rev.party = 7
        with pytest.raises(AuditError, match="append-only"):
            session.flush()
        session.rollback()
        session.delete(history(session, Reservation, 1)[0])
        with pytest.raises(AuditError, match="append-only"):
            session.flush()
        session.rollback()
        with pytest.raises(AuditError, match="UPDATE is refused"):
            session.execute(update(Revision).values(party=1))
        session.rollback()
    with engine.begin() as conn, pytest.raises(AuditError, match="DELETE is refused"):
        conn.execute(delete(Revision.__table__))
    with factory() as session:
        assert len(history(session, Reservation, 1)) == 1


def test_revision_table_shape(engine: Engine, models: SimpleNamespace) -> None:
    Reservation = models.Reservation
    schema = Reservation.__table__.schema
    found = inspect(engine)
    columns = {c["name"]: c for c in found.get_columns("reservations_rev", schema=schema)}
    assert list(columns) == [
        "rev_id", "rev_created", "rev_isdelete", "rev_txid", "id", "name", "date", "time", "party",
    ]  # fmt: skip
    assert found.get_pk_constraint("reservations_rev", schema=schema)["constrained_columns"] == [
        "rev_id"
    ]
    assert not columns["id"]["nullable"]
    assert all(columns[c]["nullable"] for c in ("name", "date", "time", "party", "rev_txid"))
    assert all(columns[c]["default"] is None for c in columns if c != "rev_id")
    assert not found.get_foreign_keys("audit_child_rev", schema=schema)
    assert not found.get_unique_constraints("audit_stamped_rev", schema=schema)
    indexed = [i["column_names"] for i in found.get_indexes("reservations_rev", schema=schema)]
    assert ["id", "rev_created"] in indexed
    assert not any(i["unique"] for i in found.get_indexes("audit_stamped_rev", schema=schema))
    rev_created = Reservation.Revision.__table__.c.rev_created
    assert rev_created.type.python_type is float


def test_works_beside_session_capture_and_an_audit_sink(
    engine: Engine, factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    hub = Hub()
    published: list[Any] = []
    hub.connect(published.append)
    sink = AuditSink(engine).connect(hub)  # ORM changes are audited already: skipped
    with SessionCapture(factory, hub=hub), factory() as session:
        obj = models.Stamped(name="x")
        session.add(obj)
        session.commit()
        session.execute(update(models.Stamped).values(name="y"))
        session.commit()
        rows = revisions(session, models.Stamped, "name", "status")
    assert [(c.name, c.after) for c in published] == [
        ("audit_stamped_write", {"id": 1, "name": "x", "status": "new", "edits": 0}),
        ("audit_stamped_update", {"id": 1, "name": "y", "status": "new", "edits": 1}),
    ]
    assert rows == [(False, "x", "new"), (False, "y", "new")]
    assert sink.written == 0
    assert sink.skipped == 2
    assert hub.errors == 0

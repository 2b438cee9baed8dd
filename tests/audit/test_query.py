"""history, as_of and revert; versioned() for classes you cannot change; bad input."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, registry, sessionmaker

from rowcast import ConfigError
from rowcast.audit import Versioned, as_of, history, revert, versioned

from .test_session import STEVE, revisions


def test_history_is_oldest_first_and_per_row(
    factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    Reservation = models.Reservation
    with factory() as session:
        one, two = Reservation(**STEVE, party=1), Reservation(**STEVE, party=2)
        session.add_all([one, two])
        session.commit()
        for party in (3, 4, 5):
            one.party = party
            session.commit()
        one.party = 6  # pending: history flushes it first
        assert [r.party for r in history(session, Reservation, one.id)] == [1, 3, 4, 5, 6]
        assert [r.party for r in history(session, Reservation, two.id)] == [2]
        assert history(session, Reservation, 99) == []


def test_as_of_takes_epoch_seconds_and_datetimes(
    factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    Pair = models.Pair
    with factory() as session:
        session.add(Pair(a=1, b="x", value=1))
        session.commit()
        obj = session.get(Pair, (1, "x"))
        assert obj is not None
        obj.value = 2
        session.commit()
        first, second = history(session, Pair, (1, "x"))
        assert as_of(session, Pair, (1, "x"), first.rev_created).value == 1  # inclusive
        assert as_of(session, Pair, (1, "x"), second.rev_created).value == 2
        middle = (first.rev_created + second.rev_created) / 2
        aware = dt.datetime.fromtimestamp(middle, dt.UTC)
        assert as_of(session, Pair, (1, "x"), aware).value == 1
        assert as_of(session, Pair, (1, "x"), aware.replace(tzinfo=None)).value == 1  # naive: UTC
        assert as_of(session, Pair, (2, "x"), middle) is None


def test_revert_updates_the_row_back(
    factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    Reservation = models.Reservation
    with factory() as session:
        obj = Reservation(**STEVE, party=6)
        session.add(obj)
        session.commit()
        obj.party, obj.name = 4, "Phil"
        session.commit()
        first = history(session, Reservation, obj.id)[0]
        assert revert(session, first) is obj
        session.commit()
        assert (obj.party, obj.name) == (6, "Steve")
        assert revisions(session, Reservation, "name", "party") == [
            (False, "Steve", 6),
            (False, "Phil", 4),
            (False, "Steve", 6),  # the revert is a change with a revision of its own
        ]


def test_revert_brings_back_a_deleted_row_and_can_delete(
    factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    Reservation = models.Reservation
    with factory() as session:
        obj = Reservation(**STEVE, party=6)
        session.add(obj)
        session.commit()
        key = obj.id
        session.delete(obj)
        session.commit()
        alive = history(session, Reservation, key)[0]
        assert revert(session, alive) is not None
        session.commit()
    with factory() as session:
        back = session.get(Reservation, key)
        assert back is not None
        assert (back.name, back.party, back.date) == ("Steve", 6, STEVE["date"])
        gone = history(session, Reservation, key)[1]
        assert revert(session, gone) is None
        session.commit()
        assert session.get(Reservation, key) is None
        assert [r.rev_isdelete for r in history(session, Reservation, key)] == [
            False,
            True,
            False,
            True,
        ]


def test_revert_is_undone_by_a_rollback(
    factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    with factory() as session:
        obj = models.Reservation(**STEVE, party=6)
        session.add(obj)
        session.commit()
        session.delete(obj)
        session.commit()
        revert(session, history(session, models.Reservation, 1)[0])
        session.flush()
        session.rollback()
        assert session.get(models.Reservation, 1) is None
        assert len(history(session, models.Reservation, 1)) == 2


def test_versioned_for_a_class_you_cannot_change(tmp_path: object) -> None:
    mapper_registry = registry()
    table = Table(
        "audit_legacy",
        mapper_registry.metadata,
        Column("id", Integer, primary_key=True),
        Column("data", String(10)),
    )

    class Legacy:
        pass

    mapper_registry.map_imperatively(Legacy, table)
    assert versioned(Legacy) is Legacy
    assert versioned(Legacy) is Legacy  # idempotent
    assert Legacy.Revision.__table__.name == "audit_legacy_rev"  # type: ignore[attr-defined]
    engine = create_engine("sqlite://")
    mapper_registry.metadata.create_all(engine)
    with Session(engine) as session:
        obj = Legacy()
        obj.data = "a"  # type: ignore[attr-defined]
        session.add(obj)
        session.commit()
        assert [r.data for r in history(session, Legacy, obj.id)] == ["a"]  # type: ignore[attr-defined]
    engine.dispose()


def test_joined_inheritance_versions_each_table() -> None:
    class Base(DeclarativeBase):
        pass

    class Animal(Versioned, Base):
        __tablename__ = "audit_animal"
        id: Mapped[int] = mapped_column(primary_key=True)
        kind: Mapped[str] = mapped_column(String(10))
        __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "animal"}

    class Dog(Animal):
        __tablename__ = "audit_dog"
        id: Mapped[int] = mapped_column(ForeignKey("audit_animal.id"), primary_key=True)
        bark: Mapped[int] = mapped_column(default=1)
        __mapper_args__ = {"polymorphic_identity": "dog"}

    assert Animal.Revision.__table__.name == "audit_animal_rev"
    assert Dog.Revision.__table__.name == "audit_dog_rev"
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(Dog(id=1, bark=3))
        session.commit()
        assert [r.kind for r in history(session, Animal, 1)] == ["dog"]
        assert [r.bark for r in history(session, Dog, 1)] == [3]
    engine.dispose()


def test_bad_input_gets_a_clear_error(
    factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    with factory() as session:
        with pytest.raises(TypeError, match="not a versioned model"):
            history(session, models.Plain, 1)
        with pytest.raises(ValueError, match=r"primary key \(a, b\): pass a tuple of 2 values"):
            history(session, models.Pair, 1)
        with pytest.raises(ValueError, match="pass one value"):
            as_of(session, models.Reservation, (1, 2), 0.0)
        with pytest.raises(TypeError, match="epoch seconds or a datetime"):
            as_of(session, models.Reservation, 1, "yesterday")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"needs a Model\.Revision"):
            revert(session, models.Reservation(**STEVE, party=1))
    with pytest.raises(TypeError, match="needs a mapped class"):
        versioned(int)


def test_tables_that_cannot_be_versioned_are_refused() -> None:
    class Base(DeclarativeBase):
        pass

    with pytest.raises(ConfigError, match="rev_created"):

        class Clash(Versioned, Base):
            __tablename__ = "audit_clash"
            id: Mapped[int] = mapped_column(primary_key=True)
            rev_created: Mapped[float]

    metadata = MetaData()
    Table("audit_taken_rev", metadata, Column("x", Integer))

    class Other(DeclarativeBase):
        metadata = MetaData()

    Other.metadata = metadata
    with pytest.raises(ConfigError, match="already exists"):

        class Taken(Versioned, Other):
            __tablename__ = "audit_taken"
            id: Mapped[int] = mapped_column(primary_key=True)


def test_revision_query_by_class(factory: sessionmaker[Session], models: SimpleNamespace) -> None:
    with factory() as session:
        session.add(models.Reservation(**STEVE, party=3))
        session.commit()
        rev = models.Reservation.Revision
        assert session.scalars(select(rev.party)).all() == [3]

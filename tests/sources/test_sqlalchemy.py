"""SessionCapture on SQLite, PostgreSQL and MariaDB: every weakness of meepo has a test here."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Column,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    delete,
    insert,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.mutable import MutableDict
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    scoped_session,
    sessionmaker,
)
from sqlalchemy.orm.attributes import flag_modified

from rowcast import Action, Change, ConfigError, Hub, RowcastWarning
from rowcast.sources import Source
from rowcast.sources.sqlalchemy import SessionCapture
from tests.conftest import sqlite_engine, wait_for


class Base(DeclarativeBase):
    pass


class Test(Base):
    __test__ = False  # a model, not a pytest class

    __tablename__ = "test"
    id: Mapped[int] = mapped_column(primary_key=True)
    data: Mapped[str] = mapped_column(String(20))


class Stamped(Base):
    __tablename__ = "rc_stamped"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(10), server_default="new")


class Doc(Base):
    __tablename__ = "rc_doc"
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[dict[str, Any]] = mapped_column(MutableDict.as_mutable(JSON))
    edits: Mapped[int] = mapped_column(server_default="0", onupdate=literal_column("edits + 1"))


rc_link = Table(
    "rc_link",
    Base.metadata,
    Column("doc_id", ForeignKey("rc_doc.id"), primary_key=True),
    Column("tag_id", ForeignKey("rc_tag.id"), primary_key=True),
)


class Tag(Base):
    __tablename__ = "rc_tag"
    id: Mapped[int] = mapped_column(primary_key=True)
    docs: Mapped[list[Doc]] = relationship(secondary=rc_link)


class Pair(Base):
    __tablename__ = "rc_pair"
    a: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    b: Mapped[str] = mapped_column(String(10), primary_key=True)
    value: Mapped[int]


class Parent(Base):
    __tablename__ = "rc_parent"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str | None] = mapped_column(String(10), unique=True)
    children: Mapped[list[Child]] = relationship(cascade="all, delete-orphan")


class Child(Base):
    __tablename__ = "rc_child"
    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int] = mapped_column(ForeignKey("rc_parent.id"))
    name: Mapped[str] = mapped_column(String(10))


class Animal(Base):
    __tablename__ = "rc_animal"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))
    name: Mapped[str] = mapped_column(String(10))
    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "animal"}


class Dog(Animal):
    __tablename__ = "rc_dog"
    id: Mapped[int] = mapped_column(ForeignKey("rc_animal.id"), primary_key=True)
    bark: Mapped[int] = mapped_column(Integer, default=1)
    __mapper_args__ = {"polymorphic_identity": "dog"}


class Recorder:
    """Collects what the hub publishes: transactions, and (name, pk) pairs."""

    def __init__(self, hub: Hub) -> None:
        self.transactions: list[list[Change]] = []
        hub.signal("commit").connect(self.commit, weak=False)

    def commit(self, sender: Any, changes: list[Change]) -> None:
        self.transactions.append(changes)

    @property
    def changes(self) -> list[Change]:
        return [c for tx in self.transactions for c in tx]

    @property
    def events(self) -> list[tuple[str, Any]]:
        return [(c.name, c.pk) for c in self.changes]


@pytest.fixture
def db(engine: Engine) -> Iterator[Engine]:
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    yield engine
    Base.metadata.drop_all(engine)


@pytest.fixture
def factory(db: Engine) -> sessionmaker[Session]:
    return sessionmaker(db)


@pytest.fixture
def hub() -> Hub:
    return Hub()


@pytest.fixture
def rec(hub: Hub) -> Recorder:
    return Recorder(hub)


@pytest.fixture
def capture(factory: sessionmaker[Session], hub: Hub) -> Iterator[SessionCapture]:
    with SessionCapture(factory, hub=hub) as cap:
        yield cap


def test_seed_example_gives_exactly_these_changes(
    factory: sessionmaker[Session], capture: SessionCapture, rec: Recorder
) -> None:
    with factory() as session:
        # PostgreSQL's sequence does not see an explicit id: let it give the 1
        pg = session.connection().dialect.name == "postgresql"
        session.add(Test(data="a") if pg else Test(id=1, data="a"))
        session.commit()
        t_2, t_3 = Test(data="b"), Test(data="c")
        session.add_all([t_2, t_3])
        session.commit()
        t_2.data = "x"
        session.commit()
        session.delete(t_3)
        session.commit()
    assert rec.events == [
        ("test_write", 1),
        ("test_write", 2),
        ("test_write", 3),
        ("test_update", 2),
        ("test_delete", 3),
    ]
    assert [len(tx) for tx in rec.transactions] == [1, 2, 1, 1]
    assert all(c.source == "sqlalchemy" and c.position is None for c in rec.changes)
    assert len({c.txid for c in rec.changes}) == 4


def test_autoincrement_pk_is_known(
    factory: sessionmaker[Session], capture: SessionCapture, rec: Recorder
) -> None:
    with factory() as session:
        rows = [Test(data=str(i)) for i in range(5)]
        session.add_all(rows)
        session.commit()
        ids = [r.id for r in rows]
    assert all(isinstance(i, int) for i in ids)
    assert [c.pk for c in rec.changes] == ids
    assert [c.after["id"] for c in rec.changes if c.after] == ids


def test_images_are_full_plain_dicts_taken_at_flush_time(
    factory: sessionmaker[Session], capture: SessionCapture, rec: Recorder
) -> None:
    with factory() as session:
        obj = Test(id=1, data="a")
        session.add(obj)
        session.commit()
        obj.data = "b"  # obj is expired by the commit: the old value is not in memory
        session.commit()
        obj.data = "c"  # later mutation must not reach the published images
        session.commit()
        session.delete(obj)  # expired again: the before image comes from the database
        session.commit()
    write, upd1, upd2, dele = rec.changes
    assert write.before is None
    assert write.after == {"id": 1, "data": "a"}
    assert upd1.before == {"id": 1, "data": "a"}
    assert upd1.after == {"id": 1, "data": "b"}
    assert upd2.before == {"id": 1, "data": "b"}
    assert upd2.after == {"id": 1, "data": "c"}
    assert dele.before == {"id": 1, "data": "c"}
    assert dele.after is None
    assert all(type(c.after or c.before) is dict for c in rec.changes)
    assert upd1.changed == ("data",)


def test_server_defaults_are_in_the_after_image(
    factory: sessionmaker[Session], capture: SessionCapture, rec: Recorder
) -> None:
    with factory() as session:
        session.add(Stamped(name="x"))
        session.commit()
    (change,) = rec.changes
    assert change.after == {"id": 1, "name": "x", "status": "new"}


def test_dirty_without_net_change_publishes_nothing(
    factory: sessionmaker[Session], capture: SessionCapture, rec: Recorder
) -> None:
    with factory() as session:
        obj = Test(id=1, data="a")
        session.add(obj)
        session.commit()
        obj.data = "a"
        assert obj in session.dirty
        session.commit()
        assert obj.data == "a"  # loaded again, so that it can be flagged
        flag_modified(obj, "data")
        session.commit()
        obj.data = "z"
        obj.data = "a"  # back to where it was before the flush
        session.commit()
    assert rec.events == [("test_write", 1)]


def test_rollback_discards_and_nothing_leaks_into_next_transaction(
    factory: sessionmaker[Session], capture: SessionCapture, rec: Recorder
) -> None:
    with factory() as session:
        session.add(Test(id=1, data="a"))
        session.flush()
        session.rollback()
        session.add(Test(id=2, data="b"))
        session.commit()
    assert rec.events == [("test_write", 2)]


def test_savepoint_rollback_discards_only_its_own_changes(
    factory: sessionmaker[Session], capture: SessionCapture, rec: Recorder
) -> None:
    with factory() as session:
        session.add(Test(id=1, data="outer"))
        session.flush()
        with session.begin_nested():  # released: kept
            session.add(Test(id=2, data="kept"))
        nested = session.begin_nested()
        session.add(Test(id=3, data="dropped"))
        inner = session.begin_nested()
        session.add(Test(id=4, data="dropped too"))
        session.flush()
        inner.commit()
        nested.rollback()
        session.add(Test(id=5, data="after"))
        session.commit()
        assert session.scalars(select(Test.id).order_by(Test.id)).all() == [1, 2, 5]
    assert rec.events == [("test_write", 1), ("test_write", 2), ("test_write", 5)]
    assert len(rec.transactions) == 1


def test_released_savepoint_is_dropped_when_outer_transaction_rolls_back(
    factory: sessionmaker[Session], capture: SessionCapture, rec: Recorder
) -> None:
    with factory() as session:
        with session.begin_nested():
            session.add(Test(id=1, data="a"))
        session.rollback()
        session.commit()
    assert rec.events == []


def test_failed_flush_publishes_nothing(
    factory: sessionmaker[Session], capture: SessionCapture, rec: Recorder
) -> None:
    with factory() as session:
        session.add(Test(id=1, data="a"))
        session.commit()
        session.add(Test(id=2, data="b"))
        session.flush()
        session.add(Test(id=1, data="duplicate"))
        with pytest.raises(IntegrityError):
            session.commit()
        session.rollback()
        session.add(Test(id=3, data="c"))
        session.commit()
    assert rec.events == [("test_write", 1), ("test_write", 3)]


def test_sessions_are_isolated(
    factory: sessionmaker[Session], capture: SessionCapture, rec: Recorder
) -> None:
    with factory() as one, factory() as two:
        sqlite = one.connection().dialect.name == "sqlite"  # one writer at a time there
        one.add(Test(id=1, data="one"))
        one.flush()
        if not sqlite:
            two.add(Test(id=2, data="two"))
            two.flush()
        one.rollback()
        if sqlite:
            two.add(Test(id=2, data="two"))
            two.flush()
        two.commit()
        one.add(Test(id=3, data="three"))
        one.flush()
        one.commit()
    assert rec.events == [("test_write", 2), ("test_write", 3)]
    assert [len(tx) for tx in rec.transactions] == [1, 1]


def test_threads_are_isolated(
    factory: sessionmaker[Session], capture: SessionCapture, rec: Recorder
) -> None:
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        try:
            for i in range(10):
                with factory() as session:
                    session.add_all(Test(id=n * 1000 + i * 10 + k, data=f"t{n}") for k in range(3))
                    with lock:  # SQLite allows one writer; the others wait here
                        session.commit()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(rec.transactions) == 40
    for tx in rec.transactions:
        assert len(tx) == 3
        assert len({c.after["data"] for c in tx if c.after}) == 1  # one thread per transaction
    assert sorted(c.pk for c in rec.changes) == sorted(
        n * 1000 + i * 10 + k for n in range(1, 5) for i in range(10) for k in range(3)
    )


def test_bulk_update_and_delete_statements(
    factory: sessionmaker[Session], capture: SessionCapture, rec: Recorder
) -> None:
    with factory() as session:
        session.add_all([Test(id=i, data="a") for i in range(1, 5)])
        session.commit()
        result = session.execute(update(Test).where(Test.id <= 2).values(data="b"))
        assert result.rowcount == 2
        session.execute(update(Test).where(Test.id == 3).values(data="a"))  # no net change
        session.commit()
        session.execute(delete(Test).where(Test.id >= 3))
        session.commit()
    assert rec.events[4:] == [
        ("test_update", 1),
        ("test_update", 2),
        ("test_delete", 3),
        ("test_delete", 4),
    ]
    upd = rec.changes[4]
    assert upd.before == {"id": 1, "data": "a"}
    assert upd.after == {"id": 1, "data": "b"}
    assert rec.changes[-1].before == {"id": 4, "data": "a"}


def test_bulk_update_of_a_pending_object_is_captured(
    factory: sessionmaker[Session], capture: SessionCapture, rec: Recorder
) -> None:
    # SQLAlchemy autoflushes after the do_orm_execute hooks: the capture flushes first,
    # or the row it selects before the UPDATE misses the pending object
    with factory() as session:
        session.add(Test(id=1, data="a"))
        session.execute(update(Test).where(Test.id == 1).values(data="b"))
        session.commit()
    assert rec.events == [("test_write", 1), ("test_update", 1)]
    assert rec.changes[1].before == {"id": 1, "data": "a"}
    assert rec.changes[1].after == {"id": 1, "data": "b"}


def test_bulk_update_by_primary_key_and_insert_with_keys(
    factory: sessionmaker[Session], capture: SessionCapture, rec: Recorder
) -> None:
    with factory() as session:
        session.execute(insert(Test), [{"id": 1, "data": "a"}, {"id": 2, "data": "b"}])
        session.commit()
        session.execute(update(Test), [{"id": 1, "data": "x"}, {"id": 2, "data": "y"}])
        session.commit()
    assert rec.events == [
        ("test_write", 1),
        ("test_write", 2),
        ("test_update", 1),
        ("test_update", 2),
    ]
    assert rec.changes[3].before == {"id": 2, "data": "b"}
    assert rec.changes[3].after == {"id": 2, "data": "y"}


def test_bulk_statement_rolled_back_publishes_nothing(
    factory: sessionmaker[Session], capture: SessionCapture, rec: Recorder
) -> None:
    with factory() as session:
        session.add(Test(id=1, data="a"))
        session.commit()
        session.execute(update(Test).values(data="b"))
        session.rollback()
    assert rec.events == [("test_write", 1)]


def test_uncapturable_writes_warn(
    factory: sessionmaker[Session], capture: SessionCapture, rec: Recorder
) -> None:
    with factory() as session:
        with pytest.warns(RowcastWarning, match="primary keys are left to the database"):
            session.execute(insert(Test), [{"data": "a"}, {"data": "b"}])
        with pytest.warns(RowcastWarning, match="raw SQL"):
            session.execute(text("UPDATE test SET data = 'z'"))
        session.commit()
        assert session.scalar(select(Test.data).limit(1)) == "z"  # the write itself happened
    assert rec.events == []


def test_core_statements_on_tables(
    factory: sessionmaker[Session], capture: SessionCapture, rec: Recorder
) -> None:
    table = Test.__table__
    with factory() as session:
        session.execute(table.insert().values(id=1, data="a"))
        session.execute(table.update().where(table.c.id == 1).values(data="b"))
        with pytest.warns(RowcastWarning, match="several parameter sets"):
            session.execute(
                table.update().where(table.c.id == bindparam("key")).values(data="c"),
                [{"key": 1}],
            )
        session.commit()
    assert rec.events == [("test_write", 1), ("test_update", 1)]
    assert rec.changes[1].after == {"id": 1, "data": "b"}


def test_bulk_statement_on_table_without_primary_key_warns(
    db: Engine, factory: sessionmaker[Session], capture: SessionCapture, rec: Recorder
) -> None:
    loose = Table("rc_loose", MetaData(), Column("x", Integer))
    loose.create(db)
    try:
        with factory() as session:
            with pytest.warns(RowcastWarning, match="has no primary key"):
                session.execute(loose.insert().values(x=1))
            session.commit()
    finally:
        loose.drop(db)
    assert rec.events == []


def test_upsert_that_finds_its_row_is_an_update(
    factory: sessionmaker[Session], capture: SessionCapture, rec: Recorder
) -> None:
    with factory() as session:
        session.add(Test(id=1, data="a"))
        session.commit()
        dialect = session.connection().dialect.name
        if dialect == "mysql":
            from sqlalchemy.dialects.mysql import insert as upsert

            stmt: Any = upsert(Test).values(id=1, data="b")
            stmt = stmt.on_duplicate_key_update(data=stmt.inserted.data)
        else:
            from sqlalchemy.dialects.postgresql import insert as pg_upsert
            from sqlalchemy.dialects.sqlite import insert as sqlite_upsert

            make = pg_upsert if dialect == "postgresql" else sqlite_upsert
            stmt = make(Test).values(id=1, data="b")
            stmt = stmt.on_conflict_do_update(index_elements=["id"], set_={"data": "b"})
        session.execute(stmt)
        session.commit()
    assert rec.events == [("test_write", 1), ("test_update", 1)]
    assert rec.changes[1].before == {"id": 1, "data": "a"}
    assert rec.changes[1].after == {"id": 1, "data": "b"}


def test_closing_a_session_discards_what_it_did_not_commit(
    factory: sessionmaker[Session], capture: SessionCapture, rec: Recorder
) -> None:
    session = factory()
    session.add(Test(id=1, data="a"))
    session.flush()
    session.close()
    session.add(Test(id=2, data="b"))
    session.commit()
    session.close()
    assert rec.events == [("test_write", 2)]


def test_returning_statements_keep_their_rows(
    factory: sessionmaker[Session], capture: SessionCapture, rec: Recorder
) -> None:
    with factory() as session:
        if not session.connection().dialect.update_returning:
            pytest.skip("no UPDATE ... RETURNING on this database")
        session.add_all([Test(id=1, data="a"), Test(id=2, data="a")])
        session.commit()
        result = session.execute(
            update(Test).where(Test.id >= 1).values(data="b").returning(Test.id)
        )
        assert sorted(result.scalars()) == [1, 2]
        session.commit()
    assert rec.events[2:] == [("test_update", 1), ("test_update", 2)]


def test_onupdate_columns_and_in_place_mutations_are_read_right(
    factory: sessionmaker[Session], capture: SessionCapture, rec: Recorder
) -> None:
    with factory() as session:
        doc = Doc(id=1, body={"n": 1})
        session.add(doc)
        session.commit()
        doc.body["n"] = 2  # in place, tracked by MutableDict
        session.flush()
        doc.body["n"] = 3
        session.commit()
        assert doc.edits == 2
    write, first, second = rec.changes
    assert write.after == {"id": 1, "body": {"n": 1}, "edits": 0}
    assert first.before == {"id": 1, "body": {"n": 1}, "edits": 0}
    assert first.after == {"id": 1, "body": {"n": 2}, "edits": 1}  # onupdate, read back
    assert second.before == {"id": 1, "body": {"n": 2}, "edits": 1}
    assert second.after == {"id": 1, "body": {"n": 3}, "edits": 2}


def test_many_to_many_link_rows_warn(
    factory: sessionmaker[Session], capture: SessionCapture, rec: Recorder
) -> None:
    with factory() as session:
        session.add(Tag(id=1, docs=[Doc(id=1, body={})]))
        with pytest.warns(RowcastWarning, match="many-to-many table 'rc_link' are not captured"):
            session.commit()
    assert sorted(rec.events) == [("rc_doc_write", 1), ("rc_tag_write", 1)]


def test_bulk_update_of_primary_keys_warns(
    factory: sessionmaker[Session], capture: SessionCapture, rec: Recorder
) -> None:
    with factory() as session:
        session.add(Test(id=1, data="a"))
        session.commit()
        with pytest.warns(RowcastWarning, match="changes primary keys") as caught:
            session.execute(update(Test).where(Test.id == 1).values(id=10))
        assert caught[0].filename == __file__  # the warning points at the caller's line
        session.commit()
    assert rec.events == [("test_write", 1)]


def test_failed_flush_in_savepoint_leaves_no_stale_before_image(
    factory: sessionmaker[Session], capture: SessionCapture, rec: Recorder
) -> None:
    with factory() as session:
        session.add_all([Parent(id=1, name="p"), Parent(id=2, name="taken")])
        session.commit()
        parent = session.get(Parent, 1)
        assert parent is not None
        nested = session.begin_nested()
        parent.name = "q"
        session.flush()
        parent.name = "taken"  # the flush fails after the before image {name: q} was taken
        with pytest.raises(IntegrityError):
            session.flush()
        nested.rollback()
        assert parent.name == "p"
        parent.children.append(Child(id=1, name="c"))  # the parent row itself does not change
        session.commit()
    assert rec.events[2:] == [("rc_child_write", 1)]


def test_composite_pk_is_a_tuple(
    factory: sessionmaker[Session], capture: SessionCapture, rec: Recorder
) -> None:
    with factory() as session:
        pair = Pair(a=1, b="x", value=10)
        session.add(pair)
        session.commit()
        pair.value = 11
        session.commit()
        session.execute(update(Pair).where(Pair.a == 1).values(value=12))
        session.commit()
    assert [c.pk for c in rec.changes] == [(1, "x"), (1, "x"), (1, "x")]
    assert Change.from_json(rec.changes[0].to_json()).pk == (1, "x")


def test_tables_filter_by_name_and_schema_qualified_name(
    factory: sessionmaker[Session], hub: Hub, rec: Recorder
) -> None:
    with factory() as session:
        schema = session.connection().dialect.default_schema_name
    tables = ["test", f"{schema}.rc_stamped"]
    with SessionCapture(factory, hub=hub, tables=tables), factory() as session:
        session.add_all([Test(id=1, data="a"), Stamped(id=1, name="s"), Pair(a=1, b="x", value=1)])
        session.commit()
        session.execute(update(Pair).values(value=2))
        session.commit()
    assert sorted(c.table for c in rec.changes) == ["rc_stamped", "test"]
    assert {c.schema for c in rec.changes} == {schema}


def test_delete_orphan_cascade_and_relationships(
    factory: sessionmaker[Session], capture: SessionCapture, rec: Recorder
) -> None:
    with factory() as session:
        parent = Parent(children=[Child(name="a"), Child(name="b")])
        session.add(parent)
        session.commit()
        parent.children.pop(0)  # an orphan, deleted by the flush
        session.commit()
        session.delete(parent)  # cascades to the remaining child
        session.commit()
    names = [name for name, _ in rec.events]
    assert names[:3] == ["rc_parent_write", "rc_child_write", "rc_child_write"]
    assert rec.changes[0].after == {"id": 1, "name": None}
    assert rec.changes[1].after is not None
    assert rec.changes[1].after["parent_id"] == 1
    assert names[3:] == ["rc_child_delete", "rc_child_delete", "rc_parent_delete"]
    assert rec.changes[3].before == {"id": 1, "parent_id": 1, "name": "a"}


def test_joined_inheritance_gives_one_change_per_table(
    factory: sessionmaker[Session], capture: SessionCapture, rec: Recorder
) -> None:
    with factory() as session:
        dog = Dog(name="rex")
        session.add(dog)
        session.commit()
        dog.bark = 3
        session.commit()
        session.delete(dog)
        session.commit()
    assert rec.events == [
        ("rc_animal_write", 1),
        ("rc_dog_write", 1),
        ("rc_dog_update", 1),
        ("rc_dog_delete", 1),
        ("rc_animal_delete", 1),
    ]
    assert rec.changes[1].after == {"id": 1, "bark": 1}
    assert rec.changes[2].before == {"id": 1, "bark": 1}


def test_failing_receiver_never_breaks_commit(
    factory: sessionmaker[Session], capture: SessionCapture, hub: Hub, rec: Recorder
) -> None:
    seen: list[BaseException] = []
    hub.on_error = lambda error, change, receiver: seen.append(error)
    hub.connect(lambda change: 1 / 0)
    with factory() as session:
        session.add(Test(id=1, data="a"))
        session.commit()
        assert session.get(Test, 1) is not None
    assert hub.errors == 1
    assert isinstance(seen[0], ZeroDivisionError)
    assert rec.events == [("test_write", 1)]


@pytest.mark.parametrize("kind", ["class", "sessionmaker", "scoped_session", "session"])
def test_every_kind_of_target(db: Engine, kind: str, hub: Hub, rec: Recorder) -> None:
    class MySession(Session):
        pass

    factory = sessionmaker(db, class_=MySession)
    one = factory()
    scoped = scoped_session(factory)
    target: Any = {"class": MySession, "sessionmaker": factory, "scoped_session": scoped}.get(
        kind, one
    )
    capture = SessionCapture(target, hub=hub)
    session = scoped() if kind == "scoped_session" else one
    session.add(Test(id=1, data="a"))
    session.commit()
    capture.close()
    session.add(Test(id=2, data="b"))  # detached: not captured
    session.commit()
    session.close()
    scoped.remove()
    assert rec.events == [("test_write", 1)]


def test_bad_targets_and_options_are_refused() -> None:
    with pytest.raises(ConfigError, match="sessionmaker"):
        SessionCapture(object())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="list of table names"):
        SessionCapture(Session, tables="test")


def test_two_captures_on_one_factory(factory: sessionmaker[Session]) -> None:
    hub_a, hub_b = Hub(), Hub()
    rec_a, rec_b = Recorder(hub_a), Recorder(hub_b)
    with (
        SessionCapture(factory, hub=hub_a),
        SessionCapture(factory, hub=hub_b, tables=["test"]),
        factory() as session,
    ):
        session.add_all([Test(id=1, data="a"), Stamped(id=1, name="s")])
        session.commit()
        session.execute(update(Test).values(data="b"))
        session.commit()
    # the unit of work writes the two tables in its own order: that order is what is published
    assert sorted(rec_a.events[:2]) == [("rc_stamped_write", 1), ("test_write", 1)]
    assert rec_a.events[2:] == [("test_update", 1)]
    assert rec_b.events == [("test_write", 1), ("test_update", 1)]


def test_types_survive_the_json_codec(
    factory: sessionmaker[Session], capture: SessionCapture, rec: Recorder
) -> None:
    class_ = Test
    with factory() as session:
        session.add(class_(id=1, data="é ✓"))
        session.commit()
    (change,) = rec.changes
    assert change.action is Action.WRITE
    assert Change.from_json(change.to_json()) == change
    assert isinstance(change.ts, float)
    assert abs(change.ts - dt.datetime.now().timestamp()) < 60


def test_a_capture_is_a_source_of_what_commits_from_now_on(
    factory: sessionmaker[Session], capture: SessionCapture, rec: Recorder
) -> None:
    assert isinstance(capture, Source)
    assert (capture.start, capture.position, capture.checkpoint) == ("now", None, None)
    capture.check()  # nothing to reach: the capture lives in the app's sessions
    with factory() as session:
        session.add(Test(data="before"))
        session.commit()
        transactions = iter(capture)  # from here on
        session.add(Test(data="a"))
        session.commit()
        session.add_all([Test(data="b"), Test(data="c")])
        session.commit()
    assert [[c.after["data"] for c in next(transactions) if c.after] for _ in range(2)] == [
        ["a"],
        ["b", "c"],
    ]
    assert len(rec.transactions) == 3  # the capture's own hub had them all
    capture.stop()
    assert list(transactions) == []
    assert capture._readers == []  # iteration over: nothing is held for it


def test_run_publishes_on_another_hub_until_stopped(
    factory: sessionmaker[Session], capture: SessionCapture, rec: Recorder
) -> None:
    other = Hub()
    got: list[Change] = []
    other.connect(got.append)
    thread = threading.Thread(target=capture.run, args=(other,))
    thread.start()
    wait_for(lambda: capture._readers)  # run() is iterating
    with factory() as session:
        session.add(Test(data="x"))
        session.commit()
    wait_for(lambda: got)
    capture.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert [c.after for c in got] == [c.after for c in rec.changes]
    # its own hub: run() only waits for stop, the commits are published once
    own = threading.Thread(target=capture.run, args=(capture.hub,))
    own.start()
    wait_for(lambda: capture._readers)
    with factory() as session:
        session.add(Test(data="y"))
        session.commit()
    capture.close()  # ends run() too
    own.join(10)
    assert not own.is_alive()
    assert [c.after["data"] for c in rec.changes if c.after] == ["x", "y"]


@pytest.mark.parametrize("statement", ["update", "delete", "insert"])
def test_a_captured_bulk_statement_waits_for_another_writer_on_sqlite(
    tmp_path: Any, statement: str
) -> None:
    """SQLite ignores FOR UPDATE: reading the rows first made the statement's write an
    upgrade of a read, which SQLite refuses at once while another connection writes
    ('database is locked', the busy timeout never waited), where the statement alone
    waits its turn. Seen with an outbox relay deleting the rows it relayed."""
    path = tmp_path / "app.db"
    engine = sqlite_engine(path)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(Test(id=1, data="a"))
        session.commit()
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the write lock a moment
    release = threading.Timer(0.5, lambda: other.execute("COMMIT"))
    hub, factory = Hub(), sessionmaker(engine)
    rec = Recorder(hub)
    try:
        with SessionCapture(factory, hub=hub):
            release.start()
            with factory() as session:
                if statement == "update":
                    session.execute(update(Test).where(Test.id == 1).values(data="b"))
                elif statement == "delete":
                    session.execute(delete(Test).where(Test.id == 1))
                else:
                    session.execute(insert(Test), [{"id": 2, "data": "c"}])
                session.commit()  # was: OperationalError, database is locked, at once
    finally:
        release.join()
        other.close()
        engine.dispose()
    assert [c.action for c in rec.changes] == [
        {"update": Action.UPDATE, "delete": Action.DELETE, "insert": Action.WRITE}[statement]
    ]

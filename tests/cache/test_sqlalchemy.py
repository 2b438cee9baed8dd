"""SQLAlchemyCache: the database as the bottom layer, on SQLite and on MariaDB."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, String, UniqueConstraint, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from rowcast.cache import Cache, SQLAlchemyCache
from rowcast.errors import CacheError, ConfigError
from rowcast.testing.cache import CacheContract
from tests.conftest import require_server, sqlite_engine


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "cache_users"
    __table_args__ = (UniqueConstraint("tenant", "email"),)
    __cache_keys__ = ["id", ("tenant", "email")]

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    tenant: Mapped[str] = mapped_column(String(40))
    email: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(40), default="")


class Animal(Base):
    __tablename__ = "cache_animals"
    __cache_keys__ = ["id"]
    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "animal"}

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(40), default="")
    license: Mapped[str] = mapped_column(String(40), default="")


class Dog(Animal):
    __cache_keys__ = ["id", "license"]
    __mapper_args__ = {"polymorphic_identity": "dog"}


class Puppy(Dog):
    __mapper_args__ = {"polymorphic_identity": "puppy"}


class SQLAlchemyContract(CacheContract):
    User, Animal, Dog, Puppy = User, Animal, Dog, Puppy
    expires = False
    serializers = False
    database = True
    engine: Engine

    def make_cache(self, namespace: str, **options: Any) -> Cache:
        return SQLAlchemyCache(sessionmaker(self.engine), **options)


class TestSQLiteCache(SQLAlchemyContract):
    @pytest.fixture(autouse=True)
    def _db(self, tmp_path: Path) -> Iterator[None]:
        self.engine = sqlite_engine(tmp_path / "cache.db")
        Base.metadata.create_all(self.engine)
        yield
        self.engine.dispose()


@pytest.fixture(scope="module")
def mariadb() -> Iterator[Engine]:
    engine = create_engine(require_server("mysql"))
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    yield engine
    Base.metadata.drop_all(engine)
    engine.dispose()


class TestMariaDBCache(SQLAlchemyContract):
    @pytest.fixture(autouse=True)
    def _db(self, mariadb: Engine) -> Iterator[None]:
        self.engine = mariadb
        yield
        with mariadb.begin() as conn:
            for table in Base.metadata.sorted_tables:
                conn.execute(table.delete())


def test_the_database_row_wins_over_a_loaded_object(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path / "c.db")
    Base.metadata.create_all(engine)
    cache = SQLAlchemyCache(sessionmaker(engine))

    def load_while_someone_inserts() -> User:
        cache.put(User(id=1, tenant="t", email="e", name="inserted meanwhile"))
        return User(id=1, tenant="t", email="e", name="loaded")

    got = cache.get_or_load(User, {"id": 1}, load_while_someone_inserts)
    assert got is not None
    assert got.name == "inserted meanwhile"
    # a loaded object that clashes with another row's unique key is not inserted either
    cache.put(User(id=2, tenant="t", email="taken"))
    clash = cache.get_or_load(User, {"id": 3}, lambda: User(id=3, tenant="t", email="taken"))
    assert clash is None
    assert cache.get(User, {"id": 3}) is None
    engine.dispose()


def test_bad_input() -> None:
    with pytest.raises(ConfigError, match="session factory"):
        SQLAlchemyCache("sqlite://")  # type: ignore[arg-type]

    class Plain:
        __cache_keys__ = ["id"]

        def __init__(self) -> None:
            self.id = 1

    cache = SQLAlchemyCache(sessionmaker(create_engine("sqlite://")))
    with pytest.raises(ConfigError, match="not mapped"):
        cache.put(Plain())


def test_a_database_error_is_a_cache_error(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path / "empty.db")  # no tables
    cache = SQLAlchemyCache(sessionmaker(engine, class_=Session))
    with pytest.raises(CacheError, match="get failed"):
        cache.get(User, {"id": 1})
    engine.dispose()


def test_one_loader_per_key_while_others_wait(tmp_path: Path) -> None:
    """A loader that found nothing hands the key to one waiter at a time, not to a newcomer
    beside it (the sleeps only give a wrong lock table the chance to show)."""
    engine = sqlite_engine(tmp_path / "locks.db")
    Base.metadata.create_all(engine)
    cache = SQLAlchemyCache(sessionmaker(engine))
    running, most = [0], [0]
    guard = threading.Lock()
    entered = [threading.Event() for _ in range(3)]
    go = [threading.Event() for _ in range(3)]

    def loader(n: int) -> Any:
        with guard:
            running[0] += 1
            most[0] = max(most[0], running[0])
        entered[n].set()
        go[n].wait(10)
        with guard:
            running[0] -= 1
        return None  # not found: the next waiter loads

    def read(n: int) -> None:
        cache.get_or_load(User, {"id": 1}, lambda: loader(n))

    threads = [threading.Thread(target=read, args=(n,)) for n in range(3)]
    threads[0].start()
    assert entered[0].wait(10)
    threads[1].start()  # waits for the first loader
    time.sleep(0.2)
    go[0].set()
    assert entered[1].wait(10)
    threads[2].start()  # must wait for the second loader too
    time.sleep(0.2)
    go[1].set()
    go[2].set()
    for thread in threads:
        thread.join(10)
    assert most[0] == 1
    engine.dispose()

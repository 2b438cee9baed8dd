"""cache.follow: changed rows lose their entries, from this session's commits or a binlog."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from rowcast import Change, Hub
from rowcast.cache import ChainedCache, MemoryCache, RedisCache, SQLAlchemyCache
from rowcast.errors import ConfigError
from rowcast.sources.mysql import BinlogSource
from rowcast.sources.sqlalchemy import SessionCapture
from rowcast.testing.cache import User as PlainUser
from rowcast.testing.cache import wait_for
from tests.cache.test_redis import drop_namespace
from tests.cache.test_sqlalchemy import Animal, Base, Dog, Puppy, User
from tests.conftest import require_redis, require_server, sqlite_engine


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[sessionmaker[Session], Hub]]:
    """A SQLite database whose sessions publish their commits on a hub."""
    engine = sqlite_engine(tmp_path / "follow.db")
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine, expire_on_commit=False)
    hub = Hub()
    with SessionCapture(factory, hub=hub):
        yield factory, hub
    engine.dispose()


def ada() -> User:
    return User(id=1, tenant="acme", email="ada@acme.test", name="Ada")


def test_a_committed_update_drops_the_entries(db: Any) -> None:
    factory, hub = db
    cache = MemoryCache()
    cache.follow(hub, User)
    with factory() as session:
        session.add(ada())
        session.commit()
        cache.put(session.get(User, 1))
        assert cache.get(User, {"id": 1}) is not None
        session.get(User, 1).name = "Ada L."  # type: ignore[union-attr]
        session.flush()
        assert cache.get(User, {"id": 1}) is not None  # not before the commit
        session.commit()
    assert cache.get(User, {"id": 1}) is None
    assert cache.get(User, {"tenant": "acme", "email": "ada@acme.test"}) is None


def test_a_changed_key_attribute_drops_the_old_key_too(db: Any) -> None:
    factory, hub = db
    cache = MemoryCache()
    cache.follow(hub, User)
    with factory() as session:
        session.add(ada())
        session.commit()
        cache.put(ada())
        session.execute(update(User).where(User.id == 1).values(email="ada@new.test"))
        session.commit()
    assert cache.get(User, {"tenant": "acme", "email": "ada@acme.test"}) is None
    assert cache.get(User, {"id": 1}) is None


def test_refresh_stores_the_new_row_and_delete_drops_it(db: Any) -> None:
    factory, hub = db
    cache = MemoryCache()
    follower = cache.follow(hub, [User], refresh=True)
    with factory() as session:
        session.add(ada())
        session.commit()
        got = cache.get(User, {"tenant": "acme", "email": "ada@acme.test"})
        assert got is not None
        assert (type(got), got.name) == (User, "Ada")
        session.execute(update(User).where(User.id == 1).values(email="ada@new.test"))
        session.commit()
        assert cache.get(User, {"tenant": "acme", "email": "ada@acme.test"}) is None
        moved = cache.get(User, {"tenant": "acme", "email": "ada@new.test"})
        assert moved is not None
        assert moved.id == 1
        session.delete(session.get(User, 1))
        session.commit()
    assert cache.get(User, {"id": 1}) is None
    follower.close()
    follower.close()


def test_polymorphic_entries_of_subclasses_go_too(db: Any) -> None:
    factory, hub = db
    cache = MemoryCache(polymorphic=True)
    cache.follow(hub, Animal, refresh=True)
    with factory() as session:
        session.add(Puppy(id=5, name="Rex", license="L-5"))
        session.commit()
        refreshed = cache.get(Animal, {"id": 5})
        assert type(refreshed) is Puppy  # rebuilt as its polymorphic identity says
        session.get(Animal, 5).license = "L-6"  # type: ignore[union-attr]
        session.commit()
    assert cache.get(Dog, {"license": "L-5"}) is None
    got = cache.get(Dog, {"license": "L-6"})
    assert got is not None
    assert got.name == "Rex"


def test_the_database_layer_of_a_chain_is_left_alone(db: Any) -> None:
    factory, hub = db
    memory = MemoryCache()
    cache = ChainedCache([memory, SQLAlchemyCache(factory)])
    cache.follow(hub, User)
    cache.put(ada())  # the database first, then the memory layer
    assert memory.get(User, {"id": 1}) is not None
    with factory() as session:
        session.get(User, 1).name = "Ada L."  # type: ignore[union-attr]
        session.commit()
    assert memory.get(User, {"id": 1}) is None  # the stale entry went, the row did not
    got = cache.get(User, {"id": 1})
    assert got is not None
    assert got.name == "Ada L."
    back_filled = memory.get(User, {"id": 1})
    assert back_filled is not None
    assert back_filled.name == "Ada L."


def test_a_mapping_of_tables_to_plain_classes() -> None:
    hub = Hub()
    cache = MemoryCache()
    cache.follow(hub, {"shop.users": PlainUser})
    row = {"id": 1, "tenant": "acme", "email": "a@acme.test", "name": "A"}
    cache.put(PlainUser(**row))
    hub.publish([Change("update", "other", "users", 1, row, {**row, "name": "B"})])
    assert cache.get(PlainUser, {"id": 1}) is not None  # another schema's table
    hub.publish([Change("update", "shop", "users", 1, row, {**row, "name": "B"})])
    assert cache.get(PlainUser, {"id": 1}) is None


def test_a_backfilled_row_refreshes_its_entry() -> None:
    """A backfill's read (``snapshot=True``, no before image) stores or drops the entry."""
    row = {"id": 1, "tenant": "acme", "email": "a@acme.test", "name": "A"}
    read = Change("write", "shop", "users", 1, None, {**row, "name": "B"}, snapshot=True)
    for refresh in (True, False):
        hub = Hub()
        cache = MemoryCache()
        cache.follow(hub, {"shop.users": PlainUser}, refresh=refresh)
        cache.put(PlainUser(**row))  # stale: the follower missed the rename
        hub.publish([read])
        got = cache.get(PlainUser, {"tenant": "acme", "email": "a@acme.test"})
        assert (got.name if got is not None else None) == ("B" if refresh else None)


class Slot:
    __cache_keys__ = ["starts"]

    def __init__(self, starts: dt.datetime, room: str) -> None:
        self.starts, self.room = starts, room


def test_an_aware_datetime_key_is_the_same_instant_in_any_zone() -> None:
    """A session in Paris caches the row; the log source gives the same instant in UTC."""
    hub = Hub()
    cache = MemoryCache()
    cache.follow(hub, {"slots": Slot})
    paris = dt.datetime(2024, 5, 1, 14, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    utc = paris.astimezone(dt.UTC)
    cache.put(Slot(paris, "A"))
    assert cache.get(Slot, {"starts": utc}) is not None
    row = {"starts": utc, "room": "A"}
    hub.publish([Change("update", None, "slots", utc, row, {**row, "room": "B"})])
    assert cache.get(Slot, {"starts": paris}) is None
    naive = dt.datetime(2024, 5, 1, 12)
    cache.put(Slot(naive, "A"))
    assert cache.get(Slot, {"starts": utc}) is None  # naive and aware stay apart


def test_bad_models_are_a_config_error() -> None:
    hub = Hub()
    with pytest.raises(ConfigError, match="not mapped"):
        MemoryCache().follow(hub, PlainUser)
    with pytest.raises(ConfigError, match="maps table"):
        MemoryCache().follow(hub, {"users": "User"})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="__cache_keys__"):
        MemoryCache().follow(hub, {"users": int})
    with pytest.raises(ConfigError, match="needs a model"):
        MemoryCache().follow(hub, [])


# ------------------------------------------------------------ another process, by binlog

WRITER = """
import sys, pymysql
conn = pymysql.connect(host="127.0.0.1", user="root", database="test", autocommit=True)
with conn.cursor() as cur:
    cur.execute(sys.argv[1])
conn.close()
"""


def another_process(sql: str) -> None:
    subprocess.run([sys.executable, "-c", WRITER, sql], check=True, timeout=60)


@pytest.fixture
def mariadb_table() -> Iterator[tuple[str, str]]:
    """A fresh table in MariaDB, and the binlog position from before its first row."""
    require_server("mysql")
    table = f"cache_follow_{uuid.uuid4().hex[:8]}"
    conn = pymysql.connect(host="127.0.0.1", user="root", database="test", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(
            f"CREATE TABLE {table} (id INT PRIMARY KEY, tenant VARCHAR(40), "
            "email VARCHAR(200), name VARCHAR(40))"
        )
        cur.execute(f"INSERT INTO {table} VALUES (1, 'acme', 'ada@acme.test', 'Ada')")
        cur.execute("SHOW MASTER STATUS")
        file, offset = cur.fetchone()[:2]
    yield table, f"{file}:{offset}"
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
    conn.close()


def test_another_process_writes_and_the_binlog_drops_the_entry(mariadb_table: Any) -> None:
    table, start = mariadb_table
    url = require_redis()
    namespace = f"test-cache-follow-{uuid.uuid4().hex[:8]}"
    cache = ChainedCache([MemoryCache(), RedisCache(url, namespace=namespace)])
    hub = Hub()
    cache.follow(hub, {f"test.{table}": PlainUser})
    source = BinlogSource(
        "mysql://root@127.0.0.1:3306/test",
        start=start,
        tables=[f"test.{table}"],
        server_id=3_200_000_000 + os.getpid() % 1_000_000,  # never kick another reader off
    )
    thread = threading.Thread(target=source.run, args=(hub,))
    thread.start()
    try:
        cache.put(PlainUser(1, "acme", "ada@acme.test", name="Ada"))
        another_process(f"UPDATE {table} SET name = 'Ada L.' WHERE id = 1")
        wait_for(lambda: cache.get(PlainUser, {"id": 1}) is None)
        cache.put(PlainUser(1, "acme", "ada@acme.test", name="Ada L."))
        another_process(f"UPDATE {table} SET email = 'ada@new.test' WHERE id = 1")
        wait_for(lambda: cache.get(PlainUser, {"tenant": "acme", "email": "ada@acme.test"}) is None)
        assert cache.get(PlainUser, {"id": 1}) is None
        assert hub.errors == 0
    finally:
        source.stop()
        thread.join(15)
        cache.close()
        drop_namespace(url, namespace)
    assert not thread.is_alive()

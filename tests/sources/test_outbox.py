"""The transactional outbox: SessionCapture(outbox=True) writes it, OutboxSource relays it.

On SQLite, PostgreSQL and MariaDB. The server tests use a database of their own
(``rc_outbox_<run>``, dropped at the end) so that no other test's (nor another
run's) ``rowcast_outbox`` rows mix with these.
The `SourceContract` runs on all three (``TestOutboxSource*``): its SQL statements
are made ORM writes of a `SessionCapture` with ``outbox=True``, as an app would.
"""

from __future__ import annotations

import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from sqlalchemy import (
    Engine,
    PickleType,
    String,
    create_engine,
    func,
    select,
    text,
    update,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from rowcast import Change, ConfigError, Hub
from rowcast.checkpoint import open_checkpoint
from rowcast.errors import SourceError
from rowcast.sources import open_source
from rowcast.sources.base import diagnose
from rowcast.sources.outbox import OUTBOX, OutboxSource
from rowcast.sources.sqlalchemy import SessionCapture
from rowcast.testing import SourceContract
from tests.conftest import require_server, sqlite_engine
from tests.sources.seed import ContractBase, orm_write

DATABASE = f"rc_outbox_{secrets.token_hex(3)}"
_made: list[str] = []  # the servers DATABASE was created on


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "rc_outbox_item"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(20))


class Blob(Base):
    __tablename__ = "rc_outbox_blob"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    value: Mapped[Any] = mapped_column(PickleType)


def _admin(name: str, statement: str) -> None:
    admin = create_engine(require_server(name), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(statement))
    finally:
        admin.dispose()


def _server_url(name: str) -> str:
    """The server's URL for database `DATABASE`, created the first time."""
    url = require_server(name)
    if name not in _made:
        _admin(name, f"CREATE DATABASE {DATABASE}")
        _made.append(name)
    return url.rsplit("/", 1)[0] + f"/{DATABASE}"


@pytest.fixture(scope="module", autouse=True)
def _drop_databases() -> Iterator[None]:
    yield
    for name in _made:
        force = " WITH (FORCE)" if name == "postgresql" else ""
        _admin(name, f"DROP DATABASE IF EXISTS {DATABASE}{force}")


SERVERS = [pytest.param(name, marks=pytest.mark.server) for name in ("postgresql", "mysql")]


@pytest.fixture(params=["sqlite", *SERVERS])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Engine, str]]:
    """An engine with fresh tables and an empty outbox, and the outbox+ URL of its database."""
    if request.param == "sqlite":
        engine = sqlite_engine(tmp_path / "app.db")
        url = f"sqlite:///{tmp_path / 'app.db'}"
    else:
        url = _server_url(request.param)
        engine = create_engine(url)
    tables = [Item.__table__, Blob.__table__, OUTBOX]
    Base.metadata.drop_all(engine)
    OUTBOX.drop(engine, checkfirst=True)
    Base.metadata.create_all(engine)
    yield engine, f"outbox+{url}"
    for table in tables:
        table.drop(engine, checkfirst=True)  # type: ignore[attr-defined]
    engine.dispose()


def outbox_rows(engine: Engine) -> list[tuple[int, str, int]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(OUTBOX.c.id, OUTBOX.c.txid, OUTBOX.c.idx))]


def drain(url: str, **options: Any) -> list[list[Change]]:
    """Every transaction in the outbox now, each acknowledged as the next is asked for."""
    source = OutboxSource(url, end="now", **options)
    try:
        return list(source)
    finally:
        source.close()


# ---------------------------------------------------------------- the SourceContract


class _OutboxContract(SourceContract):
    backend: ClassVar[str]
    initial_snapshot = False  # it relays what SessionCapture wrote: no rows to read first
    start_in_checkpoint = False  # every row is pending until relayed: no start to keep

    @pytest.fixture
    def database(self, tmp_path: Path) -> Iterator[None]:
        if self.backend == "sqlite":
            self.engine = sqlite_engine(tmp_path / "contract.db")
            url = f"sqlite:///{tmp_path / 'contract.db'}"
        else:
            url = _server_url(self.backend)
            self.engine = create_engine(url, pool_pre_ping=True)  # outlives drop_connections
        self.url = f"outbox+{url}"
        self.tmp_path = tmp_path
        ContractBase.metadata.drop_all(self.engine)
        OUTBOX.drop(self.engine, checkfirst=True)
        ContractBase.metadata.create_all(self.engine)
        self.sessions = sessionmaker(self.engine)
        with SessionCapture(self.sessions, outbox=True) as self.capture:
            yield
        ContractBase.metadata.drop_all(self.engine)
        OUTBOX.drop(self.engine, checkfirst=True)
        self.engine.dispose()

    def make_source(self, **options: Any) -> OutboxSource:
        return OutboxSource(self.url, poll=0.05, **options)

    def start_position(self) -> str:
        return "start"  # a fresh outbox: every row is this test's

    def execute(self, statements: Sequence[str], *, transaction: bool = False) -> None:
        for group in [statements] if transaction else [[s] for s in statements]:
            with self.sessions() as session:
                for statement in group:
                    orm_write(session, statement)
                session.commit()

    def misconfigured_source(self) -> OutboxSource:
        if self.backend == "sqlite":  # (a file that does not exist is refused when opened)
            garbage = self.tmp_path / "not-a-database.db"
            garbage.write_text("this is not a SQLite database\n" * 100)
            return OutboxSource(f"outbox+sqlite:///{garbage}")
        return OutboxSource(f"outbox+{self.backend}://nobody:secret@127.0.0.1:1/nowhere")


class TestOutboxSourceOnSQLite(_OutboxContract):
    backend = "sqlite"


@pytest.mark.server
class TestOutboxSourceOnPostgreSQL(_OutboxContract):
    backend = "postgresql"

    def drop_connections(self) -> int:
        with self.engine.connect() as conn:
            dropped = conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).all()
        return len(dropped)


@pytest.mark.server
class TestOutboxSourceOnMariaDB(_OutboxContract):
    backend = "mysql"

    def drop_connections(self) -> int:
        with self.engine.connect() as conn:
            threads = conn.execute(
                text(
                    "SELECT ID FROM information_schema.PROCESSLIST "
                    "WHERE DB = DATABASE() AND ID != CONNECTION_ID()"
                )
            ).all()
            for (thread,) in threads:
                conn.execute(text(f"KILL {int(thread)}"))
        return len(threads)


# ---------------------------------------------------------------- the outbox itself


def test_a_transaction_is_written_in_it_and_relayed_whole(db: tuple[Engine, str]) -> None:
    engine, url = db
    hub = Hub()
    published: list[list[Change]] = []
    hub.signal("commit").connect(lambda _, changes: published.append(changes), weak=False)
    factory = sessionmaker(engine)
    with SessionCapture(factory, hub=hub, outbox=True), factory() as session:
        session.add_all([Item(id=1, name="a"), Item(id=2, name="b")])
        session.flush()
        session.get(Item, 1).name = "aa"  # type: ignore[union-attr]
        session.delete(session.get(Item, 2))
        session.commit()
        session.add(Item(id=3, name="c"))
        session.commit()
    rows = outbox_rows(engine)
    assert [idx for _, _, idx in rows] == [0, 1, 2, 3, 0]
    assert {txid for _, txid, _ in rows[:4]} == {published[0][0].txid}

    relayed = drain(url)
    assert [[(c.name, c.pk) for c in tx] for tx in relayed] == [
        [
            ("rc_outbox_item_write", 1),
            ("rc_outbox_item_write", 2),
            ("rc_outbox_item_update", 1),
            ("rc_outbox_item_delete", 2),
        ],
        [("rc_outbox_item_write", 3)],
    ]
    assert [tx[0].position for tx in relayed] == [str(rows[3][0]), str(rows[4][0])]
    for out, inside in zip(relayed, published, strict=True):  # the same changes, but ts
        assert [(c.action, c.pk, c.before, c.after, c.txid, c.source) for c in out] == [
            (c.action, c.pk, c.before, c.after, c.txid, c.source) for c in inside
        ]
        assert {c.position for c in out} == {out[-1].position}
    assert outbox_rows(engine) == []  # removed once the consumer moved past them
    assert drain(url) == []


def test_rollbacks_and_savepoints_take_their_rows_with_them(db: tuple[Engine, str]) -> None:
    engine, url = db
    factory = sessionmaker(engine)
    with SessionCapture(factory, outbox=True), factory() as session:
        session.add(Item(id=1, name="kept"))
        session.flush()
        with session.begin_nested():
            session.add(Item(id=2, name="released"))
        nested = session.begin_nested()
        session.add(Item(id=3, name="undone"))
        session.flush()
        nested.rollback()
        session.add(Item(id=4, name="last"))  # flushed by the commit
        session.commit()
        session.add(Item(id=5, name="rolled back"))
        session.flush()
        session.rollback()
        session.execute(update(Item).where(Item.id < 3).values(name="bulk"))
        session.commit()
    relayed = drain(url)
    assert [[(c.name, c.pk) for c in tx] for tx in relayed] == [
        [("rc_outbox_item_write", 1), ("rc_outbox_item_write", 2), ("rc_outbox_item_write", 4)],
        [("rc_outbox_item_update", 1), ("rc_outbox_item_update", 2)],
    ]
    assert relayed[1][0].after == {"id": 1, "name": "bulk"}


def test_a_change_that_cannot_be_written_fails_the_commit(db: tuple[Engine, str]) -> None:
    engine, _ = db
    factory = sessionmaker(engine)
    with SessionCapture(factory, outbox=True), factory() as session:
        session.add(Blob(id=1, value=object()))
        with pytest.raises(
            SourceError,
            match=r"cannot write write@\w+\.rc_outbox_blob to the outbox: .*builtins\.object",
        ):
            session.commit()
        session.rollback()
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Blob)).scalar() == 0
    assert outbox_rows(engine) == []


APP = """
import os, signal, sys
from sqlalchemy import String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from rowcast.sources.sqlalchemy import SessionCapture

class Base(DeclarativeBase):
    pass

class Item(Base):
    __tablename__ = "rc_outbox_item"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(20))

engine = create_engine(sys.argv[1])
SessionCapture(Session, outbox=True)
with Session(engine) as session:
    session.add(Item(id=7, name="survives"))
    session.commit()
os.kill(os.getpid(), signal.SIGKILL)  # right after the commit: nothing else runs
"""


def test_an_app_killed_right_after_commit_loses_nothing(
    db: tuple[Engine, str], tmp_path: Path
) -> None:
    _, url = db
    app = tmp_path / "app.py"
    app.write_text(APP)
    done = subprocess.run(
        [sys.executable, str(app), url.removeprefix("outbox+")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    relayed = drain(url)
    assert [(c.name, c.pk, c.after) for tx in relayed for c in tx] == [
        ("rc_outbox_item_write", 7, {"id": 7, "name": "survives"})
    ]


def test_rows_stay_until_the_checkpoint_says_they_were_delivered(
    db: tuple[Engine, str], tmp_path: Path
) -> None:
    engine, url = db
    factory = sessionmaker(engine)
    with SessionCapture(factory, outbox=True), factory() as session:
        for n in range(3):
            session.add(Item(id=n, name="x"))
            session.commit()
    checkpoint = open_checkpoint(str(tmp_path / "pos"))
    first = OutboxSource(url, checkpoint=checkpoint, end="now")
    taken = list(first)  # handed out, never checkpointed: a relay that died before delivery
    assert len(taken) == 3
    assert len(outbox_rows(engine)) == 3
    checkpoint.save(taken[0][0].position)  # delivered the first one, then died
    again = list(OutboxSource(url, checkpoint=checkpoint, end="now"))
    assert [tx[0].position for tx in again] == [tx[0].position for tx in taken[1:]]
    assert len(outbox_rows(engine)) == 2  # the delivered one went first
    checkpoint.save(again[-1][0].position)
    # a new source knows only that this one was delivered: the one before comes again,
    # with the same position, so the same change ids
    repeated = drain(url, start=again[-1][0].position)
    assert repeated == [again[0]]
    assert outbox_rows(engine) == []
    first.close()


def test_explicit_ack_and_run_with_a_checkpoint(db: tuple[Engine, str], tmp_path: Path) -> None:
    engine, url = db
    factory = sessionmaker(engine)
    with SessionCapture(factory, outbox=True), factory() as session:
        for n in range(4):
            session.add(Item(id=n, name="x"))
            session.commit()
    checkpoint = open_checkpoint(str(tmp_path / "pos"))
    source = OutboxSource(url, checkpoint=checkpoint, poll=0.05)
    got: list[Change] = []
    hub = Hub()
    hub.connect(got.append)
    hub.connect(lambda change: source.stop() if change.pk == 3 else None)
    thread = threading.Thread(target=source.run, args=(hub,))
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    assert [c.pk for c in got] == [0, 1, 2, 3]
    assert checkpoint.load() == got[-1].position
    assert outbox_rows(engine) == []  # the last one too: deleted when the source stopped

    manual = OutboxSource(url, checkpoint=open_checkpoint(str(tmp_path / "other")), end="now")
    with factory() as session, SessionCapture(session, outbox=True):
        session.add(Item(id=9, name="y"))
        session.commit()
    (tx,) = list(manual)
    assert len(outbox_rows(engine)) == 1
    manual.ack("nope")  # unknown: ignored
    manual.ack(tx[0].position)
    assert list(manual) == []
    assert outbox_rows(engine) == []


def test_interleaved_and_late_transactions_come_out_whole_and_none_is_lost(
    db: tuple[Engine, str],
) -> None:
    engine, url = db
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite has one writer at a time: its outbox ids never interleave")
    factory = sessionmaker(engine)
    with SessionCapture(factory, outbox=True):
        early, late = factory(), factory()
        early.add_all([Item(id=1, name="e"), Item(id=2, name="e")])
        early.flush()  # outbox ids 1, 2: the smallest, committed last
        late.add_all([Item(id=10, name="l"), Item(id=11, name="l")])
        late.flush()
        early.add(Item(id=3, name="e"))
        early.flush()
        late.commit()
        # a relay that read the outbox now sees only `late`, and removes it
        (first,) = drain(url, batch=1)
        assert [c.pk for c in first] == [10, 11]
        early.commit()
        early.close()
        late.close()
    (second,) = drain(url, batch=1)
    assert [c.pk for c in second] == [1, 2, 3]
    assert int(second[0].position or 0) > int(first[0].position or 0)


def test_a_small_batch_takes_whole_transactions_in_order(db: tuple[Engine, str]) -> None:
    engine, url = db
    factory = sessionmaker(engine)
    with SessionCapture(factory, outbox=True), factory() as session:
        for tx in range(4):
            session.add_all([Item(id=tx * 10 + n, name="x") for n in range(5)])
            session.commit()
    relayed = drain(url, batch=3, tables=["rc_outbox_*"])
    assert [[c.pk for c in tx] for tx in relayed] == [
        [tx * 10 + n for n in range(5)] for tx in range(4)
    ]
    assert outbox_rows(engine) == []


def test_tables_filter_still_removes_the_rows_of_other_tables(db: tuple[Engine, str]) -> None:
    engine, url = db
    factory = sessionmaker(engine)
    with SessionCapture(factory, outbox=True), factory() as session:
        session.add(Blob(id=1, value=[1]))
        session.commit()
        session.add_all([Blob(id=2, value=[2]), Item(id=1, name="x")])
        session.commit()
    relayed = drain(url, tables=["*.rc_outbox_item"])
    assert [[c.table for c in tx] for tx in relayed] == [["rc_outbox_item"]]
    assert outbox_rows(engine) == []


def test_a_filtered_transaction_does_not_remove_undelivered_ones_before_it(
    db: tuple[Engine, str], tmp_path: Path
) -> None:
    # the relay reads ahead in a thread: a transaction it holds but has not delivered
    # yet must stay in the outbox when the next one is filtered out
    engine, url = db
    factory = sessionmaker(engine)
    with SessionCapture(factory, outbox=True), factory() as session:
        session.add(Item(id=1, name="x"))
        session.commit()
        session.add(Blob(id=1, value=[1]))  # a table the relay does not want
        session.commit()
        session.add(Item(id=2, name="y"))
        session.commit()
    checkpoint = open_checkpoint(str(tmp_path / "pos"))
    source = OutboxSource(url, checkpoint=checkpoint, tables=["rc_outbox_item"], end="now")
    taken = list(source)  # read ahead, never delivered: the relay died
    assert [[c.pk for c in tx] for tx in taken] == [[1], [2]]
    assert len(outbox_rows(engine)) == 3
    again = list(OutboxSource(url, checkpoint=checkpoint, tables=["rc_outbox_item"], end="now"))
    assert [[c.pk for c in tx] for tx in again] == [[1], [2]]
    checkpoint.save(again[0][0].position)  # the first delivered: the filtered one goes too
    assert drain(url, checkpoint=checkpoint, tables=["rc_outbox_item"]) == [again[1]]


def test_stop_wakes_an_idle_poll(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "idle.db").close()  # the app's database: it must exist
    source = open_source(f"outbox+sqlite:///{tmp_path / 'idle.db'}", poll=60)
    assert isinstance(source, OutboxSource)
    thread = threading.Thread(target=source.run, args=(Hub(),))
    thread.start()
    source.stop()
    thread.join(10)
    assert not thread.is_alive()


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("outbox:///x.db", {}, "not an outbox URL"),
        ("outbox+nope://x", {}, "no driver for outbox\\+nope://x"),
        ("outbox+sqlite:///x.db", {"start": "mysql-bin.000001:4"}, "bad outbox position"),
        ("outbox+sqlite:///x.db", {"snapshot": "initial"}, "has no snapshot"),
        ("outbox+sqlite:///x.db", {"tables": "items"}, "list of patterns"),
        ("outbox+sqlite:///x.db", {"end": "5"}, "end= of an outbox source"),
        ("outbox+sqlite:///x.db", {"poll": 0}, "must be positive"),
    ],
)
def test_bad_urls_and_options(url: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_source(url, **options)


def test_an_unreachable_server_is_a_clear_error_at_start() -> None:
    source = OutboxSource("outbox+postgresql://nobody:secret@127.0.0.1:1/nowhere")
    with pytest.raises(ConfigError, match="cannot use the outbox database"):
        source.check()  # what the relay calls before it starts
    with pytest.raises(ConfigError, match=r"nobody:\*\*\*@127.0.0.1:1.*is the server running"):
        next(iter(source))
    with pytest.raises(ConfigError, match="cannot use the outbox database"):
        diagnose("outbox+mysql://root:secret@127.0.0.1:1/x")


def test_a_dropped_table_mid_stream_is_a_source_error(db: tuple[Engine, str]) -> None:
    engine, url = db
    source = OutboxSource(url, poll=0.01)
    stream = iter(source)
    OUTBOX.create(engine, checkfirst=True)
    with sessionmaker(engine)() as session, SessionCapture(session, outbox=True):
        session.add(Item(id=1, name="x"))
        session.commit()
    assert [c.pk for c in next(stream)] == [1]
    OUTBOX.drop(engine)
    with pytest.raises(SourceError, match="reading rowcast_outbox failed"):
        next(stream)
    source.close()


def test_doctor_checks_the_table(db: tuple[Engine, str]) -> None:
    engine, url = db
    report = diagnose(url)
    assert [(c.name, c.ok) for c in report.checks] == [("table rowcast_outbox", False)]
    assert "SessionCapture(..., outbox=True)" in report.checks[0].fix
    with sessionmaker(engine)() as session, SessionCapture(session, outbox=True):
        session.add(Item(id=1, name="x"))
        session.commit()
    report = diagnose(url)
    assert [c.ok for c in report.checks] == [True, True]
    assert ("pending rows", "1") in report.facts
    assert report.target == url


def test_the_default_capture_writes_no_outbox(db: tuple[Engine, str]) -> None:
    engine, _ = db
    with sessionmaker(engine)() as session, SessionCapture(session):
        session.add(Item(id=1, name="x"))
        session.commit()
    with engine.connect() as conn:
        assert not engine.dialect.has_table(conn, "rowcast_outbox")

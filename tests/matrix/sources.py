"""The matrix's log sources, each on a captured table ``test`` of its own.

Each factory is a context manager that makes a fresh database place for one case
(a MariaDB database, a PostgreSQL schema with its slot and publication, a SQLite
file with rowcast's triggers, a SQLite file with an outbox), yields a `LogDatabase`
that writes the seed workload's statements and reads the table back, and removes
everything it made after, also when the case failed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg2
import pymysql
import sqlalchemy as sa
from sqlalchemy.orm import sessionmaker

from rowcast.sources.postgres import LogicalSource
from rowcast.sources.sqlalchemy import SessionCapture
from rowcast.sources.sqlite import TriggerSource
from tests.conftest import require_server, sqlite_engine
from tests.sources.seed import ContractBase, Row, orm_write
from tests.sources.test_postgres import drop_slot
from tests.test_relay import server_id

__all__ = ["SOURCES", "LogDatabase", "Rows", "unique_name"]

MARIADB = {"host": "127.0.0.1", "port": 3306, "user": "root"}
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"

Rows = list[tuple[Any, ...]]  # (id, data) of every row, by id


def unique_name(prefix: str = "rc_mx") -> str:
    """A name for a database, schema, slot, stream or queue that no other run uses."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@dataclasses.dataclass
class LogDatabase:
    """A source database as one case of the matrix uses it."""

    url: str  #: the relay's SOURCE_URL
    args: list[str]  #: its other options (--tables, --from, --server-id)
    write: Callable[[Sequence[str]], None]  #: run statements as one transaction
    rows: Callable[[], Rows]  #: the captured table now, by id


@contextlib.contextmanager
def binlog(tmp: Path) -> Iterator[LogDatabase]:
    """MariaDB's binlog: a database of this case's own, read from the position before it."""
    require_server("mysql")
    name = unique_name()
    conn = pymysql.connect(**MARIADB, autocommit=True)  # type: ignore[arg-type]
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
            cur.execute(
                f"CREATE TABLE {name}.test (id INT AUTO_INCREMENT PRIMARY KEY, data VARCHAR(40))"
            )
            cur.execute("SHOW MASTER STATUS")
            log_file, log_position = cur.fetchone()[:2]

        def write(statements: Sequence[str]) -> None:
            with conn.cursor() as cur:
                cur.execute(f"USE {name}")
                for statement in ["BEGIN", *statements, "COMMIT"]:
                    cur.execute(statement)

        def rows() -> Rows:
            with conn.cursor() as cur:
                cur.execute(f"SELECT id, data FROM {name}.test ORDER BY id")
                return [tuple(row) for row in cur.fetchall()]

        args = ["--tables", f"{name}.test", "--from", f"{log_file}:{log_position}"]
        yield LogDatabase(
            f"mysql://root@127.0.0.1:3306/{name}",
            [*args, "--server-id", str(server_id())],
            write,
            rows,
        )
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.close()


@contextlib.contextmanager
def logical(tmp: Path) -> Iterator[LogDatabase]:
    """PostgreSQL's logical replication: a schema, slot and publication of this case's own."""
    require_server("postgresql")
    name = unique_name()
    conn = psycopg2.connect(POSTGRES)
    conn.autocommit = True
    cur = conn.cursor()
    url = f"{POSTGRES}?slot={name}&publication={name}"
    try:
        cur.execute(f"CREATE SCHEMA {name}")
        cur.execute(f"CREATE TABLE {name}.test (id SERIAL PRIMARY KEY, data TEXT)")
        cur.execute(f"ALTER TABLE {name}.test REPLICA IDENTITY FULL")  # before images
        LogicalSource(url, tables=[f"{name}.test"]).setup()  # the slot keeps what follows

        def write(statements: Sequence[str]) -> None:
            cur.execute(f"SET search_path TO {name}")
            cur.execute("BEGIN; " + "; ".join(statements) + "; COMMIT")

        def rows() -> Rows:
            cur.execute(f"SELECT id, data FROM {name}.test ORDER BY id")
            return [tuple(row) for row in cur.fetchall()]

        yield LogDatabase(url, ["--tables", f"{name}.test", "--from", "start"], write, rows)
    finally:
        drop_slot(cur, name)
        cur.execute(f"DROP PUBLICATION IF EXISTS {name}")
        cur.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        conn.close()


def _sqlite_rows(path: Path) -> Rows:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [tuple(row) for row in conn.execute("SELECT id, data FROM test ORDER BY id")]


@contextlib.contextmanager
def triggers(tmp: Path) -> Iterator[LogDatabase]:
    """SQLite with rowcast's triggers: a file of this case's own."""
    path = tmp / "triggers.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE test (id INTEGER PRIMARY KEY, data TEXT)")
    url = f"sqlite:///{path}"
    TriggerSource(url).install()

    def write(statements: Sequence[str]) -> None:
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
            for statement in ["BEGIN", *statements, "COMMIT"]:
                conn.execute(statement)

    yield LogDatabase(url, ["--from", "start"], write, lambda: _sqlite_rows(path))


@contextlib.contextmanager
def _outbox(url: str, engine: sa.Engine) -> Iterator[LogDatabase]:
    """The outbox at `url`, written by an app's ORM sessions with `SessionCapture(outbox=True)`."""
    ContractBase.metadata.create_all(engine)
    sessions = sessionmaker(engine)

    def write(statements: Sequence[str]) -> None:
        with sessions() as session:
            for statement in statements:
                orm_write(session, statement)
            session.commit()

    def rows() -> Rows:
        with engine.connect() as conn:
            query = sa.select(Row.id, Row.data).order_by(Row.id)
            return [tuple(row) for row in conn.execute(query)]

    try:
        with SessionCapture(sessions, outbox=True):
            yield LogDatabase(f"outbox+{url}", ["--from", "start"], write, rows)
    finally:
        engine.dispose()


def outbox(tmp: Path) -> contextlib.AbstractContextManager[LogDatabase]:
    """The outbox on SQLite: a file of this case's own."""
    path = tmp / "outbox.db"
    return _outbox(f"sqlite:///{path}", sqlite_engine(path))


@contextlib.contextmanager
def outbox_on(server: str) -> Iterator[LogDatabase]:
    """The outbox on a server ("postgresql" or "mysql"): a database of this case's own."""
    driver_url = require_server(server)  # postgresql+psycopg://..., mysql+pymysql://...
    name = unique_name()
    admin = sa.create_engine(driver_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        try:
            engine = sa.create_engine(driver_url.rsplit("/", 1)[0] + f"/{name}")
            scheme, _, rest = engine.url.render_as_string(hide_password=False).partition("://")
            with _outbox(
                f"{scheme.split('+')[0]}://{rest}", engine
            ) as database:  # as a user writes it
                yield database
        finally:
            force = " WITH (FORCE)" if server == "postgresql" else ""
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}{force}")
    finally:
        admin.dispose()


SOURCES: dict[str, Callable[[Path], contextlib.AbstractContextManager[LogDatabase]]] = {
    "binlog": binlog,
    "logical": logical,
    "triggers": triggers,
    "outbox": outbox,
    "outbox@postgres": lambda tmp: outbox_on("postgresql"),
    "outbox@mariadb": lambda tmp: outbox_on("mysql"),
}

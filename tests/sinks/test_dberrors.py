"""Database errors classified at the SQL sinks' boundary: real errors from real drivers."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
import sqlalchemy as sa

from rowcast.errors import PermanentSinkError, StoreError, TransientSinkError
from rowcast.sinks._dberrors import fix_of, kind_of, sink_error
from tests.conftest import require_server


def raised(call: Callable[[], Any]) -> BaseException:
    try:
        call()
    except BaseException as error:
        return error
    raise AssertionError(f"{call} raised nothing")


def test_sqlite_errors_by_result_code(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    conn = sqlite3.connect(path, timeout=0.05, isolation_level=None)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
    missing = raised(lambda: conn.execute("INSERT INTO nope VALUES (1)"))
    column = raised(lambda: conn.execute("INSERT INTO t (id, m) VALUES (1, 1)"))
    null = raised(lambda: conn.execute("INSERT INTO t (id, n) VALUES (1, NULL)"))
    other = sqlite3.connect(path, timeout=0.05, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    locked = raised(lambda: conn.execute("INSERT INTO t VALUES (2, 2)"))
    other.execute("ROLLBACK")
    # all four are sqlite3.OperationalError or IntegrityError: the result code decides
    assert [kind_of(e) for e in (missing, column, null, locked)] == [
        PermanentSinkError,
        PermanentSinkError,
        PermanentSinkError,
        TransientSinkError,
    ]
    assert "create the target table" in (fix_of(missing) or "")
    assert "ADD COLUMN" in (fix_of(column) or "")
    conn.close()
    other.close()


def test_errors_carried_by_sqlalchemy_and_rowcast_are_classified_by_the_driver_error(
    tmp_path: Path,
) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        wrapped = raised(lambda: conn.exec_driver_sql("SELECT * FROM nope"))
    engine.dispose()
    assert isinstance(wrapped, sa.exc.OperationalError)  # PEP 249 says "transient"...
    assert kind_of(wrapped) is PermanentSinkError  # ...SQLite's code says "no such table"
    try:
        raise StoreError("event store: append failed") from wrapped.__cause__
    except StoreError as store_error:
        carried = store_error
    assert kind_of(carried) is PermanentSinkError
    error = sink_error(wrapped, "sink x: failed")
    assert isinstance(error, PermanentSinkError)
    assert error.fix is not None
    assert str(error).endswith(error.fix)
    assert kind_of(StoreError("no driver error below")) is TransientSinkError  # unknown: retry


@pytest.mark.server
def test_postgresql_errors_by_sqlstate() -> None:
    url = require_server("postgresql").replace("+psycopg", "")
    table = f"rc_dberr_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, n smallint)")
        try:
            errors = [
                raised(lambda: conn.execute(f"INSERT INTO {table} (id, m) VALUES (1, 1)")),
                raised(lambda: conn.execute(f"INSERT INTO {table} VALUES (1, 100000)")),
                raised(lambda: conn.execute("INSERT INTO rc_no_such_table VALUES (1)")),
            ]
            conn.execute("SET statement_timeout = 10")
            errors.append(raised(lambda: conn.execute("SELECT pg_sleep(1)")))  # canceled
        finally:
            conn.execute("RESET statement_timeout")
            conn.execute(f"DROP TABLE {table}")
    assert [kind_of(e) for e in errors] == [
        PermanentSinkError,  # 42703 undefined column (a ProgrammingError... and by SQLSTATE)
        PermanentSinkError,  # 22003 out of range (DataError)
        PermanentSinkError,  # 42P01 undefined table
        TransientSinkError,  # 57014 query canceled (an OperationalError)
    ]
    assert "ADD COLUMN" in (fix_of(errors[0]) or "")
    assert "type" in (fix_of(errors[1]) or "")


@pytest.mark.server
def test_postgresql_deadlock_is_transient() -> None:
    url = require_server("postgresql").replace("+psycopg", "")
    table = f"rc_dberr_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as setup:
        setup.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, n int)")
        setup.execute(f"INSERT INTO {table} VALUES (1, 0), (2, 0)")
    first, second = psycopg.connect(url), psycopg.connect(url)
    failures: list[BaseException] = []
    ready = threading.Barrier(2)

    def cross(conn: Any, a: int, b: int) -> None:
        try:
            conn.execute(f"UPDATE {table} SET n = 1 WHERE id = {a}")
            ready.wait(10)
            conn.execute(f"UPDATE {table} SET n = 1 WHERE id = {b}")
            conn.commit()
        except psycopg.Error as error:
            failures.append(error)
            conn.rollback()

    threads = [
        threading.Thread(target=cross, args=(first, 1, 2)),
        threading.Thread(target=cross, args=(second, 2, 1)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    first.close()
    second.close()
    with psycopg.connect(url, autocommit=True) as setup:
        setup.execute(f"DROP TABLE {table}")
    assert len(failures) == 1
    assert isinstance(failures[0], psycopg.errors.DeadlockDetected)
    assert kind_of(failures[0]) is TransientSinkError


@pytest.mark.server
def test_mysql_errors_by_error_number() -> None:
    require_server("mysql")
    table = f"rc_dberr_{uuid.uuid4().hex[:8]}"
    conn = pymysql.connect(host="127.0.0.1", user="root", database="test", autocommit=True)
    user = f"rc_ro_{uuid.uuid4().hex[:8]}"
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, n TINYINT)")
            cur.execute("SET SESSION sql_mode = 'STRICT_ALL_TABLES'")
            column = raised(lambda: cur.execute(f"INSERT INTO {table} (id, m) VALUES (1, 1)"))
            value = raised(lambda: cur.execute(f"INSERT INTO {table} VALUES (1, 100000)"))
            cur.execute(f"CREATE USER '{user}'@'%'")
            cur.execute(f"GRANT SELECT ON test.{table} TO '{user}'@'%'")
        reader = pymysql.connect(host="127.0.0.1", user=user, database="test")
        try:
            with reader.cursor() as cur:
                refused = raised(lambda: cur.execute(f"INSERT INTO {table} VALUES (2, 2)"))
        finally:
            reader.close()
        gone = raised(lambda: pymysql.connect(host="127.0.0.1", port=1, user="root"))
        holder = pymysql.connect(host="127.0.0.1", user="root", database="test")
        waiter = pymysql.connect(host="127.0.0.1", user="root", database="test")
        try:
            with holder.cursor() as cur:
                cur.execute(f"INSERT INTO {table} VALUES (5, 5)")  # holds the row lock
            with waiter.cursor() as cur:
                cur.execute("SET SESSION innodb_lock_wait_timeout = 1")
                lock_wait = raised(lambda: cur.execute(f"INSERT INTO {table} VALUES (5, 6)"))
        finally:
            holder.rollback()
            holder.close()
            waiter.close()
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        conn.close()
    # pymysql calls a refused privilege an OperationalError: the error number decides
    assert isinstance(refused, pymysql.err.OperationalError)
    assert [kind_of(e) for e in (column, value, refused, gone, lock_wait)] == [
        PermanentSinkError,  # 1054 unknown column
        PermanentSinkError,  # 1264 out of range
        PermanentSinkError,  # 1142 INSERT command denied
        TransientSinkError,  # 2003 cannot connect
        TransientSinkError,  # 1205 lock wait timeout (SQLSTATE HY000: the number decides)
    ]
    assert "GRANT" in (fix_of(refused) or "").upper()

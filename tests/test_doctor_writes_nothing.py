"""``rowcast doctor`` never writes: after it, every database it looked at is byte-identical
(SQLite: the files and the directory) or catalog-identical (PostgreSQL, MariaDB), for
every kind of URL it takes, whether its checks pass or fail."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, make_url, text

from rowcast.cli import main
from tests.conftest import require_server


def doctor(url: str) -> Any:
    result = CliRunner().invoke(main, ["doctor", url])
    assert "Traceback" not in result.output, result.output
    assert result.exit_code in (0, 1, 2), result.output
    return result


def files(directory: Path) -> dict[str, str]:
    """Every file under `directory` with the hash of its bytes."""
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def sqlite_app(path: Path, *, wal: bool) -> None:
    with sqlite3.connect(path) as conn:
        if wal:
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total TEXT)")
        conn.execute("INSERT INTO orders VALUES (1, '12.50')")
    conn.close()


@pytest.mark.parametrize("wal", [False, True], ids=["rollback-journal", "wal"])
@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///{db}",
        "sqlite:///{db}?tables=orders",
        "sqlite:///{db}?tables=nothing_matches",
        "outbox+sqlite:///{db}",
    ],
)
def test_doctor_leaves_a_sqlite_database_byte_identical(
    tmp_path: Path, url: str, wal: bool
) -> None:
    db = tmp_path / "app.db"
    sqlite_app(db, wal=wal)
    before = files(tmp_path)
    result = doctor(url.format(db=db))
    assert files(tmp_path) == before
    if not url.startswith("outbox"):  # and it still tells the journal mode right
        assert f"journal   {'wal' if wal else 'delete'}" in result.output


@pytest.mark.parametrize(
    "url", ["sqlite:///{missing}", "outbox+sqlite:///{missing}", "sqlite:///{missing}?tables=t"]
)
def test_doctor_creates_no_sqlite_file_that_does_not_exist(tmp_path: Path, url: str) -> None:
    missing = tmp_path / "fresh" / "app.db"
    result = doctor(url.format(missing=missing))
    assert result.exit_code == 2
    assert "no SQLite database at" in result.output
    assert not missing.parent.exists()
    assert list(tmp_path.iterdir()) == []


_PG_CATALOG = {  # of the test's own database: other tests run beside it
    "slots": "SELECT slot_name, plugin, temporary FROM pg_replication_slots "
    "WHERE database = current_database()",
    "publications": "SELECT pubname, puballtables FROM pg_publication",
    "publication tables": "SELECT pubname, schemaname, tablename FROM pg_publication_tables",
    "relations": "SELECT n.nspname, c.relname, c.relkind, c.relreplident FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')",
    "schemas": "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg_%temp%'",
    "triggers": "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal",
    "functions": "SELECT proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
    "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')",
}


def catalog(url: str, queries: dict[str, str]) -> dict[str, list[tuple[Any, ...]]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                name: sorted(tuple(row) for row in conn.execute(text(query)))
                for name, query in queries.items()
            }
    finally:
        engine.dispose()


@contextlib.contextmanager
def database(server: str, create: str, drop: str) -> Iterator[str]:
    """A database of the test's own on `server` (a SQLAlchemy URL), by its name."""
    name = f"rc_doctor_{uuid.uuid4().hex[:8]}"
    engine = create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(create.format(name=name)))
    try:
        yield name
    finally:
        with engine.connect() as conn:
            conn.execute(text(drop.format(name=name)))
        engine.dispose()


@pytest.mark.server
@pytest.mark.parametrize(
    "query",
    [
        "",
        "?slot={name}&publication={name}",
        "?slot={name}&tables=public.keyless",
        "?publication={name}&tables=nothing_matches",
        "outbox",
    ],
)
def test_doctor_leaves_the_postgresql_catalog_identical(query: str) -> None:
    server = require_server("postgresql")
    with database(server, "CREATE DATABASE {name}", "DROP DATABASE {name} WITH (FORCE)") as name:
        url = str(make_url(server).set(database=name).render_as_string(hide_password=False))
        engine = create_engine(url)
        with engine.begin() as conn:  # a table without a key: a replica identity to set
            conn.execute(text("CREATE TABLE public.keyless (v int)"))
            conn.execute(text("CREATE TABLE public.orders (id int PRIMARY KEY, v int)"))
        engine.dispose()
        plain = f"postgresql://postgres@127.0.0.1:5432/{name}"
        target = f"outbox+{plain}" if query == "outbox" else plain + query.format(name=name)
        before = catalog(url, _PG_CATALOG)
        doctor(target)
        assert catalog(url, _PG_CATALOG) == before


@pytest.mark.server
@pytest.mark.parametrize(
    "path",
    ["{name}", "{name}?tables={name}.*", "", "outbox {name}", "rowcast_no_such_database"],
)
def test_doctor_leaves_the_mariadb_catalog_identical(path: str) -> None:
    server = require_server("mysql")
    with database(server, "CREATE DATABASE {name}", "DROP DATABASE {name}") as name:
        engine = create_engine(server)
        with engine.begin() as conn:
            conn.execute(text(f"CREATE TABLE {name}.orders (id int PRIMARY KEY, v int)"))
        engine.dispose()
        queries = {
            "databases": "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA "
            f"WHERE SCHEMA_NAME LIKE 'rc\\_doctor\\_%' OR SCHEMA_NAME = '{name}'",
            "tables": "SELECT TABLE_NAME, TABLE_ROWS, CREATE_TIME FROM information_schema.TABLES "
            f"WHERE TABLE_SCHEMA = '{name}'",
            "triggers": "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS "
            f"WHERE TRIGGER_SCHEMA = '{name}'",
        }
        outbox, _, rest = path.format(name=name).rpartition(" ")
        target = ("outbox+" if outbox else "") + f"mysql://root@127.0.0.1:3306/{rest}"
        before = catalog(server, queries)
        doctor(target)
        after = catalog(server, queries)
        assert after["tables"] == before["tables"]
        assert after["triggers"] == before["triggers"]
        assert after["databases"] == before["databases"]

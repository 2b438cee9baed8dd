"""What ReplicationSink makes in the target: its schema, the columns a source adds, the
names of its tables; and how it reads the source's own definitions (its URL's options
stay with the source).

SQLite first, with no server; then PostgreSQL and MariaDB, as sources and as targets.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from rowcast import Change
from rowcast.errors import ConfigError, PermanentSinkError
from rowcast.sinks import open_sink
from rowcast.sinks.sql import ReplicationSink
from tests.conftest import private_schema, require_server
from tests.sinks.test_sql import rows

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
MYSQL = "mysql://root@127.0.0.1:3306/test"


def write(pk: int, schema: str | None = "shop", table: str = "orders", **row: Any) -> Change:
    return Change("write", schema, table, pk, after={"id": pk, **row}, position=f"p{pk}")


def declared(url: str, table: str) -> dict[str, str]:
    """The declared type of each column of a SQLite table, as SQLite keeps it."""
    with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
        return {r[1]: r[2] for r in conn.execute(f'PRAGMA table_info("{table}")')}


def tables(url: str) -> set[str]:
    with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/replica.db"


# ---------------------------------------------------------------- columns added at the source


def test_a_column_added_at_the_source_is_added_to_the_target(sqlite_url: str) -> None:
    sink = ReplicationSink(sqlite_url)
    sink.deliver([[write(1, name="a")]])
    # the source table gained two columns: its later changes carry them
    sink.deliver([[write(2, name="b", size=3, price=Decimal("1.50"))], [write(1, name="A")]])
    sink.close()
    assert rows(sqlite_url, "orders") == [(1, "A", None, None), (2, "b", 3, Decimal("1.50"))]
    assert declared(sqlite_url, "orders")["price"] == "DECIMAL_TEXT"  # as a create makes it
    again = ReplicationSink(sqlite_url)  # a new sink reflects the columns added
    again.deliver([[write(3, name="c", size=4, price=Decimal("2.25"))]])
    again.close()
    assert rows(sqlite_url, "orders")[-1] == (3, "c", 4, Decimal("2.25"))


def test_without_create_an_unknown_column_is_refused_with_the_statement(sqlite_url: str) -> None:
    ReplicationSink(sqlite_url).deliver([[write(1, name="a")]])
    sink = ReplicationSink(f"{sqlite_url}?create=false")
    with pytest.raises(
        PermanentSinkError, match=r"ALTER TABLE orders ADD COLUMN size BIGINT;.*create"
    ):
        sink.deliver([[write(2, name="b", size=3)]])
    sink.close()
    assert rows(sqlite_url, "orders") == [(1, "a")]  # nothing of the batch was applied


# ---------------------------------------------------------------- one name, two source schemas


def test_same_named_tables_of_two_source_schemas_are_refused(sqlite_url: str) -> None:
    sink = ReplicationSink(sqlite_url)
    with pytest.raises(PermanentSinkError) as refused:
        sink.deliver([[write(1, "shop", name="a")], [write(1, "crm", name="z")]])
    sink.close()
    message = str(refused.value)
    assert "crm.orders and shop.orders would both replicate into table orders" in message
    assert "map=crm.orders:crm_orders" in message


def test_the_clash_is_refused_after_a_restart_too(sqlite_url: str) -> None:
    sink = ReplicationSink(sqlite_url)
    sink.deliver([[write(1, "shop", name="a")]])
    sink.close()
    later = ReplicationSink(sqlite_url)  # a new process: only crm.orders changes come
    with pytest.raises(PermanentSinkError, match=r"table orders replicates shop\.orders"):
        later.deliver([[write(1, "crm", name="z")]])
    later.close()
    assert rows(sqlite_url, "orders") == [(1, "a")]


def test_map_gives_a_source_table_a_target_of_its_own(sqlite_url: str) -> None:
    sink = open_sink(f"{sqlite_url}?mode=replicate&map=crm.orders:crm_orders,shop.orders:orders")
    sink.deliver([[write(1, "shop", name="a")], [write(1, "crm", name="z")]])
    sink.close()
    assert rows(sqlite_url, "orders") == [(1, "a")]
    assert rows(sqlite_url, "crm_orders") == [(1, "z")]
    with sa.create_engine(sqlite_url).connect() as conn:
        made = conn.exec_driver_sql(
            "SELECT target_table, source_schema, source_table, created FROM rowcast_replicas "
            "ORDER BY target_table"
        ).all()
    assert made == [("crm_orders", "crm", "orders", 1), ("orders", "shop", "orders", 1)]


def test_a_table_that_existed_is_recorded_as_not_created(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE orders (id INTEGER PRIMARY KEY, name TEXT)")
    sink = ReplicationSink(sqlite_url)
    sink.deliver([[write(1, name="a")]])
    sink.close()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT created FROM rowcast_replicas").all() == [(0,)]
    engine.dispose()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("orders:x", "map takes schema.table:target pairs"),
        ("shop.orders", "map takes schema.table:target pairs"),
        ("shop.orders:", "map takes schema.table:target pairs"),
        ("shop.orders:a,shop.orders:b", "shop.orders is mapped twice"),
        ("shop.orders:x,crm.orders:x", "crm.orders and shop.orders are both mapped to x"),
        ("shop.orders:rowcast_replicas", "rowcast_replicas is the sink's own table"),
    ],
)
def test_bad_maps_are_config_errors(sqlite_url: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ReplicationSink(f"{sqlite_url}?map={value}")


def test_a_sqlite_target_has_no_schema(sqlite_url: str) -> None:
    with pytest.raises(ConfigError, match="SQLite has no schemas"):
        ReplicationSink(f"{sqlite_url}?schema=shop")


# ---------------------------------------------------------------- the source's definitions


SOURCE_TABLE = "CREATE TABLE items (id INTEGER PRIMARY KEY, label VARCHAR(40), n INTEGER)"


def test_a_sqlite_sources_options_never_reach_the_driver(tmp_path: Path, sqlite_url: str) -> None:
    source = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(source)) as conn:
        conn.execute(SOURCE_TABLE)
    source_url = f"sqlite:///{source}?tables=main.items&retain=10&start=start"
    sink = ReplicationSink(sqlite_url, source_url=source_url)
    sink.deliver([[write(1, "main", "items", label="a", n=None)]])
    sink.close()
    # the source's types (the values alone would give TEXT for n, TEXT for label)
    assert declared(sqlite_url, "items") == {
        "id": "INTEGER",
        "label": "VARCHAR(40)",
        "n": "INTEGER",
    }


def test_an_outbox_source_is_read_from_its_database(tmp_path: Path, sqlite_url: str) -> None:
    source = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(source)) as conn:
        conn.execute(SOURCE_TABLE)
    sink = open_sink(f"{sqlite_url}?mode=replicate", source_url=f"outbox+sqlite:///{source}")
    sink.deliver([[write(1, None, "items", label="a", n=None)]])
    sink.close()
    assert declared(sqlite_url, "items")["n"] == "INTEGER"


# ---------------------------------------------------------------- on the servers


@contextlib.contextmanager
def mysql_database() -> Iterator[str]:
    """A new MariaDB database ``rc_repl_<random>``, dropped after: its name."""
    engine = sa.create_engine(require_server("mysql"))
    name = f"rc_repl_{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        engine.dispose()


def execute(url: str, *statements: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


@pytest.mark.server
@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_a_servers_source_options_never_reach_the_reflecting_connection(
    kind: str, sqlite_url: str
) -> None:
    if kind == "postgresql":
        stack = private_schema("rc_src")
        options = "slot=rc_s&publication=rc_p&tables={s}.items&replica_identity=full&start=now"
        base, extra = POSTGRES, "&connect_timeout=5"  # libpq's own: kept
    else:
        stack = mysql_database()
        options, base, extra = "server_id=7&tables={s}.items&start=now", MYSQL, ""
    with stack as schema:
        if kind == "mysql":
            execute(require_server("mysql"), f"CREATE DATABASE {schema}")
        execute(require_server(kind), SOURCE_TABLE.replace("items", f"{schema}.items"))
        source_url = f"{base}?{options.format(s=schema)}{extra}"
        sink = open_sink(f"{sqlite_url}?mode=replicate", source_url=source_url)
        sink.deliver([[write(1, schema, "items", label="a", n=None)]])
        sink.close()
    types = declared(sqlite_url, "items")
    assert types["label"] == "VARCHAR(40)"
    assert types["n"] in {"INTEGER", "BIGINT"}  # the source's, not TEXT from a null


@pytest.fixture(params=["postgresql", "mysql", "sqlite"])
def target(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[tuple[str, str]]:
    """A replica URL (with ?mode=replicate) on each kind of database, and the SQLAlchemy URL
    to read it back; the PostgreSQL and MariaDB ones in a schema of their own."""
    if request.param == "sqlite":
        yield f"{sqlite_url}?mode=replicate", sqlite_url
        return
    if request.param == "postgresql":
        with private_schema("rc_tgt") as schema:
            yield f"{POSTGRES}?mode=replicate&schema={schema}", f"{require_server('postgresql')}"
        return
    with mysql_database() as name:
        execute(require_server("mysql"), f"CREATE DATABASE {name}")
        yield (
            f"mysql://root@127.0.0.1:3306/{name}?mode=replicate",
            f"mysql+pymysql://root@127.0.0.1:3306/{name}",
        )


def _schema_of(url: str) -> str | None:
    return dict(p.split("=") for p in url.partition("?")[2].split("&")).get("schema")


@pytest.mark.server
def test_a_column_added_at_the_source_gets_the_sources_type(target: tuple[str, str]) -> None:
    url, read_url = target
    with private_schema("rc_src") as source:
        execute(require_server("postgresql"), f"CREATE TABLE {source}.items (id INT PRIMARY KEY)")
        sink = open_sink(url, source_url=f"{POSTGRES}?slot=rc_s&publication=rc_p")
        sink.deliver([[write(1, source, "items")]])
        execute(
            require_server("postgresql"),
            f"ALTER TABLE {source}.items ADD COLUMN price NUMERIC(10, 2), "
            "ADD COLUMN label VARCHAR(30)",
        )
        sink.deliver([[write(2, source, "items", price=Decimal("2.50"), label=None)]])
        sink.close()
    schema = _schema_of(url)
    engine = sa.create_engine(read_url)
    with engine.connect() as conn:
        columns = {c["name"]: c["type"] for c in sa.inspect(conn).get_columns("items", schema)}
    engine.dispose()
    if read_url.startswith("sqlite"):
        assert declared(read_url, "items")["price"] == "DECIMAL_TEXT"
    else:
        assert isinstance(columns["price"], sa.Numeric)
        assert (columns["price"].precision, columns["price"].scale) == (10, 2)
    assert isinstance(columns["label"], sa.String)
    assert columns["label"].length == 30  # the source's, not TEXT from a null
    assert rows(read_url, "items", schema) == [(1, None, None), (2, Decimal("2.50"), None)]


@pytest.mark.server
def test_a_missing_postgresql_schema_is_created() -> None:
    server = require_server("postgresql")
    schema = f"rc_new_{uuid.uuid4().hex[:8]}"
    sink = open_sink(f"{POSTGRES}?mode=replicate&schema={schema}")
    try:
        sink.deliver([[write(1, name="a")]])  # checked (and created) on the first delivery
        assert rows(server, "orders", schema) == [(1, "a")]
    finally:
        sink.close()
        execute(server, f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.mark.server
def test_a_missing_mysql_database_is_created() -> None:
    with mysql_database() as name:
        sink = open_sink(f"{MYSQL}?mode=replicate&schema={name}")
        assert isinstance(sink, ReplicationSink)
        sink.check()
        sink.deliver([[write(1, name="a")]])
        sink.close()
        assert rows(require_server("mysql"), "orders", name) == [(1, "a")]


@pytest.fixture
def pg_role() -> Iterator[str]:
    """A PostgreSQL login role with no privilege beyond PUBLIC's: its name."""
    server = require_server("postgresql")
    role = f"rc_role_{uuid.uuid4().hex[:8]}"
    execute(server, f"CREATE ROLE {role} LOGIN")
    try:
        yield role
    finally:
        execute(server, f"DROP OWNED BY {role}", f"DROP ROLE {role}")


@pytest.mark.server
def test_a_user_who_may_not_create_the_schema_is_refused_with_the_statement(pg_role: str) -> None:
    schema = f"rc_new_{uuid.uuid4().hex[:8]}"
    url = f"postgresql://{pg_role}@127.0.0.1:5432/test?mode=replicate&schema={schema}"
    sink = ReplicationSink(url)
    statement = f"CREATE SCHEMA {schema} AUTHORIZATION {pg_role};"
    with pytest.raises(ConfigError, match=statement):
        sink.check()
    with pytest.raises(PermanentSinkError, match=statement):  # when not checked first
        sink.deliver([[write(1, name="a")]])
    sink.close()
    none = ReplicationSink(url.replace("mode=replicate", "mode=replicate&create=false"))
    with pytest.raises(ConfigError, match=f"schema {schema!r} does not exist.*{statement}"):
        none.check()
    none.close()


@pytest.mark.server
def test_a_user_without_create_on_the_schema_is_refused_with_the_grant(pg_role: str) -> None:
    server = require_server("postgresql")
    with private_schema("rc_tgt") as schema:
        url = f"postgresql://{pg_role}@127.0.0.1:5432/test?mode=replicate&schema={schema}"
        sink = ReplicationSink(url)
        with pytest.raises(ConfigError, match=f"GRANT USAGE, CREATE ON SCHEMA {schema} TO"):
            sink.check()
        execute(server, f"GRANT USAGE ON SCHEMA {schema} TO {pg_role}")
        with pytest.raises(ConfigError, match=f"GRANT CREATE ON SCHEMA {schema} TO {pg_role};"):
            sink.check()
        sink.close()
        reader = ReplicationSink(f"{url}&create=false")  # creates nothing: USAGE is enough
        reader.check()
        reader.close()


@pytest.fixture
def mysql_user() -> Iterator[str]:
    """A MariaDB user with no privilege, on any host: its name."""
    server = require_server("mysql")
    user = f"rc_user_{uuid.uuid4().hex[:8]}"
    execute(server, f"CREATE USER '{user}'@'%%'")  # %%: pymysql's paramstyle
    try:
        yield user
    finally:
        execute(server, f"DROP USER '{user}'@'%%'")


@pytest.mark.server
def test_a_mysql_user_who_may_not_create_the_database_is_refused_with_the_statement(
    mysql_user: str,
) -> None:
    name = f"rc_new_{uuid.uuid4().hex[:8]}"
    sink = ReplicationSink(f"mysql://{mysql_user}@127.0.0.1:3306/?mode=replicate&schema={name}")
    grant = (
        f"GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER ON {name}.* TO '{mysql_user}'@'%';"
    )
    with pytest.raises(ConfigError, match=re.escape(f"CREATE DATABASE {name}; {grant}")):
        sink.check()
    sink.close()

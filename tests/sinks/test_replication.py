"""ReplicationSink under the sink contract: the rows it leaves, read back.

On SQLite with no server; on PostgreSQL (marked ``server``) in a schema of its own.
What is specific to replication (moves, TOAST, types from the source) is in test_sql.py.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from rowcast.sinks import open_sink
from rowcast.sinks._sql_names import REGISTRY
from rowcast.sinks._sql_types import decimals_as_text
from rowcast.sinks.base import Sink
from rowcast.sinks.sql import _SQLITE_KEYWORDS, ReplicationSink
from rowcast.testing.sink import Rows, SinkContract, closed_port
from tests.conftest import private_schema, require_server


def replica_rows(url: str, schema: str | None = None) -> Rows:
    """Every row of every replica table at `url` (in `schema`), by table name and primary key
    (not the sink's record of them, ``rowcast_replicas``)."""
    engine = sa.create_engine(url)
    if engine.dialect.name == "sqlite":  # read columns named as the sink names them
        preparer = engine.dialect.identifier_preparer
        preparer.reserved_words = preparer.reserved_words | _SQLITE_KEYWORDS
    found: Rows = {}
    try:
        with engine.connect() as conn:
            for name in sa.inspect(conn).get_table_names(schema=schema):
                if name == REGISTRY:
                    continue
                table = sa.Table(name, sa.MetaData(), schema=schema, autoload_with=conn)
                if conn.dialect.name == "sqlite":  # the types the sink gives its own columns
                    decimals_as_text(table, conn)
                keys = [column.name for column in table.primary_key]
                rows = found[name] = {}
                for row in conn.execute(sa.select(table)).mappings():
                    pk = tuple(row[k] for k in keys) if len(keys) > 1 else row[keys[0]]
                    rows[pk] = dict(row)
    finally:
        engine.dispose()
    return found


class TestSQLiteReplica(SinkContract):
    holds = "rows"  # the rows the changes leave, whatever is re-delivered
    bad_urls = [
        ("sqlite:///x.db?mode=replicate&create=maybe", "create must be true or false"),
        ("nosuchdb://h/db?mode=replicate", "not a database URL SQLAlchemy can open"),
    ]

    @pytest.fixture
    def destination(self, tmp_path: Path) -> None:
        self.path = tmp_path / "replica.db"

    def make_sink(self) -> Sink:
        sink = open_sink(f"sqlite:///{self.path}?mode=replicate")
        assert isinstance(sink, ReplicationSink)
        return sink

    def read_rows(self) -> Rows:
        return replica_rows(f"sqlite:///{self.path}")

    def stored(self, value: Any) -> Any:
        if isinstance(value, uuid.UUID):
            return value.hex  # SQLAlchemy's Uuid on SQLite: CHAR(32)
        if isinstance(value, dt.datetime) and value.tzinfo is not None:
            return value.astimezone(dt.UTC).replace(tzinfo=None)  # no time zone type
        return value

    def unreachable_url(self) -> str:
        return f"sqlite:///{self.path.parent / 'no such directory' / 'r.db'}?mode=replicate"


@pytest.mark.server
class TestPostgreSQLReplica(SinkContract):
    holds = "rows"
    bad_urls = [
        ("postgresql://h/db?mode=replicate&create=maybe", "create must be true or false"),
        ("postgresql://h:port/db?mode=replicate", "not a database URL"),
    ]

    @pytest.fixture
    def destination(self) -> Iterator[None]:
        self.url = require_server("postgresql")
        with private_schema("rc_sink") as schema:
            self.schema = schema
            yield

    def make_sink(self) -> Sink:
        return open_sink(f"{self.url}?mode=replicate&schema={self.schema}")

    def read_rows(self) -> Rows:
        return replica_rows(self.url, self.schema)

    def unreachable_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{closed_port()}/test?mode=replicate"


@pytest.mark.server
class TestMySQLReplica(SinkContract):
    holds = "rows"
    bad_urls = [("mysql://h/db?mode=replicate&create=maybe", "create must be true or false")]

    @pytest.fixture
    def destination(self) -> Iterator[None]:
        server = require_server("mysql")
        self.database = f"rc_sink_{uuid.uuid4().hex[:8]}"
        engine = sa.create_engine(server)
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {self.database}")
        yield
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {self.database}")
        engine.dispose()

    def make_sink(self) -> Sink:
        return open_sink(f"mysql://root@127.0.0.1:3306/test?mode=replicate&schema={self.database}")

    def read_rows(self) -> Rows:
        return replica_rows(require_server("mysql"), self.database)

    def stored(self, value: Any) -> Any:
        if isinstance(value, dt.datetime) and value.tzinfo is not None:
            return value.astimezone(dt.UTC).replace(tzinfo=None)  # no time zone type
        if isinstance(value, dict | list):
            return json.dumps(value)  # MariaDB's JSON is LONGTEXT: read back as text
        return value

    def unreachable_url(self) -> str:
        return f"mysql://root@127.0.0.1:{closed_port()}/test?mode=replicate"

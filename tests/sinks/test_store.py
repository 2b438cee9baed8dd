"""StoreSink under the sink contract: the in-memory event store and a SQLite file, no server."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import uuid
from pathlib import Path

import psycopg
import pytest

from rowcast.change import Change
from rowcast.errors import (
    ConfigError,
    DuplicateEventId,
    PermanentSinkError,
    SinkError,
    TransientSinkError,
)
from rowcast.sinks import open_sink
from rowcast.sinks.base import change_id
from rowcast.sinks.store import StoreSink
from rowcast.testing.sink import SinkContract, transactions
from tests.conftest import require_server

BAD_URLS = [
    ("memory://events", "a memory store URL is just 'memory://'"),
    ("sqlite:///x.db?synchronous=sometimes", "synchronous"),
]


class _StoreContract(SinkContract):
    deduplicates = True  # the store recognises the ids it holds
    order = "row"  # a stream per row; a batch is appended one stream at a time
    bad_urls = BAD_URLS

    sink: StoreSink

    def read_back(self) -> list[tuple[uuid.UUID, Change]]:
        return [(event.id, Change(**event.data)) for event in self.sink.store.read_all()]

    def failing_sink(self) -> StoreSink:
        sink = self.make_sink()
        sink.store.close()  # a store that is gone: closed, as a full disk or a lost file
        return sink


class TestMemoryStore(_StoreContract):
    def make_sink(self) -> StoreSink:
        sink = open_sink("memory://")
        assert isinstance(sink, StoreSink)
        return sink


class TestSQLiteStore(_StoreContract):
    @pytest.fixture
    def destination(self, tmp_path: Path) -> None:
        self.url = f"sqlite:///{tmp_path / 'events.db'}"

    def make_sink(self) -> StoreSink:
        sink = open_sink(self.url)
        assert isinstance(sink, StoreSink)
        return sink


# ---------------------------------------------------------------- check and failure kinds


def test_a_closed_store_is_permanent(tmp_path: Path) -> None:
    sink = StoreSink(f"sqlite:///{tmp_path / 'events.db'}")
    sink.check()
    sink.store.close()
    with pytest.raises(PermanentSinkError, match="closed"):
        sink.check()
    with pytest.raises(PermanentSinkError, match="closed"):
        sink.deliver(transactions(1))
    sink.close()


def test_a_locked_store_is_transient_and_an_id_clash_permanent(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    sink = StoreSink(f"sqlite:///{path}?timeout=0.05")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(TransientSinkError, match="locked"):
            sink.deliver(transactions(1))
        sink.check()  # reads only: a writer holding the lock is no reason not to start
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    first = transactions(1, per_transaction=1)
    sink.deliver(first)
    clash = [[dataclasses.replace(first[0][0], pk=999)]]  # same source and position: same id
    with pytest.raises(PermanentSinkError, match="separate stores") as caught:
        sink.deliver(clash)
    assert isinstance(caught.value.__cause__, DuplicateEventId)
    sink.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_store_file_this_user_cannot_write_is_refused_by_the_check(tmp_path: Path) -> None:
    sink = StoreSink(f"sqlite:///{tmp_path / 'events.db'}")
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(ConfigError, match="is not writable"):
            sink.check()
    finally:
        tmp_path.chmod(0o755)
        sink.close()


def test_dead_letters_keep_the_error_as_metadata(tmp_path: Path) -> None:
    sink = StoreSink(f"sqlite:///{tmp_path / 'dead.db'}")
    batch = transactions(1)
    why = {"sink": "redis://h/0", "error": "WRONGTYPE", "fix": None}
    sink.dead_letter(batch, why)
    sink.dead_letter(batch, why)  # again, as after a crash: kept once
    events = list(sink.store.read_all())
    sink.close()
    assert [Change(**e.data) for e in events] == batch[0]
    assert [e.id for e in events] == [change_id(c, i) for i, c in enumerate(batch[0])]
    assert all(e.metadata == {"dead_letter": why} for e in events)


@pytest.mark.server
def test_a_postgresql_store_role_without_insert_is_refused_by_the_check() -> None:
    url = require_server("postgresql").replace("+psycopg", "")
    schema = f"rc_sink_store_{uuid.uuid4().hex[:8]}"
    role = f"rc_role_{uuid.uuid4().hex[:8]}"
    owner = StoreSink(f"{url}?schema={schema}")  # creates the tables
    owner.check()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}")
    try:
        reader = StoreSink(url.replace("postgres@", f"{role}@") + f"?schema={schema}")
        with pytest.raises(SinkError, match=f"role '{role}' may not append.*GRANT INSERT ON"):
            reader.check()
        reader.close()
    finally:
        owner.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")
            conn.execute(f"DROP SCHEMA {schema} CASCADE")

"""The PostgreSQL event store: the shared contract on the real server, then its own promises.

Everything runs in one schema made for this run (``rc_store_<random>``) and
dropped at the end, so runs in parallel never meet.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import FrozenInstanceError, fields
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from rowcast.cli import main
from rowcast.errors import ConfigError, StoreError
from rowcast.store import EventStore, NewEvent, RecordedEvent
from rowcast.store.postgres import PostgresEventStore, init_schema
from rowcast.testing.store import EventStoreContract, events


@pytest.fixture(scope="module")
def schema(server: str) -> Iterator[str]:
    """A schema of this run, dropped at the end (the stores create it)."""
    name = f"rc_store_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def url(server: str, schema: str) -> str:
    return f"{server}?schema={schema}&pool_max=4"


class TestPostgres(EventStoreContract):
    @pytest.fixture(autouse=True)
    def _db(self, url: str) -> None:
        self.url = url

    def make_store(self) -> EventStore:
        return EventStore(self.url)

    def shared_url(self) -> str:
        return self.url


# ---------------------------------------------------------------- the global order


def test_a_tailing_reader_sees_every_event_of_8_concurrent_writers_exactly_once(url: str) -> None:
    """The sequence-gap problem: positions drawn in one order, committed in another."""
    writers, appends = 8, 40
    stores = [EventStore(url) for _ in range(writers)]
    reader = EventStore(url)
    start = reader.stream_version("@all")
    written: set[uuid.UUID] = set()
    lock = threading.Lock()
    barrier = threading.Barrier(writers + 1)
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        store = stores[worker]
        try:
            barrier.wait()
            for n in range(appends):
                batch = events(1 + (n + worker) % 3, f"w{worker}")
                store.append(f"gap-{worker}-{uuid.uuid4().hex[:6]}", batch)
                with lock:
                    written.update(e.id for e in batch)
        except BaseException as e:  # reported in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    seen: list[RecordedEvent] = []
    after = start
    barrier.wait()
    try:
        # tail by position only, as a projection does; stop once every writer is
        # done and a last read after that found nothing new
        while True:
            done = not any(t.is_alive() for t in threads)
            page = list(reader.read_all(after=after, limit=50))
            seen.extend(page)
            if page:
                after = page[-1].position
            elif done:
                break
    finally:
        for thread in threads:
            thread.join()
        for store in [*stores, reader]:
            store.close()
    assert errors == []
    mine = [e for e in seen if e.type.startswith("w")]
    positions = [e.position for e in seen]
    assert positions == sorted(set(positions))  # increasing: nothing twice
    assert len(mine) == len(written) == sum(1 + (n + w) % 3 for w in range(8) for n in range(40))
    assert {e.id for e in mine} == written  # nothing skipped


# ---------------------------------------------------------------- a dropped connection


def _terminate(server: str, pids: list[int]) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


def _backends(server: str, application: str) -> list[int]:
    with psycopg.connect(server, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application,)
        ).fetchall()
    return [pid for (pid,) in rows]


@pytest.mark.parametrize("target", ["stream", "@all"])
def test_a_watch_survives_its_connections_being_killed(server: str, url: str, target: str) -> None:
    application = f"rc_store_watch_{uuid.uuid4().hex[:8]}"
    watched = EventStore(f"{url}&application_name={application}")
    writer = EventStore(url)
    stream, total = f"killed-{uuid.uuid4().hex}", 120
    seen: list[int] = []
    try:
        watch = watched.watch(stream if target == "stream" else "@all", timeout=20)
        listener: Any = watched.listener  # type: ignore[attr-defined]
        first_pid = listener.backend_pid
        assert first_pid in _backends(server, application)

        def consume() -> None:
            for event in watch:
                if event.stream == stream:
                    seen.append(event.data["n"])
                    if len(seen) == total:
                        return

        consumer = threading.Thread(target=consume)
        consumer.start()
        for n in range(total):
            writer.append(stream, events(1, start=n))
            if n in (30, 80):  # mid-stream: every connection of the watching store dies
                _terminate(server, _backends(server, application))
            time.sleep(0.002)
        consumer.join(30)
        assert not consumer.is_alive(), f"the watch stopped after {len(seen)} events"
        watch.close()
        assert seen == list(range(total))  # no gap, no duplicate, in order
        assert listener.connections >= 3  # it reconnected after each kill
        assert listener.backend_pid != first_pid
    finally:
        watched.close()
        writer.close()


def test_calls_survive_a_killed_pool_connection(server: str, url: str) -> None:
    application = f"rc_store_pool_{uuid.uuid4().hex[:8]}"
    with EventStore(f"{url}&application_name={application}") as store:
        stream = f"pool-{uuid.uuid4().hex}"
        store.append(stream, events(2))
        _terminate(server, _backends(server, application))
        assert store.append(stream, events(1, start=2)).version == 3
        _terminate(server, _backends(server, application))
        assert [e.data["n"] for e in store.read(stream)] == [0, 1, 2]


def test_an_idle_watch_sends_no_query(server: str, url: str) -> None:
    application = f"rc_store_idle_{uuid.uuid4().hex[:8]}"
    with EventStore(f"{url}&application_name={application}") as store:
        watch = store.watch(f"idle-{uuid.uuid4().hex}", timeout=0.5)
        pid = store.listener.backend_pid  # type: ignore[attr-defined]
        with psycopg.connect(server, autocommit=True) as conn:

            def calls() -> tuple[str, Any]:
                row = conn.execute(
                    "SELECT query, state_change FROM pg_stat_activity WHERE pid = %s", (pid,)
                ).fetchone()
                assert row is not None
                return row[0], row[1]

            before = calls()
            assert list(watch) == []  # half a second of waiting
            assert calls() == before  # no query, not even a state change
            assert before[0].startswith("LISTEN")


# ---------------------------------------------------------------- reads


@pytest.fixture
def fresh(server: str) -> Iterator[str]:
    """The URL of a schema of its own: tables that PostgreSQL has no statistics of yet."""
    name = f"rc_store_fresh_{uuid.uuid4().hex[:12]}"
    yield f"{server}?schema={name}&pool_max=1&timeout=5"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def _plan_nodes(plan: dict[str, Any]) -> list[str]:
    return [plan["Node Type"]] + [n for p in plan.get("Plans", []) for n in _plan_nodes(p)]


def test_a_page_of_a_long_stream_is_an_index_range_never_a_sort(server: str, fresh: str) -> None:
    """Without statistics, "LIMIT 1000" alone was planned as a sort of the rest of the stream."""
    with EventStore(fresh) as store:
        store.append("other", events(10))
        for start in range(0, 3000, 500):
            store.append("long", events(500, start=start))
        sql = store._sql  # type: ignore[attr-defined]
    forward = (sql.read[False], ("long", 1000, 2000))
    backward = (sql.read[True], {"stream": "long", "after": 0, "upper": 2001, "size": 1000})
    last = (sql.read[True], {"stream": "long", "after": 0, "upper": 2**63 - 1, "size": 1})
    with psycopg.connect(server, autocommit=True) as conn:
        for statement, params in (forward, backward, last):
            row = conn.execute(f"EXPLAIN (FORMAT JSON) {statement}", params).fetchone()
            assert row is not None
            nodes = _plan_nodes(row[0][0]["Plan"])
            assert "Sort" not in nodes, nodes
            assert "Bitmap Heap Scan" not in nodes, nodes


def test_long_reads_give_exactly_the_events_the_constructor_makes(url: str) -> None:
    """Pages are made fast (drafts, one JSON array, the next page fetched ahead): same events."""
    stream = f"exact-{uuid.uuid4().hex}"
    sent = [
        NewEvent("t", {"n": i, "at": Decimal(i) / 4}, {"k": i} if i % 7 else None)
        for i in range(2300)
    ]
    with EventStore(url) as store:
        result = store.append(stream, sent)
        for read in (
            list(store.read(stream)),
            list(store.read(stream, backwards=True))[::-1],
            list(store.read_all(after=result.position - 2300)),
        ):
            assert [e.id for e in read] == [e.id for e in sent]
            for event, new in zip(read, sent, strict=True):
                assert type(event) is RecordedEvent
                assert type(event.id) is uuid.UUID
                assert event.id.is_safe is uuid.SafeUUID.unknown
                assert (event.data, event.metadata) == (new.data, new.metadata)
                made = RecordedEvent(*(getattr(event, f.name) for f in fields(RecordedEvent)))
                assert event == made
                with pytest.raises(FrozenInstanceError):
                    event.version = 0  # type: ignore[misc]


def test_an_abandoned_read_holds_no_connection(fresh: str) -> None:
    with EventStore(fresh) as store:  # one connection in the pool
        store.append("s", events(6000))  # three pages of a stream (2,500 each)
        reading = store.read("s")
        assert next(reading).version == 1
        assert store.append("s", events(1, start=6000)).version == 6001  # the connection is free
        assert [e.version for e in reading][-1] == 6001


def test_a_bad_event_in_a_long_read_raises_and_the_store_reads_on(server: str, fresh: str) -> None:
    """The page that fails was being decoded while the next was fetched ahead."""
    with EventStore(fresh) as store:
        store.append("s", events(1499))
        table = f"{store._sql.tables[0]}"  # type: ignore[attr-defined]
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(
                f"INSERT INTO {table} (stream, version, id, type, data, recorded_at) "
                "VALUES ('s', 1500, gen_random_uuid(), 't', '{\"$nope\": 1}', 0)"
            )
        store.append("s", events(1000, start=1500))
        with pytest.raises(ValueError, match="unknown rowcast JSON tag"):
            list(store.read("s"))
        assert len(list(store.read("s", after=1500))) == 1000  # the one connection is sound
        assert store.append("s", events(1, start=2500)).version == 2501


# ---------------------------------------------------------------- schema and URLs


def test_the_tables_live_in_the_named_schema(server: str, schema: str, url: str) -> None:
    with EventStore(url) as store:
        assert type(store) is PostgresEventStore
        assert store.schema == schema  # type: ignore[attr-defined]
        store.append("s", [NewEvent("t", {"total": 3})])
    with psycopg.connect(server, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
            "ORDER BY table_name",
            (schema,),
        ).fetchall()
        assert [r[0] for r in rows] == [
            "rowcast_events",
            "rowcast_snapshots",
            "rowcast_subscriptions",
        ]
        sql = f"SELECT data->>'total' FROM \"{schema}\".rowcast_events WHERE stream = 's'"
        assert conn.execute(sql).fetchone() == ("3",)  # JSON that SQL can read


def test_stores_opening_a_new_schema_together_all_succeed(server: str) -> None:
    name = f"rc_store_race_{uuid.uuid4().hex[:8]}"
    opened: list[EventStore] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_one() -> None:
        barrier.wait()
        try:
            opened.append(EventStore(f"{server}?schema={name}&pool_min=0"))
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(opened) == 4
    finally:
        for store in opened:
            store.close()
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def test_a_role_that_may_not_create_gets_tables_made_ahead_by_init(server: str) -> None:
    role, name = f"rc_store_app_{uuid.uuid4().hex[:8]}", f"rc_store_init_{uuid.uuid4().hex[:8]}"
    as_role = server.replace("postgres@", f"{role}@", 1)
    admin = psycopg.connect(server, autocommit=True)
    admin.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        with pytest.raises(StoreError, match="rowcast events init") as caught:
            EventStore(f"{as_role}?schema={name}")
        assert isinstance(caught.value.__cause__, psycopg.errors.InsufficientPrivilege)
        made, tables = init_schema(f"{server}?schema={name}")
        assert made == name
        assert len(tables) == 3
        admin.execute(f'GRANT USAGE ON SCHEMA "{name}" TO "{role}"')
        admin.execute(
            f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{name}" TO "{role}"'
        )
        with EventStore(f"{as_role}?schema={name}") as store:
            assert store.append("s", events(2)).version == 2
            assert [e.version for e in store.read("s")] == [1, 2]
    finally:
        admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        admin.execute(f'DROP OWNED BY "{role}"')
        admin.execute(f'DROP ROLE "{role}"')
        admin.close()


def test_options_in_the_url_and_as_keywords(server: str, schema: str) -> None:
    with EventStore(f"{server}?schema={schema}&pool_max=2&timeout=5") as store:
        assert store._options.pool_max == 2  # type: ignore[attr-defined]
        assert store._options.timeout == 5.0  # type: ignore[attr-defined]
    with EventStore(server, schema=schema, pool_max=3) as store:
        assert store.schema == schema  # type: ignore[attr-defined]
        assert store._options.pool_max == 3  # type: ignore[attr-defined]
    with EventStore(server.replace("postgresql://", "postgres://"), schema=schema) as store:
        assert type(store) is PostgresEventStore


def test_the_password_never_shows_in_errors() -> None:
    with pytest.raises(StoreError, match="cannot connect") as caught:
        EventStore("postgresql://ann:s3cret@127.0.0.1:1/test")
    assert "s3cret" not in str(caught.value)
    assert "***" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "options", "error", "message"),
    [
        ("postgresql://h:notaport/db", {}, ConfigError, "not a valid PostgreSQL URL"),
        ("postgresql://h/db?schema=", {}, ConfigError, "schema must be a name"),
        ("postgresql://h/db", {"schema": "x" * 64}, ConfigError, "schema must be a name"),
        ("postgresql://h/db?schema=pg_mine", {}, ConfigError, "PostgreSQL's own"),
        ("postgresql://h/db?pool_max=0", {}, ConfigError, "pool_max"),
        ("postgresql://h/db?pool_max=two", {}, ConfigError, "pool_max must be an integer"),
        ("postgresql://h/db?pool_min=5&pool_max=2", {}, ConfigError, "pool_min <= pool_max"),
        ("postgresql://h/db?timeout=soon", {}, ConfigError, "timeout must be a number"),
        ("postgresql://h/db", {"timeout": 0}, ConfigError, "timeout must be > 0"),
        ("postgresql://h/db?x", {}, ConfigError, "malformed query"),
        ("postgresql://h/db", {"schema": 1}, TypeError, "schema name is a str"),
    ],
)
def test_bad_urls_and_options(
    url: str, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        EventStore(url, **options)


def test_an_unreachable_server_or_database_is_a_clear_store_error(server: str) -> None:
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL") as caught:
        EventStore("postgresql://postgres@127.0.0.1:1/test")
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)
    missing = server.rsplit("/", 1)[0] + f"/rc_store_no_{uuid.uuid4().hex[:6]}"
    with pytest.raises(StoreError, match="does not exist"):
        EventStore(missing)


def test_a_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg_pool", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'rowcast\[postgres\]'"):
        EventStore("postgresql://postgres@127.0.0.1/test")


def test_a_closed_store_refuses_and_its_listener_is_gone(url: str) -> None:
    store = EventStore(url)
    watch = store.watch("s", timeout=5)
    listener: Any = store.listener  # type: ignore[attr-defined]
    assert listener.backend_pid is not None
    store.close()
    assert list(islice(watch, 1)) == []
    assert listener.backend_pid is None
    with pytest.raises(StoreError, match="closed"):
        store.append("s", events(1))


# ---------------------------------------------------------------- create=False


@pytest.fixture
def app_schema(server: str) -> Iterator[str]:
    """A schema of an application: one table of its own, no event store."""
    name = f"rc_store_app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
        conn.execute(f'CREATE TABLE "{name}".orders (id int PRIMARY KEY)')
    yield name
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def _relations(server: str, schema: str) -> list[str]:
    with psycopg.connect(server, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'r' UNION ALL "
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = %s ORDER BY 1",
            (schema, schema),
        ).fetchall()
    return [r[0] for r in rows]


def test_create_false_creates_nothing_in_an_apps_schema(server: str, app_schema: str) -> None:
    url = f"{server}?schema={app_schema}"
    with pytest.raises(StoreError) as caught:
        EventStore(url, create=False)
    assert str(caught.value) == (
        f"no rowcast event store in {url}, schema {app_schema!r} (no rowcast_events, "
        "rowcast_snapshots, rowcast_subscriptions, rowcast_append()): create one with "
        f"`rowcast events init {url} --schema {app_schema}`"
    )
    assert _relations(server, app_schema) == ["orders"]


def test_create_false_creates_no_schema(server: str) -> None:
    name = f"rc_store_none_{uuid.uuid4().hex[:8]}"
    with pytest.raises(StoreError, match="the schema does not exist"):
        EventStore(server, schema=name, create=False)
    with psycopg.connect(server, autocommit=True) as conn:
        row = conn.execute("SELECT to_regnamespace(%s)", (f'"{name}"',)).fetchone()
    assert row == (None,)


def test_create_false_opens_a_store_that_exists(url: str) -> None:
    with EventStore(url) as store:
        store.append("s", events(1))
    with EventStore(url, create=False) as store:
        assert store.stream_version("s") >= 1


@pytest.mark.parametrize("command", [["ls"], ["read", "s"], ["stats"], ["watch"]])
def test_cli_reads_of_a_database_without_a_store_create_nothing(
    server: str, app_schema: str, command: list[str]
) -> None:
    url = f"{server}?schema={app_schema}"
    result = CliRunner().invoke(main, ["events", *command, "--url", url])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: no rowcast event store in {url}")
    assert "rowcast events init" in result.stderr
    assert "Traceback" not in result.output
    assert _relations(server, app_schema) == ["orders"]


# ---------------------------------------------------------------- rowcast events init


def test_cli_init_creates_the_tables_once_and_again_changes_nothing(server: str) -> None:
    name = f"rc_store_cli_{uuid.uuid4().hex[:8]}"
    runner = CliRunner()
    try:
        for _ in range(2):
            result = runner.invoke(main, ["events", "init", server, "--schema", name])
            assert result.exit_code == 0, result.output
            assert f"schema {name!r}: " in result.stdout
            assert "rowcast_events" in result.stdout
        with EventStore(f"{server}?schema={name}") as store:
            assert store.stream_version("@all") == 0
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def test_cli_init_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["events", "init", "postgresql://postgres@127.0.0.1:1/test"])
    assert result.exit_code == 2
    assert "cannot connect to PostgreSQL" in result.stderr
    result = runner.invoke(main, ["events", "init", f"sqlite:///{tmp_path}/e.db", "--schema", "x"])
    assert result.exit_code == 2
    assert "--schema is for PostgreSQL URLs" in result.stderr
    result = runner.invoke(main, ["events", "init", f"sqlite:///{tmp_path}/e.db"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "e.db").exists()


# ---------------------------------------------------------------- found in review


@pytest.mark.parametrize("odd", ["it's", 'say "hi"', "$rowcast$x", "Mixed Case"])
def test_any_schema_name_is_taken_as_it_is_never_as_sql(server: str, odd: str) -> None:
    """Quotes and dollar tags in a schema name neither break nor inject into the setup SQL."""
    name = f"rc_store_{uuid.uuid4().hex[:6]}_{odd}"
    try:
        for _ in range(2):  # creating, then finding what exists
            with EventStore(server, schema=name) as store:
                store.append("s", events(1))
        with EventStore(server, schema=name) as store:
            assert [e.version for e in store.read("s")] == [1, 2]
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(
                psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    psycopg.sql.Identifier(name)
                )
            )


def test_delete_stream_waits_for_appends_in_flight(server: str, url: str) -> None:
    """A delete between an append's version read and its commit would leave versions 6, 7...

    An append holds the schema's append lock from its version read to its
    commit; a delete must take it too, so that the stream it leaves behind is
    either empty or starts at version 1.
    """
    application = f"rc_store_del_{uuid.uuid4().hex[:8]}"
    stream = f"del-{uuid.uuid4().hex}"
    with EventStore(f"{url}&application_name={application}") as store:
        store.append(stream, events(5))
        key = store._sql.lock_key  # type: ignore[attr-defined]
        with psycopg.connect(server, autocommit=True) as holder:
            holder.execute("BEGIN")
            holder.execute("SELECT pg_advisory_xact_lock(%s)", (key,))  # an append in flight
            deleter = threading.Thread(target=store.delete_stream, args=(stream,))
            deleter.start()
            waiting = False
            while deleter.is_alive() and not waiting:
                row = holder.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                    "AND wait_event_type = 'Lock' AND wait_event = 'advisory'",
                    (application,),
                ).fetchone()
                waiting = row is not None and row[0] > 0
            holder.execute("COMMIT")
            deleter.join(30)
        assert waiting, "delete_stream went ahead while an append held the append lock"
        assert store.stream_version(stream) == 0
        assert store.append(stream, events(1)).version == 1


def test_a_listener_whose_first_connection_failed_tries_again(server: str) -> None:
    from rowcast.errors import StoreError
    from rowcast.store._postgres_listen import Listener

    woken: list[int] = []
    listener = Listener(
        "postgresql://postgres@127.0.0.1:1/test",  # nothing listens there
        "rc_listen_retry",
        lambda: woken.append(1),
        describe="test",
        timeout=2,
    )
    try:
        with pytest.raises(StoreError, match="cannot listen for new events"):
            listener.start()
        listener._conninfo = server  # the server is back
        listener.start()  # tries again instead of failing for good
        assert listener.backend_pid is not None
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute("NOTIFY rc_listen_retry")
        deadline = time.monotonic() + 10
        while len(woken) < 2:  # once on connecting, once for the NOTIFY
            assert time.monotonic() < deadline, "not woken"
            time.sleep(0.02)
    finally:
        listener.close()

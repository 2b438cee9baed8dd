"""The PostgreSQL store's fast reads (windows of versions, pages fetched ahead, one JSON
array a page, drafted events and UUIDs), on the real server, against the plain ways.

Each test works in a schema of its own (``rc_reads_<random>``), dropped at the end.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import threading
import uuid
import weakref
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import psycopg
import pytest

from rowcast.errors import StoreError
from rowcast.store import EventStore, NewEvent, RecordedEvent
from rowcast.testing.store import events


@pytest.fixture
def schema(server: str) -> Iterator[str]:
    name = f"rc_reads_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def url(server: str, schema: str) -> str:
    """One connection at most: a connection left dirty by a read fails the next call."""
    return f"{server}?schema={schema}&pool_max=1&timeout=5"


def _expected(count: int, after: int, limit: int | None, backwards: bool) -> list[int]:
    wanted = list(range(after + 1, count + 1))
    if backwards:
        wanted.reverse()
    return wanted if limit is None else wanted[:limit]


# ---------------------------------------------------------------- what held


@pytest.mark.parametrize("pipeline", [True, False])
def test_reads_at_and_around_page_boundaries(
    url: str, pipeline: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows and fetched-ahead pages give exactly LIMIT's events (with and without pipelines)."""
    from rowcast.store import _postgres_types

    monkeypatch.setattr(_postgres_types, "PIPELINE", pipeline and _postgres_types.PIPELINE)
    # pages: 2,500 events of a stream, 1,000 of the global order
    counts = {"s999": 999, "s2499": 2499, "s2500": 2500, "s5000": 5000, "s5001": 5001}
    with EventStore(url) as store:
        for stream, count in counts.items():
            for start in range(0, count, 1700):  # batches across page bounds, others between
                store.append(stream, events(min(1700, count - start), start=start))
                store.append("noise", events(1))
        for stream, count in counts.items():
            for after in sorted({0, 1, 2499, 2500, 2501, count - 1, count, count + 1}):
                for limit in (None, 0, 1, 2499, 2500, 2501, 5000, 5001):
                    for backwards in (False, True):
                        got = [e.version for e in store.read(stream, after, limit, backwards)]
                        assert got == _expected(count, after, limit, backwards), (
                            stream,
                            after,
                            limit,
                            backwards,
                        )
        positions = [e.position for e in store.read_all()]
        for index in (0, 1, 999, 1000, 1001, len(positions) - 1000, len(positions) - 1):
            after = 0 if index == 0 else positions[index - 1]
            for limit in (None, 1, 999, 1000, 1001, 2001):
                for backwards in (False, True):
                    want = [p for p in positions if p > after]
                    want = want[::-1] if backwards else want
                    want = want if limit is None else want[:limit]
                    got = [e.position for e in store.read_all(after, limit, backwards)]
                    assert got == want, (after, limit, backwards)


def test_a_deleted_and_rewritten_stream_reads_its_new_versions(url: str) -> None:
    with EventStore(url) as store:
        store.append("s", events(2500))
        store.delete_stream("s")
        store.append("s", events(1200, start=10_000))
        assert [e.data["n"] for e in store.read("s")] == list(range(10_000, 11_200))
        assert [e.version for e in store.read("s", backwards=True)] == list(range(1200, 0, -1))
        assert list(store.read("s", 1200)) == list(store.read("s", 2000, backwards=True)) == []


def test_concurrent_appends_deletes_and_refusals_leave_no_version_gap(
    server: str, url: str
) -> None:
    """What the windows rely on: only SQL from outside can make a gap (see the hazard below)."""
    busy = url.replace("pool_max=1", "pool_max=5")
    used = NewEvent("t", {})
    refusals: list[str] = []
    with EventStore(busy) as store:
        store.append("x", [used])
        stop = threading.Event()

        def writer(worker: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                batch = events(1 + n % 4, start=worker * 10_000 + n)
                if n % 5 == 0:
                    batch.insert(n % len(batch), used)  # refused whole: a duplicate id
                try:
                    store.append("s", batch, expected_version=store.stream_version("s"))
                except StoreError as e:
                    refusals.append(type(e).__name__)

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
        for thread in threads:
            thread.start()
        for _ in range(15):
            store.delete_stream("s")
            stop.wait(0.01)
        stop.set()
        for thread in threads:
            thread.join()
        assert refusals
        table = f'"{store.schema}".rowcast_events'
        with psycopg.connect(server, autocommit=True) as conn:
            stored = [
                v
                for (v,) in conn.execute(
                    f"SELECT version FROM {table} WHERE stream = 's' ORDER BY version"
                )
            ]
        assert stored == list(range(1, len(stored) + 1))
        assert [e.version for e in store.read("s")] == stored


def test_awkward_data_and_metadata_come_back_exact_through_one_json_array(url: str) -> None:
    values: list[Any] = [
        None,
        True,
        0,
        -0.0,
        10**40,
        "",
        '"$',
        '"$decimal"',
        "],[",
        ",",
        "\\",
        "\x00",
        "é\u2028😀",
        [],
        {},
        {"$decimal": "1"},
        {"$$x": 1},
        {"a": {"$b": [1, "]"]}},
        b"\x00\xff",
        uuid.UUID(int=5),
        float("inf"),
        {"k": "v" * 200_000},
        [[[[[]]]]],
    ]
    sent = [
        NewEvent("t", v, None if i % 2 else {"m": v, "$x": v})
        for i in range(1100)
        for v in [values[i % len(values)]]
    ]
    with EventStore(url) as store:
        result = store.append("s", sent)
        for read in (
            list(store.read("s")),
            list(store.read("s", backwards=True))[::-1],
            list(store.read_all(after=result.position - len(sent))),
        ):
            for event, new in zip(read, sent, strict=True):
                meta = None if new.metadata is None else dict(new.metadata)
                assert repr((event.data, event.metadata)) == repr((new.data, meta))


def test_drafted_events_and_ids_behave_as_constructed_ones(url: str, tmp_path: Path) -> None:
    """PostgreSQL reads draft both; SQLite reads draft the ids (`uuid_from_bytes`)."""
    for where in (url, f"sqlite:///{tmp_path / 'events.db'}"):
        with EventStore(where) as store:
            store.append("s", [NewEvent("t", {"a": [1]}, {"m": 2}), NewEvent("t", "text")])
            for event in store.read("s"):
                made = RecordedEvent(
                    *(getattr(event, f.name) for f in dataclasses.fields(RecordedEvent))
                )
                same = uuid.UUID(bytes=event.id.bytes)
                assert type(event) is RecordedEvent
                assert type(event.id) is uuid.UUID
                assert event == made
                assert made == event
                assert repr(event) == repr(made)
                assert event.id == same
                assert hash(event.id) == hash(same)
                assert (repr(event.id), str(event.id), event.id.is_safe) == (
                    repr(same),
                    str(same),
                    same.is_safe,
                )
                assert pickle.dumps(event) == pickle.dumps(made)
                assert pickle.loads(pickle.dumps(event)) == made
                assert pickle.dumps(event.id) == pickle.dumps(same)
                assert copy.copy(event) == copy.deepcopy(event) == made
                assert copy.copy(event.id) == copy.deepcopy(event.id) == same
                assert dataclasses.replace(event, version=9) == dataclasses.replace(made, version=9)
                assert dataclasses.asdict(event) == dataclasses.asdict(made)
                assert weakref.ref(event.id)() is event.id
                if isinstance(event.data, str):
                    assert hash(event) == hash(made)
                with pytest.raises(dataclasses.FrozenInstanceError):
                    event.version = 0  # type: ignore[misc]
                with pytest.raises(dataclasses.FrozenInstanceError):
                    del event.data  # type: ignore[misc]
                with pytest.raises(TypeError, match="immutable"):
                    event.id.int = 0  # type: ignore[misc]


def _application(server: str, name: str, what: str) -> list[int]:
    with psycopg.connect(server, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT {what}(pid) FROM pg_stat_activity WHERE application_name = %s", (name,)
        ).fetchall()
    return [row[0] for row in rows]


@pytest.mark.parametrize("at", [1, 2501, 5001])
def test_a_connection_killed_between_pages_is_replaced_and_the_read_goes_on(
    server: str, url: str, at: int
) -> None:
    """The next page's query, sent in a pipeline, is the first to meet the dead connection."""
    application = f"rc_reads_{uuid.uuid4().hex[:8]}"
    with EventStore(f"{url}&application_name={application}") as store:
        store.append("s", events(6000))
        read = []
        for event in store.read("s"):
            read.append(event.version)
            if len(read) == at:
                assert _application(server, application, "pg_terminate_backend") == [True]
        assert read == list(range(1, 6001))
        assert store.append("s", events(1)).version == 6001


@pytest.mark.parametrize("backwards", [False, True])
def test_a_pipelined_page_that_fails_leaves_the_one_connection_clean(
    server: str, url: str, backwards: bool
) -> None:
    """A statement timeout on the page fetched ahead (the table is locked meanwhile)."""
    with EventStore(f"{url}&options=-c%20statement_timeout%3D300") as store:
        store.append("s", events(6000))  # pages of 2,500
        reading = store.read("s", backwards=backwards)
        next(reading)  # page 1 decoded, page 2 fetched ahead: page 3 is the pipelined query
        with psycopg.connect(server) as locker:
            locker.execute(f'LOCK TABLE "{store.schema}".rowcast_events IN ACCESS EXCLUSIVE MODE')
            with pytest.raises(StoreError, match="statement timeout"):
                list(islice(reading, 3000))
            locker.rollback()
        pool: Any = store._pool  # type: ignore[attr-defined]
        with pool.connection() as conn:
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            assert conn.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF
        assert len(list(store.read("s", backwards=backwards))) == 6000


# ---------------------------------------------------------------- found in review


def test_metadata_written_by_sql_with_leading_whitespace_reads_like_data(
    server: str, url: str
) -> None:
    """The json columns keep text as written; data in one array skips the space, metadata not.

    ``_plain(meta, 0)`` (scan_once) does not skip whitespace: StopIteration,
    which the read generator turns into "RuntimeError: generator raised StopIteration".
    """
    with EventStore(url) as store:
        store.append("s", events(1))
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(
                f'INSERT INTO "{store.schema}".rowcast_events '
                "(stream, version, id, type, data, metadata, recorded_at) "
                "VALUES ('s', 2, gen_random_uuid(), 't', ' {\"n\": 1}', ' {\"k\": 2}', 0)"
            )
        (event,) = store.read("s", after=1)
        assert (event.data, event.metadata) == ({"n": 1}, {"k": 2})


def test_libpq_options_with_spaces_reach_the_server(server: str, schema: str) -> None:
    """Not the read path: parse_url's urlencode writes a space as '+', which libpq keeps.

    ``options=-c%20statement_timeout%3D5000`` became ``-c+statement_timeout...``:
    'FATAL: unrecognized configuration parameter "+statement_timeout"'.
    """
    url = f"{server}?schema={schema}&pool_max=1&options=-c%20statement_timeout%3D5000"
    with EventStore(url) as store:
        assert store._scalar("read", "SHOW statement_timeout") == "5s"  # type: ignore[attr-defined]


# ---------------------------------------------------------------- listing streams


def test_list_streams_in_a_collation_that_is_not_code_point_order(
    url: str, server: str, schema: str
) -> None:
    # en-x-icu sorts "a-c" between "ab" and "abd" (punctuation counts last): the names
    # with a prefix are not one range of the index, yet each is listed once, in order
    names = ["ab", "a-c", "abd", "a", "b-a", "ab-x", "AB"]
    with EventStore(url) as store:
        store.append("first", events(1))
    with psycopg.connect(server, autocommit=True) as conn:
        table = f'"{schema}".rowcast_events'
        conn.execute(f'ALTER TABLE {table} ALTER COLUMN stream TYPE text COLLATE "en-x-icu"')
        ordered = [
            row[0]
            for row in conn.execute(
                'SELECT n FROM unnest(%s::text[]) n ORDER BY n COLLATE "en-x-icu"', (names,)
            )
        ]
    with EventStore(url) as store:
        for name in names:
            store.append(name, events(2))
        assert [i.stream for i in store.list_streams("ab")] == [
            n for n in ordered if n.startswith("ab")
        ]
        paged, after = [], None
        while page := store.list_streams(after=after, limit=2):
            paged += [i.stream for i in page]
            after = page[-1].stream
        assert [n for n in paged if n != "first"] == ordered
        assert sorted(paged) == sorted([*names, "first"])


def test_list_streams_hops_along_the_index(url: str, server: str, schema: str) -> None:
    with EventStore(url) as store:
        for n in range(50):
            store.append(f"s-{n:02}", events(3))
        sql = store._sql.list_streams[True]  # type: ignore[attr-defined]
    params = {"after": "", "prefix": "s-", "upper": "s.", "limit": 10}
    with psycopg.connect(server) as conn:  # a table this new has no statistics yet
        conn.execute(store._sql.list_settings)  # type: ignore[attr-defined]
        plan = "\n".join(row[0] for row in conn.execute(f"EXPLAIN {sql}", params))
    assert "Seq Scan" not in plan
    assert "Bitmap" not in plan
    assert plan.count("Sort  ") == 1  # the page's own: 10 rows

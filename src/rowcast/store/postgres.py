"""`PostgresEventStore`: the event store on a PostgreSQL server, with psycopg 3.

URLs: ``postgresql://user:password@host:5432/dbname`` (or ``postgres://``,
``postgresql+psycopg://``), with any libpq parameter in the query string
(``sslmode``, ``application_name``, ``connect_timeout``...) and rowcast's own
options, as query parameters or keywords:

``schema``
    the PostgreSQL schema that holds the tables (created if missing); by
    default the connection's current schema (usually ``public``).
``pool_min`` / ``pool_max``
    connections the store keeps open / opens at most (default 1 / 10).
``timeout``
    seconds to wait for a connection, to open or from the pool (default 30).

``create``
    keyword only: False opens a store that exists and creates nothing (see
    `rowcast.store.base`, "Opening"); a missing one is a `StoreError` that says
    what is missing and names ``rowcast events init``.

The tables (``rowcast_events``, ``rowcast_snapshots``,
``rowcast_subscriptions``) and the append function (``rowcast_append``) are
created on first use, under an advisory lock so
that processes starting together do not race. To create them ahead of time
with a privileged role, and let the application run with a role that may
only read and write them: ``rowcast events init URL [--schema NAME]`` (or
`init_schema`). The installed extra: ``pip install 'rowcast[postgres]'``.

How it keeps the contract:

* **A gap-free global order.** Positions come from an identity column. Each
  append takes one transaction-level advisory lock (per schema) before it
  draws its positions, and holds it until its commit is visible, so positions
  are handed out in commit order: a reader that follows `read_all` never
  passes a position whose event commits later. Appends are therefore
  serialized per schema (as with every store that promises this, e.g.
  eventsourcing's table lock); reads never wait for them.
* **One round trip per append**: one call of the schema's ``rowcast_append``
  function, in its own transaction: it takes the lock (and queues a
  ``pg_notify``), then, in one statement, reads the stream's version, checks
  ``expected_version`` and inserts the batch (``unnest`` of arrays sent in
  binary). A refused append (a version mismatch, or a reused id that breaks
  ``UNIQUE (id)``) is then examined to tell a retry, which returns the first
  result, from a conflict.
* **Reads** come in pages (2,500 events of a stream, 1,000 of the global
  order), each on a connection borrowed for it alone (an abandoned iterator
  holds none). A page of a stream is a window of its gap-free versions, which
  PostgreSQL plans as an index range whatever its statistics (so never delete
  one event of a stream by SQL: a read stops at the gap; erase data by
  rewriting it, or delete the whole stream); the next page is asked for, in
  pipeline mode, before this one is decoded, so the server's work and the
  round trip overlap the decoding; a page's JSON is parsed in one call (see
  `rowcast.store._postgres_types`).
* **Watching without polling**: a `rowcast.store._postgres_listen.Listener`
  thread LISTENs on the schema's channel (started by the first `watch` or
  subscription) and wakes the watchers on every commit from any process; it
  reconnects by itself after a dropped connection, then wakes them to catch up.
* **Connections** come from a psycopg_pool ``ConnectionPool`` (thread safe: each
  call borrows one). A call that finds its connection dead (a server restart,
  ``pg_terminate_backend``) is retried on another one until ``timeout``; this is
  safe as every call is idempotent (appends through their event ids). Driver
  errors become `StoreError` with the psycopg error as ``__cause__``.
* Data and metadata are codec JSON in ``json`` columns (kept as written, so
  they come back exact, and SQL can still look into them: ``data->>'total'``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import partial
from itertools import chain
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeVar

from .._url import masked
from ..backends import missing_extra
from ..errors import StoreError
from ._core import EncodedBatch, decode_state, prefix_end, refused_append
from ._postgres_sql import PostgresOptions, Statements, expected_params, parse_url
from ._watch import Watch
from .base import EventStore
from .types import ALL, AppendResult, ExpectedVersion, RecordedEvent, Snapshot, StreamInfo

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

__all__ = ["PostgresEventStore", "imports", "init_schema"]

_T = TypeVar("_T")
# Rows fetched per query while reading. A stream is mostly read whole, to rebuild
# what it records, so its pages are larger (fewer round trips: +15 % events/s over
# pages of 1,000); the global order is read by followers that may stop anywhere.
_PAGE: Final = 1000
_STREAM_PAGE: Final = 2500
_MAX: Final = (1 << 63) - 1


def imports() -> None:
    """Check that psycopg 3 and psycopg_pool are installed; a `ConfigError` naming the extra."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as e:
        raise missing_extra("postgres", "the PostgreSQL event store", e) from e


def init_schema(url: str, *, schema: str | None = None) -> tuple[str, tuple[str, ...]]:
    """Create the store's schema and tables now (if missing): (schema, tables).

    For a deployment whose application role may not create tables: run this
    once with a privileged role, then grant the application role USAGE on the
    schema and SELECT, INSERT, UPDATE, DELETE on the tables.
    """
    with PostgresEventStore(url, schema=schema, pool_min=0, pool_max=1) as store:
        return store.schema, store._sql.tables


class PostgresEventStore(EventStore):
    """The event store in a PostgreSQL database; see the module docstring."""

    schema: str  #: the PostgreSQL schema that holds the tables

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        pool_min: int | None = None,
        pool_max: int | None = None,
        timeout: float | None = None,
        create: bool = True,
    ) -> None:
        super().__init__(url)
        self._pool: psycopg_pool.ConnectionPool[Any] | None = None
        self._listener: Any = None
        self._byte_ordered: bool | None = None  # asked at the first list_streams
        options = parse_url(
            url, schema=schema, pool_min=pool_min, pool_max=pool_max, timeout=timeout
        )
        imports()
        self._options = options
        self._shown = masked(url)
        self.schema = self._setup(options, create)
        self._sql = Statements(self.schema)
        self._open_pool(options)

    # -- opening

    def _setup(self, options: PostgresOptions, create: bool) -> str:
        """Connect once (a clear error for a bad URL or server), create what is missing.

        With `create` false, only check that the store exists (see `EventStore`).
        """
        import psycopg

        from ._postgres_schema import ensure_schema

        try:
            conn = psycopg.connect(options.conninfo, autocommit=True)
        except psycopg.Error as e:
            raise StoreError(
                f"event store {self._shown}: cannot connect to PostgreSQL: {_first_line(e)}"
            ) from e
        with conn:
            return ensure_schema(conn, options.schema, self._shown, create=create)

    def _open_pool(self, options: PostgresOptions) -> None:
        import psycopg_pool

        from ._postgres_types import ADAPTERS

        self._pool = psycopg_pool.ConnectionPool(
            options.conninfo,
            min_size=options.pool_min,
            max_size=options.pool_max,
            kwargs={"autocommit": True, "context": ADAPTERS},
            timeout=options.timeout,
            num_workers=1,
            name=f"rowcast-{self.schema}",
            open=False,
        )
        try:
            self._pool.open(wait=options.pool_min > 0, timeout=options.timeout)
        except psycopg_pool.PoolTimeout as e:
            self._pool.close()
            raise StoreError(
                f"event store {self._shown}: no connection within {options.timeout}s"
            ) from e

    # -- the pool and the retries

    def _run(self, operation: str, work: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """`work(connection)` on a pooled connection, again on another if that one died."""
        import psycopg
        import psycopg_pool

        deadline = time.monotonic() + self._options.timeout
        pause = 0.01
        conn: psycopg.Connection[Any] | None = None
        while True:
            pool = self._pool
            if pool is None or self._closed:
                raise StoreError(f"cannot {operation}: event store {self._shown} is closed")
            try:
                with pool.connection() as conn:
                    try:
                        return work(conn)
                    except psycopg.Error:
                        if not conn.broken and conn.info.transaction_status:
                            conn.rollback()
                        raise
            except (psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed) as e:
                if self._closed:
                    raise StoreError(
                        f"cannot {operation}: event store {self._shown} is closed"
                    ) from e
                self._fail(operation, e)
            except psycopg.OperationalError as e:
                if self._closed:
                    raise StoreError(
                        f"cannot {operation}: event store {self._shown} is closed"
                    ) from e
                if conn is None or not conn.broken or time.monotonic() >= deadline:
                    self._fail(operation, e)
            except psycopg.Error as e:
                self._fail(operation, e)
            time.sleep(pause)
            pause = min(pause * 2, 0.5)

    def _fail(self, operation: str, error: BaseException) -> NoReturn:
        raise StoreError(
            f"event store {self._shown}: {operation} failed: {_first_line(error)}"
        ) from error

    def _close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    # -- appends

    def _append(self, stream: str, batch: EncodedBatch, expected: ExpectedVersion) -> AppendResult:
        kind, version = expected_params(expected)
        count = len(batch.ids)
        params = (stream, kind, version, batch.ids, batch.types, batch.data, batch.metadata)
        sql = self._sql.append

        def work(conn: psycopg.Connection[Any]) -> AppendResult:
            import psycopg

            try:
                row = conn.execute(sql, params).fetchone()
            except psycopg.errors.UniqueViolation:
                return self._refused(conn, stream, batch, expected, None)
            assert row is not None
            current, position = row
            if position is None:
                return self._refused(conn, stream, batch, expected, current)
            return AppendResult(current + count, position)

        result = self._run("append", work)
        self._appended(stream, result)
        return result

    def _refused(
        self,
        conn: psycopg.Connection[Any],
        stream: str,
        batch: EncodedBatch,
        expected: ExpectedVersion,
        current: int | None,
    ) -> AppendResult:
        rows = conn.execute(self._sql.find_ids, (batch.ids,)).fetchall()
        stored = {bytes.fromhex(i.replace("-", "")): (s, v, p) for i, s, v, p in rows}
        return refused_append(self._shown, stream, batch.ids, expected, current, stored)

    # -- reads

    def _read(
        self, stream: str, after: int, limit: int | None, backwards: bool
    ) -> Iterator[RecordedEvent]:
        # the events of each page in turn, iterated in C: no generator frame per event
        return chain.from_iterable(self._pages(stream, after, limit, backwards))

    def _pages(
        self, stream: str, after: int, limit: int | None, backwards: bool
    ) -> Iterator[list[RecordedEvent]]:
        from ._postgres_types import PIPELINE, to_events

        remaining = _MAX if limit is None else limit
        upper = _MAX
        everything = stream == ALL
        sql = (self._sql.read_all if everything else self._sql.read)[backwards]
        name = None if everything else stream
        key = 2 if everything else 0  # a row's place: its position, or its version
        most = _PAGE if everything else _STREAM_PAGE

        def bounds(after: int, upper: int, size: int) -> tuple[Any, ...] | dict[str, Any]:
            if everything:
                return (after, upper, size) if backwards else (after, size)
            if backwards:
                return {"stream": stream, "after": after, "upper": upper, "size": size}
            return (stream, after, min(after + size, _MAX))  # a window: see Statements.read

        def page(
            after: int,
            upper: int,
            size: int,
            remaining: int,
            rows: list[Any] | None,
            conn: psycopg.Connection[Any],
        ) -> tuple[list[RecordedEvent], list[Any] | None]:
            """This page's events (`rows` when fetched ahead), and the next page's rows.

            The next page, when one is due, is asked for before this one is made
            into events, in pipeline mode: the server runs its query and the
            round trip passes while this process decodes (a fifth of a long read).
            """
            if rows is None:
                rows = _fetch(sql, bounds(after, upper, size), conn)
            if not (PIPELINE and len(rows) == size and remaining > size):
                return to_events(rows, name), None
            last, size = rows[-1][key], min(remaining - size, most)
            following = bounds(after, last, size) if backwards else bounds(last, upper, size)
            with conn.pipeline(), conn.cursor(binary=True) as cursor:
                cursor.execute(sql, following)
                return to_events(rows, name), cursor.fetchall()

        ahead: list[Any] | None = None
        while remaining > 0:
            size = min(remaining, most)
            # one page per borrowed connection: an abandoned iterator holds none
            events, ahead = self._run("read", partial(page, after, upper, size, remaining, ahead))
            yield events
            if len(events) < size:
                return
            remaining -= len(events)
            last = events[-1].position if everything else events[-1].version
            if backwards:
                upper = last
            else:
                after = last

    def _scalar(self, operation: str, sql: str, params: tuple[Any, ...] = ()) -> Any:
        def work(conn: psycopg.Connection[Any]) -> Any:
            row = conn.execute(sql, params).fetchone()
            return None if row is None else row[0]

        return self._run(operation, work)

    def _stream_version(self, stream: str) -> int:
        if stream == ALL:
            return int(self._scalar("read", self._sql.head))
        return int(self._scalar("read", self._sql.version, (stream,)))

    def _check_writable(self) -> None:
        events = self._sql.tables[0]
        sql = "SELECT current_user, has_table_privilege(%s, 'INSERT'), "
        sql += "has_function_privilege(%s, 'EXECUTE')"
        params = (events, self._sql.signature)
        row = self._run("check", lambda conn: conn.execute(sql, params).fetchone())
        user, insert, execute = row or (None, False, False)
        if not (insert and execute):
            raise StoreError(
                f"event store {self._shown}: role {user!r} may not append; as a privileged "
                f"role: GRANT INSERT ON {events} TO {user}; GRANT EXECUTE ON FUNCTION "
                f"{self._sql.signature} TO {user}"
            )

    def _streams(self) -> dict[str, tuple[int, int]]:
        rows = self._run("read", lambda conn: conn.execute(self._sql.streams).fetchall())
        return {name: (int(version), int(position)) for name, version, position in rows}

    def _list_streams(self, prefix: str, after: str | None, limit: int) -> list[StreamInfo]:
        if self._byte_ordered is None:
            query = self._sql.byte_ordered
            self._byte_ordered = bool(self._scalar("read", query, (self._sql.tables[0],)))
        upper = prefix_end(prefix) if self._byte_ordered else None
        params = {"after": after or "", "prefix": prefix, "upper": upper, "limit": limit}
        sql = self._sql.list_streams[upper is not None]
        settings = self._sql.list_settings

        def work(conn: psycopg.Connection[Any]) -> list[Any]:
            with conn.transaction():
                conn.execute(settings)
                return conn.execute(sql, params).fetchall()

        rows = self._run("list streams", work)
        return [StreamInfo(name, int(v), int(p), float(at)) for name, v, p, at in rows]

    # -- deletes, snapshots, subscriptions

    def _delete_stream(self, stream: str) -> None:
        def work(conn: psycopg.Connection[Any]) -> None:
            # under the append lock: an append in flight read the stream's version
            # before the delete and would write after it (versions 6, 7... of nothing)
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._sql.lock_key,))
                conn.execute(self._sql.delete, {"stream": stream})

        self._run("delete stream", work)

    def _save_snapshot(
        self, stream: str, name: str, version: int, state: bytes, is_bytes: bool
    ) -> None:
        params = (stream, name, version, state, is_bytes)
        self._run("save snapshot", lambda conn: conn.execute(self._sql.save_snapshot, params))

    def _load_snapshot(self, stream: str, name: str) -> Snapshot | None:
        def work(conn: psycopg.Connection[Any]) -> Any:
            return conn.execute(self._sql.load_snapshot, (stream, name)).fetchone()

        row = self._run("load snapshot", work)
        if row is None:
            return None
        version, blob, is_bytes, at = row
        try:
            state = decode_state(blob, is_bytes)
        except ValueError as e:
            raise StoreError(
                f"event store {self._shown}: snapshot {name!r} of {stream!r} is corrupt: {e}"
            ) from e
        return Snapshot(stream, name, version, state, at)

    def _subscribe(self, name: str, stream: str) -> tuple[str, int]:
        params = {"name": name, "stream": stream}
        row = self._run(
            "subscribe", lambda conn: conn.execute(self._sql.subscribe, params).fetchone()
        )
        assert row is not None
        return str(row[0]), int(row[1])

    def _save_position(self, name: str, stream: str, position: int) -> None:
        params = (name, stream, position)
        self._run(
            "save subscription position", lambda conn: conn.execute(self._sql.save_position, params)
        )

    # -- watching

    def watch(
        self, stream: str = ALL, after: int | None = None, *, timeout: float | None = None
    ) -> Watch:
        """`EventStore.watch`; the first one starts the LISTEN thread (see the module docstring)."""
        if not self._closed:
            self.listener.start()
        return super().watch(stream, after, timeout=timeout)

    @property
    def listener(self) -> Any:
        """The `rowcast.store._postgres_listen.Listener` of this store (made on first use)."""
        if self._listener is None:
            from ._postgres_listen import Listener

            self._listener = Listener(
                self._options.conninfo,
                self._sql.channel,
                self._notifier.notify,
                describe=self._shown,
                timeout=self._options.timeout,
            )
        return self._listener


def _fetch(
    sql: str, params: tuple[Any, ...] | dict[str, Any], conn: psycopg.Connection[Any]
) -> list[Any]:
    with conn.cursor(binary=True) as cursor:
        return cursor.execute(sql, params).fetchall()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__

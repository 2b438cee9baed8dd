"""The I/O-free half of the PostgreSQL event store: URL options, SQL text.

Used by the store (`rowcast.store.postgres`) and its schema setup
(`rowcast.store._postgres_schema`); nothing here imports psycopg.

Every statement names its tables with the schema, quoted, so a store never
depends on the connection's ``search_path``. Appends of one schema are
serialized by one transaction-level advisory lock (`lock_key`) and announce
themselves on one NOTIFY channel (`channel`), both derived from the schema's name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from urllib.parse import quote as url_quote

from .._url import check_query, masked
from ..errors import ConfigError
from .types import ANY, NO_STREAM, STREAM_EXISTS, ExpectedVersion

__all__ = [
    "PostgresOptions",
    "Statements",
    "expected_params",
    "parse_url",
    "quote",
]

_OPTIONS: Final = ("schema", "pool_min", "pool_max", "timeout")
_APPEND_ARGS: Final = "text, integer, bigint, bytea[], text[], text[], text[]"
_MAX_IDENTIFIER: Final = 63  # PostgreSQL's NAMEDATALEN - 1, in bytes


@dataclass(frozen=True, slots=True)
class PostgresOptions:
    """What a ``postgresql://`` URL and the keywords ask for."""

    conninfo: str  #: the URL libpq gets: rowcast's own options taken out
    schema: str | None  #: the PostgreSQL schema of the tables; None: the current schema
    pool_min: int  #: connections kept open
    pool_max: int  #: connections at most (concurrent calls beyond it wait)
    timeout: float  #: seconds to wait for a connection (to open, or from the pool)


def parse_url(
    url: str,
    *,
    schema: str | None = None,
    pool_min: int | None = None,
    pool_max: int | None = None,
    timeout: float | None = None,
) -> PostgresOptions:
    """Check `url` (``postgresql://`` or ``postgres://``) and split off rowcast's options.

    rowcast's options (``schema``, ``pool_min``, ``pool_max``, ``timeout``) come
    from the query string or the keywords (keywords win); every other query
    parameter (``sslmode``, ``application_name``, ``connect_timeout``...) is
    left for libpq. Raises `ConfigError` naming what is wrong.
    """
    shown = masked(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as e:
        raise ConfigError(f"{shown!r} is not a valid PostgreSQL URL: {e}") from None
    scheme = parts.scheme.lower().split("+", 1)[0]
    if scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"{shown!r} is not a postgresql:// URL")
    try:
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise ConfigError(
            f"{shown!r}: malformed query {parts.query!r}; write ?schema=events&pool_max=10"
        ) from None
    own = {k: v for k, v in query if k in _OPTIONS}
    rest = [(k, v) for k, v in query if k not in _OPTIONS]
    check_query(url, rest, "postgresql", "a PostgreSQL event store", _OPTIONS)
    name = schema if schema is not None else own.get("schema")
    if name is not None:
        _check_schema(name, shown)
    low = _int(pool_min if pool_min is not None else own.get("pool_min", 1), "pool_min", shown)
    high = _int(pool_max if pool_max is not None else own.get("pool_max", 10), "pool_max", shown)
    if high < 1 or low > high:
        raise ConfigError(f"{shown!r}: need 1 <= pool_max and pool_min <= pool_max")
    raw: object = timeout if timeout is not None else own.get("timeout", 30.0)
    try:
        seconds = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{shown!r}: timeout must be a number of seconds") from None
    if not seconds > 0:
        raise ConfigError(f"{shown!r}: timeout must be > 0 seconds, not {raw!r}")
    if "connect_timeout" not in dict(rest):  # libpq waits forever for a silent host
        rest.append(("connect_timeout", str(max(2, min(int(seconds), 10)))))
    # quote, not urlencode's default quote_plus: libpq reads "+" as a plus sign
    encoded = urlencode(rest, quote_via=url_quote)
    conninfo = urlunsplit(parts._replace(scheme="postgresql", query=encoded))
    return PostgresOptions(conninfo, name, low, high, seconds)


def _int(value: object, what: str, shown: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{shown!r}: {what} must be an integer >= 0, not {value!r}")
    try:
        number: int = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise ConfigError(f"{shown!r}: {what} must be an integer >= 0, not {value!r}") from None
    if number < 0:
        raise ConfigError(f"{shown!r}: {what} must be an integer >= 0, not {value!r}")
    return number


def _check_schema(name: object, shown: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"a schema name is a str, not {type(name).__name__}")
    if not name or "\x00" in name or len(name.encode()) > _MAX_IDENTIFIER:
        raise ConfigError(
            f"{shown!r}: the schema must be a name of 1 to {_MAX_IDENTIFIER} bytes, not {name!r}"
        )
    if name.lower().startswith("pg_"):
        raise ConfigError(f"{shown!r}: schema names starting with 'pg_' are PostgreSQL's own")


def quote(identifier: str) -> str:
    """`identifier` as a quoted SQL identifier (so any name, any case, is taken as it is)."""
    return '"' + identifier.replace('"', '""') + '"'


def _key(schema: str, what: str) -> int:
    digest = hashlib.blake2b(f"rowcast:{what}:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Statements:
    """The SQL of one store, for the tables in `schema`."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        s = quote(schema)
        events, snapshots, subscriptions = (
            f"{s}.rowcast_events",
            f"{s}.rowcast_snapshots",
            f"{s}.rowcast_subscriptions",
        )
        #: the advisory lock every append of this schema takes, and the one of schema setup
        self.lock_key = _key(schema, "append")
        self.setup_key = _key(schema, "setup")
        #: the NOTIFY channel of this schema's appends
        self.channel = f"rowcast_events_{_key(schema, 'channel') & 0xFFFFFFFFFFFF:012x}"
        self.tables = (events, snapshots, subscriptions)
        self.create_schema = f"CREATE SCHEMA IF NOT EXISTS {s}"
        self.create_tables = (
            f"""CREATE TABLE IF NOT EXISTS {events} (
                position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                stream text NOT NULL,
                version bigint NOT NULL,
                id uuid NOT NULL UNIQUE,
                type text NOT NULL,
                data json NOT NULL,
                metadata json,
                recorded_at double precision NOT NULL,
                UNIQUE (stream, version)
            )""",
            f"""CREATE TABLE IF NOT EXISTS {snapshots} (
                stream text NOT NULL,
                name text NOT NULL,
                version bigint NOT NULL,
                state bytea NOT NULL,
                is_bytes boolean NOT NULL,
                recorded_at double precision NOT NULL,
                PRIMARY KEY (stream, name)
            )""",
            f"""CREATE TABLE IF NOT EXISTS {subscriptions} (
                name text PRIMARY KEY,
                stream text NOT NULL,
                position bigint NOT NULL
            )""",
        )
        function = f"{s}.rowcast_append"
        #: the append function's signature, for to_regprocedure (a parameter, never SQL text)
        self.signature = f"{function}({_APPEND_ARGS})"
        self.missing = (
            "SELECT count(*) FILTER (WHERE to_regclass(t) IS NULL) "
            "+ (to_regprocedure(%s) IS NULL)::int FROM unnest(%s::text[]) t"
        )
        # One call, one statement, one round trip. Inside: the lock, then (a new
        # statement, so a new snapshot that sees every append committed before the
        # lock) the version read, the check and the insert in one go. The positions
        # of an append are drawn under the lock, which is held until its commit is
        # visible: the global order is the commit order, and a reader following it
        # never passes a gap that fills in later. NOTIFY is sent at the commit.
        # the body's dollar quote: a tag that the schema's name cannot close early
        tag = "$rowcast$"
        while tag in s:
            tag = f"$rowcast{len(tag)}$"
        self.create_function = f"""CREATE OR REPLACE FUNCTION {function}(
                p_stream text, p_kind integer, p_expected bigint, p_ids bytea[],
                p_types text[], p_data text[], p_metadata text[])
            RETURNS TABLE (o_version bigint, o_position bigint)
            LANGUAGE plpgsql AS {tag}
            BEGIN
                PERFORM pg_advisory_xact_lock({self.lock_key});
                PERFORM pg_notify('{self.channel}', '');
                RETURN QUERY WITH cur AS (
                    SELECT coalesce(max(e.version), 0) AS v,
                           extract(epoch FROM clock_timestamp())::float8 AS at
                    FROM {events} e WHERE e.stream = p_stream
                ), ins AS (
                    INSERT INTO {events} (stream, version, id, type, data, metadata,
                                          recorded_at)
                    SELECT p_stream, cur.v + b.n, encode(b.id, 'hex')::uuid, b.type,
                           b.data::json, b.metadata::json, cur.at
                    FROM cur, unnest(p_ids, p_types, p_data, p_metadata)
                         WITH ORDINALITY AS b(id, type, data, metadata, n)
                    WHERE p_kind = 0 OR (p_kind = 1 AND cur.v = p_expected)
                          OR (p_kind = 2 AND cur.v > 0)
                    RETURNING position
                )
                SELECT cur.v, (SELECT max(ins.position) FROM ins) FROM cur;
            END
            {tag}"""
        self.append = f"SELECT o_version, o_position FROM {function}(%s, %s, %s, %b, %b, %b, %b)"
        self.find_ids = (
            f"SELECT id::text, stream, version, position FROM {events} "
            "WHERE id = ANY(ARRAY(SELECT encode(b, 'hex')::uuid FROM unnest(%b::bytea[]) b))"
        )
        columns = "version, position, id, type, data, metadata, recorded_at"
        # A page of a stream is a window of versions, not "LIMIT n after v": versions
        # are gap-free, so the window holds the page exactly, and its bounds tell the
        # planner how few rows it is. With "LIMIT n" alone, a table without fresh
        # statistics (new, or autovacuum behind) is planned as a bitmap scan of the
        # whole rest of the stream and a sort of it, for every page: 30 ms a page
        # of a 50,000-event stream, against 0.5 ms for the index scan in order.
        # Parameters: (stream, after, last version of the window).
        # Backwards: (stream, after, upper, size), the window ending below `upper`
        # at the stream's last version there (one probe of the index).
        self.read = {
            False: f"SELECT {columns} FROM {events} WHERE stream = %s AND version > %s "
            "AND version <= %s ORDER BY version",
            True: f"SELECT {columns} FROM {events} e WHERE e.stream = %(stream)s "
            "AND e.version > %(after)s AND e.version < %(upper)s AND e.version > ("
            f"SELECT coalesce(max(h.version), 0) FROM {events} h "
            "WHERE h.stream = %(stream)s AND h.version < %(upper)s) - %(size)s "
            "ORDER BY e.version DESC",
        }
        self.read_all = {
            False: f"SELECT stream, {columns} FROM {events} WHERE position > %s "
            "ORDER BY position LIMIT %s",
            True: f"SELECT stream, {columns} FROM {events} WHERE position > %s "
            "AND position < %s ORDER BY position DESC LIMIT %s",
        }
        self.version = f"SELECT coalesce(max(version), 0) FROM {events} WHERE stream = %s"
        self.head = f"SELECT coalesce(max(position), 0) FROM {events}"
        self.streams = f"SELECT stream, max(version), max(position) FROM {events} GROUP BY stream"
        # A page of streams hops along the (stream, version) index from one name to the
        # next, one probe per stream however many events it has; the LIMIT outside
        # stops the recursion. A prefix is a range of the index only in a collation
        # that sorts by code point (`byte_ordered`); in another, the range starts at
        # the prefix and starts_with() picks the names (scanning on to the index's end).
        listing = f"""WITH RECURSIVE names(stream) AS (
                (SELECT f.stream FROM {events} f WHERE f.stream > %(after)s
                 AND f.stream >= %(prefix)s AND starts_with(f.stream, %(prefix)s) {{first}}
                 ORDER BY f.stream LIMIT 1)
                UNION ALL
                SELECT (SELECT e.stream FROM {events} e WHERE e.stream > n.stream
                        AND starts_with(e.stream, %(prefix)s) {{next}}
                        ORDER BY e.stream LIMIT 1)
                FROM names n WHERE n.stream IS NOT NULL)
            SELECT n.stream, l.version, l.position, l.recorded_at
            FROM (SELECT stream FROM names WHERE stream IS NOT NULL LIMIT %(limit)s) n,
            LATERAL (SELECT version, position, recorded_at FROM {events} e
                     WHERE e.stream = n.stream ORDER BY e.version DESC LIMIT 1) l
            ORDER BY n.stream"""
        self.list_streams = {
            False: listing.format(first="", next=""),
            True: listing.format(first="AND f.stream < %(upper)s", next="AND e.stream < %(upper)s"),
        }
        #: before `list_streams`, in its transaction: a table whose statistics are new or
        #: stale (autovacuum behind) may have a probe planned as a bitmap scan and sort
        #: of the whole rest of the index; hops are only ever fast as index scans
        self.list_settings = "SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off"
        #: whether the events table sorts stream names by code point
        self.byte_ordered = (
            "SELECT c.collname IN ('C', 'POSIX', 'ucs_basic') OR (c.collname = 'default' "
            "AND coalesce(to_jsonb(d) ->> 'datlocprovider', 'c') = 'c' "
            "AND lower(d.datcollate) IN ('c', 'posix', 'c.utf-8', 'c.utf8')) "
            "FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation, pg_database d "
            "WHERE a.attrelid = %s::regclass AND a.attname = 'stream' "
            "AND d.datname = current_database()"
        )
        #: run after taking `lock_key` in the same transaction (see the append function)
        self.delete = (
            f"WITH gone AS (DELETE FROM {events} WHERE stream = %(stream)s) "
            f"DELETE FROM {snapshots} WHERE stream = %(stream)s"
        )
        self.save_snapshot = (
            f"INSERT INTO {snapshots} AS s (stream, name, version, state, is_bytes, recorded_at) "
            "VALUES (%s, %s, %s, %s, %s, extract(epoch FROM clock_timestamp())::float8) "
            "ON CONFLICT (stream, name) DO UPDATE SET version = excluded.version, "
            "state = excluded.state, is_bytes = excluded.is_bytes, "
            "recorded_at = excluded.recorded_at WHERE excluded.version >= s.version"
        )
        self.load_snapshot = (
            f"SELECT version, state, is_bytes, recorded_at FROM {snapshots} "
            "WHERE stream = %s AND name = %s"
        )
        self.subscribe = (
            f"WITH new AS (INSERT INTO {subscriptions} (name, stream, position) "
            "VALUES (%(name)s, %(stream)s, 0) ON CONFLICT (name) DO NOTHING "
            "RETURNING stream, position) "
            f"SELECT stream, position FROM new UNION ALL "
            f"SELECT stream, position FROM {subscriptions} WHERE name = %(name)s"
        )
        self.save_position = (
            f"INSERT INTO {subscriptions} (name, stream, position) VALUES (%s, %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET position = excluded.position"
        )


def expected_params(expected: ExpectedVersion) -> tuple[int, int]:
    """(kind, version) for the append statement: 0 any, 1 exactly `version`, 2 exists."""
    if expected is ANY:
        return 0, 0
    if expected is NO_STREAM:
        return 1, 0
    if expected is STREAM_EXISTS:
        return 2, 0
    assert isinstance(expected, int)
    return 1, expected

"""`RedisSink`: every change an entry of a Redis Stream (``redis://``, ``rediss://``).

URL: ``redis://[[user]:password@]host[:port][/db][?option=value&...]``, options:

``stream``
    one stream key for every change (e.g. ``?stream=rowcast:changes``); without it,
    one stream per table: ``<prefix>:<schema>.<table>`` (``<prefix>:<table>`` when
    the change has no schema).
``prefix``
    the key prefix of per-table streams, default ``rowcast``.
``maxlen``
    trim each stream to about this many entries (``XADD ... MAXLEN ~ n``); default:
    never trim. Trimming drops the oldest entries whether or not a consumer group has
    read them, so size it well above what consumers can fall behind.
``timeout``
    seconds to connect and to wait for a reply, default 10.

Each change is one entry (``XADD <key> * ...``) with the fields

=========  ============================================================
``id``     the change id (`rowcast.sinks.change_id`), a UUID string
``topic``  ``<action>@<schema>.<table>``, e.g. ``write@shop.orders``
``name``   ``<table>_<action>``, e.g. ``orders_write``
``body``   ``Change.to_json()``
=========  ============================================================

A batch goes in one pipelined round trip (no MULTI: Redis runs the commands in
order either way, and a retried batch is re-sent whole). The XADD commands are
written in the Redis protocol by `rowcast._speedups.stream_adder` (the parts that
are the same for every change of a table written once), for speed; redis-py
connects, authenticates and reads the replies (under ``ROWCAST_PURE=1``, redis-py's
own pipeline writes them). `deliver` returns once
Redis replied to every XADD, which is as durable as the server's persistence (AOF
``appendfsync``, RDB): a Redis without persistence loses the stream when it
restarts. Entries of one stream keep commit order; with per-table streams, there
is no order across tables (use ``?stream=`` for one total order).

`check` connects (authenticating), sends PING, makes sure the ``?stream=`` key is a
stream or absent, and that the user may XADD to the sink's keys: an XADD queued in
a MULTI that is then discarded (Redis checks ACLs, memory and a read-only replica
when it queues a command), so nothing is written.

Errors at the boundary: an unreachable server, a timeout, a server loading, out
of memory (``OOM``: the stream drains), ``READONLY`` (a replica, during a
failover) or ``MISCONF`` are a `TransientSinkError`; a wrong password, ``NOPERM``
(ACL), ``WRONGTYPE`` (the key holds another type) and any other refusal of the
command are a `PermanentSinkError`.

Redis does not deduplicate: after a failure the relay re-sends the whole batch, so
an entry can appear twice, with the same ``id`` field; a consumer skips ids it has
seen. Consumers read with consumer groups (``XGROUP CREATE <key> <group> 0
MKSTREAM``, ``XREADGROUP ... STREAMS <key> >``, ``XACK``), so several workers share
a stream and a crashed worker's pending entries can be claimed (``XAUTOCLAIM``).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .. import _speedups
from .._url import masked, number, query
from ..backends import missing_extra
from ..change import Change
from ..errors import ConfigError, PermanentSinkError, SinkError, TransientSinkError
from .base import FORMAT_OPTIONS, Batch, encoder

__all__ = ["RedisSink"]

_OPTIONS = ("stream", "prefix", "maxlen", "timeout", *FORMAT_OPTIONS)


class RedisSink:
    """Deliver changes as Redis Stream entries (see the module docstring).

    Connects in `check` or on the first `deliver` (and again after a connection
    error): a Redis that goes down is a `TransientSinkError` the relay retries, not a
    crash. Not thread-safe: one thread delivers at a time.
    """

    def __init__(
        self,
        url: str,
        *,
        stream: str | None = None,
        prefix: str | None = None,
        maxlen: int | None = None,
        timeout: float | None = None,
    ) -> None:
        self.url = masked(url)
        options = _parse(url)
        stream = stream if stream is not None else options.get("stream")
        prefix = prefix if prefix is not None else options.get("prefix", "rowcast")
        if stream is not None and not stream:
            raise ConfigError(f"{self.url}: ?stream= needs a key, e.g. ?stream=rowcast:changes")
        if not prefix:
            raise ConfigError(f"{self.url}: ?prefix= needs a key prefix, e.g. ?prefix=rowcast")
        self.stream = stream  #: the one stream key, or None for one stream per table
        self.prefix = prefix
        self._encoded = encoder(url, options, prefix)
        self.maxlen: int | None = number(url, "maxlen", maxlen, options, None, int)
        self.timeout: float = number(url, "timeout", timeout, options, 10.0)
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError as e:
            raise missing_extra("redis", "the Redis sink", e) from e
        self._redis = redis
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        parts = urlsplit(url)
        try:
            self._client = redis.Redis.from_url(
                urlunsplit(parts._replace(query="")),
                socket_connect_timeout=self.timeout,
                socket_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),  # the relay retries whole batches
            )
        except ValueError as e:
            raise ConfigError(f"malformed Redis URL {self.url}: {e}") from e
        self._streams = _speedups.stream_adder(self._client, self.maxlen, self._route)
        self._closed = False

    def __repr__(self) -> str:
        return f"<RedisSink {self.url!r}{' closed' if self._closed else ''}>"

    def key(self, change: Change) -> str:
        """The stream key `change` is added to."""
        if self.stream is not None:
            return self.stream
        if change.schema:
            return f"{self.prefix}:{change.schema}.{change.table}"
        return f"{self.prefix}:{change.table}"

    def check(self) -> None:
        """PING, the one stream key's type, and the right to XADD (module docstring)."""
        if self._closed:
            raise PermanentSinkError(f"{self!r} is closed")
        key = self.stream if self.stream is not None else f"{self.prefix}:rowcast-check"
        pool = self._client.connection_pool
        try:
            connection: Any = _speedups.redis_connection(pool)
        except self._errors as e:
            raise self._error(e, "cannot connect") from e
        try:
            connection.send_command("PING")
            connection.read_response()
            connection.send_command("TYPE", key)
            kind = connection.read_response()
            if kind not in (b"stream", b"none", "stream", "none"):
                name = kind.decode() if isinstance(kind, bytes) else kind
                raise ConfigError(
                    f"Redis sink {self.url}: key {key!r} holds a {name}, not a stream; "
                    "delete it, or give the sink another ?stream="
                )
            connection.send_command("MULTI")
            connection.read_response()
            connection.send_command("XADD", key, "*", "id", "check")
            try:
                connection.read_response()  # QUEUED, or why it would be refused
            finally:
                connection.send_command("DISCARD")
                connection.read_response()
        except self._errors as e:
            connection.disconnect()
            raise self._error(e, f"checking key {key!r}") from e
        finally:
            pool.release(connection)

    def deliver(self, batch: Batch) -> None:
        """XADD every change of `batch` in one pipeline; return once Redis replied to all.

        Raises `TransientSinkError` when Redis is unreachable or out of memory,
        `PermanentSinkError` when it refuses an entry for good (e.g. the key holds
        another type); entries before the refused one may have been added, and a
        retry adds them again.
        """
        if self._closed:
            raise PermanentSinkError(f"{self!r} is closed")
        entries = self._encoded(batch)  # every id first: a bad change sends nothing
        if not entries:
            return
        try:
            refused = self._streams.add(entries)
        except self._errors as e:
            raise self._error(e, "XADD failed") from e
        if refused is not None:
            index, error = refused
            raise self._error(
                error, f"XADD failed at entry {index + 1} of {len(entries)}"
            ) from error

    def _error(self, error: BaseException, doing: str) -> SinkError:
        """`error` from redis-py as the kind of `SinkError` it is (module docstring)."""
        exceptions = self._redis.exceptions
        message = f"Redis sink {self.url}: {doing}: {error}"
        permanent = (
            exceptions.AuthenticationError,
            exceptions.AuthorizationError,
            exceptions.AuthenticationWrongNumberOfArgsError,
            exceptions.NoPermissionError,
        )
        if isinstance(error, permanent):
            return PermanentSinkError(message, _fix(error))
        transient = (exceptions.OutOfMemoryError, exceptions.ReadOnlyError)
        if (
            isinstance(error, exceptions.ResponseError)
            and not isinstance(error, transient)
            and not str(error).startswith(_PASSING)
        ):
            return PermanentSinkError(message, _fix(error))
        return TransientSinkError(message)

    def _route(self, change: Change) -> tuple[str, str, str]:
        """The stream key, topic and name of `change`'s entry."""
        return self.key(change), change.topic, change.name

    def close(self) -> None:
        """Close the connections; idempotent."""
        if not self._closed:
            self._closed = True
            self._client.close()


# replies to a command that pass: loading, busy with a script, a failing disk, cluster states
_PASSING = ("LOADING", "BUSY", "MISCONF", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "NOREPLICAS")


def _fix(error: BaseException) -> str | None:
    """What to change for a refusal of Redis's, when it is a known one."""
    text = str(error)
    if text.startswith("WRONGTYPE"):
        return "the key holds another type than a stream: delete it or pick another key"
    if text.startswith("NOPERM") or "permission" in text.lower():
        return "allow the user XADD on the sink's keys (ACL SETUSER <user> +xadd ~<prefix>:*)"
    if "password" in text.lower() or "auth" in text.lower():
        return "give the right user and password in the URL (redis://user:password@host)"
    return None


def _parse(url: str) -> dict[str, str]:
    options, _, _ = query(url, "the Redis sink", ("redis", "rediss"), _OPTIONS)
    if not re.fullmatch(r"/?\d*", urlsplit(url).path):
        raise ConfigError(
            f"{masked(url)}: the path is the database number, e.g. redis://localhost:6379/0"
        )
    return options

"""Consume from Redis Streams with a consumer group (``redis://``, ``rediss://``).

Reads what `rowcast.sinks.redis.RedisSink` writes: entries with the fields ``id``
(the change id) and ``body`` (``Change.to_json()``).

URL: ``redis://[[user]:password@]host[:port][/db][?option=value&...]``, options:

``stream``
    the stream key(s) to read (repeat it, or separate with commas), e.g. the sink's
    ``?stream=rowcast:changes``. Each must exist: a missing one is a `ConfigError` that
    lists the streams there are, unless ``create=true``. Without it, every stream
    ``<prefix>:*`` that exists (the sink's per-table streams), looked for again every
    few seconds so new tables are read too.
``create``
    ``true``: create a missing ``stream`` key (empty, with the group), so a consumer
    may start before the relay. Default ``false``: a typo is an error, never a new key.
``prefix``
    the key prefix of per-table streams, default ``rowcast``.
``consumer``
    this consumer's name in the group, default ``<host>-<pid>``. Give a stable name to
    a consumer that is restarted in place: it first re-reads its own pending entries.
``claim_after``
    seconds after which a pending entry of another consumer (one that died) is claimed
    (``XAUTOCLAIM``), default 60. Keep it well above a handler's longest batch.
``timeout``
    seconds to connect and to wait for a reply, default 10.

The group (the `group` argument, ``--group``) is created from the stream's first entry
(``XGROUP CREATE <key> <group> 0``, with ``MKSTREAM`` only under ``create=true``) when
it does not exist, so a new group reads everything the stream still holds. An entry is
acknowledged with ``XACK`` once handled; a parked entry is added to ``<key>:dead`` with
the fields of the original plus ``error``, ``group``, ``consumer``, ``stream`` and
``entry`` (its id in ``<key>``), in one ``MULTI`` with its ``XACK``. Entries stay in the
stream after ``XACK`` (trim it with the sink's ``maxlen``). On a clean stop, this
consumer leaves the group (``XGROUP DELCONSUMER``) when it holds no pending entry.
An entry with the field ``rowcast-replay`` is a dead letter replayed for the group it
names (``rowcast dlq replay``): the other groups acknowledge it unhandled.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .._url import boolean, masked, number, query, unknown_option
from ..backends import missing_extra
from ..errors import ConfigError, SinkError
from .transport import REPLAY, Delivery, decode

__all__ = ["RedisTransport"]

_OPTIONS = ("prefix", "consumer", "claim_after", "timeout", "create")
_RESCAN = 5.0  # seconds between looks for new per-table streams


class RedisTransport:
    """The Redis Streams side of a `rowcast.consume.Consumer` (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        group: str = "rowcast",
        stream: str | Sequence[str] | None = None,
        prefix: str | None = None,
        consumer: str | None = None,
        claim_after: float | None = None,
        timeout: float | None = None,
        create: bool | str | None = None,
    ) -> None:
        self.url = masked(url)
        options, lists, unknown = query(
            url, "this consumer", ("redis", "rediss"), _OPTIONS, lists=("stream",), others=True
        )
        if unknown:
            name, value = unknown[0]
            raise unknown_option(url, name, value, "the Redis consumer", ("stream", *_OPTIONS))
        if not re.fullmatch(r"/?\d*", urlsplit(url).path):
            raise ConfigError(f"{self.url}: the path is the database number, e.g. /0")
        streams = [stream] if isinstance(stream, str) else list(stream or lists.get("stream", []))
        if "stream" in lists and not streams:
            raise ConfigError(f"{self.url}: ?stream= needs a key, e.g. ?stream=rowcast:changes")
        self.streams: list[str] = streams  #: fixed keys; empty: every ``<prefix>:*`` stream
        self.prefix = prefix if prefix is not None else options.get("prefix", "rowcast")
        if not self.prefix:
            raise ConfigError(f"{self.url}: ?prefix= needs a key prefix, e.g. ?prefix=rowcast")
        self.group = group
        self.consumer = (
            consumer or options.get("consumer") or f"{socket.gethostname()}-{os.getpid()}"
        )
        self.claim_after = number(url, "claim_after", claim_after, options, 60.0)
        self.timeout = number(url, "timeout", timeout, options, 10.0)
        self.create = boolean(url, "create", create, options, False)
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError as e:
            raise missing_extra("redis", "the Redis consumer", e) from e
        self._redis = redis
        try:
            self._client = redis.Redis.from_url(
                urlunsplit(urlsplit(url)._replace(query="")),
                socket_connect_timeout=self.timeout,
                socket_timeout=self.timeout + 2,  # above the longest XREADGROUP BLOCK
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError as e:
            raise ConfigError(f"malformed Redis URL {self.url}: {e}") from e
        self._keys: list[str] = []  # streams whose group exists
        self._scanned = 0.0  # time.monotonic() of the last look for streams
        self._own_from: dict[str, str] | None = None  # re-reading our own pending entries
        self._claimed = 0.0  # time.monotonic() of the last XAUTOCLAIM round
        self._claim_from: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"<RedisTransport {self.url!r} group={self.group!r} consumer={self.consumer!r}>"

    # ------------------------------------------------------------ Transport

    def connect(self) -> None:
        try:
            self._client.ping()
        except (self._redis.RedisError, OSError) as e:
            raise SinkError(f"Redis consumer {self.url}: cannot reach the server: {e}") from e
        self._call(self._find_streams)
        self._own_from = {}

    def fetch(self, limit: int, timeout: float) -> list[Delivery]:
        found: list[Delivery] = self._call(self._fetch, limit, timeout)
        return found

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        by_key: dict[str, list[str]] = {}
        for delivery in deliveries:
            key, entry, _ = delivery.token
            by_key.setdefault(key, []).append(entry)

        def send() -> None:
            pipe = self._client.pipeline(transaction=False)
            for key, entries in by_key.items():
                pipe.xack(key, self.group, *entries)
            pipe.execute()

        self._call(send)

    def dead_letter(self, parked: Sequence[tuple[Delivery, str]]) -> None:
        def send() -> None:
            pipe = self._client.pipeline(transaction=True)
            for delivery, error in parked:
                key, entry, fields = delivery.token
                record = {k.decode(errors="replace"): v for k, v in fields.items()}
                record.update(
                    error=error, group=self.group, consumer=self.consumer, stream=key, entry=entry
                )
                pipe.xadd(f"{key}:dead", record)
                pipe.xack(key, self.group, entry)
            pipe.execute()

        self._call(send)

    def release(self, deliveries: Sequence[Delivery]) -> None:
        """Nothing to do: the entries stay pending for this consumer (or a claimer)."""

    def reset(self) -> None:
        self._client.connection_pool.disconnect()
        self._keys = []  # the group may be gone with its stream: make it again
        self._scanned = 0.0
        self._own_from = {}  # what we read and did not ack is pending: read it again

    def close(self) -> None:
        try:
            for key in self._keys:
                pending = self._client.xpending_range(key, self.group, "-", "+", 1, self.consumer)
                if not pending:
                    self._client.xgroup_delconsumer(key, self.group, self.consumer)
        except (self._redis.RedisError, OSError):
            pass  # leaving the group is a courtesy; it does not hold anything up
        self._client.close()

    # ------------------------------------------------------------ the work

    def _call(self, method: Any, *args: Any) -> Any:
        try:
            return method(*args)
        except (self._redis.RedisError, OSError) as e:
            raise SinkError(f"Redis consumer {self.url}, group {self.group!r}: {e}") from e

    def _find_streams(self) -> None:
        self._scanned = time.monotonic()
        if self.streams:
            keys = list(self.streams)
        else:
            keys = sorted(
                key.decode()
                for key in self._client.scan_iter(match=f"{self.prefix}:*", _type="STREAM")
                if not key.endswith(b":dead")
            )
        for key in keys:
            if key in self._keys:
                continue
            if self.streams and not self.create and not self._client.exists(key):
                raise ConfigError(
                    f"Redis consumer {self.url}: no stream {key!r} (there are: "
                    f"{self._existing()}); give ?stream= the key the relay's sink writes to, "
                    f"leave ?stream= out to read every {self.prefix}:* stream, or add "
                    f"create=true to create {key!r}"
                )
            try:
                self._client.xgroup_create(key, self.group, id="0", mkstream=self.create)
            except self._redis.ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise
            self._keys.append(key)

    def _existing(self, most: int = 20) -> str:
        """The stream keys in the database (at most `most` of them), for an error message."""
        keys: list[str] = []
        for key in self._client.scan_iter(_type="STREAM", count=1000):
            name = key.decode(errors="replace")
            if not name.endswith(":dead"):
                keys.append(name)
            if len(keys) > most:
                break
        if not keys:
            return "none"
        shown = ", ".join(repr(k) for k in sorted(keys)[:most])
        return shown + (", ..." if len(keys) > most else "")

    def _fetch(self, limit: int, timeout: float) -> list[Delivery]:
        now = time.monotonic()
        if not self._keys or (not self.streams and now - self._scanned > _RESCAN):
            self._find_streams()
        if not self._keys:
            time.sleep(timeout)
            return []
        if self._own_from is not None:
            found = self._read_own(limit)
            if found:
                return found
        if now - self._claimed > self.claim_after / 4:
            found = self._claim(limit)
            if found:
                return found
            self._claimed = now
        block = max(1, int(timeout * 1000))
        streams: dict[Any, Any] = dict.fromkeys(self._keys, ">")
        reply = self._client.xreadgroup(
            self.group, self.consumer, streams, count=limit, block=block
        )
        return self._deliveries(reply)

    def _read_own(self, limit: int) -> list[Delivery]:
        """Our own pending entries (after a restart under the same name, or a reset)."""
        own = self._own_from
        assert own is not None
        starts: dict[Any, Any] = {key: own.get(key, "0") for key in self._keys}
        reply = self._client.xreadgroup(self.group, self.consumer, starts, count=limit)
        found = self._deliveries(reply)
        if not found:
            self._own_from = None
        for delivery in found:
            key, entry, _ = delivery.token
            own[key] = entry
        return found

    def _claim(self, limit: int) -> list[Delivery]:
        """Entries another consumer read and did not ack within `claim_after` (it died)."""
        found: list[Delivery] = []
        idle = int(self.claim_after * 1000)
        for key in self._keys:
            start = self._claim_from.get(key, "0-0")
            reply = self._client.xautoclaim(
                key, self.group, self.consumer, idle, start_id=start, count=limit - len(found)
            )
            cursor, entries = reply[0], reply[1]
            self._claim_from[key] = cursor.decode() if isinstance(cursor, bytes) else cursor
            found.extend(self._deliveries([[key, entries]]))
            if len(found) >= limit:
                break
        return found

    def _deliveries(self, reply: Any) -> list[Delivery]:
        found: list[Delivery] = []
        others: dict[str, list[str]] = {}  # replayed for another group: acked unhandled
        for key, entries in reply or ():
            name = key.decode() if isinstance(key, bytes) else key
            for entry, fields in entries:
                if fields is None:  # deleted (trimmed) while pending
                    continue
                replay = fields.get(REPLAY.encode())
                if replay is not None and replay.decode() != self.group:
                    others.setdefault(name, []).append(entry.decode())
                    continue
                change_id = fields.get(b"id")
                token = (name, entry.decode(), fields)
                found.append(
                    decode(
                        change_id.decode() if change_id else None,
                        fields.get(b"body", b""),
                        token,
                        0,
                        replay is not None,
                    )
                )
        for name, skipped in others.items():
            self._client.xack(name, self.group, *skipped)
        return found

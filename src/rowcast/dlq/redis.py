"""The dead letters of Redis consumers: streams ``<key>:dead`` (``redis://``, ``rediss://``).

The consumer's own URL serves; its options: ``stream`` (the stream the consumers read:
only its ``<stream>:dead``; without it, every stream ``<prefix>:*:dead``), ``prefix``
(default ``rowcast``), ``group`` (only the dead letters that group parked), ``timeout``.
Each dead entry holds the original's fields (``id``, ``body``...) and ``error``,
``group``, ``consumer``, ``stream`` (where it came from) and ``entry``
(`rowcast.consume.redis`).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .._url import masked, number, query, unknown_option
from ..backends import missing_extra
from ..change import Change
from ..consume.transport import REPLAY
from ..errors import ConfigError, SinkError
from . import DeadLetter, Place

__all__ = ["RedisDeadLetters"]

_OPTIONS = ("stream", "prefix", "group", "timeout", "consumer", "claim_after")  # the consumer's
_MOVED = {b"error", b"group", b"consumer", b"stream", b"entry"}  # what parking added
_PAGE = 500


def _text(value: Any) -> str | None:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _time(entry: str) -> float:
    return int(entry.partition("-")[0]) / 1000


class RedisDeadLetters:
    """The ``<key>:dead`` streams at a Redis URL (see the module docstring)."""

    def __init__(self, url: str, **options: Any) -> None:
        self.url = masked(url)
        given, _, unknown = query(url, "dlq", ("redis", "rediss"), _OPTIONS, others=True)
        if unknown:
            name, value = unknown[0]
            raise unknown_option(url, name, value, "a Redis dead-letter URL", _OPTIONS)
        given.update({k: str(v) for k, v in options.items() if v is not None})
        if not re.fullmatch(r"/?\d*", urlsplit(url).path):
            raise ConfigError(f"{self.url}: the path is the database number, e.g. /0")
        self.stream = given.get("stream")
        self.prefix = given.get("prefix", "rowcast")
        self.group = given.get("group")
        try:
            import redis
        except ImportError as e:
            raise missing_extra("redis", "Redis dead letters", e) from e
        self._errors = (redis.RedisError, OSError)
        timeout = number(url, "timeout", None, given, 10.0)
        try:
            self._client = redis.Redis.from_url(
                urlunsplit(urlsplit(url)._replace(query="")), socket_connect_timeout=timeout
            )
        except ValueError as e:
            raise ConfigError(f"malformed Redis URL {self.url}: {e}") from e

    def _call(self, method: Any, *args: Any) -> Any:
        try:
            return method(*args)
        except self._errors as e:
            raise SinkError(f"Redis dead letters at {self.url}: {e}") from e

    @property
    def looked_at(self) -> str:
        """Where this looked for dead letters: said when it found none."""
        if self.stream:
            return f"no stream {self.stream}:dead"
        return (
            f"no stream matches {self.prefix}:*:dead (a consumer given ?stream=KEY parks "
            "in KEY:dead: add ?stream=KEY to the URL)"
        )

    def _keys(self) -> list[str]:
        if self.stream:
            key = f"{self.stream}:dead"
            return [key] if self._client.exists(key) else []
        found = self._client.scan_iter(match=f"{self.prefix}:*:dead", _type="STREAM")
        return sorted(key.decode() for key in found)

    def _entries(self, key: str, limit: int | None = None) -> list[tuple[str, dict[bytes, Any]]]:
        """The entries of dead stream `key` (of `group`, when given), oldest first."""
        found: list[tuple[str, dict[bytes, Any]]] = []
        start = "-"
        while limit is None or len(found) < limit:
            page: Any = self._client.xrange(key, start, "+", count=_PAGE)
            for entry, fields in page:
                if self.group is None or _text(fields.get(b"group")) == self.group:
                    found.append((entry.decode(), fields))
            if len(page) < _PAGE:
                break
            start = "(" + page[-1][0].decode()
        return found if limit is None else found[:limit]

    def places(self) -> list[Place]:
        def look() -> list[Place]:
            places = []
            for key in self._keys():
                entries = self._entries(key)
                if not entries:  # emptied by a replay or a drop (the key stays)
                    continue
                times = [_time(entry) for entry, _ in entries]
                places.append(
                    Place(key, len(entries), min(times, default=None), max(times, default=None))
                )
            return places

        found: list[Place] = self._call(look)
        return found

    def read(self, limit: int | None = None) -> list[DeadLetter]:
        def look() -> list[DeadLetter]:
            letters: list[DeadLetter] = []
            for key in self._keys():
                left = None if limit is None else limit - len(letters)
                if left is not None and left <= 0:
                    break
                letters.extend(
                    _letter(key, entry, fields) for entry, fields in self._entries(key, left)
                )
            return letters

        found: list[DeadLetter] = self._call(look)
        return found

    def replay(self, to: str | None = None) -> int:
        if to is not None:
            raise ConfigError(
                "a consumer's dead letters go back to their own stream: leave out --to"
            )

        def send() -> int:
            sent = 0
            for key in self._keys():
                for entry, fields in self._entries(key):
                    origin = _text(fields.get(b"stream")) or key.removesuffix(":dead")
                    group = _text(fields.get(b"group")) or ""
                    record: Any = {k: v for k, v in fields.items() if k not in _MOVED}
                    record[REPLAY.encode()] = group
                    pipe = self._client.pipeline(transaction=True)
                    pipe.xadd(origin, record)
                    pipe.xdel(key, entry)
                    pipe.execute()
                    sent += 1
            return sent

        count: int = self._call(send)
        return count

    def drop(self) -> int:
        def delete() -> int:
            dropped = 0
            for key in self._keys():
                entries = [entry for entry, _ in self._entries(key)]
                for start in range(0, len(entries), _PAGE):
                    dropped += int(self._client.xdel(key, *entries[start : start + _PAGE]))
            return dropped

        count: int = self._call(delete)
        return count

    def close(self) -> None:
        self._client.close()


def _letter(key: str, entry: str, fields: dict[bytes, Any]) -> DeadLetter:
    body = fields.get(b"body")
    try:
        change = Change.from_json(body) if body is not None else None
    except (ValueError, TypeError):
        change = None
    return DeadLetter(
        place=key,
        handle=entry,
        at=_time(entry),
        change_id=_text(fields.get(b"id")),
        change=change,
        why=_text(fields.get(b"error")) or "",
        group=_text(fields.get(b"group")),
        origin=_text(fields.get(b"stream")),
    )

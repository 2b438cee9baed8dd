"""`RedisCheckpoint`: a checkpoint in a Redis hash (``redis://``, ``rediss://``)."""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .._url import check_query, masked
from ..backends import missing_extra
from ..errors import ConfigError, StoreError
from .base import BaseCheckpoint, parse_report

__all__ = ["REPORT_PREFIX", "RedisCheckpoint"]

REPORT_PREFIX = "rowcast:report:"  #: + the name: the key of a report (a JSON string)


class RedisCheckpoint(BaseCheckpoint):
    """A Redis hash ``rowcast:checkpoint:<name>`` with ``position`` and ``updated_at``.

    Its report (`rowcast.checkpoint.report`) is the string key
    ``rowcast:report:<name>``. A save is durable only as far as the server
    persists (RDB snapshots, AOF with ``appendfsync``): a Redis without
    persistence forgets every checkpoint when it restarts.
    """

    def __init__(self, url: str, name: str = "default") -> None:
        super().__init__(url, name)
        try:
            import redis
        except ImportError as e:
            raise missing_extra("redis", "a Redis checkpoint", e) from e
        self.key = f"rowcast:checkpoint:{name}"
        self._errors = redis.RedisError
        pairs = parse_qsl(urlsplit(url).query, keep_blank_values=True)
        check_query(url, pairs, "redis", "a Redis checkpoint", ("name",))
        try:
            if not re.fullmatch(r"/?\d*", urlsplit(url).path):  # redis-py would use db 0
                raise ValueError("the path is the database number: redis://host:6379/0")
            self._client = redis.Redis.from_url(
                _without_query_name(url), decode_responses=True, socket_connect_timeout=10
            )
        except ValueError as e:
            raise ConfigError(f"malformed Redis URL {self.url}: {e}") from e
        try:
            self._client.ping()
        except self._errors as e:
            self._client.close()
            self._fail("connect", e)

    def _load(self) -> str | None:
        try:
            record: dict[str, str] = self._client.hgetall(self.key)  # type: ignore[assignment]
        except self._errors as e:
            self._fail("load", e)
        if not record:
            return None
        position = record.get("position")
        if not position:
            raise StoreError(
                f"checkpoint {self.name!r} at {self.url}: key {self.key!r} has no position "
                f"(fields {sorted(record)}); delete the key to start over"
            )
        return position

    def _save(self, position: str) -> None:
        try:
            self._client.hset(self.key, mapping={"position": position, "updated_at": time.time()})
        except self._errors as e:
            self._fail("save", e)

    def _save_report(self, text: str) -> None:
        try:
            self._client.set(f"{REPORT_PREFIX}{self.name}", text)
        except self._errors as e:
            self._fail("saving the report", e)

    @classmethod
    def read_reports(cls, url: str, name: str | None = None) -> list[dict[str, Any]]:
        """The reports in keys ``rowcast:report:*`` at `url` (`name`'s only, when given)."""
        try:
            import redis
        except ImportError as e:
            raise missing_extra("redis", "a Redis checkpoint", e) from e
        shown = masked(url)
        try:
            client = redis.Redis.from_url(_without_query_name(url), socket_connect_timeout=10)
        except ValueError as e:
            raise ConfigError(f"malformed Redis URL {shown}: {e}") from e
        try:
            if name is not None:
                keys = [f"{REPORT_PREFIX}{name}".encode()]
            else:
                keys = sorted(client.scan_iter(match=f"{REPORT_PREFIX}*", _type="string"))
            values = client.mget(keys) if keys else []
        except redis.RedisError as e:
            raise StoreError(f"reading reports at {shown} failed: {e}") from e
        finally:
            client.close()
        return [
            parse_report(value, f"{shown} key {key.decode(errors='replace')!r}")
            for key, value in zip(keys, values, strict=True)
            if value is not None
        ]

    def _close(self) -> None:
        self._client.close()


def _without_query_name(url: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "name"]
    return urlunsplit(parts._replace(query=urlencode(query)))

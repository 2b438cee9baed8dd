"""The dead letters of NATS consumers: the JetStream stream ``<stream>_dead`` (``nats://``).

The consumer's own URL serves; its options: ``stream`` (default ``rowcast``),
``dead_stream`` (default ``<stream>_dead``), ``group`` (only the dead letters that group
parked), ``timeout``. A dead letter is a message on ``<dead_stream>.<group>.<its
subject>`` with the original body and the headers ``Rowcast-Error``, ``Rowcast-Group``,
``Rowcast-Subject`` and ``Nats-Msg-Id: <change id>:<group>`` (`rowcast.consume.nats`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from .._url import masked, number, query, unknown_option
from ..backends import missing_extra
from ..change import Change
from ..errors import ConfigError, SinkError
from ..sinks._nats import connect
from . import DeadLetter, Place

__all__ = ["NatsDeadLetters"]

log = logging.getLogger(__name__)
T = TypeVar("T")

_OPTIONS = ("stream", "dead_stream", "group", "timeout", "prefix", "subject", "ack_wait")


def _time(value: Any) -> float | None:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    if isinstance(value, str) and value:
        try:  # RFC 3339 with nanoseconds: keep microseconds
            head, _, rest = value.rstrip("Z").partition(".")
            return dt.datetime.fromisoformat(f"{head}.{rest[:6] or '0'}+00:00").timestamp()
        except ValueError:
            return None
    return None


class NatsDeadLetters:
    """The dead-letter stream at a NATS URL (see the module docstring)."""

    def __init__(self, url: str, **options: Any) -> None:
        self.url = masked(url)
        given, _, unknown = query(url, "dlq", ("nats", "tls"), _OPTIONS, others=True)
        if unknown:
            name, value = unknown[0]
            raise unknown_option(url, name, value, "a NATS dead-letter URL", _OPTIONS)
        given.update({k: str(v) for k, v in options.items() if v is not None})
        self.stream = given.get("stream", "rowcast")
        self.dead_stream = given.get("dead_stream", f"{self.stream}_dead")
        self.group = given.get("group")
        self.timeout = number(url, "timeout", None, given, 10.0)
        try:
            import nats
            import nats.errors
            import nats.js.errors
        except ImportError as e:
            raise missing_extra("nats", "NATS dead letters", e) from e
        self._nats = nats
        self._server = urlunsplit(urlsplit(url)._replace(query=""))

    @property
    def _filter(self) -> str:
        return f"{self.dead_stream}.{self.group}.>" if self.group else f"{self.dead_stream}.>"

    def _run(self, work: Callable[[Any], Awaitable[T]]) -> T:
        """``work(jetstream)`` on a connection of its own, in an event loop of its own."""

        async def main() -> T:
            nc = await connect(
                self._nats,
                self._server,
                name="rowcast-dlq",
                who=f"NATS dead letters {self.url}",
                timeout=self.timeout,
                log=log,
            )
            try:
                return await work(nc.jetstream(timeout=self.timeout))
            finally:
                await nc.close()

        try:
            return asyncio.run(main())
        except SinkError:
            raise
        except (self._nats.errors.Error, OSError, TimeoutError) as e:
            raise SinkError(
                f"NATS dead letters {self.url}, stream {self.dead_stream!r}: {e!r}"
            ) from e

    async def _messages(self, js: Any, limit: int | None = None) -> list[Any]:
        """The dead stream's messages (of `group`, when given), oldest first."""
        try:
            info = await js.stream_info(self.dead_stream)
        except self._nats.js.errors.NotFoundError:
            return []
        found: list[Any] = []
        seq = info.state.first_seq
        while seq <= info.state.last_seq and (limit is None or len(found) < limit):
            try:
                msg = await js.get_msg(self.dead_stream, seq=seq, subject=self._filter, next=True)
            except self._nats.js.errors.NotFoundError:
                break
            found.append(msg)
            seq = msg.seq + 1
        return found

    def places(self) -> list[Place]:
        async def look(js: Any) -> list[Place]:
            messages = await self._messages(js)
            if not messages:
                return []
            times = [t for t in (_time(m.time) for m in messages) if t is not None]
            return [
                Place(
                    self.dead_stream,
                    len(messages),
                    min(times, default=None),
                    max(times, default=None),
                )
            ]

        return self._run(look)

    def read(self, limit: int | None = None) -> list[DeadLetter]:
        async def look(js: Any) -> list[DeadLetter]:
            return [self._letter(msg) for msg in await self._messages(js, limit)]

        return self._run(look)

    def _letter(self, msg: Any) -> DeadLetter:
        headers = msg.headers or {}
        group = headers.get("Rowcast-Group")
        change_id = headers.get("Nats-Msg-Id")
        if change_id and group and change_id.endswith(f":{group}"):
            change_id = change_id[: -len(group) - 1]
        try:
            change = Change.from_json(msg.data) if msg.data else None
        except (ValueError, TypeError):
            change = None
        return DeadLetter(
            place=self.dead_stream,
            handle=str(msg.seq),
            at=_time(msg.time),
            change_id=change_id,
            change=change,
            why=headers.get("Rowcast-Error", ""),
            group=group,
            origin=headers.get("Rowcast-Subject"),
        )

    def replay(self, to: str | None = None) -> int:
        if to is not None:
            raise ConfigError(
                "a consumer's dead letters go back to their own subject: leave out --to"
            )

        async def send(js: Any) -> int:
            sent = 0
            for msg in await self._messages(js):
                letter = self._letter(msg)
                if not letter.origin:
                    continue  # no subject to send it back to: left where it is
                headers = {
                    "Rowcast-Replay": letter.group or "",
                    "Nats-Msg-Id": f"{letter.change_id or ''}:replay:{uuid.uuid4().hex}",
                }
                if letter.change_id:
                    headers["Rowcast-Change-Id"] = letter.change_id
                await js.publish(letter.origin, msg.data, stream=self.stream, headers=headers)
                await js.delete_msg(self.dead_stream, msg.seq)
                sent += 1
            return sent

        return self._run(send)

    def drop(self) -> int:
        async def delete(js: Any) -> int:
            messages = await self._messages(js)
            for msg in messages:
                await js.delete_msg(self.dead_stream, msg.seq)
            return len(messages)

        return self._run(delete)

    def close(self) -> None:
        """Nothing held: each call has a connection of its own."""

"""The dead letters of RabbitMQ consumers: the queue ``<queue>.dead`` (``amqp://``).

The consumer's own URL serves; its options: ``queue`` (the consumers' queue; default
``<exchange>.<group>``), ``exchange`` (default ``rowcast``), ``group`` (default
``rowcast``), ``timeout``. AMQP cannot list queues, so one URL names one queue. A dead
letter is a message of ``<queue>.dead`` with the original's body and properties and the
headers ``x-rowcast-error``, ``x-rowcast-group`` and ``x-rowcast-routing-key``
(`rowcast.consume.rabbitmq`). Reading one takes it with ``basic.get`` and gives it back
(``basic.nack`` with requeue), which counts as a redelivery in RabbitMQ's eyes but keeps
it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

from .._url import masked, number, query
from ..backends import missing_extra
from ..change import Change
from ..consume.transport import REPLAY
from ..errors import ConfigError, SinkError
from . import DeadLetter, Place

__all__ = ["RabbitMQDeadLetters"]

T = TypeVar("T")
_OPTIONS = ("queue", "exchange", "group", "timeout", "bind", "prefetch")


class RabbitMQDeadLetters:
    """The dead-letter queue of one consumers' queue (see the module docstring)."""

    def __init__(self, url: str, **options: Any) -> None:
        self.url = masked(url)
        given, _, rest = query(url, "dlq", ("amqp", "amqps"), _OPTIONS, others=True)
        given.update({k: str(v) for k, v in options.items() if v is not None})
        exchange = given.get("exchange", "rowcast")
        self.group = given.get("group", "rowcast")
        self.queue = given.get("queue", f"{exchange}.{self.group}")
        self.dead_queue = f"{self.queue}.dead"
        self.timeout = number(url, "timeout", None, given, 10.0)
        try:
            import pika
            import pika.exceptions
        except ImportError as e:
            raise missing_extra("rabbitmq", "RabbitMQ dead letters", e) from e
        self._pika = pika
        try:
            self._parameters = pika.URLParameters(
                urlunsplit(urlsplit(url)._replace(query=urlencode(rest)))
            )
        except ValueError as e:
            raise ConfigError(f"malformed AMQP URL {self.url}: {e}") from e
        self._parameters.socket_timeout = self.timeout
        self._parameters.connection_attempts = 1

    def _run(self, work: Callable[[Any], T]) -> T:
        """``work(channel)`` on a connection of its own."""
        pika = self._pika
        try:
            connection = pika.BlockingConnection(self._parameters)
        except (pika.exceptions.AMQPError, OSError) as e:
            raise SinkError(f"RabbitMQ dead letters {self.url}: cannot connect: {e!r}") from e
        try:
            return work(connection.channel())
        except pika.exceptions.ChannelClosedByBroker as e:
            if e.reply_code == 404:  # no such queue: no dead letters
                return work(None)
            raise SinkError(f"RabbitMQ dead letters {self.url}: {e!r}") from e
        except (pika.exceptions.AMQPError, OSError) as e:
            raise SinkError(f"RabbitMQ dead letters {self.url}: {e!r}") from e
        finally:
            if connection.is_open:
                connection.close()

    def _count(self, channel: Any) -> int:
        if channel is None:
            return 0
        found = channel.queue_declare(self.dead_queue, passive=True)
        return int(found.method.message_count)

    def places(self) -> list[Place]:
        count = self._run(self._count)
        return [Place(self.dead_queue, count)] if count else []

    def _take(self, channel: Any, limit: int | None, keep: bool) -> list[tuple[Any, Any, bytes]]:
        """Up to `limit` messages of the dead queue (each given back when `keep`)."""
        taken = []
        count = self._count(channel)
        for _ in range(count if limit is None else min(count, limit)):
            method, properties, body = channel.basic_get(self.dead_queue, auto_ack=False)
            if method is None:
                break
            taken.append((method, properties, body))
        if keep and taken:
            channel.basic_nack(taken[-1][0].delivery_tag, multiple=True, requeue=True)
        return taken

    def read(self, limit: int | None = None) -> list[DeadLetter]:
        def look(channel: Any) -> list[DeadLetter]:
            if channel is None:
                return []
            return [self._letter(m, p, b) for m, p, b in self._take(channel, limit, keep=True)]

        return self._run(look)

    def _letter(self, method: Any, properties: Any, body: bytes) -> DeadLetter:
        headers = properties.headers or {}
        try:
            change = Change.from_json(body)
        except (ValueError, TypeError):
            change = None

        def text(value: Any) -> str | None:
            return value.decode(errors="replace") if isinstance(value, bytes) else value

        return DeadLetter(
            place=self.dead_queue,
            handle=str(method.delivery_tag),
            at=float(properties.timestamp) if properties.timestamp else None,
            change_id=properties.message_id,
            change=change,
            why=text(headers.get("x-rowcast-error")) or "",
            group=text(headers.get("x-rowcast-group")),
            origin=text(headers.get("x-rowcast-routing-key")),
        )

    def replay(self, to: str | None = None) -> int:
        if to is not None:
            raise ConfigError(
                "a consumer's dead letters go back to their own queue: leave out --to"
            )

        def send(channel: Any) -> int:
            if channel is None:
                return 0
            channel.confirm_delivery()
            sent = 0
            for method, properties, body in self._take(channel, None, keep=False):
                headers = {
                    k: v
                    for k, v in (properties.headers or {}).items()
                    if not k.startswith("x-rowcast-")
                }
                headers[REPLAY] = self.group
                properties.headers = headers
                properties.timestamp = int(time.time())
                channel.basic_publish("", self.queue, body, properties, mandatory=True)
                channel.basic_ack(method.delivery_tag)
                sent += 1
            return sent

        return self._run(send)

    def drop(self) -> int:
        def purge(channel: Any) -> int:
            if channel is None:
                return 0
            return int(channel.queue_purge(self.dead_queue).method.message_count)

        return self._run(purge)

    def close(self) -> None:
        """Nothing held: each call has a connection of its own."""

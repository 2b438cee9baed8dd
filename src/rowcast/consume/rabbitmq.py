"""Consume from RabbitMQ: a durable queue bound to the topic exchange (``amqp://``).

Reads what `rowcast.sinks.rabbitmq.RabbitMQSink` publishes: body ``Change.to_json()``,
the change id as ``message_id``, routing key ``<schema>.<table>.<action>``.

URL: ``amqp://[user:password@]host[:port][/vhost][?option=value&...]`` (``amqps://``
for TLS), rowcast's options:

``exchange``
    the sink's topic exchange, default ``rowcast``.
``queue``
    the durable queue, default ``<exchange>.<group>``. It must exist: a missing one is
    a `ConfigError` (with the fix), unless ``create=true``.
``create``
    ``true``: declare the exchange (durable topic) and the queue when missing, and bind
    the queue with ``bind``. Default ``false``: a typo in ``queue`` is an error, never
    a new queue. Start the first consumer of a group with ``create=true`` (or declare
    the queue) before the relay publishes: the sink's messages reach only queues bound
    at the time.
``bind``
    routing keys to bind the queue with (repeat, or separate with commas), e.g.
    ``shop.orders.*``; default ``#`` (every change) for a queue ``create=true`` makes.
    Given for a queue that exists, its keys are added to the queue's bindings.
``prefetch``
    unacknowledged messages the broker sends ahead (``basic.qos``), default 2000.
``timeout``
    seconds to connect and for socket reads and writes, default 10.

Every other query parameter is pika's (``heartbeat``, ...). A parked message is
published, with publisher confirms, to the durable direct exchange
``<exchange>.dead`` with the queue's name as routing key, which reaches the durable
queue ``<queue>.dead`` (both declared when the first message is parked); it keeps
the original's body and properties, plus the headers
``x-rowcast-error``, ``x-rowcast-group`` and ``x-rowcast-routing-key``. Then the
original is acked. Messages not acked when the connection closes (a crash, a stop)
go back to the queue, in their order. ``rowcast dlq replay`` publishes dead letters
straight to their group's queue, with the header ``rowcast-replay``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from .._url import boolean, check_query, masked, number, query
from ..backends import missing_extra
from ..errors import ConfigError, SinkError
from .transport import REPLAY, Delivery, decode

__all__ = ["RabbitMQTransport"]

log = logging.getLogger(__name__)

_OPTIONS = ("exchange", "queue", "prefetch", "timeout", "create")
_NOT_FOUND = 404


class RabbitMQTransport:
    """The RabbitMQ side of a `rowcast.consume.Consumer` (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        group: str = "rowcast",
        exchange: str | None = None,
        queue: str | None = None,
        bind: str | Sequence[str] | None = None,
        prefetch: int | None = None,
        timeout: float | None = None,
        create: bool | str | None = None,
    ) -> None:
        self.url = masked(url)
        options, lists, rest = query(
            url, "this consumer", ("amqp", "amqps"), _OPTIONS, lists=("bind",), others=True
        )
        self.exchange: str = exchange or options.get("exchange", "rowcast")
        self.queue: str = queue or options.get("queue", f"{self.exchange}.{group}")
        keys = [bind] if isinstance(bind, str) else list(bind or lists.get("bind", []))
        self.bindings: list[str] = keys or ["#"]
        self._bind_given = bool(keys)  # bind an existing queue only when asked to
        self.create = boolean(url, "create", create, options, False)
        self.group = group
        self.prefetch = int(number(url, "prefetch", prefetch, options, 2000))
        self.timeout = number(url, "timeout", timeout, options, 10.0)
        for what, name in (("exchange", self.exchange), ("queue", self.queue)):
            if len(name.encode()) > 250:
                raise ConfigError(f"{self.url}: the {what} name is too long: {name!r}")
        try:
            import pika
            import pika.exceptions
        except ImportError as e:
            raise missing_extra("rabbitmq", "the RabbitMQ consumer", e) from e
        self._pika = pika
        self._errors = (pika.exceptions.AMQPError, OSError)
        check_query(url, rest, "rabbitmq", "the RabbitMQ consumer", ("bind", *_OPTIONS))
        pika_url = urlunsplit(urlsplit(url)._replace(query=urlencode(rest)))
        try:
            self._parameters = pika.URLParameters(pika_url)
        except ValueError as e:
            raise ConfigError(
                f"malformed AMQP URL {self.url}: {e} (rowcast's own options: "
                + ", ".join(("bind", *_OPTIONS))
                + "; the others are pika's)"
            ) from e
        given = {name for name, _ in rest}
        for name in ("socket_timeout", "stack_timeout", "blocked_connection_timeout"):
            if name not in given:
                setattr(self._parameters, name, self.timeout)
        if "connection_attempts" not in given:
            self._parameters.connection_attempts = 1
        self._parameters.client_properties = {"connection_name": f"rowcast consumer {self.queue}"}
        self._connection: Any = None
        self._channel: Any = None
        self._dead: Any = None  # a second channel, in confirm mode, for dead letters
        self._dead_ready = False  # the dead-letter exchange and queue are declared
        self._buffer: list[Delivery] = []
        self._generation = 0

    def __repr__(self) -> str:
        return f"<RabbitMQTransport {self.url!r} queue={self.queue!r}>"

    @property
    def dead_queue(self) -> str:
        """The queue parked messages go to."""
        return f"{self.queue}.dead"

    # ------------------------------------------------------------ Transport

    def connect(self) -> None:
        self._call(self._connect)

    def fetch(self, limit: int, timeout: float) -> list[Delivery]:
        def take() -> list[Delivery]:
            if self._connection is None:
                self._connect()
            if not self._buffer:
                self._connection.process_data_events(time_limit=timeout)
            buffer = self._buffer  # the list on_message appends to: cut it in place
            found = buffer[:limit]
            del buffer[:limit]
            return found

        found: list[Delivery] = self._call(take)
        return found

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        def send() -> None:
            channel, generation = self._channel, self._generation
            if channel is None:
                return  # an older connection's messages: the broker requeued them
            for delivery in deliveries:
                if delivery.generation == generation:
                    channel._impl.basic_ack(delivery.token[0])  # buffered: one flush below
            channel._flush_output()

        self._call(send)

    def dead_letter(self, parked: Sequence[tuple[Delivery, str]]) -> None:
        def send() -> None:
            if self._connection is None:
                self._connect()
            generation = self._generation
            if not self._dead_ready:
                self._declare_dead()
            for delivery, error in parked:
                tag, routing_key, properties, body = delivery.token
                headers = dict(properties.headers or {})
                headers.update(
                    {
                        "x-rowcast-error": error,
                        "x-rowcast-group": self.group,
                        "x-rowcast-routing-key": routing_key,
                    }
                )
                properties.headers = headers
                properties.delivery_mode = 2
                self._dead.basic_publish(
                    f"{self.exchange}.dead", self.queue, body, properties, mandatory=True
                )
                if delivery.generation == generation:
                    self._channel.basic_ack(tag)

        self._call(send)

    def release(self, deliveries: Sequence[Delivery]) -> None:
        """Nothing to do: unacked messages go back to the queue when the connection closes."""

    def reset(self) -> None:
        self._drop()

    def close(self) -> None:
        self._drop()

    # ------------------------------------------------------------ the work

    def _call(self, method: Any) -> Any:
        try:
            return method()
        except self._errors as e:
            self._drop()
            raise SinkError(f"RabbitMQ consumer {self.url}, queue {self.queue!r}: {e!r}") from e

    def _connect(self) -> None:
        self._drop()
        self._connection = self._pika.BlockingConnection(self._parameters)
        self._generation += 1
        channel = self._connection.channel()
        if self.create:
            channel.exchange_declare(self.exchange, "topic", durable=True)
            channel.queue_declare(self.queue, durable=True)
        else:
            channel = self._existing(channel)
        if self.create or self._bind_given:
            for key in self.bindings:
                channel.queue_bind(self.queue, self.exchange, routing_key=key)
        channel.basic_qos(prefetch_count=self.prefetch)
        generation = self._generation
        buffer = self._buffer = []

        def on_message(_channel: Any, method: Any, properties: Any, body: bytes) -> None:
            token = (method.delivery_tag, method.routing_key, properties, body)
            replay = (properties.headers or {}).get(REPLAY) is not None
            buffer.append(decode(properties.message_id, body, token, generation, replay))

        channel.basic_consume(self.queue, on_message, auto_ack=False)
        dead = self._connection.channel()
        dead.confirm_delivery()
        self._channel, self._dead = channel, dead

    def _existing(self, channel: Any) -> Any:
        """`channel`, once the queue (and, to bind it, the exchange) is known to exist; a
        passive declare that the broker refuses closes the channel: a `ConfigError`."""
        closed = self._pika.exceptions.ChannelClosedByBroker
        vhost = self._parameters.virtual_host
        try:
            channel.queue_declare(self.queue, passive=True)
        except closed as e:
            if e.reply_code != _NOT_FOUND:
                raise
            raise ConfigError(
                f"RabbitMQ consumer {self.url}: vhost {vhost!r} has no queue {self.queue!r}; "
                "give ?queue= the queue to read (rabbitmqctl list_queues lists them), or add "
                f"create=true to declare it and bind it to exchange {self.exchange!r} with "
                + ", ".join(self.bindings)
            ) from None
        if self._bind_given:
            try:
                channel.exchange_declare(self.exchange, passive=True)
            except closed as e:
                if e.reply_code != _NOT_FOUND:
                    raise
                raise ConfigError(
                    f"RabbitMQ consumer {self.url}: vhost {vhost!r} has no exchange "
                    f"{self.exchange!r} to bind queue {self.queue!r} to; give ?exchange= the "
                    "relay's sink's exchange, or add create=true to declare it"
                ) from None
        return channel

    def _declare_dead(self) -> None:
        """The dead-letter exchange and queue, declared the first time one is needed."""
        channel = self._dead
        channel.exchange_declare(f"{self.exchange}.dead", "direct", durable=True)
        channel.queue_declare(self.dead_queue, durable=True)
        channel.queue_bind(self.dead_queue, f"{self.exchange}.dead", routing_key=self.queue)
        self._dead_ready = True

    def _drop(self) -> None:
        connection, self._connection, self._channel, self._dead = (
            self._connection,
            None,
            None,
            None,
        )
        self._buffer = []
        self._dead_ready = False
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception as e:  # a broken connection: nothing left to close
                log.debug("closing %s: %r", self.url, e)

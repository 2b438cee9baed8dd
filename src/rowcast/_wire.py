"""Commands written in brokers' wire protocols, for `rowcast._speedups`.

Private. The two ways each of `rowcast._speedups`'s broker tricks is done: the
plain one through the client library's public API, and the one that writes the
protocol's bytes by hand on the library's connection (which connects,
authenticates and parses replies).
"""

from __future__ import annotations

import functools
import inspect
import struct
from collections.abc import Callable, Sequence
from typing import Any, Protocol

__all__ = [
    "AcksByClient",
    "AcksByHand",
    "AmqpByHand",
    "AmqpByPika",
    "AmqpMessage",
    "AmqpPublisher",
    "JetStreamAcks",
    "JetStreamByClient",
    "JetStreamByHand",
    "JetStreamPublisher",
    "Packed",
    "Pipelined",
    "StreamAdder",
    "redis_connection",
]

Route = Callable[[Any], tuple[str, str, str]]


class StreamAdder(Protocol):
    """Adds the entries of a batch to Redis Streams (see `pure.stream_adder`)."""

    def add(self, entries: Sequence[tuple[str, Any, str]]) -> tuple[int, BaseException] | None:
        """XADD every (id, change, body) in order; the first refused entry, if any.

        Returns None when Redis added them all, ``(index, error)`` for the first
        entry it refused (it still ran the others); raises `redis.RedisError` or
        `OSError` when the connection failed (nothing is known of what was added).
        """
        ...


class Pipelined:
    """redis-py's own pipeline of XADD commands."""

    def __init__(self, client: Any, maxlen: int | None, route: Route) -> None:
        import redis

        self._client, self._maxlen, self._route = client, maxlen, route
        self._refused: type[BaseException] = redis.ResponseError

    def add(self, entries: Sequence[tuple[str, Any, str]]) -> tuple[int, BaseException] | None:
        pipeline = self._client.pipeline(transaction=False)
        for change_id, change, body in entries:
            key, topic, name = self._route(change)
            fields = {"id": change_id, "topic": topic, "name": name, "body": body}
            pipeline.xadd(key, fields, maxlen=self._maxlen, approximate=True)
        replies = pipeline.execute(raise_on_error=False)
        for index, reply in enumerate(replies):
            if isinstance(reply, self._refused):
                return index, reply
        return None


class Packed:
    """XADD commands written in the Redis protocol here, sent and read on one of
    redis-py's connections (which connects, authenticates and parses replies)."""

    def __init__(self, client: Any, maxlen: int | None, route: Route) -> None:
        import redis

        self._client, self._maxlen, self._route = client, maxlen, route
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._refused: type[BaseException] = redis.ResponseError
        # (schema, table, action) -> the XADD up to the id's value, and from "topic" to "body"
        self._parts: dict[tuple[str | None, str, str], tuple[bytes, bytes]] = {}

    def add(self, entries: Sequence[tuple[str, Any, str]]) -> tuple[int, BaseException] | None:
        parts, commands = self._parts, []
        for change_id, change, body in entries:
            known = parts.get((change.schema, change.table, change.action))
            if known is None:
                known = self._command_parts(change)
            head, middle = known
            data = body.encode()
            commands.append(
                b"%s%s\r\n%s$%d\r\n%s\r\n" % (head, change_id.encode(), middle, len(data), data)
            )
        return self._execute(b"".join(commands), len(entries))

    def _command_parts(self, change: Any) -> tuple[bytes, bytes]:
        """The bytes of an XADD of `change` before its id's value, and between id and body."""
        key, topic, name = self._route(change)
        trim = [] if self._maxlen is None else [b"MAXLEN", b"~", b"%d" % self._maxlen]
        before = [b"XADD", key.encode(), *trim, b"*", b"id"]
        between = [b"topic", topic.encode(), b"name", name.encode(), b"body"]
        head = b"*%d\r\n%s$36\r\n" % (len(before) + 7, _bulk(before))  # a UUID: 36 characters
        parts = self._parts[(change.schema, change.table, change.action)] = (head, _bulk(between))
        return parts

    def _execute(self, commands: bytes, count: int) -> tuple[int, BaseException] | None:
        """Send `count` packed commands at once and read every reply, refusals included."""
        pool = self._client.connection_pool
        connection = redis_connection(pool)
        refused: tuple[int, BaseException] | None = None
        in_step = False  # every reply read: the connection can serve the next batch
        try:
            connection.send_packed_command([commands])  # a list: one sendall
            for index in range(count):
                try:
                    connection.read_response()
                except self._refused as e:  # a reply of its own: read on
                    refused = refused or (index, e)
            in_step = True
        finally:
            if not in_step:
                connection.disconnect()
            pool.release(connection)
        return refused


def redis_connection(pool: Any) -> Any:
    """A connection from `pool`: redis-py before 5.3 needs a command name, 5.3+ deprecates it."""
    pool_class: Any = type(pool)
    if _needs_command_name(pool_class):
        return pool.get_connection("XADD")
    return pool.get_connection()


@functools.cache
def _needs_command_name(pool_class: Any) -> bool:
    parameter = inspect.signature(pool_class.get_connection).parameters.get("command_name")
    return parameter is not None and parameter.default is inspect.Parameter.empty


def _bulk(arguments: list[bytes]) -> bytes:
    """`arguments` as Redis protocol bulk strings."""
    return b"".join(b"$%d\r\n%s\r\n" % (len(argument), argument) for argument in arguments)


class JetStreamPublisher(Protocol):
    """Publishes a batch to JetStream on a nats-py connection (see `JetStreamByClient`)."""

    async def publish(self, nc: Any, messages: Sequence[tuple[str, str, bytes, str]]) -> None:
        """Publish every (subject, reply subject, body, message id), in order."""
        ...


class JetStreamByClient:
    """nats-py's own ``publish``, one message at a time, with the headers ``Nats-Msg-Id``
    (the id, for JetStream's duplicate window) and ``Nats-Expected-Stream``."""

    def __init__(self, stream: str) -> None:
        self._stream = stream

    async def publish(self, nc: Any, messages: Sequence[tuple[str, str, bytes, str]]) -> None:
        stream = self._stream
        for subject, reply, body, msg_id in messages:
            headers = {"Nats-Msg-Id": msg_id, "Nats-Expected-Stream": stream}
            await nc.publish(subject, body, reply=reply, headers=headers)


class JetStreamByHand:
    """The same HPUB commands written here, all of a batch handed to nats-py's outgoing
    buffer at once and flushed once. The subjects and ids are valid by construction
    (the sink makes them), and the bodies no larger than the server's ``max_payload``
    (the sink checks)."""

    def __init__(self, stream: str) -> None:
        self._tail = b"\r\nNats-Expected-Stream: " + stream.encode() + b"\r\n\r\n"

    async def publish(self, nc: Any, messages: Sequence[tuple[str, str, bytes, str]]) -> None:
        tail, commands, size = self._tail, [], 0
        for subject, reply, body, msg_id in messages:
            header = b"NATS/1.0\r\nNats-Msg-Id: " + msg_id.encode() + tail
            commands.append(
                b"HPUB %s %s %d %d\r\n%s%s\r\n"
                % (
                    subject.encode(),
                    reply.encode(),
                    len(header),
                    len(header) + len(body),
                    header,
                    body,
                )
            )
            size += len(body)
        nc.stats["out_msgs"] += len(messages)
        nc.stats["out_bytes"] += size
        await nc._send_command(b"".join(commands))
        await nc._flush_pending()


OnAck = Callable[[bytes, bytes, bytes], None]
"""``on_ack(subject, data, status)`` of one message on an ack subject; `status` is the
status code of its headers (``b"503"``: no responders), else ``b""``."""


class JetStreamAcks(Protocol):
    """Takes the publish acks of JetStream on a nats-py connection (see `AcksByClient`)."""

    async def subscribe(self, nc: Any, subject: str, on_ack: OnAck) -> None:
        """Subscribe to `subject` (wildcards too): `on_ack` for each message, in order,
        on the connection's event loop."""
        ...


class AcksByClient:
    """nats-py's own subscription with a callback: a `Msg` and a task wake-up each."""

    async def subscribe(self, nc: Any, subject: str, on_ack: OnAck) -> None:
        async def received(msg: Any) -> None:
            status = (msg.headers or {}).get("Status", "")
            on_ack(msg.subject.encode(), msg.data, status.encode())

        await nc.subscribe(subject, cb=received)


class AcksByHand:
    """The same, `on_ack` called from nats-py's parser for the subscription's messages
    (the connection's ``_process_msg`` wrapped): no `Msg`, no headers parsed beyond the
    status, no queue, no task."""

    async def subscribe(self, nc: Any, subject: str, on_ack: OnAck) -> None:
        sid = (await nc.subscribe(subject))._id
        process, stats = nc._process_msg, nc.stats

        async def process_msg(
            sid_: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
        ) -> None:
            if sid_ != sid:
                await process(sid_, subject, reply, data, headers)
                return
            stats["in_msgs"] += 1
            stats["in_bytes"] += len(data)
            status = headers.split(b"\r\n", 1)[0][9:12] if headers else b""
            on_ack(subject, data, status)

        nc._process_msg = process_msg


#: (routing key, body, message id, type, timestamp) of one persistent JSON message
AmqpMessage = tuple[str, bytes, str, str, int]


class AmqpPublisher(Protocol):
    """Publishes a batch on a pika channel (see `AmqpByPika`)."""

    def publish(self, exchange: str, messages: Sequence[AmqpMessage], mandatory: bool) -> None:
        """Buffer every message for sending, in order (nothing waits for the broker)."""
        ...


class AmqpByPika:
    """pika's own ``basic_publish`` of each message on `channel` (pika's ``Channel``, under
    the blocking facade), with the properties ``content_type="application/json"``,
    ``delivery_mode=2`` (persistent), ``message_id``, ``type``, ``timestamp`` and
    ``app_id="rowcast"``."""

    def __init__(self, channel: Any) -> None:
        import pika

        self._channel, self._properties = channel, pika.BasicProperties

    def publish(self, exchange: str, messages: Sequence[AmqpMessage], mandatory: bool) -> None:
        publish, properties = self._channel.basic_publish, self._properties
        for routing_key, body, message_id, kind, timestamp in messages:
            publish(
                exchange,
                routing_key,
                body,
                properties(
                    content_type="application/json",
                    delivery_mode=2,
                    message_id=message_id,
                    type=kind,
                    timestamp=timestamp,
                    app_id="rowcast",
                ),
                mandatory,
            )


_PUBLISH = struct.Struct(">BHIIH")  # frame type 1, channel, size; Basic.Publish; ticket
_HEADER = struct.Struct(">BHIHHQH")  # frame type 2, channel, size; class, weight, size, flags
_BODY = struct.Struct(">BHI")  # frame type 3, channel, size
_FLAGS = 0x8000 | 0x1000 | 0x0080 | 0x0040 | 0x0020 | 0x0008  # the properties written


class AmqpByHand:
    """The same frames (method, content header, body) written here, a whole batch handed
    to pika's output buffer at once. A message with a string too long for AMQP (over
    255 bytes) goes through pika, which refuses it."""

    def __init__(self, channel: Any) -> None:
        self._channel = channel
        self._pika = AmqpByPika(channel)

    def publish(self, exchange: str, messages: Sequence[AmqpMessage], mandatory: bool) -> None:
        channel = self._channel
        channel._raise_if_not_open()
        connection = channel.connection
        number, most = channel.channel_number, connection._body_max_length
        exchange_bytes = exchange.encode()
        bits = b"\x01" if mandatory else b"\x00"
        frames: list[bytes] = []
        for message in messages:
            routing_key, body, message_id, kind, timestamp = message
            key, ident, kind_bytes = routing_key.encode(), message_id.encode(), kind.encode()
            if max(len(exchange_bytes), len(key), len(ident), len(kind_bytes)) > 255:
                connection._output_marshaled_frames([b"".join(frames)])  # those before it
                frames = []
                self._pika.publish(exchange, [message], mandatory)
                continue
            method = bytes([len(exchange_bytes)]) + exchange_bytes + bytes([len(key)]) + key + bits
            frames.append(_PUBLISH.pack(1, number, 6 + len(method), 0x003C0028, 0))
            frames.append(method + b"\xce")
            properties = b"".join(
                (
                    _JSON,
                    bytes([len(ident)]),
                    ident,
                    timestamp.to_bytes(8, "big"),
                    bytes([len(kind_bytes)]),
                    kind_bytes,
                    _APP,
                )
            )
            frames.append(_HEADER.pack(2, number, 14 + len(properties), 60, 0, len(body), _FLAGS))
            frames.append(properties + b"\xce")
            for start in range(0, len(body), most):
                chunk = body[start : start + most]
                frames.append(_BODY.pack(3, number, len(chunk)) + chunk + b"\xce")
        if frames:
            connection._output_marshaled_frames([b"".join(frames)])


_JSON = b"\x10application/json\x02"  # content type (a short string), delivery mode 2
_APP = b"\x07rowcast"  # app id

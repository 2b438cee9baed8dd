"""`RabbitMQSink`: every change a persistent message on a topic exchange (``amqp://``).

URL: ``amqp://[user:password@]host[:port][/vhost][?option=value&...]`` (``amqps://``
for TLS; the vhost ``/`` is written ``%2F``), rowcast's options:

``exchange``
    the topic exchange, default ``rowcast``, declared durable when missing (an
    exchange of another type or durability under that name is an error).
``mandatory``
    ``true`` (default): a message that no queue's binding matches is returned by
    RabbitMQ and the delivery fails for good (`PermanentSinkError`), so nothing is
    dropped unseen; bind a queue (``#`` catches every change) before relaying.
    ``false``: RabbitMQ drops it.
``timeout``
    seconds to connect and for socket reads and writes, default 10 (also used as
    pika's ``blocked_connection_timeout``: a broker under a memory or disk alarm
    is a `SinkError`, not a hang).

Every other query parameter is pika's (``heartbeat``, ``ssl_options``, ...).

A change is published with routing key ``<schema>.<table>.<action>`` (``_`` for a
change without schema; ``.``, ``*``, ``#``, ``%`` and blanks in a name written as
``%XX``), body ``Change.to_json()`` and properties

=====================  =================================================
``message_id``         the change id (`rowcast.sinks.change_id`)
``content_type``       ``application/json``
``delivery_mode``      2 (persistent: kept by durable queues across restarts)
``type``               ``<table>_<action>``, e.g. ``orders_write``
``timestamp``          the commit time, whole epoch seconds
``app_id``             ``rowcast``
=====================  =================================================

The channel is in publisher-confirm mode: `deliver` returns once the broker
confirmed every message (persisted by its durable queues). Messages are in commit
order within each queue. RabbitMQ does not deduplicate: a re-delivered batch
arrives again with the same ``message_id``, which consumers use to skip what they
have seen. Consumers bind a durable queue with the keys they want
(``shop.orders.*``, ``*.*.delete``, ``#``) and ack each message.

`check` connects, authenticates and declares the exchange (passively first). An
exchange that did not exist has no queue bound to it: with ``mandatory`` every
message would come back, so that is a `ConfigError` at start (the exchange stays
declared, for the queues to be bound). Which routing keys a queue takes cannot be
asked of RabbitMQ without publishing; an unbound key is found by the first change.

Errors at the boundary: an unreachable broker, a dropped connection, a broker
alarm, a nack (a full queue that rejects publishes), no confirm within
``timeout`` and a deleted exchange (declared again by the retry) are a
`TransientSinkError`; refused credentials or vhost, a channel closed with 403
(access refused) or 406 (an exchange of another kind, a message over the
broker's ``max_message_size``), and an unroutable message with ``mandatory`` are
a `PermanentSinkError`.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .. import _speedups
from .._url import boolean, check_query, masked, number, query
from ..backends import missing_extra
from ..change import Change
from ..errors import ConfigError, PermanentSinkError, SinkError, TransientSinkError
from .base import FORMAT_OPTIONS, Batch, encoder

__all__ = ["RabbitMQSink"]

log = logging.getLogger(__name__)

_OPTIONS = ("exchange", "mandatory", "timeout", *FORMAT_OPTIONS)
# AMQP reply codes that closing a channel or connection with means "never as it is"
_REFUSED = {
    403: "the user may not do this on the vhost: grant it (rabbitmqctl set_permissions)",
    406: "the broker refused the exchange or the message (another kind of exchange under "
    "that name, or a message over max_message_size)",
    530: "the vhost does not exist or the user may not use it",
}
_UNSAFE = re.compile(r"[.*#%\x00-\x20\x7f]")


def routing_word(name: str) -> str:
    """`name` as one routing-key word: ``.``, ``*``, ``#``, ``%`` and blanks as ``%XX``."""
    return _UNSAFE.sub(lambda m: f"%{ord(m.group()):02X}", name)


class RabbitMQSink:
    """Deliver changes to a RabbitMQ topic exchange (see the module docstring).

    Connects in `check` or on the first `deliver`, and again after a failure of the
    connection or channel; a connection the broker dropped while the sink was idle
    (pika answers heartbeats only inside its calls) is noticed and replaced before
    publishing.
    Not thread-safe (pika's BlockingConnection is not): one thread delivers.
    """

    def __init__(
        self,
        url: str,
        *,
        exchange: str | None = None,
        mandatory: bool | None = None,
        timeout: float | None = None,
    ) -> None:
        self.url = masked(url)
        options, pika_url = _parse(url)
        self.exchange: str = (
            exchange if exchange is not None else options.get("exchange", "rowcast")
        )
        if not self.exchange or len(self.exchange.encode()) > 255:
            raise ConfigError(f"{self.url}: an exchange name is 1-255 bytes, not {self.exchange!r}")
        self.mandatory = boolean(url, "mandatory", mandatory, options, True)
        self._encoded = encoder(url, options, self.exchange)
        self.timeout: float = number(url, "timeout", timeout, options, 10.0)
        try:
            import pika
            import pika.exceptions
            import pika.spec
        except ImportError as e:
            raise missing_extra("rabbitmq", "the RabbitMQ sink", e) from e
        self._pika = pika
        try:
            self._parameters = pika.URLParameters(pika_url)
        except ValueError as e:
            raise ConfigError(
                f"malformed AMQP URL {self.url}: {e} (rowcast's own options: "
                + ", ".join(_OPTIONS)
                + "; the others are pika's)"
            ) from e
        given = set(dict(parse_qsl(urlsplit(pika_url).query)))
        for name in ("socket_timeout", "stack_timeout", "blocked_connection_timeout"):
            if name not in given:
                setattr(self._parameters, name, self.timeout)
        if "connection_attempts" not in given:
            self._parameters.connection_attempts = 1  # the relay retries with backoff
        self._parameters.client_properties = {"connection_name": f"rowcast sink {self.exchange}"}
        self._connection: Any = None
        self._channel: Any = None
        self._confirms = _Confirms(pika.spec.Basic.Nack)
        self._publisher: _speedups.AmqpPublisher | None = None
        self._keys: dict[tuple[str | None, str, str], str] = {}
        self._closed = False

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<RabbitMQSink {self.url!r} exchange={self.exchange!r}{state}>"

    def routing_key(self, change: Change) -> str:
        """The routing key of `change`: ``<schema>.<table>.<action>``."""
        key = (change.schema, change.table, change.action.value)
        routing = self._keys.get(key)
        if routing is None:
            schema = routing_word(change.schema) if change.schema else "_"
            routing = self._keys[key] = f"{schema}.{routing_word(change.table)}.{key[2]}"
        return routing

    def check(self) -> None:
        """Connect, declare the exchange, and refuse a new one nobody can be bound to yet."""
        if self._closed:
            raise PermanentSinkError(f"{self!r} is closed")
        self._drop()
        existed = self._connect(probe=True)
        if not existed and self.mandatory:
            raise ConfigError(
                f"RabbitMQ sink {self.url}: exchange {self.exchange!r} did not exist (it is "
                "declared now), so no queue is bound to it and every message would come "
                "back unroutable; bind a queue to it (e.g. with '#') and start again, or "
                "add ?mandatory=false to let RabbitMQ drop unroutable messages"
            )

    def deliver(self, batch: Batch) -> None:
        """Publish every change of `batch`; return once the broker confirmed every one.

        The whole batch is published, then its confirms are awaited together (the
        broker confirms a persistent message once its durable queues stored it, and
        stores many at once: one confirm round per message would cost one disk sync
        each). Raises `TransientSinkError` when the broker is unreachable, nacks a
        message (e.g. a queue with ``x-overflow: reject-publish`` is full), closes the
        channel because the exchange was deleted, or confirms nothing within
        ``timeout``; `PermanentSinkError` when it returns a message no queue takes
        (``mandatory``) or refuses one (module docstring). The other messages of the
        batch may be published; a retry sends them again with the same ``message_id``.
        """
        if self._closed:
            raise PermanentSinkError(f"{self!r} is closed")
        entries = self._encoded(batch)  # every id first: a bad change sends nothing
        if not entries:
            return
        errors = self._pika.exceptions
        if self._connection is not None:
            # pika's blocking connection only reads between calls: take in what came while
            # idle, so a connection the broker closed (missed heartbeats) is replaced now
            try:
                self._connection.process_data_events(time_limit=0)
            except (errors.AMQPError, OSError) as e:
                log.info("RabbitMQ sink %s: reconnecting after %r", self.url, e)
                self._drop()
        if self._channel is None:
            self._connect()
        channel, connection = self._channel, self._connection
        exchange, mandatory = self.exchange, self.mandatory
        confirms = self._confirms
        confirms.expect(len(entries), self.timeout)
        timer = None
        try:
            messages = [
                (self.routing_key(change), body.encode(), change_id, change.name, int(change.ts))
                for change_id, change, body in entries
            ]
            assert self._publisher is not None  # made with the channel
            self._publisher.publish(exchange, messages, mandatory)  # buffered, in order
            timer = connection.call_later(self.timeout, confirms.wake)
            channel._flush_output(confirms.settled)  # raises if the channel or connection closes
        except (errors.AMQPError, OSError) as e:
            self._drop()
            raise self._error(
                e, f"publishing {len(entries)} messages to exchange {exchange!r} failed"
            ) from e
        finally:
            if timer is not None and self._connection is not None:
                connection.remove_timeout(timer)
        problem = confirms.problem(len(entries))
        if problem is not None:
            if confirms.timed_out:
                self._drop()  # late confirms would be counted for the next batch
            message = f"RabbitMQ sink {self.url}, exchange {exchange!r}: {problem}"
            if confirms.returned:  # unroutable: the same key comes back until a queue is bound
                raise PermanentSinkError(message)
            raise TransientSinkError(message)

    def close(self) -> None:
        """Close the connection; idempotent."""
        if not self._closed:
            self._closed = True
            self._drop()

    def _connect(self, probe: bool = False) -> bool:
        """Connect, declare the exchange, turn on confirms; `probe`: whether it existed."""
        errors = self._pika.exceptions
        try:
            connection = self._pika.BlockingConnection(self._parameters)
        except (errors.AMQPError, OSError) as e:
            raise self._error(e, "cannot connect") from e
        self._connection = connection
        existed = True
        try:
            channel = connection.channel()
            if probe:
                try:
                    channel.exchange_declare(self.exchange, passive=True)
                except errors.ChannelClosedByBroker as e:
                    if e.reply_code != 404:
                        raise
                    existed = False
                    channel = connection.channel()
            channel.exchange_declare(self.exchange, "topic", durable=True)
        except (errors.AMQPError, OSError) as e:
            self._drop()
            raise self._error(
                e, f"cannot declare the durable topic exchange {self.exchange!r}"
            ) from e
        # BlockingChannel.confirm_delivery waits for each message's confirm; confirms of a
        # whole batch are counted on pika's own Channel instead
        confirms = _Confirms(self._pika.spec.Basic.Nack)
        selected: list[object] = []
        try:
            channel._impl.confirm_delivery(confirms.on_confirm, selected.append)
            channel._flush_output(lambda: bool(selected))
            channel._impl.add_on_return_callback(confirms.on_return)
        except (errors.AMQPError, OSError) as e:
            self._drop()
            raise self._error(e, "cannot turn on confirms") from e
        self._channel, self._confirms = channel, confirms
        self._publisher = _speedups.amqp_publisher(channel._impl)  # pika's own Channel
        return existed

    def _error(self, error: BaseException, doing: str) -> SinkError:
        """`error` from pika as the kind of `SinkError` it is (module docstring)."""
        errors = self._pika.exceptions
        message = f"RabbitMQ sink {self.url}: {doing}: {error!r}"
        if isinstance(error, errors.ProbableAuthenticationError | errors.AuthenticationError):
            return PermanentSinkError(message, "give a user and password the broker accepts")
        if isinstance(error, errors.ProbableAccessDeniedError):
            return PermanentSinkError(message, _REFUSED[530])
        code = getattr(error, "reply_code", None)
        closed = errors.ChannelClosedByBroker | errors.ConnectionClosedByBroker
        if isinstance(error, closed) and code in _REFUSED:
            return PermanentSinkError(message, _REFUSED[code])
        return TransientSinkError(message)

    def _drop(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception as e:  # a broken connection: nothing left to close
                log.debug("closing %s: %r", self.url, e)


class _Confirms:
    """Publisher confirms of one channel: delivery tags count from 1, in publish order."""

    def __init__(self, nack: type[Any]) -> None:
        self.nack = nack  # pika.spec.Basic.Nack
        self.published = 0  # the last delivery tag used
        self.floor = 0  # every tag up to here is settled (acked or nacked)
        self.above: set[int] = set()  # settled tags above the floor
        self.first = 1  # the first tag of the current batch
        self.nacked: list[int] = []
        self.returned: list[tuple[str, str]] = []  # (routing key, reply text)
        self.timed_out = False
        self.deadline = 0.0

    def expect(self, count: int, timeout: float) -> None:
        self.deadline = time.monotonic() + timeout
        self.first = self.published + 1
        self.published += count
        self.nacked.clear()
        self.returned.clear()
        self.timed_out = False

    def settled(self) -> bool:
        if self.floor >= self.published:
            return True
        if time.monotonic() >= self.deadline:
            self.timed_out = True
        return self.timed_out

    def wake(self) -> None:
        """A timer that only wakes pika's poll at the deadline (its events wait for us)."""

    def on_confirm(self, frame: Any) -> None:
        method: Any = frame.method
        tag: int = method.delivery_tag
        if isinstance(method, self.nack):
            first = self.floor + 1 if method.multiple else tag
            self.nacked.extend(t for t in range(first, tag + 1) if t not in self.above)
        if method.multiple:
            self.floor = max(self.floor, tag)
            self.above = {t for t in self.above if t > tag}
        elif tag > self.floor:
            self.above.add(tag)
        while self.floor + 1 in self.above:  # confirms of several queues come out of order
            self.floor += 1
            self.above.discard(self.floor)

    def on_return(self, _channel: Any, method: Any, _properties: Any, _body: bytes) -> None:
        self.returned.append((method.routing_key, f"{method.reply_code} {method.reply_text}"))

    def problem(self, count: int) -> str | None:
        """What went wrong with the current batch of `count` messages, or None."""
        if self.returned:
            key, reply = self.returned[0]
            return (
                f"no queue is bound for routing key {key!r} ({len(self.returned)} of {count} "
                f"messages returned: {reply}); bind a queue (e.g. with '#'), or add "
                "?mandatory=false to let RabbitMQ drop unroutable messages"
            )
        if self.nacked:
            return (
                f"the broker refused (nack) {len(self.nacked)} of {count} messages, the first "
                f"being message {min(self.nacked) - self.first + 1}: a queue is full "
                "(x-overflow reject-publish) or the broker failed to store them"
            )
        if self.timed_out:
            return "no publisher confirm within the timeout"
        return None


def _parse(url: str) -> tuple[dict[str, str], str]:
    """rowcast's options, and the URL with pika's options only."""
    options, _, rest = query(url, "the RabbitMQ sink", ("amqp", "amqps"), _OPTIONS, others=True)
    check_query(url, rest, "rabbitmq", "the RabbitMQ sink", _OPTIONS)
    return options, urlunsplit(urlsplit(url)._replace(query=urlencode(rest)))

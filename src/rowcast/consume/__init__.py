"""Consume relayed changes: one handler API over Redis Streams, NATS JetStream, RabbitMQ,
Kafka.

::

    from rowcast.consume import open_consumer

    def handle(changes):            # a batch of rowcast.Change, in delivery order
        for change in changes:
            print(change.topic, change.pk, change.after)

    consumer = open_consumer("redis://localhost:6379/0", handle, group="search", workers=3)
    consumer.run()                  # until consumer.stop() (or SIGTERM with `rowcast consume`)

The URL picks the broker, as for sinks: ``redis://`` / ``rediss://``
(`rowcast.consume.redis`), ``nats://`` / ``tls://`` (`rowcast.consume.nats`),
``amqp://`` / ``amqps://`` (`rowcast.consume.rabbitmq`), ``kafka://``
(`rowcast.consume.kafka`), and ``memory://<name>``, a
broker inside this process for tests, fed by the sink ``memory://<name>?mode=broker``
(`rowcast.consume.memory`); each module's docstring lists its URL options. What every
broker promises (per-row order, at least once, retries, dead letters, duplicates,
stopping) is in `rowcast.consume.base`.

A backfill (``rowcast backfill``) hands out rows read again as ``write`` changes with
``snapshot=True``, beside the stream, also for rows a handler has handled before.
Each has an id of its own (from the position it went out at), so the consumer never
takes one for a duplicate, and a handler gets it as any write: upsert it (a handler
that refuses a write of a row it holds would park it as a dead letter).
"""

from __future__ import annotations

import importlib
from typing import Any

from .. import backends
from ..errors import ConfigError
from .base import Consumer, Handler
from .stats import ConsumerStats
from .transport import Delivery, Transport, row_key

__all__ = [
    "Consumer",
    "ConsumerStats",
    "Delivery",
    "Handler",
    "Transport",
    "load_handler",
    "open_consumer",
    "open_transport",
    "row_key",
]

_CONSUMER_OPTIONS = (
    "workers",
    "batch_size",
    "max_in_flight",
    "attempts",
    "backoff",
    "max_backoff",
    "dedupe_window",
    "parked_rows",
    "poll",
    "report",
    "report_interval",
)


def open_transport(url: str, *, group: str = "rowcast", **options: Any) -> Transport:
    """The broker side of a consumer for `url`, reading as consumer group `group`."""
    cls = backends.load("consumer", url)
    if not isinstance(group, str) or not group:
        raise ConfigError(f"the group is a non-empty name, not {group!r}")
    transport: Transport = cls(url, group=group, **options)
    return transport


def open_consumer(
    url: str, handler: Handler, *, group: str = "rowcast", **options: Any
) -> Consumer:
    """A `Consumer` of the broker at `url` calling `handler` with batches of changes.

    `options` are `Consumer`'s (``workers``, ``batch_size``, ``attempts``, ``backoff``,
    ``dedupe_window``...) and the broker's (the URL options of its module, e.g.
    ``claim_after`` for Redis, ``ack_wait`` for NATS, ``queue`` for RabbitMQ). Nothing
    is contacted until `Consumer.run`.
    """
    mine = {k: options.pop(k) for k in _CONSUMER_OPTIONS if k in options}
    return Consumer(open_transport(url, group=group, **options), handler, **mine)


def load_handler(spec: str) -> Handler:
    """The function named by ``"package.module:function"`` (``:attr.attr`` for a method)."""
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise ConfigError(
            f"a handler is 'module:function', e.g. 'myapp.handlers:index', not {spec!r}"
        )
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"cannot import the handler's module {module_name!r}: {e}") from e
    for name in attribute.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise ConfigError(
                f"module {module_name!r} has no {attribute!r} (handler {spec!r})"
            ) from None
    if not callable(target):
        raise ConfigError(f"the handler {spec!r} is not callable: {target!r}")
    handler: Handler = target
    return handler

"""The contract every sink keeps, the deterministic change id, and `open_sink`.

A sink is where a relay delivers changes: an event store, Redis Streams, NATS
JetStream, RabbitMQ, stdout. The relay hands a sink a *batch*: one or more whole
transactions, in commit order. `Sink.deliver` returns only when the destination has
acknowledged every change of the batch (durably, as far as the destination can say:
a store commit, a JetStream publish ack, a RabbitMQ publisher confirm, a Redis
reply). Then, and only then, the relay saves its checkpoint. A sink that cannot
deliver raises `SinkError` (the relay retries the same batch with backoff), so a
batch may arrive twice: delivery is at-least-once.

Every change has a deterministic id, `change_id(change, index)`: the same change of
the same transaction always gets the same UUID, made from the source, the
transaction's position and the change's index in its transaction. Sinks that can
deduplicate use it (the event store's idempotent append, JetStream's
``Nats-Msg-Id``); the others carry it for their consumers (a Redis field, the AMQP
``message_id``), so a consumer can skip a re-delivered change.

Message bodies are ``Change.to_json()``.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlsplit

from .._url import masked
from ..change import Change
from ..errors import ConfigError

__all__ = ["NAMESPACE", "Sink", "change_id", "identified", "open_sink"]

#: The UUID namespace of change ids (uuid5 of the source, position and index).
NAMESPACE = uuid.UUID("5b0c8a4e-3f2d-5d1e-9a67-726f77636173")

Batch = Sequence[Sequence[Change]]
"""One or more whole transactions, in commit order."""


def change_id(change: Change, index: int) -> uuid.UUID:
    """The id of the `index`-th change (from 0) of its transaction: stable across re-deliveries.

    Needs the change's ``position`` (every log source sets it); without one there is
    nothing stable to derive an id from, which is a `ConfigError`.
    """
    if change.position is None:
        raise ConfigError(
            f"{change.topic}: a change without a source position has no stable id; "
            "relay changes from a log source (binlog, logical replication, outbox, triggers)"
        )
    return uuid.uuid5(NAMESPACE, f"{change.source}\x1f{change.position}\x1f{index}")


def identified(batch: Batch) -> Iterator[tuple[uuid.UUID, Change]]:
    """Every change of `batch` with its id, in commit order."""
    for transaction in batch:
        for index, change in enumerate(transaction):
            yield change_id(change, index), change


@runtime_checkable
class Sink(Protocol):
    """A destination of relayed changes (see the module docstring for the contract)."""

    url: str  #: the URL it was opened with, password masked

    def deliver(self, batch: Batch) -> None:
        """Deliver whole transactions; return once the destination acknowledged all of them.

        Raises `SinkError` when it could not (the caller retries the whole batch).
        """
        ...

    def close(self) -> None:
        """Release connections; idempotent."""
        ...


# scheme -> "module:Class", imported only when a URL asks for it
_SINKS = {
    "-": "rowcast.sinks.stdout:StdoutSink",
    "sqlite": "rowcast.sinks.store:StoreSink",
    "memory": "rowcast.sinks.store:StoreSink",
    "postgresql": "rowcast.sinks.store:StoreSink",
    "postgres": "rowcast.sinks.store:StoreSink",
    "redis": "rowcast.sinks.redis:RedisSink",
    "rediss": "rowcast.sinks.redis:RedisSink",
    "nats": "rowcast.sinks.nats:NatsSink",
    "tls": "rowcast.sinks.nats:NatsSink",
    "amqp": "rowcast.sinks.rabbitmq:RabbitMQSink",
    "amqps": "rowcast.sinks.rabbitmq:RabbitMQSink",
}


def open_sink(url: str, **options: Any) -> Sink:
    """The sink for `url`: ``-`` (stdout), ``sqlite:///events.db``, ``postgresql://...``,
    ``redis://...``, ``nats://...``, ``amqp://...``; a database URL with ``mode=replicate``
    (``postgresql://host/db?mode=replicate``) replicates tables into it."""
    scheme = "-" if url == "-" else urlsplit(url).scheme.split("+", 1)[0].lower()
    target = _SINKS.get(scheme)
    if scheme != "-" and ("mode", "replicate") in parse_qsl(urlsplit(url).query):
        target = "rowcast.sinks.sql:ReplicationSink"  # any SQLAlchemy database
    if target is None:
        known = ", ".join(["-", *sorted(f"{s}://" for s in _SINKS if s != "-")])
        raise ConfigError(f"no rowcast sink for {masked(url)!r}: use one of {known}")
    module_name, _, class_name = target.partition(":")
    module = importlib.import_module(module_name)
    sink: Sink = getattr(module, class_name)(url, **options)
    return sink

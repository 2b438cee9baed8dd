"""The contract every sink keeps, the deterministic change id, and `open_sink`.

A sink is where a relay delivers changes: an event store, Redis Streams, NATS
JetStream, RabbitMQ, stdout. The relay hands a sink a *batch*: one or more whole
transactions, in commit order. `Sink.deliver` returns only when the destination has
acknowledged every change of the batch (durably, as far as the destination can say:
a store commit, a JetStream publish ack, a RabbitMQ publisher confirm, a Redis
reply). Then, and only then, the relay saves its checkpoint. A sink that cannot
deliver raises one of two kinds of `SinkError`, classifying its driver's error at
its boundary:

* `TransientSinkError`: the destination may take the batch later (unreachable, a
  timeout, a deadlock, full for now); the relay retries the same batch with backoff,
  so a batch may arrive twice: delivery is at-least-once;
* `PermanentSinkError`: it never will as it is (a refused privilege, a missing
  schema, a constraint, a value it cannot hold); retrying is pointless, so the relay
  stops, or sends the refused transactions to a dead-letter destination.

Before the relay reads anything it calls every sink's `Sink.check`: connect,
authenticate, make sure the destination exists (or create it, as delivering would)
and may be written to. What is wrong there is a `ConfigError` (the fix in the
message) or a `SinkError` (unreachable), and the relay does not start.

Every change has a deterministic id, `change_id(change, index)`: the same change of
the same transaction always gets the same UUID, made from the source, the
transaction's position and the change's index in its transaction. Sinks that can
deduplicate use it (the event store's idempotent append, JetStream's
``Nats-Msg-Id``); the others carry it for their consumers (a Redis field, the AMQP
``message_id``), so a consumer can skip a re-delivered change.

Message bodies are ``Change.to_json()``. `encoded(batch)` gives every change of a
batch with its id (as a string) and body; the sinks of one relay, handed the same
batch, share that work (but under ``ROWCAST_PURE=1``, see `rowcast._speedups`).
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

from .. import _speedups, backends
from .._url import boolean, masked
from ..change import Change
from ..errors import ConfigError

__all__ = [
    "FORMAT_OPTIONS",
    "NAMESPACE",
    "Encoded",
    "Shared",
    "Sink",
    "change_id",
    "encoded",
    "encoder",
    "identified",
    "open_sink",
]

#: The options of a sink's message format, for sinks whose messages are a change's body.
FORMAT_OPTIONS = ("format", "schemas", "db")

#: The UUID namespace of change ids (uuid5 of the source, position and index).
NAMESPACE = uuid.UUID("5b0c8a4e-3f2d-5d1e-9a67-726f77636173")

Batch = Sequence[Sequence[Change]]
"""One or more whole transactions, in commit order."""


def change_id(change: Change, index: int) -> uuid.UUID:
    """The id of the `index`-th change (from 0) of its transaction: stable across re-deliveries.

    ``uuid5(NAMESPACE, "<source>\\x1f<position>\\x1f<index>")``. Needs the change's
    ``position`` (every log source sets it); without one there is nothing stable to
    derive an id from, which is a `ConfigError`.
    """
    return uuid.UUID(_ids([change], index)[0])


def identified(batch: Batch) -> Iterator[tuple[uuid.UUID, Change]]:
    """Every change of `batch` with its id, in commit order."""
    for transaction in batch:
        for change_id_, change in zip(_ids(transaction), transaction, strict=True):
            yield uuid.UUID(change_id_), change


_NAMESPACE_SHA1 = hashlib.sha1(NAMESPACE.bytes, usedforsecurity=False)
_VARIANT = "89ab89ab89ab89ab"  # the RFC 4122 variant bits over the digest's nibble


def _ids(transaction: Sequence[Change], first: int = 0) -> list[str]:
    """`str(change_id(change, first + i))` of each change: uuid5 without its UUID objects.

    The hashed name's prefix (source and position) is hashed once per transaction.
    """
    ids: list[str] = []
    prefix: Any = None
    last: tuple[str | None, str | None] | None = None
    for index, change in enumerate(transaction, first):
        if change.position is None:
            raise ConfigError(
                f"{change.topic}: a change without a source position has no stable id; "
                "relay changes from a log source (binlog, logical replication, outbox, triggers)"
            )
        if last != (change.source, change.position):
            last = (change.source, change.position)
            prefix = _NAMESPACE_SHA1.copy()
            prefix.update(f"{change.source}\x1f{change.position}\x1f".encode())
        sha1 = prefix.copy()
        sha1.update(str(index).encode())
        h = sha1.hexdigest()  # uuid5: the first 16 bytes, version 5, variant RFC 4122
        ids.append(f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[int(h[16], 16)]}{h[17:20]}-{h[20:32]}")
    return ids


class Encoded(NamedTuple):
    """A change of a batch as sinks send it."""

    id: str  #: `change_id`, as a string
    change: Change
    body: str  #: ``change.to_json()``


def encoded(batch: Batch) -> list[Encoded]:
    """Every change of `batch`, in commit order, with its id and body.

    A `Shared` batch (a relay's) carries them, computed once for all its sinks;
    other sinks delivering one batch (each in its own thread) may share the work
    too: the result for the same changes in the same transactions asked for in a
    row may be the one computed before (`rowcast._speedups.remember_last`); safe
    from any thread. Raises `ConfigError` (from `change_id`) before encoding
    anything when a change has no position, so a sink sends nothing of a batch it
    cannot identify whole.
    """
    if type(batch) is Shared and batch.entries is not None:
        return batch.entries
    return _encoded(batch)


class Shared(list[Sequence[Change]]):
    """A batch that a relay hands to each of its sinks, with its `encoded` entries made
    once, when it is made (None when a change cannot be identified: `encoded` raises
    then, for each sink that asks)."""

    __slots__ = ("entries",)

    def __init__(self, batch: Batch) -> None:
        super().__init__(batch)
        self.entries: list[Encoded] | None = None
        with contextlib.suppress(ConfigError):  # raised by `encoded`, to the sinks using it
            self.entries = _encode(self)


def _encode(batch: Batch) -> list[Encoded]:
    ids = [change_id for transaction in batch for change_id in _ids(transaction)]
    changes = [change for transaction in batch for change in transaction]
    return [
        Encoded(change_id, change, change.to_json())
        for change_id, change in zip(ids, changes, strict=True)
    ]


_encoded = _speedups.remember_last(_encode)


def encoder(url: str, options: dict[str, str], name: str) -> Callable[[Batch], list[Encoded]]:
    """`encoded`, or with ``?format=debezium`` in `options` (the URL's), the same entries
    with Debezium's value as their body (`rowcast.debezium`, its logical name `name`;
    ``schemas`` and ``db`` as for the Kafka sink). Any other format is a `ConfigError`."""
    kind = options.get("format", "rowcast")
    if kind == "rowcast":
        if "schemas" in options or "db" in options:
            raise ConfigError(f"{masked(url)}: schemas= and db= go with format=debezium")
        return encoded
    if kind != "debezium":
        raise ConfigError(f"{masked(url)}: format is rowcast or debezium, not {kind!r}")
    from ..debezium import DebeziumFormat

    debezium = DebeziumFormat(
        name=name, db=options.get("db"), schemas=boolean(url, "schemas", None, options, False)
    )

    def as_debezium(batch: Batch) -> list[Encoded]:
        entries = encoded(batch)
        events = debezium.events(batch)
        return [
            Encoded(e.id, e.change, body) for e, (_, _, body) in zip(entries, events, strict=True)
        ]

    return as_debezium


@runtime_checkable
class Sink(Protocol):
    """A destination of relayed changes (see the module docstring for the contract)."""

    url: str  #: the URL it was opened with, password masked

    def check(self) -> None:
        """Connect and make sure the destination can take writes, before any delivery.

        Raises `ConfigError` (something to change: a wrong password, a key of another
        type, a stream that another one overlaps) or `SinkError` (unreachable), the
        URL (masked) and the fix in the message, within the sink's timeout. A sink
        that needs nothing (stdout) checks nothing. May be called again.
        """
        ...

    def deliver(self, batch: Batch) -> None:
        """Deliver whole transactions; return once the destination acknowledged all of them.

        Raises `TransientSinkError` when it could not for now (the caller retries the
        whole batch), `PermanentSinkError` when it never will (see the module).
        """
        ...

    def close(self) -> None:
        """Release connections; idempotent."""
        ...


def open_sink(url: str, **options: Any) -> Sink:
    """The sink for `url`: ``-`` (stdout), ``sqlite:///events.db``, ``postgresql://...``,
    ``redis://...``, ``nats://...``, ``amqp://...``; a database URL with ``mode=replicate``
    (``postgresql://host/db?mode=replicate``) replicates tables into it;
    ``memory://<name>?mode=broker`` publishes to an in-process broker
    (`rowcast.consume.memory`), where plain ``memory://`` is an in-memory event store."""
    sink: Sink = backends.load("sink", url, "-" if url == "-" else None)(url, **options)
    return sink

"""Dead letters you can see and replay: ``rowcast dlq ls|show|replay|drop URL``.

Two kinds of places keep dead letters, each with the error beside the change:

* a consumer's (`rowcast.consume`): Redis stream ``<key>:dead``, NATS stream
  ``<stream>_dead``, RabbitMQ queue ``<queue>.dead``, Kafka topic ``<group>.dead``,
  where a change the handler kept failing on is parked;
* a relay's ``--dead-letter`` event store (``sqlite:///dead.db``,
  ``postgresql://...``), where a transaction a sink refused for good is kept
  (`rowcast.sinks.deadletter`).

`open_dead_letters(url)` picks the place by URL (family ``dlq`` of
`rowcast.backends`) and gives `DeadLetters`: `DeadLetters.places` (where, how many,
oldest and newest), `DeadLetters.read` (each `DeadLetter`: what, why, who parked
it, when), `DeadLetters.replay` and `DeadLetters.drop`. Replaying sends them back
where they came from, in the order they were parked (so each row's changes keep
their order), and removes each once it is sent:

* Redis: ``XADD`` to the stream it came from, with the field ``rowcast-replay:
  <group>``, in one ``MULTI`` with the ``XDEL`` from ``<key>:dead``;
* NATS: published to the subject it came from with the header ``Rowcast-Replay:
  <group>`` (a fresh ``Nats-Msg-Id``, the change id in ``Rowcast-Change-Id``), then
  deleted from the dead-letter stream;
* RabbitMQ: published to the group's own queue (the default exchange), with the
  header ``rowcast-replay``, confirmed, then acked in ``<queue>.dead``;
* Kafka: produced to the topic and partition it came from with the header
  ``rowcast-replay: <group>``; a topic being append-only, it is not deleted but
  marked done: the offsets committed by the group ``rowcast-dlq:<topic>`` on the
  dead-letter topic move past it once the broker has it (`rowcast.dlq.kafka`).

The consumers of the group it is replayed for handle it again (even if they saw its
id, and though its row was parked); the other groups reading the same stream or
subject acknowledge it unhandled. A relay's dead letters are delivered to the sink
given (``--to``), each transaction whole, and stay in the store (a history: `drop`
deletes them).

Nothing is created by ``ls`` and ``show``; a place that does not exist is empty.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, runtime_checkable

from .. import backends
from ..change import Change

__all__ = ["DeadLetter", "DeadLetters", "Place", "open_dead_letters"]


@dataclasses.dataclass(frozen=True)
class Place:
    """One place dead letters are kept: its name, how many, the oldest and newest times."""

    name: str
    count: int
    oldest: float | None = None
    newest: float | None = None


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """One dead letter: where it is (`place`, `handle`), when it was put there (`at`),
    the change (None when the message was not a rowcast change), its id, `why`, the
    `group` that parked it (None: a relay's), and where it came from (`origin`: the
    stream, subject or routing key; for a relay's, the sink that refused it)."""

    place: str
    handle: str
    at: float | None
    change_id: str | None
    change: Change | None
    why: str
    group: str | None
    origin: str | None

    @property
    def row(self) -> str:
        """``schema.table:pk`` of its change ("" when there is none)."""
        if self.change is None:
            return ""
        from ..consume.transport import row_key

        return row_key(self.change)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field, the change as `Change.to_dict`, and `row`."""
        data = dataclasses.asdict(self)
        data["change"] = None if self.change is None else self.change.to_dict()
        data["row"] = self.row
        return data


@runtime_checkable
class DeadLetters(Protocol):
    """The dead letters at one URL (see the module docstring)."""

    url: str  #: the URL, password masked

    def places(self) -> list[Place]:
        """Where dead letters are kept here, and how many (no place: an empty list)."""
        ...

    def read(self, limit: int | None = None) -> list[DeadLetter]:
        """The dead letters, oldest first in each place (at most `limit` in all)."""
        ...

    def replay(self, to: str | None = None) -> int:
        """Send every dead letter back, in order; how many were sent. `to`: the sink
        for a relay's (required there, refused elsewhere)."""
        ...

    def drop(self) -> int:
        """Delete every dead letter here; how many were deleted."""
        ...

    def close(self) -> None:
        """Release connections; idempotent."""
        ...


def open_dead_letters(url: str, **options: Any) -> DeadLetters:
    """The dead letters at `url`: ``redis://``, ``nats://``, ``amqp://``, ``kafka://``
    (a consumer's, options as the consumer's URL: ``stream``, ``group``, ``queue``...)
    or an event store URL (a relay's ``--dead-letter``)."""
    found: DeadLetters = backends.load("dlq", url)(url, **options)
    return found

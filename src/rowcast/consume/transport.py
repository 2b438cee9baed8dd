"""What a broker module provides to a `rowcast.consume.Consumer`: a `Transport` of `Delivery`s.

A transport is called from one thread only (the consumer's fetching thread), so it
may hold a client that is not thread-safe (pika). Broker errors are raised as
`rowcast.errors.SinkError`, bad options as `ConfigError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from ..change import Change

__all__ = ["REPLAY", "Delivery", "Touching", "Transport", "decode", "row_key"]

#: the header (NATS, RabbitMQ) or field (Redis) that marks a replayed dead letter: its
#: value is the group it is replayed for (the other groups skip it)
REPLAY = "rowcast-replay"


def row_key(change: Change) -> str:
    """``"<schema>.<table>:<pk>"``, the unit of ordering (a composite pk joined by ``,``)."""
    pk = change.pk
    text = ",".join(map(str, pk)) if type(pk) is tuple else str(pk)
    return f"{change.schema or ''}.{change.table}:{text}"


class Delivery:
    """One message as the broker delivered it.

    `change` is None when the body is not a rowcast change (then `problem` says why);
    `id` is the change id; `token` is the broker's handle to acknowledge it by;
    `generation` counts the transport's connections (a handle of an older connection
    cannot be acknowledged any more: the broker redelivers that message). `replay`:
    the message is a dead letter sent back for this consumer's group (``rowcast dlq
    replay``): handled even if its id was seen, and its row is no longer parked.
    `lane` is what the consumer hashes onto its workers: the row, unless the transport
    needs more of its messages in one worker (Kafka: a partition, whose offsets are
    committed in order).
    """

    __slots__ = ("change", "generation", "id", "lane", "problem", "replay", "row", "token")

    def __init__(
        self,
        id: str,
        change: Change | None,
        token: Any,
        generation: int = 0,
        problem: str | None = None,
        replay: bool = False,
    ) -> None:
        self.id = id
        self.replay = replay
        self.change = change
        self.token = token
        self.generation = generation
        self.problem = problem
        self.row = row_key(change) if change is not None else ""
        self.lane = self.row


class Transport(Protocol):
    """One broker's side of a consumer; called from one thread only (the consumer's)."""

    url: str  #: the URL, password masked

    def connect(self) -> None:
        """Reach the broker and set up the group / consumer / queue; raises if it cannot."""
        ...

    def fetch(self, limit: int, timeout: float) -> list[Delivery]:
        """Up to `limit` messages, waiting at most `timeout` seconds for the first."""
        ...

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge `deliveries` (skipping those of an older connection)."""
        ...

    def dead_letter(self, parked: Sequence[tuple[Delivery, str]]) -> None:
        """Store each delivery with its error text in the dead-letter place, then ack it."""
        ...

    def release(self, deliveries: Sequence[Delivery]) -> None:
        """Give up `deliveries` unhandled, for redelivery (best effort)."""
        ...

    def reset(self) -> None:
        """Drop the connection after an error; the next call reconnects."""
        ...

    def close(self) -> None:
        """Close the connection; idempotent."""
        ...


@runtime_checkable
class Touching(Transport, Protocol):
    """A transport whose broker redelivers a message held unacknowledged for too long.

    The consumer calls `touch` with every delivery it holds (queued or being handled)
    once per `touch_every` seconds, from its fetching thread, so that a slow handler
    or a long local queue does not make the broker hand those messages to another
    consumer meanwhile. Transports whose broker does not redeliver on a timer (Redis:
    only a dead consumer's entries are claimed; RabbitMQ: unacked messages stay with
    their channel) simply do not have these members.
    """

    @property
    def touch_every(self) -> float | None:
        """Seconds between touches of a held message (None: not needed now)."""
        ...

    def touch(self, deliveries: Sequence[Delivery]) -> None:
        """Tell the broker `deliveries` are still being worked on (skipping older connections')."""
        ...


def decode(
    change_id: str | None,
    body: bytes | str,
    token: Any,
    generation: int,
    replay: bool = False,
    key: bytes | str | None = None,
) -> Delivery:
    """A `Delivery` of a message body: a rowcast change, or Debezium's envelope (a sink's
    ``format=debezium``; its `key`, when the broker keeps one, gives the pk). A body
    that is neither gets a `problem`."""
    try:
        change = Change.from_json(body)
    except (ValueError, TypeError) as e:
        try:
            change = Change.from_debezium(body, key)
        except (ValueError, TypeError, KeyError, AttributeError):
            return Delivery(change_id or "", None, token, generation, f"not a rowcast change: {e}")
    if not change_id:
        return Delivery("", None, token, generation, "the message carries no change id")
    return Delivery(change_id, change, token, generation, replay=replay)

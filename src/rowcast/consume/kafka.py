"""Consume from Kafka topics with a consumer group (``kafka://``).

Reads what `rowcast.sinks.kafka.KafkaSink` writes: messages whose value is
``Change.to_json()`` and whose header ``rowcast-id`` is the change id.

URL: ``kafka://[user:password@]host:port[,host:port...]?topics=...[&option=value...]``
(options with a dot are librdkafka's, as for the sink, e.g. ``session.timeout.ms``),
options:

``topics``
    the topics to read (repeat it, or separate with commas): the sink's ``topic=``,
    or its per-table topics ``rowcast.shop.orders,...``; a topic starting with ``^``
    is a regular expression (``^rowcast\\..*``: every per-table topic, new ones
    included). A named topic that does not exist is an error at start.
``group``
    the consumer group (also ``--group``); a group new to the cluster starts at the
    first message the topics hold.
``dead_letter``
    the topic parked messages go to, default ``<group>.dead`` (created with
    ``create=true``, by a broker that creates topics on first use, or by you): the
    original key, value and headers, plus ``rowcast-error``, ``rowcast-group``,
    ``rowcast-topic``, ``rowcast-partition``, ``rowcast-offset``.
``create``
    ``true``: the named topics and the dead-letter topic are created (one partition)
    when missing; default ``false``: a consumer creates nothing, and a named topic that
    does not exist is an error at start.
``timeout``
    seconds to reach the cluster at start and to write dead letters, default 30.

A row's changes are in one partition (the sink keys them by primary key), which
one consumer of the group reads at a time, in order; each partition's messages go
to one of the consumer's workers (`rowcast.consume.transport.Delivery.lane`), so
they are handled, and their offsets committed, in order: several workers pay off
with several partitions. It reads with
``isolation.level=read_committed`` (a relay's aborted transactions are skipped,
on brokers that hide them) and ``enable.auto.commit=false``: an offset is
committed only once the handler returned for that message and every one before
it in the partition (or parked it), so a consumer killed at any moment resumes
after the last change handled in order, losing nothing. When the group takes
partitions away (another consumer joins or leaves), what was handled is already
committed and the partitions' messages still in hand are not acknowledged any
more: their new owner handles them again (at least once; the change ids let a
handler skip them). A message with the header ``rowcast-replay: <group>`` is a dead
letter replayed for that group (``rowcast dlq replay``): handled again by its
consumers, skipped by the other groups'. Messages of the sink's ``format=debezium``
are read too (the key gives the primary key); a message without a value (a
tombstone) is skipped.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Sequence
from typing import Any

from .. import _kafka
from .._url import boolean, number
from ..errors import ConfigError, SinkError, TransientSinkError
from .transport import REPLAY, Delivery, decode

__all__ = ["KafkaTransport"]

log = logging.getLogger("rowcast.consume")

_OPTIONS = ("group", "dead_letter", "create", "timeout")
_JOIN_WAIT = 15.0  # seconds a consumer stopped while joining waits for its assignment

Partition = tuple[str, int]


class _Pending:
    """The offsets of one partition fetched and not yet committed, in fetch order."""

    __slots__ = ("acked", "epoch", "offsets")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.offsets: collections.deque[int] = collections.deque()
        self.acked: set[int] = set()

    def done(self, offset: int) -> int | None:
        """Mark `offset` handled; the offset to commit when the handled prefix grew."""
        self.acked.add(offset)
        committed = None
        offsets, acked = self.offsets, self.acked
        while offsets and offsets[0] in acked:
            acked.discard(offsets[0])
            committed = offsets.popleft() + 1
        return committed


class KafkaTransport:
    """The Kafka side of a `rowcast.consume.Consumer` (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        group: str = "rowcast",
        topics: str | Sequence[str] | None = None,
        dead_letter: str | None = None,
        create: bool | None = None,
        timeout: float | None = None,
        **config: Any,
    ) -> None:
        parsed = _kafka.parse(url, "the Kafka consumer", _OPTIONS, lists=("topics",))
        self.url = parsed.url
        options = parsed.options
        given = [topics] if isinstance(topics, str) else list(topics or [])
        self.topics: list[str] = given or parsed.lists.get("topics", [])
        if not self.topics:
            raise ConfigError(
                f"{self.url}: name the topics to read, e.g. ?topics=rowcast.shop.orders "
                "(or ?topics=^rowcast\\..* for every per-table topic)"
            )
        named = options.get("group")
        if named and group not in ("rowcast", named):
            raise ConfigError(
                f"{self.url}: the URL names group {named!r} and --group {group!r}; give it once"
            )
        self.group: str = named or group
        self.dead_letter_topic: str = (
            dead_letter or options.get("dead_letter") or _kafka.topic_name(f"{self.group}.dead")
        )
        self.timeout: float = number(url, "timeout", timeout, options, 30.0)
        self.create = boolean(url, "create", create, options, False)
        unknown = [name for name in config if "." not in name]
        if unknown:
            raise ConfigError(f"{self.url}: the Kafka consumer takes no option {unknown[0]!r}")
        self._kafka = _kafka.driver("the Kafka consumer")
        self._base: dict[str, Any] = {
            "bootstrap.servers": parsed.servers,
            "socket.connection.setup.timeout.ms": int(min(self.timeout, 30) * 1000),
            **parsed.config,
            **{k: str(v) for k, v in config.items()},
        }
        self._config: dict[str, Any] = {
            "group.id": self.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 1_000,
            **self._base,
        }
        _kafka.client(self._kafka.Consumer, dict(self._config), self.url)  # its options checked
        self._consumer: Any = None
        self._producer: Any = None  # the dead letters'
        self._pending: dict[Partition, _Pending] = {}
        self._epoch = 0  # bumped at each assignment: older deliveries are not acked
        self._joined_at = 0  # the epoch when it subscribed: equal while the join is pending

    def __repr__(self) -> str:
        return f"<KafkaTransport {self.url!r} group={self.group!r} topics={self.topics}>"

    # ------------------------------------------------------------ Transport

    def connect(self) -> None:
        kafka = self._kafka
        _kafka.reach(self._config, f"Kafka consumer {self.url}", self.timeout)
        consumer = _kafka.client(kafka.Consumer, dict(self._config), self.url)
        try:
            metadata = consumer.list_topics(timeout=min(self.timeout, 30))
        except kafka.KafkaException as e:
            consumer.close()
            raise TransientSinkError(
                f"Kafka consumer {self.url}: cannot reach the cluster: {_kafka.describe(e)}"
            ) from e
        existing = {name for name, t in metadata.topics.items() if t.error is None}
        missing = [t for t in self.topics if not t.startswith("^") and t not in existing]
        if self.create:
            wanted = [
                *missing,
                *([self.dead_letter_topic] if self.dead_letter_topic not in existing else []),
            ]
            self._create(wanted)
            missing = []
        if missing:
            consumer.close()
            known = ", ".join(sorted(t for t in existing if not t.startswith("__"))) or "none"
            raise ConfigError(
                f"Kafka consumer {self.url}: no topic {', '.join(missing)} on the cluster "
                f"(topics: {known})"
            )
        consumer.subscribe(
            self.topics, on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
        )
        self._joined_at = self._epoch  # until an assignment comes, the join is pending
        self._consumer = consumer

    def _create(self, topics: list[str]) -> None:
        """Create `topics` (one partition each, the broker's replication factor)."""
        kafka = self._kafka
        if not topics:
            return
        admin = _kafka.client(kafka.admin.AdminClient, dict(self._base), self.url)
        futures = admin.create_topics(
            [kafka.admin.NewTopic(t, 1, -1) for t in topics], request_timeout=self.timeout
        )
        for name, future in futures.items():
            try:
                future.result()
                log.info("Kafka consumer %s: created topic %s", self.url, name)
            except kafka.KafkaException as e:
                if e.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise _kafka.sink_error(
                        e,
                        f"Kafka consumer {self.url}: cannot create topic {name!r}: "
                        f"{_kafka.describe(e)}",
                    ) from e

    def fetch(self, limit: int, timeout: float) -> list[Delivery]:
        if self._consumer is None:
            self.connect()
        try:
            messages = self._consumer.consume(limit, timeout)
        except (self._kafka.KafkaException, RuntimeError) as e:
            raise TransientSinkError(f"Kafka consumer {self.url}: {_kafka.describe(e)}") from e
        found: list[Delivery] = []
        pending = self._pending
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise TransientSinkError(f"Kafka consumer {self.url}: {error.str()}")
                log.info("Kafka consumer %s: %s", self.url, error.str())
                continue
            where = (message.topic(), message.partition())
            lane = f"{where[0]}/{where[1]}"
            part = pending.get(where)
            if part is None:  # a partition not (or no longer) ours
                continue
            offset = message.offset()
            part.offsets.append(offset)
            token = (where, offset, message)
            value = message.value()
            if value is None:  # a tombstone: nothing to handle
                self._done([(where, offset, part.epoch)])
                continue
            change_id = replay = None
            for name, header in message.headers() or ():
                if name == "rowcast-id" and header is not None:
                    change_id = header.decode()
                elif name == REPLAY and header is not None:
                    replay = header.decode()
            if replay is not None and replay != self.group:  # another group's dead letter
                self._done([(where, offset, part.epoch)])
                continue
            delivery = decode(
                change_id, value, token, part.epoch, replay is not None, key=message.key()
            )
            delivery.lane = lane  # a partition's messages in one worker, in offset order
            found.append(delivery)
        return found

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        self._done([(d.token[0], d.token[1], d.generation) for d in deliveries])

    def dead_letter(self, parked: Sequence[tuple[Delivery, str]]) -> None:
        kafka = self._kafka
        if self._producer is None:
            self._producer = _kafka.client(
                kafka.Producer, {**self._base, "enable.idempotence": True}, self.url
            )
        failed: list[Any] = []
        try:
            for delivery, error in parked:
                (topic, partition), offset, message = delivery.token
                headers = list(message.headers() or [])
                headers += [
                    ("rowcast-error", error),
                    ("rowcast-group", self.group),
                    ("rowcast-topic", topic),
                    ("rowcast-partition", str(partition)),
                    ("rowcast-offset", str(offset)),
                ]
                self._producer.produce(
                    self.dead_letter_topic,
                    message.value(),
                    message.key(),
                    headers=headers,
                    on_delivery=lambda e, _: failed.append(e) if e else None,
                )
            left = self._producer.flush(self.timeout)
        except kafka.KafkaException as e:
            raise _kafka.sink_error(
                e, f"Kafka consumer {self.url}: dead letters not written: {_kafka.describe(e)}"
            ) from e
        if failed or left:
            why = _kafka.describe(failed[0]) if failed else f"no ack within {self.timeout:g} s"
            raise TransientSinkError(
                f"Kafka consumer {self.url}: dead letters to {self.dead_letter_topic!r} not "
                f"written: {why}"
            )
        self.ack([delivery for delivery, _ in parked])

    def release(self, deliveries: Sequence[Delivery]) -> None:
        """Nothing to do: not committed, they are read again after a restart or rebalance."""

    def reset(self) -> None:
        """Nothing to drop: librdkafka reconnects by itself, and the group stays joined."""

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                if self._epoch == self._joined_at:
                    self._finish_joining(consumer)
                consumer.close()  # leaves the group at once: its partitions move now
            except (self._kafka.KafkaException, RuntimeError) as e:
                log.info("Kafka consumer %s: closing: %s", self.url, _kafka.describe(e))
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.flush(min(self.timeout, 5))

    # ------------------------------------------------------------ offsets and the group

    def _finish_joining(self, consumer: Any) -> None:
        """Wait (bounded) for a join still in progress before leaving the group.

        A member that leaves while its join is pending can leave the group waiting for
        it: tansu keeps every later member of that group out for good, and Kafka until
        the session times out. So a consumer stopped in its first seconds takes its
        assignment first (the messages fetched meanwhile are not handled nor
        committed: the group reads them again), then leaves cleanly.
        """
        log.info("Kafka consumer %s: finishing the group join before leaving it", self.url)
        deadline = time.monotonic() + min(self.timeout, _JOIN_WAIT)
        try:
            while self._epoch == self._joined_at and time.monotonic() < deadline:
                consumer.consume(500, 0.1)
        except (self._kafka.KafkaException, RuntimeError) as e:  # it leaves all the same
            log.info("Kafka consumer %s: joining: %s", self.url, _kafka.describe(e))

    def _done(self, handled: Sequence[tuple[Partition, int, int]]) -> None:
        """Mark offsets handled; commit each partition's grown handled prefix."""
        commits: dict[Partition, int] = {}
        for where, offset, epoch in handled:
            part = self._pending.get(where)
            if part is None or part.epoch != epoch:
                continue  # the partition moved to another consumer: it handles it again
            committed = part.done(offset)
            if committed is not None:
                commits[where] = committed
        if commits and self._consumer is not None:
            self._commit(commits)

    def _commit(self, commits: dict[Partition, int]) -> None:
        kafka = self._kafka
        offsets = [kafka.TopicPartition(t, p, o) for (t, p), o in commits.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except kafka.KafkaException as e:
            raise SinkError(
                f"Kafka consumer {self.url}, group {self.group!r}: commit failed: "
                f"{_kafka.describe(e)}"
            ) from e

    def _assigned(self, consumer: Any, partitions: list[Any]) -> None:
        self._epoch += 1
        for p in partitions:
            self._pending[(p.topic, p.partition)] = _Pending(self._epoch)
        log.info(
            "Kafka consumer %s: assigned %s",
            self.url,
            ", ".join(f"{p.topic}[{p.partition}]" for p in partitions),
            extra={"event": "assigned"},
        )

    def _revoked(self, consumer: Any, partitions: list[Any]) -> None:
        # what was handled is committed already (at each ack): forget the rest, whose
        # acks would commit a partition another consumer reads now
        for p in partitions:
            self._pending.pop((p.topic, p.partition), None)
        log.info(
            "Kafka consumer %s: revoked %s",
            self.url,
            ", ".join(f"{p.topic}[{p.partition}]" for p in partitions),
            extra={"event": "revoked"},
        )

    def _lost(self, consumer: Any, partitions: list[Any]) -> None:
        self._revoked(consumer, partitions)

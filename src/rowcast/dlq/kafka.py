"""The dead letters of Kafka consumers: the topic ``<group>.dead`` (``kafka://``).

The consumer's own URL serves; its options: ``group`` (only the dead letters that
group parked, in ``<group>.dead``), ``dead_letter`` (the topic, when the consumer was
given one), ``timeout`` (seconds, default 10); without either, every topic whose name
ends in ``.dead``. A dead letter is a message of that topic with the original's key,
value and headers plus ``rowcast-error``, ``rowcast-group``, ``rowcast-topic``,
``rowcast-partition`` and ``rowcast-offset`` (`rowcast.consume.kafka`). A topic named
(by ``dead_letter`` or ``group``) that does not exist is a `ConfigError` naming the
dead-letter topics there.

A Kafka topic is append-only, so a dead letter replayed or dropped is not deleted:
the dead letters still to see are those past the offsets committed, in each
partition of the dead-letter topic, by the consumer group ``rowcast-dlq:<topic>``.
This is how Kafka tools mark what was read (Spring Kafka replays a dead-letter topic
with a consumer group the same way), so ``kafka-consumer-groups --describe --group
rowcast-dlq:<topic>`` shows the letters waiting as that group's lag, and the letters
themselves stay in the topic, a history, until its retention removes them.
(Tombstones would need a compacted topic and a key per letter, where a dead letter
keeps its row's key; ``DeleteRecords`` is not offered by every broker.)

Replaying produces each letter back to the topic and partition it came from (by its
key when that partition is gone), in the order it was parked, with the original's
headers and ``rowcast-replay: <group>``: that group's consumers handle it again, other
groups reading the topic skip it. The offsets move past each 500 letters once the
broker has them all, so a replay cut short sends at most those again. Since the
offsets mark a prefix of each partition, ``replay`` and ``drop`` for one group of a
topic that several groups share stop, in each partition, at the first letter of
another group (its own letters after it wait for it; a warning says how many); so
does ``replay`` at a message that does not say where it came from.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from .. import _kafka
from .._url import number
from ..change import Change
from ..consume.transport import REPLAY
from ..errors import ConfigError, SinkError
from . import DeadLetter, Place

__all__ = ["KafkaDeadLetters"]

log = logging.getLogger(__name__)
T = TypeVar("T")

_OPTIONS = ("group", "dead_letter", "timeout", "topics", "create")  # the consumer's
# the headers parking added (and a former replay's): not sent back
_PARKING = frozenset(
    ("rowcast-error", "rowcast-group", "rowcast-topic", "rowcast-partition", "rowcast-offset",
     REPLAY)
)  # fmt: skip
_CHUNK = 500  # letters replayed between two commits of the mark


def _text(value: bytes | str | None) -> str | None:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _time(message: Any) -> float | None:
    kind, stamp = message.timestamp()
    return stamp / 1000 if kind else None  # kind 0: TIMESTAMP_NOT_AVAILABLE


def _headers(message: Any) -> dict[str, str | None]:
    return {name: _text(value) for name, value in message.headers() or ()}


def mark_group(topic: str) -> str:
    """The consumer group whose committed offsets mark what is done in dead topic `topic`."""
    return f"rowcast-dlq:{topic}"


class KafkaDeadLetters:
    """The dead-letter topics at a Kafka URL (see the module docstring)."""

    def __init__(self, url: str, **options: Any) -> None:
        parsed = _kafka.parse(url, "a Kafka dead-letter URL", _OPTIONS, lists=("topics",))
        self.url = parsed.url
        given = {**parsed.options, **{k: str(v) for k, v in options.items() if v is not None}}
        unknown = [name for name in given if name not in _OPTIONS]
        if unknown:
            raise ConfigError(f"{self.url}: Kafka dead letters take no option {unknown[0]!r}")
        self.group: str | None = given.get("group")
        named = given.get("dead_letter") or (
            _kafka.topic_name(f"{self.group}.dead") if self.group else None
        )
        self.topic: str | None = named
        self.timeout = number(url, "timeout", None, given, 10.0)
        self._kafka = _kafka.driver("Kafka dead letters")
        self._base: dict[str, Any] = {
            "bootstrap.servers": parsed.servers,
            "socket.connection.setup.timeout.ms": int(min(self.timeout, 30) * 1000),
            **parsed.config,
        }
        _kafka.client(self._kafka.Consumer, {"group.id": "rowcast-dlq", **self._base}, self.url)

    @property
    def looked_at(self) -> str:
        """Where this looked for dead letters: said when it found none."""
        if self.topic:
            return f"none past the offsets of group {mark_group(self.topic)} in {self.topic}"
        return (
            "no topic named *.dead holds any (a consumer parks in <group>.dead, or in its "
            "?dead_letter= topic: add ?group=GROUP or ?dead_letter=TOPIC to the URL)"
        )

    # ------------------------------------------------------------ reading

    def _run(self, work: Callable[[], T]) -> T:
        kafka = self._kafka
        try:
            return work()
        except (kafka.KafkaException, RuntimeError) as e:
            raise SinkError(f"Kafka dead letters {self.url}: {_kafka.describe(e)}") from e

    def _topics(self) -> list[str]:
        """The dead-letter topics to look at; a named one that does not exist is an error."""
        _kafka.reach(self._base, f"Kafka dead letters {self.url}", self.timeout, SinkError)
        admin = _kafka.client(self._kafka.admin.AdminClient, dict(self._base), self.url)
        try:
            metadata = admin.list_topics(timeout=self.timeout)
        except self._kafka.KafkaException as e:
            raise SinkError(
                f"Kafka dead letters {self.url}: cannot reach the cluster: {_kafka.describe(e)}"
            ) from e
        existing = {name for name, t in metadata.topics.items() if t.error is None}
        dead = sorted(name for name in existing if name.endswith(".dead"))
        if self.topic is None:
            return dead
        if self.topic not in existing:
            raise ConfigError(
                f"Kafka dead letters {self.url}: no topic {self.topic} on the cluster (a "
                "consumer parks in <group>.dead, or its ?dead_letter=; dead-letter topics "
                f"there: {', '.join(dead) or 'none'})"
            )
        return [self.topic]

    def _consumer(self, topic: str) -> Any:
        config = {
            "group.id": mark_group(topic),
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",  # no mark yet, or past a re-created topic's end
            "isolation.level": "read_committed",
            **self._base,
        }
        return _kafka.client(self._kafka.Consumer, config, self.url)

    def _messages(self, consumer: Any, topic: str) -> Iterator[Any]:
        """The messages of `topic` past the mark, partition by partition, in offset order.

        Read up to each partition's end as the fetch sees it (tansu's ListOffsets
        answers one less than the high watermark, so watermarks are not asked for).
        """
        kafka = self._kafka
        metadata = consumer.list_topics(topic, timeout=self.timeout).topics[topic]
        partitions = [kafka.TopicPartition(topic, p) for p in sorted(metadata.partitions)]
        marks = consumer.committed(partitions, timeout=self.timeout)
        for mark in marks:
            start = mark.offset if mark.offset >= 0 else kafka.OFFSET_BEGINNING
            consumer.assign([kafka.TopicPartition(topic, mark.partition, start)])
            while True:
                message = consumer.poll(self.timeout)
                if message is None:
                    raise SinkError(
                        f"Kafka dead letters {self.url}: {topic}[{mark.partition}] gave "
                        f"nothing within {self.timeout:g} s (?timeout= waits longer)"
                    )
                error = message.error()
                if error is not None:
                    if error.code() == kafka.KafkaError._PARTITION_EOF:
                        break
                    raise kafka.KafkaException(error)
                if message.partition() == mark.partition:  # not one left from the last
                    yield message

    def _mine(self, headers: dict[str, str | None]) -> bool:
        return self.group is None or headers.get("rowcast-group") == self.group

    def places(self) -> list[Place]:
        def look() -> list[Place]:
            places = []
            for topic in self._topics():
                consumer = self._consumer(topic)
                try:
                    found = [
                        _time(m) for m in self._messages(consumer, topic) if self._mine(_headers(m))
                    ]
                finally:
                    consumer.close()
                if found:
                    times = [t for t in found if t is not None]
                    places.append(
                        Place(topic, len(found), min(times, default=None), max(times, default=None))
                    )
            return places

        return self._run(look)

    def read(self, limit: int | None = None) -> list[DeadLetter]:
        def look() -> list[DeadLetter]:
            letters: list[DeadLetter] = []
            for topic in self._topics():
                consumer = self._consumer(topic)
                try:
                    for message in self._messages(consumer, topic):
                        if limit is not None and len(letters) >= limit:
                            return letters
                        if self._mine(_headers(message)):
                            letters.append(_letter(message))
                finally:
                    consumer.close()
            return letters

        return self._run(look)

    # ------------------------------------------------------------ replay and drop

    def _done(self, topic: str, replaying: bool, act: Callable[[list[Any]], None]) -> int:
        """Call `act` with each run of up to 500 letters of `topic` to replay or drop, in
        order, and move the mark past them after each; how many were done."""
        consumer = self._consumer(topic)
        done = 0
        try:
            chunk: list[Any] = []
            blocked: dict[int, int] = {}  # partition: letters of the group left behind
            for message in self._messages(consumer, topic):
                headers = _headers(message)
                partition = message.partition()
                if partition in blocked:
                    blocked[partition] += self._mine(headers)
                    continue
                if not self._mine(headers) or (replaying and not headers.get("rowcast-topic")):
                    blocked[partition] = 0
                    continue
                chunk.append(message)
                if len(chunk) >= _CHUNK:
                    done += self._commit(consumer, chunk, act)
                    chunk = []
            done += self._commit(consumer, chunk, act)
        finally:
            consumer.close()
        for partition, left in sorted(blocked.items()):
            if left:
                log.warning(
                    "Kafka dead letters %s: %d of group %s in %s[%d] wait behind a letter "
                    "of another group (or one that says not where it came from): %s "
                    "without --group takes them all",
                    self.url,
                    left,
                    self.group,
                    topic,
                    partition,
                    "replay" if replaying else "drop",
                )
        return done

    def _commit(self, consumer: Any, chunk: list[Any], act: Callable[[list[Any]], None]) -> int:
        if not chunk:
            return 0
        act(chunk)
        ends: dict[tuple[str, int], int] = {}
        for message in chunk:
            ends[(message.topic(), message.partition())] = message.offset() + 1
        offsets = [self._kafka.TopicPartition(t, p, o) for (t, p), o in ends.items()]
        consumer.commit(offsets=offsets, asynchronous=False)
        return len(chunk)

    def replay(self, to: str | None = None) -> int:
        if to is not None:
            raise ConfigError(
                "a consumer's dead letters go back to their own topic: leave out --to"
            )
        kafka = self._kafka

        def send() -> int:
            producer = _kafka.client(
                kafka.Producer, {**self._base, "enable.idempotence": True}, self.url
            )
            # every topic's partitions (asking for one topic could create it)
            metadata = producer.list_topics(timeout=self.timeout).topics
            existing = {n: len(t.partitions) for n, t in metadata.items() if t.error is None}

            def count(topic: str) -> int:
                """How many partitions `topic` has; gone: an error (producing would create it)."""
                if topic not in existing:
                    raise ConfigError(
                        f"Kafka dead letters {self.url}: the topic {topic} they came from is "
                        "gone; create it again (kafka-topics --create), or drop them"
                    )
                return existing[topic]

            def produce(chunk: list[Any]) -> None:
                records = []  # every origin checked before the first is sent
                for message in chunk:
                    headers = _headers(message)
                    origin = str(headers["rowcast-topic"])
                    partition = str(headers.get("rowcast-partition") or "")
                    kept = [(n, v) for n, v in message.headers() or () if n not in _PARKING]
                    kept.append((REPLAY, headers.get("rowcast-group") or ""))
                    partitions = count(origin)
                    where = (  # its row's partition; by its key when that one is gone
                        {"partition": int(partition)}
                        if partition.isdigit() and int(partition) < partitions
                        else {}
                    )
                    records.append((origin, message, kept, where))
                failed: list[Any] = []
                for origin, message, kept, where in records:
                    producer.produce(
                        origin,
                        message.value(),
                        message.key(),
                        headers=kept,
                        on_delivery=lambda e, _: failed.append(e) if e else None,
                        **where,
                    )
                left = producer.flush(self.timeout)
                if failed or left:
                    why = (
                        _kafka.describe(failed[0])
                        if failed
                        else f"no ack within {self.timeout:g} s"
                    )
                    raise _kafka.sink_error(
                        failed[0] if failed else None,
                        f"Kafka dead letters {self.url}: replay not written: {why} (what "
                        "was written before stays replayed; run it again for the rest)",
                    )

            try:
                return sum(self._done(topic, True, produce) for topic in self._topics())
            finally:
                producer.flush(min(self.timeout, 5))

        return self._run(send)

    def drop(self) -> int:
        def mark() -> int:
            return sum(self._done(topic, False, lambda chunk: None) for topic in self._topics())

        return self._run(mark)

    def close(self) -> None:
        """Nothing held: each call has clients of its own."""


def _letter(message: Any) -> DeadLetter:
    headers = _headers(message)
    value = message.value()
    try:
        change = Change.from_json(value) if value is not None else None
    except (ValueError, TypeError):
        change = None
    return DeadLetter(
        place=message.topic(),
        handle=f"{message.partition()}:{message.offset()}",
        at=_time(message),
        change_id=headers.get("rowcast-id"),
        change=change,
        why=headers.get("rowcast-error") or "",
        group=headers.get("rowcast-group"),
        origin=headers.get("rowcast-topic"),
    )

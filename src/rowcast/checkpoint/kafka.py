"""`KafkaCheckpoint`: a relay's position as a record of a Kafka topic (``kafka://``).

URL: ``kafka://host:port[,host:port...]?topic=<topic>[&name=<relay>][&...]``
(options with a dot are librdkafka's, as for the Kafka sink), options:

``topic``
    the topic of checkpoints, default ``rowcast-checkpoints``; created when missing
    with one partition and ``cleanup.policy=compact`` (Kafka keeps the last record
    of each name). Several relays may share it: each writes under its ``name``.
``transactional_id``
    the relay's transactional id, default ``rowcast-relay.<topic>.<name>``: two
    relays of one name are one relay, and the one started last fences the other.
``timeout``
    seconds to reach the cluster and to read or write, default 30.

A save is a record keyed by the checkpoint's name, its value
``{"position": ..., "updated_at": <epoch seconds>}``. `load` reads the name's last
record (``isolation.level=read_committed``), searching back from the end of the
partition the name hashes to.

Exactly once: a Kafka sink on the same cluster (same bootstrap servers) that the
relay delivers to alone joins this checkpoint (`rowcast.sinks.kafka.KafkaSink.join`):
its producer becomes transactional with this ``transactional_id``, and each batch
and the position of its last transaction are written in one Kafka transaction.
`load` first makes the producer known to the cluster (``init_transactions``), which
aborts whatever transaction a previous incarnation of the relay left open and fences
it (a zombie's next write is refused), and only then reads the position, so the
relay resumes right after the last batch committed. A `read_committed` consumer then
sees every change once, whatever moment the relay was killed at. `save` of the
position a delivery committed is a no-op; of another position (a dead-lettered
transaction, see `rowcast.relay`) it is a transaction of its own.

With any other sink (or other sinks beside it) a save is a plain record, written
once the broker acknowledged it: at least once, as with the other checkpoints.

Reports (`rowcast.checkpoint.report`) are records of the same topic keyed
``report:<name>`` (no checkpoint name holds a ``:``), written by a plain producer;
`read_reports` reads the topic to its end and keeps each name's last one, creating
nothing.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from typing import Any, Protocol

from .. import _kafka
from .._url import number
from ..errors import ConfigError, StoreError
from .base import BaseCheckpoint, parse_report

__all__ = ["REPORT_PREFIX", "KafkaCheckpoint"]

REPORT_PREFIX = "report:"  #: + the name: the key of a report record

_OPTIONS = ("topic", "name", "transactional_id", "timeout")
_FIRST_WINDOW = 64  # records read back from the end before reading further back
# a read to the end of a partition: the broker answers a fetch at the end at once, not
# after waiting for new records (librdkafka's default: 500 ms, at every load and report)
_FETCH_WAIT_MS = 10


class Writer(Protocol):
    """A sink that writes the saves in its transactions (`rowcast.sinks.kafka.KafkaSink`)."""

    def begin(self) -> None:
        """Register the transactional producer with the cluster, fencing older ones."""

    def save_position(self, position: str) -> None:
        """Commit a transaction holding only the record of `position`."""


class KafkaCheckpoint(BaseCheckpoint):
    """The last record of `name` in a Kafka topic (see the module docstring)."""

    def __init__(self, url: str, name: str = "default") -> None:
        super().__init__(url, name)
        parsed = _kafka.parse(url, "a Kafka checkpoint", _OPTIONS)
        options = parsed.options
        self.topic: str = options.get("topic", "rowcast-checkpoints")
        if not self.topic or _kafka.topic_name(self.topic) != self.topic:
            raise ConfigError(
                f"{self.url}: ?topic= is letters, digits, '.', '_' and '-', not {self.topic!r}"
            )
        self.transactional_id: str = options.get(
            "transactional_id", f"rowcast-relay.{self.topic}.{name}"
        )
        self.timeout: float = number(url, "timeout", None, options, 30.0)
        self.servers = parsed.servers
        self._kafka = _kafka.driver("a Kafka checkpoint")
        self._config: dict[str, Any] = {
            "bootstrap.servers": parsed.servers,
            "socket.connection.setup.timeout.ms": int(min(self.timeout, 30) * 1000),
            **parsed.config,
        }
        self._writer: Writer | None = None  # the sink whose transactions carry the saves
        self._committed: str | None = None  # the position the writer's last commit holds
        self._producer: Any = None  # for saves without a writer
        self._partition = 0
        self._partitions = 1
        self._lock = threading.Lock()
        self._connect()

    def __repr__(self) -> str:
        return f"<KafkaCheckpoint {self.url!r} topic={self.topic!r} name={self.name!r}>"

    def _connect(self) -> None:
        """Reach the cluster; create the topic when missing; learn its partitions."""
        why = _kafka.unreachable(str(self._config.get("bootstrap.servers", "")), 5)
        if why is not None:
            self._fail("connect", ConnectionError(f"cannot reach the cluster: {why}"))
        admin = _kafka.client(self._kafka.admin.AdminClient, self._config, self.url)
        try:
            metadata = admin.list_topics(timeout=min(self.timeout, 30))
            topic = metadata.topics.get(self.topic)
            if topic is None or topic.error is not None:
                new = self._kafka.admin.NewTopic(
                    self.topic, 1, -1, config={"cleanup.policy": "compact"}
                )
                future = admin.create_topics([new], request_timeout=min(self.timeout, 30))
                try:
                    future[self.topic].result()
                except self._kafka.KafkaException as e:
                    if e.args[0].name() != "TOPIC_ALREADY_EXISTS":
                        raise
                partitions = 1
            else:
                partitions = len(topic.partitions) or 1
        except self._kafka.KafkaException as e:
            self._fail("connect", _Described(e))
        self._partitions = partitions
        self._partition = zlib.crc32(self.name.encode()) % partitions

    # ------------------------------------------------------------ exactly once

    def attach(self, sink: Writer) -> None:
        """Write saves through `sink`'s transactions (`KafkaSink.join` calls it)."""
        self._writer = sink

    def record(
        self, position: str, transaction: str | None = None
    ) -> tuple[str, bytes, bytes, int]:
        """(topic, key, value, partition) of the record that saves `position`, written in
        the sink's transaction labelled `transaction` (its ``rowcast-transaction`` header)."""
        saved: dict[str, Any] = {"position": position, "updated_at": time.time()}
        if transaction is not None:
            saved["transaction"] = transaction
        value = json.dumps(saved)
        return self.topic, self.name.encode(), value.encode(), self._partition

    def committed(self, position: str) -> None:
        """The writer committed a transaction holding `position` (a save that is done)."""
        self._committed = position

    # ------------------------------------------------------------ the contract

    def _load(self) -> str | None:
        if self._writer is not None:
            try:
                self._writer.begin()  # fence a previous incarnation first (module docstring)
            except Exception as e:
                self._fail("fence the relay's previous transactions", e)
        consumer = _kafka.client(
            self._kafka.Consumer,
            {
                "fetch.wait.max.ms": _FETCH_WAIT_MS,
                **self._config,
                "group.id": f"rowcast-checkpoint-{self.name}",  # never joined nor committed
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
            },
            self.url,
        )
        try:
            return self._last(consumer)
        except self._kafka.KafkaException as e:
            self._fail("load", _Described(e))
        finally:
            consumer.close()

    def _last(self, consumer: Any) -> str | None:
        """The last position saved under the name: read back from the end, window by window."""
        kafka = self._kafka
        partition = kafka.TopicPartition(self.topic, self._partition)
        low, high = consumer.get_watermark_offsets(partition, timeout=self.timeout, cached=False)
        window, end = _FIRST_WINDOW, None
        start = max(low, high - window)
        deadline = time.monotonic() + self.timeout
        key = self.name.encode()
        while True:
            found: bytes | None = None
            consumer.assign([kafka.TopicPartition(self.topic, self._partition, start)])
            while True:
                message = consumer.poll(max(0.0, min(1.0, deadline - time.monotonic())))
                if message is None:
                    if time.monotonic() >= deadline:
                        raise StoreError(
                            f"checkpoint {self.name!r} at {self.url}: load: no end of topic "
                            f"{self.topic!r} within {self.timeout:g} s"
                        )
                    continue
                error = message.error()
                if error is not None:
                    if error.code() == kafka.KafkaError._PARTITION_EOF:
                        break
                    raise kafka.KafkaException(error)
                if end is not None and message.offset() >= end:
                    break
                if message.key() == key:
                    found = message.value()
            if found is not None:
                return self._position(found)
            if start <= low:
                return None
            end, window = start, window * 8
            start = max(low, start - window)

    def _position(self, value: bytes) -> str:
        try:
            position = json.loads(value)["position"]
        except (ValueError, TypeError, KeyError) as e:
            raise StoreError(
                f"checkpoint {self.name!r} at {self.url}: the last record of {self.name!r} in "
                f"topic {self.topic!r} is not a rowcast checkpoint ({value[:80]!r}); give "
                "the relay another ?name= or ?topic="
            ) from e
        if not isinstance(position, str) or not position:
            raise StoreError(
                f"checkpoint {self.name!r} at {self.url}: the last record holds no position"
            )
        return position

    def _save_report(self, text: str) -> None:
        key = f"{REPORT_PREFIX}{self.name}"
        self._produce(key, text, self._partition_of(key), "saving the report")

    def _partition_of(self, key: str) -> int:
        return zlib.crc32(key.encode()) % self._partitions

    @classmethod
    def read_reports(cls, url: str, name: str | None = None) -> list[dict[str, Any]]:
        """The last report of each name (`name`'s only, when given) in the URL's topic."""
        parsed = _kafka.parse(url, "a Kafka checkpoint", _OPTIONS)
        topic = parsed.options.get("topic", "rowcast-checkpoints")
        timeout = number(url, "timeout", None, parsed.options, 30.0)
        kafka = _kafka.driver("a Kafka checkpoint")
        config = {"bootstrap.servers": parsed.servers, **parsed.config}
        consumer = _kafka.client(
            kafka.Consumer,
            {
                "fetch.wait.max.ms": _FETCH_WAIT_MS,
                **config,
                "group.id": "rowcast-reports",  # never joined nor committed
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
            },
            parsed.url,
        )
        where = f"{parsed.url} topic {topic!r}"
        found: dict[str, bytes] = {}
        try:
            metadata = consumer.list_topics(timeout=min(timeout, 30))
            if topic not in metadata.topics or metadata.topics[topic].error is not None:
                return []  # nothing reported yet (listing them all creates none)
            partitions = sorted(metadata.topics[topic].partitions)
            wanted = f"{REPORT_PREFIX}{name}".encode() if name else None
            for partition in partitions:
                consumer.assign([kafka.TopicPartition(topic, partition, 0)])
                deadline = time.monotonic() + timeout
                while True:
                    message = consumer.poll(max(0.0, min(1.0, deadline - time.monotonic())))
                    if message is None:
                        if time.monotonic() >= deadline:
                            raise StoreError(f"reading reports at {where}: no end in time")
                        continue
                    error = message.error()
                    if error is not None:
                        if error.code() == kafka.KafkaError._PARTITION_EOF:
                            break
                        raise kafka.KafkaException(error)
                    key = message.key() or b""
                    if key.startswith(REPORT_PREFIX.encode()) and wanted in (None, key):
                        found[key.decode()] = message.value()
        except kafka.KafkaException as e:
            raise StoreError(f"reading reports at {where} failed: {_kafka.describe(e)}") from e
        finally:
            consumer.close()
        return [parse_report(value, f"{where} key {key!r}") for key, value in found.items()]

    def _save(self, position: str) -> None:
        if self._writer is not None:
            if position != self._committed:
                try:
                    self._writer.save_position(position)
                except Exception as e:
                    self._fail("save", e)
            return
        _, key, value, partition = self.record(position)
        self._produce(key.decode(), value.decode(), partition, "save")

    def _produce(self, key: str, value: str, partition: int, doing: str) -> None:
        """One record with the plain producer, acknowledged when this returns."""
        with self._lock:
            if self._producer is None:
                self._producer = _kafka.client(
                    self._kafka.Producer,
                    {**self._config, "enable.idempotence": True, "acks": "all"},
                    self.url,
                )
            failed: list[Any] = []
            try:
                self._producer.produce(
                    self.topic,
                    value,
                    key,
                    partition=partition,
                    on_delivery=lambda error, _: failed.append(error) if error else None,
                )
                left = self._producer.flush(self.timeout)
            except self._kafka.KafkaException as e:
                self._fail(doing, _Described(e))
            if failed:
                self._fail(doing, _Described(failed[0]))
            if left:
                raise StoreError(
                    f"checkpoint {self.name!r} at {self.url}: {doing}: not acknowledged "
                    f"within {self.timeout:g} s"
                )

    def _close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.flush(min(self.timeout, 5))


class _Described(Exception):
    """A Kafka error in librdkafka's words, with its code's name (for `_fail`'s message)."""

    def __init__(self, error: Any) -> None:
        super().__init__(_kafka.describe(error))
        self.error = error
        if isinstance(error, BaseException):
            self.__cause__ = error

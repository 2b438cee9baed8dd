"""`KafkaSink`: every change a Kafka message (``kafka://``).

URL: ``kafka://[user:password@]host:port[,host:port...][?option=value&...]``
(`rowcast._kafka`: options with a dot are librdkafka's, e.g. ``compression.type=zstd``,
``linger.ms=20``, ``batch.size=...``, ``security.protocol=SSL``), rowcast's options:

``topic``
    one topic for every change; without it, one topic per table named
    ``<prefix>.<schema>.<table>`` (``<prefix>.<table>`` without a schema), as
    Debezium names them. A character Kafka does not take in a topic name
    (anything but letters, digits, ``.``, ``_``, ``-``) is written ``_``.
``prefix``
    the first part of per-table topic names, default ``rowcast``.
``create``
    ``true`` (default): a missing topic is created (``partitions``,
    ``replication_factor``); ``false``: a missing topic is an error, at start for
    ``topic=``, else at the first change of its table.
``partitions``, ``replication_factor``
    of the topics the sink creates; default 1 partition (one order per table) and
    the broker's default replication factor.
``format``
    ``rowcast`` (default): the value is ``Change.to_json()``; ``debezium``: Debezium's
    change event envelope (`rowcast.debezium`, its logical name the ``prefix``), the
    key Debezium's key struct.
``schemas``
    with ``format=debezium``: ``true`` wraps key and value as Kafka Connect's JSON
    converter does with ``schemas.enable=true``; default ``false``.
``tombstones``
    with ``format=debezium``: ``true`` (default) follows each delete with a tombstone
    (the same key, a null value) for log compaction, as Debezium does.
``db``
    with ``format=debezium``: the database name for ``source.db`` of PostgreSQL
    changes (a change carries its schema, not its database).
``timeout``
    seconds for the broker to acknowledge a batch (``message.timeout.ms``) and
    to answer at start, default 30.

A change is a message with

=======================  ==================================================
key                      the row's primary key as JSON (``7``, ``[7, "eu"]``);
                         with ``topic=``, ``{"schema":..., "table":..., "pk":...}``;
                         Debezium's key struct with ``format=debezium``. One
                         row's changes thus go to one partition, in order.
value                    ``Change.to_json()`` (or Debezium's envelope)
header ``rowcast-id``    the change id (`rowcast.sinks.change_id`)
header ``rowcast-position``  the source position of the change's transaction
=======================  ==================================================

The producer is idempotent (``enable.idempotence=true``, ``acks=all``): a message
the client retries is stored once. `deliver` produces the batch and returns once
the broker acknowledged every message (its delivery report). Messages of one
partition keep commit order. Kafka does not deduplicate a re-delivered batch:
it arrives again with the same ``rowcast-id`` headers; exactly once takes a
Kafka checkpoint (`rowcast.checkpoint.kafka`): with it, each batch and the
relay's position are written in one Kafka transaction (`join`).

`check` connects and lists the topics: ``topic=`` must exist or be created now;
with per-table topics and ``create=true``, a cluster that says the user may not
create topics is a `ConfigError` at start.

Errors at the boundary (`rowcast._kafka.kind_of`): a broker that does not answer,
a leader moving, a timed-out delivery, too few in-sync replicas are a
`TransientSinkError`; a refused authorization or authentication, a message over
the topic's ``max.message.bytes``, an invalid topic, a policy, a missing topic
with ``create=false`` and a fenced transactional producer are a `PermanentSinkError`.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from .. import _kafka
from .._kafka import topic_name
from .._url import boolean, number
from ..change import Change
from ..debezium import DebeziumFormat
from ..errors import ConfigError, PermanentSinkError, SinkError, TransientSinkError
from ._kafka_messages import Message, debezium_messages, rowcast_messages
from ._kafka_topics import Topics
from .base import Batch, encoded

if TYPE_CHECKING:
    from ..checkpoint.kafka import KafkaCheckpoint

__all__ = ["KafkaSink", "topic_name"]

log = logging.getLogger(__name__)

_OPTIONS: Final = (
    "topic",
    "prefix",
    "create",
    "partitions",
    "replication_factor",
    "format",
    "schemas",
    "tombstones",
    "db",
    "timeout",
)
_FORMATS: Final = ("rowcast", "debezium")
_MAX_TOPIC = 249


class KafkaSink:
    """Deliver changes as Kafka messages (see the module docstring).

    The producer connects in the background from the first `check` or `deliver`;
    a broker that is down is a `TransientSinkError` after ``timeout``. Not
    thread-safe: one thread delivers at a time.
    """

    def __init__(
        self,
        url: str,
        *,
        topic: str | None = None,
        prefix: str | None = None,
        create: bool | None = None,
        partitions: int | None = None,
        replication_factor: int | None = None,
        format: str | None = None,
        schemas: bool | None = None,
        tombstones: bool | None = None,
        db: str | None = None,
        timeout: float | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        parsed = _kafka.parse(url, "the Kafka sink", _OPTIONS)
        self.url = parsed.url
        options = parsed.options
        self.topic: str | None = topic if topic is not None else options.get("topic")
        self.prefix: str = prefix if prefix is not None else options.get("prefix", "rowcast")
        if self.topic is not None and not self.topic:
            raise ConfigError(f"{self.url}: ?topic= needs a name, e.g. ?topic=rowcast.changes")
        if self.topic is not None and self.topic != topic_name(self.topic):
            raise ConfigError(
                f"{self.url}: a topic name is letters, digits, '.', '_' and '-', not {self.topic!r}"
            )
        if not self.prefix or self.prefix != topic_name(self.prefix):
            raise ConfigError(
                f"{self.url}: ?prefix= is letters, digits, '.', '_' and '-', not {self.prefix!r}"
            )
        self.create = boolean(url, "create", create, options, True)
        self.partitions: int = number(url, "partitions", partitions, options, 1, int)
        self.replication_factor: int = number(
            url, "replication_factor", replication_factor, options, -1, int
        )
        self.timeout: float = number(url, "timeout", timeout, options, 30.0)
        self.format: str = format if format is not None else options.get("format", "rowcast")
        if self.format not in _FORMATS:
            raise ConfigError(f"{self.url}: format is {' or '.join(_FORMATS)}, not {self.format!r}")
        self.schemas = boolean(url, "schemas", schemas, options, False)
        self.tombstones = boolean(url, "tombstones", tombstones, options, True)
        self.db: str | None = db if db is not None else options.get("db")
        self._kafka = _kafka.driver("the Kafka sink")
        # what the client raises (a SystemError wraps a fatal KafkaException, see _kafka)
        self._errors: tuple[type[BaseException], ...] = (self._kafka.KafkaException, SystemError)
        self.config: dict[str, Any] = {
            "bootstrap.servers": parsed.servers,
            "client.id": "rowcast-sink",
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": int(self.timeout * 1000),
            "socket.connection.setup.timeout.ms": int(min(self.timeout, 30) * 1000),
            **parsed.config,
            **(config or {}),
        }
        self._servers = parsed.servers
        self._debezium: DebeziumFormat | None = None
        if self.format == "debezium":
            self._debezium = DebeziumFormat(name=self.prefix, db=self.db, schemas=self.schemas)
        self._transactional: KafkaCheckpoint | None = None
        self._began = False  # init_transactions done
        self._fenced: str | None = None  # the fatal error that ended the transactions
        self._session = uuid.uuid4().hex[:12]  # with a count: each transaction's label
        self._transactions = 0
        self._lock = threading.Lock()
        self._transacting = threading.Lock()  # a batch's transaction, or a save's
        # librdkafka checks its properties when a client is made: made here (and dropped)
        # so a wrong one is an error at once, not at the first delivery
        _kafka.client(self._kafka.Producer, self.config, self.url)
        self._producer: Any = None
        self._failed: list[Any] = []  # delivery reports of this batch that failed
        self._topics = Topics(self)
        self._routes: dict[tuple[str | None, str], str] = {}
        self._closed = False

    def __repr__(self) -> str:
        where = f"topic={self.topic!r}" if self.topic else f"prefix={self.prefix!r}"
        return f"<KafkaSink {self.url!r} {where}{' closed' if self._closed else ''}>"

    @property
    def servers(self) -> str:
        """The bootstrap servers, ``host:port,...``."""
        return self._servers

    def topic_of(self, change: Change) -> str:
        """The topic `change` is produced to."""
        return self._route(change.schema, change.table)

    def _route(self, schema: str | None, table: str) -> str:
        key = (schema, table)
        topic = self._routes.get(key)
        if topic is None:
            topic = self.topic or topic_name(self.prefix, schema, table)
            if len(topic) > _MAX_TOPIC:
                raise PermanentSinkError(
                    f"Kafka sink {self.url}: topic name for {schema}.{table} is longer than "
                    f"{_MAX_TOPIC} characters",
                    "give the sink one ?topic= (or a shorter ?prefix=)",
                )
            self._routes[key] = topic
        return topic

    # ------------------------------------------------------------ the clients

    def _client(self) -> Any:
        if self._producer is None:
            config = dict(self.config)
            config["on_delivery"] = self._on_delivery
            config["delivery.report.only.error"] = True
            if self._transactional is not None:
                config["transactional.id"] = self._transactional.transactional_id
                config["transaction.timeout.ms"] = max(60_000, int(self.timeout * 2000))
            self._producer = _kafka.client(self._kafka.Producer, config, self.url)
        return self._producer

    def _on_delivery(self, error: Any, message: Any) -> None:
        if error is not None:
            self._failed.append(error)

    # ------------------------------------------------------------ check

    def check(self) -> None:
        """Reach the cluster, list its topics; make sure of ``topic=`` (module docstring).
        Makes the producer, whose handshake then runs before the first delivery."""
        if self._closed:
            raise PermanentSinkError(f"{self!r} is closed")
        if self._transactional is None:
            # made now (once a server takes a connection: no error logged by a client
            # that cannot connect): the idempotent producer's handshake with the cluster
            # (half a second in librdkafka, before its first message) runs during these
            # checks and the relay's start, not in the first batch's delivery
            _kafka.reach(self.config, f"Kafka sink {self.url}", self.timeout)
            self._client()
        self._topics.refresh(reached=self._transactional is None)
        if self.topic is not None:
            self._topics.ensure([self.topic])
        elif self.create:
            self._topics.may_create()
        if self._transactional is not None:
            self.begin()

    # ------------------------------------------------------------ deliver

    def deliver(self, batch: Batch) -> None:
        """Produce every change of `batch`; return once the broker acknowledged each.

        Raises `TransientSinkError` when the cluster does not acknowledge within
        ``timeout`` or fails for now, `PermanentSinkError` when it refuses a message
        for good (module docstring). Messages before the failed one may be stored;
        the retry sends them again (with the same ``rowcast-id``), except in a
        transaction (`join`), which is aborted whole.
        """
        if self._closed:
            raise PermanentSinkError(f"{self!r} is closed")
        entries = encoded(batch)  # every id first: a bad change sends nothing
        if not entries:
            return
        if self._debezium is None:
            messages = rowcast_messages(entries, self._route, one_topic=self.topic is not None)
        else:
            events = self._debezium.events(batch)
            messages = debezium_messages(entries, events, self._route, self.tombstones)
        self._topics.ensure([m[0] for m in messages])
        if self._transactional is not None:
            with self._transacting:  # a save of the checkpoint's may come from the source
                self._in_transaction(messages, entries[-1].change.position)
            return
        self._produce(messages)
        self._flush(len(messages))

    def _produce(self, messages: Sequence[Message], label: str | None = None) -> None:
        """Hand `messages` to the producer, in order (waiting when its queue is full),
        each with a ``rowcast-transaction`` header `label` when given."""
        producer = self._client()
        produce = producer.produce
        self._failed = []
        try:
            for topic, key, value, headers in messages:
                if label is not None:
                    headers = [*headers, ("rowcast-transaction", label)]
                try:
                    produce(topic, value, key, headers=headers)
                except BufferError:  # the local queue is full: let it drain, then go on
                    while True:
                        producer.poll(0.05)
                        try:
                            produce(topic, value, key, headers=headers)
                            break
                        except BufferError:
                            if self._failed:
                                raise self._refusal(len(messages)) from None
        except self._errors as e:
            raise _kafka.sink_error(
                e, f"Kafka sink {self.url}: produce failed: {_kafka.describe(e)}"
            ) from e

    def _flush(self, count: int) -> None:
        """Wait for every delivery report; raise what the first failure is."""
        try:
            left = self._client().flush(self.timeout + 5)
        except self._errors as e:
            raise _kafka.sink_error(
                e, f"Kafka sink {self.url}: delivery failed: {_kafka.describe(e)}"
            ) from e
        if self._failed:
            raise self._refusal(count)
        if left:
            raise TransientSinkError(
                f"Kafka sink {self.url}: {left} of {count} messages not acknowledged within "
                f"{self.timeout:g} s"
            )

    def _refusal(self, count: int) -> SinkError:
        error = self._failed[0]
        failed = len(self._failed)
        self._failed = []
        return _kafka.sink_error(
            error,
            f"Kafka sink {self.url}: {failed} of {count} messages not delivered: "
            f"{_kafka.describe(error)}",
        )

    # ------------------------------------------------------------ exactly once

    def join(self, checkpoint: object) -> bool:
        """Write each batch and `checkpoint`'s position in one Kafka transaction.

        True when `checkpoint` is a Kafka checkpoint (`rowcast.checkpoint.kafka`) on
        the same cluster (the same bootstrap servers): the producer becomes
        transactional with the checkpoint's ``transactional_id``, every `deliver`
        commits the batch with the position of its last transaction, and the
        checkpoint's `load` fences a previous incarnation first. False, and nothing
        changes, for any other checkpoint. Call before the first delivery.
        """
        from ..checkpoint.kafka import KafkaCheckpoint

        if not isinstance(checkpoint, KafkaCheckpoint) or checkpoint.servers != self.servers:
            return False
        if self._producer is not None and self._transactional is not checkpoint:
            self._producer.flush(self.timeout)
            self._producer = None  # made again, transactional
        self._transactional = checkpoint
        checkpoint.attach(self)
        return True

    def begin(self) -> None:
        """Register the transactional producer with the cluster (once): aborts what a
        previous producer of the same ``transactional_id`` left open, and fences it."""
        with self._lock:
            if self._fenced is not None:
                raise self._ended()
            if self._began:
                return
            producer = self._client()
            try:
                producer.init_transactions(self.timeout)
            except self._kafka.KafkaException as e:
                self._producer = None  # a failed init leaves the producer unusable
                raise _kafka.sink_error(
                    e,
                    f"Kafka sink {self.url}: cannot start transactions as "
                    f"{self._transactional_id()!r}: {_kafka.describe(e)}",
                ) from e
            self._began = True

    def _ended(self) -> PermanentSinkError:
        """The error of a transactional producer that failed for good (fenced)."""
        return PermanentSinkError(
            f"Kafka sink {self.url}: the transactional producer "
            f"{self._transactional_id()!r} ended: {self._fenced}",
            _kafka.fix_of_name("PRODUCER_FENCED"),
        )

    def _transactional_id(self) -> str:
        return "" if self._transactional is None else self._transactional.transactional_id

    def _in_transaction(self, messages: Sequence[Message], position: str | None) -> None:
        """`messages`, then the checkpoint's record of `position`, in one transaction.

        The batch is acknowledged before the checkpoint record is produced, so a
        checkpoint record is never stored without its batch, even on a broker that
        shows aborted transactions to read_committed consumers (tansu 0.6).
        """
        checkpoint = self._transactional
        assert checkpoint is not None
        assert position is not None
        self.begin()
        producer = self._producer
        failures: tuple[type[BaseException], ...] = (*self._errors, SinkError)
        try:
            producer.begin_transaction()
            self._transactions += 1
            label = f"{self._session}-{self._transactions}"
            self._produce(messages, label)
            self._flush(len(messages))
            self._produce_record(producer, position, label)
            self._commit(producer)
        except failures as e:
            self._abort(producer, e)
            if self._fenced is not None:  # the abort told what the failure did not say
                raise self._ended() from e
            if isinstance(e, SinkError):
                raise
            raise _kafka.sink_error(
                e, f"Kafka sink {self.url}: transaction failed: {_kafka.describe(e)}"
            ) from e
        checkpoint.committed(position)

    def save_position(self, position: str) -> None:
        """Commit a transaction holding only the checkpoint's record of `position` (after
        the batch in a transaction, if any: one producer has one transaction at a time)."""
        assert self._transactional is not None
        self.begin()
        with self._transacting:
            producer = self._producer
            try:
                producer.begin_transaction()
                self._transactions += 1
                self._produce_record(producer, position, f"{self._session}-{self._transactions}")
                self._commit(producer)
            except self._errors as e:
                self._abort(producer, e)
                if self._fenced is not None:
                    raise self._ended() from e
                raise _kafka.sink_error(
                    e,
                    f"Kafka sink {self.url}: checkpoint transaction failed: {_kafka.describe(e)}",
                ) from e
            self._transactional.committed(position)

    def _produce_record(self, producer: Any, position: str, label: str) -> None:
        assert self._transactional is not None
        topic, key, value, partition = self._transactional.record(position, label)
        producer.produce(topic, value, key, partition=partition)

    def _commit(self, producer: Any) -> None:
        """commit_transaction, again while librdkafka says the error is retriable."""
        for attempt in range(3):
            try:
                producer.commit_transaction(self.timeout)
                return
            except self._kafka.KafkaException as e:
                if attempt == 2 or not e.args[0].retriable():
                    raise

    def _abort(self, producer: Any, error: BaseException) -> None:
        """Abort the failed transaction; a fatal error (fenced) drops the producer."""
        found = _kafka.error_of(error)
        if found is None and isinstance(error, SinkError):
            found = _kafka.error_of(error.__cause__) if error.__cause__ is not None else None
        if found is not None and found.fatal():
            # fenced (or broken for good): never made again, which would fence the
            # relay that took over
            self._fenced = _kafka.describe(found)
            return
        try:
            producer.abort_transaction(self.timeout)
        except self._errors as e:
            found = _kafka.error_of(e)
            if found is not None and found.fatal():
                self._fenced = _kafka.describe(found)
                return
            log.warning("Kafka sink %s: abort failed: %s", self.url, _kafka.describe(e))
            self._producer, self._began = None, False  # made and registered again

    def close(self) -> None:
        """Flush what is queued (briefly) and release the clients; idempotent."""
        if self._closed:
            return
        self._closed = True
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.flush(min(self.timeout, 5))
        self._topics.close()

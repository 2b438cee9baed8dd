"""The Kafka sink's topics: which exist, creating the missing ones, the right to create.

Private to `rowcast.sinks.kafka`, whose docstring states what is created and when.
Topics are listed whole (a metadata request for every topic), never asked for one
by one: a broker with ``auto.create.topics.enable`` (and tansu, always) creates a
topic that a metadata request names.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from .. import _kafka
from ..errors import ConfigError, PermanentSinkError

__all__ = ["Topics"]

log = logging.getLogger("rowcast.sinks.kafka")

_CLIENT_PREFIXES = ("bootstrap.", "security.", "sasl.", "ssl.", "socket.", "client.")


class _Settings(Protocol):
    """What the sink says of its topics (a `rowcast.sinks.kafka.KafkaSink`)."""

    url: str
    config: dict[str, Any]
    timeout: float
    create: bool
    partitions: int
    replication_factor: int


class Topics:
    """The topics of `sink`'s cluster that it knows to exist (module docstring)."""

    def __init__(self, sink: _Settings) -> None:
        self.sink = sink
        self.existing: set[str] = set()
        self._admin: Any = None
        self._kafka = _kafka.driver("the Kafka sink")

    def _client(self) -> Any:
        if self._admin is None:
            config = {
                k: v
                for k, v in self.sink.config.items()
                if k.startswith(_CLIENT_PREFIXES) or k in ("log_level", "logger")
            }
            self._admin = _kafka.client(self._kafka.admin.AdminClient, config, self.sink.url)
        return self._admin

    def refresh(self, reached: bool = False) -> None:
        """List every topic of the cluster again (`reached`: a bootstrap server was just
        found to take a connection, not tried again)."""
        if not reached:
            _kafka.reach(self.sink.config, f"Kafka sink {self.sink.url}", self.sink.timeout)
        try:
            metadata = self._client().list_topics(timeout=min(self.sink.timeout, 30))
        except self._kafka.KafkaException as e:
            raise _kafka.sink_error(
                e, f"Kafka sink {self.sink.url}: cannot reach the cluster: {_kafka.describe(e)}"
            ) from e
        self.existing = {n for n, topic in metadata.topics.items() if topic.error is None}

    def may_create(self) -> None:
        """A cluster that tells the user's operations and lacks CREATE: a `ConfigError`."""
        try:
            future = self._client().describe_cluster(
                include_authorized_operations=True, request_timeout=min(self.sink.timeout, 30)
            )
            operations = future.result().authorized_operations
        except (self._kafka.KafkaException, AttributeError, TypeError):
            return  # a broker that cannot say: found at the first delivery
        if operations and not any(op.name in ("CREATE", "ALL") for op in operations):
            raise ConfigError(
                f"Kafka sink {self.sink.url}: the user may not create topics on this cluster; "
                "create the topics (prefix.schema.table) yourself and add ?create=false, or "
                "allow the user Create (kafka-acls --add --operation Create --cluster)"
            )

    def ensure(self, topics: Sequence[str]) -> None:
        """Each of `topics` exists, or is created (the sink's ``create``), or is an error."""
        missing = [t for t in dict.fromkeys(topics) if t not in self.existing]
        if not missing:
            return
        known = self.existing
        self.refresh()
        self.existing |= known
        missing = [t for t in missing if t not in self.existing]
        if not missing:
            return
        sink = self.sink
        if not sink.create:
            raise ConfigError(
                f"Kafka sink {sink.url}: topic {', '.join(missing)} does not exist and "
                "create=false; create it, or leave create at true for the sink to"
            )
        new = self._kafka.admin.NewTopic
        futures = self._client().create_topics(
            [new(t, sink.partitions, sink.replication_factor) for t in missing],
            request_timeout=min(sink.timeout, 30),
        )
        for name, future in futures.items():
            try:
                future.result()
                log.info("Kafka sink %s: created topic %s", sink.url, name)
            except self._kafka.KafkaException as e:
                if e.args[0].name() != "TOPIC_ALREADY_EXISTS":  # else: made by another relay
                    error = _kafka.sink_error(
                        e,
                        f"Kafka sink {sink.url}: cannot create topic {name!r}: "
                        f"{_kafka.describe(e)}",
                    )
                    if isinstance(error, PermanentSinkError) and error.fix is None:
                        error = PermanentSinkError(
                            error.message, "create the topic yourself and add ?create=false"
                        )
                    raise error from e
            self.existing.add(name)

    def close(self) -> None:
        self._admin = None

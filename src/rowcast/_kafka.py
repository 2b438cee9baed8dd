"""What the Kafka sink, checkpoint and consumer share: the URL, the client, error kinds.

A Kafka URL is ``kafka://[user:password@]host:port[,host:port...][?option=value&...]``.
Its hosts are the bootstrap servers. A user and password mean SASL (``PLAIN`` over
plain text unless the URL's ``sasl.mechanism`` and ``security.protocol`` say
otherwise). Every option with a dot in its name is a librdkafka property given to
the client as it is (``compression.type=zstd``, ``linger.ms=20``,
``security.protocol=SSL``, ``ssl.ca.location=...``); librdkafka refuses one it does
not know, which is a `ConfigError`. Options without a dot are rowcast's own, each
backend's docstring lists them.

Errors: librdkafka's `KafkaError` says itself whether it is fatal, retriable or
needs the transaction aborted; `kind_of` adds the refusals that no retry changes
(authorization, a message too large, an invalid topic, a policy, a fenced
producer) as permanent, and takes every other error for transient: the cluster
may come back, the leader move, the topic be created.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import socket
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from ._url import masked, query
from .backends import missing_extra
from .errors import ConfigError, PermanentSinkError, SinkError, TransientSinkError

__all__ = [
    "KafkaURL",
    "client",
    "driver",
    "fix_of",
    "kind_of",
    "parse",
    "sink_error",
    "topic_name",
]

_HOST = re.compile(r"[A-Za-z0-9_.\-\[\]:]+:\d{1,5}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def topic_name(*parts: str | None) -> str:
    """A Kafka topic name of `parts` joined by ``.``; characters Kafka refuses as ``_``."""
    return _UNSAFE.sub("_", ".".join(p for p in parts if p))


@dataclasses.dataclass(frozen=True)
class KafkaURL:
    """A parsed Kafka URL: its bootstrap servers, rowcast's options, the client's."""

    url: str  #: masked
    servers: str  #: ``host:port,host:port``
    options: dict[str, str]  #: rowcast's own options (no dot in the name)
    lists: dict[str, list[str]]  #: the repeatable ones, comma-separated too
    config: dict[str, str]  #: librdkafka properties (a dot in the name), SASL from the URL


def parse(url: str, what: str, known: tuple[str, ...], *, lists: tuple[str, ...] = ()) -> KafkaURL:
    """`url` read for `what` (e.g. "the Kafka sink"), which takes the options `known`.

    Raises `ConfigError` for another scheme, a missing or malformed host, a path, or
    an option without a dot that `what` does not take.
    """
    options, many, others = query(url, what, ("kafka",), known, lists=lists, others=True)
    config: dict[str, str] = {}
    for name, value in others:
        if "." not in name:
            from ._url import unknown_option

            raise unknown_option(url, name, value, what, (*known, *lists, "<librdkafka.property>"))
        if name in config:
            raise ConfigError(f"{masked(url)}: option {name!r} given twice")
        config[name] = value
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    hosts = [h for h in netloc.split(",") if h]
    if not hosts:
        raise ConfigError(f"{masked(url)}: no broker; e.g. kafka://127.0.0.1:9092")
    for host in hosts:
        if not _HOST.fullmatch(host):
            raise ConfigError(
                f"{masked(url)}: {host!r} is not host:port; list brokers as "
                "kafka://host1:9092,host2:9092"
            )
    if parts.path not in ("", "/"):
        raise ConfigError(
            f"{masked(url)}: a Kafka URL has no path; options go in the query, e.g. ?topic=..."
        )
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        user, _, password = userinfo.partition(":")
        config.setdefault("sasl.username", unquote(user))
        config.setdefault("sasl.password", unquote(password))
        config.setdefault("sasl.mechanism", "PLAIN")
        config.setdefault("security.protocol", "SASL_PLAINTEXT")
    return KafkaURL(masked(url), ",".join(hosts), options, many, config)


def driver(what: str) -> Any:
    """The `confluent_kafka` module, or the `ConfigError` naming ``rowcast[kafka]``."""
    try:
        import confluent_kafka
        import confluent_kafka.admin
    except ImportError as e:
        raise missing_extra("kafka", what, e) from e
    return confluent_kafka


_LOG = logging.getLogger("rowcast.kafka")


def unreachable(servers: str, timeout: float) -> str | None:
    """Why none of the bootstrap `servers` (``host:port,...``) takes a TCP connection
    within `timeout` seconds, or None when one does. librdkafka retries a refused
    connection until its own timeout (30 s by default) before it says anything; this
    says at once that nothing listens there (a wrong port, a broker that is down)."""
    reasons = []
    for server in filter(None, (s.strip() for s in servers.split(","))):
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit():
            return None  # a form librdkafka knows better: let it say
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout).close()
        except OSError as e:
            reasons.append(f"{server}: {e.strerror or e}")
        else:
            return None
    return "; ".join(reasons) or None


def reach(
    config: dict[str, Any], what: str, timeout: float, kind: type[Exception] = TransientSinkError
) -> None:
    """`kind` ("<what>: cannot reach the cluster: ...") when no bootstrap server of
    `config` takes a connection (`unreachable`)."""
    why = unreachable(str(config.get("bootstrap.servers", "")), min(timeout, 5))
    if why is not None:
        raise kind(f"{what}: cannot reach the cluster: {why}") from ConnectionError(why)


def client(kind: Any, config: dict[str, Any], url: str) -> Any:
    """``kind(config)`` (a Producer, Consumer or AdminClient) logging to logger
    ``rowcast.kafka`` (errors only, unless the URL sets ``log_level``); a property
    librdkafka refuses is a `ConfigError` naming it."""
    kafka = driver("Kafka")
    config = {"logger": _LOG, "log_level": 3, **config}
    try:
        return kind(config)
    except (kafka.KafkaException, ValueError, TypeError) as e:
        raise ConfigError(
            f"{url}: the Kafka client refuses its configuration: {describe(e)} "
            "(options with a dot are librdkafka properties, see its CONFIGURATION.md)"
        ) from e


def error_of(error: BaseException) -> Any:
    """The `KafkaError` under `error` (a `KafkaException` carries it), or None.

    confluent-kafka raises a `SystemError` from a KafkaException when a delivery
    callback runs while the producer fails for good (fenced): its cause is taken.
    """
    if type(error).__name__ == "KafkaError":
        return error
    if isinstance(error, SystemError) and error.__cause__ is not None:
        error = error.__cause__
    args = getattr(error, "args", ())
    if args and type(args[0]).__name__ == "KafkaError":
        return args[0]
    return None


def describe(error: BaseException | Any) -> str:
    """librdkafka's own words for `error`, with its code's name."""
    found = error_of(error) if isinstance(error, BaseException) else error
    if found is None:
        return str(error)
    return f"{found.str()} ({found.name()})"


# error names (KafkaError.name()) that no retry changes, and what to do about them
_PERMANENT: Final[dict[str, str | None]] = {
    "TOPIC_AUTHORIZATION_FAILED": "allow the user to write (and create) the topics "
    "(kafka-acls --add --operation Write --operation Create --topic ...)",
    "CLUSTER_AUTHORIZATION_FAILED": "allow the user the cluster operation (IdempotentWrite, "
    "Create): kafka-acls --add --cluster ...",
    "TRANSACTIONAL_ID_AUTHORIZATION_FAILED": "allow the user Write on the transactional id "
    "(kafka-acls --add --transactional-id ...)",
    "GROUP_AUTHORIZATION_FAILED": "allow the user Read on the consumer group",
    "SASL_AUTHENTICATION_FAILED": "give a user and password the cluster accepts",
    "_AUTHENTICATION": "give a user and password the cluster accepts",
    "MSG_SIZE_TOO_LARGE": "raise the topic's max.message.bytes (and the producer's "
    "message.max.bytes), or leave the large column out",
    "_MSG_SIZE_TOO_LARGE": "raise message.max.bytes in the URL (?message.max.bytes=...) "
    "and the topic's max.message.bytes",
    "RECORD_LIST_TOO_LARGE": "raise the topic's max.message.bytes",
    "INVALID_RECORD": None,
    "INVALID_TOPIC_EXCEPTION": "give a topic name of letters, digits, '.', '_', '-'",
    "TOPIC_EXCEPTION": "give a topic name of letters, digits, '.', '_', '-'",
    "POLICY_VIOLATION": "create the topics yourself as the cluster's policy wants them",
    "INVALID_REPLICATION_FACTOR": "give a replication_factor the cluster can hold",
    "INVALID_PARTITIONS": "give partitions= a number >= 1",
    "INVALID_CONFIG": None,
    "UNSUPPORTED_VERSION": "use a broker that supports idempotent and transactional "
    "producers (Kafka 0.11 or later)",
    "UNSUPPORTED_FOR_MESSAGE_FORMAT": None,
    "PRODUCER_FENCED": "another relay with the same name (transactional.id) took over: "
    "stop one of them, or give each relay its own ?name=",
    "INVALID_PRODUCER_EPOCH": "another relay with the same name (transactional.id) took "
    "over: stop one of them, or give each relay its own ?name=",
    "_FENCED": "another relay with the same name (transactional.id) took over: stop one "
    "of them, or give each relay its own ?name=",
    "TRANSACTIONAL_ID_NOT_FOUND": None,
    "_INVALID_ARG": None,
    "_UNKNOWN_TOPIC": None,  # only with create=false: see the sink
}


def kind_of(error: BaseException | Any) -> type[SinkError]:
    """`PermanentSinkError` for a refusal no retry changes (module docstring), else
    `TransientSinkError`."""
    found = error_of(error) if isinstance(error, BaseException) else error
    if found is None:
        return TransientSinkError
    if found.name() in _PERMANENT or (found.fatal() and not found.retriable()):
        return PermanentSinkError
    return TransientSinkError


def fix_of(error: BaseException | Any) -> str | None:
    """What to change for a permanent `error`, when it is a known one."""
    found = error_of(error) if isinstance(error, BaseException) else error
    return None if found is None else _PERMANENT.get(found.name())


def fix_of_name(name: str) -> str | None:
    """What to change for the error named `name` (`KafkaError.name()`)."""
    return _PERMANENT.get(name)


def sink_error(error: BaseException | Any, message: str) -> SinkError:
    """`message` about the Kafka `error` as the kind of `SinkError` it is (with the fix)."""
    kind = kind_of(error)
    if kind is PermanentSinkError:
        return PermanentSinkError(message, fix_of(error))
    return kind(message)

"""The one registry: which class serves a URL, per family of backends.

::

    from rowcast import register_backend

    register_backend("sink", "pulsar", "myapp.pulsar_sink:PulsarSink")
    open_sink("pulsar://broker:6650/changes")  # imports myapp.pulsar_sink now

A URL names its backend by its scheme, without a ``+driver`` suffix
(``postgresql+psycopg://`` is ``postgresql``). Every opener goes through
`load`: `rowcast.EventStore` (family ``store``), `rowcast.open_source`
(``source``), `rowcast.sinks.open_sink` (``sink``), `rowcast.cache.open_cache`
(``cache``), `rowcast.open_checkpoint` (``checkpoint``) and
`rowcast.consume.open_transport` (``consumer``) and `rowcast.dlq.open_dead_letters`
(``dlq``). The classes are named as
``"module:Class"`` strings and imported only when a URL asks for them, so a
backend whose driver is not installed costs nothing until it is opened.

Errors, all `ConfigError`: an unknown scheme lists the known ones, an unknown
``?mode=`` value the known modes of the family; a driver
that is not installed names the extra to install (`missing_extra`, the one
message every backend raises for it, whether its module imports the driver
at its top or when a backend is built).

What a family's opener calls the class with: ``cls(url, **options)`` for
stores, sources, sinks and caches (a ``memory://`` cache: ``cls(**options)``),
``cls(url, name=name)`` for checkpoints, ``cls(url, group=group, **options)``
for consumers. A store class subclasses `rowcast.EventStore`.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import re
from typing import Any, Final, Literal, get_args
from urllib.parse import parse_qsl, urlsplit

from ._url import masked
from .errors import ConfigError

__all__ = ["Family", "load", "missing_extra", "register_backend", "scheme_of", "schemes"]

Family = Literal["store", "source", "sink", "cache", "checkpoint", "consumer", "dlq"]

# what an error calls one backend of the family
_NOUNS: Final[dict[str, str]] = {
    "store": "event store",
    "source": "rowcast source",
    "sink": "rowcast sink",
    "cache": "rowcast cache",
    "checkpoint": "checkpoint backend",
    "consumer": "rowcast consumer",
    "dlq": "dead-letter place",
}
# how an error shows a scheme that is not followed by "://"
_FORMS: Final[dict[tuple[str, str], tuple[str, str]]] = {
    ("source", "outbox"): ("outbox+<database url>", "the transactional outbox"),
}
_SCHEME = re.compile(r"[a-z][a-z0-9.-]*|-")  # "-": stdout
_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


@dataclasses.dataclass(frozen=True)
class _Backend:
    target: str | type[Any]  #: "module:Class", or the class itself
    extra: str | None  #: the rowcast extra that installs its driver


_REGISTRY: Final[dict[str, dict[str, _Backend]]] = {family: {} for family in get_args(Family)}
# family -> mode -> scheme ("*": any) -> backend, for URLs with ``?mode=<mode>``
_MODES: Final[dict[str, dict[str, dict[str, _Backend]]]] = {
    family: {} for family in get_args(Family)
}


def register_backend(
    family: Family,
    scheme: str,
    target: str | type[Any],
    extra: str | None = None,
    *,
    mode: str | None = None,
) -> None:
    """Serve URLs ``<scheme>://...`` of `family` with `target`.

    `target` is ``"package.module:Class"`` (imported when such a URL is first
    opened) or the class itself. `extra` is the rowcast extra that installs the
    backend's driver (``"redis"``): an `ImportError` of another package while
    importing the module becomes the `ConfigError` naming
    ``pip install 'rowcast[<extra>]'``. A scheme registered again is served by the
    last target, so outside code may replace a built-in backend too.

    With `mode`, `target` serves only URLs that say ``?mode=<mode>`` (a database
    URL with ``?mode=replicate`` is a replica, not an event store); `scheme` may
    then be ``"*"``: any scheme.
    """
    if family not in _REGISTRY:
        raise ConfigError(f"no backend family {family!r}: use one of {', '.join(_REGISTRY)}")
    if mode is not None and not (isinstance(mode, str) and _SCHEME.fullmatch(mode)):
        raise ConfigError(f"a mode is a lower-case word, not {mode!r}")
    if not isinstance(scheme, str) or not (
        _SCHEME.fullmatch(scheme.lower()) or (mode is not None and scheme == "*")
    ):
        raise ConfigError(
            f"a scheme is a letter then letters, digits, '.' or '-' (no '+'), not {scheme!r}"
        )
    if isinstance(target, str):
        if not _TARGET.fullmatch(target):
            raise ConfigError(f"a backend is 'package.module:Class', not {target!r}")
    elif not isinstance(target, type):
        raise ConfigError(f"a backend is a class or 'package.module:Class', not {target!r}")
    if mode is None:
        _REGISTRY[family][scheme.lower()] = _Backend(target, extra)
    else:
        _MODES[family].setdefault(mode, {})[scheme.lower()] = _Backend(target, extra)


def schemes(family: Family) -> list[str]:
    """The schemes registered for `family`, sorted."""
    return sorted(_REGISTRY[family])


def scheme_of(url: str) -> str:
    """The scheme `url` names its backend by: lower case, without ``+driver``; "" for none."""
    if "://" not in url:
        return ""
    return urlsplit(url).scheme.split("+", 1)[0].lower()


def load(family: Family, url: str, scheme: str | None = None) -> type[Any]:
    """The class registered for `url`'s scheme (or `scheme`) in `family`, imported now.

    Raises `ConfigError` for a scheme nobody registered (the message lists the
    known ones) and for a driver that is not installed.
    """
    key = scheme_of(url) if scheme is None else scheme.lower()
    backend = _REGISTRY[family].get(key)
    modes = _MODES[family]
    if modes and "mode=" in url:
        for name, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
            if name != "mode":
                continue
            if value not in modes:  # a typo must not fall back to the scheme's backend
                names = sorted(modes)
                raise ConfigError(
                    f"{masked(url)}: mode={value}: unknown mode; use "
                    + (" or ".join(names) if len(names) < 3 else ", ".join(names))
                )
            backend = modes[value].get(key) or modes[value].get("*") or backend
    if backend is None:
        raise ConfigError(f"no {_NOUNS[family]} for {masked(url)!r}: {_starts(family, key)}")
    if not isinstance(backend.target, str):
        return backend.target
    module_name, _, class_name = backend.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        missing = (e.name or "").partition(".")[0]
        if backend.extra is None or missing in ("", module_name.partition(".")[0]):
            raise  # the backend's own module (or package) is missing: a wrong registration
        raise missing_extra(backend.extra, f"the {_NOUNS[family]} {key}://", e) from e
    cls: type[Any] = getattr(module, class_name)
    return cls


def _starts(family: Family, scheme: str) -> str:
    """What a URL of `family` must start with: every registered form, and the one closest
    to `scheme` when one is close (a typo)."""
    forms = {
        name: _FORMS.get((family, name), (name if name == "-" else f"{name}://", ""))
        for name in schemes(family)
    }
    plain = [form for form, note in forms.values() if not note]
    special = [f"{form} ({note})" for form, note in forms.values() if note]
    known = ", ".join(plain)
    if special:
        known = ", or ".join([known, *special]) if known else ", or ".join(special)
    close = difflib.get_close_matches(scheme, list(forms), n=1, cutoff=0.6) if scheme else []
    hint = f"did you mean {forms[close[0]][0]}? " if close else ""
    return f"{hint}the URL must start with {known}"


def missing_extra(extra: str | None, what: str, error: BaseException) -> ConfigError:
    """The one error for a driver that is not installed: it names the pip command.

    `what` is the thing that needs it (``"the Redis sink"``), `error` the
    `ImportError` (or SQLAlchemy's ``NoSuchModuleError``) that says which is missing;
    raise the result ``from error``. Without an `extra`, there is no pip command to name.
    """
    hint = f"; pip install 'rowcast[{extra}]'" if extra else ""
    return ConfigError(f"no driver for {what}: {error}{hint}")


# ---------------------------------------------------------------- the built-in backends

# one line per backend: family, its schemes, "module:Class", the extra of its driver
_BUILT_IN: Final[tuple[tuple[Family, str, str, str | None], ...]] = (
    ("store", "memory", "rowcast.store.memory:MemoryEventStore", None),
    ("store", "sqlite", "rowcast.store.sqlite:SQLiteEventStore", None),
    ("store", "postgresql postgres", "rowcast.store.postgres:PostgresEventStore", "postgres"),
    ("source", "mysql mariadb", "rowcast.sources.mysql:BinlogSource", "mysql"),
    ("source", "postgresql postgres", "rowcast.sources.postgres:LogicalSource", "postgres"),
    ("source", "sqlite", "rowcast.sources.sqlite:TriggerSource", None),
    ("source", "outbox", "rowcast.sources.outbox:OutboxSource", None),  # outbox+<database URL>
    ("sink", "-", "rowcast.sinks.stdout:StdoutSink", None),
    ("sink", "memory sqlite postgresql postgres", "rowcast.sinks.store:StoreSink", None),
    ("sink", "redis rediss", "rowcast.sinks.redis:RedisSink", "redis"),
    ("sink", "nats tls", "rowcast.sinks.nats:NatsSink", "nats"),
    ("sink", "amqp amqps", "rowcast.sinks.rabbitmq:RabbitMQSink", "rabbitmq"),
    ("sink", "kafka", "rowcast.sinks.kafka:KafkaSink", "kafka"),
    ("sink", "mode=replicate *", "rowcast.sinks.sql:ReplicationSink", None),  # any database
    ("sink", "mode=broker memory", "rowcast.sinks.memory:MemoryBrokerSink", None),
    ("cache", "memory", "rowcast.cache.memory:MemoryCache", None),
    ("cache", "redis rediss", "rowcast.cache.redis:RedisCache", "redis"),
    ("cache", "memcached", "rowcast.cache.memcached:MemcachedCache", "memcached"),
    ("checkpoint", "file", "rowcast.checkpoint.file:FileCheckpoint", None),
    ("checkpoint", "sqlite", "rowcast.checkpoint.sql:SQLCheckpoint", None),
    ("checkpoint", "postgresql postgres", "rowcast.checkpoint.sql:SQLCheckpoint", "postgres"),
    ("checkpoint", "mysql mariadb", "rowcast.checkpoint.sql:SQLCheckpoint", "mysql"),
    ("checkpoint", "redis rediss", "rowcast.checkpoint.redis:RedisCheckpoint", "redis"),
    ("checkpoint", "kafka", "rowcast.checkpoint.kafka:KafkaCheckpoint", "kafka"),
    ("consumer", "redis rediss", "rowcast.consume.redis:RedisTransport", "redis"),
    ("consumer", "nats tls", "rowcast.consume.nats:NatsTransport", "nats"),
    ("consumer", "amqp amqps", "rowcast.consume.rabbitmq:RabbitMQTransport", "rabbitmq"),
    ("consumer", "kafka", "rowcast.consume.kafka:KafkaTransport", "kafka"),
    ("consumer", "memory", "rowcast.consume.memory:MemoryTransport", None),  # in-process broker
    ("dlq", "redis rediss", "rowcast.dlq.redis:RedisDeadLetters", "redis"),
    ("dlq", "nats tls", "rowcast.dlq.nats:NatsDeadLetters", "nats"),
    ("dlq", "amqp amqps", "rowcast.dlq.rabbitmq:RabbitMQDeadLetters", "rabbitmq"),
    ("dlq", "kafka", "rowcast.dlq.kafka:KafkaDeadLetters", "kafka"),
    ("dlq", "sqlite postgresql postgres", "rowcast.dlq.store:StoreDeadLetters", None),
)

for _family, _schemes, _target, _extra in _BUILT_IN:
    _words = _schemes.split()
    _mode = _words.pop(0).removeprefix("mode=") if _words[0].startswith("mode=") else None
    for _scheme in _words:
        register_backend(_family, _scheme, _target, _extra, mode=_mode)

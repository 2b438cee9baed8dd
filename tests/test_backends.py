"""The one registry: outside code adds backends, and every opener reports the same errors."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest

import rowcast
from rowcast import EventStore, NewEvent, backends, open_checkpoint, open_source
from rowcast.backends import Family, register_backend, schemes
from rowcast.cache import open_cache
from rowcast.change import Change
from rowcast.checkpoint import Checkpoint
from rowcast.consume import open_transport
from rowcast.errors import ConfigError
from rowcast.sinks import open_sink
from rowcast.sinks.stdout import StdoutSink
from rowcast.sources.base import diagnose
from rowcast.testing.checkpoint import CheckpointContract

from .backends_outside import DictCheckpoint, LabelledStore, ListSink, TeeSink

OPENERS: dict[Family, Callable[[str], Any]] = {
    "store": EventStore,
    "source": open_source,
    "sink": open_sink,
    "cache": open_cache,
    "checkpoint": open_checkpoint,
    "consumer": open_transport,
}


@pytest.fixture(autouse=True)
def _registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a test registers is forgotten after it."""
    for family, table in backends._REGISTRY.items():
        monkeypatch.setitem(backends._REGISTRY, family, dict(table))
    for family, modes in backends._MODES.items():
        monkeypatch.setitem(backends._MODES, family, {m: dict(t) for m, t in modes.items()})


def test_register_backend_is_public() -> None:
    assert rowcast.register_backend is register_backend
    assert "register_backend" in rowcast.__all__


# ---------------------------------------------------------------- outside backends


def test_an_outside_store_opens_by_url() -> None:
    register_backend("store", "labelled", "tests.backends_outside:LabelledStore")
    with EventStore("labelled://shop") as store:
        assert isinstance(store, LabelledStore)
        assert store.label == "shop"
        store.append("order-1", [NewEvent("Placed", {"total": 3})])
        assert [e.type for e in store.read("order-1")] == ["Placed"]
    with EventStore("labelled+v2://other") as driver:  # a +driver suffix is the same scheme
        assert isinstance(driver, LabelledStore)


def test_an_outside_sink_opens_by_url_with_its_options() -> None:
    register_backend("sink", "list", ListSink)
    sink = open_sink("list://audit", flush=True)
    assert isinstance(sink, ListSink)
    assert (sink.url, sink.options) == ("list://audit", {"flush": True})
    change = Change("write", "shop", "orders", 1, None, {"id": 1}, 1.0, "tx", "bin.1:4", "mysql")
    sink.deliver([[change]])
    assert [body for _, body in sink.delivered] == [change.to_json()]


def test_an_outside_backend_replaces_a_built_in_one() -> None:
    assert isinstance(open_sink("-"), StdoutSink)
    register_backend("sink", "-", ListSink)
    assert isinstance(open_sink("-"), ListSink)


def test_a_mode_picks_another_backend_for_the_same_scheme() -> None:
    register_backend("sink", "*", ListSink, mode="audit")  # ?mode=audit on any scheme
    register_backend("sink", "sqlite", "tests.backends_outside:TeeSink", mode="tee")  # sqlite only
    assert isinstance(open_sink("redis://h/0?mode=audit"), ListSink)
    assert isinstance(open_sink("sqlite:///x.db?mode=audit&a=b"), ListSink)
    assert isinstance(open_sink("sqlite:///x.db?mode=tee"), TeeSink)
    with pytest.raises(ConfigError, match="no rowcast sink for 'nope://x"):
        open_sink("nope://x?mode=tee")  # tee has no nope:// backend, nor a "*"


def test_the_built_in_modes_replicate_and_broker() -> None:
    from rowcast.sinks.memory import MemoryBrokerSink
    from rowcast.sinks.sql import ReplicationSink
    from rowcast.sinks.store import StoreSink

    assert backends.load("sink", "mysql+pymysql://h/db?mode=replicate") is ReplicationSink
    assert backends.load("sink", "sqlite:///r.db?mode=replicate") is ReplicationSink
    assert backends.load("sink", "memory://bus?mode=broker") is MemoryBrokerSink
    assert backends.load("sink", "memory://") is StoreSink
    assert backends.load("sink", "sqlite:///x.db?mode=broker") is StoreSink  # broker: memory only


def test_the_scheme_is_case_insensitive() -> None:
    register_backend("sink", "List", ListSink)
    assert "list" in schemes("sink")
    assert isinstance(open_sink("LIST://x"), ListSink)


class TestOutsideCheckpoint(CheckpointContract):
    """A checkpoint built on `BaseCheckpoint` keeps the contract of the built-in ones."""

    @pytest.fixture(autouse=True)
    def _register(self) -> None:
        register_backend("checkpoint", "dict", "tests.backends_outside:DictCheckpoint")

    def make_checkpoint(self, name: str) -> Checkpoint:
        return open_checkpoint(f"dict://relays?name={name}")

    def store_url(self) -> str:
        return "dict://relays"

    def remove_checkpoint(self, name: str) -> None:
        DictCheckpoint.saved.pop(("relays", name), None)
        DictCheckpoint.reports.pop(("relays", name), None)

    def test_it_is_the_outside_class(self) -> None:
        assert isinstance(self.checkpoint(), DictCheckpoint)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("family", list(OPENERS))
def test_an_unknown_scheme_lists_the_known_ones(family: Family) -> None:
    with pytest.raises(ConfigError, match="must start with") as caught:
        OPENERS[family]("kafkaesque://u:secret@host/x")
    message = str(caught.value)
    assert "'kafkaesque://u:***@host/x'" in message  # the password masked
    assert "secret" not in message
    for scheme in schemes(family):
        shown = "outbox+<database url>" if scheme == "outbox" else f"{scheme}://"
        assert (scheme if scheme == "-" else shown) in message
    assert "outbox://" not in message  # the outbox is outbox+<database url>, never outbox://


@pytest.mark.parametrize(
    ("url", "closest"),
    [
        ("mysq://root@127.0.0.1/x", "mysql://"),
        ("postgresq://u@h/db", "postgresql://"),
        ("outbx+sqlite:///app.db", "outbox+<database url>"),
    ],
)
def test_a_scheme_typo_suggests_the_closest(url: str, closest: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_source(url)
    message = str(caught.value)
    assert f"did you mean {closest}?" in message
    assert message.endswith("sqlite://, or outbox+<database url> (the transactional outbox)")


def test_a_scheme_nothing_is_close_to_suggests_nothing() -> None:
    with pytest.raises(ConfigError) as caught:
        open_source("ftp://h/x")
    assert "did you mean" not in str(caught.value)


def test_an_unknown_scheme_lists_the_registered_ones_too() -> None:
    register_backend("sink", "list", ListSink)
    with pytest.raises(ConfigError, match=r"no rowcast sink for 'pulsar://h/t': .*list://"):
        open_sink("pulsar://h/t")


def test_a_missing_driver_names_the_extra_to_install() -> None:
    register_backend("sink", "nodriver", "tests.backends_missing:NoDriverSink", extra="redis")
    with pytest.raises(ConfigError) as caught:
        open_sink("nodriver://host/x")
    assert str(caught.value) == (
        "no driver for the rowcast sink nodriver://: No module named "
        "'rowcast_test_driver_that_is_not_installed'; pip install 'rowcast[redis]'"
    )
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)


def test_without_an_extra_the_import_error_is_the_backends_own() -> None:
    register_backend("sink", "nodriver", "tests.backends_missing:NoDriverSink")
    with pytest.raises(ModuleNotFoundError, match="rowcast_test_driver_that_is_not_installed"):
        open_sink("nodriver://host/x")


def test_a_wrong_module_is_not_taken_for_a_missing_extra() -> None:
    register_backend("sink", "typo", "tests.backends_outsde:ListSink", extra="redis")
    with pytest.raises(ModuleNotFoundError, match=r"tests\.backends_outsde"):
        open_sink("typo://x")


@pytest.mark.parametrize(
    ("family", "url", "module", "extra"),
    [
        ("sink", "redis://127.0.0.1:1/0", "redis", "redis"),
        ("sink", "nats://127.0.0.1:1", "nats", "nats"),
        ("sink", "amqp://127.0.0.1:1", "pika", "rabbitmq"),
        ("sink", "kafka://127.0.0.1:1", "confluent_kafka", "kafka"),
        ("consumer", "redis://127.0.0.1:1/0", "redis", "redis"),
        ("consumer", "nats://127.0.0.1:1", "nats", "nats"),
        ("consumer", "amqp://127.0.0.1:1", "pika", "rabbitmq"),
        ("cache", "redis://127.0.0.1:1/0", "redis", "redis"),
        ("cache", "memcached://127.0.0.1:1", "pymemcache", "memcached"),
        ("store", "postgresql://u@127.0.0.1:1/db", "psycopg_pool", "postgres"),
        ("source", "postgresql://u@127.0.0.1:1/db", "psycopg2", "postgres"),
        ("checkpoint", "redis://127.0.0.1:1/0", "redis", "redis"),
        ("checkpoint", "mysql://u@127.0.0.1:1/db", "pymysql", "mysql"),
    ],
)
def test_every_built_in_backend_gives_the_one_missing_extra_error(
    family: Family, url: str, module: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with pytest.raises(ConfigError, match=rf"^no driver for .*; pip install 'rowcast\[{extra}\]'$"):
        OPENERS[family](url)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("queue", "x", ListSink), "no backend family 'queue'"),
        (("sink", "a+b", ListSink), "no '\\+'"),
        (("sink", "", ListSink), "a scheme is"),
        (("sink", "x", "tests.backends_outside.ListSink"), "'package.module:Class'"),
        (("sink", "x", ListSink("list://")), "a class or"),
        (("sink", "*", ListSink), "a scheme is"),  # "*" only with a mode
    ],
)
def test_a_wrong_registration_is_a_config_error(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        register_backend(*args)


def test_diagnose_needs_a_diagnose_function_in_the_sources_module() -> None:
    register_backend("source", "nowhere", ListSink)  # a module without diagnose()
    with pytest.raises(ConfigError, match="has no diagnose"):
        diagnose("nowhere://x")


@pytest.mark.parametrize(
    "url",
    ["sqlite:///ev.db?mode=replicat", "redis://h/0?mode=", "postgresql://h/db?mode=Replicate"],
)
def test_an_unknown_mode_names_its_value_and_the_known_modes(url: str) -> None:
    # the typo is in the value: it must not fall back to the scheme's backend, whose
    # complaint would be about an option 'mode' it does not take
    value = url.rpartition("mode=")[2]
    with pytest.raises(ConfigError, match=f"mode={value}: unknown mode; use broker or replicate"):
        open_sink(url)


def test_an_unknown_mode_lists_the_registered_modes_too() -> None:
    register_backend("sink", "*", ListSink, mode="audit")
    with pytest.raises(ConfigError, match="unknown mode; use audit, broker, replicate"):
        open_sink("sqlite:///x.db?mode=audti")

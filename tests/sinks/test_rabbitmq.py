"""The RabbitMQ sink: the sink contract, then its own behaviour and faults."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pika.frame
import pika.spec
import pytest

from rowcast.change import Change
from rowcast.errors import ConfigError, PermanentSinkError, SinkError, TransientSinkError
from rowcast.sinks import open_sink
from rowcast.sinks.base import change_id
from rowcast.sinks.rabbitmq import RabbitMQSink, _Confirms, routing_word
from rowcast.testing.sink import SinkContract, closed_port, transactions
from tests.sinks import require_rabbitmq

BAD_URLS = [
    ("amqp://guest:guest@127.0.0.1:port/%2F", "Port could not be cast"),
    ("amqp://127.0.0.1/%2F?exchange", "malformed query"),
    ("amqp://127.0.0.1/%2F?exchange=", "exchange name"),
    ("amqp://127.0.0.1/%2F?mandatory=maybe", "mandatory is true or false"),
    ("amqp://127.0.0.1/%2F?timeout=none", "timeout must be a positive number"),
    ("amqp://127.0.0.1/%2F?exchange=a&exchange=b", "given twice"),
    ("amqp://127.0.0.1/%2F?exchnage=a", r"unknown option 'exchnage'.*did you mean 'exchange'"),
    ("amqp://127.0.0.1/%2F?heartbeat=often", "Invalid heartbeat"),
]


class Broker:
    """The test's own connection: declares, binds, reads back and cleans up."""

    def __init__(self) -> None:
        self.url = require_rabbitmq()
        self.connection = pika.BlockingConnection(pika.URLParameters(self.url))
        self.channel = self.connection.channel()
        self.exchanges: list[str] = []
        self.queues: list[str] = []

    def exchange(self, name: str) -> str:
        self.channel.exchange_declare(name, "topic", durable=True)
        self.exchanges.append(name)
        return name

    def queue(self, exchange: str, key: str = "#", **arguments: Any) -> str:
        name = f"{exchange}.q{len(self.queues)}"
        self.channel.queue_declare(name, durable=True, arguments=arguments or None)
        self.channel.queue_bind(name, exchange, key)
        self.queues.append(name)
        return name

    def messages(self, queue: str) -> list[tuple[Any, Any, bytes]]:
        got = []
        while True:
            method, properties, body = self.channel.basic_get(queue, auto_ack=True)
            if method is None:
                return got
            got.append((method, properties, body))

    def arrived(self, queue: str) -> list[tuple[uuid.UUID, Change]]:
        return [(uuid.UUID(p.message_id), Change.from_json(b)) for _, p, b in self.messages(queue)]

    def close(self) -> None:
        if self.channel.is_closed:
            self.channel = self.connection.channel()
        for queue in self.queues:
            self.channel.queue_delete(queue)
        for exchange in self.exchanges:
            self.channel.exchange_delete(exchange)
        self.connection.close()


@pytest.fixture
def broker() -> Iterator[Broker]:
    opened = Broker()
    yield opened
    opened.close()


def fresh() -> str:
    return f"sinks-test-{uuid.uuid4().hex}"


@pytest.mark.server
class TestRabbitMQSink(SinkContract):
    deduplicates = False
    order = "total"  # one queue bound with '#'
    bad_urls = BAD_URLS

    @pytest.fixture
    def destination(self, broker: Broker) -> None:
        self.broker = broker
        self.exchange = broker.exchange(fresh())
        self.queue = broker.queue(self.exchange)

    def make_sink(self) -> RabbitMQSink:
        return RabbitMQSink(f"{self.broker.url}?exchange={self.exchange}")

    def read_back(self) -> list[tuple[uuid.UUID, Change]]:
        return self.broker.arrived(self.queue)

    def unreachable_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{closed_port()}/%2F?timeout=2"


# ---------------------------------------------------------------- its own behaviour


@pytest.mark.server
def test_routing_keys_and_properties(broker: Broker) -> None:
    exchange = broker.exchange(fresh())
    orders = broker.queue(exchange, "shop.orders.*")
    deletes = broker.queue(exchange, "*.*.delete")
    sink = open_sink(f"{broker.url}?exchange={exchange}&mandatory=false")
    batch = transactions(2, tables=[("shop", "orders"), (None, "a.b c")])
    sink.deliver(batch)
    sink.close()
    changes = [c for tx in batch for c in tx]
    got = broker.messages(orders)
    keys = [f"shop.orders.{c.action}" for c in changes if c.table == "orders"]
    assert [m.routing_key for m, _, _ in got] == keys
    _, properties, body = got[0]
    first = batch[0][0]
    assert Change.from_json(body) == first
    assert properties.message_id == str(change_id(first, 0))
    assert properties.content_type == "application/json"
    assert properties.delivery_mode == 2
    assert (properties.type, properties.app_id) == ("orders_write", "rowcast")
    assert properties.timestamp == int(first.ts)
    keys = [sink.routing_key(c) for c in changes if c.action == "delete"]  # type: ignore[attr-defined]
    assert [m.routing_key for m, _, _ in broker.messages(deletes)] == keys
    assert sink.routing_key(changes[1]) == "_.a%2Eb%20c.update"  # type: ignore[attr-defined]
    assert routing_word("a.b c*#%") == "a%2Eb%20c%2A%23%25"


@pytest.mark.server
def test_the_exchange_is_declared_durable_topic(broker: Broker) -> None:
    exchange = fresh()
    broker.exchanges.append(exchange)  # cleaned up after
    sink = RabbitMQSink(broker.url, exchange=exchange, mandatory=False)
    sink.deliver(transactions(1))
    sink.close()
    # a passive declare with the same type and durability succeeds only if it exists as such
    broker.channel.exchange_declare(exchange, "topic", durable=True, passive=True)


@pytest.mark.server
def test_an_exchange_of_another_kind_is_a_permanent_error(broker: Broker) -> None:
    exchange = fresh()
    broker.channel.exchange_declare(exchange, "fanout", durable=True)
    broker.exchanges.append(exchange)
    sink = RabbitMQSink(broker.url, exchange=exchange)
    message = r"durable topic exchange.*PRECONDITION_FAILED.*another kind of exchange"
    with pytest.raises(PermanentSinkError, match=message):
        sink.check()
    with pytest.raises(PermanentSinkError, match=message):
        sink.deliver(transactions(1))
    sink.close()


@pytest.mark.server
def test_an_unroutable_message_is_a_permanent_error(broker: Broker) -> None:
    exchange = broker.exchange(fresh())
    broker.queue(exchange, "shop.items.*")  # no queue takes orders
    sink = RabbitMQSink(broker.url, exchange=exchange)
    sink.check()  # the exchange exists: which keys its queues take is not known before
    message = r"no queue is bound.*'shop\.orders\.write'.*mandatory"
    with pytest.raises(PermanentSinkError, match=message):
        sink.deliver(transactions(1, tables=[("shop", "orders")]))
    queue = broker.queue(exchange, "shop.orders.*")
    batch = transactions(1, tables=[("shop", "orders")])
    sink.deliver(batch)  # the same connection goes on once a queue takes the key
    sink.close()
    assert broker.arrived(queue) == [(change_id(c, i), c) for i, c in enumerate(batch[0])]


@pytest.mark.server
def test_a_full_queue_that_rejects_publishes_is_a_sink_error(broker: Broker) -> None:
    """x-max-length with x-overflow=reject-publish: the broker nacks, nothing vanishes."""
    exchange = broker.exchange(fresh())
    queue = broker.queue(exchange, "#", **{"x-max-length": 5, "x-overflow": "reject-publish"})
    sink = RabbitMQSink(broker.url, exchange=exchange)
    batch = transactions(3)  # 9 changes into room for 5
    with pytest.raises(TransientSinkError, match=r"refused \(nack\) 4 of 9 messages.*message 6"):
        sink.deliver(batch)
    first_five = [(change_id(c, i), c) for tx in batch for i, c in enumerate(tx)][:5]
    assert broker.arrived(queue) == first_five  # reading makes room
    sink.deliver(batch[:1])  # the sink goes on once the queue has room
    sink.close()
    assert len(broker.messages(queue)) == 3


@pytest.mark.server
def test_a_deleted_exchange_is_a_sink_error_then_declared_again(broker: Broker) -> None:
    exchange = broker.exchange(fresh())
    queue = broker.queue(exchange)
    sink = RabbitMQSink(broker.url, exchange=exchange)
    sink.deliver(transactions(1))
    broker.channel.exchange_delete(exchange)
    with pytest.raises(TransientSinkError, match="NOT_FOUND"):  # the retry declares it
        sink.deliver(transactions(1))
    with pytest.raises(PermanentSinkError, match="no queue is bound"):  # declared, unbound
        sink.deliver(transactions(1))
    broker.channel.queue_bind(queue, exchange, "#")
    batch = transactions(1)
    sink.deliver(batch)
    sink.close()
    assert [c for _, c in broker.arrived(queue)][-3:] == batch[0]


@pytest.mark.server
def test_a_new_exchange_with_mandatory_is_refused_by_the_check(broker: Broker) -> None:
    """No queue can be bound to an exchange that did not exist: every message would return."""
    exchange = fresh()
    broker.exchanges.append(exchange)
    sink = RabbitMQSink(broker.url, exchange=exchange)
    with pytest.raises(ConfigError, match=f"exchange '{exchange}' did not exist.*bind a queue"):
        sink.check()
    broker.channel.exchange_declare(exchange, "topic", durable=True, passive=True)  # kept
    queue = broker.queue(exchange)
    sink.check()  # bound now: fine
    batch = transactions(1)
    sink.deliver(batch)
    sink.close()
    assert broker.arrived(queue) == [(change_id(c, i), c) for i, c in enumerate(batch[0])]
    unchecked = RabbitMQSink(broker.url, exchange=fresh(), mandatory=False)
    broker.exchanges.append(unchecked.exchange)
    unchecked.check()  # without mandatory, unroutable messages are the user's choice
    unchecked.close()


@pytest.mark.server
def test_refused_credentials_and_vhost_are_permanent() -> None:
    url = require_rabbitmq()
    wrong = url.replace("guest:guest@", "guest:wrong@")
    sink = RabbitMQSink(f"{wrong}?timeout=5")
    with pytest.raises(PermanentSinkError, match=r"ACCESS_REFUSED.*user and password") as caught:
        sink.check()
    assert ":wrong@" not in str(caught.value)
    sink.close()
    nowhere = RabbitMQSink(url.rsplit("/", 1)[0] + f"/{fresh()}?timeout=5")
    with pytest.raises(PermanentSinkError, match="vhost"):
        nowhere.check()
    nowhere.close()


def test_an_unreachable_broker_is_transient() -> None:
    sink = RabbitMQSink(f"amqp://guest:guest@127.0.0.1:{closed_port()}/%2F?timeout=2")
    with pytest.raises(TransientSinkError, match="cannot connect"):
        sink.check()
    sink.close()


def _close_connections_named(name: str) -> int:
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    pids = [line.split("\t", 1)[0] for line in listing if name in line]
    for pid in pids:
        subprocess.run(
            ["rabbitmqctl", "-q", "close_connection", pid, "rowcast test: closed on purpose"],
            capture_output=True,
            timeout=60,
            check=True,
        )
    return len(pids)


@pytest.mark.server
@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl")
def test_a_connection_closed_by_the_broker_is_reopened(broker: Broker) -> None:
    exchange = broker.exchange(fresh())
    queue = broker.queue(exchange)
    sink = RabbitMQSink(broker.url, exchange=exchange)
    first, second = transactions(1), transactions(2)
    sink.deliver(first)
    assert _close_connections_named(f"rowcast sink {exchange}") == 1
    sink.deliver(second)  # sees the close before publishing, and reconnects
    sink.close()
    assert [c for _, c in broker.arrived(queue)] == [c for tx in first + second for c in tx]


@pytest.mark.server
def test_a_connection_dropped_while_idle_is_replaced_before_publishing(broker: Broker) -> None:
    """pika reads nothing between calls: the broker drops an idle connection for missed
    heartbeats, and the next delivery must reconnect instead of failing."""
    exchange = broker.exchange(fresh())
    queue = broker.queue(exchange)
    sink = RabbitMQSink(f"{broker.url}?exchange={exchange}&heartbeat=1")
    first, second = transactions(1), transactions(1)
    sink.deliver(first)
    dropped = sink._connection
    time.sleep(4)  # two heartbeat intervals and more without a word from the sink
    sink.deliver(second)
    assert sink._connection is not dropped  # the broker did drop it: a new one delivered
    sink.close()
    assert [c for _, c in broker.arrived(queue)] == [c for tx in first + second for c in tx]


def test_out_of_order_and_multiple_confirms_settle_a_batch() -> None:
    """Queues confirm independently: single acks may come out of order, or cover many."""
    confirms = _Confirms(pika.spec.Basic.Nack)
    confirms.expect(5, timeout=10)

    def confirm(method: Any) -> None:
        confirms.on_confirm(pika.frame.Method(1, method))

    confirm(pika.spec.Basic.Ack(delivery_tag=3))
    confirm(pika.spec.Basic.Ack(delivery_tag=5))
    assert not confirms.settled()
    confirm(pika.spec.Basic.Ack(delivery_tag=2, multiple=True))  # 1, 2; 3 was in already
    assert (confirms.floor, confirms.above) == (3, {5})
    confirm(pika.spec.Basic.Nack(delivery_tag=4))
    assert confirms.settled()
    assert confirms.problem(5) is not None
    assert "1 of 5 messages, the first being message 4" in (confirms.problem(5) or "")
    confirms.expect(2, timeout=10)  # the next batch: tags 6 and 7
    confirm(pika.spec.Basic.Nack(delivery_tag=7, multiple=True))
    assert confirms.settled()
    assert "2 of 2 messages, the first being message 1" in (confirms.problem(2) or "")


@pytest.mark.server
def test_deliver_after_close_is_a_sink_error() -> None:
    sink = RabbitMQSink(require_rabbitmq())
    sink.close()
    with pytest.raises(SinkError, match="closed"):
        sink.deliver(transactions(1))


def test_the_url_hides_the_password() -> None:
    sink = open_sink("amqp://relay:hunter2@127.0.0.1:5672/%2F")
    assert "hunter2" not in sink.url
    assert "hunter2" not in repr(sink)
    sink.close()


def test_a_wrong_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="amqp://"):
        RabbitMQSink("http://127.0.0.1:5672/")

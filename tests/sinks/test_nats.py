"""The NATS JetStream sink: the sink contract, then its own behaviour and faults."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import nats
import pytest
from nats.js.api import DiscardPolicy
from nats.js.errors import NotFoundError

from rowcast.change import Change
from rowcast.errors import ConfigError, PermanentSinkError, SinkError, TransientSinkError
from rowcast.sinks import open_sink
from rowcast.sinks.base import change_id
from rowcast.sinks.nats import NatsSink, subject_token
from rowcast.testing.sink import SinkContract, closed_port, transactions
from tests.sinks import require_nats

T = TypeVar("T")

BAD_URLS = [
    ("nats://", "no host"),
    ("nats://127.0.0.1:port", "Port could not be cast"),
    ("nats://127.0.0.1:4222/rowcast", "no path"),
    ("nats://127.0.0.1:4222?stream", "malformed query"),
    ("nats://127.0.0.1:4222?stream=a.b", "stream name"),
    ("nats://127.0.0.1:4222?stream=", "stream name"),
    ("nats://127.0.0.1:4222?prefix=a..b", "subject prefix"),
    ("nats://127.0.0.1:4222?prefix=a.>", "subject prefix"),
    ("nats://127.0.0.1:4222?timeout=0", "timeout must be a positive number"),
    ("nats://127.0.0.1:4222?duplicate_window=soon", "duplicate_window must be"),
    ("nats://127.0.0.1:4222?subject=x", r"unknown option 'subject'.*stream, prefix"),
    ("nats://127.0.0.1:4222?stream=a&stream=b", "given twice"),
]


def js_call(call: Callable[[Any], Awaitable[T]]) -> T:
    """Run `call(jetstream)` on a connection of its own (the test's view of the server)."""

    async def run() -> T:
        nc = await nats.connect(require_nats(), connect_timeout=5, allow_reconnect=False)
        try:
            return await call(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(run())


def stream_messages(stream: str) -> list[Any]:
    """Every message of `stream` in order (none when it does not exist)."""

    async def read(js: Any) -> list[Any]:
        try:
            info = await js.stream_info(stream)
        except NotFoundError:
            return []
        if info.state.messages == 0:
            return []
        return [
            await js.get_msg(stream, seq)
            for seq in range(info.state.first_seq, info.state.last_seq + 1)
        ]

    return js_call(read)


def arrived(stream: str) -> list[tuple[uuid.UUID, Change]]:
    return [
        (uuid.UUID(m.headers["Nats-Msg-Id"]), Change.from_json(m.data))
        for m in stream_messages(stream)
    ]


def delete_stream(stream: str) -> None:
    async def delete(js: Any) -> None:
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(stream)

    js_call(delete)


@pytest.fixture
def name() -> Iterator[str]:
    """A fresh stream name that is also the subject prefix; the stream is deleted after."""
    require_nats()
    fresh = f"sinks_test_{uuid.uuid4().hex}"
    yield fresh
    delete_stream(fresh)


@pytest.mark.server
class TestNatsSink(SinkContract):
    deduplicates = True
    order = "total"
    bad_urls = BAD_URLS

    @pytest.fixture
    def destination(self, name: str) -> None:
        self.name = name

    def make_sink(self) -> NatsSink:
        return NatsSink(f"{require_nats()}?stream={self.name}&prefix={self.name}")

    def read_back(self) -> list[tuple[uuid.UUID, Change]]:
        return arrived(self.name)

    def unreachable_url(self) -> str:
        return f"nats://127.0.0.1:{closed_port()}?timeout=2"


# ---------------------------------------------------------------- its own behaviour


@pytest.mark.server
def test_subjects_and_headers(name: str) -> None:
    sink = open_sink(f"{require_nats()}?stream={name}&prefix={name}.cdc")
    batch = transactions(1, per_transaction=3, tables=[("shop", "orders"), (None, "a.b c")])
    sink.deliver(batch)
    sink.close()
    messages = stream_messages(name)
    assert [m.subject for m in messages] == [
        f"{name}.cdc.shop.orders.write",
        f"{name}.cdc._.a%2Eb%20c.update",
        f"{name}.cdc.shop.orders.delete",
    ]
    assert [m.headers["Nats-Msg-Id"] for m in messages] == [
        str(change_id(c, i)) for i, c in enumerate(batch[0])
    ]
    assert subject_token("x*y>z%") == "x%2Ay%3Ez%25"


@pytest.mark.server
def test_the_created_stream_takes_the_prefix_and_window(name: str) -> None:
    sink = NatsSink(require_nats(), stream=name, prefix=name, duplicate_window=30)
    sink.deliver(transactions(1))
    sink.close()
    info = js_call(lambda js: js.stream_info(name))
    assert info.config.subjects == [f"{name}.>"]
    assert info.config.duplicate_window == 30


@pytest.mark.server
def test_a_full_stream_is_a_sink_error_and_drops_nothing_silently(name: str) -> None:
    """max_msgs with discard=new: the publishes past the limit are refused, loudly."""
    js_call(
        lambda js: js.add_stream(
            name=name, subjects=[f"{name}.>"], max_msgs=5, discard=DiscardPolicy.NEW
        )
    )
    sink = NatsSink(require_nats(), stream=name, prefix=name)
    batch = transactions(3)  # 9 changes into room for 5
    with pytest.raises(TransientSinkError, match=r"max_msgs and discard.*4 of 9 messages"):
        sink.deliver(batch)
    assert len(stream_messages(name)) == 5
    js_call(lambda js: js.update_stream(name=name, subjects=[f"{name}.>"], max_msgs=-1))
    sink.deliver(batch)  # the relay's retry: the 5 stored are dropped as duplicates
    sink.close()
    expected = [(change_id(c, i), c) for tx in batch for i, c in enumerate(tx)]
    assert arrived(name) == expected


@pytest.mark.server
def test_a_deleted_stream_is_a_sink_error_then_made_again(name: str) -> None:
    sink = NatsSink(require_nats(), stream=name, prefix=name)
    sink.deliver(transactions(1))
    delete_stream(name)
    batch = transactions(2)
    with pytest.raises(TransientSinkError, match=r"no JetStream stream takes subjects"):
        sink.deliver(batch)
    sink.deliver(batch)  # reconnects, creates the stream, delivers
    sink.close()
    assert [c for _, c in arrived(name)] == [c for tx in batch for c in tx]


@pytest.mark.server
def test_a_stream_without_the_subjects_is_a_permanent_error(name: str) -> None:
    js_call(lambda js: js.add_stream(name=name, subjects=[f"{name}_other.>"]))
    sink = NatsSink(require_nats(), stream=name, prefix=name, timeout=3)
    message = rf"stream '{name}' takes subjects \['{name}_other.>'\].*add {name}.> to its"
    with pytest.raises(PermanentSinkError, match=message):
        sink.check()
    with pytest.raises(PermanentSinkError, match=message):
        sink.deliver(transactions(1))
    sink.close()


@pytest.mark.server
def test_subjects_held_by_another_stream_are_a_permanent_error_naming_it(name: str) -> None:
    js_call(lambda js: js.add_stream(name=name, subjects=[f"{name}.orders.>"]))
    other = f"{name}_b"
    sink = NatsSink(require_nats(), stream=other, prefix=name)
    message = f"cannot create stream '{other}'.*overlap the subjects of stream '{name}'"
    try:
        with pytest.raises(PermanentSinkError, match=message):
            sink.check()
        with pytest.raises(PermanentSinkError, match=message):
            sink.deliver(transactions(1))
    finally:
        sink.close()
        delete_stream(other)
    assert stream_messages(name) == []  # nothing went to the stream that is not ours


@pytest.mark.server
def test_a_publish_nobody_acks_is_a_sink_error_within_the_timeout(name: str) -> None:
    """A core NATS subscriber holds the subjects (no stream does any more): no ack comes."""
    sink = NatsSink(require_nats(), stream=name, prefix=name, timeout=1)
    sink.check()  # connected to the stream it made, which then lets the subjects go
    js_call(lambda js: js.update_stream(name=name, subjects=[f"{name}_other.>"]))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def silent() -> Any:
        nc = await nats.connect(require_nats(), connect_timeout=5, allow_reconnect=False)
        await nc.subscribe(f"{name}.>")  # takes every message, answers none
        await nc.flush()
        return nc

    listener = asyncio.run_coroutine_threadsafe(silent(), loop).result(10)
    try:
        with pytest.raises(TransientSinkError, match=r"no publish ack within 1 s"):
            sink.deliver(transactions(1))
    finally:
        sink.close()
        asyncio.run_coroutine_threadsafe(listener.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    assert stream_messages(name) == []


@pytest.mark.server
def test_a_durable_pull_consumer_reads_every_change(name: str) -> None:
    """The documented way to consume: a durable consumer filtered by subject, acking each."""
    sink = NatsSink(require_nats(), stream=name, prefix=name)
    batch = transactions(4, tables=[("shop", "orders"), ("shop", "items")])
    sink.deliver(batch)
    sink.close()

    async def consume(js: Any) -> list[Change]:
        sub = await js.pull_subscribe(f"{name}.shop.orders.*", durable="mailer", stream=name)
        got = []
        for message in await sub.fetch(100, timeout=5):
            got.append(Change.from_json(message.data))
            await message.ack()
        return got

    orders = [c for tx in batch for c in tx if c.table == "orders"]
    assert js_call(consume) == orders


@pytest.mark.server
def test_deliver_works_inside_a_running_event_loop(name: str) -> None:
    sink = NatsSink(require_nats(), stream=name, prefix=name)
    batch = transactions(1)

    async def app() -> None:
        sink.deliver(batch)  # a blocking call from async code: the sink has its own loop

    asyncio.run(app())
    sink.close()
    assert len(stream_messages(name)) == 3


@pytest.mark.server
def test_deliver_after_close_is_a_sink_error() -> None:
    sink = NatsSink(require_nats())
    sink.close()
    with pytest.raises(SinkError, match="closed"):
        sink.deliver(transactions(1))


def test_the_url_hides_the_password() -> None:
    sink = open_sink("nats://relay:hunter2@127.0.0.1:4222")
    assert "hunter2" not in sink.url
    assert "hunter2" not in repr(sink)
    sink.close()


def test_a_wrong_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nats://"):
        NatsSink("http://127.0.0.1:4222")


@pytest.mark.server
def test_a_message_over_max_payload_is_permanent(name: str) -> None:
    sink = NatsSink(require_nats(), stream=name, prefix=name)
    small = transactions(1)
    row = {"id": 1, "data": b"x" * 2_000_000}  # the server's default max_payload is 1 MB
    huge = [[Change("write", "shop", "blobs", 1, None, row, 1.0, "t", f"{name}:9", "mysql")]]
    with pytest.raises(PermanentSinkError, match=r"larger than the server takes.*max_payload"):
        sink.deliver(huge)
    sink.deliver(small)  # the next batch goes through
    sink.close()
    assert [c for _, c in arrived(name)] == small[0]


def test_an_unreachable_server_is_transient() -> None:
    sink = NatsSink(f"nats://127.0.0.1:{closed_port()}?timeout=2")
    with pytest.raises(TransientSinkError, match="cannot connect"):
        sink.check()
    sink.close()

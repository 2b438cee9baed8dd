"""The NATS JetStream consumer: the consumer contract, then what is JetStream's own."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import nats
import pytest

from rowcast.change import Change
from rowcast.sinks.base import change_id
from rowcast.testing.consume import ConsumerContract, workload
from rowcast.testing.sink import closed_port
from tests.sinks import require_nats


async def _dead(url: str, stream: str) -> list[tuple[Change, str]]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        found = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            headers: Any = msg.headers or {}
            found.append((Change.from_json(msg.data or b""), headers["Rowcast-Error"]))
        return found
    finally:
        await nc.close()


async def _delete(url: str, *streams: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for stream in streams:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(stream)
    finally:
        await nc.close()


@pytest.mark.server
class TestNatsConsumer(ConsumerContract):
    fast = {"ack_wait": 1}
    bad_urls = [
        ("nats://", "no host"),
        ("nats://127.0.0.1:port", "Port could not be cast"),
        ("nats://127.0.0.1:4222?stream=a.b", "stream name has no"),
        ("nats://127.0.0.1:4222?ack_wait=0", "ack_wait must be a positive number"),
        ("nats://127.0.0.1:4222?subjects=x", "unknown option 'subjects'"),
    ]

    @pytest.fixture
    def destination(self) -> Iterator[None]:
        self.url = require_nats()
        self.name = f"consume_test_{uuid.uuid4().hex[:10]}"
        yield
        asyncio.run(_delete(self.url, self.name, f"{self.name}_dead"))

    def sink_url(self) -> str:
        return f"{self.url}?stream={self.name}&prefix={self.name}"

    def consumer_url(self) -> str:
        return self.sink_url()

    def dead_letters(self) -> list[tuple[Change, str]]:
        return asyncio.run(_dead(self.url, f"{self.name}_dead"))

    def unreachable_url(self) -> str:
        return f"nats://127.0.0.1:{closed_port()}?timeout=1"

    def dead_letter_url(self) -> str:
        return self.consumer_url()

    def test_held_messages_are_not_redelivered_to_another_consumer(self) -> None:
        # ack_wait is 1 s; each consumer holds 40 messages and handles 5 per 0.35 s, so
        # the last of them waits 2.45 s locally: without in-progress reports JetStream
        # would hand them to the other consumer meanwhile
        self.ready()
        calls: collections.Counter[str] = collections.Counter()
        lock = threading.Lock()

        def slow(changes: list[Change]) -> None:
            with lock:
                calls.update(str(change_id(change, 0)) for change in changes)
            time.sleep(0.35)

        consumers = [
            self.consumer(slow, workers=1, batch_size=5, max_in_flight=40) for _ in range(2)
        ]
        threads = [self.start(consumer) for consumer in consumers]
        transactions = workload(160, 40, table=self.table)
        self.deliver(transactions)
        expected = {str(change_id(changes[0], 0)) for changes in transactions}

        def handled() -> int:
            with lock:
                return len(calls)

        self.wait_for(lambda: handled() >= len(expected), "every change handled")
        time.sleep(1.5)  # past ack_wait: a redelivered message would be handled again
        for consumer, thread in zip(consumers, threads, strict=True):
            self.stop(consumer, thread)
        assert set(calls) == expected
        assert [n for n in calls.values() if n != 1] == []
        assert all(consumer.stats.handled > 0 for consumer in consumers), "one did it all"
        assert sum(consumer.stats.handled for consumer in consumers) == len(expected)

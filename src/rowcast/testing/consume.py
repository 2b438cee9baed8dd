"""`ConsumerContract`: what every `rowcast.consume` broker must do, against the real broker.

Subclass it in a test module and override the hooks below; the ``destination``
fixture runs first: name fresh streams / subjects / queues there and remove them after
the test::

    class TestRedisConsumer(ConsumerContract):
        @pytest.fixture
        def destination(self):
            self.key = f"test:{uuid.uuid4().hex}"
            yield
            redis.Redis().delete(self.key, f"{self.key}:dead")

        def sink_url(self):            # where the relay's sink writes
            return f"redis://localhost/0?stream={self.key}"

        def consumer_url(self):        # where the consumer reads the same messages
            return self.sink_url()

        def dead_letters(self):        # (Change, error text) of every parked message
            ...

        def unreachable_url(self):
            return f"redis://127.0.0.1:{closed_port()}/0?timeout=1"

`fast` holds the broker options that make a crashed consumer's messages come back
quickly (a short ``claim_after`` or ``ack_wait``). `rowcast.testing.consume:record` is a
handler for subprocesses: it appends ``pk version`` lines to the file named by
``$ROWCAST_CONSUME_RECORD`` (sleeping ``$ROWCAST_CONSUME_DELAY`` seconds per batch).

A broker that lives in the test's own process (``memory://``) sets `in_process` and
provides `cut`: a consumer there cannot be a ``rowcast consume`` subprocess, so it is
"killed" by having the broker drop its connection, as a broker does when a consumer's
process dies, and then stopping it before it reconnects; every other test is the same.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from rowcast.change import Change
from rowcast.consume import Consumer, open_consumer
from rowcast.errors import ConfigError, RowcastError
from rowcast.sinks import open_sink

__all__ = ["ConsumerContract", "record", "workload"]

WAIT = 30.0  # seconds: a bound that a test never reaches unless the consumer hangs


def workload(changes: int, rows: int, *, table: str) -> list[list[Change]]:
    """`changes` one-change transactions over `rows` rows, updates interleaved.

    Change ``i`` touches row ``i % rows`` and carries ``after["v"] == i``, so a row's
    versions rise in commit order. Positions are unique to this call.
    """
    run = uuid.uuid4().hex[:12]
    result = []
    for i in range(changes):
        pk = i % rows
        action = "write" if i < rows else "update"
        before = None if i < rows else {"id": pk, "v": i - rows}
        result.append(
            [
                Change(
                    action,
                    "consume_test",
                    table,
                    pk,
                    before=before,
                    after={"id": pk, "v": i},
                    position=f"{run}:{i}",
                    source="test",
                )
            ]
        )
    return result


def record(changes: list[Change]) -> None:
    """A handler for subprocess tests: appends ``pk version`` lines to $ROWCAST_CONSUME_RECORD."""
    lines = "".join(f"{c.pk} {c.after['v'] if c.after else -1}\n" for c in changes)
    with open(os.environ["ROWCAST_CONSUME_RECORD"], "a") as file:
        file.write(lines)
    time.sleep(float(os.environ.get("ROWCAST_CONSUME_DELAY", "0")))


class _Recorder:
    """A thread-safe handler that keeps what it was given, optionally failing some rows."""

    def __init__(self, fail: Callable[[Change], bool] | None = None) -> None:
        self.lock = threading.Lock()
        self.seen: dict[Any, list[int]] = {}
        self.running: set[Any] = set()
        self.overlaps = 0
        self.fail = fail

    def __call__(self, changes: list[Change]) -> None:
        if self.fail is not None and any(self.fail(c) for c in changes):
            raise RuntimeError("this row cannot be handled")
        pks = {c.pk for c in changes}
        with self.lock:
            if self.running & pks:
                self.overlaps += 1  # one row in two batches at once: the order is broken
            self.running |= pks
        time.sleep(0)
        with self.lock:
            self.running -= pks
            for change in changes:
                assert change.after is not None
                self.seen.setdefault(change.pk, []).append(change.after["v"])

    def count(self) -> int:
        with self.lock:
            return sum(len(v) for v in self.seen.values())


class ConsumerContract:
    """The consumer contract; see the module docstring for the hooks to provide."""

    fast: ClassVar[dict[str, Any]] = {}
    bad_urls: ClassVar[list[tuple[str, str]]] = []  # (url, part of the ConfigError message)
    #: the broker lives in this process (no subprocess can reach it): see `cut`
    in_process: ClassVar[bool] = False

    @pytest.fixture
    def destination(self) -> None:
        raise NotImplementedError("override the destination fixture")

    @pytest.fixture(autouse=True)
    def _setup(self, destination: None) -> None:
        self.table = f"t_{uuid.uuid4().hex[:10]}"
        self.group = f"consume_test_{uuid.uuid4().hex[:10]}"

    def sink_url(self) -> str:
        raise NotImplementedError

    def consumer_url(self) -> str:
        raise NotImplementedError

    def dead_letters(self) -> list[tuple[Change, str]]:
        raise NotImplementedError

    def unreachable_url(self) -> str:
        raise NotImplementedError

    def dead_letter_url(self) -> str | None:
        """Where `rowcast.dlq.open_dead_letters` finds the dead letters (None: nowhere)."""
        return None

    def cut(self, consumer: Consumer) -> None:
        """Drop `consumer`'s connection at the broker, as when its process dies (`in_process`)."""
        raise NotImplementedError

    # ------------------------------------------------------------ helpers

    def deliver(self, transactions: list[list[Change]], size: int = 500) -> None:
        sink = open_sink(self.sink_url())
        try:
            for start in range(0, len(transactions), size):
                sink.deliver(transactions[start : start + size])
        finally:
            sink.close()

    def consumer(self, handler: Callable[[list[Change]], object], **options: Any) -> Consumer:
        merged = {"batch_size": 50, **self.fast, **options}
        return open_consumer(self.consumer_url(), handler, group=self.group, **merged)

    def start(self, consumer: Consumer) -> threading.Thread:
        """Run `consumer` in a thread; wait until it is connected."""
        thread = threading.Thread(target=consumer.run, daemon=True)
        thread.start()
        return thread

    def stop(self, consumer: Consumer, thread: threading.Thread) -> None:
        consumer.stop()
        thread.join(WAIT)
        assert not thread.is_alive(), "the consumer did not stop"

    @staticmethod
    def wait_for(predicate: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def ready(self, group: str | None = None) -> None:
        """Make the stream / queue and the group exist before anything is delivered
        (``create=True``: a consumer makes nothing unless asked; RabbitMQ needs the queue)."""
        merged = {"batch_size": 50, **self.fast}
        consumer = open_consumer(
            self.consumer_url(),
            lambda changes: None,
            group=group or self.group,
            create=True,
            **merged,
        )
        consumer.transport.connect()
        consumer.transport.close()

    # ------------------------------------------------------------ the contract

    def test_three_workers_keep_every_rows_order(self) -> None:
        self.ready()
        self.deliver(workload(10_000, 500, table=self.table))
        recorder = _Recorder()
        consumer = self.consumer(recorder, workers=3)
        thread = self.start(consumer)
        self.wait_for(lambda: recorder.count() >= 10_000, "10,000 changes handled")
        self.stop(consumer, thread)
        assert recorder.overlaps == 0
        assert len(recorder.seen) == 500
        for pk, versions in recorder.seen.items():
            assert versions == list(range(pk, 10_000, 500)), f"row {pk} out of order"
        assert consumer.stats.handled == 10_000
        assert consumer.stats.parked == 0

    def test_rows_that_keep_failing_are_parked_and_the_rest_complete(self) -> None:
        self.ready()
        transactions = workload(10_000, 500, table=self.table)
        self.deliver(transactions)
        bad = {pk for pk in range(500) if pk % 50 == 7}  # 10 rows
        recorder = _Recorder(fail=lambda change: change.pk in bad)
        consumer = self.consumer(recorder, workers=3, attempts=2, backoff=0.01)
        thread = self.start(consumer)
        self.wait_for(
            lambda: consumer.stats.handled + consumer.stats.parked >= 10_000, "every change"
        )
        self.stop(consumer, thread)
        assert set(recorder.seen) == set(range(500)) - bad
        for pk, versions in recorder.seen.items():
            assert versions == list(range(pk, 10_000, 500))
        dead = self.dead_letters()
        parked = sorted((c.pk, c.after["v"]) for c, _ in dead if c.after)
        assert parked == sorted((pk, v) for pk in bad for v in range(pk, 10_000, 500))
        errors = {error for _, error in dead}
        assert any("this row cannot be handled" in e for e in errors)
        assert all("cannot be handled" in e or "earlier change" in e for e in errors)

    def test_dead_letters_replayed_are_handled_in_row_order_by_their_group_only(self) -> None:
        url = self.dead_letter_url()
        if url is None:
            pytest.skip("no dead-letter place to replay (rowcast.dlq)")
        from rowcast.dlq import open_dead_letters

        other = f"{self.group}_other"  # another group, reading the same changes
        self.ready()
        self.ready(other)
        self.deliver(workload(40, 4, table=self.table))  # rows 0-3, 10 versions each
        broken = threading.Event()
        broken.set()
        recorder = _Recorder(fail=lambda change: broken.is_set() and change.pk == 1)
        consumer = self.consumer(recorder, attempts=1, backoff=0.01)
        thread = self.start(consumer)
        stats = consumer.stats
        self.wait_for(lambda: stats.handled + stats.parked >= 40, "every change")
        assert set(recorder.seen) == {0, 2, 3}
        letters = open_dead_letters(url, group=self.group)
        try:
            assert [place.count for place in letters.places()] == [10]
            found = letters.read()
            assert [d.change.after["v"] for d in found if d.change and d.change.after] == list(
                range(1, 40, 4)
            )
            assert "this row cannot be handled" in found[0].why
            assert all("cannot be handled" in d.why or "an earlier change" in d.why for d in found)
            assert {d.group for d in found} == {self.group}
            assert found[0].row == f"consume_test.{self.table}:1"
            broken.clear()  # fixed: replay them to the consumer still running
            assert letters.replay() == 10
            assert letters.places() == []
        finally:
            letters.close()
        self.wait_for(lambda: recorder.seen.get(1) == list(range(1, 40, 4)), "row 1, in order")
        self.stop(consumer, thread)
        # the other group had every change once, and none of the copies replayed
        theirs = _Recorder()
        consumer = open_consumer(
            self.consumer_url(), theirs, group=other, batch_size=50, **self.fast
        )
        thread = self.start(consumer)
        self.wait_for(lambda: theirs.count() >= 40, "the other group's 40 changes")
        time.sleep(0.5)  # the replayed copies, if it took them, come after
        self.stop(consumer, thread)
        assert theirs.count() == 40

    def test_a_redelivered_change_is_handled_once(self) -> None:
        self.ready()
        transactions = workload(300, 30, table=self.table)
        self.deliver(transactions)
        self.deliver(transactions[100:200])  # a relay retrying a batch
        recorder = _Recorder()
        consumer = self.consumer(recorder, workers=2)
        thread = self.start(consumer)
        self.wait_for(lambda: recorder.count() >= 300, "300 changes")
        time.sleep(0.3)  # the duplicates, if the broker kept them, come after
        self.stop(consumer, thread)
        assert recorder.count() == 300
        for pk, versions in recorder.seen.items():
            assert versions == list(range(pk, 300, 30))

    def test_a_stopped_consumer_acked_what_it_handled(self, tmp_path: Path) -> None:
        self.ready()
        self.deliver(workload(2000, 100, table=self.table))
        slow = _Recorder()

        def handler(changes: list[Change]) -> None:
            slow(changes)
            time.sleep(0.01)

        first = self.consumer(handler, workers=2, batch_size=20)
        thread = self.start(first)
        self.wait_for(lambda: slow.count() >= 300, "some changes handled")
        self.stop(first, thread)
        handled_first = slow.count()
        assert handled_first < 2000, "stopped too late to test anything"
        rest = _Recorder()
        second = self.consumer(rest, workers=2)
        thread = self.start(second)
        self.wait_for(lambda: slow.count() + rest.count() >= 2000, "the rest")
        time.sleep(0.3)
        self.stop(second, thread)
        # nothing acked was handled again, and nothing was lost
        assert slow.count() + rest.count() == 2000

    def test_a_killed_consumer_loses_nothing(self, tmp_path: Path) -> None:
        self.ready()
        self.deliver(workload(3000, 150, table=self.table))
        kill = self._killed_in_process if self.in_process else self._killed_subprocess
        before = kill(tmp_path)
        assert len(before) < 3000, "killed too late to test anything"
        recorder = _Recorder()
        restarted = self.consumer(recorder, workers=3)
        thread = self.start(restarted)
        expected = {(i % 150, i) for i in range(3000)}

        def complete() -> bool:
            with recorder.lock:
                now = {(pk, v) for pk, vs in recorder.seen.items() for v in vs}
            return before | now >= expected

        self.wait_for(complete, "every change handled at least once after the restart")
        self.stop(restarted, thread)

    def _killed_subprocess(self, tmp_path: Path) -> set[tuple[int, ...]]:
        """``(pk, version)`` handled by a ``rowcast consume`` killed with SIGKILL mid-batch."""
        log = tmp_path / "handled.txt"
        env = {
            **os.environ,
            "ROWCAST_CONSUME_RECORD": str(log),
            "ROWCAST_CONSUME_DELAY": "0.05",
        }
        url = self.consumer_url()
        fast = "&".join(f"{name}={value}" for name, value in self.fast.items())
        if fast:
            url += ("&" if "?" in url else "?") + fast
        command = [
            str(Path(sys.executable).with_name("rowcast")),
            "consume",
            url,
            "--handler",
            "rowcast.testing.consume:record",
            "--group",
            self.group,
            "--workers",
            "3",
            "--batch-size",
            "20",
            "--log-format",
            "json",
        ]
        worker = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            self.wait_for(
                lambda: (
                    worker.poll() is not None
                    or (log.exists() and log.read_text().count("\n") >= 300)
                ),
                "the subprocess to handle changes",
            )
            assert worker.poll() is None, worker.stderr.read().decode() if worker.stderr else ""
            worker.send_signal(signal.SIGKILL)  # mid-batch: the handler sleeps in each batch
            worker.wait(WAIT)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
            if worker.stderr:
                worker.stderr.close()
        return {tuple(map(int, line.split())) for line in log.read_text().splitlines()}

    def _killed_in_process(self, tmp_path: Path) -> set[tuple[int, ...]]:
        """``(pk, version)`` handled by a consumer whose connection the broker dropped mid-batch.

        It is stopped at once, so it neither reconnects nor acknowledges anything more:
        what it held, and the batches it finished after the cut, are the broker's to
        deliver again, as after a SIGKILL.
        """
        recorder = _Recorder()

        def handler(changes: list[Change]) -> None:
            recorder(changes)
            time.sleep(0.05)

        victim = self.consumer(handler, workers=3, batch_size=20)
        thread = self.start(victim)
        self.wait_for(lambda: recorder.count() >= 300, "the consumer to handle changes")
        self.cut(victim)
        self.stop(victim, thread)
        with recorder.lock:
            return {(pk, v) for pk, vs in recorder.seen.items() for v in vs}

    def test_a_bad_url_is_a_config_error(self) -> None:
        for url, message in self.bad_urls:
            with pytest.raises(ConfigError, match=message):
                open_consumer(url, lambda changes: None)

    def test_an_unreachable_broker_fails_at_start(self) -> None:
        consumer = open_consumer(self.unreachable_url(), lambda changes: None, group=self.group)
        with pytest.raises(RowcastError, match=r"(?i)connect|reach"):
            consumer.run()

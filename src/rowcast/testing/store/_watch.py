"""What `watch` promises: catch up, then live, no gap, no busy polling."""

from __future__ import annotations

import multiprocessing
import time
from itertools import islice
from typing import Any

import pytest

from rowcast.errors import ConfigError, StoreError
from rowcast.store import Watch

from ._base import WAIT, Background, StoreContractBase, append_in_process, events, in_streams


class WatchTests(StoreContractBase):
    """Watching a stream or ``@all``: catch-up, live events, timeouts and closing."""

    def test_a_watch_is_an_iterator(self) -> None:
        with self.store.watch(self.stream(), timeout=0) as watch:
            assert isinstance(watch, Watch)
            assert iter(watch) is watch
        assert next(watch, None) is None

    def test_watch_from_now_replays_nothing(self) -> None:
        stream = self.stream()
        self.store.append(stream, events(3))
        assert list(self.store.watch(stream, timeout=0)) == []
        assert list(in_streams(self.store.watch(timeout=0), stream)) == []
        assert list(self.store.watch(stream, after=0, timeout=0)) == list(self.store.read(stream))

    def test_watch_from_now_yields_what_comes_next(self) -> None:
        stream, other = self.stream(), self.stream()
        self.store.append(stream, events(2))
        on_stream = self.store.watch(stream, timeout=WAIT)
        on_all = in_streams(self.store.watch("@all", timeout=WAIT), stream, other)
        self.store.append(other, events(1, "other"))
        self.store.append(stream, events(2, start=2))
        assert [(e.version, e.data["n"]) for e in islice(on_stream, 2)] == [(3, 2), (4, 3)]
        assert [(e.stream, e.version) for e in islice(on_all, 3)] == [
            (other, 1),
            (stream, 3),
            (stream, 4),
        ]

    def test_watch_after_catches_up_then_goes_live(self) -> None:
        stream, other = self.stream(), self.stream()
        first = self.store.append(stream, events(3))
        self.store.append(other, events(1))
        with self.store.watch(stream, after=1, timeout=WAIT) as watch:
            assert [e.version for e in islice(watch, 2)] == [2, 3]
            self.store.append(stream, events(1, start=3))
            assert next(watch).version == 4
        # for "@all", after is a global position
        with self.store.watch("@all", after=first.position - 1, timeout=WAIT) as watch:
            on_all = in_streams(watch, stream, other)
            assert [(e.stream, e.version) for e in islice(on_all, 3)] == [
                (stream, 3),
                (other, 1),
                (stream, 4),
            ]
            self.store.append(other, events(1))
            assert [(e.stream, e.version) for e in islice(on_all, 1)] == [(other, 2)]

    @pytest.mark.parametrize("target", ["stream", "@all"])
    def test_no_gap_and_no_duplicate_between_catch_up_and_live(self, target: str) -> None:
        stream = self.stream()
        start = self.store.stream_version("@all")
        stored, live = 1500, 200  # more than a page: the catch-up takes several reads
        self.store.append(stream, events(stored))

        def append_live() -> None:
            for n in range(live):
                self.store.append(stream, events(1, start=stored + n))

        seen: list[int] = []
        writer: Background | None = None
        watch = self.store.watch(stream if target == "stream" else "@all", after=0, timeout=WAIT)
        with watch:
            for event in in_streams(watch, stream):
                if event.position <= start:
                    continue
                seen.append(event.data["n"])
                if len(seen) == 10:  # appends race with the rest of the catch-up
                    writer = Background(append_live)
                if len(seen) == stored + live:
                    break
        assert writer is not None
        writer.result()
        assert seen == list(range(stored + live))

    def test_a_timeout_ends_the_watch_for_good(self) -> None:
        stream = self.stream()
        watch = self.store.watch(stream, timeout=0.05)
        began = time.monotonic()
        assert next(watch, None) is None
        assert 0.04 <= time.monotonic() - began < WAIT
        self.store.append(stream, events(1))
        assert next(watch, None) is None

    def test_the_timeout_counts_from_each_next(self) -> None:
        stream = self.stream()
        watch = self.store.watch(stream, timeout=WAIT)
        self.store.append(stream, events(2))
        assert [e.version for e in islice(watch, 2)] == [1, 2]
        quick = self.store.watch(stream, after=0, timeout=0)
        assert [e.version for e in quick] == [1, 2]  # timeout=0: what is there, then stop

    def test_close_from_another_thread_ends_a_blocked_next(self) -> None:
        watch = self.store.watch(self.stream())
        waiting = Background(lambda: next(watch, None))
        assert waiting.blocked()
        watch.close()
        assert waiting.result() is None
        watch.close()  # idempotent

    def test_a_with_block_closes_the_watch(self) -> None:
        stream = self.stream()
        with self.store.watch(stream) as watch:
            pass
        self.store.append(stream, events(1))
        assert next(watch, None) is None

    def test_watch_an_empty_or_a_deleted_stream(self) -> None:
        empty, deleted = self.stream(), self.stream()
        self.store.append(deleted, events(3))
        self.store.delete_stream(deleted)
        on_empty = self.store.watch(empty)  # no timeout: only a wake-up ends the wait
        on_deleted = self.store.watch(deleted, timeout=WAIT)
        on_deleted_after_0 = self.store.watch(deleted, after=0, timeout=WAIT)
        waiting = Background(lambda: next(on_empty))
        assert waiting.blocked()
        self.store.append(empty, events(1))
        self.store.append(deleted, events(1, start=7))
        try:
            assert waiting.result().version == 1
        finally:
            on_empty.close()
        assert [(e.version, e.data) for e in islice(on_deleted, 1)] == [(1, {"n": 7})]
        assert [(e.version, e.data) for e in islice(on_deleted_after_0, 1)] == [(1, {"n": 7})]

    @pytest.mark.parametrize("after", [None, 3])
    def test_a_stream_deleted_while_watched_starts_again_at_1(self, after: int | None) -> None:
        stream = self.stream()
        self.store.append(stream, events(3))
        with self.store.watch(stream, after=after, timeout=WAIT) as watch:
            self.store.append(stream, events(1, start=3))
            assert next(watch).version == 4
            self.store.delete_stream(stream)
            self.store.append(stream, events(6, start=10))  # past where the watch was
            assert [(e.version, e.data["n"]) for e in islice(watch, 6)] == [
                (v, 9 + v) for v in range(1, 7)
            ]

    def test_closing_the_store_ends_its_watches(self) -> None:
        store = self.open_store()
        stream = self.stream()
        watch = store.watch(stream)
        waiting = Background(lambda: next(watch, None))
        assert waiting.blocked()
        store.close()
        assert waiting.result() is None
        with pytest.raises(StoreError, match="closed"):
            store.watch(stream)
        with pytest.raises(StoreError, match="closed"):
            store.subscribe(self.subscription(), print)

    def test_an_append_wakes_a_blocked_watcher(self) -> None:
        stream = self.stream()
        with self.store.watch(stream) as watch:  # no timeout: only a wake-up ends the wait
            for n in range(3):
                waiting = Background(lambda: next(watch))
                assert waiting.blocked(0.05)
                self.store.append(stream, events(1, start=n))
                assert waiting.result(5).data == {"n": n}

    def test_idle_watchers_use_almost_no_cpu(self) -> None:
        watches = [self.store.watch(self.stream(), timeout=1.0) for _ in range(3)]
        watches.append(self.store.watch(timeout=1.0))
        began = time.process_time()  # every thread of this process
        waiting = [Background(lambda w=w: next(w, None)) for w in watches]  # type: ignore[misc]
        for thread in waiting:
            thread.result()
        assert time.process_time() - began < 0.1  # 10 % of a core: a behaviour bound

    def test_an_append_through_another_store_object_reaches_a_watcher(self) -> None:
        self.require_shared_url()
        stream = self.stream()
        other = self.open_store()
        with self.store.watch(stream) as watch:  # no timeout: only a wake-up ends the wait
            waiting = Background(lambda: next(watch))
            assert waiting.blocked()
            other.append(stream, events(1))
            assert waiting.result(5).version == 1

    def test_an_append_by_another_process_reaches_a_watcher(self) -> None:
        url = self.require_shared_url()
        stream = self.stream()
        on_stream = self.store.watch(stream)  # no timeout: only a wake-up ends the wait
        on_all = self.store.watch("@all")
        waiting = Background(lambda: [e.data for e in islice(on_stream, 2)])
        waiting_all = Background(lambda: [e.data for e in islice(in_streams(on_all, stream), 2)])
        context = multiprocessing.get_context("spawn")
        process = context.Process(target=append_in_process, args=(url, stream, 2, 0))
        process.start()
        try:
            got, got_all = waiting.result(60), waiting_all.result(60)
        finally:
            on_stream.close()
            on_all.close()
            process.join(60)
        assert process.exitcode == 0
        assert got == got_all == [{"worker": 0, "n": 0}, {"worker": 0, "n": 1}]

    @pytest.mark.parametrize(
        ("args", "kwargs", "error"),
        [
            ((1,), {}, TypeError),
            (("",), {}, ConfigError),
            (("@mine",), {}, ConfigError),
            ((), {"after": -1}, ConfigError),
            ((), {"after": "1"}, TypeError),
            ((), {"timeout": -1}, ConfigError),
            ((), {"timeout": float("nan")}, ConfigError),
            ((), {"timeout": "1"}, TypeError),
            ((), {"timeout": True}, TypeError),
        ],
    )
    def test_bad_watch_arguments(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception]
    ) -> None:
        with pytest.raises(error):
            self.store.watch(*args, **kwargs)

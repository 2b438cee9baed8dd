"""Appends racing from threads, store objects and processes lose nothing."""

from __future__ import annotations

import multiprocessing
import threading

from rowcast.store import EventStore

from ._base import StoreContractBase, append_in_process, append_with_retries, events


class ConcurrencyTests(StoreContractBase):
    """Writers that race: threads, several store objects, processes."""

    def test_threads_appending_with_expected_versions_lose_nothing(self) -> None:
        stream = self.stream()
        threads, each = 6, 15
        self._race(stream, [self.store] * threads, each)

    def test_threads_with_their_own_stores_lose_nothing(self) -> None:
        url = self.require_shared_url()
        stream = self.stream()
        stores = [self.open_store() for _ in range(4)]
        assert all(s.url == url for s in stores)
        self._race(stream, stores, 15)

    def _race(self, stream: str, stores: list[EventStore], each: int) -> None:
        barrier = threading.Barrier(len(stores))
        errors: list[BaseException] = []

        def work(store: EventStore, worker: int) -> None:
            barrier.wait()
            try:
                append_with_retries(store, stream, each, worker)
            except BaseException as e:  # reported below, in the test's own thread
                errors.append(e)

        threads = [threading.Thread(target=work, args=(s, i)) for i, s in enumerate(stores)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        self._check_counted(stream, len(stores), each)

    def _check_counted(self, stream: str, workers: int, each: int) -> None:
        recorded = list(self.store.read(stream))
        assert [e.version for e in recorded] == list(range(1, workers * each + 1))
        assert sorted((e.data["worker"], e.data["n"]) for e in recorded) == [
            (w, n) for w in range(workers) for n in range(each)
        ]
        for w in range(workers):  # each worker's events in its own order
            mine = [e.data["n"] for e in recorded if e.data["worker"] == w]
            assert mine == list(range(each))

    def test_a_new_instance_sees_what_another_appended(self) -> None:
        self.require_shared_url()
        stream = self.stream()
        writer = self.open_store()
        result = writer.append(stream, events(2))
        writer.save_snapshot(stream, b"state", 2)
        writer.close()
        reader = self.open_store()
        assert reader.stream_version(stream) == 2
        assert reader.stream_version("@all") >= result.position
        assert [e.data for e in reader.read(stream)] == [{"n": 0}, {"n": 1}]
        snapshot = reader.load_snapshot(stream)
        assert snapshot is not None
        assert snapshot.state == b"state"

    def test_processes_appending_to_one_stream_lose_nothing(self) -> None:
        url = self.require_shared_url()
        stream = self.stream()
        workers, each = 3, 20
        context = multiprocessing.get_context("spawn")
        processes = [
            context.Process(target=append_in_process, args=(url, stream, each, w))
            for w in range(workers)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(60)
        assert [p.exitcode for p in processes] == [0] * workers
        self._check_counted(stream, workers, each)

"""`BackfillContract`: a backfill while streaming never sends a row back in time.

A mixin for a `rowcast.testing.SourceContract` subclass whose source runs
backfills (``source.backfill(...)``): its tests use that contract's ``test``
table and hooks (`source`, `checkpoint`, `execute`, and ``table_rows``, as
`rowcast.testing.snapshot.SnapshotContract` does)::

    class TestBinlogSource(SourceContract, BackfillContract): ...

A few thousand rows are in the table before the source starts; a writer
inserts, updates and deletes rows while a backfill reads the table again in
small chunks. What the source hands out is replayed by `replay_backfill` over
the rows as they were when it started: each backfilled row must equal what the
stream had made of it by then (a row the stream changed after the select, or
deleted, must not come back older), and the end must equal the table. Once
straight through, once cut short mid-backfill and resumed from a checkpoint
that rows were delivered past, once with ``where=``, once cancelled. And how
``backfills()`` judges a tail (a reader without a checkpoint) stopped: on the
database's clock, whatever the clocks of the machines that write and read the
rows say, and never while it lives, even with a consumer that takes nothing for
many times ``stale_after`` (it beats until the backfill ends, then no more).

`replay_backfill` and `latest` serve tests of whole relays too (an event store
filled by a relay killed mid-backfill).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any
from unittest import mock

from rowcast.change import Change
from rowcast.sources import _heartbeat

from ._run import run_in_thread
from .snapshot import _until, _Writer, running

if TYPE_CHECKING:
    from rowcast.checkpoint import Checkpoint
    from rowcast.sources.base import LogSource

__all__ = ["BackfillContract", "latest", "replay_backfill"]

ROWS = 2000  #: rows in the table before the source starts
CHUNK = 50  #: rows per backfill chunk
_WAIT = 60.0
_PAUSE = 0.005  #: seconds between two writes

#: what a replay keeps of a row image
Value = Callable[[dict[str, Any]], Any]


def _data(image: dict[str, Any]) -> Any:
    return image.get("data")


def replay_backfill(
    initial: dict[Any, Any], changes: Sequence[Change], value: Value = _data
) -> dict[Any, Any]:
    """Rebuild ``{pk: value(row)}`` from the rows as they were when the source started
    (`initial`) and the `changes` it handed out, checking that no row goes back in time:
    a backfilled row must be one the stream has, as the stream has it."""
    state = dict(initial)
    for change in changes:
        pk = change.pk
        if change.snapshot:
            assert pk in state, f"a row deleted before it was backfilled came back: {change}"
            assert state[pk] == value(change.after or {}), (
                f"backfilled row {pk!r} is not what the stream made of it "
                f"(consumer: {state[pk]!r}): {change}"
            )
        elif change.action == "delete":
            state.pop(pk, None)
        else:
            state[pk] = value(change.after or {})
    return state


def latest(changes: Sequence[Change], value: Value = _data) -> dict[Any, Any]:
    """``{pk: value(row)}`` of each row's last change (a row whose last one deletes it is
    left out): per row, what a consumer ends with."""
    last: dict[Any, Change] = {}
    for change in changes:
        last[change.pk] = change
    return {
        pk: value(change.after or {}) for pk, change in last.items() if change.action != "delete"
    }


@contextlib.contextmanager
def _clock(ahead: float) -> Iterator[None]:
    """This machine's clock (``time.time``) `ahead` seconds off while inside."""
    real = time.time
    with mock.patch("time.time", side_effect=lambda: real() + ahead):
        yield


class _Paced(_Writer):
    """The snapshot contract's writer, pausing between writes: each chunk waits for its
    watermark to come back through the log, so a reader far behind a writer that writes
    as fast as it can would take minutes (the log comes first: the backfill waits)."""

    def step(self) -> None:
        super().step()
        time.sleep(_PAUSE)


class BackfillContract:
    """Backfills racing writers: no row back in time, resumable, `where`, cancel."""

    if TYPE_CHECKING:  # SourceContract's and SnapshotContract's

        def source(self, **options: Any) -> LogSource: ...
        def checkpoint(self, name: str = ...) -> Checkpoint: ...
        def execute(self, statements: Sequence[str], *, transaction: bool = False) -> None: ...
        def table_rows(self) -> dict[Any, str]: ...
        def start_position(self) -> str: ...

    # ------------------------------------------------------------ helpers

    def _seed(self) -> list[str]:
        data = [f"s{i}" for i in range(ROWS)]
        for first in range(0, ROWS, 500):
            values = ", ".join(f"('{d}')" for d in data[first : first + 500])
            self.execute([f"INSERT INTO test (data) VALUES {values}"])
        return data

    def _reader(self, **options: Any) -> LogSource:
        """A source reading from now on (the table as `table_rows` has it now: its start)."""
        options.setdefault("checkpoint", self.checkpoint("backfill.json"))
        return self.source(start=self.start_position(), **options)

    def _ask(self, **options: Any) -> int:
        options.setdefault("chunk", CHUNK)
        return self.source().backfill(["test"], **options)

    def _status(self, request: int, **options: Any) -> Any:
        return next(s for s in self.source().backfills(**options) if s.id == request)

    def _done(self, request: int) -> bool:
        return bool(self._status(request).done)

    def _caught_up(self, got: list[Change], writer: _Paced) -> None:
        writer.finish()
        self.execute(["INSERT INTO test (data) VALUES ('marker')"])
        _until(
            lambda: any(c.after and c.after.get("data") == "marker" for c in got[-50:]),
            "the marker written after the writer stopped",
        )

    def _tail_progress(self, request: int, reader: str, ahead: float) -> None:
        """A tail's progress on `request`, written as the engine writes it, on a machine
        whose clock is `ahead` seconds off."""
        reads = self.source()._backfill_reads()
        assert reads is not None
        signals = reads.signals()
        progress = {"tables": [["", "test"]], "index": 0, "rows": 5, "resumes": False}
        try:
            with _clock(ahead):
                signals.write("progress", progress, request=request, reader=reader)
        finally:
            signals.close()
            reads.close()

    def _signal_rows(self) -> list[tuple[int, str]]:
        """``(id, kind)`` of every row of ``rowcast_signal``."""
        reads = self.source()._backfill_reads()
        assert reads is not None
        signals = reads.signals()
        try:
            return [(row.id, row.kind) for row in signals.rows()]
        finally:
            signals.close()
            reads.close()

    # ------------------------------------------------------------ the contract

    def test_a_backfill_racing_writers_sends_no_row_back_in_time(self) -> None:
        live = self._seed()
        initial = self.table_rows()
        source = self._reader()
        writer = _Paced(self.execute, live)
        with running(source) as got:
            self.execute(["INSERT INTO test (data) VALUES ('started')"])
            _until(lambda: got, "the stream")
            writer.start()
            writer.written(10)
            request = self._ask()
            _until(lambda: self._done(request) or writer.failed, "the backfill")
            self._caught_up(got, writer)
        backfilled = [c for c in got if c.snapshot]
        assert all(c.action == "write" and c.before is None for c in backfilled)
        assert ROWS - writer.writes <= len(backfilled) <= ROWS + writer.writes
        assert len({c.pk for c in backfilled}) == len(backfilled), "a row backfilled twice"
        assert replay_backfill(initial, got) == self.table_rows()
        status = self._status(request)
        assert [(r.done, r.rows, r.error) for r in status.readers] == [
            (True, len(backfilled), None)
        ]

    def test_a_backfill_cut_short_resumes_where_it_was_checkpointed(self) -> None:
        live = self._seed()
        initial = self.table_rows()
        checkpoint = self.checkpoint("backfill.json")
        writer = _Paced(self.execute, live)
        first = self._reader(checkpoint=checkpoint)
        reading = iter(first)
        self.execute(["INSERT INTO test (data) VALUES ('started')"])
        before: list[Change] = list(next(reading))
        writer.start()
        request = self._ask()
        while sum(c.snapshot for c in before) < ROWS // 3:
            transaction = next(reading)
            before.extend(transaction)
            if sum(c.snapshot for c in before) < ROWS // 4:  # delivered past the checkpoint
                checkpoint.save(transaction[-1].position or "")
        reading.close()  # killed: its connections go
        first.close()
        writer.written(20)  # rows read already, rows delivered past the checkpoint, the rest
        with running(self.source(checkpoint=checkpoint)) as got:
            _until(lambda: self._done(request) or writer.failed, "the resumed backfill")
            self._caught_up(got, writer)
        again = sum(c.snapshot for c in got)
        # from scratch would read every row again (a few writes aside)
        assert again < ROWS * 0.9, f"{again} rows read after the restart: from scratch?"
        assert replay_backfill(initial, before + got) == self.table_rows()
        assert latest(before + got) == self.table_rows()

    def test_a_backfill_cancelled_while_its_reader_was_down_ends_cancelled(self) -> None:
        self._seed()
        checkpoint = self.checkpoint("backfill.json")
        first = self._reader(checkpoint=checkpoint)
        reading = iter(first)
        self.execute(["INSERT INTO test (data) VALUES ('started')"])
        next(reading)
        request = self._ask()
        got: list[Change] = []
        while sum(c.snapshot for c in got) < ROWS // 4:
            transaction = next(reading)
            got.extend(transaction)
            checkpoint.save(transaction[-1].position or "")
        reading.close()  # killed mid-backfill, its progress checkpointed
        first.close()
        self.source().cancel_backfill(request)  # while it is down
        with running(self.source(checkpoint=checkpoint)) as again:
            self.execute(["INSERT INTO test (data) VALUES ('back')"])
            _until(lambda: any(c.after and c.after.get("data") == "back" for c in again), "back")
            _until(lambda: self._done(request), "the cancel taken up")
        status = self._status(request)
        assert status.cancelled
        assert [(r.done, r.cancelled) for r in status.readers] == [(True, True)]  # not running
        assert not any(c.snapshot for c in again)  # it reads no more of it

    def test_a_backfill_where_reads_only_the_matching_rows(self) -> None:
        self._seed()
        with running(self._reader()) as got:
            self.execute(["INSERT INTO test (data) VALUES ('started')"])
            _until(lambda: got, "the stream")
            request = self._ask(where="data LIKE 's1%'")
            _until(lambda: self._done(request), "the backfill")
        backfilled = {c.after["data"] for c in got if c.snapshot and c.after}
        assert backfilled == {d for d in self.table_rows().values() if d.startswith("s1")}

    def test_a_cancelled_backfill_stops_and_says_so(self) -> None:
        self._seed()
        with running(self._reader()) as got:
            self.execute(["INSERT INTO test (data) VALUES ('started')"])
            _until(lambda: got, "the stream")
            request = self._ask(chunk=1)
            _until(lambda: any(c.snapshot for c in got), "the first chunk")
            self.source().cancel_backfill(request)
            _until(lambda: self._done(request), "the cancel")
            status = self._status(request)
            self.execute(["INSERT INTO test (data) VALUES ('after')"])
            _until(lambda: any(c.after and c.after.get("data") == "after" for c in got), "after")
            time.sleep(0.2)
        assert status.cancelled
        assert all(r.cancelled for r in status.readers)
        assert 0 < sum(c.snapshot for c in got) < ROWS

    def test_a_tail_is_judged_by_the_database_clock_not_by_the_machines(self) -> None:
        request = self._ask()
        self._tail_progress(request, "tail:behind", -3600.0)  # its machine an hour behind
        self._tail_progress(request, "tail:ahead", 3600.0)
        # rows of a rowcast that wrote its own machine's clock (here the database's)
        progress = json.dumps({"tables": [["", "test"]], "index": 0, "resumes": False})
        for reader, ago in (("tail:old-stopped", 120.0), ("tail:old-live", 1.0)):
            self.execute(
                [
                    "INSERT INTO rowcast_signal (kind, request, reader, data, created) VALUES "
                    f"('progress', {request}, '{reader}', '{progress}', {time.time() - ago})"
                ]
            )
        for ahead in (-3600.0, 0.0, 3600.0):  # followed from a machine an hour off
            with _clock(ahead):
                status = self._status(request)
            assert {r.reader: r.abandoned for r in status.readers} == {
                "tail:behind": False,
                "tail:ahead": False,
                "tail:old-stopped": True,
                "tail:old-live": False,
            }, f"followed from a machine {ahead:+.0f} s off"
            assert not status.abandoned

    def test_a_tail_whose_consumer_stops_taking_rows_is_not_abandoned(self) -> None:
        """A tail that resumes nothing counts as stopped once it wrote no row for
        `stale_after`; one whose consumer keeps it waiting (``rowcast tail | slow``) for
        many times that writes no progress, but is alive: it beats until the backfill
        ends, and then no more."""
        self._seed()
        stale = 1.5  # ten beats: a loaded machine (CI) may hold one back half a second
        got: list[Change] = []
        blocked, taking = threading.Event(), threading.Event()

        def take(changes: list[Change]) -> None:
            got.extend(changes)
            if any(c.snapshot for c in changes) and not taking.is_set():
                blocked.set()
                taking.wait(_WAIT)  # a consumer that takes nothing for a while

        tail = self.source(start=self.start_position())  # no checkpoint: a tail
        with mock.patch.object(_heartbeat, "EVERY", stale / 10), run_in_thread(tail, take, _WAIT):
            self.execute(["INSERT INTO test (data) VALUES ('started')"])
            _until(lambda: got, "the stream")
            request = self._ask()
            _until(blocked.is_set, "the first chunk")
            (first,) = self._status(request).readers
            try:
                for _ in range(45):  # 4.5 s: three times `stale`
                    status = self._status(request, stale_after=stale)
                    (reader,) = status.readers
                    assert not reader.abandoned, "a live tail whose consumer waits: abandoned"
                    assert not status.abandoned
                    time.sleep(0.1)
                assert (reader.rows, reader.updated) == (first.rows, first.updated)  # blocked
                assert not reader.done
            finally:
                taking.set()
            _until(lambda: self._done(request), "the backfill")
            (reader,) = self._status(request).readers
            assert reader.rows == len(self.table_rows())
            _until(lambda: "alive" not in {k for _, k in self._signal_rows()}, "the last beat")
            rows = self._signal_rows()
            time.sleep(stale)  # five beats, were it beating
            assert self._signal_rows() == rows, "a tail beats after its backfill ended"

    def test_a_tails_heartbeat_stops_with_a_cancel_and_with_the_tail(self) -> None:
        self._seed()

        def kinds() -> list[str]:
            return [kind for _, kind in self._signal_rows()]

        tail = self.source(start=self.start_position())  # no checkpoint: a tail
        with mock.patch.object(_heartbeat, "EVERY", 0.05), running(tail, slow=0.05) as got:
            self.execute(["INSERT INTO test (data) VALUES ('started')"])
            _until(lambda: got, "the stream")
            request = self._ask(chunk=1)
            _until(lambda: "alive" in kinds(), "a beat")
            self.source().cancel_backfill(request)
            _until(lambda: self._done(request), "the cancel")
            _until(lambda: "alive" not in kinds(), "the last beat")
            rows = self._signal_rows()
            time.sleep(0.3)  # six beats, were it beating
            assert self._signal_rows() == rows, "a tail beats after its backfill was cancelled"
            self._ask(chunk=1)
            _until(lambda: "alive" in kinds(), "a beat for the next backfill")
        # stopped mid-backfill: its beats stop, and it leaves no row of its own behind
        assert kinds() == ["backfill", "cancel", "backfill"]

"""`SnapshotContract`: an initial snapshot keeps the seam (part of `SourceContract`).

A source made with ``snapshot="initial"`` first hands out every row of the table
as ``write`` changes with ``snapshot=True``, then the changes committed after the
point it read them at. The tests here race a writer (inserts, updates and
deletes, each its own transaction) against a snapshot of a few thousand rows
read slowly, then rebuild the table from what the source handed out: every
streamed change must find the row as its before image says (nothing missed),
a streamed write must find no row (nothing doubled), and the end must equal the
table. Once straight through, once cut short mid-snapshot and resumed from the
checkpoint of its last chunk, and once resumed from a checkpoint that rows were
delivered past (as a relay delivers ahead of its checkpoint) and then changed.

A source without an initial snapshot sets ``initial_snapshot = False``; the
others implement `table_rows` (besides `SourceContract`'s hooks).
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

from rowcast.change import Change

from ._run import run_in_thread

if TYPE_CHECKING:
    from rowcast.checkpoint import Checkpoint
    from rowcast.sources.base import LogSource

__all__ = ["ROWS", "SnapshotContract", "replay"]

ROWS = 3000  #: rows in the table when a snapshot begins
CHUNK = 100  #: rows per snapshot chunk: 30 chunks, each handed out slowly
_WAIT = 60.0


def _until(condition: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + _WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {_WAIT:.0f} s waiting for {what}"
        time.sleep(0.01)


def replay(
    changes: Sequence[Change], state: dict[Any, Any] | None = None, *, reread: bool = False
) -> dict[Any, Any]:
    """Rebuild ``{pk: data}`` from `changes` as a consumer would, checking the seam.

    A row read by the snapshot must not be known yet (each row read once; with
    `reread`, a row delivered past a checkpoint may be read again); a streamed
    write must find no row (else it was doubled); an update or a delete must find
    the row as its before image has it (else a change was missed, or one already
    in the rows read came again). One exception: an update or a delete handed out
    between a snapshot cut short and the read of the rest (its position is a
    snapshot's) may be of a row the consumer never got (see `rowcast.sources._snapshot`).
    """
    state = {} if state is None else state
    for change in changes:
        pk, after, before = change.pk, change.after or {}, change.before or {}
        if change.snapshot:
            assert reread or pk not in state, f"row {pk!r} read twice: {change}"
            state[pk] = after.get("data")
        elif change.action != "write" and pk not in state and _between(change):
            if change.action == "update":
                state[pk] = after.get("data")
        elif change.action == "write":
            assert pk not in state, f"doubled at the seam: {change}"
            state[pk] = after.get("data")
        else:
            known = state.get(pk, "no row")
            assert known == before.get("data"), f"missed before {change} (consumer: {known!r})"
            if change.action == "update":
                state[pk] = after.get("data")
            else:
                del state[pk]
    return state


def _between(change: Change) -> bool:
    """Whether `change` was handed out between a snapshot cut short and the rest's read."""
    return (change.position or "").startswith("snapshot:")


@contextlib.contextmanager
def running(source: LogSource, slow: float = 0.0) -> Iterator[list[Change]]:
    """`source` run in a thread (checkpoints saved as `run` saves them), a consumer that
    takes `slow` seconds per snapshot chunk; yields what it handed out so far, and raises
    what `run` raised once stopped."""
    got: list[Change] = []

    def take(changes: list[Change]) -> None:
        got.extend(changes)
        if slow and changes[0].snapshot:
            time.sleep(slow)

    with run_in_thread(source, take, _WAIT):
        yield got


class _Writer(threading.Thread):
    """Inserts, updates and deletes rows of ``test`` by their unique ``data``, one
    statement per transaction, until stopped."""

    def __init__(self, execute: Callable[[Sequence[str]], None], live: list[str]) -> None:
        super().__init__(name="snapshot-writer", daemon=True)
        self.execute, self.live = execute, list(live)
        self.writes = 0
        self.failed: list[BaseException] = []
        self._done = threading.Event()
        self._random = random.Random(17)

    def run(self) -> None:
        try:
            while not self._done.is_set():
                self.step()
        except BaseException as error:  # raised in the test by `finish`
            self.failed.append(error)

    def step(self) -> None:
        r, live = self._random, self.live
        new = f"w{self.writes}"
        op = r.random()
        if op < 0.3 or not live:
            self.execute([f"INSERT INTO test (data) VALUES ('{new}')"])
            live.append(new)
        elif op < 0.8:
            old = live.pop(r.randrange(len(live)))
            self.execute([f"UPDATE test SET data = '{new}' WHERE data = '{old}'"])
            live.append(new)
        else:
            old = live.pop(r.randrange(len(live)))
            self.execute([f"DELETE FROM test WHERE data = '{old}'"])
        self.writes += 1

    def written(self, count: int) -> None:
        """Wait until `count` more writes are done."""
        goal = self.writes + count
        _until(lambda: self.writes >= goal or self.failed, f"{count} writes")

    def finish(self) -> None:
        self._done.set()
        self.join(_WAIT)
        assert not self.is_alive(), "the writer hangs"
        if self.failed:
            raise self.failed[0]


class SnapshotContract:
    """Initial snapshots racing writers: nothing missed, nothing doubled."""

    #: False for a source that has no initial snapshot (the outbox)
    initial_snapshot: ClassVar[bool] = True

    if TYPE_CHECKING:  # SourceContract's

        def source(self, **options: Any) -> LogSource: ...
        def checkpoint(self, name: str = ...) -> Checkpoint: ...
        def execute(self, statements: Sequence[str], *, transaction: bool = False) -> None: ...

    def table_rows(self) -> dict[Any, str]:
        """Override: every row of the test table now, ``{id: data}``."""
        raise NotImplementedError

    # ------------------------------------------------------------ helpers

    def _seeded(self) -> list[str]:
        if not self.initial_snapshot:
            pytest.skip("this source has no initial snapshot")
        data = [f"s{i}" for i in range(ROWS)]
        for first in range(0, ROWS, 500):
            values = ", ".join(f"('{d}')" for d in data[first : first + 500])
            self.execute([f"INSERT INTO test (data) VALUES {values}"])
        return data

    def _running(
        self, source: LogSource, slow: float = 0.01
    ) -> contextlib.AbstractContextManager[list[Change]]:
        """`running`, a consumer taking `slow` seconds per snapshot chunk (so that the
        writer writes while it reads)."""
        return running(source, slow)

    def _caught_up(self, got: list[Change], writer: _Writer) -> None:
        """Stop the writer, write a marker, wait for it: everything before it arrived."""
        writer.finish()
        self.execute(["INSERT INTO test (data) VALUES ('marker')"])
        _until(
            lambda: any(c.after and c.after.get("data") == "marker" for c in got[-50:]),
            "the marker written after the writer stopped",
        )

    # ------------------------------------------------------------ the contract

    def test_writes_racing_the_initial_snapshot_are_neither_missed_nor_doubled(self) -> None:
        writer = _Writer(self.execute, self._seeded())
        writer.start()
        writer.written(10)  # writing before, during and after the snapshot
        source = self.source(snapshot="initial", snapshot_chunk=CHUNK)
        with self._running(source) as got:
            _until(lambda: got, "the first chunk")
            during = writer.writes
            _until(lambda: any(not c.snapshot for c in got[-20:]) or writer.failed, "the stream")
            during = writer.writes - during
            writer.written(10)
            self._caught_up(got, writer)
        snapshot = [c for c in got if c.snapshot]
        assert all(c.action == "write" and c.before is None for c in snapshot)
        assert ROWS - writer.writes <= len(snapshot) <= ROWS + writer.writes
        assert during > 0, "no write raced the snapshot: the test proves nothing"
        assert replay(got) == self.table_rows()

    def test_a_snapshot_cut_short_resumes_with_nothing_missed_or_doubled(self) -> None:
        writer = _Writer(self.execute, self._seeded())
        writer.start()
        writer.written(10)
        checkpoint = self.checkpoint("snapshot.json")
        first = self.source(snapshot="initial", snapshot_chunk=CHUNK, checkpoint=checkpoint)
        reading = iter(first)
        delivered = [next(reading) for _ in range(ROWS // CHUNK // 3)]  # a third of the rows
        checkpoint.save(delivered[-1][-1].position or "")
        writer.written(20)
        reading.close()  # killed: its connections go
        first.close()
        writer.written(20)  # writes to rows read already, and to rows not read yet
        resumed = self.source(snapshot="initial", snapshot_chunk=CHUNK, checkpoint=checkpoint)
        with self._running(resumed) as got:
            _until(lambda: got, "the rest of the snapshot")
            _until(lambda: any(not c.snapshot for c in got[-20:]) or writer.failed, "the stream")
            writer.written(10)
            self._caught_up(got, writer)
        before = [c for tx in delivered for c in tx]
        assert all(c.snapshot for c in before)
        again = {c.pk for c in got if c.snapshot} & {c.pk for c in before}
        assert not again, f"rows read before the cut were read again: {sorted(again)[:5]}"
        assert replay(before + got) == self.table_rows()

    def test_rows_delivered_past_the_checkpoint_are_put_right_when_it_resumes(self) -> None:
        """A relay delivers ahead of its checkpoint: killed then, the rows it delivered past
        it may have changed or gone before the restart reads them again."""
        writer = _Writer(self.execute, self._seeded())
        writer.start()
        writer.written(10)
        checkpoint = self.checkpoint("snapshot.json")
        first = self.source(snapshot="initial", snapshot_chunk=CHUNK, checkpoint=checkpoint)
        reading = iter(first)
        delivered = [next(reading) for _ in range(ROWS // CHUNK // 3)]
        saved = delivered[-4][-1].position or ""  # three chunks delivered past it
        checkpoint.save(saved)
        reading.close()
        first.close()
        writer.finish()
        ahead = [c for tx in delivered[-3:] for c in tx]
        gone, changed = ahead[5], ahead[-5]
        self.execute(
            [
                f"DELETE FROM test WHERE data = '{gone.after['data']}'",  # type: ignore[index]
                f"UPDATE test SET data = 'x' WHERE data = '{changed.after['data']}'",  # type: ignore[index]
            ]
        )
        resumed = self.source(snapshot="initial", snapshot_chunk=CHUNK, checkpoint=checkpoint)
        writer = _Writer(self.execute, [])
        with self._running(resumed) as got:
            _until(lambda: got, "the rest of the snapshot")
            writer.start()
            _until(lambda: any(not c.snapshot for c in got[-20:]) or writer.failed, "the stream")
            writer.written(5)
            self._caught_up(got, writer)
        before = [c for tx in delivered for c in tx]
        kept = {c.pk for tx in delivered[:-3] for c in tx}
        again = {c.pk for c in got if c.snapshot} & kept
        assert not again, f"rows read before the checkpoint were read again: {sorted(again)[:5]}"
        assert replay(before + got, reread=True) == self.table_rows()

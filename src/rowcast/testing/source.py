"""`SourceContract`: what every log source (`rowcast.sources.LogSource`) must do.

Subclass it in a test module. The ``database`` fixture makes a fresh database
per test with a table ``test`` that the source captures from then on (``id``:
an auto-increment integer primary key, ``data``: text; full before images);
the hooks open the source and write to that table::

    class TestTriggerSource(SourceContract):
        @pytest.fixture
        def database(self, tmp_path):
            self.url = f"sqlite:///{tmp_path / 'app.db'}"
            with contextlib.closing(sqlite3.connect(tmp_path / "app.db")) as conn:
                conn.execute("CREATE TABLE test (id INTEGER PRIMARY KEY, data TEXT)")
            TriggerSource(self.url).install()          # capture from now on
            yield

        def make_source(self, **options):
            return TriggerSource(self.url, **options)

        def start_position(self):
            return "start"                              # a fresh file: only this test's rows

        def execute(self, statements, *, transaction=False):
            ...                                         # each in its own transaction, or one

The statements a test runs are SQL of three forms only (`SEED` shows them all),
so that a source fed by something else than SQL (the outbox) can map them:
``INSERT INTO test (data) VALUES ('a'), ('b')``, ``UPDATE test SET data = 'x'
WHERE <condition>`` and ``DELETE FROM test WHERE <condition>``, the condition
``id = 1``, ``id != 1`` or ``data = 'x'``.

`drop_connections` (the server drops the source's connections, as a network
fault or a restart would) and `misconfigured_source` (a source whose `check`
must fail) are optional: a source without a server skips those tests.
`table_rows` (``{id: data}`` of the table now) serves the initial snapshot's
tests (`rowcast.testing.snapshot`); a source without one sets
``initial_snapshot = False``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from rowcast.change import Change
from rowcast.checkpoint import Checkpoint, open_checkpoint
from rowcast.errors import ConfigError
from rowcast.hub import Hub
from rowcast.sources.base import LogSource, Source

from ._run import run_in_thread
from .snapshot import SnapshotContract

__all__ = [
    "SEED",
    "SEED_BY_STATEMENT",
    "SEED_EVENTS",
    "SEED_SIGNATURES",
    "Signature",
    "SourceContract",
    "events",
    "workload",
]

WAIT = 30.0  # seconds: a bound that a test never reaches unless the source hangs

#: the seed workload: every log source turns it into the same 13 changes
SEED = [
    "INSERT INTO test (data) VALUES ('a')",
    "INSERT INTO test (data) VALUES ('b'), ('c'), ('d')",
    "UPDATE test SET data = 'aa' WHERE id = 1",
    "UPDATE test SET data = 'bb' WHERE id = 2",
    "UPDATE test SET data = 'cc' WHERE id != 1",
    "DELETE FROM test WHERE id != 1",
    "DELETE FROM test WHERE id = 1",
]
#: (name, pk) of the changes of each statement of `SEED`, rows in key order
SEED_BY_STATEMENT = [
    [("test_write", 1)],
    [("test_write", 2), ("test_write", 3), ("test_write", 4)],
    [("test_update", 1)],
    [("test_update", 2)],
    [("test_update", 2), ("test_update", 3), ("test_update", 4)],
    [("test_delete", 2), ("test_delete", 3), ("test_delete", 4)],
    [("test_delete", 1)],
]
SEED_EVENTS = [change for statement in SEED_BY_STATEMENT for change in statement]

Signature = tuple[str, Any, Any]  # (action, data before, data after)

#: the (action, data before, data after) of each change of `SEED`, in order
SEED_SIGNATURES: list[Signature] = [
    ("write", None, "a"),
    *(("write", None, data) for data in "bcd"),
    ("update", "a", "aa"),
    ("update", "b", "bb"),
    *(("update", before, "cc") for before in ("bb", "c", "d")),
    *(("delete", "cc", None) for _ in range(3)),
    ("delete", "aa", None),
]


def events(transactions: Sequence[Sequence[Change]]) -> list[tuple[str, Any]]:
    """(name, pk) of every change of `transactions`, in order."""
    return [(c.name, c.pk) for tx in transactions for c in tx]


def _signature(change: Change) -> Signature:
    return (str(change.action), (change.before or {}).get("data"), (change.after or {}).get("data"))


def workload(prefix: str, count: int) -> tuple[list[list[str]], list[list[Signature]]]:
    """`count` transactions of one to five statements, and the changes each must give.

    Rows are told apart by their ``data``, which starts with `prefix`. The statements
    are of the three forms the module docstring names; a table that holds only rows
    of earlier transactions of this workload (or none) is all they need.
    """
    transactions: list[list[str]] = []
    expected: list[list[Signature]] = []
    for k in range(count):
        name = f"{prefix}{k}"
        statements = [f"INSERT INTO test (data) VALUES ('{name}.0')"]
        changes: list[Signature] = [("write", None, f"{name}.0")]
        if k % 3 == 1:
            statements.append(f"INSERT INTO test (data) VALUES ('{name}.1'), ('{name}.2')")
            changes += [("write", None, f"{name}.1"), ("write", None, f"{name}.2")]
        if k % 4 == 3:  # rows of earlier transactions: (k - 1).0 never updated, (k - 2).0 kept
            statements.append(f"UPDATE test SET data = '{name}.u' WHERE data = '{prefix}{k - 1}.0'")
            statements.append(f"DELETE FROM test WHERE data = '{prefix}{k - 2}.0'")
            changes += [
                ("update", f"{prefix}{k - 1}.0", f"{name}.u"),
                ("delete", f"{prefix}{k - 2}.0", None),
            ]
        transactions.append(statements)
        expected.append(changes)
    return transactions, expected


def _wait_for(condition: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {WAIT:.0f} s waiting for {what}"
        time.sleep(0.02)


class SourceContract(SnapshotContract):
    """The behaviour every log source shares; see `rowcast.sources.base.LogSource`.

    Its initial snapshot's tests are `rowcast.testing.snapshot.SnapshotContract`'s.
    """

    #: the rows one statement changes come in key order (False: in the database's own
    #: order, PostgreSQL's heap order, say: compared sorted)
    ordered_by_key: ClassVar[bool] = True
    #: a list may hold several whole transactions committed back to back (the SQLite
    #: trigger source, which finds transaction boundaries from the outside)
    merges_transactions: ClassVar[bool] = False
    #: a first read with an empty checkpoint saves where it starts (False: the source
    #: has no such position, the outbox: whatever is pending is read again anyway)
    start_in_checkpoint: ClassVar[bool] = True

    # ------------------------------------------------------------ the hooks

    @pytest.fixture
    def database(self) -> None:
        """Override: make this test's fresh database with its captured ``test`` table
        (yield, then remove what the test made: tables, slots, publications)."""

    def make_source(self, **options: Any) -> LogSource:
        """The source under test on this test's database, with `options` (``start``,
        ``end``, ``checkpoint``) and whatever the backend needs (tables, a slot, a short
        heartbeat or poll so that a stop is quick)."""
        raise NotImplementedError

    def start_position(self) -> str:
        """A ``start`` from which the source reads exactly what the test writes after
        this call (called before the test writes anything)."""
        raise NotImplementedError

    def execute(self, statements: Sequence[str], *, transaction: bool = False) -> None:
        """Run `statements` on the test database: each in its own transaction, or all
        in one when `transaction`."""
        raise NotImplementedError

    def drop_connections(self) -> int:
        """Drop, on the server, every connection of the sources this test opened (as a
        network fault would); how many. `pytest.skip` where there is no server."""
        pytest.skip("this source has no server to drop its connections")

    def misconfigured_source(self) -> LogSource | None:
        """A source whose `check` must raise `ConfigError` (a wrong password, an
        unreachable host, a server setting); None: skip that test."""
        return None

    # ------------------------------------------------------------ helpers

    @pytest.fixture(autouse=True)
    def _source_contract(self, database: None, tmp_path: Path) -> Iterator[None]:
        self._opened: list[LogSource] = []
        self._checkpoints: list[Checkpoint] = []
        self._tmp = tmp_path
        yield
        for source in self._opened:
            source.stop()
            source.close()
        for checkpoint in self._checkpoints:
            checkpoint.close()

    def source(self, **options: Any) -> LogSource:
        """`make_source(**options)`, closed at teardown."""
        source = self.make_source(**options)
        self._opened.append(source)
        return source

    def checkpoint(self, name: str = "checkpoint.json") -> Checkpoint:
        """A file checkpoint of this test, empty at first."""
        checkpoint = open_checkpoint(str(self._tmp / name))
        self._checkpoints.append(checkpoint)
        return checkpoint

    def read(self, **options: Any) -> list[list[Change]]:
        """Every transaction from ``start`` up to the server's position now."""
        return list(self.source(end="now", **options))

    @contextlib.contextmanager
    def streaming(self, source: LogSource) -> Iterator[list[list[Change]]]:
        """Run ``source.run`` in a thread while inside; yields what it published so far.

        On leaving: `stop`, the thread must end within `WAIT`, and what `run` raised
        is raised here.
        """
        got: list[list[Change]] = []
        with run_in_thread(source, got.append, WAIT):
            yield got

    def _arrived(self, got: list[list[Change]], count: int, what: str) -> None:
        _wait_for(lambda: sum(map(len, got)) >= count, what)

    def _assert_whole(
        self, got: list[list[Change]], expected: list[list[Signature]], *, exactly: bool = True
    ) -> None:
        """`got` holds the changes of `expected`, each transaction whole and in order."""
        assert [_signature(c) for tx in got for c in tx] == [c for tx in expected for c in tx]
        for tx in got:  # one transaction (or, merged, several): one txid and one position
            assert len({(c.txid, c.position) for c in tx}) == 1, tx
            assert tx[-1].position is not None
        ends = set(_ends(got))
        if self.merges_transactions and not exactly:
            assert ends <= set(_ends(expected)), "a transaction was split"
        else:
            assert _ends(got) == _ends(expected), "transactions were split or merged"

    # ------------------------------------------------------------ the contract

    def test_is_a_log_source_with_its_state_declared(self) -> None:
        source = self.source()
        assert isinstance(source, LogSource)
        assert isinstance(source, Source)
        assert (source.start, source.end, source.checkpoint, source.position) == (
            "now",
            None,
            None,
            None,
        )
        checkpoint = self.checkpoint()
        other = self.source(start=self.start_position(), end="now", checkpoint=checkpoint)
        assert (other.end, other.checkpoint) == ("now", checkpoint)

    def test_check_passes_again_and_close_is_idempotent(self) -> None:
        source = self.source(start=self.start_position(), end="now")
        source.check()
        source.check()
        source.close()
        source.close()
        assert list(source) == []  # a closed source reads again: close frees, never ends it
        source.close()

    def test_reading_to_now_with_nothing_new_returns_at_once(self) -> None:
        began = time.monotonic()
        assert self.read(start=self.start_position()) == []
        assert time.monotonic() - began < 5

    def test_a_bad_configuration_is_a_config_error_before_streaming(self) -> None:
        source = self.misconfigured_source()
        if source is None:
            pytest.skip("no misconfiguration to try on this source")
        self._opened.append(source)
        with pytest.raises(ConfigError):
            source.check()
        with pytest.raises(ConfigError):
            next(iter(source))

    def test_the_seed_workload_statement_by_statement(self) -> None:
        source = self.source(start=self.start_position())
        with self.streaming(source) as got:
            for count, statement in enumerate(SEED, 1):
                self.execute([statement])

                def arrived(count: int = count) -> bool:
                    return len(got) >= count

                _wait_for(arrived, f"the transaction of {statement!r}")
        by_statement = [[(c.name, c.pk) for c in tx] for tx in got]
        if not self.ordered_by_key:
            by_statement = [sorted(tx, key=repr) for tx in by_statement]
        assert by_statement == SEED_BY_STATEMENT
        signatures = [_signature(c) for tx in got for c in tx]
        if self.ordered_by_key:
            assert signatures == SEED_SIGNATURES
        else:
            assert sorted(signatures, key=repr) == sorted(SEED_SIGNATURES, key=repr)
        assert len({tx[0].txid for tx in got}) == len(SEED)
        assert len({c.source for tx in got for c in tx}) == 1
        update = got[2][0]
        assert (update.before, update.after) == ({"id": 1, "data": "a"}, {"id": 1, "data": "aa"})
        delete = got[6][0]
        assert (delete.before, delete.after) == ({"id": 1, "data": "aa"}, None)
        assert source.position is not None

    def test_the_seed_workload_in_one_transaction_reaches_every_hub_level(self) -> None:
        start = self.start_position()
        self.execute(SEED, transaction=True)
        hub = Hub()
        counts: dict[str, int] = {}
        published: list[list[Change]] = []
        hub.signal("commit").connect(lambda sender, changes: published.append(changes), weak=False)
        for name in ("write", "update", "delete", "commit", "test_update"):

            def count(sender: Any, _name: str = name, **kw: Any) -> None:
                counts[_name] = counts.get(_name, 0) + 1

            hub.signal(name).connect(count, weak=False)
        self.source(start=start, end="now").run(hub)
        assert counts == {"write": 4, "update": 5, "delete": 4, "commit": 1, "test_update": 5}
        (tx,) = published
        if self.ordered_by_key:
            assert events([tx]) == SEED_EVENTS
        else:
            assert sorted(events([tx]), key=repr) == sorted(SEED_EVENTS, key=repr)
        assert len({(c.txid, c.position) for c in tx}) == 1

    def test_transactions_come_whole_and_in_commit_order(self) -> None:
        transactions, expected = workload("w", 12)
        with self.streaming(self.source(start=self.start_position())) as got:
            for statements in transactions:  # as fast as the database takes them
                self.execute(statements, transaction=True)
            self._arrived(got, sum(map(len, expected)), "every transaction")
            time.sleep(0.3)  # anything more (a duplicate) would arrive now
        self._assert_whole(got, expected, exactly=False)

    def test_resume_from_a_checkpoint_loses_and_repeats_nothing(self) -> None:
        start = self.start_position()
        transactions, expected = workload("r", 8)
        for statements in transactions[:2]:
            self.execute(statements, transaction=True)
        checkpoint = self.checkpoint()
        # a relay delivers the first transaction (having read ahead), saves it, and dies
        first_source = self.source(start=start, checkpoint=checkpoint)
        reading = iter(first_source)
        first = next(reading)
        checkpoint.save(first[-1].position or "")
        reading.close()
        first_source.close()
        assert len(first) in _ends(expected), "a transaction was split"
        delivered = _ends(expected).index(len(first)) + 1
        assert [_signature(c) for c in first] == [c for tx in expected[:delivered] for c in tx]
        for statements in transactions[2:]:
            self.execute(statements, transaction=True)
        # its restart: the checkpoint wins over start; run saves after each transaction
        rest: list[list[Change]] = []
        hub = Hub()
        hub.signal("commit").connect(lambda sender, changes: rest.append(changes), weak=False)
        self.source(start=start, checkpoint=checkpoint, end="now").run(hub)
        self._assert_whole(rest, expected[delivered:], exactly=False)
        assert checkpoint.load() == rest[-1][-1].position
        # and again, from what that run saved: only what was written since
        more, expected_more = workload("s", 3)
        for statements in more:
            self.execute(statements, transaction=True)
        again = self.read(start=start, checkpoint=checkpoint)
        self._assert_whole(again, expected_more, exactly=False)

    def test_a_first_run_that_ends_before_anything_arrives_resumes_where_it_began(
        self,
    ) -> None:
        # the user's step: a relay's first run (start "now", an empty checkpoint) stops
        # before it delivered anything; its restart must read what was written meanwhile
        checkpoint = self.checkpoint()
        assert self.read(checkpoint=checkpoint) == []
        if self.start_in_checkpoint:
            assert checkpoint.load() is not None, "the start was not recorded"
        self.execute(["INSERT INTO test (data) VALUES ('meanwhile')"])
        again = self.read(checkpoint=checkpoint)
        assert [_signature(c) for tx in again for c in tx] == [("write", None, "meanwhile")]

    def test_a_first_transaction_read_but_not_delivered_is_read_again(self) -> None:
        # a relay's first run reads a transaction, then dies before any sink took it
        # (a refused first batch, a sink down then SIGKILL): nothing was saved after it
        checkpoint = self.checkpoint()
        source = self.source(checkpoint=checkpoint)
        reading = iter(source)
        first: list[list[Change]] = []
        thread = threading.Thread(target=lambda: first.append(next(reading, [])), daemon=True)
        thread.start()
        if self.start_in_checkpoint:  # else it reads whatever is pending, whenever written
            _wait_for(lambda: checkpoint.load() is not None, "the start in the checkpoint")
        self.execute(["INSERT INTO test (data) VALUES ('first')"])
        thread.join(WAIT)
        assert not thread.is_alive(), "the first transaction never came"
        reading.close()
        source.close()
        assert [_signature(c) for tx in first for c in tx] == [("write", None, "first")]
        again = self.read(checkpoint=checkpoint)
        assert [_signature(c) for tx in again for c in tx] == [("write", None, "first")]

    def test_stop_from_another_thread_ends_run_within_a_second(self) -> None:
        source = self.source(start=self.start_position())
        with self.streaming(source) as got:
            self.execute(["INSERT INTO test (data) VALUES ('x')"])
            _wait_for(lambda: got, "the first transaction")
            time.sleep(0.3)  # idle, waiting for the next
            began = time.monotonic()
        assert time.monotonic() - began < 1.0

    def test_a_stop_right_after_run_starts_is_not_forgotten(self) -> None:
        source = self.source()
        thread = threading.Thread(target=source.run, args=(Hub(),), daemon=True)
        thread.start()
        source.stop()
        thread.join(WAIT)
        assert not thread.is_alive()

    def test_reconnects_after_the_server_drops_the_connection(self) -> None:
        transactions, expected = workload("d", 4)
        with self.streaming(self.source(start=self.start_position())) as got:
            for number, statements in enumerate(transactions):
                self.execute(statements, transaction=True)
                self._arrived(got, sum(map(len, expected[: number + 1])), f"transaction {number}")
                if number < 2:
                    dropped = self.drop_connections()
                    assert dropped > 0, "no connection was dropped: the test proves nothing"
            time.sleep(0.5)  # a transaction read again would arrive now
        self._assert_whole(got, expected)


def _ends(transactions: Sequence[Sequence[Any]]) -> list[int]:
    """Where each transaction ends, counted in changes from the first."""
    ends, total = [], 0
    for tx in transactions:
        total += len(tx)
        ends.append(total)
    return ends

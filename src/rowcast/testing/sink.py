"""`SinkContract`: what every relay sink (`rowcast.sinks.Sink`) must do.

Subclass it in a test module, point it at a fresh destination per test and override
`make_sink` and `read_back` (`read_rows` for a replica) and the class attributes that
describe the sink::

    class TestRedisSink(SinkContract):
        deduplicates = False        # Redis keeps a re-delivered change twice
        order = "total"             # one stream: one order across tables

        @pytest.fixture
        def destination(self):
            self.key = f"test:{uuid.uuid4().hex}"
            yield
            redis.Redis().delete(self.key)

        def make_sink(self):
            return open_sink(f"redis://localhost/0?stream={self.key}")

        def read_back(self):
            return [(uuid.UUID(f[b"id"].decode()), Change.from_json(f[b"body"]))
                    for _, f in redis.Redis().xrange(self.key)]

        def unreachable_url(self):
            return f"redis://127.0.0.1:{closed_port()}/0"

        bad_urls = [("redis://localhost/0?stream", "stream")]

The ``destination`` fixture runs first: override it to name a fresh destination and
remove it after the test. Tests use ``self.sink`` (made next, closed after). `read_back` is called
once per test, after every delivery: it returns what reached the destination as
``(id, Change)`` pairs in the order the destination holds them.

What differs between destinations is declared by the subclass, and the tests follow it:

* `deduplicates`: a re-delivered change is kept once (an event store, JetStream), or
  arrives again with its id (a stream, a queue, stdout);
* `order`: the destination keeps one order across tables (``"total"``), commit order
  within each table (``"table"``: a stream per table) or within each row (``"row"``: an
  event store's stream per row);
* `holds`: ``"changes"`` (every change with its id, read with `read_back`) or
  ``"rows"``: a replica keeps the rows the changes leave, read with `read_rows` (each
  value as `stored` says the database gives it back); the tests then compare those
  rows with what applying the changes in commit order gives, a change without a
  position (which a replica needs no id for) is applied, and the test of change ids
  is skipped: a replica keeps none;
* `failing_sink`: a sink of the backend whose destination is down or gone (a server
  on a `closed_port`, a closed store, a closed stream), to check that it raises
  `SinkError` rather than hangs;
* `unreachable_url`: a URL of the backend whose server is down; `Sink.check` of it
  must fail within `CHECK_WAIT` seconds with a `ConfigError` or `SinkError` naming
  the URL (its password masked), and delivering to it is a `TransientSinkError`.

`Sink.check` of the test's own destination must pass, and change nothing that the
deliveries after it can see.
"""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import pytest

from rowcast.change import Action, Change
from rowcast.errors import ConfigError, SinkError, TransientSinkError
from rowcast.sinks.base import Sink, change_id, open_sink

__all__ = ["CHECK_WAIT", "Arrived", "Rows", "SinkContract", "closed_port", "transactions"]

WAIT = 60.0  # seconds: a bound that a test never reaches unless the sink hangs
CHECK_WAIT = 30.0  # seconds: how long checking an unreachable destination may take

Arrived = list[tuple[uuid.UUID, Change]]
Rows = dict[str, dict[Any, dict[str, Any]]]
"""A replica's rows: table name -> primary key (a tuple when composite) -> row."""


def closed_port() -> int:
    """A loopback TCP port that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def transactions(
    count: int,
    *,
    per_transaction: int = 3,
    tables: Sequence[tuple[str | None, str]] = (("shop", "orders"), ("shop", "items")),
) -> list[list[Change]]:
    """`count` transactions of writes, updates and deletes over `tables`, in commit order.

    Positions are unique to this call, so their change ids are too.
    """
    run = uuid.uuid4().hex[:12]
    result: list[list[Change]] = []
    for t in range(count):
        changes = []
        for i in range(per_transaction):
            schema, table = tables[(t + i) % len(tables)]
            pk = t * per_transaction + i
            action = ("write", "update", "delete")[(t + i) % 3]
            row = {"id": pk, "qty": t + i, "note": f"tx {t} change {i}"}
            before = None if action == "write" else {**row, "qty": 0}
            after = None if action == "delete" else row
            changes.append(
                Change(
                    action,
                    schema,
                    table,
                    pk,
                    before,
                    after,
                    ts=1_700_000_000.0 + t + i / 1000,
                    txid=f"{run}-{t}",
                    position=f"binlog.000001:{run}:{t}",
                    source="mysql",
                )
            )
        result.append(changes)
    return result


def _expected(batch: Sequence[Sequence[Change]]) -> Arrived:
    return [(change_id(c, i), c) for tx in batch for i, c in enumerate(tx)]


def _grouped(arrived: Arrived, order: str) -> dict[Any, Arrived]:
    """`arrived` cut into the sequences whose order `order` promises."""
    groups: dict[Any, Arrived] = defaultdict(list)
    for change_id_, change in arrived:
        key: Any = (change.schema, change.table)
        if order == "row":
            key = (*key, change.pk)
        elif order == "total":
            key = None
        groups[key].append((change_id_, change))
    return dict(groups)


def _applied(changes: Sequence[Change], stored: Callable[[Any], Any]) -> Rows:
    """The rows `changes` leave in a replica that applies each to the table of its name.

    A write or update sets the row at the change's `pk` to the after image (each value
    as `stored` says the replica gives it back), a delete removes it; tables left
    without rows are left out.
    """
    tables: Rows = defaultdict(dict)
    for change in changes:
        rows = tables[change.table]
        if change.action is Action.DELETE:
            rows.pop(change.pk, None)
        else:
            rows[change.pk] = {name: stored(v) for name, v in (change.after or {}).items()}
    return {table: rows for table, rows in tables.items() if rows}


class SinkContract:
    """The behaviour every sink shares; see `rowcast.sinks.base`."""

    #: a re-delivered change is stored once (True) or arrives again with the same id
    deduplicates: ClassVar[bool] = False
    #: the order the destination keeps: across tables, within each table, within each row
    order: ClassVar[Literal["total", "table", "row"] | None] = None
    #: the older switch for `order` when that is None: True "total", False "table"
    total_order: ClassVar[bool] = True
    #: every change with its id (`read_back`), or the rows a replica keeps (`read_rows`)
    holds: ClassVar[Literal["changes", "rows"]] = "changes"
    #: ``(url, regex)``: opening `url` must raise a ConfigError whose message matches
    bad_urls: ClassVar[Sequence[tuple[str, str]]] = ()

    def make_sink(self) -> Sink:
        """A sink of the backend under test, delivering to this test's fresh destination."""
        raise NotImplementedError

    def read_back(self) -> Arrived:
        """Every ``(id, Change)`` that reached this test's destination, in its order."""
        raise NotImplementedError

    def read_rows(self) -> Rows:
        """The rows of this test's destination, by table name and primary key (`holds` rows)."""
        raise NotImplementedError

    def stored(self, value: Any) -> Any:
        """`value` as a replica (`holds` rows) gives it back; default: equal to `value`.

        Override where the database's column types are narrower than a change's values
        (SQLite has no time zone nor UUID type): say what it keeps instead.
        """
        return value

    def unreachable_url(self) -> str | None:
        """A URL of this sink whose server is down (e.g. a `closed_port`); None: none."""
        return None

    def failing_sink(self) -> Sink | None:
        """A sink whose destination is down or gone; None: skip that test.

        Called in a thread of its own, so that a hanging open fails the test too.
        Default: `open_sink` of `unreachable_url`.
        """
        url = self.unreachable_url()
        return None if url is None else open_sink(url)

    @pytest.fixture
    def destination(self) -> None:
        """Override to make this test's fresh destination (yield, then remove it)."""

    @pytest.fixture(autouse=True)
    def _sink(self, destination: None) -> Iterator[None]:
        self.sink = self.make_sink()
        yield
        self.sink.close()

    def assert_arrived(self, expected: Arrived) -> None:
        """The destination holds `expected`, in the `order` it keeps; or, for a replica
        (`holds` rows), the rows that applying `expected` in order leaves."""
        if self.holds == "rows":
            self.assert_rows([change for _, change in expected])
            return
        order = self.order or ("total" if self.total_order else "table")
        assert _grouped(self.read_back(), order) == _grouped(expected, order)

    def assert_rows(self, changes: Sequence[Change]) -> None:
        """`read_rows` holds the rows that applying `changes` in order leaves (`holds` rows)."""
        found = {table: rows for table, rows in self.read_rows().items() if rows}
        assert found == _applied(changes, self.stored)

    # ------------------------------------------------------------ the contract

    def test_is_a_sink(self) -> None:
        assert isinstance(self.sink, Sink)
        assert isinstance(self.sink.url, str)
        assert self.sink.url

    def test_delivers_every_change_in_commit_order(self) -> None:
        batch = transactions(6)
        self.sink.deliver(batch)
        self.assert_arrived(_expected(batch))

    def test_batches_arrive_in_the_order_delivered(self) -> None:
        batches = [transactions(3), transactions(1, per_transaction=5), transactions(2)]
        for batch in batches:
            self.sink.deliver(batch)
        self.assert_arrived([pair for batch in batches for pair in _expected(batch)])

    def test_a_large_batch_arrives_whole_and_in_order(self) -> None:
        batch = transactions(200, per_transaction=5)
        self.sink.deliver(batch)
        self.assert_arrived(_expected(batch))

    def test_a_rows_changes_arrive_in_commit_order(self) -> None:
        """Rows changed in several transactions of one batch, between other rows' changes."""
        run = uuid.uuid4().hex[:12]
        qty: dict[tuple[str, int], int] = {}
        batch = []
        for t in range(6):
            transaction = []
            for table, pk in (("orders", t % 3), ("items", 0), ("orders", 3)):
                before = qty.get((table, pk))
                qty[(table, pk)] = t
                transaction.append(
                    Change(
                        "write" if before is None else "update",
                        "shop",
                        table,
                        pk,
                        None if before is None else {"id": pk, "qty": before},
                        {"id": pk, "qty": t},
                        position=f"{run}:{t}",
                        source="mysql",
                    )
                )
            batch.append(transaction)
        self.sink.deliver(batch)
        self.assert_arrived(_expected(batch))

    def test_ids_are_the_deterministic_change_ids(self) -> None:
        if self.holds == "rows":
            pytest.skip("a replica keeps the rows the changes leave, not their ids")
        batch = transactions(2)
        self.sink.deliver(batch)
        ids = [i for i, _ in self.read_back()]
        assert sorted(ids) == sorted(change_id(c, i) for tx in batch for i, c in enumerate(tx))
        assert len(set(ids)) == len(ids)

    def test_bodies_round_trip_rich_values(self) -> None:
        rich: dict[str, Any] = {
            "price": Decimal("12.50"),
            "at": dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=dt.UTC),
            "local": dt.datetime(2024, 5, 1, 14, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            "day": dt.date(2024, 5, 1),
            "raw": b"\x00\xff bytes",
            "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
            "text": 'héllo ✓ \u2028 "quoted" \\ ',
            "nothing": None,
            "nested": {"$looks_like_a_tag": [1, 2.5, True]},
        }
        position = f"0/{uuid.uuid4().hex[:8]}"
        row = {"id": 7, "region": "eu", **rich}  # a row image holds its key, as sources send it
        batch = [
            [
                Change("write", "shop", "orders", (7, "eu"), None, row, 1.5, "t1", position, "pg"),
                Change(
                    "update",
                    None,
                    "no_schema",
                    1,
                    {"id": 1, "a": 1},
                    {"id": 1, "a": 2},
                    2.25,
                    "t1",
                    position,
                ),
            ]
        ]
        self.sink.deliver(batch)
        self.assert_arrived(_expected(batch))

    def test_names_with_separators_arrive(self) -> None:
        """Schema and table names may hold dots, spaces and wildcards of broker syntax."""
        tables = [("my.db", "order items"), (None, "a*b>c#d%e")]
        batch = transactions(2, per_transaction=2, tables=tables)
        self.sink.deliver(batch)
        self.assert_arrived(_expected(batch))

    def test_an_empty_batch_is_a_no_op(self) -> None:
        self.sink.deliver([])
        self.sink.deliver([[]])
        self.assert_arrived([])

    def test_redelivery(self) -> None:
        """The relay re-sends a batch after a failure: deduplicated, or again with its ids."""
        batch = transactions(4)
        self.sink.deliver(batch)
        self.sink.deliver(batch)
        expected = _expected(batch)
        if self.deduplicates:
            self.assert_arrived(expected)
        else:
            self.assert_arrived(expected + expected)

    def test_a_change_without_position_is_a_config_error_and_sends_nothing(self) -> None:
        """No position, no stable id: refused whole. A replica needs no id: it applies it."""
        good = transactions(1)[0]
        row = {"id": 1, "qty": 1, "note": "no position"}
        unplaced = Change("write", "shop", "orders", 1, None, row, txid="x")
        if self.holds == "rows":
            self.sink.deliver([good, [unplaced]])
            self.assert_rows([*good, unplaced])
            return
        with pytest.raises(ConfigError, match="position"):
            self.sink.deliver([good, [unplaced]])
        self.assert_arrived([])

    def test_close_is_idempotent(self) -> None:
        self.sink.close()
        self.sink.close()
        unused = self.make_sink()  # never delivered: closing opens nothing
        unused.close()
        unused.close()

    def test_an_unreachable_server_is_a_sink_error_not_a_hang(self) -> None:
        given: list[Sink | None] = []
        outcome: list[BaseException | None] = []

        def attempt() -> None:
            try:
                sink = self.failing_sink()
                given.append(sink)
                if sink is not None:
                    try:
                        sink.deliver(transactions(1))
                    finally:
                        sink.close()
            except BaseException as e:
                outcome.append(e)
            else:
                outcome.append(None)

        thread = threading.Thread(target=attempt, daemon=True)
        thread.start()
        thread.join(WAIT)
        if given == [None]:
            pytest.skip("no failing destination given for this sink")
        assert outcome, f"deliver to {given or 'a failing sink'} did not return in {WAIT:.0f} s"
        assert isinstance(outcome[0], SinkError), outcome[0]
        assert outcome[0].__cause__ is not None  # the driver's error stays reachable

    def test_check_passes_on_a_good_destination(self) -> None:
        self.sink.check()
        self.sink.check()  # again: a relay may check before every start
        batch = transactions(2)
        self.sink.deliver(batch)
        self.assert_arrived(_expected(batch))

    def test_check_of_an_unreachable_server_fails_naming_it(self) -> None:
        url = self.unreachable_url()
        if url is None:
            pytest.skip("no unreachable URL given for this sink")
        outcome: list[BaseException | None] = []
        shown: list[str] = []

        def attempt() -> None:
            try:
                sink = open_sink(url)
                shown.append(sink.url)
                try:
                    sink.check()
                finally:
                    sink.close()
            except BaseException as e:
                outcome.append(e)
            else:
                outcome.append(None)

        began = time.monotonic()
        thread = threading.Thread(target=attempt, daemon=True)
        thread.start()
        thread.join(CHECK_WAIT)
        assert outcome, f"check of {url} did not return in {CHECK_WAIT:.0f} s"
        assert time.monotonic() - began < CHECK_WAIT
        error = outcome[0]
        assert isinstance(error, ConfigError | SinkError), error
        assert shown, error
        assert shown[0] in str(error), (shown, str(error))
        password = urlsplit(url).password
        if password:
            assert f":{password}@" not in str(error)

    def test_delivering_to_an_unreachable_server_is_transient(self) -> None:
        url = self.unreachable_url()
        if url is None:
            pytest.skip("no unreachable URL given for this sink")
        sink = open_sink(url)
        try:
            with pytest.raises(TransientSinkError):
                sink.deliver(transactions(1))
        finally:
            sink.close()

    def test_bad_urls_are_config_errors(self) -> None:
        if not self.bad_urls:
            pytest.skip("no bad URLs listed for this sink")
        for url, message in self.bad_urls:
            with pytest.raises(ConfigError, match=message):
                open_sink(url).close()

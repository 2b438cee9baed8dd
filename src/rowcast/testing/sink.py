"""`SinkContract`: what every relay sink (`rowcast.sinks.Sink`) must do.

Subclass it in a test module, point it at a fresh destination per test and override
`make_sink` and `read_back` (and the class attributes that describe the sink)::

    class TestRedisSink(SinkContract):
        deduplicates = False        # Redis keeps a re-delivered change twice
        total_order = True          # one stream: one order across tables

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
"""

from __future__ import annotations

import datetime as dt
import socket
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any, ClassVar

import pytest

from rowcast.change import Change
from rowcast.errors import ConfigError, SinkError
from rowcast.sinks.base import Sink, change_id, open_sink

__all__ = ["SinkContract", "closed_port", "transactions"]

WAIT = 60.0  # seconds: a bound that a test never reaches unless the sink hangs

Arrived = list[tuple[uuid.UUID, Change]]


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


def _by_table(arrived: Arrived) -> dict[tuple[str | None, str], Arrived]:
    groups: dict[tuple[str | None, str], Arrived] = defaultdict(list)
    for change_id_, change in arrived:
        groups[(change.schema, change.table)].append((change_id_, change))
    return dict(groups)


class SinkContract:
    """The behaviour every sink shares; see `rowcast.sinks.base`."""

    #: a re-delivered change is stored once (True) or arrives again with the same id
    deduplicates: ClassVar[bool] = False
    #: the destination keeps one order across tables (else: commit order per table)
    total_order: ClassVar[bool] = True
    #: ``(url, regex)``: opening `url` must raise a ConfigError whose message matches
    bad_urls: ClassVar[Sequence[tuple[str, str]]] = ()

    def make_sink(self) -> Sink:
        """A sink of the backend under test, delivering to this test's fresh destination."""
        raise NotImplementedError

    def read_back(self) -> Arrived:
        """Every ``(id, Change)`` that reached this test's destination, in its order."""
        raise NotImplementedError

    def unreachable_url(self) -> str | None:
        """A URL of this sink whose server is down (e.g. a `closed_port`); None: skip."""
        return None

    @pytest.fixture
    def destination(self) -> None:
        """Override to make this test's fresh destination (yield, then remove it)."""

    @pytest.fixture(autouse=True)
    def _sink(self, destination: None) -> Iterator[None]:
        self.sink = self.make_sink()
        yield
        self.sink.close()

    def assert_arrived(self, expected: Arrived) -> None:
        """`read_back` holds `expected`: whole, or per table when not `total_order`."""
        arrived = self.read_back()
        if self.total_order:
            assert arrived == expected
        else:
            assert _by_table(arrived) == _by_table(expected)

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

    def test_ids_are_the_deterministic_change_ids(self) -> None:
        batch = transactions(2)
        self.sink.deliver(batch)
        ids = [i for i, _ in self.read_back()]
        assert sorted(ids) == sorted(change_id(c, i) for tx in batch for i, c in enumerate(tx))
        assert len(set(ids)) == len(ids)

    def test_bodies_round_trip_rich_values(self) -> None:
        rich: dict[str, Any] = {
            "price": Decimal("12.50"),
            "at": dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=dt.UTC),
            "day": dt.date(2024, 5, 1),
            "raw": b"\x00\xff bytes",
            "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
            "text": 'héllo ✓ \u2028 "quoted" \\ ',
            "nothing": None,
            "nested": {"$looks_like_a_tag": [1, 2.5, True]},
        }
        position = f"0/{uuid.uuid4().hex[:8]}"
        batch = [
            [
                Change("write", "shop", "orders", (7, "eu"), None, rich, 1.5, "t1", position, "pg"),
                Change("update", None, "no_schema", 1, {"a": 1}, {"a": 2}, 2.25, "t1", position),
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
        assert self.read_back() == []

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
        good = transactions(1)[0]
        unplaced = Change("write", "shop", "orders", 1, None, {"id": 1}, txid="x")
        with pytest.raises(ConfigError, match="position"):
            self.sink.deliver([good, [unplaced]])
        assert self.read_back() == []

    def test_close_is_idempotent(self) -> None:
        self.sink.close()
        self.sink.close()
        unused = self.make_sink()  # never delivered: closing opens nothing
        unused.close()
        unused.close()

    def test_an_unreachable_server_is_a_sink_error_not_a_hang(self) -> None:
        url = self.unreachable_url()
        if url is None:
            pytest.skip("this sink has no server")
        outcome: list[BaseException | None] = []

        def attempt() -> None:
            sink = open_sink(url)
            try:
                sink.deliver(transactions(1))
            except BaseException as e:
                outcome.append(e)
            else:
                outcome.append(None)
            finally:
                sink.close()

        thread = threading.Thread(target=attempt, daemon=True)
        thread.start()
        thread.join(WAIT)
        assert outcome, f"deliver to {url} did not return within {WAIT:.0f} s"
        assert isinstance(outcome[0], SinkError), outcome[0]
        assert outcome[0].__cause__ is not None  # the driver's error stays reachable

    def test_bad_urls_are_config_errors(self) -> None:
        if not self.bad_urls:
            pytest.skip("no bad URLs listed for this sink")
        for url, message in self.bad_urls:
            with pytest.raises(ConfigError, match=message):
                open_sink(url).close()

"""The relay's two kinds of failure: transient ones retried and shown, permanent ones
stopping it (or dead-lettered), and sinks checked before anything is read.

The relay's own logic first, with a source of given transactions and sinks that
refuse what a test tells them to; then ``rowcast relay`` itself against the real
servers (test_cli_relay_failures.py).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from rowcast import Change
from rowcast.checkpoint import open_checkpoint
from rowcast.cli.relay_console import RelayDisplay
from rowcast.errors import ConfigError, PermanentSinkError, SinkError, TransientSinkError
from rowcast.metrics import RelayStats, _Collector
from rowcast.relay import Relay
from rowcast.sinks.base import Batch
from rowcast.sinks.deadletter import open_dead_letter
from rowcast.sinks.stdout import StdoutSink
from rowcast.sinks.store import StoreSink
from tests.test_relay import Collect, Given, change


def workload() -> list[list[Change]]:
    """Three transactions; the second holds row 13, which `Refuses` sinks refuse."""
    return [
        [change(1, 1, "bin.1:10")],
        [change(13, 1, "bin.1:20"), change(2, 1, "bin.1:20")],
        [change(3, 1, "bin.1:30")],
    ]


class Refuses:
    """A sink that refuses for good every transaction with a change of one of `pks`."""

    def __init__(self, *pks: int, url: str = "refuses://") -> None:
        self.pks = set(pks)
        self.url = url
        self.taken: list[list[Change]] = []  # the transactions it took, in order
        self.checked = 0

    def check(self) -> None:
        self.checked += 1

    def deliver(self, batch: Batch) -> None:
        for transaction in batch:
            if any(c.pk in self.pks for c in transaction):
                raise PermanentSinkError(f"{self.url}: row 13 does not fit", "widen the column")
        self.taken.extend(list(transaction) for transaction in batch)

    def close(self) -> None:
        pass


class FailsFirst:
    """A sink whose first `times` deliveries raise `error`; then it takes everything."""

    def __init__(self, times: int, error: SinkError, url: str = "fails-first://") -> None:
        self.times = times
        self.error = error
        self.url = url
        self.taken: list[list[Change]] = []

    def check(self) -> None:
        pass

    def deliver(self, batch: Batch) -> None:
        if self.times:
            self.times -= 1
            raise self.error
        self.taken.extend(list(transaction) for transaction in batch)

    def close(self) -> None:
        pass


class CheckFails(Collect):
    url = "check-fails://"

    def check(self) -> None:
        raise ConfigError("check-fails://: the destination is not there; create it")


def relay_of(tmp_path: Path, sinks: list[Any], **options: Any) -> Relay:
    """A relay of `workload()` into `sinks`; linger: the three transactions in one batch."""
    checkpoint = open_checkpoint(str(tmp_path / "pos"))
    options.setdefault("linger", 0.5)
    options.setdefault("backoff", 0.01)
    return Relay(Given(workload()), sinks, checkpoint, **options)


# ---------------------------------------------------------------- checked first


def test_sinks_are_checked_before_the_source_is_read(tmp_path: Path) -> None:
    relay = relay_of(tmp_path, [Refuses(), CheckFails()])
    with pytest.raises(ConfigError, match="check-fails://: the destination is not there"):
        relay.run()
    assert relay.source.iterated == 0  # type: ignore[attr-defined]
    assert relay.checkpoint.load() is None
    unchecked = Refuses()
    relay_of(tmp_path, [unchecked], check=False).run()  # the caller checked (the CLI does)
    assert unchecked.checked == 0
    assert unchecked.taken == workload()


# ---------------------------------------------------------------- transient


def test_a_transient_failure_is_retried_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = FailsFirst(3, TransientSinkError("fails-first://: connection refused"))
    relay = relay_of(tmp_path, [sink])
    with caplog.at_level(logging.WARNING, logger="rowcast.relay"):
        relay.run()
    assert sink.taken == workload()
    assert relay.checkpoint.load() == "bin.1:30"
    stats = relay.stats.sinks[0]
    assert (stats.errors, stats.attempts, stats.failing) == (3, 0, None)  # recovered
    retries = [r for r in caplog.records if getattr(r, "event", None) == "retry"]
    assert [(r.attempt, r.kind, r.error) for r in retries] == [  # type: ignore[attr-defined]
        (n, "transient", "fails-first://: connection refused") for n in (1, 2, 3)
    ]


def test_an_unclassified_sink_error_counts_as_transient(tmp_path: Path) -> None:
    sink = FailsFirst(2, SinkError("an older sink's error"))
    relay_of(tmp_path, [sink]).run()
    assert sink.taken == workload()


# ---------------------------------------------------------------- permanent


def test_a_refusal_stops_the_relay_at_the_transaction_before_it(tmp_path: Path) -> None:
    sink = Refuses(13)
    relay = relay_of(tmp_path, [sink])
    message = (
        r"refuses:// refused transaction tx for good \(2 changes, first update@shop.items pk 13, "
        r"at bin.1:20\): refuses://: row 13 does not fit; widen the column"
    )
    with pytest.raises(PermanentSinkError, match=message) as caught:
        relay.run()
    assert caught.value.fix == "widen the column"
    assert sink.taken == workload()[:1]  # the poison found one by one; nothing after it
    assert relay.checkpoint.load() == "bin.1:10"  # up to the transaction before it
    assert relay.stats.sinks[0].refused == 1


def test_a_refusal_by_one_sink_of_two(tmp_path: Path) -> None:
    """The other sink took the whole batch: the checkpoint still stops before the poison."""
    took, refuses = Collect(), Refuses(13)
    relay = relay_of(tmp_path, [took, refuses])
    with pytest.raises(PermanentSinkError, match="refuses:// refused transaction"):
        relay.run()
    assert [tx for batch in took.batches for tx in batch] == workload()
    assert refuses.taken == workload()[:1]
    assert relay.checkpoint.load() == "bin.1:10"


def test_a_refusal_of_the_first_transaction_leaves_the_checkpoint_alone(tmp_path: Path) -> None:
    sink = Refuses(1)
    relay = relay_of(tmp_path, [sink])
    with pytest.raises(PermanentSinkError):
        relay.run()
    assert sink.taken == []
    assert relay.checkpoint.load() is None


def test_on_error_retry_retries_a_refusal_until_it_passes(tmp_path: Path) -> None:
    sink = FailsFirst(3, PermanentSinkError("fails-first://: no privilege", "grant it"))
    relay = relay_of(tmp_path, [sink], on_error="retry")
    relay.run()
    assert sink.taken == workload()
    assert relay.stats.sinks[0].errors == 3
    assert relay.checkpoint.load() == "bin.1:30"


def test_dead_letters_take_the_poison_and_the_relay_goes_on(tmp_path: Path) -> None:
    sink = Refuses(13)
    dead = StoreSink(f"sqlite:///{tmp_path / 'dead.db'}")
    relay = relay_of(tmp_path, [sink], on_error="dead-letter", dead_letter=dead)
    relay.run()
    assert sink.taken == [workload()[0], workload()[2]]
    assert relay.checkpoint.load() == "bin.1:30"  # past the poison
    events = list(dead.store.read_all())
    dead.close()
    assert [Change(**e.data) for e in events] == workload()[1]
    why = events[0].metadata["dead_letter"]  # type: ignore[index]
    assert why["sink"] == "refuses://"
    assert why["error"] == "refuses://: row 13 does not fit"
    assert why["fix"] == "widen the column"
    assert why["kind"] == "PermanentSinkError"
    assert relay.stats.sinks[0].dead_letters == 2
    assert relay.stats.sinks[0].refused == 1


def test_per_sink_on_error(tmp_path: Path) -> None:
    """Each sink its own rule: one dead-letters what the other would stop on."""
    lenient, strict = Refuses(13, url="lenient://"), Refuses(3, url="strict://")
    out = io.StringIO()
    relay = relay_of(
        tmp_path,
        [lenient, strict],
        on_error=["dead-letter", "stop"],
        dead_letter=StdoutSink(stream=out),
    )
    with pytest.raises(PermanentSinkError, match="strict:// refused transaction"):
        relay.run()
    assert lenient.taken == [workload()[0], workload()[2]]
    assert len(out.getvalue().splitlines()) == 2  # row 13's transaction, set aside
    assert relay.checkpoint.load() == "bin.1:20"  # strict took the first two


def test_a_dead_letter_destination_that_refuses_stops_the_relay(tmp_path: Path) -> None:
    closed = io.StringIO()
    closed.close()
    relay = relay_of(
        tmp_path, [Refuses(13)], on_error="dead-letter", dead_letter=StdoutSink(stream=closed)
    )
    with pytest.raises(PermanentSinkError, match="the dead-letter destination - refused"):
        relay.run()
    assert relay.checkpoint.load() is None  # nothing past what is in neither place


def test_on_error_arguments_are_checked(tmp_path: Path) -> None:
    dead = StdoutSink()
    for options, message in [
        ({"on_error": "skip"}, "on_error is one of stop, retry, dead-letter, not 'skip'"),
        ({"on_error": "dead-letter"}, "needs a dead-letter destination"),
        ({"dead_letter": dead}, "no sink sends refused changes there"),
        ({"on_error": ["stop", "stop", "stop"]}, "3 values for 1 sinks"),
    ]:
        with pytest.raises(ConfigError, match=message):
            relay_of(tmp_path, [Refuses()], **options)


def test_a_dead_letter_destination_keeps_the_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot be a dead-letter destination.*event store"):
        open_dead_letter("redis://127.0.0.1:6379/0")
    open_dead_letter("-").close()
    open_dead_letter(f"sqlite:///{tmp_path / 'dead.db'}").close()


# ---------------------------------------------------------------- shown


def test_the_status_line_and_metrics_show_attempts_errors_and_dead_letters() -> None:
    stats = RelayStats(["redis://h/0", "sqlite:///e.db"])
    failing = stats.sinks[0]
    failing.failing, failing.attempts, failing.errors = "Connection refused", 4, 4
    stats.sinks[1].dead_letters, stats.sinks[1].refused = 3, 1
    line = RelayDisplay(stats, "text").line().plain
    assert "redis://h/0 failing (attempt 4): Connection refused" in line
    assert "3 dead letters" in line
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(stats))
    text = generate_latest(registry).decode()
    assert 'rowcast_relay_sink_failed_attempts{sink="redis://h/0"} 4.0' in text
    assert (
        'rowcast_relay_sink_last_error_info{error="Connection refused",sink="redis://h/0"} 1.0'
        in text
    )
    assert 'rowcast_relay_dead_letters_total{sink="sqlite:///e.db"} 3.0' in text
    assert 'rowcast_relay_refused_transactions_total{sink="sqlite:///e.db"} 1.0' in text
    assert 'rowcast_relay_sink_failed_attempts{sink="sqlite:///e.db"} 0.0' in text


def test_progress_records_carry_the_failing_sinks(caplog: pytest.LogCaptureFixture) -> None:
    stats = RelayStats(["redis://h/0"])
    stats.sinks[0].failing, stats.sinks[0].attempts = "Connection refused", 2
    with caplog.at_level(logging.INFO, logger="rowcast.relay"):
        RelayDisplay(stats, "json").progress()
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "progress"]
    assert record.failing == [  # type: ignore[attr-defined]
        {"sink": "redis://h/0", "attempts": 2, "error": "Connection refused"}
    ]

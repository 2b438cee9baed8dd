"""``rowcast status`` on the real servers: relays running, SIGKILLed (stale), retrying a down
sink, stopped behind a head that moved (lag > 0 and growing), stalled; and what the
lag means (`rowcast.monitor.LagMeter`).

Each relay is ``rowcast relay`` (a subprocess) reading the MariaDB binlog, reporting
every half second beside its file checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from rowcast.checkpoint import open_checkpoint
from rowcast.cli import main
from rowcast.monitor import LagMeter
from rowcast.sources.health import LogHealth
from tests.test_cli_relay import ROWCAST
from tests.test_relay import URL, RedisServer, Table, free_port, server_id, wait_for

PG = "postgresql://postgres@127.0.0.1:5432"


def status(*args: str) -> tuple[int, dict[str, Any]]:
    """``rowcast status ARGS --format json``: the exit status and the document."""
    result = CliRunner().invoke(main, ["status", *args, "--format", "json"])
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


def entry(checkpoint: Path, *args: str) -> tuple[int, dict[str, Any]]:
    code, document = status(str(checkpoint), *args)
    (found,) = document["entries"]
    assert document["healthy"] is (code == 0)
    return code, found


@contextlib.contextmanager
def relay(table: Table, checkpoint: Path, *to: str, extra: tuple[str, ...] = ()) -> Iterator[Any]:
    """``rowcast relay`` of `table` to `to` (stdout by default) while inside."""
    process = subprocess.Popen(
        [
            ROWCAST,
            "relay",
            URL,
            *[arg for url in to or ("-",) for arg in ("--to", url)],
            "--checkpoint",
            str(checkpoint),
            "--tables",
            f"test.{table.name}",
            "--from",
            table.position(),
            "--server-id",
            str(server_id()),
            "--report-interval",
            "0.5",
            "--log-format",
            "json",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


def reported(checkpoint: Path, **want: Any) -> dict[str, Any]:
    """The report once it has every field of `want`."""
    found: dict[str, Any] = {}

    def ready() -> bool:
        nonlocal found
        _, document = status(str(checkpoint), "--stale-after", "600")
        found = document["entries"][0] if document["entries"] else {}
        return all(found.get(key) == value for key, value in want.items())

    wait_for(ready, 60, f"a report with {want} (last: {found})")
    return found


@pytest.fixture
def table() -> Iterator[Table]:
    t = Table("status")
    yield t
    t.drop()


# ---------------------------------------------------------------- the lag's meaning


def at(head: int | None, position: int | None) -> LogHealth:
    behind = None if head is None or position is None else max(0, head - position)
    return LogHealth(
        head=str(head), behind_bytes=behind, head_number=head, position_number=position
    )


def test_the_lag_is_0_at_the_head_whatever_the_age_of_the_last_change() -> None:
    meter = LagMeter()
    assert meter.sample(at(100, 100), now=0.0) == 0.0
    assert meter.sample(at(100, 100), now=3600.0) == 0.0  # idle for an hour: not behind


def test_the_lag_of_a_stuck_reader_grows_a_second_a_second() -> None:
    meter = LagMeter()
    assert meter.sample(at(100, 100), now=0.0) == 0.0
    assert meter.sample(at(150, 100), now=1.0) == 0.0  # the head moved past it just now
    assert meter.sample(at(180, 100), now=2.0) == 1.0
    assert meter.sample(at(180, 100), now=12.0) == 11.0


def test_a_reader_keeping_up_shows_less_than_a_sample_interval() -> None:
    meter = LagMeter()
    for second in range(10):  # always a little behind the head, never behind the last one
        lag = meter.sample(at(100 * (second + 1), 100 * second + 90), now=float(second))
    assert lag == 0.0


def test_a_reader_catching_up_shows_the_age_of_what_it_has_not_got_to() -> None:
    meter = LagMeter()
    meter.sample(at(100, 100), now=0.0)
    for second in range(1, 11):  # the head grows 100 a second
        meter.sample(at(100 + 100 * second, 100), now=float(second))
    # it has delivered what the head was at second 5: the rest is from after second 5
    assert meter.sample(at(1200, 600), now=11.0) == 11.0 - 6.0


def test_without_an_order_the_lag_runs_from_the_first_sample_behind() -> None:
    meter = LagMeter()
    behind = LogHealth(head="x", behind_changes=3)
    assert meter.sample(LogHealth(head="x", behind_changes=0), now=0.0) == 0.0
    assert meter.sample(behind, now=5.0) == 0.0
    assert meter.sample(behind, now=8.0) == 3.0


# ---------------------------------------------------------------- relays on the real servers


def test_a_running_relay_is_running_with_lag_0_when_idle(table: Table, tmp_path: Path) -> None:
    checkpoint = tmp_path / "pos"
    port = free_port()
    with relay(table, checkpoint, extra=("--metrics-port", str(port))):
        table.execute(f"INSERT INTO {table.name} VALUES (1, 1)")
        report = reported(checkpoint, state="running", changes=1, lag_seconds=0.0)
        assert report["kind"] == "relay"
        assert report["name"] == "default"
        assert report["source"] == "mysql://root@127.0.0.1:3306/test"
        assert report["sinks"] == ["-"]
        assert report["head"]
        assert report["log"]["needed_log"] == report["position"].rpartition(":")[0]
        code, now = entry(checkpoint)
        assert code == 0
        assert now["state"] == "running"
        assert now["problems"] == []
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            metrics = reply.read().decode()
        assert "rowcast_lag_seconds " in metrics
        assert "rowcast_source_head_position " in metrics
        assert "rowcast_stalled 0.0" in metrics
        table_line = CliRunner().invoke(main, ["status", str(checkpoint)])
        assert table_line.exit_code == 0
        assert "default  relay  running" in table_line.output


def test_a_sigkilled_relay_becomes_stale_and_fails_the_health_check(
    table: Table, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "pos"
    with relay(table, checkpoint) as process:
        reported(checkpoint, state="running")
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    wait_for(lambda: entry(checkpoint, "--stale-after", "2")[1]["state"] == "stale", 30)
    code, found = entry(checkpoint, "--stale-after", "2")
    assert code == 1
    assert found["reported_state"] == "running"
    assert "stale: no report for" in found["problems"][0]
    assert str(process.pid) in found["problems"][0]
    result = CliRunner().invoke(main, ["status", str(checkpoint), "--stale-after", "2"])
    assert result.exit_code == 1
    assert "stale" in result.output


def test_a_relay_retrying_a_down_sink_is_retrying_with_the_error(
    table: Table, tmp_path: Path
) -> None:
    server = RedisServer()
    server.start()
    checkpoint = tmp_path / "pos"
    try:
        sink = f"{server.url}?stream=status_{uuid.uuid4().hex[:8]}"
        with relay(table, checkpoint, sink):
            reported(checkpoint, state="running")
            server.kill()
            table.execute(f"INSERT INTO {table.name} VALUES (1, 1)")
            found = reported(checkpoint, state="retrying")
            assert "Connection refused" in found["last_error"]
            assert server.url in found["last_error"]
            assert found["last_error_at"] is not None
            code, now = entry(checkpoint)
            assert code == 0  # alive, and saying what fails (stalled would fail it)
            assert now["state"] == "retrying"
    finally:
        server.kill()


def test_a_stopped_relay_behind_a_head_that_moved_has_a_growing_lag(
    table: Table, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "pos"
    with relay(table, checkpoint) as process:
        table.execute(f"INSERT INTO {table.name} VALUES (1, 1)")
        reported(checkpoint, state="running", changes=1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    stopped = reported(checkpoint, state="stopped")
    table.execute(*(f"INSERT INTO {table.name} VALUES ({i}, {i})" for i in range(2, 50)))
    code, first = entry(checkpoint)
    assert code == 0  # stopped is not a failure
    assert first["state"] == "stopped"
    assert first["position"] == stopped["position"]
    assert first["lag_bytes"] > 0
    assert first["head"] != stopped["position"]
    assert first["lag_seconds"] > 0
    wait_for(lambda: entry(checkpoint)[1]["lag_seconds"] > first["lag_seconds"] + 1, 30)


@pytest.fixture
def locked_replica() -> Iterator[tuple[str, Any]]:
    """A PostgreSQL schema to replicate into, and a connection that can lock its tables."""
    schema = f"rc_status_{uuid.uuid4().hex[:8]}"
    conn = psycopg.connect(f"{PG}/test", autocommit=True)
    conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield schema, conn
    finally:
        conn.rollback()
        conn.autocommit = True
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
        conn.close()


def test_a_relay_whose_sink_hangs_is_stalled_in_log_metric_and_status(
    table: Table, tmp_path: Path, locked_replica: tuple[str, Any]
) -> None:
    schema, conn = locked_replica
    checkpoint = tmp_path / "pos"
    port = free_port()
    sink = f"{PG}/test?mode=replicate&schema={schema}"
    extra = ("--stall-after", "2", "--metrics-port", str(port))
    with relay(table, checkpoint, sink, extra=extra) as process:
        table.execute(f"INSERT INTO {table.name} VALUES (1, 1)")
        reported(checkpoint, state="running", changes=1)
        conn.autocommit = False
        conn.execute(f"LOCK TABLE {schema}.{table.name} IN ACCESS EXCLUSIVE MODE")
        table.execute(f"INSERT INTO {table.name} VALUES (2, 2)")  # its delivery waits
        found = reported(checkpoint, stalled=True)
        assert found["reported_state"] == "running"  # no error: it just does not move
        code, now = entry(checkpoint)
        assert code == 1
        assert now["state"] == "stalled"
        assert now["problems"][0].startswith("stalled:")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            assert "rowcast_stalled 1.0" in reply.read().decode()
        conn.rollback()  # the lock goes: it moves again
        reported(checkpoint, stalled=False, changes=2)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    events = [json.loads(line).get("event") for line in err.splitlines()]
    assert "stalled" in events
    assert events.index("unstalled") > events.index("stalled")


def test_nothing_reported_is_exit_1_and_a_bad_store_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["status", str(tmp_path / "pos")])
    assert result.exit_code == 1
    assert "no relay or consumer has reported there" in result.output
    assert not any(tmp_path.iterdir())
    result = CliRunner().invoke(main, ["status", "redis://127.0.0.1:1/0"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert CliRunner().invoke(main, ["status"]).exit_code == 2


def test_a_checkpoint_file_that_does_not_exist_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nosuch.pos"
    result = CliRunner().invoke(main, ["status", str(missing)])
    assert result.exit_code == 1  # as for nothing reported (--help says so)
    said = " ".join(result.stderr.split())
    assert f"{missing} does not exist" in said  # was: only "no relay ... has reported there"
    assert not any(tmp_path.iterdir())


def test_a_closed_port_says_the_server_cannot_be_reached() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/x"
    result = CliRunner().invoke(main, ["status", url])
    assert result.exit_code == 2
    said = " ".join(result.stderr.split())
    assert "cannot reach the server" in said  # was: SQLAlchemy's two lines, no fix
    assert "is it running, and listening on 127.0.0.1:" in said
    assert "(psycopg.OperationalError)" not in said


def test_a_checkpoint_in_a_purged_binlog_names_the_recovery_and_fails_status(
    table: Table, tmp_path: Path
) -> None:
    from rowcast.checkpoint import open_checkpoint

    checkpoint = tmp_path / "pos"
    with open_checkpoint(str(checkpoint)) as saved:
        saved.save("mysql-bin.000000:4")  # older than the oldest binlog the server has
    with relay(table, checkpoint) as process:
        _, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "mysql-bin.000000:4 was purged" in err
    assert "--snapshot initial, or rowcast backfill URL --tables" in err
    code, found = entry(checkpoint)
    assert code == 1
    assert found["state"] == "failed"
    assert "was purged" in found["last_error"]
    assert found["log"]["lost"] is True
    assert any(problem.startswith("log lost: ") for problem in found["problems"])


def test_a_consumer_reports_when_given_a_store(tmp_path: Path) -> None:
    import threading

    from rowcast import Change
    from rowcast.checkpoint import open_checkpoint
    from rowcast.consume import open_consumer
    from rowcast.sinks import open_sink

    broker = f"status-{uuid.uuid4().hex[:8]}"
    sink = open_sink(f"memory://{broker}?mode=broker")
    report = open_checkpoint(str(tmp_path / "consumers"), "consumer-search")
    handled: list[Change] = []
    consumer = open_consumer(
        f"memory://{broker}", handled.extend, group="search", report=report, report_interval=0.2
    )
    thread = threading.Thread(target=consumer.run)
    thread.start()
    try:
        sink.deliver([[Change("write", "shop", "orders", 1, after={"id": 1}, position="p:1")]])
        found = reported(tmp_path / "consumers", changes=1)
        code, found = entry(tmp_path / "consumers")
        assert code == 0
        assert (found["kind"], found["name"], found["state"]) == (
            "consumer",
            "consumer-search",
            "running",
        )
        assert found["position"] == "p:1"
        assert found["source"] == f"memory://{broker}"
    finally:
        consumer.stop()
        thread.join(30)
        sink.close()
    code, found = entry(tmp_path / "consumers")
    assert (code, found["state"]) == (0, "stopped")
    report.close()


def test_several_file_checkpoints_are_told_apart(tmp_path: Path) -> None:
    # every file checkpoint's name is "default": four lines all named default
    paths = [tmp_path / "a.pos", tmp_path / "b.pos"]
    for path in paths:
        with open_checkpoint(str(path)) as checkpoint:
            checkpoint.save_report(  # type: ignore[attr-defined]
                {"format": 1, "kind": "relay", "state": "stopped", "reported_at": time.time()}
            )
    result = CliRunner(env={"COLUMNS": "250"}).invoke(main, ["status", *map(str, paths)])
    assert f"default ({paths[0]})" in result.output, result.output
    assert f"default ({paths[1]})" in result.output


def test_a_source_probe_that_hangs_does_not_stop_the_reports() -> None:
    # the report's age tells `holder` (one relay per checkpoint) and `rowcast status`
    # whether the relay still runs: a probe of the source that never answers (a server
    # that took the connection and went silent) must not leave the report to go stale
    from rowcast.monitor import Monitor

    class Reports:
        name = "relay"

        def __init__(self) -> None:
            self.saved: list[float] = []

        def save_report(self, report: dict[str, Any]) -> None:
            self.saved.append(time.monotonic())

    answer = threading.Event()
    probes: list[float] = []

    def probe() -> None:  # the first one hangs until told
        probes.append(time.monotonic())
        if len(probes) == 1:
            answer.wait(30)

    store = Reports()
    monitor = Monitor(lambda: {}, store, interval=0.1, watch=probe, sample=0.05)
    monitor.start()
    try:
        time.sleep(1.0)
        hung, during = len(store.saved), len(probes)
        answer.set()
        wait_for(lambda: len(probes) > 1, 10)
    finally:
        monitor.stop()
    assert hung >= 4, store.saved  # reports went on while the probe hung
    assert during == 1  # one probe at a time
    assert len(probes) >= 2  # the next once the first answered


def test_a_probe_that_does_not_answer_is_in_the_stats_and_said_once() -> None:
    from rowcast.metrics import RelayStats
    from rowcast.monitor import HeadWatch, Monitor

    answer = threading.Event()
    asked: list[float] = []

    class Source:  # a source whose server stops answering after the first question
        def health(self, position: str | None) -> LogHealth:
            asked.append(time.monotonic())
            if len(asked) == 2:
                answer.wait(30)
            return LogHealth(head="5", head_number=5, behind_bytes=0)

    stats = RelayStats(["stdout://"])
    watch = HeadWatch(stats, Source(), stall_after=60)
    monitor = Monitor(lambda: {}, None, interval=0, watch=watch, sample=0.05, hung_after=0.3)
    monitor.start()
    try:
        wait_for(lambda: len(asked) == 2, 10)
        wait_for(lambda: stats.source_error is not None, 10)
        assert "has not answered for" in (stats.source_error or "")
        assert (stats.last_error or "").startswith("source: asking the source")
        assert stats.lag_seconds is None
        answer.set()
        wait_for(lambda: stats.source_error is None and len(asked) > 2, 10)
        assert stats.lag_seconds == 0.0
    finally:
        monitor.stop()

"""No password in what a running command shows: the relay's JSON and text logs, its
status records and summary, its metrics (sink labels, last errors), a sink failing and
retried, a transaction refused for good (exit status 3); a consumer's log and metrics;
``events watch``. The password is in the URLs (in each place the command line takes
it) and in a ``--config`` file. Each command runs as its own process
(`tests.secret_world.loud_main`: every error reported with its traceback).
"""

from __future__ import annotations

import contextlib
import os
import pty
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pymysql
import pytest

from rowcast.sinks import open_sink
from rowcast.store import EventStore, NewEvent
from rowcast.testing.consume import workload
from tests.secret_world import (
    PLACES,
    ROWCAST,
    SECRET,
    VARIABLE,
    World,
    _listening,
    _Server,
    environment,
    leaks,
    world,
)
from tests.test_relay import free_port, server_id

pytestmark = pytest.mark.server

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def the_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with world(tmp_path_factory.mktemp("secrets-running")) as w:
        yield w


class Running:
    """A command as a process of its own; its stdout and stderr read as they come."""

    def __init__(self, args: list[str], *, terminal: bool = False, **env: str) -> None:
        # on a terminal, stderr is a pseudo-terminal: the relay draws its live status line
        master, slave = pty.openpty() if terminal else (-1, -1)
        self.process = subprocess.Popen(
            [*ROWCAST, *args],
            cwd=ROOT,
            env=environment(**env, COLUMNS="400") if terminal else environment(**env),
            stdout=subprocess.PIPE,
            stderr=slave if terminal else subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self.metrics = ""
        err: Any = self.process.stderr
        if terminal:
            os.close(slave)
            err = os.fdopen(master, "r", encoding="utf-8", errors="replace")
        self._pipes = [self.process.stdout, err]
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.out)),
            threading.Thread(target=self._read, args=(err, self.err)),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: IO[str] | None, lines: list[str]) -> None:
        assert stream is not None
        with contextlib.suppress(OSError):  # EIO: the pseudo-terminal closed
            while chunk := stream.readline():
                lines.append(chunk)

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 60
        while not condition():
            if self.process.poll() is not None:
                self.stop()
                pytest.fail(f"exited {self.process.returncode} before {what}:\n{self.text}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"timed out waiting for {what}:\n{self.text}")
            time.sleep(0.05)

    def has(self, text: str) -> Callable[[], bool]:
        return lambda: text in self.text

    def scrape(self, port: int) -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            self.metrics += reply.read().decode()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait()
        for reader in self._readers:
            reader.join(10)
        for pipe in self._pipes:
            if pipe is not None:
                pipe.close()
        return status

    @property
    def text(self) -> str:
        return "".join(self.out) + "".join(self.err) + self.metrics


def insert(w: World, *rows: int) -> None:
    conn = pymysql.connect(host="127.0.0.1", user="root", database="test", autocommit=True)
    with conn.cursor() as cur:
        for row in rows:
            cur.execute(f"INSERT INTO {w.table} VALUES ({row}, 0)")
    conn.close()


_rows = iter(range(1, 1_000_000))


def insert_until(relay: Running, w: World, condition: Callable[[], bool], what: str) -> None:
    """Insert a row every 2 s until `condition`: a relay starting from "now" takes its
    position when its source connects, which may be after its start record."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and relay.process.poll() is None:
        insert(w, next(_rows))
        pause = time.monotonic() + 2
        while time.monotonic() < pause:
            if condition():
                return
            time.sleep(0.05)
    relay.wait_for(condition, what)


@pytest.mark.parametrize("place", PLACES)
def test_a_relay_logs_json_and_serves_metrics_without_the_password(
    the_world: World, place: str
) -> None:
    w = the_world
    run = uuid.uuid4().hex[:8]
    port = free_port()
    relay = Running(
        [
            *("relay", w.url(w.mysql, place), "--tables", f"test.{w.table}"),
            *("--to", "-", "--to", w.url(w.store, place)),
            *("--to", w.url(f"{w.nats}?stream=RCSEC{run}&prefix=rcsec{run}", place)),
            *("--to", w.url(f"{w.redis}?stream=rcsec:{run}", place)),
            *("--checkpoint", w.url(f"{w.redis}?name=json{run}", place)),
            *("--log-format", "json", "--metrics-port", str(port)),
            *("--server-id", str(server_id())),
        ]
    )
    relay.wait_for(relay.has('"event":"start"'), "the relay to start")
    insert_until(relay, w, lambda: len(relay.out) >= 1, "a change on stdout")
    delivered = f"}} {len(relay.out)}.0"
    relay.wait_for(lambda: (relay.scrape(port), delivered in relay.metrics)[1], "the metrics")
    assert relay.stop() == 0, relay.text
    assert leaks(relay.text) == [], relay.text
    assert "rowcast_relay_changes_delivered_total" in relay.metrics


def test_a_relay_configured_by_file_logs_text_without_the_password(
    the_world: World, tmp_path: Path
) -> None:
    w = the_world
    run = uuid.uuid4().hex[:8]
    nats = f"{w.nats}?stream=RCSEC{run}&prefix=rcsec{run}"
    config = w.file(
        f"text-{run}.toml",
        f"""\
        [relay]
        source = "{w.url(w.mysql, "env")}"
        to = [
            "{w.url(w.store, "url")}",
            {{ url = "{nats}", password = "${{{VARIABLE}}}" }},
            {{ url = "{w.redis}?stream=rcsec:{run}", password_file = "{w.password_file}" }},
        ]
        checkpoint = "{w.url(f"{w.redis}?name=text{run}", "file")}"
        tables = ["test.{w.table}"]
        log-format = "json"
        """,
    )
    relay = Running(
        ["relay", "--config", str(config), "--log-format", "text", "--server-id", str(server_id())]
    )
    relay.wait_for(relay.has("relaying to"), "the relay to start")
    insert(w, next(_rows))
    relay.stop()  # SIGTERM: the batch in flight is delivered and checkpointed first
    assert relay.process.returncode == 0, relay.text
    assert "relayed" in relay.text  # the summary line of the text log
    assert '"event"' not in relay.text  # --log-format text replaced the file's json
    assert leaks(relay.text) == [], relay.text


@pytest.mark.parametrize("display", ["json", "terminal"])
def test_a_failing_sink_is_retried_and_shown_without_the_password(
    the_world: World, tmp_path: Path, display: str
) -> None:
    w = the_world
    port = free_port()
    redis = _Server(
        "redis-server",
        ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--requirepass", SECRET],
        lambda: _listening(port),
    )
    metrics = free_port()
    try:
        relay = Running(
            [
                *("relay", w.url(w.mysql, "file"), "--tables", f"test.{w.table}"),
                *("--to", w.url(f"redis://127.0.0.1:{port}/0", "url")),
                *("--checkpoint", str(tmp_path / "pos")),
                *("--log-format", "json" if display == "json" else "text"),
                *("--metrics-port", str(metrics), "--server-id", str(server_id())),
            ],
            terminal=display == "terminal",
        )
        relay.wait_for(relay.has("relaying to"), "the relay to start")
        redis.kill()
        retried = '"event":"retry"' if display == "json" else "failing (attempt"
        insert_until(relay, w, relay.has(retried), "the relay to retry")
        relay.wait_for(
            lambda: (relay.scrape(metrics), "last_error_info{" in relay.metrics)[1],
            "the failing sink's last error in the metrics",
        )
        assert relay.stop() == 0, relay.text
    finally:
        redis.kill()
    assert leaks(relay.text) == [], relay.text


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_a_refused_transaction_stops_the_relay_without_the_password(
    the_world: World, tmp_path: Path, log_format: str
) -> None:
    w = the_world
    # the user may read the table, not write it: the replica refuses the INSERT for good
    replica = w.url(f"{w.mysql}?mode=replicate&create=false", "env")
    relay = Running(
        [
            *("relay", w.url(w.mysql, "url"), "--tables", f"test.{w.table}"),
            *("--to", replica, "--checkpoint", str(tmp_path / "pos")),
            *("--log-format", log_format, "--server-id", str(server_id())),
        ]
    )
    relay.wait_for(relay.has("relaying to"), "the relay to start")
    insert_until(relay, w, lambda: relay.process.poll() is not None, "the refusal")
    assert relay.process.wait(60) == 3, relay.text
    relay.stop()
    assert "denied" in relay.text
    assert leaks(relay.text) == [], relay.text


def test_a_consumer_logs_and_serves_metrics_without_the_password(the_world: World) -> None:
    w = the_world
    run = uuid.uuid4().hex[:8]
    url = f"{w.nats}?stream=RCSEC{run}&prefix=rcsec{run}"
    sink = open_sink(w.url(url, "url"))
    sink.deliver(workload(10, 5, table="secret"))
    sink.close()
    record = w.tmp / f"handled-{run}"
    port = free_port()
    consumer = Running(
        [
            *("consume", w.url(url, "file"), "--handler", "rowcast.testing.consume:record"),
            *("--log-format", "json", "--metrics-port", str(port)),
        ],
        ROWCAST_CONSUME_RECORD=str(record),
    )
    consumer.wait_for(
        lambda: record.exists() and record.read_text().count("\n") >= 10, "10 handled changes"
    )
    consumer.wait_for(
        lambda: (consumer.scrape(port), "changes_handled_total 10.0" in consumer.metrics)[1],
        "the metrics",
    )
    assert consumer.stop() == 0, consumer.text
    assert leaks(consumer.text) == [], consumer.text


@pytest.mark.parametrize("place", PLACES)
def test_events_watch_shows_events_without_the_password(the_world: World, place: str) -> None:
    w = the_world
    watch = Running(["events", "watch", "--url", w.url(w.store, place)])
    watch.wait_for(watch.has("watching"), "the watch to start")
    with EventStore(w.store) as store:
        store.append(f"secret-{place}", [NewEvent("secret_shown", {"n": 1})])
    watch.wait_for(watch.has("secret_shown"), "the event")
    assert watch.stop() == 0, watch.text
    assert leaks(watch.text) == [], watch.text

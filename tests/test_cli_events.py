"""``rowcast events``: ls, read, watch and stats on a SQLite store made with the sync API."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from rowcast.cli import events as events_command
from rowcast.cli import main
from rowcast.cli.console import EventPrinter
from rowcast.codec import loads
from rowcast.store import EventStore, NewEvent, RecordedEvent


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, ["events", *args])


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A store holding order-1 (versions 1-3) and order-2 (1), interleaved."""
    url = f"sqlite:///{tmp_path}/events.db"
    with EventStore(url) as store:
        store.append("order-1", [NewEvent("placed", {"total": Decimal("12.50")}, {"by": "ann"})])
        store.append("order-2", [NewEvent("placed", {"total": Decimal("3")})])
        store.append("order-1", [NewEvent("paid", {"n": 2}), NewEvent("shipped", {"n": 3})])
    return url


def json_lines(result: Result) -> list[dict[str, object]]:
    assert result.exit_code == 0, result.output
    return [loads(line) for line in result.stdout.splitlines()]


# ---------------------------------------------------------------- ls and stats


def test_ls_lists_streams_with_version_and_last_position(url: str) -> None:
    result = invoke("ls", "--url", url)
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.stdout.splitlines()]
    assert lines == [
        ["stream", "version", "position"],
        ["order-1", "3", "4"],
        ["order-2", "1", "2"],
    ]


def test_ls_json(url: str) -> None:
    assert json_lines(invoke("ls", "--url", url, "--format", "json")) == [
        {"stream": "order-1", "version": 3, "position": 4},
        {"stream": "order-2", "version": 1, "position": 2},
    ]


def test_ls_of_an_empty_store_prints_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/empty.db"
    EventStore(url).close()
    result = invoke("ls", "--url", url)
    assert (result.exit_code, result.stdout) == (0, "")


def test_a_deleted_stream_is_not_listed(url: str) -> None:
    with EventStore(url) as store:
        store.delete_stream("order-2")
    assert [s["stream"] for s in json_lines(invoke("ls", "--url", url, "--format", "json"))] == [
        "order-1"
    ]


def test_stats(url: str, tmp_path: Path) -> None:
    result = invoke("stats", "--url", url)
    assert result.exit_code == 0, result.output
    assert "streams        2" in result.stdout
    assert "events         4" in result.stdout
    assert "last position  4" in result.stdout
    assert str(tmp_path / "events.db") in result.stdout
    (stats,) = json_lines(invoke("stats", "--url", url, "--format", "json"))
    assert stats["streams"] == 2
    assert stats["events"] == 4
    assert stats["path"] == str(tmp_path / "events.db")
    assert isinstance(stats["bytes"], int)
    assert stats["bytes"] >= (tmp_path / "events.db").stat().st_size > 0


# ---------------------------------------------------------------- read


def test_read_prints_a_table(url: str) -> None:
    result = invoke("read", "order-1", "--url", url)
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split()[:3] == ["position", "version", "recorded"]
    assert [row.split()[:2] for row in rows] == [["1", "1"], ["3", "2"], ["4", "3"]]
    assert rows[0].split()[4:] == ["placed", '{"total":{"$decimal":"12.50"}}']
    assert "order-1" not in result.stdout  # one stream: no stream column


def test_read_json_lines_carry_every_field(url: str) -> None:
    first, *_ = json_lines(invoke("read", "order-1", "--url", url, "--format", "json"))
    assert set(first) == {
        "stream",
        "version",
        "position",
        "id",
        "type",
        "data",
        "metadata",
        "recorded_at",
    }
    assert (first["stream"], first["version"], first["position"], first["type"]) == (
        "order-1",
        1,
        1,
        "placed",
    )
    assert first["data"] == {"total": Decimal("12.50")}  # the codec keeps the Decimal
    assert first["metadata"] == {"by": "ann"}
    assert isinstance(first["recorded_at"], float)
    with EventStore(url) as store:
        assert first["id"] == str(next(store.read("order-1")).id)


def test_read_at_all_is_the_global_order_with_streams(url: str) -> None:
    result = invoke("read", "@all", "--url", url)
    assert result.exit_code == 0, result.output
    assert "stream" in result.stdout.splitlines()[0]
    lines = json_lines(invoke("read", "@all", "--url", url, "--format", "json"))
    assert [(e["stream"], e["position"]) for e in lines] == [
        ("order-1", 1),
        ("order-2", 2),
        ("order-1", 3),
        ("order-1", 4),
    ]


def test_read_after_and_limit(url: str) -> None:
    lines = json_lines(invoke("read", "order-1", "--url", url, "--after", "1", "--format", "json"))
    assert [e["version"] for e in lines] == [2, 3]
    lines = json_lines(
        invoke("read", "@all", "--url", url, "--after", "1", "--limit", "2", "--format", "json")
    )
    assert [e["position"] for e in lines] == [2, 3]


def test_an_unknown_stream_is_exit_1_and_said_on_stderr(url: str) -> None:
    for fmt in ("table", "json"):
        result = invoke("read", "order-3", "--url", url, "--format", fmt)
        assert result.exit_code == 1  # was: nothing at all, exit 0
        assert result.stdout == ""
        said = " ".join(result.stderr.split())
        assert "stream order-3 does not exist" in said
        assert "order-1" in said  # what there is
    # a stream that exists, read past its end, is no error
    assert invoke("read", "order-2", "--url", url, "--after", "1").exit_code == 0


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("option", ["--after", "--limit"])
def test_a_negative_count_is_a_usage_error(url: str, option: str) -> None:
    result = invoke("read", "order-1", "--url", url, option, "-1")
    assert result.exit_code == 2
    assert "Invalid value" in result.output
    assert option in result.output


def test_a_bad_url_scheme_is_a_clear_error() -> None:
    for command in (["ls"], ["read", "s"], ["stats"], ["watch"]):
        result = invoke(*command, "--url", "mysql://root@localhost/events")
        assert result.exit_code == 2
        assert result.stderr.startswith("error: no event store for 'mysql://root@localhost/events'")
        assert "sqlite://" in result.stderr


def test_a_missing_store_file_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    result = invoke("ls", "--url", f"sqlite:///{path}")
    assert result.exit_code == 2
    assert "does not exist" in result.stderr
    assert not path.exists()


@pytest.mark.parametrize("command", [["ls"], ["read", "s"], ["read", "@all"], ["stats"], ["watch"]])
def test_reading_an_apps_database_says_there_is_no_store_and_creates_nothing(
    tmp_path: Path, command: list[str]
) -> None:
    path = tmp_path / "shop.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    before = path.read_bytes()
    result = invoke(*command, "--url", f"sqlite:///{path}")
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"error: no rowcast event store in sqlite:///{path}: its database has no "
        f"rowcast_events table; create one with `rowcast events init sqlite:///{path}`\n"
    )
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shop.db"]


def test_the_default_url_is_the_embedded_store(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ROWCAST_EVENTS_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    assert invoke("ls").exit_code == 2  # no rowcast-events.db here yet
    (tmp_path / "events.db").rename(tmp_path / "rowcast-events.db")
    assert "order-1" in invoke("ls").stdout
    monkeypatch.setenv("ROWCAST_EVENTS_URL", f"sqlite:///{tmp_path}/rowcast-events.db")
    monkeypatch.chdir(tmp_path.parent)
    assert "order-1" in invoke("ls").stdout


def test_a_reserved_stream_name_is_an_error(url: str) -> None:
    result = invoke("read", "@mine", "--url", url)
    assert result.exit_code == 2
    assert "error:" in result.stderr
    assert "@all" in result.stderr


# ---------------------------------------------------------------- watch


class _Watched:
    """Hooks into ``events watch``: when it waits, and how many events it printed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.waiting = threading.Event()
        self.printed: list[RecordedEvent] = []
        self.changed = threading.Condition()
        watched = self
        stop_on_sigterm = events_command.stop_on_sigterm

        @contextlib.contextmanager
        def signalled(stop: Callable[[], None]) -> Iterator[None]:
            with stop_on_sigterm(stop):
                watched.waiting.set()  # the watch exists: its "now" is fixed
                try:
                    yield
                finally:
                    watched.waiting.clear()  # SIGTERM would kill pytest from here on

        class Printer(EventPrinter):
            def __call__(self, event: RecordedEvent) -> None:
                super().__call__(event)
                with watched.changed:
                    watched.printed.append(event)
                    watched.changed.notify_all()

        monkeypatch.setattr(events_command, "stop_on_sigterm", signalled)
        monkeypatch.setattr(events_command, "EventPrinter", Printer)

    def append_then_terminate(self, url: str, stream: str, count: int, total: int) -> None:
        """In a thread: once the watch waits, append `count` events to `stream`; SIGTERM
        this process once `total` events are printed."""

        def work() -> None:
            if not self.waiting.wait(10):
                return  # the command failed before it watched: its output says why
            try:  # a failure here shows as missing events; the watch ends all the same
                with EventStore(url) as store:
                    for n in range(count):
                        store.append(stream, [NewEvent("live", {"n": n})])
                with self.changed:
                    self.changed.wait_for(lambda: len(self.printed) >= total, 10)
            finally:
                if self.waiting.is_set():
                    os.kill(os.getpid(), signal.SIGTERM)

        self.thread = threading.Thread(target=work)
        self.thread.start()


@pytest.fixture
def watched(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Watched]:
    hooks = _Watched(monkeypatch)
    yield hooks
    if hasattr(hooks, "thread"):
        hooks.thread.join()


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="needs SIGTERM")
def test_watch_prints_new_events_until_sigterm(url: str, watched: _Watched) -> None:
    before = signal.getsignal(signal.SIGTERM)
    watched.append_then_terminate(url, "order-3", 2, total=2)
    result = invoke("watch", "--url", url, "--format", "json")
    lines = json_lines(result)
    assert [(e["stream"], e["data"]) for e in lines] == [
        ("order-3", {"n": 0}),
        ("order-3", {"n": 1}),
    ]
    assert signal.getsignal(signal.SIGTERM) == before  # the previous handler is back


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="needs SIGTERM")
def test_watch_a_stream_after_n_catches_up_then_goes_live(url: str, watched: _Watched) -> None:
    watched.append_then_terminate(url, "order-1", 1, total=3)
    result = invoke("watch", "order-1", "--after", "1", "--url", url)
    assert result.exit_code == 0, result.output
    rows = result.stdout.splitlines()[1:]
    assert [row.split()[1] for row in rows] == ["2", "3", "4"]
    assert "watching order-1" in result.stderr
    assert result.stderr.rstrip().endswith("3 events")

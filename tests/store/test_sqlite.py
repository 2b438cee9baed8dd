"""The SQLite event store: the shared contract on a file and in memory, then its own behaviour."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from rowcast.errors import ConfigError, StoreError
from rowcast.store import EventStore, NewEvent
from rowcast.store.sqlite import SQLiteEventStore
from rowcast.testing.store import EventStoreContract


class TestSQLiteFile(EventStoreContract):
    @pytest.fixture(autouse=True)
    def _dir(self, tmp_path: Path) -> None:
        self.url = f"sqlite:///{tmp_path}/events.db"

    def make_store(self) -> EventStore:
        return EventStore(self.url)

    def shared_url(self) -> str:
        return self.url


class TestSQLiteMemory(EventStoreContract):
    def make_store(self) -> EventStore:
        return EventStore("sqlite:///:memory:")


# ---------------------------------------------------------------- URLs


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_memory_urls(url: str) -> None:
    with EventStore(url) as store:
        assert type(store) is SQLiteEventStore
        assert store.path is None
        store.append("s", [NewEvent("t", 1)])
        with EventStore(url) as other:  # each memory store is its own
            assert other.stream_version("s") == 0


def test_an_absolute_path(tmp_path: Path) -> None:
    with EventStore(f"sqlite:///{tmp_path}/abs.db") as store:
        assert store.path == str(tmp_path / "abs.db")  # type: ignore[attr-defined]
    assert (tmp_path / "abs.db").exists()


def test_a_relative_path_is_taken_at_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with EventStore("sqlite:///rel/events.db") as store:
        (tmp_path / "elsewhere").mkdir()
        monkeypatch.chdir(tmp_path / "elsewhere")
        store.append("s", [NewEvent("t", 1)])
    assert (tmp_path / "rel" / "events.db").exists()


def test_the_default_url_is_the_embedded_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with EventStore() as store:
        assert store.url == "sqlite:///rowcast-events.db"
    assert (tmp_path / "rowcast-events.db").exists()


def test_a_missing_directory_is_created(tmp_path: Path) -> None:
    path = tmp_path / "var" / "lib" / "rowcast" / "events.db"
    with SQLiteEventStore(f"sqlite:///{path}") as store:
        store.append("s", [NewEvent("t", 1)])
    assert path.exists()


def test_a_directory_that_cannot_be_made_is_a_config_error_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ConfigError, match=r"is a file, not a directory\); give a path") as caught:
        EventStore(f"sqlite:///{tmp_path}/file/events.db")
    assert caught.value.__cause__ is not None


def test_a_directory_is_not_a_database(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="directory"):
        EventStore(f"sqlite:///{tmp_path}")


def test_a_file_that_is_not_a_database_fails_at_open(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    path.write_bytes(b"this is not a SQLite database, not at all" * 100)
    with pytest.raises(StoreError, match="not a database") as caught:
        EventStore(f"sqlite:///{path}")
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://root@localhost/events", r"must start with .*sqlite://"),
        ("events.db", r"must start with .*sqlite://"),
        ("", r"must start with .*sqlite://"),
        ("sqlite://localhost/events.db", "no host"),
        ("sqlite:///x.db?journal=delete", r"unknown option 'journal' \(in journal=delete\)"),
        ("sqlite:///x.db?mode=replicat", r"unknown option 'mode' \(in mode=replicat\)"),
        ("sqlite:///x.db?timeout=soon", "timeout"),
        ("sqlite:///x.db?timeout=-1", "timeout"),
        ("sqlite:///x.db?synchronous=off", "synchronous"),
        ("sqlite:///x.db?timeout", "malformed query"),
    ],
)
def test_bad_urls_are_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        EventStore(url)


def test_a_url_that_is_not_a_str_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="URL"):
        EventStore(42)  # type: ignore[arg-type]


def test_options_from_the_url_or_keywords(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/e.db?synchronous=normal&timeout=2"
    with EventStore(url) as store, sqlite3.connect(tmp_path / "e.db") as check:
        assert store._timeout == 2.0  # type: ignore[attr-defined]
        assert check.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    with SQLiteEventStore(f"sqlite:///{tmp_path}/e.db", timeout=0.5) as store:
        assert store._timeout == 0.5


# ---------------------------------------------------------------- create=False


def _tables(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master"))


def test_create_false_opens_a_store_that_exists(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/events.db"
    with EventStore(url) as store:
        store.append("s", [NewEvent("t", 1)])
    with EventStore(url, create=False) as store:
        assert store.stream_version("s") == 1


def test_create_false_on_an_apps_database_creates_no_table(tmp_path: Path) -> None:
    path = tmp_path / "shop.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
        (journal,) = conn.execute("PRAGMA journal_mode").fetchone()
    with pytest.raises(StoreError) as caught:
        EventStore(f"sqlite:///{path}", create=False)
    assert str(caught.value) == (
        f"no rowcast event store in sqlite:///{path}: its database has no rowcast_events "
        f"table; create one with `rowcast events init sqlite:///{path}`"
    )
    assert _tables(path) == ["orders"]
    with contextlib.closing(sqlite3.connect(path)) as conn:  # not even the journal mode
        assert conn.execute("PRAGMA journal_mode").fetchone() == (journal,)


@pytest.mark.parametrize("name", ["typo.db", "no/such/dir/events.db"])
def test_create_false_never_makes_a_file_nor_a_directory(tmp_path: Path, name: str) -> None:
    with pytest.raises(StoreError, match=r"does not exist; create one with `rowcast events init"):
        EventStore(f"sqlite:///{tmp_path}/{name}", create=False)
    assert list(tmp_path.iterdir()) == []


def test_create_false_names_the_tables_a_store_lacks(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    EventStore(f"sqlite:///{path}").close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("DROP TABLE rowcast_subscriptions")
    with pytest.raises(StoreError, match="the store lacks rowcast_subscriptions; create one"):
        EventStore(f"sqlite:///{path}", create=False)
    assert "rowcast_subscriptions" not in _tables(path)


def test_create_false_in_memory_has_nothing_to_open() -> None:
    for url in ("sqlite://", "memory://"):
        with pytest.raises(StoreError, match="no rowcast event store in"):
            EventStore(url, create=False)


# ---------------------------------------------------------------- the file


def test_the_file_is_in_wal_mode(tmp_path: Path) -> None:
    with EventStore(f"sqlite:///{tmp_path}/events.db") as store:
        store.append("s", [NewEvent("t", 1)])
        with sqlite3.connect(tmp_path / "events.db") as other:
            assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            rows = other.execute("SELECT stream, version, length(id) FROM rowcast_events")
            assert rows.fetchall() == [("s", 1, 16)]


def test_a_writer_holding_the_lock_past_the_timeout_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with SQLiteEventStore(f"sqlite:///{path}", timeout=0.2) as store:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError, match="locked") as caught:
                store.append("s", [NewEvent("t", 1)])
            assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert store.append("s", [NewEvent("t", 1)]).version == 1  # the same store recovers


@contextlib.contextmanager
def write_lock_held(path: Path, seconds: float) -> Iterator[None]:
    """Another connection holds the write lock on `path` for `seconds` from now."""
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    timer = threading.Timer(seconds, lambda: blocker.execute("ROLLBACK"))
    timer.start()
    try:
        yield
    finally:
        timer.join()
        blocker.close()


def test_a_writer_that_lets_go_in_time_does_not_fail(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with (
        SQLiteEventStore(f"sqlite:///{path}", timeout=5) as store,
        write_lock_held(path, seconds=0.2),
    ):
        assert store.append("s", [NewEvent("t", 1)]).version == 1


def test_a_corrupt_snapshot_is_a_store_error(tmp_path: Path) -> None:
    with EventStore(f"sqlite:///{tmp_path}/events.db") as store:
        store.save_snapshot("s", {"a": 1}, 1)
        with sqlite3.connect(tmp_path / "events.db") as other:
            other.execute("UPDATE rowcast_snapshots SET state = ?", (b"{not json",))
        with pytest.raises(StoreError, match="corrupt"):
            store.load_snapshot("s")


def test_repr_names_the_url() -> None:
    store = EventStore("sqlite://")
    assert repr(store) == "<SQLiteEventStore 'sqlite://'>"
    store.close()
    assert repr(store) == "<SQLiteEventStore 'sqlite://' closed>"


def test_a_locked_database_is_retried_when_sqlite_gives_up_early(tmp_path: Path) -> None:
    """SQLite may return "database is locked" without waiting; the store retries with backoff."""
    path = tmp_path / "events.db"
    with SQLiteEventStore(f"sqlite:///{path}", timeout=5) as store:
        store._conn.execute("PRAGMA busy_timeout = 0")  # type: ignore[union-attr]
        with write_lock_held(path, seconds=0.2):
            assert store.append("s", [NewEvent("t", 1)]).version == 1


# ---------------------------------------------------------------- watching and subscriptions


def test_one_blocked_watcher_polls_for_other_connections(tmp_path: Path) -> None:
    """Only while watchers wait, and one of them at a time, every ~50 ms."""
    with SQLiteEventStore(f"sqlite:///{tmp_path}/events.db") as store:
        polls = 0
        poll = store._notifier.poll
        assert poll is not None

        def counting() -> bool:
            nonlocal polls
            polls += 1
            return poll()

        store._notifier.poll = counting
        watches = [store.watch(f"s{i}", timeout=0.3) for i in range(4)]
        assert polls == 0  # nobody waits yet
        threads = [threading.Thread(target=lambda w=w: list(w)) for w in watches]  # type: ignore[misc]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert 1 <= polls <= 12  # 6 expected; one poll per watcher would make 24
        after = polls
        assert list(store.watch("s", after=0, timeout=0)) == []  # no wait, no poll
        assert polls == after


def test_a_memory_store_never_polls() -> None:
    with SQLiteEventStore("sqlite://") as store:
        assert store._notifier.poll is None


def test_subscriptions_are_rows_of_their_own_table(tmp_path: Path) -> None:
    with EventStore(f"sqlite:///{tmp_path}/events.db") as store:
        store.append("s", [NewEvent("t", 1), NewEvent("t", 2)])
        subscription = store.subscribe("mailer", lambda event: None, "s")
        assert subscription.run_pending() == 2
        with sqlite3.connect(tmp_path / "events.db") as other:
            rows = other.execute("SELECT name, stream, position FROM rowcast_subscriptions")
            assert rows.fetchall() == [("mailer", "s", 2)]


def test_a_file_made_before_subscriptions_gets_their_table(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with EventStore(f"sqlite:///{path}") as store:
        store.append("s", [NewEvent("t", 1)])
    with sqlite3.connect(path) as old:
        old.execute("DROP TABLE rowcast_subscriptions")
    with EventStore(f"sqlite:///{path}") as store:
        assert store.subscribe("late", lambda event: None, "s").run_pending() == 1


def test_a_commit_by_a_plain_sqlite_connection_wakes_a_watcher(tmp_path: Path) -> None:
    """Whatever writes the file (another tool, another language) is seen too."""
    path = tmp_path / "events.db"
    with EventStore(f"sqlite:///{path}") as store, store.watch("s") as watch:
        got: list[int] = []
        waiting = threading.Thread(target=lambda: got.append(next(watch).version))
        waiting.start()
        with sqlite3.connect(path) as other:
            other.execute(
                "INSERT INTO rowcast_events (stream, version, id, type, data, recorded_at) "
                "VALUES ('s', 1, randomblob(16), 't', '1', 0)"
            )
        waiting.join(10)
        assert got == [1]

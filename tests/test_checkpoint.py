"""Checkpoints: the shared contract on every backend, then each backend's own errors."""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from rowcast.checkpoint import (
    Checkpoint,
    FileCheckpoint,
    RedisCheckpoint,
    SQLCheckpoint,
    open_checkpoint,
)
from rowcast.errors import ConfigError, StoreError
from rowcast.testing.checkpoint import CheckpointContract

from .conftest import require_redis, require_server


def bare(url: str) -> str:
    """`url` without its ``+driver``: the form users write, mapped by `open_checkpoint`."""
    parsed = make_url(url)
    return parsed.set(drivername=parsed.get_backend_name()).render_as_string(hide_password=False)


def delete_rows(url: str, name: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM rowcast_checkpoint WHERE name = :n"), {"n": name})
            if engine.dialect.has_table(conn, "rowcast_report"):
                conn.execute(text("DELETE FROM rowcast_report WHERE name = :n"), {"n": name})
    finally:
        engine.dispose()


# ---------------------------------------------------------------- the contract


class TestFileCheckpoint(CheckpointContract):
    @pytest.fixture(autouse=True)
    def _dir(self, tmp_path: Path) -> None:
        self.dir = tmp_path

    def make_checkpoint(self, name: str) -> Checkpoint:
        return open_checkpoint(str(self.dir / "pos.json"), name)

    def store_url(self) -> str:
        return str(self.dir / "pos.json")


class TestFileURLCheckpoint(CheckpointContract):
    @pytest.fixture(autouse=True)
    def _dir(self, tmp_path: Path) -> None:
        self.dir = tmp_path

    def make_checkpoint(self, name: str) -> Checkpoint:
        return open_checkpoint(f"file://{self.dir}/state/pos?name={name}")

    def store_url(self) -> str:
        return f"file://{self.dir}/state/pos"


class TestSQLiteCheckpoint(CheckpointContract):
    @pytest.fixture(autouse=True)
    def _dir(self, tmp_path: Path) -> None:
        self.dir = tmp_path

    def make_checkpoint(self, name: str) -> Checkpoint:
        return open_checkpoint(f"sqlite:///{self.dir}/checkpoints.db", name)

    def store_url(self) -> str:
        return f"sqlite:///{self.dir}/checkpoints.db"


@pytest.mark.server
class TestPostgreSQLCheckpoint(CheckpointContract):
    @pytest.fixture(autouse=True)
    def _server(self) -> None:
        self.server = require_server("postgresql")

    def make_checkpoint(self, name: str) -> Checkpoint:
        return open_checkpoint(bare(self.server), name)

    def store_url(self) -> str:
        return bare(self.server)

    def remove_checkpoint(self, name: str) -> None:
        delete_rows(self.server, name)


@pytest.mark.server
class TestMariaDBCheckpoint(CheckpointContract):
    @pytest.fixture(autouse=True)
    def _server(self) -> None:
        self.server = require_server("mysql")

    def make_checkpoint(self, name: str) -> Checkpoint:
        return open_checkpoint(bare(self.server), name)

    def store_url(self) -> str:
        return bare(self.server)

    def remove_checkpoint(self, name: str) -> None:
        delete_rows(self.server, name)

    def test_names_differing_in_case_are_independent(self) -> None:
        lower = self.fresh_name()
        upper = lower.upper()
        self._names.append(upper)
        self.checkpoint(lower).save("lower")
        self.checkpoint(upper).save("upper")
        assert self.checkpoint(lower).load() == "lower"

    def test_mariadb_scheme_is_the_same_table(self) -> None:
        name = self.fresh_name()
        self.checkpoint(name).save("p1")
        url = bare(self.server).replace("mysql://", "mariadb://", 1)
        with closing(open_checkpoint(url, name)) as cp:
            assert cp.load() == "p1"


@pytest.mark.server
class TestRedisCheckpoint(CheckpointContract):
    @pytest.fixture(autouse=True)
    def _server(self) -> None:
        self.server = require_redis()

    def make_checkpoint(self, name: str) -> Checkpoint:
        return open_checkpoint(self.server, name)

    def store_url(self) -> str:
        return self.server

    def remove_checkpoint(self, name: str) -> None:
        import redis

        with redis.Redis.from_url(self.server) as client:
            client.delete(f"rowcast:checkpoint:{name}", f"rowcast:report:{name}")

    def test_a_key_of_another_type_is_a_store_error(self) -> None:
        import redis

        cp = self.checkpoint()
        assert isinstance(cp, RedisCheckpoint)
        with redis.Redis.from_url(self.server) as client:
            client.set(cp.key, "not a hash")
        with pytest.raises(StoreError, match=r"load failed.*WRONGTYPE"):
            cp.load()
        with redis.Redis.from_url(self.server) as client:
            client.delete(cp.key)
            client.hset(cp.key, "other", "x")
        with pytest.raises(StoreError, match="has no position"):
            cp.load()


# ---------------------------------------------------------------- choosing a backend


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("pos.json", FileCheckpoint),
        ("{tmp}/a/b/pos", FileCheckpoint),
        ("file://{tmp}/pos", FileCheckpoint),
        ("sqlite:///{tmp}/x.db", SQLCheckpoint),
        ("sqlite+pysqlite:///{tmp}/x.db", SQLCheckpoint),
    ],
)
def test_the_url_picks_the_backend(
    url: str, kind: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with closing(open_checkpoint(url.format(tmp=tmp_path))) as cp:
        assert type(cp) is kind


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "non-empty string"),
        ("   ", "non-empty string"),
        ("ftp://example.com/pos", "no checkpoint backend for 'ftp://"),
        ("pulsar://broker:6650/topic", "no checkpoint backend"),
        ("sqlite://", "lost at exit"),
        ("sqlite:///:memory:", "lost at exit"),
        ("file://otherhost/pos", "a file URL has no host"),
        ("postgresql://u@host:notaport/db", "malformed database URL"),
        ("redis://127.0.0.1:6379/notadb", "malformed Redis URL"),
        ("redis://127.0.0.1:notaport/0", "malformed Redis URL"),
    ],
)
def test_bad_urls_are_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_checkpoint(url)


def test_a_directory_is_not_a_checkpoint_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        open_checkpoint(str(tmp_path))
    with pytest.raises(ConfigError, match="names a directory"):
        open_checkpoint(f"{tmp_path}/state/")
    (tmp_path / "pos.relay").mkdir()
    with pytest.raises(ConfigError, match="is a directory"):
        open_checkpoint(str(tmp_path / "pos"), "relay")


@pytest.mark.parametrize("name", ["", "a/b", "../up", ".hidden", "x" * 201, "é", "a b"])
def test_bad_names_are_config_errors(name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="checkpoint name"):
        open_checkpoint(str(tmp_path / "pos"), name)
    with pytest.raises(ConfigError, match="checkpoint name"):
        open_checkpoint(f"file://{tmp_path}/pos?name={name}")


def test_the_name_may_come_from_the_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.db?name=relay1"
    with closing(open_checkpoint(url)) as from_url, closing(open_checkpoint(url, "relay1")) as same:
        assert from_url.url == url
        from_url.save("p1")
        assert same.load() == "p1"
    with closing(open_checkpoint(f"sqlite:///{tmp_path}/x.db", "relay1")) as from_argument:
        assert from_argument.load() == "p1"
    with closing(open_checkpoint(f"sqlite:///{tmp_path}/x.db")) as default:
        assert default.load() is None


@pytest.mark.parametrize("query", ["?name=a&name=b", "?name=a"])
def test_two_different_names_are_a_config_error(query: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="give the name once"):
        open_checkpoint(f"sqlite:///{tmp_path}/x.db{query}", "b")


def test_a_missing_redis_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ConfigError, match=r"pip install 'rowcast\[redis\]'"):
        open_checkpoint("redis://127.0.0.1:6379/15")


def test_a_missing_sql_driver_names_the_extra() -> None:
    with pytest.raises(ConfigError, match=r"no driver.*pip install 'rowcast\[mysql\]'"):
        open_checkpoint("mysql+mysqldb://root@127.0.0.1:3306/test")


# ---------------------------------------------------------------- servers that are down


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://rowcast:s3cret@127.0.0.1:1/test",
        "mysql://rowcast:s3cret@127.0.0.1:1/test",
        "redis://:s3cret@127.0.0.1:1/0",
    ],
)
def test_an_unreachable_server_fails_at_open(url: str) -> None:
    """Opening connects, so a relay stops before it reads anything; the password stays hidden."""
    with pytest.raises(StoreError) as caught:
        open_checkpoint(url)
    message = str(caught.value)
    assert "127.0.0.1:1" in message
    assert "***" in message
    assert "s3cret" not in message
    assert caught.value.__cause__ is not None


@pytest.mark.server
def test_a_wrong_password_fails_at_open_with_the_servers_reason() -> None:
    server = make_url(require_server("mysql"))
    url = bare(server.set(username="rowcast_nobody", password="s3cret").render_as_string(False))
    with pytest.raises(StoreError, match=r"Access denied") as caught:
        open_checkpoint(url)
    assert "s3cret" not in str(caught.value)


def test_the_url_attribute_is_the_url_given(tmp_path: Path) -> None:
    with closing(open_checkpoint(f"sqlite:///{tmp_path}/x.db?name=n")) as cp:
        assert cp.url == f"sqlite:///{tmp_path}/x.db?name=n"


@pytest.mark.server
def test_a_sql_url_attribute_masks_the_password() -> None:
    server = make_url(require_server("postgresql"))
    if server.password is not None:
        pytest.skip("the test server URL has a password of its own")
    url = bare(server.set(password="s3cret").render_as_string(hide_password=False))
    with closing(open_checkpoint(url + "?name=masked")) as cp:  # trust auth ignores it
        assert "s3cret" not in cp.url
        assert ":***@" in cp.url
        assert cp.url.endswith("?name=masked")


@pytest.mark.server
def test_a_redis_url_attribute_masks_the_password() -> None:
    require_redis()
    with closing(open_checkpoint("redis://default:@127.0.0.1:6379/15?name=masked")) as cp:
        assert cp.url == "redis://default:***@127.0.0.1:6379/15?name=masked"
        assert cp.load() is None


# ---------------------------------------------------------------- files


def test_a_missing_directory_is_created(tmp_path: Path) -> None:
    path = tmp_path / "var" / "lib" / "rowcast" / "pos"
    with closing(open_checkpoint(str(path), "relay")) as cp:
        cp.save("p1")
    assert json.loads((path.parent / "pos.relay").read_text("utf-8"))["position"] == "p1"
    assert not path.exists()  # "default" alone lives at the path itself


def test_a_relative_path_stays_where_it_was_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with closing(open_checkpoint("./pos.json")) as cp:
        (tmp_path / "elsewhere").mkdir()
        monkeypatch.chdir(tmp_path / "elsewhere")
        cp.save("p1")
    assert (tmp_path / "pos.json").exists()


@pytest.mark.parametrize(
    "content",
    [b"", b"mysql-bin.000003:4\n", b'{"position": ', b'{"position": ""}', b"[1]", b"\xff\xfe"],
    ids=["empty", "plain-text", "truncated", "empty-position", "not-an-object", "not-utf8"],
)
def test_a_corrupt_file_is_a_store_error_never_none(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "pos.json"
    path.write_bytes(content)
    with (
        closing(open_checkpoint(str(path))) as cp,
        pytest.raises(StoreError, match=re.escape(str(path))) as caught,
    ):
        cp.load()
    assert "corrupt" in str(caught.value) or "reading" in str(caught.value)


def test_a_file_of_another_name_is_a_store_error(tmp_path: Path) -> None:
    with closing(open_checkpoint(str(tmp_path / "pos"), "relay1")) as cp:
        cp.save("p1")
    os.replace(tmp_path / "pos.relay1", tmp_path / "pos.relay2")
    with (
        closing(open_checkpoint(str(tmp_path / "pos"), "relay2")) as cp,
        pytest.raises(StoreError, match="belongs to checkpoint 'relay1'"),
    ):
        cp.load()


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_an_interrupted_save_leaves_the_old_position(
    failing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save that dies half way (disk full, power cut) keeps the last good position, no litter."""
    cp = open_checkpoint(str(tmp_path / "pos.json"))
    cp.save("old")

    def broken(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, broken)
    with pytest.raises(StoreError, match=r"writing .*No space left on device"):
        cp.save("new")
    monkeypatch.undo()
    assert cp.load() == "old"
    assert os.listdir(tmp_path) == ["pos.json"]
    cp.close()


def test_readers_never_see_a_half_written_file(tmp_path: Path) -> None:
    path = str(tmp_path / "pos.json")
    positions = [f"{i}:" + "x" * (1000 * (i % 7)) for i in range(200)]
    seen: list[str | None] = []
    done = threading.Event()

    def read() -> None:
        with closing(open_checkpoint(path)) as reader:
            while not done.is_set():
                seen.append(reader.load())

    thread = threading.Thread(target=read)
    thread.start()
    try:
        with closing(open_checkpoint(path)) as writer:
            for position in positions:
                writer.save(position)
    finally:
        done.set()
        thread.join()
    assert set(seen) <= {None, *positions}
    assert os.listdir(tmp_path) == ["pos.json"]


def test_the_file_is_json_with_name_and_position(tmp_path: Path) -> None:
    with closing(open_checkpoint(str(tmp_path / "pos.json"))) as cp:
        cp.save("mysql-bin.000003:1234")
    record = json.loads((tmp_path / "pos.json").read_text("utf-8"))
    assert record["name"] == "default"
    assert record["position"] == "mysql-bin.000003:1234"
    assert isinstance(record["updated_at"], float)


# ---------------------------------------------------------------- reports


def test_reading_reports_creates_nothing(tmp_path: Path) -> None:
    from rowcast.checkpoint.report import read_reports

    assert read_reports(f"sqlite:///{tmp_path}/none.db") == []
    assert read_reports(str(tmp_path / "no" / "pos")) == []
    assert list(tmp_path.iterdir()) == []
    with closing(open_checkpoint(f"sqlite:///{tmp_path}/cp.db")) as cp:
        cp.save("p")
    assert read_reports(f"sqlite:///{tmp_path}/cp.db") == []  # no rowcast_report table yet
    engine = create_engine(f"sqlite:///{tmp_path}/cp.db")
    with engine.connect() as conn:
        assert not engine.dialect.has_table(conn, "rowcast_report")
    engine.dispose()


def test_a_file_report_is_a_hidden_file_beside_the_checkpoint(tmp_path: Path) -> None:
    with closing(open_checkpoint(str(tmp_path / "pos"), "orders")) as cp:
        assert isinstance(cp, FileCheckpoint)
        cp.save_report({"state": "running"})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".pos.orders.report.json"]
    assert json.loads((tmp_path / ".pos.orders.report.json").read_text()) == {
        "state": "running",
        "name": "orders",
    }

"""The Redis Streams sink: the sink contract in both layouts, then its own behaviour."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from rowcast import _speedups
from rowcast.change import Change
from rowcast.errors import ConfigError, PermanentSinkError, SinkError, TransientSinkError
from rowcast.sinks import open_sink
from rowcast.sinks.base import change_id
from rowcast.sinks.redis import RedisSink
from rowcast.testing.sink import SinkContract, closed_port, transactions
from tests.conftest import require_redis

BAD_URLS = [
    ("redis://127.0.0.1:6379/zero", "database number"),
    ("redis://127.0.0.1:6379/0?stream", "malformed query"),
    ("redis://127.0.0.1:6379/0?stream=", "needs a key"),
    ("redis://127.0.0.1:6379/0?prefix=", "needs a key prefix"),
    ("redis://127.0.0.1:6379/0?maxlen=lots", "maxlen must be a positive number"),
    ("redis://127.0.0.1:6379/0?maxlen=0", "maxlen must be a positive number"),
    ("redis://127.0.0.1:6379/0?timeout=-1", "timeout must be a positive number"),
    ("redis://127.0.0.1:6379/0?stream=a&stream=b", "given twice"),
    ("redis://127.0.0.1:6379/0?streams=a", r"unknown option 'streams'.*stream, prefix"),
    ("redis://127.0.0.1:port/0", "malformed Redis URL"),
]


def _entries(client: redis.Redis, keys: list[bytes]) -> list[tuple[uuid.UUID, Change]]:
    arrived = []
    for key in keys:
        for _, fields in client.xrange(key):
            arrived.append((uuid.UUID(fields[b"id"].decode()), Change.from_json(fields[b"body"])))
    return arrived


@pytest.mark.server
class _RedisContract(SinkContract):
    bad_urls = BAD_URLS

    @pytest.fixture
    def destination(self) -> Iterator[None]:
        self.url = require_redis()
        self.prefix = f"sinks-test:{uuid.uuid4().hex}"
        self.client = redis.Redis.from_url(self.url)
        yield
        keys = list(self.client.scan_iter(match=f"{self.prefix}*"))
        if keys:
            self.client.delete(*keys)
        self.client.close()

    def unreachable_url(self) -> str:
        return f"redis://127.0.0.1:{closed_port()}/0?timeout=2"


class TestOneStream(_RedisContract):
    order = "total"

    def make_sink(self) -> RedisSink:
        return RedisSink(f"{self.url}?stream={self.prefix}:all")

    def read_back(self) -> list[tuple[uuid.UUID, Change]]:
        return _entries(self.client, [f"{self.prefix}:all".encode()])


class TestOneStreamPerTable(_RedisContract):
    order = "table"

    def make_sink(self) -> RedisSink:
        return RedisSink(f"{self.url}?prefix={self.prefix}")

    def read_back(self) -> list[tuple[uuid.UUID, Change]]:
        return _entries(self.client, sorted(self.client.scan_iter(match=f"{self.prefix}:*")))


# ---------------------------------------------------------------- its own behaviour


@pytest.fixture
def prefix() -> Iterator[str]:
    url = require_redis()
    name = f"sinks-test:{uuid.uuid4().hex}"
    yield name
    with redis.Redis.from_url(url) as client:
        keys = list(client.scan_iter(match=f"{name}*"))
        if keys:
            client.delete(*keys)


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    with redis.Redis.from_url(require_redis(), decode_responses=True) as connection:
        yield connection


@pytest.mark.server
def test_the_entry_layout(prefix: str, client: redis.Redis) -> None:
    sink = open_sink(f"{require_redis()}?prefix={prefix}")
    batch = transactions(1, per_transaction=2, tables=[("shop", "orders"), (None, "log")])
    sink.deliver(batch)
    sink.close()
    first, second = batch[0]
    [(_, orders)] = client.xrange(f"{prefix}:shop.orders")
    [(_, log)] = client.xrange(f"{prefix}:log")  # no schema: no dot
    assert orders == {
        "id": str(change_id(first, 0)),
        "topic": first.topic,
        "name": first.name,
        "body": first.to_json(),
    }
    assert log["id"] == str(change_id(second, 1))
    assert list(orders) == ["id", "topic", "name", "body"]


@pytest.mark.server
def test_a_consumer_group_reads_every_change_once(prefix: str, client: redis.Redis) -> None:
    """The documented way to consume: XGROUP CREATE ... MKSTREAM, XREADGROUP, XACK."""
    key = f"{prefix}:changes"
    client.xgroup_create(key, "mailer", id="0", mkstream=True)
    sink = RedisSink(require_redis(), stream=key)
    batch = transactions(5)
    sink.deliver(batch)
    sink.close()
    seen: list[Change] = []
    for worker in ("w1", "w2"):  # two workers share the group: each entry goes to one
        reply: Any = client.xreadgroup("mailer", worker, {key: ">"}, count=8)
        for _, entries in reply:
            for entry_id, fields in entries:
                seen.append(Change.from_json(fields["body"]))
                client.xack(key, "mailer", entry_id)
    assert seen == [change for tx in batch for change in tx]
    assert client.xpending(key, "mailer")["pending"] == 0


@pytest.mark.server
def test_maxlen_trims_approximately(prefix: str, client: redis.Redis) -> None:
    key = f"{prefix}:trimmed"
    sink = open_sink(f"{require_redis()}?stream={key}&maxlen=100")
    for _ in range(10):
        sink.deliver(transactions(100))  # 3,000 entries
    sink.close()
    length = client.xlen(key)
    assert 100 <= length < 3000  # "~": whole macro nodes are dropped, never below maxlen
    last = Change.from_json(client.xrevrange(key, count=1)[0][1]["body"])
    assert last.txid is not None
    assert last.txid.endswith("-99")  # the newest survive


@pytest.mark.server
def test_keyword_options_override_the_url(prefix: str, client: redis.Redis) -> None:
    sink = RedisSink(f"{require_redis()}?stream=ignored&maxlen=5", stream=f"{prefix}:kw")
    assert (sink.stream, sink.maxlen, sink.timeout) == (f"{prefix}:kw", 5, 10.0)
    sink.deliver(transactions(1))
    sink.close()
    assert client.xlen(f"{prefix}:kw") == 3
    assert client.exists("ignored") == 0


@pytest.mark.server
def test_a_key_of_another_type_is_a_permanent_error(prefix: str, client: redis.Redis) -> None:
    key = f"{prefix}:taken"
    client.set(key, "not a stream")
    sink = RedisSink(require_redis(), stream=key)
    with pytest.raises(ConfigError, match=f"key '{key}' holds a string, not a stream"):
        sink.check()
    with pytest.raises(PermanentSinkError, match=r"WRONGTYPE.*another type") as caught:
        sink.deliver(transactions(1))
    assert isinstance(caught.value.__cause__, redis.ResponseError)
    client.delete(key)
    sink.deliver(transactions(1))  # the same sink delivers once the key is free
    sink.close()
    assert client.xlen(key) == 3


@pytest.mark.server
def test_a_killed_connection_is_survived(prefix: str, client: redis.Redis) -> None:
    """CLIENT KILL the sink's connection: the next deliveries reconnect and lose nothing."""
    key = f"{prefix}:killed"
    sink = RedisSink(require_redis(), stream=key)
    first, second = transactions(2), transactions(2)
    sink.deliver(first)
    victim = sink._client.client_id()
    assert client.client_kill_filter(_id=victim) == 1
    try:
        sink.deliver(second)
    except SinkError:  # the relay's retry: the same batch again
        sink.deliver(second)
    sink.close()
    bodies = [Change.from_json(f["body"]) for _, f in client.xrange(key)]
    assert bodies == [c for tx in first + second for c in tx]


@pytest.mark.server
def test_deliver_after_close_is_a_sink_error() -> None:
    sink = RedisSink(require_redis())
    sink.close()
    with pytest.raises(SinkError, match="closed"):
        sink.deliver(transactions(1))
    assert repr(sink).endswith("closed>")


def test_the_url_hides_the_password() -> None:
    sink = open_sink("redis://:hunter2@127.0.0.1:6379/0")
    assert "hunter2" not in sink.url
    assert "hunter2" not in repr(sink)
    sink.close()


def test_a_wrong_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="redis://"):
        RedisSink("http://127.0.0.1:6379/0")


class _Pre53Pool(redis.ConnectionPool):
    """redis-py 5.0-5.2's pool: `get_connection` needs a command name (5.3 made it optional)."""

    def get_connection(self, command_name: str, *keys: Any, **options: Any) -> Any:  # type: ignore[override]
        return super().get_connection()


@pytest.mark.server
@pytest.mark.skipif(
    _speedups.PURE, reason="ROWCAST_PURE=1: redis-py's own pipeline asks its own pool"
)
def test_redis_py_before_5_3_is_served(prefix: str, client: redis.Redis) -> None:
    sink = RedisSink(require_redis(), prefix=prefix)
    sink._client.connection_pool.__class__ = _Pre53Pool
    batch = transactions(2, tables=[("shop", "orders")])
    try:
        sink.deliver(batch)
    finally:
        sink.close()
    assert len(client.xrange(f"{prefix}:shop.orders")) == sum(map(len, batch))


@pytest.fixture
def acl_user(client: redis.Redis) -> Iterator[tuple[str, str]]:
    """A Redis user that may write keys under ``allowed:`` and only read those under
    ``readonly:`` (name, password)."""
    name, password = f"rc_{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    client.execute_command(
        "ACL", "SETUSER", name, "on", f">{password}", "~allowed:*", "%R~readonly:*", "+@all"
    )
    yield name, password
    client.execute_command("ACL", "DELUSER", name)


def _as(user: tuple[str, str], query: str) -> str:
    host = require_redis().split("://", 1)[1]
    return f"redis://{user[0]}:{user[1]}@{host}?{query}"


@pytest.mark.server
def test_a_key_the_user_may_not_write_is_refused_by_the_check(
    acl_user: tuple[str, str], client: redis.Redis
) -> None:
    """NOPERM: the check queues an XADD in a MULTI it discards; nothing is written."""
    key = f"sinks-test:{uuid.uuid4().hex}"
    sink = open_sink(_as(acl_user, f"stream={key}"))
    with pytest.raises(PermanentSinkError, match=r"no permissions.*ACL SETUSER") as caught:
        sink.check()
    assert acl_user[1] not in str(caught.value)  # the password is masked
    with pytest.raises(PermanentSinkError, match="no permissions"):
        sink.deliver(transactions(1))
    sink.close()
    readonly = open_sink(_as(acl_user, f"stream=readonly:{uuid.uuid4().hex}"))
    for _ in range(2):  # again: the discarded MULTI left no transaction open
        with pytest.raises(PermanentSinkError, match="no permissions"):  # TYPE may, XADD not
            readonly.check()
    readonly.close()
    allowed = open_sink(_as(acl_user, f"stream=allowed:{uuid.uuid4().hex}"))
    allowed.check()  # the same user, a key it may write: fine, and still nothing written
    assert client.exists(allowed.stream) == 0  # type: ignore[attr-defined]
    allowed.close()


@pytest.mark.server
def test_a_wrong_password_is_permanent(acl_user: tuple[str, str]) -> None:
    sink = open_sink(_as((acl_user[0], "wrong"), "stream=allowed:x"))
    with pytest.raises(PermanentSinkError, match="password"):
        sink.check()
    sink.close()


def test_an_unreachable_server_is_transient() -> None:
    sink = RedisSink(f"redis://127.0.0.1:{closed_port()}/0?timeout=2")
    with pytest.raises(TransientSinkError, match="Connection refused"):
        sink.check()
    with pytest.raises(TransientSinkError):
        sink.deliver(transactions(1))
    sink.close()

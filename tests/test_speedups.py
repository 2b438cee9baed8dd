"""The speed tricks of `rowcast._speedups`: each gives what its plain fallback gives.

Both namespaces are called directly, in one process, on the same inputs;
``ROWCAST_PURE=1`` is checked in a child process (it is read at import).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime as dt
import inspect
import json
import math
import os
import pickle
import subprocess
import sys
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rowcast import Change, _drafts, _speedups
from rowcast.change import Action
from rowcast.codec import dumps, encode, loads, object_hook
from rowcast.errors import RowcastWarning
from rowcast.store import NewEvent, RecordedEvent
from rowcast.testing.sink import closed_port
from tests.conftest import require_redis

PATHS = [_speedups.pure, _speedups.accelerated]
TRICKS = sorted(
    name
    for name, value in vars(_speedups.pure).items()
    if isinstance(value, staticmethod) and not name.startswith("_")
)

# values of every kind the codec tags, and JSON's own edge cases
ODD = {
    "decimal": [Decimal("12.50"), Decimal("-0"), Decimal("1E+3"), Decimal("NaN")],
    "aware": dt.datetime(2024, 11, 3, 1, 30, fold=1, tzinfo=ZoneInfo("America/New_York")),
    "fixed": dt.datetime(2024, 5, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
    "naive": dt.datetime(2024, 5, 1, 12, 0, 0, 123456),
    "day": dt.date(2024, 2, 29),
    "time": dt.time(23, 59, 59, 999999, tzinfo=dt.UTC),
    "span": dt.timedelta(days=-1, microseconds=1),
    "bytes": [b"", b"\x00\xff", bytearray(b"ab"), memoryview(b"cd")],
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "sets": [set(), {3, 1, 2}, frozenset({"b", "a"}), {1, "mixed"}],
    "tuple": (1, (2, ()), "three"),
    "floats": [0.0, -0.0, 1e308, 5e-324, math.nan, math.inf, -math.inf],
    "ints": [0, -1, 2**64, -(2**100), True, False],
    "keys": {1: "int", 2.5: "float", None: "none", False: "bool", (1, 2): "tuple"},
    "dollar": {"$only": {"$$twice": 1}},
    "text": ["", "é\u2028😀\udc00", '"\\\n\t\x00'],
    "empty": [{}, [], ""],
    "nested": {"a": [{"b": [[], [{}], {"c": None}]}]},
}


def test_each_trick_has_its_accelerated_path_and_the_module_names_the_chosen_ones() -> None:
    assert TRICKS == [
        "amqp_publisher",
        "gc_paused",
        "jetstream_acks",
        "jetstream_publisher",
        "json_scanner",
        "json_writer",
        "recorded_events",
        "remember_last",
        "row_maker",
        "slot_setters",
        "snapshot_rows",
        "snapshot_writes",
        "stream_adder",
        "uuid_from_bytes",
        "warn_outside",
    ]
    assert issubclass(_speedups.accelerated, _speedups.pure)
    for name in TRICKS:
        assert name in vars(_speedups.accelerated), f"{name} falls back to the pure path"
        assert getattr(_speedups, name) is getattr(_speedups.active, name)
    asked = os.environ.get("ROWCAST_PURE", "") not in ("", "0")
    assert asked == _speedups.PURE
    assert _speedups.active is (_speedups.pure if _speedups.PURE else _speedups.accelerated)


_CHILD = """
import rowcast, rowcast.sinks.base, rowcast.store.sqlite
from rowcast import _speedups
print(_speedups.active.name, _speedups.PURE,
      rowcast.store.sqlite.uuid_from_bytes is _speedups.active.uuid_from_bytes,
      hasattr(rowcast.sinks.base._encoded, "__wrapped__"))
"""


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "accelerated False True True"),
        ("", "accelerated False True True"),
        ("0", "accelerated False True True"),
        ("1", "pure True True False"),
        ("yes", "pure True True False"),
    ],
)
def test_rowcast_pure_selects_the_plain_paths_at_import(value: str | None, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ROWCAST_PURE"}
    if value is not None:
        env["ROWCAST_PURE"] = value
    out = subprocess.run(
        [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == expected.split()


# -------------------------------------------------------------- json_writer


def _write_both(default: Callable[[Any], Any], value: Any) -> str:
    """What both writers give for `value` (the same JSON), or the exception both raise.

    The same text, but for how a float may be spelled (``1e-07`` / ``1e-7``).
    """
    results = []
    for path in PATHS:
        try:
            results.append(path.json_writer(default)(value))
        except (TypeError, ValueError, RecursionError) as e:
            results.append(f"{type(e).__name__}: {e}")
    plain, fast = results
    if plain != fast:  # floats may be spelled otherwise (1e-07, 1e-7): the same numbers
        assert not plain.startswith(_ERRORS), (plain, fast)
        assert not fast.startswith(_ERRORS), (plain, fast)
        assert json.loads(plain) == json.loads(fast)
    return plain


_ERRORS = ("TypeError", "ValueError", "RecursionError")


def _raise(value: Any) -> Any:
    raise TypeError(f"no JSON for {type(value).__name__}")


def _tag(value: Any) -> Any:
    """What the codec's row writer gives its encoder for a leaf JSON has no type for."""
    if isinstance(value, dt.datetime | dt.date | dt.time | dt.timedelta | Decimal | bytes):
        return encode(value)
    return _raise(value)


# leaves a row may hold that JSON has no type for: `default` tags them as they are written
LEAVES = [
    Decimal("12.50"),
    Decimal("-0"),
    Decimal("1E+3"),
    ODD["aware"],
    ODD["fixed"],
    ODD["naive"],
    ODD["day"],
    ODD["time"],
    ODD["span"],
    b"",
    b"\x00\xff",
]


@pytest.mark.parametrize("key", sorted(ODD))
def test_json_writers_agree_on_encoded_values(key: str) -> None:
    value = ODD[key]
    tagged = _write_both(_raise, encode(value))
    assert json.loads(tagged) == json.loads(json.dumps(encode(value)))


def test_json_writers_agree_on_leaves_tagged_as_written() -> None:
    row = {f"c{i}": leaf for i, leaf in enumerate(LEAVES)}
    assert json.loads(_write_both(_tag, row)) == json.loads(json.dumps(encode(row)))
    assert _write_both(_tag, [object()]) == "TypeError: no JSON for object"  # refused alike


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats()
        | st.text()
        | st.decimals()
        | st.datetimes(timezones=st.none() | st.timezones())
        | st.binary()
        | st.uuids(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text() | st.integers(), inner),
        max_leaves=20,
    )
)
def test_json_writers_agree_on_any_encoded_value(value: Any) -> None:
    _write_both(_raise, encode(value))


@given(
    st.dictionaries(
        st.text(),
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text()
        | st.decimals(allow_nan=False)
        | st.datetimes(timezones=st.none() | st.timezones())
        | st.dates()
        | st.times()
        | st.timedeltas()
        | st.binary(),
        max_size=8,
    )
)
def test_json_writers_agree_on_any_flat_row(row: dict[str, Any]) -> None:
    _write_both(_tag, row)


def test_json_writers_agree_on_cycles_and_odd_keys() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    assert _write_both(_raise, cycle).startswith("RecursionError")
    assert _write_both(_raise, {1: 2, None: 3, 1.5: 4, False: 5}) == (
        '{"1":2,"null":3,"1.5":4,"false":5}'
    )
    assert _write_both(_raise, {(1,): 2}).startswith("TypeError: keys must be")
    assert _write_both(_raise, "plain") == '"plain"'
    assert _write_both(_raise, 2**64) == str(2**64)  # beyond orjson's 64 bits: json writes it
    assert _write_both(_raise, "\udc00") == '"\udc00"'  # a lone surrogate, as json writes it


# -------------------------------------------------------------- json_scanner


@pytest.mark.parametrize("hook", [None, object_hook])
def test_json_scanners_agree_from_any_index(hook: Any) -> None:
    texts = [
        "[" + ",".join(dumps(v) for v in ODD.values()) + "]",
        '[ {"a" : 1} ,\n null , "x" ]',
        "[]",
        '{"$$x":1}',
        "  123",
    ]
    for text in texts:
        for index in range(len(text)):
            results = []
            for path in PATHS:
                try:
                    results.append(repr(path.json_scanner(hook)(text, index)))
                except (StopIteration, ValueError):  # malformed there: errors may differ
                    results.append("refused")
            assert results[0] == results[1], (text, index)


# -------------------------------------------------------------- uuid_from_bytes


@pytest.mark.parametrize(
    "raw",
    [
        bytes(16),
        b"\xff" * 16,
        uuid.uuid4().bytes,
        uuid.uuid1().bytes,
        uuid.uuid5(uuid.NAMESPACE_DNS, "x").bytes,
    ],
)
def test_uuids_from_bytes_are_the_very_objects_the_constructor_makes(raw: bytes) -> None:
    made = [path.uuid_from_bytes(raw) for path in PATHS]
    constructed = uuid.UUID(bytes=raw)
    for value in made:
        _same_uuid(value, constructed)


def _same_uuid(value: uuid.UUID, constructed: uuid.UUID) -> None:
    assert type(value) is uuid.UUID
    assert value == constructed
    assert hash(value) == hash(constructed)
    assert (repr(value), str(value), value.is_safe, value.version) == (
        repr(constructed),
        str(constructed),
        constructed.is_safe,
        constructed.version,
    )
    assert pickle.dumps(value) == pickle.dumps(constructed)
    assert copy.deepcopy(value) == constructed
    with pytest.raises(TypeError, match="immutable"):
        value.int = 0  # type: ignore[misc]


# -------------------------------------------------------------- recorded_events


def _rows(stream: str | None, count: int) -> tuple[list[tuple[Any, ...]], list[Any]]:
    rows, values = [], []
    data = [loads(dumps(value)) for value in [*ODD.values(), None, {}, "text", 1.5]]  # as read
    for i in range(count):
        raw = uuid.uuid4().bytes
        row = (i + 1, 100 + i, raw, f"type-{i % 3}", "data", "meta", 1700000000.5 + i)
        rows.append(row if stream is not None else ("s-" + str(i % 2), *row))
        values += [data[i % len(data)], None if i % 2 else {"m": i, "at": ODD["aware"]}]
    return rows, values


@pytest.mark.parametrize("stream", [None, "orders-1"])
@pytest.mark.parametrize("count", [0, 1, 40])
def test_recorded_events_are_the_very_objects_the_constructor_makes(
    stream: str | None, count: int
) -> None:
    rows, values = _rows(stream, count)
    pure, fast = (path.recorded_events(RecordedEvent, rows, stream, values) for path in PATHS)
    assert len(pure) == len(fast) == count
    for plain, drafted in zip(pure, fast, strict=True):
        assert type(plain) is type(drafted) is RecordedEvent
        assert plain == drafted
        assert repr(plain) == repr(drafted)
        assert pickle.dumps(plain) == pickle.dumps(drafted)
        assert copy.deepcopy(drafted) == plain
        assert dataclasses.replace(drafted, version=9) == dataclasses.replace(plain, version=9)
        _same_uuid(drafted.id, plain.id)
        with pytest.raises(dataclasses.FrozenInstanceError):
            drafted.version = 2  # type: ignore[misc]


# -------------------------------------------------------------- slot_setters


@pytest.mark.parametrize(
    ("cls", "values"),
    [
        (
            Change,
            ["write", None, "t", (1, "a"), None, {"a": Decimal("1")}, 1.0, "x", "p", "s", True],
        ),
        (NewEvent, ["type", {"d": [b"\x00"]}, None, uuid.uuid4()]),
        (RecordedEvent, ["s", 1, 2, uuid.uuid4(), "t", None, {}, 3.5]),
    ],
)
def test_slot_setters_fill_a_frozen_dataclass_as_its_constructor(
    cls: type, values: list[Any]
) -> None:
    made = []
    for path in PATHS:
        setters = path.slot_setters(cls)
        assert len(setters) == len(dataclasses.fields(cls))
        obj = object.__new__(cls)
        for setter, value in zip(setters, values, strict=True):
            setter(obj, value)
        made.append(obj)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, dataclasses.fields(cls)[0].name, "other")
    pure, fast = made
    assert type(pure) is type(fast) is cls
    assert pure == fast
    assert repr(pure) == repr(fast)
    assert pickle.dumps(pure) == pickle.dumps(fast)
    assert [getattr(fast, f.name) for f in dataclasses.fields(cls)] == values


# -------------------------------------------------------------- warn_outside

_FAKE_LIBRARY = """
def deep(warn, message, prefixes):
    warn(message, category, prefixes)

def outer(warn, message, prefixes):
    deep(warn, message, prefixes)
"""


def _library(name: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": name, "category": RowcastWarning}
    exec(compile(_FAKE_LIBRARY, f"<{name}>", "exec"), namespace)
    return namespace


def _where(path: type[_speedups.pure], call: Callable[..., None], *args: Any) -> tuple[str, int]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call(path.warn_outside, "careful", *args)
    (warning,) = caught
    assert warning.category is RowcastWarning
    assert str(warning.message) == "careful"
    return warning.filename, warning.lineno


def test_warn_outside_points_at_the_same_caller_on_both_paths() -> None:
    library = _library("sqlalchemy.fake")
    prefixes = ("sqlalchemy.", "rowcast.")
    here = inspect.getsourcefile(_where)
    for path in PATHS:  # from the test's own code, through library frames
        assert _where(path, library["outer"], prefixes) == (
            here,
            _where.__code__.co_firstlineno + 3,
        )
    inside = _where(PATHS[0], library["outer"], ("nothing",))
    assert inside == _where(PATHS[1], library["outer"], ("nothing",))
    assert inside == ("<sqlalchemy.fake>", 3)  # no prefix matches: the caller, in the library
    assert _where(PATHS[0], library["outer"], ("",)) == _where(
        PATHS[1], library["outer"], ("",)
    )  # every module matches: the outermost frame


# -------------------------------------------------------------- remember_last


def _counted() -> tuple[Callable[[Sequence[Sequence[Any]]], list[Any]], list[int]]:
    calls = [0]

    def compute(batch: Sequence[Sequence[Any]]) -> list[Any]:
        calls[0] += 1
        return [(len(group), item) for group in batch for item in group]

    return compute, calls


def test_remember_last_gives_what_computing_again_gives() -> None:
    a, b = (
        Change("write", "s", "t", 1, None, {"id": 1}),
        Change("write", "s", "t", 1, None, {"id": 1}),
    )
    batches = [[[a, b]], [[a, b]], [[a], [b]], [[a, a]], [[b, a]], [], [[]], [[a, b]], [[a, b], []]]
    results = []
    for path in PATHS:
        compute, calls = _counted()
        remembered = path.remember_last(compute)
        results.append([remembered(batch) for batch in batches])
        if path is _speedups.accelerated:  # equal but other changes (b == a) are computed anew
            assert calls[0] == len(batches) - 1
        else:
            assert calls[0] == len(batches)
    assert results[0] == results[1] == [_counted()[0](batch) for batch in batches]


def test_remember_last_computes_a_batch_once_for_its_threads() -> None:
    compute, calls = _counted()
    remembered = _speedups.accelerated.remember_last(compute)
    batch = [[object(), object()], [object()]]
    start = threading.Barrier(4)

    def ask(_: int) -> list[Any]:
        start.wait()
        return remembered(batch)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(ask, range(4)))
    assert all(result is results[0] for result in results)
    assert calls[0] == 1
    assert remembered.__doc__ == compute.__doc__
    assert remembered.__wrapped__ is compute  # type: ignore[attr-defined]


# -------------------------------------------------------------- stream_adder


def _route(change: Change) -> tuple[str, str, str]:
    return f"{_PREFIX}:{change.table}", change.topic, change.name


_PREFIX = f"speedups-test:{uuid.uuid4().hex}"


@pytest.fixture
def client() -> Iterator[Any]:
    import redis

    client = redis.Redis.from_url(require_redis())
    yield client
    keys = list(client.scan_iter(match=f"{_PREFIX}*"))
    if keys:
        client.delete(*keys)
    client.close()


def _entries(tables: Sequence[str]) -> list[tuple[str, Change, str]]:
    entries = []
    for i, table in enumerate(tables):
        change = Change("write", None, table, i, None, {"id": i, "é": ODD["decimal"]}, 1.0)
        entries.append((str(uuid.uuid4()), change, change.to_json() + " ✓"))
    return entries


@pytest.mark.server
@pytest.mark.parametrize("maxlen", [None, 1000])
def test_stream_adders_add_the_same_entries(client: Any, maxlen: int | None) -> None:
    entries = _entries(["a", "b", "a", "c", "a"])
    added = []
    for path in PATHS:
        assert path.stream_adder(client, maxlen, _route).add(entries) is None
        added.append(
            {
                key: [fields for _, fields in client.xrange(key)]
                for key in client.scan_iter(f"{_PREFIX}*")
            }
        )
        client.delete(*added[-1])
    assert added[0] == added[1]
    assert sorted(added[0]) == [f"{_PREFIX}:{t}".encode() for t in "abc"]
    assert added[0][f"{_PREFIX}:a".encode()][1] == {
        b"id": entries[2][0].encode(),
        b"topic": b"write@a",
        b"name": b"a_write",
        b"body": entries[2][2].encode(),
    }


@pytest.mark.server
def test_stream_adders_report_the_same_refused_entry_and_go_on(client: Any) -> None:
    import redis

    refusals = []
    for path in PATHS:
        client.set(f"{_PREFIX}:b", "not a stream")
        refused = path.stream_adder(client, None, _route).add(_entries(["a", "b", "a", "b"]))
        assert refused is not None
        index, error = refused
        assert isinstance(error, redis.ResponseError)
        refusals.append((index, str(error), client.xlen(f"{_PREFIX}:a")))
        client.delete(f"{_PREFIX}:a", f"{_PREFIX}:b")
    assert refusals[0] == refusals[1] == (1, refusals[0][1], 2)
    assert "WRONGTYPE" in refusals[0][1]


def test_stream_adders_raise_the_same_error_when_redis_is_unreachable() -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    errors = []
    for path in PATHS:
        client = redis.Redis(
            port=closed_port(), socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)
        )
        with pytest.raises(redis.ConnectionError) as caught:
            path.stream_adder(client, None, _route).add(_entries(["a"]))
        errors.append(type(caught.value))
        client.close()
    assert errors[0] is errors[1]


# -------------------------------------------------------------- jetstream_acks


def test_jetstream_acks_take_the_same_acks_and_statuses() -> None:
    import nats

    from tests.sinks import require_nats

    name = f"SPEEDUPS_ACKS_{uuid.uuid4().hex[:8]}"

    async def take(nc: Any, path: type[_speedups.pure], stream: str) -> list[Any]:
        """What `path` hands on: acks of a stream of its own, then a 503 (no stream)."""
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"{stream}.>"])
        try:
            inbox = nc.new_inbox() + "."
            got: list[tuple[bytes, bytes, bytes]] = []
            await path.jetstream_acks().subscribe(nc, inbox + "*", lambda *ack: got.append(ack))
            for i in range(3):
                await nc.publish(f"{stream}.s.t.write", b"{}", reply=f"{inbox}{i}")
            await nc.publish(f"nowhere_{stream}.x", b"{}", reply=f"{inbox}3", headers={"a": "b"})
            other = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=5)
            for _ in range(100):
                if len(got) == 4:
                    break
                await asyncio.sleep(0.05)
            assert b'"config"' in other.data  # other subscriptions still get their messages
            return sorted(  # the 503 comes from the server, maybe before the acks
                (subject.decode().removeprefix(inbox), data.replace(stream.encode(), b"S"), status)
                for subject, data, status in got
            )
        finally:
            await js.delete_stream(stream)

    async def run() -> list[list[Any]]:
        taken = []
        for k, path in enumerate(PATHS):  # a connection each: the fast path wraps its own
            nc = await nats.connect(require_nats(), connect_timeout=5, allow_reconnect=False)
            try:
                taken.append(await take(nc, path, f"{name}_{k}"))
            finally:
                await nc.close()
        return taken

    plain, fast = asyncio.run(run())
    assert plain == fast
    assert [(subject, status) for subject, _, status in fast] == [
        ("0", b""),
        ("1", b""),
        ("2", b""),
        ("3", b"503"),
    ]
    assert all(b'"seq"' in data for _, data, _ in fast[:3])


# -------------------------------------------------------------- jetstream_publisher


def test_jetstream_publishers_store_the_same_messages() -> None:
    import nats

    from tests.sinks import require_nats

    name = f"SPEEDUPS_{uuid.uuid4().hex[:8]}"
    bodies = [b'{"n":%d,"text":"\xc3\xa9"}' % i for i in range(50)]
    ids = [str(uuid.UUID(int=i)) for i in range(50)]

    async def publish(nc: Any, path: type[_speedups.pure], stream: str) -> list[Any]:
        """The messages `path` stored in a stream of their own (ids are deduplicated)."""
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"{stream}.>"])
        try:
            inbox = nc.new_inbox()
            acks: list[Any] = []
            got = asyncio.Event()

            async def on_ack(msg: Any) -> None:
                acks.append(msg)
                if len(acks) == len(bodies):
                    got.set()

            sub = await nc.subscribe(inbox + ".*", cb=on_ack)
            outgoing = [
                (f"{stream}.s.t.write", f"{inbox}.{i}", body, ids[i])
                for i, body in enumerate(bodies)
            ]
            await path.jetstream_publisher(stream).publish(nc, outgoing)
            await asyncio.wait_for(got.wait(), 10)
            await sub.unsubscribe()
            assert all(b'"seq"' in ack.data for ack in acks)
            found = [await js.get_msg(stream, seq) for seq in range(1, len(bodies) + 1)]
            return [
                (m.subject.removeprefix(stream), m.data, dict(m.headers or {}), stream)
                for m in found
            ]
        finally:
            await js.delete_stream(stream)

    async def run() -> list[list[Any]]:
        nc = await nats.connect(require_nats(), connect_timeout=5, allow_reconnect=False)
        try:
            return [await publish(nc, path, f"{name}_{k}") for k, path in enumerate(PATHS)]
        finally:
            await nc.close()

    plain, fast = asyncio.run(run())
    for (subject, data, headers, stream), (subject2, data2, headers2, stream2) in zip(
        plain, fast, strict=True
    ):
        assert (subject, data) == (subject2, data2)
        assert headers == {"Nats-Msg-Id": headers["Nats-Msg-Id"], "Nats-Expected-Stream": stream}
        assert headers2 == {**headers, "Nats-Expected-Stream": stream2}
    assert [h["Nats-Msg-Id"] for _, _, h, _ in fast] == ids
    assert [data for _, data, _, _ in fast] == bodies


# -------------------------------------------------------------- amqp_publisher


class _Wire:
    """What pika's connection would send, for a pika ``Channel`` without a broker."""

    def __init__(self, frame_max: int) -> None:
        import pika.callback
        import pika.connection

        self.sent: list[bytes] = []
        self._body_max_length = frame_max - 8  # pika's: a body frame's 8 bytes around it
        self.params = pika.ConnectionParameters()
        connection = pika.connection.Connection
        self._send_method = connection._send_method.__get__(self)
        self._send_message = connection._send_message.__get__(self)
        self._send_frame = connection._send_frame.__get__(self)
        self.is_closed = False
        self.callbacks = pika.callback.CallbackManager()

    def _output_marshaled_frames(self, frames: Sequence[bytes]) -> None:
        self.sent.extend(frames)

    def _adapter_add_callback_threadsafe(self, *_: Any) -> None:  # pragma: no cover
        pass


def _open_channel(wire: _Wire) -> Any:
    import pika.channel

    channel = pika.channel.Channel(wire, 1, lambda _: None)
    channel._set_state(channel.OPEN)
    return channel


@pytest.mark.parametrize("frame_max", [4096, 131072])
def test_amqp_publishers_write_the_same_frames(frame_max: int) -> None:
    messages = [
        ("write.shop.items", b'{"n":1}', str(uuid.UUID(int=1)), "items_write", 1_700_000_000),
        ("update.s.t", "é".encode() * 5000, str(uuid.UUID(int=2)), "t_update", 0),  # split
        ("delete.s.t", b"", str(uuid.UUID(int=3)), "t_delete", 2**40),
        ("k" * 300, b"{}", "id", "long_key", 5),  # too long for AMQP: pika's own refusal
    ]
    written = []
    for path in PATHS:
        wire = _Wire(frame_max)
        path.amqp_publisher(_open_channel(wire)).publish("rowcast", messages[:3], True)
        path.amqp_publisher(_open_channel(wire)).publish("x", messages[:1], False)
        with pytest.raises(Exception, match=r"kkkk") as refused:  # ShortStringTooLong
            path.amqp_publisher(_open_channel(wire)).publish("rowcast", messages[3:], True)
        written.append((b"".join(wire.sent), type(refused.value)))
    assert written[0] == written[1]
    assert len(written[0][0]) > 10_000  # the long body in, split in frames or not


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_gc_paused_gives_the_collector_back_as_it_was(path: Any) -> None:
    """Off inside (accelerated) or as it was (pure); after, as it was, whatever the
    threads inside and the order they leave in, an error included."""
    import gc

    assert gc.isenabled()
    try:
        inside = threading.Event()
        left = threading.Event()

        def other() -> None:
            with path.gc_paused():
                inside.set()
                left.wait(10)

        thread = threading.Thread(target=other)

        def fail_inside() -> None:
            with path.gc_paused():
                thread.start()
                inside.wait(10)
                assert gc.isenabled() is (path is _speedups.pure)
                raise ValueError("boom")

        with pytest.raises(ValueError, match="boom"):
            fail_inside()
        assert gc.isenabled() is (path is _speedups.pure)  # the other thread is inside
        left.set()
        thread.join(10)
        assert gc.isenabled()
        gc.disable()  # off before: stays off
        with path.gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_gc_paused_leaves_what_it_made_unwalked_and_collectable() -> None:
    """Back on, the collector does not walk at once every object made inside (it counted
    them: the first allocation after paid for a chunk's thousands); a cycle made inside
    is still collected; a program's own frozen objects stay frozen."""
    import gc
    import weakref

    class Node:
        pass

    assert gc.isenabled()
    assert not gc.get_freeze_count()
    try:
        with _speedups.accelerated.gc_paused():
            kept = [[i] for i in range(50_000)]  # containers that live on
            cycle = Node()
            cycle.me = cycle  # type: ignore[attr-defined]
            gone = weakref.ref(cycle)
            assert gc.get_count()[0] > 10_000  # counted, not walked
        assert gc.get_count()[0] < 1_000  # was: 50,000, walked on the next allocation
        del cycle
        gc.collect()
        assert gone() is None  # aged, not leaked
        assert len(kept) == 50_000

        frozen = [[1]]
        gc.freeze()  # a pre-fork server's
        held = gc.get_freeze_count()
        with _speedups.accelerated.gc_paused():
            made = [[i] for i in range(1_000)]
        assert gc.get_freeze_count() == held  # not let go
        assert len(frozen) + len(made) == 1_001
    finally:
        gc.unfreeze()
        gc.enable()


def test_snapshot_writes_are_the_very_objects_the_constructor_makes() -> None:
    rows = [(1, {"id": 1}), ((2, "b"), {"id": 2, "k": "b", "v": None}), (None, {})]
    made = [
        path.snapshot_writes(Change, Action.WRITE, "s", "t", rows, 1.5, "b:3", "0/1", "pg")
        for path in PATHS
    ]
    assert made[0] == made[1]
    for plain, drafted in zip(*made, strict=True):
        assert type(drafted) is Change
        assert drafted.snapshot is True
        assert drafted.action is plain.action
        assert drafted.after is plain.after  # the row's own dict, not a copy
    with pytest.raises(dataclasses.FrozenInstanceError):
        made[1][0].pk = 2  # type: ignore[misc]

    class Loose(Change):  # a subclass with a __dict__: made by its constructor
        pass

    at = (None, "t", rows[:1], 0.0, None, None, None)
    loose = _speedups.accelerated.snapshot_writes(Loose, Action.WRITE, *at)
    assert type(loose[0]) is Loose
    assert loose[0].after == {"id": 1}


@pytest.mark.parametrize(
    "names", [("id",), ("a", "b", "c"), ("it's", 'a "q"', "\\n", "é", "{x}", "v", "v[0]")]
)
def test_row_makers_make_the_same_dicts(names: tuple[str, ...]) -> None:
    values = [list(range(len(names))), tuple(f"s{i}" for i in range(len(names)))]
    for row in values:
        made = [path.row_maker(names)(row) for path in PATHS]
        assert made[0] == made[1] == dict(zip(names, row, strict=True))
        assert list(made[1]) == list(names)  # in the columns' order


def test_row_makers_take_a_rows_first_values_when_it_holds_more() -> None:
    # a SQLite table keyed by its hidden rowid: the rowid follows the columns; the plain
    # path raised (zip strict) where the accelerated one took the columns
    row = ("a", 2, 99)
    made = [path.row_maker(("v", "n"))(row) for path in PATHS]
    assert made[0] == made[1] == {"v": "a", "n": 2}


# -------------------------------------------------------------- snapshot_rows

#: every way of making Changes of rows: the plain loop, the C one (where built), the drafts
ROW_PATHS = {
    "pure": _speedups.pure.snapshot_rows,
    "accelerated": _speedups.accelerated.snapshot_rows,
    "drafts": lambda cls, write, rows, names, key, skip, *at: _drafts.snapshot_rows(
        cls, write, rows, _speedups.accelerated.row_maker(names), key, skip, *at
    ),
}
AT = ("main", "t", 1.5, "backfill:3", "7", "sqlite")

# a column's value: what SQLite and the other drivers give (NULL, numbers, text, bytes)
_value = (
    st.none()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=5)
    | st.binary(max_size=4)
)


@st.composite
def _chunks(draw: Any) -> tuple[list[tuple[Any, ...]], tuple[str, ...], Any, set[Any] | None]:
    names = tuple(
        draw(st.lists(st.text(min_size=1, max_size=4), min_size=1, max_size=5, unique=True))
    )
    extra = draw(st.integers(0, 2))  # values after the columns (SQLite's hidden rowid)
    width = len(names) + extra
    rows = draw(st.lists(st.tuples(*[_value] * width), max_size=12))
    at = draw(st.lists(st.integers(0, width - 1), min_size=1, max_size=3, unique=True))
    key: Any = at[0] if draw(st.booleans()) else tuple(at)
    keys = [row[key] if isinstance(key, int) else tuple(row[i] for i in key) for row in rows]
    skip = set(draw(st.lists(st.sampled_from(keys), max_size=4))) if keys else set()
    return rows, names, key, draw(st.sampled_from([None, skip, skip | {"none of them"}]))


@given(_chunks())
def test_snapshot_rows_are_the_very_objects_the_constructor_makes(chunk: Any) -> None:
    rows, names, key, skip = chunk
    made = {
        name: make(Change, Action.WRITE, rows, names, key, skip, *AT)
        for name, make in ROW_PATHS.items()
    }
    assert made["pure"] == made["accelerated"] == made["drafts"]
    for fast in (made["accelerated"], made["drafts"]):
        for plain, change in zip(made["pure"], fast, strict=True):
            assert type(change) is Change
            assert change.action is Action.WRITE
            assert change.snapshot is True
            assert change.before is None
            assert list(change.after or {}) == list(names)  # in the columns' order
            assert type(change.pk) is type(plain.pk)


def test_snapshot_rows_leave_out_the_rows_whose_key_is_skipped() -> None:
    rows = [(1, "a", 10), (2, "b", 20), (3, None, 30)]
    for make in ROW_PATHS.values():
        made = make(Change, Action.WRITE, rows, ("id", "v"), 0, {2, "x"}, *AT)
        assert [(c.pk, c.after) for c in made] == [
            (1, {"id": 1, "v": "a"}),
            (3, {"id": 3, "v": None}),
        ]
        composite = make(Change, Action.WRITE, rows, ("id", "v"), (1, 0), {("b", 2)}, *AT)
        assert [c.pk for c in composite] == [("a", 1), (None, 3)]
        assert make(Change, Action.WRITE, [], ("id",), 0, None, *AT) == []


def test_snapshot_rows_are_frozen_collectable_changes_like_any() -> None:
    import gc

    rows = [(1, "a"), (2, "b")]
    for name, make in ROW_PATHS.items():
        made = make(Change, Action.WRITE, rows, ("id", "v"), 0, None, *AT)
        change = made[0]
        with pytest.raises(dataclasses.FrozenInstanceError):
            change.pk = 5  # type: ignore[misc]
        assert gc.is_tracked(change), name
        assert change.after in gc.get_referents(change)
        assert pickle.loads(pickle.dumps(change)) == change
        assert dataclasses.replace(change, pk=3).pk == 3
        assert Change.from_json(change.to_json()) == change
        assert change.after is not made[1].after


def test_snapshot_rows_of_a_class_with_a_dict_are_made_by_its_constructor() -> None:
    class Loose(Change):  # a subclass with a __dict__: no draft, no C copy of it
        pass

    for make in ROW_PATHS.values():
        made = make(Loose, Action.WRITE, [(1, "a")], ("id", "v"), 0, None, *AT)
        assert type(made[0]) is Loose
        assert made[0].after == {"id": 1, "v": "a"}

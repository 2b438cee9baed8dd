"""The speed tricks that lean on CPython's internals, each beside a plain fallback.

Every trick rowcast plays for speed on what CPython happens to do (switching
an object's ``__class__``, slot descriptors, private ``json`` names, frame
walks, a wire protocol written by hand, a cache keyed by identity), and the C
library it writes JSON with (orjson), lives here, and nowhere else. Each is a
static method of two namespaces that give equal results:

* `pure`: plain, readable Python on public APIs only; the reference.
* `accelerated` (a subclass of `pure`, overriding every method): the tricks.

One of them is chosen once, when rowcast is imported: `accelerated`, unless
the environment variable ``ROWCAST_PURE`` is set to anything but ``""`` or
``"0"`` (``ROWCAST_PURE=1``). `active` is the one chosen, and the module's
names below are bound from it; the users of a trick import those names, so
nothing changes paths after import. Tests call both namespaces directly.

=======================  ============================  ==================================
name                     used by                       the trick (accelerated)
=======================  ============================  ==================================
`json_writer`            `rowcast.codec`               orjson, a C encoder (json where
                                                       it refuses a value)
`json_scanner`           the PostgreSQL store's reads  ``json.scanner.make_scanner``
                                                       without ``raw_decode``'s wrapper
`uuid_from_bytes`        the SQLite store's reads      a `uuid.UUID` drafted, its
                                                       ``__class__`` switched
`recorded_events`        the PostgreSQL store's reads  events and ids drafted, their
                                                       ``__class__`` switched
`slot_setters`           `Change`, `NewEvent`,         a frozen dataclass's slot
                         `RecordedEvent`               descriptors' ``__set__``
`warn_outside`           the ORM capture's warnings    a ``sys._getframe`` walk
`remember_last`          `rowcast.sinks.base.encoded`  the last batch's result, kept
                                                       and found by identity
`stream_adder`           `rowcast.sinks.redis`         XADD commands written in the
                                                       Redis protocol by hand
`jetstream_publisher`    `rowcast.sinks.nats`          HPUB commands written in the
                                                       NATS protocol by hand, one flush
`jetstream_acks`         `rowcast.sinks.nats`          acks taken from nats-py's parser,
                                                       no message objects, no task
`amqp_publisher`         `rowcast.sinks.rabbitmq`      AMQP frames written by hand,
                                                       one write per batch
`gc_paused`              backfills' chunks             the cyclic garbage collector off
                         (`rowcast.sources._backfill`) while a chunk's rows are made
`snapshot_writes`        `Change._reads` (snapshots,   Changes drafted, their
                         backfills)                    ``__class__`` switched
`snapshot_rows`          SQLite's and PostgreSQL's     Changes copied from one in C
                         chunks (`sources._rows`)      (`rowcast._cspeedups`), else
                                                       drafted with a dict display
`row_maker`              MySQL's chunks, the drafts    a dict display, compiled
                         of `snapshot_rows`
=======================  ============================  ==================================

Their plain counterparts, in order: ``JSONEncoder.encode`` (built once), ``raw_decode``,
``UUID(bytes=...)``, the constructors, ``object.__setattr__``, `inspect.stack`,
no cache, redis-py's pipeline of ``xadd`` calls, nats-py's ``publish``, a nats-py
subscription's callback, pika's ``basic_publish``, nothing (the collector left
as it is), the constructor (twice) and ``dict(zip(...))``.
The drafts (an object made of its class's layout, its ``__class__`` switched) are in
`rowcast._drafts`. `rowcast._cspeedups`, the one trick written in C, is optional: the
wheel's build hook compiles it where a C compiler is (`compiled` says whether it is
in use); without it, `snapshot_rows` takes the drafts.
The broker protocols' code is in `rowcast._wire`. `redis_connection` is no
trick: the packed path's way to take a connection from redis-py's pool across
its versions, which the Redis sink's ``check()`` shares.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import json.scanner
import operator
import os
import sys
import threading
import uuid
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

from . import _drafts, _gc, _wire
from ._wire import AmqpPublisher, JetStreamAcks, JetStreamPublisher, StreamAdder, redis_connection

__all__ = [
    "PURE",
    "AmqpPublisher",
    "JetStreamAcks",
    "JetStreamPublisher",
    "StreamAdder",
    "accelerated",
    "active",
    "amqp_publisher",
    "compiled",
    "gc_paused",
    "jetstream_acks",
    "jetstream_publisher",
    "json_scanner",
    "json_writer",
    "pure",
    "recorded_events",
    "redis_connection",
    "remember_last",
    "row_maker",
    "slot_setters",
    "snapshot_rows",
    "snapshot_writes",
    "stream_adder",
    "uuid_from_bytes",
    "warn_outside",
]

#: True when ``ROWCAST_PURE`` asked for the plain paths (read once, at import)
PURE: Final = os.environ.get("ROWCAST_PURE", "") not in ("", "0")

T = TypeVar("T")
Scanner = Callable[[str, int], tuple[Any, int]]
Setter = Callable[[Any, Any], None]
Route = _wire.Route


class pure:
    """The plain paths: public APIs only, written to be read."""

    name = "pure"

    @staticmethod
    def json_writer(default: Callable[[Any], Any]) -> Callable[[Any], str]:
        """Compact JSON (``,`` and ``:``, no ASCII escapes), `default` for other types.

        For the JSON rowcast writes: JSON's own types (finite floats: NaN is a
        `ValueError` here, ``null`` on the accelerated path) and the types `default`
        tags (Decimal, datetime, date, time, timedelta, bytes; a UUID, a dataclass or
        an enum the accelerated path writes itself). Both paths give the same JSON,
        but for how a float may be spelled (``1e-07`` or ``6.103515625e-05`` here,
        ``1e-7`` or ``0.00006103515625`` there: the same numbers). No check for
        circular references (a cycle is a `RecursionError`).
        """
        return json.JSONEncoder(
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
            check_circular=False,
            default=default,
        ).encode

    @staticmethod
    def json_scanner(object_hook: Callable[[dict[str, Any]], Any] | None) -> Scanner:
        """``scan(text, index) -> (value, end)``: one JSON value read from `index` on.

        For JSON rowcast wrote itself: what happens on malformed text differs
        between the paths.
        """
        return json.JSONDecoder(object_hook=object_hook).raw_decode

    @staticmethod
    def uuid_from_bytes(raw: bytes) -> uuid.UUID:
        """The UUID of 16 bytes (that rowcast stored itself: the accelerated path checks none)."""
        return uuid.UUID(bytes=raw)

    @staticmethod
    def recorded_events(
        event_class: Callable[..., T],
        rows: Sequence[Sequence[Any]],
        stream: str | None,
        values: list[Any],
    ) -> list[T]:
        """The PostgreSQL store's events from its rows and their parsed JSON.

        A row is (stream, version, position, id as 16 bytes, type, -, -, recorded
        at), without its stream when `stream` is given; `values` holds each row's
        data then metadata, in turn.
        """
        events = []
        for row, data, metadata in zip(rows, values[::2], values[1::2], strict=True):
            if stream is None:
                name, version, position, raw, type_, _, _, recorded = row
            else:
                version, position, raw, type_, _, _, recorded = row
                name = stream
            event_id = uuid.UUID(bytes=raw)
            events.append(
                event_class(name, version, position, event_id, type_, data, metadata, recorded)
            )
        return events

    @staticmethod
    def slot_setters(cls: type) -> tuple[Setter, ...]:
        """``set(obj, value)`` of each field of frozen dataclass `cls`, in field order.

        What a frozen dataclass's own ``__init__`` does, for an ``__init__`` written by hand.
        """

        def setter(name: str) -> Setter:
            def set_field(obj: Any, value: Any) -> None:
                object.__setattr__(obj, name, value)

            return set_field

        return tuple(setter(field.name) for field in dataclasses.fields(cls))

    @staticmethod
    def warn_outside(message: str, category: type[Warning], prefixes: tuple[str, ...]) -> None:
        """Warn, pointing at the first caller whose module's name starts with none of `prefixes`.

        Counted from the caller of this function on; the outermost frame if all do.
        """
        callers = inspect.stack(0)[1:]
        level = 2  # the caller
        for caller in callers[:-1]:
            if not caller.frame.f_globals.get("__name__", "").startswith(prefixes):
                break
            level += 1
        del callers
        warnings.warn(message, category, stacklevel=level)

    @staticmethod
    def remember_last(
        compute: Callable[[Sequence[Sequence[Any]]], list[T]],
    ) -> Callable[[Sequence[Sequence[Any]]], list[T]]:
        """`compute`, whose result for the last batch asked for may be given again.

        A batch is a sequence of sequences; the plain path computes every time.
        """
        return compute

    @staticmethod
    def stream_adder(client: Any, maxlen: int | None, route: Route) -> StreamAdder:
        """What adds entries to Redis Streams with `client` (a ``redis.Redis``).

        Each (id, change, body) is ``XADD <key> [MAXLEN ~ <maxlen>] * id <id> topic <topic>
        name <name> body <body>``, with ``(key, topic, name) = route(change)``, all of a
        batch in one round trip (no MULTI).
        """
        return _wire.Pipelined(client, maxlen, route)

    @staticmethod
    def jetstream_publisher(stream: str) -> JetStreamPublisher:
        """What publishes a batch to JetStream stream `stream` on a nats-py connection.

        ``await publisher.publish(nc, [(subject, reply, body, msg_id), ...])`` sends
        each message with the headers ``Nats-Msg-Id: <msg_id>`` and
        ``Nats-Expected-Stream: <stream>``, in order, and returns once they are
        flushed (not acknowledged: acks come on the reply subjects).
        """
        return _wire.JetStreamByClient(stream)

    @staticmethod
    def jetstream_acks() -> JetStreamAcks:
        """What takes JetStream's publish acks on a nats-py connection: ``await
        acks.subscribe(nc, subject, on_ack)`` calls ``on_ack(subject, data, status)``
        (bytes; `status` the headers' status code, ``b"503"`` for no responders, or
        ``b""``) for each message on `subject`, in order, on the connection's loop."""
        return _wire.AcksByClient()

    @staticmethod
    def amqp_publisher(channel: Any) -> AmqpPublisher:
        """What publishes a batch of persistent JSON messages on `channel` (pika's own
        ``Channel``, under a ``BlockingChannel``): ``publisher.publish(exchange,
        [(routing_key, body, message_id, type, timestamp), ...], mandatory)`` buffers
        them, in order, for pika to send (confirms are the caller's)."""
        return _wire.AmqpByPika(channel)

    @staticmethod
    def gc_paused() -> contextlib.AbstractContextManager[None]:
        """Around code that makes many objects that live on (a backfill's chunk: tens of
        thousands of dicts and Changes): as it is."""
        return contextlib.nullcontext()

    @staticmethod
    def snapshot_writes(cls: Callable[..., T], write: Any, *at: Any) -> list[T]:
        """The ``snapshot=True`` writes (`rowcast.Change`: `cls`, its action `write`) of rows
        ``(pk, image)`` read, `at` being ``(schema, table, rows, ts, txid, position,
        source)``."""
        schema, table, rows, ts, txid, position, source = at
        return [cls(write, schema, table, pk, None, after, ts, txid, position, source, True)
                for pk, after in rows]  # fmt: skip

    @staticmethod
    def snapshot_rows(
        cls: Callable[..., T],
        write: Any,
        rows: list[tuple[Any, ...]],
        names: tuple[str, ...],
        key: int | tuple[int, ...],
        skip: set[Any] | None,
        *at: Any,
    ) -> list[T]:
        """`snapshot_writes` of `rows`, tuples of values as a driver gives them: a row's
        image is the dict of its first ``len(names)`` values by `names`, its key its value
        at `key` (an int) or the tuple of its values at `key` (a tuple of ints); a row whose
        key is in `skip` is left out. `at` is ``(schema, table, ts, txid, position,
        source)``. A row with fewer values than names, or a key index past its values,
        is an error (whose type may differ between the paths)."""
        width = len(names)
        keys = [row[key] if isinstance(key, int) else tuple(row[i] for i in key) for row in rows]
        kept = [
            (pk, dict(zip(names, row[:width], strict=True)))
            for pk, row in zip(keys, rows, strict=True)
            if not skip or pk not in skip
        ]
        schema, table, ts, txid, position, source = at
        return pure.snapshot_writes(cls, write, schema, table, kept, ts, txid, position, source)

    @staticmethod
    def row_maker(names: Sequence[str]) -> Callable[[Sequence[Any]], dict[str, Any]]:
        """What makes the dict of a row's first ``len(names)`` values, in the order of
        `names` (unique); a row may hold more after them (SQLite's hidden rowid)."""
        keys = tuple(names)
        width = len(keys)
        return lambda values: dict(zip(keys, values[:width], strict=True))


class accelerated(pure):
    """The tricks, on CPython; each gives what the `pure` method of its name gives."""

    name = "accelerated"

    @staticmethod
    def json_writer(default: Callable[[Any], Any]) -> Callable[[Any], str]:
        # orjson (a C encoder) writes the same JSON; datetimes go to `default` as in json.
        # What it refuses (an int beyond 64 bits, a key that is not a str, a lone surrogate,
        # a type `default` does not know) is written, or refused, by json itself
        try:
            import orjson
        except ImportError:  # pragma: no cover - a dependency; PyPy without a wheel
            return pure.json_writer(default)
        dumps, options = orjson.dumps, orjson.OPT_PASSTHROUGH_DATETIME
        fallback = pure.json_writer(default)

        def write(value: Any) -> str:
            try:
                return dumps(value, default, options).decode()
            except TypeError:
                return fallback(value)

        return write

    @staticmethod
    def json_scanner(object_hook: Callable[[dict[str, Any]], Any] | None) -> Scanner:
        scanner: Scanner = json.scanner.make_scanner(json.JSONDecoder(object_hook=object_hook))  # type: ignore[arg-type]
        return scanner

    # made as drafts of their class's layout whose class is then switched
    # (`rowcast._drafts`): the very objects the constructors make, at half their cost
    uuid_from_bytes = staticmethod(_drafts.uuid_from_bytes)
    recorded_events = staticmethod(_drafts.recorded_events)
    snapshot_writes = staticmethod(_drafts.snapshot_writes)

    @staticmethod
    def slot_setters(cls: type) -> tuple[Setter, ...]:
        # the slots' own descriptors: a frozen dataclass's __init__ without its look-ups
        return tuple(vars(cls)[field.name].__set__ for field in dataclasses.fields(cls))

    @staticmethod
    def warn_outside(message: str, category: type[Warning], prefixes: tuple[str, ...]) -> None:
        frame, level = sys._getframe(1), 2  # 2: the caller
        while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(prefixes):
            frame, level = frame.f_back, level + 1
        del frame
        warnings.warn(message, category, stacklevel=level)

    @staticmethod
    def remember_last(
        compute: Callable[[Sequence[Sequence[Any]]], list[T]],
    ) -> Callable[[Sequence[Sequence[Any]]], list[T]]:
        # the same items in the same groups asked for in a row (sinks of one relay, each
        # in its own thread, given one batch): the last result, found by identity
        lock = threading.Lock()
        last: tuple[list[Any], list[int], list[T]] = ([], [], [])

        @functools.wraps(compute)
        def remembered(batch: Sequence[Sequence[Any]]) -> list[T]:
            nonlocal last
            items = [item for group in batch for item in group]
            sizes = [len(group) for group in batch]
            with lock:
                seen, seen_sizes, result = last
                if (
                    sizes == seen_sizes
                    and len(seen) == len(items)
                    and all(map(operator.is_, seen, items))
                ):
                    return result
                result = compute(batch)
                last = (items, sizes, result)
                return result

        return remembered

    @staticmethod
    def stream_adder(client: Any, maxlen: int | None, route: Route) -> StreamAdder:
        return _wire.Packed(client, maxlen, route)

    @staticmethod
    def jetstream_publisher(stream: str) -> JetStreamPublisher:
        return _wire.JetStreamByHand(stream)

    @staticmethod
    def jetstream_acks() -> JetStreamAcks:
        return _wire.AcksByHand()

    @staticmethod
    def amqp_publisher(channel: Any) -> AmqpPublisher:
        return _wire.AmqpByHand(channel)

    @staticmethod
    def gc_paused() -> contextlib.AbstractContextManager[None]:
        # the collector off inside: every few hundred containers made it walks the young
        # ones, now and then all (the chunks read ahead too), none garbage yet; after,
        # what was made is aged in one step, never left frozen (`rowcast._gc`). A chunk of
        # 10,000 PostgreSQL rows made into Changes: twice as fast; the aging, SQLite's
        # backfill a sixth faster again
        return _gc.PAUSE

    @staticmethod
    def snapshot_rows(
        cls: Callable[..., T],
        write: Any,
        rows: list[tuple[Any, ...]],
        names: tuple[str, ...],
        key: int | tuple[int, ...],
        skip: set[Any] | None,
        *at: Any,
    ) -> list[T]:
        # in C, each Change a copy of one made here, but for its pk and image: a seventh of
        # the constructor's cost, half the drafts' (the drafts where C was not built)
        if _C is None or not _drafts.slotted(cls) or type(rows) is not list:
            return _drafts.snapshot_rows(cls, write, rows, _row_maker(names), key, skip, *at)
        schema, table, ts, txid, position, source = at
        (template,) = _drafts.snapshot_writes(
            cls, write, schema, table, [(None, None)], ts, txid, position, source
        )
        slots = vars(cls)
        made: list[T] = _C.changes(template, rows, names, key, slots["pk"], slots["after"], skip)
        return made

    @staticmethod
    def row_maker(names: Sequence[str]) -> Callable[[Sequence[Any]], dict[str, Any]]:
        # ``lambda v: {"a": v[0], "b": v[1]}`` (the names as literals): 2.3x dict(zip())
        items = ", ".join(f"{name!r}: v[{i}]" for i, name in enumerate(names))
        made: Callable[[Sequence[Any]], dict[str, Any]] = eval(f"lambda v: {{{items}}}", {})
        return made


#: a dict display compiled once per column names (a chunk of a table asks again)
_row_maker = functools.lru_cache(maxsize=256)(accelerated.row_maker)


def _compiled() -> Any:
    """`rowcast._cspeedups` where it was built for this rowcast (None: the Python paths)."""
    if PURE:
        return None
    try:
        from . import _cspeedups
    except ImportError:  # not built: no C compiler where rowcast was installed
        return None
    if getattr(_cspeedups, "VERSION", None) != _C_VERSION:  # a build left from another version
        warnings.warn(
            f"rowcast._cspeedups ({_cspeedups.__file__}) was built for another version of "
            "rowcast and is not used: reinstall rowcast to build it again",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return _cspeedups


_C_VERSION: Final = 1  #: the C source's VERSION this module calls it with
_C = _compiled()
#: True when the C speedups are in use (built, of this version, ROWCAST_PURE unset)
compiled: Final = _C is not None

#: the namespace chosen at import: `pure` under ``ROWCAST_PURE=1``, else `accelerated`
active: type[pure] = pure if PURE else accelerated

json_writer = active.json_writer
json_scanner = active.json_scanner
uuid_from_bytes = active.uuid_from_bytes
recorded_events = active.recorded_events
slot_setters = active.slot_setters
warn_outside = active.warn_outside
remember_last = active.remember_last
stream_adder = active.stream_adder
jetstream_publisher = active.jetstream_publisher
jetstream_acks = active.jetstream_acks
amqp_publisher = active.amqp_publisher
gc_paused = active.gc_paused
snapshot_writes = active.snapshot_writes
snapshot_rows = active.snapshot_rows
row_maker = active.row_maker

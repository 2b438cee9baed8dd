"""An in-process broker (``memory://<name>``): consume relayed changes with no server.

The reference broker of `rowcast.consume`, as ``memory://`` is the reference event
store: a real broker with consumer groups, acknowledgements and redelivery, that
lives in this process's memory. A relay (or a test) publishes to it through the sink
``memory://<name>?mode=broker`` (`rowcast.sinks.memory.MemoryBrokerSink`; plain
``memory://`` is the in-memory event store, `rowcast.sinks.store.StoreSink`); a
`MemoryTransport` reads it back, from the URL ``memory://<name>`` (``?mode=broker``
is accepted too, so one URL serves both sides). Brokers are named per process:
`broker` returns the one of a name, made on first use; `remove_broker` forgets it.

What the broker promises (the contract of `rowcast.consume.base`, as a server keeps it):

* One log per name: every published message ``(id, body)`` in publish order, kept
  until the broker is removed (as a Redis stream without ``maxlen``). A message
  published twice is kept twice, with its id: the consumer skips the duplicate.
* A group is made by its first consumer's `connect` and starts at the log's first
  message (as ``XGROUP CREATE ... 0``), so a consumer may start after the relay.
  Each message goes to one connection of its group, in log order.
* A message stays held by the connection it went to until that connection
  acknowledges it (`ack`, or `dead_letter`) or gives it back (`release`). When the
  connection ends (closed, reset, or cut by `MemoryBroker.sever` / `stop`, as when
  a consumer process dies), what it held goes back to the group, ahead of what was
  never delivered and in log order (as RabbitMQ requeues). Nothing is redelivered on
  a timer: a connection that hangs keeps its messages.
* Parked messages are kept, with their error text, in `MemoryBroker.dead_letters`.
* `MemoryBroker.stop` takes the broker away as a server going down: every
  connection is dropped and every call (publish, connect...) raises
  `ConnectionRefusedError` (a `SinkError` at the sink and transport) until
  `MemoryBroker.start`. The messages stay.

The transport takes no options but ``mode=broker``.
"""

from __future__ import annotations

import heapq
import itertools
import re
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from .._url import masked, query
from ..errors import ConfigError, SinkError
from .transport import Delivery, decode

__all__ = [
    "DeadLetter",
    "MemoryBroker",
    "MemoryTransport",
    "Message",
    "broker",
    "broker_name",
    "remove_broker",
]

_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


class Message(NamedTuple):
    """A published message: the change id and ``Change.to_json()``."""

    id: str
    body: str


class DeadLetter(NamedTuple):
    """A parked message, with the consumer group that parked it and why."""

    id: str
    body: str
    group: str
    error: str


class _Group:
    __slots__ = ("held", "next", "returned")

    def __init__(self) -> None:
        self.next = 0  # the offset of the first message never delivered to the group
        self.returned: list[int] = []  # a heap of offsets given back, before `next`
        self.held: dict[int, int] = {}  # offset -> the connection holding it


class MemoryBroker:
    """One named in-process broker (see the module docstring); safe from any thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._ready = threading.Condition(threading.Lock())
        self._log: list[Message] = []
        self._dead: list[DeadLetter] = []
        self._groups: dict[str, _Group] = {}
        self._connections: dict[int, str] = {}  # open connection -> its group
        self._ids = itertools.count(1)
        self._running = True

    def __repr__(self) -> str:
        state = "" if self._running else " stopped"
        return f"<MemoryBroker {self.name!r}{state}>"

    # ------------------------------------------------------------ publishing and reading

    def publish(self, messages: Iterable[tuple[str, str]]) -> None:
        """Append `messages` (``(id, body)``) to the log, in order."""
        with self._ready:
            self._check_running()
            self._log.extend(Message(*message) for message in messages)
            self._ready.notify_all()

    def messages(self) -> list[Message]:
        """Every message published, in order."""
        with self._ready:
            return list(self._log)

    def dead_letters(self, group: str | None = None) -> list[DeadLetter]:
        """The parked messages (of `group`, or of every group), in the order parked."""
        with self._ready:
            return [d for d in self._dead if group is None or d.group == group]

    # ------------------------------------------------------------ outages

    def stop(self) -> None:
        """Go down: drop every connection; calls raise `ConnectionRefusedError` until `start`."""
        with self._ready:
            self._running = False
            self._drop(list(self._connections))
            self._ready.notify_all()

    def start(self) -> None:
        """Come back up after `stop` (the messages and groups were kept)."""
        with self._ready:
            self._running = True

    def sever(self, group: str | None = None) -> None:
        """Drop the connections (of `group`) as a broker does when their process dies.

        What they held goes back to their groups; their next call raises
        `ConnectionResetError`.
        """
        with self._ready:
            self._drop([c for c, g in self._connections.items() if group in (None, g)])
            self._ready.notify_all()

    # ------------------------------------------------------------ a consumer's connection

    def connect(self, group: str) -> int:
        """Open a connection reading as `group` (made on first use, from the first message)."""
        with self._ready:
            self._check_running()
            self._groups.setdefault(group, _Group())
            connection = next(self._ids)
            self._connections[connection] = group
            return connection

    def disconnect(self, connection: int) -> None:
        """Close `connection`: what it held goes back to its group. Idempotent."""
        with self._ready:
            self._drop([connection] if connection in self._connections else [])
            self._ready.notify_all()

    def fetch(self, connection: int, limit: int, timeout: float) -> list[tuple[int, Message]]:
        """Up to `limit` messages for `connection`, as ``(offset, message)``.

        Waits at most `timeout` seconds for the first one.
        """
        deadline = time.monotonic() + timeout
        with self._ready:
            group = self._group_of(connection)
            while not group.returned and group.next >= len(self._log):
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._ready.wait(left)
                group = self._group_of(connection)  # dropped meanwhile: raises
            returned = min(limit, len(group.returned))
            offsets = [heapq.heappop(group.returned) for _ in range(returned)]
            end = min(len(self._log), group.next + limit - len(offsets))
            offsets.extend(range(group.next, end))
            group.next = max(group.next, end)
            for offset in offsets:
                group.held[offset] = connection
            return [(offset, self._log[offset]) for offset in offsets]

    def ack(self, connection: int, offsets: Iterable[int]) -> None:
        """Settle the messages at `offsets` that `connection` holds."""
        with self._ready:
            held = self._group_of(connection).held
            for offset in offsets:
                if held.get(offset) == connection:
                    del held[offset]

    def release(self, connection: int, offsets: Iterable[int]) -> None:
        """Give back the messages at `offsets` that `connection` holds, for redelivery."""
        with self._ready:
            group = self._group_of(connection)
            for offset in offsets:
                if group.held.get(offset) == connection:
                    del group.held[offset]
                    heapq.heappush(group.returned, offset)
            self._ready.notify_all()

    def dead_letter(self, connection: int, parked: Iterable[tuple[int, str]]) -> None:
        """Keep each ``(offset, error)`` message in the dead letters, then settle it."""
        with self._ready:
            group_name = self._connections.get(connection)
            group = self._group_of(connection)
            assert group_name is not None
            for offset, error in parked:
                message = self._log[offset]
                self._dead.append(DeadLetter(message.id, message.body, group_name, error))
                if group.held.get(offset) == connection:
                    del group.held[offset]

    # ------------------------------------------------------------ inside the lock

    def _check_running(self) -> None:
        if not self._running:
            raise ConnectionRefusedError(f"the memory broker {self.name!r} is stopped")

    def _group_of(self, connection: int) -> _Group:
        self._check_running()
        group = self._connections.get(connection)
        if group is None:
            raise ConnectionResetError(f"connection {connection} to {self.name!r} was dropped")
        return self._groups[group]

    def _drop(self, connections: Sequence[int]) -> None:
        for connection in connections:
            group = self._groups[self._connections.pop(connection)]
            mine = [offset for offset, holder in group.held.items() if holder == connection]
            for offset in mine:
                del group.held[offset]
                heapq.heappush(group.returned, offset)


_brokers: dict[str, MemoryBroker] = {}
_brokers_lock = threading.Lock()


def broker(name: str) -> MemoryBroker:
    """The broker called `name` in this process, made on first use."""
    with _brokers_lock:
        found = _brokers.get(name)
        if found is None:
            found = _brokers[name] = MemoryBroker(name)
        return found


def remove_broker(name: str) -> None:
    """Forget the broker called `name` (its messages go with it); idempotent."""
    with _brokers_lock:
        _brokers.pop(name, None)


def broker_name(url: str, what: str) -> str:
    """The broker name of ``memory://<name>[?mode=broker]``; `what` names the caller in errors."""
    options, _, _ = query(url, what, ("memory",), ("mode",))
    if options.get("mode", "broker") != "broker":
        raise ConfigError(f"{masked(url)}: {what} takes mode=broker, not {options['mode']!r}")
    parts = urlsplit(url)
    if parts.path not in ("", "/") or not _NAME.fullmatch(parts.netloc):
        raise ConfigError(
            f"{masked(url)}: {what} names its broker: memory://<name>, "
            "the name of letters, digits, '_', '.' or '-'"
        )
    return parts.netloc


class MemoryTransport:
    """The in-process broker's side of a `rowcast.consume.Consumer` (module docstring)."""

    def __init__(self, url: str, *, group: str = "rowcast", create: bool | None = None) -> None:
        self.url = masked(url)
        self.name = broker_name(url, "the memory consumer")
        self.group = group
        self._broker: MemoryBroker | None = None
        self._connection: int | None = None  # also the deliveries' generation

    def __repr__(self) -> str:
        return f"<MemoryTransport {self.url!r} group={self.group!r}>"

    # ------------------------------------------------------------ Transport

    def connect(self) -> None:
        self._connect()

    def fetch(self, limit: int, timeout: float) -> list[Delivery]:
        connection, found = self._connect()
        taken = self._call(found.fetch, connection, limit, timeout)
        return [
            decode(message.id, message.body, (offset, message), connection)
            for offset, message in taken
        ]

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        if self._broker is not None and self._connection is not None:
            offsets = self._mine(deliveries)
            if offsets:
                self._call(self._broker.ack, self._connection, offsets)

    def dead_letter(self, parked: Sequence[tuple[Delivery, str]]) -> None:
        connection, found = self._connect()
        records = [(delivery.token[0], error) for delivery, error in parked]
        self._call(found.dead_letter, connection, records)

    def release(self, deliveries: Sequence[Delivery]) -> None:
        if self._broker is not None and self._connection is not None:
            offsets = self._mine(deliveries)
            if offsets:
                self._call(self._broker.release, self._connection, offsets)

    def reset(self) -> None:
        self.close()

    def close(self) -> None:
        found, connection = self._broker, self._connection
        self._broker = self._connection = None
        if found is not None and connection is not None:
            found.disconnect(connection)  # also when the broker is stopped: nothing to lose

    # ------------------------------------------------------------ the work

    def _connect(self) -> tuple[int, MemoryBroker]:
        if self._broker is None or self._connection is None:
            found = broker(self.name)
            try:
                self._connection = found.connect(self.group)
            except ConnectionError as e:
                raise SinkError(f"memory consumer {self.url}: cannot reach the broker: {e}") from e
            self._broker = found
        return self._connection, self._broker

    def _mine(self, deliveries: Sequence[Delivery]) -> list[int]:
        """The offsets of `deliveries` of this connection (an older one's went back)."""
        return [d.token[0] for d in deliveries if d.generation == self._connection]

    def _call(self, method: Any, *args: Any) -> Any:
        try:
            return method(*args)
        except ConnectionError as e:
            raise SinkError(f"memory consumer {self.url}, group {self.group!r}: {e}") from e

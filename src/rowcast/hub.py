"""The Hub: in-process fan-out of Changes over blinker signals.

For every change of a published transaction, in order, the Hub sends these
signals (each only if it has receivers):

===================  ==================  =====================================
signal name          example             sender
===================  ==================  =====================================
``<action>``         ``"write"``         the Change's pk
``<action>@<schema>`` ``"write@db"``     the Change's pk (only with a schema)
``<topic>``          ``"write@db.test"`` the Change's pk (`Change.topic`)
``<table>_<action>`` ``"test_write"``    the Change's pk (meepo's naming)
===================  ==================  =====================================

each with the keyword argument ``change``; then ``"commit"`` once for the
transaction, with ``changes=[...]`` and the Hub as sender. A change whose
schema is None has neither a schema- nor a table-level signal (``"write@x"``
always means schema ``x``): reach it with ``connect(fn, table="x")``, its
action or its meepo name.

A receiver that raises never stops the publisher nor the other receivers:
the error is logged on the ``rowcast.hub`` logger, counted in `Hub.errors`
and handed to `Hub.on_error` when one is set. A signal muted with blinker's
``signal.muted()`` sends nothing while muted.

Async receivers (``async def``) are awaited by `Hub.publish_async`; `Hub.publish`
cannot await them, so it counts each one it meets as a failed receiver (with a
`ConfigError` that says to use ``publish_async``) and goes on.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from blinker import ANY, NamedSignal, Namespace

from .change import Action, Change
from .errors import ConfigError

__all__ = ["ErrorHandler", "Hub", "Receiver"]

log = logging.getLogger("rowcast.hub")

Receiver = Callable[[Change], Any]
ErrorHandler = Callable[[BaseException, Change | None, Callable[..., Any]], Any]
F = TypeVar("F", bound=Receiver)

_ACTIONS = tuple(a.value for a in Action)


def _signal_names(change: Change) -> tuple[str, ...]:
    """The signals one change is sent on, in order."""
    action = change.action.value
    if change.schema:
        return (
            action,
            f"{action}@{change.schema}",
            f"{action}@{change.schema}.{change.table}",
            f"{change.table}_{action}",
        )
    return (action, f"{change.table}_{action}")


class Hub:
    """Publishes transactions of Changes to subscribers, in commit order.

    ``connect(fn)`` (or ``@hub.on()``) calls ``fn(change)`` once for every
    change; ``action``, ``schema`` and ``table`` narrow it down. ``table`` may
    be ``"schema.table"``. Receivers are held strongly (a lambda stays
    connected until `disconnect`). For the raw blinker signals, see `signal`.
    """

    def __init__(self, on_error: ErrorHandler | None = None) -> None:
        self._ns = Namespace()
        self._signals: dict[str, NamedSignal] = {}
        self._wrappers: dict[Receiver, list[tuple[NamedSignal, Callable[..., Any]]]] = {}
        # per (action, schema, table): the existing signals a change is sent on
        self._routes: dict[tuple[Action, str | None, str], tuple[NamedSignal, ...]] = {}
        # per signal that only `connect`'s receivers ever joined (for any sender): them, in
        # the order they connected, called without blinker's per-sender look-up; a signal
        # that another receiver joined or left (blinker's own events tell) is `_foreign`
        self._fast: dict[NamedSignal, tuple[Callable[..., Any], ...]] = {}
        self._live: dict[Callable[..., Any], list[bool]] = {}  # a receiver: [not disconnected]
        self._foreign: set[NamedSignal] = set()
        self._lock = threading.Lock()
        self._local = threading.local()  # transactions published from inside a receiver
        self.on_error: ErrorHandler | None = on_error
        self.errors = 0

    # -------------------------------------------------------------- subscribing

    def signal(self, name: str) -> NamedSignal:
        """The blinker signal called `name`; receivers get ``(sender, change=...)``."""
        sig = self._signals.get(name)
        if sig is None:
            with self._lock:
                sig = self._signals.get(name)
                if sig is None:
                    sig = self._ns.signal(name)
                    sig.receiver_connected.connect(self._joined, weak=False)
                    sig.receiver_disconnected.connect(self._left, weak=False)
                    self._signals[name] = sig
                self._routes = {}  # a route may now include this signal
        return sig

    def _joined(self, sig: NamedSignal, receiver: Any, sender: Any, **_: Any) -> None:
        """blinker's event: `receiver` was connected to `sig` (for `sender`)."""
        if getattr(self._local, "binding", None) is not receiver or sender is not ANY:
            self._foreign.add(sig)  # not by `connect`
        self._fast = {}

    def _left(self, sig: NamedSignal, receiver: Any, **_: Any) -> None:
        """blinker's event: `receiver` was disconnected from `sig`."""
        if getattr(self._local, "binding", None) is not receiver:
            self._foreign.add(sig)  # not by `disconnect`
        self._fast = {}

    def _bind(self, sig: NamedSignal, receiver: Callable[..., Any], connect: bool) -> None:
        """Connect (or disconnect) one of `connect`'s receivers, telling `_joined` (`_left`)
        that it is the Hub's doing."""
        self._local.binding = receiver
        try:
            if connect:
                sig.connect(receiver, sender=ANY, weak=False)
            else:
                sig.disconnect(receiver)
        finally:
            self._local.binding = None

    def _receivers(self, sig: NamedSignal, sender: Any) -> Iterable[Callable[..., Any]]:
        """Who `sig` sent by `sender` reaches: `connect`'s receivers of a signal no other
        joined, else blinker's ``receivers_for`` (which looks up the sender each time)."""
        fast = self._fast
        found = fast.get(sig)
        if found is not None:
            return found
        if sig in self._foreign:
            return sig.receivers_for(sender)
        with self._lock:
            bound = [r for pairs in self._wrappers.values() for s, r in pairs if s is sig]
        found = fast[sig] = tuple(bound)
        return found

    def connect(
        self,
        fn: F,
        action: Action | str | None = None,
        schema: str | None = None,
        table: str | None = None,
    ) -> F:
        """Call ``fn(change)`` for every published change that matches the filters."""
        if not callable(fn):
            raise TypeError(f"Hub.connect needs a callable, not {fn!r}")
        if table is not None and "." in table:
            if schema is not None:
                raise ConfigError(f"table={table!r} already names a schema; drop schema={schema!r}")
            schema, table = table.split(".", 1)
        if action is not None and action not in _ACTIONS:
            raise ConfigError(f"{action!r} is not a valid Action: use one of {', '.join(_ACTIONS)}")
        actions = _ACTIONS if action is None else (Action(action).value,)
        check: Callable[[Change], bool] | None = None
        if table is not None and schema is not None:
            names = [f"{a}@{schema}.{table}" for a in actions]
        elif schema is not None:
            names = [f"{a}@{schema}" for a in actions]
        elif table is not None:
            names = list(actions)
            wanted = table

            def check(change: Change) -> bool:
                return change.table == wanted
        else:
            names = list(actions)

        receiver: Callable[..., Any]
        live = [True]  # False once disconnected: never called after, even from a tuple held
        if inspect.iscoroutinefunction(fn):

            async def receiver(sender: Any, change: Change, **_: Any) -> None:
                if live[0] and (check is None or check(change)):
                    await fn(change)
        else:

            def receiver(sender: Any, change: Change, **_: Any) -> None:
                if live[0] and (check is None or check(change)):
                    fn(change)

        receiver.__wrapped__ = fn  # type: ignore[union-attr]
        with self._lock:
            bound = self._wrappers.setdefault(fn, [])
            self._live[receiver] = live
        for name in names:
            sig = self.signal(name)
            self._bind(sig, receiver, connect=True)
            with self._lock:
                bound.append((sig, receiver))
            self._fast = {}
        return fn

    def on(
        self,
        action: Action | str | None = None,
        schema: str | None = None,
        table: str | None = None,
    ) -> Callable[[F], F]:
        """Decorator form of `connect`."""

        def decorate(fn: F) -> F:
            return self.connect(fn, action=action, schema=schema, table=table)

        return decorate

    def disconnect(self, fn: Receiver) -> None:
        """Stop calling `fn` (every subscription it was connected with)."""
        with self._lock:
            bound = self._wrappers.pop(fn, [])
            for _, receiver in bound:
                live = self._live.pop(receiver, None)
                if live is not None:
                    live[0] = False
        for sig, receiver in bound:
            self._bind(sig, receiver, connect=False)
        self._fast = {}

    # -------------------------------------------------------------- publishing

    def publish(self, changes: Sequence[Change]) -> None:
        """Send one committed transaction to every matching receiver, in order.

        A transaction published by a receiver (say it commits another captured
        session) waits until the current one has reached every receiver, so
        each thread sees whole transactions in commit order. An async receiver
        cannot be awaited here: it counts as failed (see `publish_async`).
        """
        for sig, sender, change, kw in self._deliveries(changes):
            for receiver in self._receivers(sig, sender):
                try:
                    result = receiver(sender, **kw)
                    if result is not None and inspect.isawaitable(result):  # None: most
                        _discard(result)
                        raise ConfigError(
                            f"{_name(receiver)} is an async receiver: Hub.publish cannot await "
                            "it; publish with `await hub.publish_async(changes)`"
                        )
                except Exception as error:
                    self._failed(error, change, receiver)

    async def publish_async(self, changes: Sequence[Change]) -> None:
        """`publish`, awaiting async receivers (``async def``) one after another.

        Receivers are still called in order, one at a time: a change reaches the
        next receiver once the previous one has returned (or its coroutine ended).
        """
        for sig, sender, change, kw in self._deliveries(changes):
            for receiver in self._receivers(sig, sender):
                try:
                    result = receiver(sender, **kw)
                    if inspect.isawaitable(result):
                        await result
                except Exception as error:
                    self._failed(error, change, receiver)

    def _deliveries(
        self, changes: Sequence[Change]
    ) -> Iterator[tuple[NamedSignal, Any, Change | None, dict[str, Any]]]:
        """(signal, sender, change, kwargs) to send, transaction after transaction.

        Transactions published meanwhile from this thread (by a receiver) are
        queued and come after the current one.
        """
        if not changes:
            return
        queue: list[Sequence[Change]] | None = getattr(self._local, "queue", None)
        if queue is not None:
            queue.append(changes)
            return
        queue = self._local.queue = [changes]
        try:
            while queue:
                yield from self._transaction(queue.pop(0))
        finally:
            self._local.queue = None

    def _transaction(
        self, changes: Sequence[Change]
    ) -> Iterator[tuple[NamedSignal, Any, Change | None, dict[str, Any]]]:
        routes = self._routes
        for change in changes:
            key = (change.action, change.schema, change.table)
            route = routes.get(key)
            if route is None:
                found = (self._signals.get(name) for name in _signal_names(change))
                route = routes[key] = tuple(sig for sig in found if sig is not None)
            for sig in route:
                if sig.receivers and not sig.is_muted:
                    yield sig, change.pk, change, {"change": change}
        commit = self._signals.get("commit")
        if commit is not None and commit.receivers and not commit.is_muted:
            yield commit, self, None, {"changes": list(changes)}

    def _failed(
        self, error: Exception, change: Change | None, receiver: Callable[..., Any]
    ) -> None:
        with self._lock:
            self.errors += 1
        fn = getattr(receiver, "__wrapped__", receiver)
        what = change.topic if change is not None else "commit"
        log.error("rowcast receiver %r failed on %s", fn, what, exc_info=error)
        if self.on_error is not None:
            try:
                self.on_error(error, change, fn)
            except Exception:
                log.exception("rowcast Hub.on_error handler failed")


def _name(receiver: Callable[..., Any]) -> str:
    fn = getattr(receiver, "__wrapped__", receiver)
    return getattr(fn, "__qualname__", None) or repr(fn)


def _discard(awaitable: Any) -> None:
    """Close a coroutine that will never be awaited (no 'never awaited' warning)."""
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()

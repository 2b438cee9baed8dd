"""What `subscribe` promises: a named, resumable position, handled at least once."""

from __future__ import annotations

import signal
import threading
from typing import Any

import pytest

from rowcast.errors import ConfigError, StoreError
from rowcast.store import RecordedEvent, Subscription

from ._base import WAIT, Background, StoreContractBase, events


class _Boom(Exception):
    pass


class SubscriptionTests(StoreContractBase):
    """Subscriptions: run_pending, run, stop, and resuming where the last one stopped."""

    def test_run_pending_handles_everything_in_order_and_keeps_the_position(self) -> None:
        stream, name = self.stream(), self.subscription()
        self.store.append(stream, events(3))
        seen: list[RecordedEvent] = []
        subscription = self.store.subscribe(name, seen.append, stream)
        assert isinstance(subscription, Subscription)
        assert (subscription.name, subscription.stream, subscription.position) == (name, stream, 0)
        assert subscription.run_pending() == 3
        assert seen == list(self.store.read(stream))
        assert subscription.position == 3
        assert subscription.run_pending() == 0
        self.store.append(stream, events(2, start=3))
        assert subscription.run_pending() == 2
        assert [e.version for e in seen] == [1, 2, 3, 4, 5]
        assert subscription.position == 5

    def test_subscribing_again_resumes_after_the_last_event_handled(self) -> None:
        stream, name = self.stream(), self.subscription()
        self.store.append(stream, events(3))
        handled: list[RecordedEvent] = []
        assert self.store.subscribe(name, handled.append, stream).run_pending() == 3
        seen: list[int] = []
        again = self.store.subscribe(name, lambda e: seen.append(e.version), stream)
        assert again.position == 3
        self.store.append(stream, events(2, start=3))
        assert again.run_pending() == 2
        assert seen == [4, 5]

    def test_a_subscription_resumes_in_a_new_store_object(self) -> None:
        self.require_shared_url()
        stream, name = self.stream(), self.subscription()
        first = self.open_store()
        first.append(stream, events(3))
        seen: list[int] = []
        assert first.subscribe(name, lambda e: seen.append(e.data["n"]), stream).run_pending() == 3
        first.close()  # a restart
        store = self.open_store()
        store.append(stream, events(2, start=3))
        subscription = store.subscribe(name, lambda e: seen.append(e.data["n"]), stream)
        assert subscription.position == 3
        assert subscription.run_pending() == 2
        assert seen == [0, 1, 2, 3, 4]

    def test_an_at_all_subscription_keeps_a_global_position(self) -> None:
        a, b, name = self.stream(), self.stream(), self.subscription()
        self.store.append(a, events(1))
        last = self.store.append(b, events(2))
        seen: list[tuple[str, int]] = []
        subscription = self.store.subscribe(name, lambda e: seen.append((e.stream, e.version)))
        assert subscription.stream == "@all"
        subscription.run_pending()
        assert [s for s in seen if s[0] in (a, b)] == [(a, 1), (b, 1), (b, 2)]
        assert subscription.position == last.position
        later = self.store.append(a, events(1))
        assert subscription.run_pending() == 1
        assert seen[-1] == (a, 2)
        assert self.store.subscribe(name, print, "@all").position == later.position

    def test_a_handler_that_raises_stops_and_its_event_comes_again(self) -> None:
        stream, name = self.stream(), self.subscription()
        self.store.append(stream, events(3))
        calls: list[int] = []
        failing = {2}

        def handler(event: RecordedEvent) -> None:
            calls.append(event.version)
            if event.version in failing:
                raise _Boom(event.version)

        subscription = self.store.subscribe(name, handler, stream)
        with pytest.raises(_Boom):
            subscription.run_pending()
        assert calls == [1, 2]
        assert subscription.position == 1
        with pytest.raises(_Boom):
            subscription.run()  # run() stops the same way
        assert calls == [1, 2, 2]
        again = self.store.subscribe(name, handler, stream)
        assert again.position == 1
        failing.clear()
        assert again.run_pending() == 2
        assert calls == [1, 2, 2, 2, 3]
        assert again.position == 3

    def test_a_name_follows_one_stream(self) -> None:
        stream, name = self.stream(), self.subscription()
        self.store.subscribe(name, print, stream)
        with pytest.raises(ConfigError, match=name):
            self.store.subscribe(name, print, self.stream())
        with pytest.raises(ConfigError, match="another name"):
            self.store.subscribe(name, print)  # "@all"
        assert self.store.subscribe(name, print, stream).position == 0

    @pytest.mark.parametrize(
        ("args", "error"),
        [
            (("", print), ConfigError),
            ((1, print), TypeError),
            (("name", None), TypeError),
            (("name", print, "@mine"), ConfigError),
            (("name", print, 1), TypeError),
        ],
    )
    def test_bad_subscribe_arguments(self, args: tuple[Any, ...], error: type[Exception]) -> None:
        with pytest.raises(error):
            self.store.subscribe(*args)

    def test_run_catches_up_then_handles_live_events_until_stop(self) -> None:
        stream, name = self.stream(), self.subscription()
        self.store.append(stream, events(2))
        seen: list[int] = []
        five = threading.Event()

        def handler(event: RecordedEvent) -> None:
            seen.append(event.version)
            if len(seen) == 5:
                five.set()

        subscription = self.store.subscribe(name, handler, stream)
        running = Background(subscription.run)
        for n in range(3):
            self.store.append(stream, events(1, start=2 + n))
        assert five.wait(WAIT)
        assert running.blocked(0.05)
        subscription.stop()
        running.result()
        assert seen == [1, 2, 3, 4, 5]
        assert subscription.position == 5
        assert self.store.subscribe(name, handler, stream).position == 5

    def test_stop_from_a_handler_and_a_stopped_subscription(self) -> None:
        stream, name = self.stream(), self.subscription()
        self.store.append(stream, events(5))
        seen: list[int] = []

        def handler(event: RecordedEvent) -> None:
            seen.append(event.version)
            if event.version == 2:
                subscription.stop()

        subscription = self.store.subscribe(name, handler, stream)
        subscription.run()  # returns after the handler that stopped it
        assert seen == [1, 2]
        assert subscription.position == 2  # that event was handled
        subscription.run()
        assert subscription.run_pending() == 0
        assert seen == [1, 2]
        stopped_first = self.store.subscribe(name, handler, stream)
        stopped_first.stop()
        stopped_first.run()  # stop() before run() is kept
        assert seen == [1, 2]

    def test_closing_the_store_ends_a_running_subscription(self) -> None:
        store = self.open_store()
        stream = self.stream()
        store.append(stream, events(1))
        handled = threading.Event()
        subscription = store.subscribe(self.subscription(), lambda e: handled.set(), stream)
        running = Background(subscription.run)
        assert handled.wait(WAIT)
        store.close()
        running.result()
        assert subscription.position == 1
        with pytest.raises(StoreError, match="closed"):
            subscription.run_pending()

    @pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="POSIX signals")
    def test_stop_from_a_signal_handler(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            pytest.skip("signal handlers run in the main thread")
        stream = self.stream()
        self.store.append(stream, events(1))
        main = threading.main_thread().ident
        assert main is not None
        killer: list[Background] = []

        def handler(event: RecordedEvent) -> None:  # once blocked, run() gets a signal
            killer.append(Background(lambda: signal.pthread_kill(main, signal.SIGUSR1)))

        subscription = self.store.subscribe(self.subscription(), handler, stream)
        previous = signal.signal(signal.SIGUSR1, lambda *_: subscription.stop())
        try:
            subscription.run()
        finally:
            signal.signal(signal.SIGUSR1, previous)
        killer[0].result()
        assert subscription.position == 1

"""The signal handlers of the long-running commands (`rowcast.cli.common`): a signal that
lands while the main thread holds a lock its stop needs (as in `threading.Event.wait`,
where a relay or a source waits between polls) still stops it, never deadlocks."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest

from rowcast.cli.common import stop_on_signals, stop_on_sigterm
from tests.conftest import deadline


@pytest.fixture(autouse=True)
def handlers_kept() -> Iterator[None]:
    """The test process's own handlers, back after each test."""
    kept = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in kept.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize(
    ("handling", "signum"),
    [
        (stop_on_signals, signal.SIGINT),
        (stop_on_signals, signal.SIGTERM),
        (stop_on_sigterm, signal.SIGTERM),
    ],
)
def test_a_signal_while_the_main_thread_holds_the_stop_lock_stops_without_deadlock(
    handling: Callable[[Callable[[], None]], AbstractContextManager[None]], signum: int
) -> None:
    lock = threading.Lock()  # what Event.set needs, held by the main thread in Event.wait
    stopped = threading.Event()

    def stop() -> None:
        with lock:
            stopped.set()

    with deadline(3), handling(stop):  # was: the handler waited for the lock for ever
        with lock:
            signal.raise_signal(signum)
        assert stopped.wait(5)


def test_a_second_ctrl_c_is_not_a_keyboard_interrupt() -> None:
    stops = []
    with deadline(3), stop_on_signals(lambda: stops.append(1)):
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)  # was: KeyboardInterrupt
        threading.Event().wait(0.2)
    assert stops

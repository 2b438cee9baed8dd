"""A source run in a thread for the length of a ``with``: what the contracts share.

Private to `rowcast.testing` (`SourceContract.streaming`, `snapshot.running`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from rowcast.change import Change
from rowcast.hub import Hub
from rowcast.sources.base import LogSource

__all__ = ["run_in_thread"]


@contextlib.contextmanager
def run_in_thread(
    source: LogSource, take: Callable[[list[Change]], None], wait: float
) -> Iterator[None]:
    """Run ``source.run`` in a thread while inside, `take` called with each transaction it
    publishes (in that thread). On leaving: `stop`, the thread must end within `wait`
    seconds, and what `run` raised is raised here."""
    failed: list[BaseException] = []
    hub = Hub()
    hub.signal("commit").connect(lambda _sender, changes: take(changes), weak=False)

    def run() -> None:
        try:
            source.run(hub)
        except BaseException as error:  # raised in the test's thread below
            failed.append(error)

    thread = threading.Thread(target=run, name="source-contract", daemon=True)
    thread.start()
    try:
        yield
    finally:
        source.stop()
        thread.join(wait)
    assert not thread.is_alive(), f"run() went on for {wait:.0f} s after stop()"
    if failed:
        raise failed[0]

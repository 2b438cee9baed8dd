"""The Pipelines page: what ``rowcast status`` knows, sampled into an hour of history.

Relays and consumers write reports beside their checkpoints; `rowcast.status.gather`
reads them (the checkpoint stores given with ``--checkpoint``). `Sampler` does so
every `INTERVAL` seconds in a thread and keeps, per relay or consumer, the last hour
of (time, lag, rate) samples, from which the page draws its chart. The console
never asks a source for its head itself (``probe=False``): a report's URL is not
one the console was given, and the console connects only to what it was given.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from .._url import masked

__all__ = ["HOUR", "INTERVAL", "Chart", "Sampler", "chart"]

log = logging.getLogger("rowcast.ui")

INTERVAL: Final = 5.0  #: seconds between two readings of the reports
HOUR: Final = 3600.0


def _gather(urls: Sequence[str]) -> list[dict[str, Any]]:
    # rowcast status, lazily (it imports the sources); the ignore: until issue 21 lands
    from ..status import gather

    return list(gather(urls, probe=False))


class Sampler:
    """Reads the reports now and then, and keeps their last hour (module docstring)."""

    def __init__(self, urls: Sequence[str], interval: float = INTERVAL) -> None:
        self.urls = list(urls)
        self.interval = interval
        self.entries: list[dict[str, Any]] = []
        self.error: str | None = None
        self.read_at: float | None = None
        self._history: dict[str, deque[tuple[float, float | None, float | None]]] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.urls:
            self._thread = threading.Thread(target=self._run, name="rowcast-ui-status", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stopped.is_set():
            self.sample()
            self._stopped.wait(self.interval)

    def sample(self, now: float | None = None) -> None:
        """Read every report once now, and add it to the history."""
        now = time.time() if now is None else now
        try:
            entries = _gather(self.urls)
            error = None
        except Exception as exc:  # a store down: the page says so, the sampler goes on
            entries, error = [], f"cannot read the reports: {exc}"
            log.warning("pipelines: %s", error)
        with self._lock:
            self.entries = entries
            self.error = error
            self.read_at = now
            for entry in entries:
                key = _key(entry)
                samples = self._history.setdefault(key, deque())
                samples.append((now, _number(entry.get("lag_seconds")), _number(entry.get("rate"))))
                while samples and samples[0][0] < now - HOUR:
                    samples.popleft()

    def history(self, entry: dict[str, Any]) -> list[tuple[float, float | None, float | None]]:
        with self._lock:
            return list(self._history.get(_key(entry), ()))

    def snapshot(self) -> tuple[list[dict[str, Any]], str | None, float | None]:
        with self._lock:
            return list(self.entries), self.error, self.read_at

    @property
    def shown_urls(self) -> list[str]:
        return [masked(url) for url in self.urls]


def _key(entry: dict[str, Any]) -> str:
    return f"{entry.get('store')}|{entry.get('kind')}|{entry.get('name')}"


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


@dataclass
class Chart:
    """An SVG polyline chart of one series: what the template draws."""

    width: int
    height: int
    points: str  #: "x,y x,y ..." for <polyline points=...>
    top: float  #: the value at the top edge
    last: float | None


def chart(
    samples: Sequence[tuple[float, float | None, float | None]],
    series: int,
    now: float | None = None,
    width: int = 240,
    height: int = 48,
) -> Chart:
    """Series `series` (1: lag, 2: rate) of `samples` over the last hour, scaled to fit."""
    now = time.time() if now is None else now
    values = [(s[0], float(v)) for s in samples if (v := s[series]) is not None]
    top = max((v for _, v in values), default=0.0) or 1.0
    points = []
    for t, v in values:
        x = width * (1 - min(HOUR, max(0.0, now - t)) / HOUR)
        y = height - height * (v / top)
        points.append(f"{x:.1f},{y:.1f}")
    last = values[-1][1] if values else None
    return Chart(width, height, " ".join(points), top, last)

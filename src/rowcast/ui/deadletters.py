"""The Dead letters page's door to `rowcast.dlq` (what ``rowcast dlq`` uses).

The places are the ``--dead-letters`` URLs the console was started with, named by
their index: a consumer's broker (``redis://``, ``nats://``, ``amqp://``) or a
relay's ``--dead-letter`` event store, whose dead letters replay to the sink of
``--replay-to`` (a relay's dead letters have no way back of their own). Each call
opens the place, does one thing and closes it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from .._url import masked
from ..backends import scheme_of
from ..errors import ConfigError

__all__ = ["LIMIT", "DeadLetterPlaces", "Overview"]

LIMIT: Final = 200  #: dead letters listed at most per place
BROKERS: Final = ("redis", "rediss", "nats", "tls", "amqp", "amqps")
_T = TypeVar("_T")


@dataclass
class Overview:
    """One configured place: its URL (masked), where it keeps them, and the first ones."""

    index: int
    url: str
    places: list[Any]
    letters: list[Any]
    total: int
    error: str | None = None

    @property
    def more(self) -> bool:
        return self.total > len(self.letters)


class DeadLetterPlaces:
    """The configured dead-letter places (module docstring)."""

    def __init__(self, urls: Sequence[str], replay_to: str | None) -> None:
        self.urls = list(urls)
        self.replay_to = replay_to

    def shown(self, index: int) -> str:
        return masked(self._url(index))

    def _url(self, index: int) -> str:
        if not 0 <= index < len(self.urls):
            raise ConfigError(f"no dead-letter place {index}: the console has {len(self.urls)}")
        return self.urls[index]

    @contextmanager
    def _opened(self, index: int) -> Iterator[Any]:
        try:
            # the ignore: until rowcast dlq (issue 21) lands
            from ..dlq import open_dead_letters
        except ImportError as error:  # pragma: no cover - rowcast without dead letters
            raise ConfigError(f"this rowcast has no dead letters to show ({error})") from error
        letters = open_dead_letters(self._url(index))
        try:
            yield letters
        finally:
            letters.close()

    def _do(self, index: int, work: Callable[[Any], _T]) -> _T:
        with self._opened(index) as letters:
            return work(letters)

    def overview(self, index: int, limit: int = LIMIT) -> Overview:
        """What the place holds: its places, their count, the first `limit` letters."""
        try:

            def look(letters: Any) -> Overview:
                places = letters.places()
                total = sum(place.count for place in places)
                found = letters.read(limit) if total else []
                return Overview(index, self.shown(index), places, found, total)

            return self._do(index, look)
        except Exception as error:  # a broker down: the page says so, the others still show
            return Overview(index, self.shown(index), [], [], 0, str(error) or repr(error))

    def letter(self, index: int, handle: str) -> Any:
        """The dead letter `handle` of place `index` (among the first `LIMIT`), or None."""
        found = self._do(index, lambda letters: letters.read(LIMIT))
        return next((letter for letter in found if letter.handle == handle), None)

    def replays_to(self, index: int) -> str | None:
        """Where a replay sends them: None for a broker (back where they came from)."""
        if scheme_of(self._url(index)) in BROKERS:
            return None
        if not self.replay_to:
            raise ConfigError(
                "a relay's dead letters replay to a sink: start the console with "
                "--replay-to SINK_URL (the sink that refused them, once fixed)"
            )
        return masked(self.replay_to)

    def replay(self, index: int) -> int:
        """Send every dead letter of place `index` back; how many were sent."""
        broker = scheme_of(self._url(index)) in BROKERS
        if not broker:
            self.replays_to(index)  # the error when there is no --replay-to
        to = None if broker else self.replay_to
        return int(self._do(index, lambda letters: letters.replay(to) if to else letters.replay()))

    def drop(self, index: int) -> int:
        """Delete every dead letter of place `index`; how many were deleted."""
        return int(self._do(index, lambda letters: letters.drop()))

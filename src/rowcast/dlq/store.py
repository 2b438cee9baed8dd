"""A relay's dead letters: the event store of ``--dead-letter`` (``sqlite://``, ``postgresql://``).

Each change of a refused transaction is an event (stream ``<schema>.<table>-<pk>``,
its change id, ``Change(**event.data)`` rebuilds it) with the metadata
``{"dead_letter": reason}``: the sink that refused it, the error, its fix, when
(`rowcast.sinks.deadletter`). Opening creates nothing: a store that does not exist
is a `StoreError`. Replaying delivers the transactions, whole and in the order they
were kept, to the sink given (``--to``), after its check; they stay in the store.
"""

from __future__ import annotations

from typing import Any

from .._url import masked
from ..change import Change
from ..errors import ConfigError
from ..sinks.base import open_sink
from ..store import EventStore, RecordedEvent
from . import DeadLetter, Place

__all__ = ["StoreDeadLetters"]


def _reason(event: RecordedEvent) -> dict[str, Any] | None:
    reason = (event.metadata or {}).get("dead_letter")
    return reason if isinstance(reason, dict) else None


class StoreDeadLetters:
    """The dead letters in an event store (see the module docstring)."""

    def __init__(self, url: str, **options: Any) -> None:
        if options:
            raise ConfigError(f"a relay's dead letters take no options, not {sorted(options)}")
        self.url = masked(url)
        self._store = EventStore(url, create=False)

    def _events(self, limit: int | None = None) -> list[tuple[RecordedEvent, dict[str, Any]]]:
        found = []
        for event in self._store.read_all():
            reason = _reason(event)
            if reason is not None:
                found.append((event, reason))
                if limit is not None and len(found) >= limit:
                    break
        return found

    def places(self) -> list[Place]:
        events = self._events()
        if not events:
            return []
        times = [event.recorded_at for event, _ in events]
        return [Place(self.url, len(events), min(times), max(times))]

    def read(self, limit: int | None = None) -> list[DeadLetter]:
        return [_letter(event, reason) for event, reason in self._events(limit)]

    def replay(self, to: str | None = None) -> int:
        if not to:
            raise ConfigError(
                "a relay's dead letters go to a sink you name: --to SINK_URL (the sink that "
                "refused them, once fixed, or another)"
            )
        transactions: list[list[Change]] = []
        for event, _ in self._events():
            change = Change(**event.data)
            last = transactions[-1][-1] if transactions else None
            if last is not None and (last.txid, last.position) == (change.txid, change.position):
                transactions[-1].append(change)
            else:
                transactions.append([change])
        sink = open_sink(to)
        try:
            check = getattr(sink, "check", None)
            if check is not None:
                check()
            for transaction in transactions:
                sink.deliver([transaction])
        finally:
            sink.close()
        return sum(len(transaction) for transaction in transactions)

    def drop(self) -> int:
        events = self._events()
        for stream in sorted({event.stream for event, _ in events}):
            self._store.delete_stream(stream)
        return len(events)

    def close(self) -> None:
        self._store.close()


def _letter(event: RecordedEvent, reason: dict[str, Any]) -> DeadLetter:
    why = str(reason.get("error") or "")
    if reason.get("fix"):
        why = f"{why} (fix: {reason['fix']})"
    at = reason.get("at")
    return DeadLetter(
        place=event.stream,
        handle=str(event.position),
        at=float(at) if isinstance(at, int | float) else event.recorded_at,
        change_id=str(event.id),
        change=Change(**event.data),
        why=why,
        group=None,
        origin=reason.get("sink"),
    )

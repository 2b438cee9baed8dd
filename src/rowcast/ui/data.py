"""What the console reads from the event store, a page at a time, with no web in sight.

`StoreView` is the one door to the store: every query has a limit, and every
page is found by a key (a stream name, a version, a position), never by an
offset, so a page costs the same on the first screen and on the ten-thousandth,
in a store of ten events or of millions (``bench/ui.py`` times them).

Paging a stream backwards needs no more from the store than `EventStore.read`:
a stream's versions are gap-free, so "the 50 events before version V" is the
window of versions ``V-50 .. V-1``. The global order's positions may have gaps
(deleted streams), so there the window before a position widens until it holds
a page (`StoreView.before`).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final
from uuid import UUID

from ..store import ALL, EventStore, RecordedEvent, StreamInfo

__all__ = ["PAGE", "EventsPage", "StoreView", "jsonable", "pretty", "shown_time"]

PAGE: Final = 50  #: events or streams on one page
MAX_PAGE: Final = 500  #: the most a request may ask for


def jsonable(value: Any) -> Any:
    """`value` with what JSON lacks (Decimal, datetime, bytes, UUID, sets) as text."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((jsonable(v) for v in value), key=repr)
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return "0x" + bytes(value).hex()
    return repr(value)


def pretty(value: Any) -> str:
    """`value` as indented JSON for a page."""
    return json.dumps(jsonable(value), indent=2, ensure_ascii=False, sort_keys=False)


def shown_time(epoch: float | None) -> str:
    """UTC epoch seconds as ``2026-01-05 09:30:00.250Z`` ("" for None)."""
    if epoch is None:
        return ""
    moment = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class EventsPage:
    """A page of a stream's events, in the order shown, with the keys of its neighbours."""

    stream: str
    newest_first: bool
    events: list[RecordedEvent]
    last: int  #: the stream's version (the store's last position for @all)
    #: the key of the page before / after this one in the order shown (None: none)
    previous: dict[str, int] | None = None
    next: dict[str, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _key(event: RecordedEvent, stream: str) -> int:
    return event.position if stream == ALL else event.version


class StoreView:
    """Pages of the store for the console (see the module docstring)."""

    def __init__(self, store: EventStore, page: int = PAGE) -> None:
        self.store = store
        self.page = page

    def head(self) -> int:
        """The position of the store's last event (0 when empty)."""
        return self.store.stream_version(ALL)

    def streams(
        self, prefix: str = "", after: str | None = None, limit: int | None = None
    ) -> tuple[list[StreamInfo], str | None]:
        """A page of streams by name, and the `after` of the next page (None: the last)."""
        size = min(limit or self.page, MAX_PAGE)
        found = self.store.list_streams(prefix, after, size + 1)
        if len(found) > size:
            return found[:size], found[size - 1].stream
        return found, None

    def recent(self, count: int = 20, scan: int = 1000) -> list[RecordedEvent]:
        """The last event of each of the `count` streams written last (of the last `scan`)."""
        seen: dict[str, RecordedEvent] = {}
        for window in (min(scan, count * 5), scan):  # mostly, the first few are enough
            seen.clear()
            for event in self.store.read_all(limit=window, backwards=True):
                seen.setdefault(event.stream, event)
                if len(seen) >= count:
                    return list(seen.values())
        return list(seen.values())

    def event(self, stream: str, version: int) -> RecordedEvent | None:
        """The event at `version` of `stream` (a position for @all), or None."""
        if version < 1:
            return None
        found = list(self.store.read(stream, after=version - 1, limit=1))
        return found[0] if found and _key(found[0], stream) == version else None

    def before(self, stream: str, before: int, count: int) -> list[RecordedEvent]:
        """The last `count` events whose key is below `before`, oldest first."""
        if before <= 1 or count <= 0:
            return []
        if stream != ALL:  # versions are gap-free: the window holds the page exactly
            low = max(0, before - 1 - count)
            return list(self.store.read(stream, after=low, limit=before - 1 - low))
        width = count
        while True:  # positions may have gaps: widen the window until it holds a page
            low = max(0, before - 1 - width)
            found = [e for e in self.store.read_all(after=low, limit=width) if e.position < before]
            if len(found) >= count or low == 0:
                return found[-count:]
            width *= 4

    def events(
        self,
        stream: str,
        *,
        newest_first: bool = True,
        before: int | None = None,
        after: int | None = None,
        limit: int | None = None,
    ) -> EventsPage:
        """A page of `stream` (or @all) in the order asked, from the key given.

        Newest first: the events below `before` (default: from the last one), or just
        above `after` when going back towards the newest. Oldest first: the events
        above `after` (default: from the first), or just below `before` when going back.
        """
        size = min(limit or self.page, MAX_PAGE)
        last = self.store.stream_version(stream)
        if newest_first:
            if after is not None:
                shown = list(self.store.read(stream, after=after, limit=size))[::-1]
            else:
                shown = self.before(stream, (last + 1) if before is None else before, size)[::-1]
        elif before is not None:
            shown = self.before(stream, before, size)
        else:
            shown = list(self.store.read(stream, after=after or 0, limit=size))
        page = EventsPage(stream, newest_first, shown, last)
        if not shown:
            return page
        top, bottom = _key(shown[0], stream), _key(shown[-1], stream)
        oldest = next(iter(self.store.read_all(limit=1)), None) if stream == ALL else None
        first = oldest.position if oldest is not None else 1
        if newest_first:
            if top < last:
                page.previous = {"after": top}
            if bottom > first:
                page.next = {"before": bottom}
        else:
            if top > first:
                page.previous = {"before": top}
            if bottom < last:
                page.next = {"after": bottom}
        return page

"""`StoreSink`: relayed changes appended to an event store, each exactly once.

``--to sqlite:///events.db`` (or any URL `rowcast.EventStore` opens). Each change
becomes one event:

* stream ``"<schema>.<table>-<pk>"`` (`stream_name`): one stream per row, so a
  row's history reads in commit order with ``store.read(stream)``;
* type ``Change.name`` (``"orders_update"``);
* data: the change's fields (``action``, ``schema``, ``table``, ``pk``,
  ``before``, ``after``, ``ts``, ``txid``, ``position``, ``source``, and
  ``snapshot: True`` for a row an initial snapshot read) as Python values, which
  the store's codec keeps (Decimal, datetime, bytes...), so ``Change(**event.data)``
  rebuilds the change;
* id: `change_id`, the change's deterministic id.

Ids and bodies are the ones every sink of a relay shares (`rowcast.sinks.base.encoded`):
a change's data is stored as its body's JSON, which is what the codec writes for the
fields above (but for a composite key, written from the fields).

A batch is appended with `EventStore.append_streams` (SQLite: one commit for the
whole batch), each stream's events in commit order; when that finds ids stored
already, one stream at a time. Re-delivering a change is a
no-op: the store recognises an append whose ids are already stored in that
stream, and when a re-delivered group only partly overlaps what is stored (the
relay's batches came out different after a restart) the stored events are left
out and the rest appended. Because every append to a stream happens in commit
order and a relay only ever goes back to a checkpoint, what a stream holds is
always a prefix of the row's changes: after a crash it holds every change once.

Backfills (``rowcast backfill``, an initial snapshot): each row read is a
``Change(snapshot=True)`` write, appended to its row's stream as any change is
(data ``snapshot: True``), even when the stream holds those values already: it
says what the row was at that point of the log. A backfill hands a chunk out with
the transaction of its high watermark, so the read lands after every change the
stream has of the row then, and its rows the log changed meanwhile are left out:
a row's stream never goes back in time. Its id comes from that transaction's
position and the read's index in it, after the transaction's own changes, so it
is never taken for one of them. A relay killed after the store took a chunk but
before its checkpoint reads that chunk again later in the log (new watermarks,
new ids): the first reads stay in their streams (true when made) and the
re-delivered changes around them are recognised as stored (reads not re-delivered
are passed over when matching a re-delivery to a stream's tail).

A store that fails for now (locked past its timeout, disk full, a lost
connection) is a `TransientSinkError`; the relay retries the whole batch, and the
events already appended are recognised as such. What it will never take is a
`PermanentSinkError`: a closed store, a refused privilege, and a change whose id
is stored in another stream, or two changes of one batch with one id (two
databases relayed into one store whose positions coincide; its cause is the
`DuplicateEventId`): such a change is never taken for a re-delivery and dropped.

`check` proves the store can take appends (`EventStore.check_writable`, and a
SQLite file and its directory writable). As a dead-letter destination
(``--dead-letter sqlite:///dead.db``), each refused change is stored as `deliver`
stores it, with the error as the event's metadata ``{"dead_letter": {...}}``
(`rowcast.sinks.deadletter`).
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Mapping
from typing import Any

from .._speedups import uuid_from_bytes
from .._url import masked
from ..change import Change
from ..codec import dumps
from ..errors import ConfigError, DuplicateEventId, PermanentSinkError, SinkError, StoreError
from ..store import EventStore
from ..store._core import EncodedBatch, split_groups
from ._dberrors import sink_error
from .base import Batch, encoded

__all__ = ["StoreSink", "stream_name"]

# what every Change has; ``snapshot`` (when a source sets it) is added only when true,
# as Change.to_dict does
_FIELDS = tuple(f.name for f in dataclasses.fields(Change) if f.name != "snapshot")


def _data(change: Change) -> dict[str, Any]:
    """The event data of `change`: its fields (``snapshot`` only when true)."""
    data = {name: getattr(change, name) for name in _FIELDS}
    if getattr(change, "snapshot", False):
        data["snapshot"] = True
    return data


def _key(value: Any) -> str:
    return str(value) if type(value) in (int, str) else dumps(value)


def stream_name(change: Change) -> str:
    """``"<schema>.<table>-<pk>"``: ``"shop.orders-7"``, ``"shop.lines-7,2"`` (composite).

    Without a schema: ``"<table>-<pk>"``; a table without a primary key has one
    stream for the whole table: ``"<schema>.<table>"``.
    """
    table = f"{change.schema}.{change.table}" if change.schema else change.table
    pk = change.pk
    if pk is None:
        return table
    if type(pk) is tuple:
        return f"{table}-{','.join(_key(part) for part in pk)}"
    return f"{table}-{_key(pk)}"


class StoreSink:
    """Appends each change to its row's stream in the `EventStore` at `url`.

    `options` go to `EventStore` (``timeout=``, ``synchronous=`` for SQLite). Opening
    the store is checked at once: a bad URL is a `ConfigError`, a store that cannot
    be opened a `StoreError`.
    """

    def __init__(self, url: str, **options: Any) -> None:
        self.url = masked(url)
        self.store = EventStore(url, **options)

    def check(self) -> None:
        """The store answers and may be appended to (`EventStore.check_writable`)."""
        path = getattr(self.store, "path", None)
        if isinstance(path, str):
            for place in (path, os.path.dirname(path)):
                if not os.access(place, os.W_OK):
                    raise ConfigError(
                        f"event store sink {self.url}: {place!r} is not writable by this user; "
                        "change its permissions or pick another path"
                    )
        try:
            self.store.check_writable()
        except StoreError as e:
            raise self._error("cannot append", e) from e

    def deliver(self, batch: Batch) -> None:
        """Append every change of `batch` (see the module docstring); idempotent."""
        self._deliver(batch, None)

    def dead_letter(self, batch: Batch, reason: Mapping[str, Any]) -> None:
        """Append `batch` as `deliver` does, with metadata ``{"dead_letter": reason}``."""
        self._deliver(batch, {"dead_letter": dict(reason)})

    def _deliver(self, batch: Batch, metadata: dict[str, Any] | None) -> None:
        # the ids and JSON bodies other sinks of the relay use too (computed once), handed
        # to the store as they are: each stream's events in commit order, stream after
        # stream in the order of their first change
        streams: dict[str, list[int]] = {}
        ids: list[bytes] = []
        types: list[str] = []
        data: list[str] = []
        fromhex = bytes.fromhex
        for index, (change_id, change, body) in enumerate(encoded(batch)):
            ids.append(fromhex(change_id.replace("-", "")))
            types.append(change.name)
            # the body is what the codec writes for the change's fields (a tuple key aside:
            # a body has it as a JSON array, the data as a tagged tuple)
            data.append(body if type(change.pk) is not tuple else dumps(_data(change)))
            stream = stream_name(change)
            group = streams.get(stream)
            if group is None:
                streams[stream] = [index]
            else:
                group.append(index)
        order = [i for group in streams.values() for i in group]
        if len(order) > len(streams):  # a stream with several changes: theirs in a row
            ids = [ids[i] for i in order]
            types = [types[i] for i in order]
            data = [data[i] for i in order]
        meta = None if metadata is None else dumps(metadata)
        events = EncodedBatch(ids, types, data, [meta] * len(ids))
        counts = [len(group) for group in streams.values()]
        try:
            self.store._append_encoded(list(streams), counts, events)  # one commit, where it can
            return
        except DuplicateEventId:
            pass  # a re-delivery that overlaps what is stored: stream by stream, below
        except StoreError as e:
            raise self._error(f"append to {len(streams)} streams", e) from e
        for stream, part in split_groups(list(streams), counts, events):
            try:
                self._append(stream, part)
            except StoreError as e:
                raise self._error(f"append to {stream!r}", e) from e

    def _error(self, doing: str, error: StoreError) -> SinkError:
        """`error` as the kind of `SinkError` it is (module docstring)."""
        message = f"event store sink {self.url}: {doing}: {error}"
        if isinstance(error, DuplicateEventId):
            return PermanentSinkError(
                message,
                "two sources give their changes the same ids (the same source name and "
                "positions): relay them into separate stores",
            )
        if self.store.closed:
            return PermanentSinkError(message)
        return sink_error(error, message)

    def _append(self, stream: str, events: EncodedBatch) -> None:
        try:
            self.store._append_encoded([stream], [len(events.ids)], events)
        except DuplicateEventId as e:
            # a re-delivery that overlaps what is stored only in part: append the rest. What
            # a relay delivers again is the tail of the stream; an id stored anywhere else
            # (or twice in the batch) belongs to another change: raised, never skipped
            ids = [uuid_from_bytes(i) for i in events.ids]
            tail = _tail(self.store, stream, set(ids))
            if not set(e.ids) <= tail or len(set(ids)) < len(ids):
                raise
            rest = [k for k, i in enumerate(ids) if i not in tail]
            if rest:
                part = EncodedBatch(
                    *([column[k] for k in rest] for column in dataclasses.astuple(events))
                )
                self.store._append_encoded([stream], [len(rest)], part)

    def close(self) -> None:
        """Close the store; idempotent."""
        self.store.close()


def _tail(store: EventStore, stream: str, ids: set[uuid.UUID]) -> set[uuid.UUID]:
    """The ids of the last ``len(ids)`` events of `stream`, reading past the snapshot reads
    that are not among `ids`: a backfill's chunk delivered before a relay's checkpoint is
    read again after its restart, with other ids, later in the log; the reads stored the
    first time are not re-delivered, and stay between the changes that are."""
    found: set[uuid.UUID] = set()
    left = len(ids)
    for event in store.read(stream, backwards=True):
        if event.id not in ids and isinstance(event.data, dict) and event.data.get("snapshot"):
            continue
        found.add(event.id)
        left -= 1
        if not left:
            break
    return found

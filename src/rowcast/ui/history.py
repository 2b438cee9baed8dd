"""A captured row's history: its stream's changes as a timeline, and the row as of a time.

A row's stream (``<schema>.<table>-<pk>``, `rowcast.sinks.store.stream_name`) holds
one event per change, whose data is the `rowcast.Change` (``action``, ``before``,
``after``, ``ts``...). Each change carries the whole row, so the row as of a time
is the ``after`` of the last change committed by then: found by bisecting the
versions (a few reads, however long the history), never by replaying it.
Audit revisions (``<table>_rev``) come from `rowcast.ui.revisions`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final
from uuid import UUID

from ..store import EventStore, RecordedEvent

__all__ = ["ACTIONS", "RowHistory", "Step", "is_change", "row_history", "summary"]

ACTIONS: Final = ("write", "update", "delete")
TIMELINE: Final = 100  #: changes shown at once
_NIL: Final = UUID(int=0)


def is_change(data: Any) -> bool:
    """Whether an event's data is a captured `Change` (as the store sink writes it)."""
    return (
        isinstance(data, dict)
        and data.get("action") in ACTIONS
        and isinstance(data.get("table"), str)
        and "after" in data
    )


def summary(data: dict[str, Any], width: int = 160) -> str:
    """One line for a change: ``stock: 10 → 8`` for an update, the new row for a write."""
    step = Step.of(RecordedEvent("", 0, 0, _NIL, "", data, None, 0.0))
    before, after = step.before or {}, step.after or {}
    if step.action == "update":
        text = ", ".join(f"{c}: {before.get(c)!r} → {after.get(c)!r}" for c in step.changed)
    elif step.action == "write":
        text = ", ".join(f"{c}={v!r}" for c, v in after.items())
    else:
        text = "deleted " + ", ".join(f"{c}={v!r}" for c, v in before.items())
    return text if len(text) <= width else text[: width - 1] + "…"


def _time(event: RecordedEvent) -> float:
    ts = event.data.get("ts") if isinstance(event.data, dict) else None
    if isinstance(ts, int | float) and not isinstance(ts, bool):
        return float(ts)
    return event.recorded_at


@dataclass
class Step:
    """One change of the row, as the timeline shows it."""

    event: RecordedEvent
    time: float  #: its commit time (the change's ``ts``), UTC epoch seconds
    action: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    changed: list[str]  #: the columns it changed (all of them for a write)

    @property
    def columns(self) -> list[str]:
        row = self.after or self.before or {}
        return list(row)

    @classmethod
    def of(cls, event: RecordedEvent) -> Step:
        data = event.data
        before = data.get("before") if isinstance(data.get("before"), dict) else None
        after = data.get("after") if isinstance(data.get("after"), dict) else None
        action = str(data.get("action"))
        if action == "update" and before is not None and after is not None:
            changed = [c for c in after if c not in before or before[c] != after[c]]
            changed += [c for c in before if c not in after]
        else:
            changed = list(after or before or {})
        return cls(event, _time(event), action, before, after, changed)


@dataclass
class RowHistory:
    """What the row page shows: the timeline (newest first) and the row as of a time."""

    stream: str
    schema: str | None
    table: str
    pk: Any
    version: int  #: how many changes the stream holds
    steps: list[Step]  #: the newest `TIMELINE` changes (before `before`), newest first
    at: float | None = None  #: the time asked for, if any
    as_of: Step | None = None  #: the last change at or before `at` (or the last one)
    more: int | None = None  #: the version to continue the timeline below, if any
    revisions: Any = None  #: `rowcast.ui.revisions.Revisions`, when looked up
    notes: list[str] = field(default_factory=list)

    @property
    def state(self) -> dict[str, Any] | None:
        """The row as of `at` (None: not there yet, or deleted by then)."""
        step = self.as_of
        return None if step is None or step.action == "delete" else step.after


def _at(store: EventStore, stream: str, version: int) -> RecordedEvent | None:
    found = list(store.read(stream, after=version - 1, limit=1))
    return found[0] if found else None


def _last_at_or_before(store: EventStore, stream: str, last: int, at: float) -> Step | None:
    """The last change committed at or before `at` (bisecting versions 1..`last`)."""
    low, high, best = 1, last, None
    while low <= high:
        middle = (low + high) // 2
        event = _at(store, stream, middle)
        if event is None:
            break
        if _time(event) <= at:
            best, low = event, middle + 1
        else:
            high = middle - 1
    return None if best is None else Step.of(best)


def row_history(
    store: EventStore,
    stream: str,
    *,
    at: float | None = None,
    before: int | None = None,
    limit: int = TIMELINE,
) -> RowHistory | None:
    """The history of the row whose stream is `stream`; None if it holds no change."""
    last = store.stream_version(stream)
    if last == 0:
        return None
    top = last if before is None else min(before - 1, last)
    low = max(0, top - limit)
    events = list(store.read(stream, after=low, limit=top - low)) if top > 0 else []
    newest = _at(store, stream, last)
    if newest is None or not is_change(newest.data):
        return None
    steps = [Step.of(e) for e in reversed(events) if is_change(e.data)]
    data = newest.data
    history = RowHistory(
        stream,
        data.get("schema"),
        str(data["table"]),
        data.get("pk"),
        last,
        steps,
        at=at,
        more=low + 1 if low > 0 else None,
    )
    history.as_of = Step.of(newest) if at is None else _last_at_or_before(store, stream, last, at)
    return history

"""What rowcast leaves in a database, and which of it ``rowcast uninstall --yes`` drops.

Capture machinery (a SQLite source's triggers and ``rowcast_changes`` with its
helper tables; PostgreSQL slots and publications) is rowcast's alone: ``--yes``
drops it. Tables that hold what others write or keep, the app's outbox
(``rowcast_outbox``: the app inserts into it), checkpoints, an event store, a
replica's registry, are data: listed with the statement that drops them, and
dropped only with ``--include-data``.
"""

from __future__ import annotations

import dataclasses

__all__ = ["CAPTURE", "DATA", "Leftover", "what"]

#: capture tables: rowcast's alone (``rowcast_spill_<n>`` too)
CAPTURE = ("rowcast_changes", "rowcast_layouts", "rowcast_readers", "rowcast_state")
#: what each known data table holds
DATA = {
    "rowcast_outbox": "the transactional outbox (the app writes to it)",
    "rowcast_checkpoint": "relay checkpoints",
    "rowcast_report": "relay and consumer reports (rowcast status)",
    "rowcast_events": "an event store's events",
    "rowcast_snapshots": "an event store's snapshots",
    "rowcast_subscriptions": "an event store's subscriptions",
    "rowcast_replicas": "a replication sink's registry of its tables",
    "rowcast_signal": "backfill requests and each relay's progress (rowcast backfill)",
}


@dataclasses.dataclass(frozen=True)
class Leftover:
    """A trigger or table rowcast left in a database, and the SQL that drops it."""

    kind: str  #: "trigger" or "table"
    name: str
    detail: str  #: e.g. "capture: 12 changes kept"
    sql: str
    data: bool = False  #: dropped only with --include-data
    active_pid: int | None = None  #: (PostgreSQL's slots have one)


def what(table: str) -> tuple[str, bool]:
    """What a ``rowcast_*`` table holds, and whether it is data (kept by ``--yes`` alone)."""
    if table in CAPTURE or table.startswith("rowcast_spill_"):
        return "capture: a SQLite source's changes", False
    return DATA.get(table, "made by rowcast"), True

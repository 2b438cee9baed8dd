"""A PostgreSQL reader's log health: the WAL head, its lag, and what its slot retains.

Private to `rowcast.sources.postgres` (`LogicalSource.health`, ``diagnose``).
"""

from __future__ import annotations

from typing import Any

from ..health import LogHealth, size
from .pgoutput import format_lsn, parse_lsn

__all__ = ["health", "lost", "slot_facts"]

_QUERY = """
SELECT pg_current_wal_lsn(),
       (SELECT setting FROM pg_settings WHERE name = 'max_slot_wal_keep_size'),
       s.restart_lsn, s.confirmed_flush_lsn, s.wal_status, s.active
FROM (SELECT 1) AS one LEFT JOIN pg_replication_slots AS s ON s.slot_name = %s
"""


def health(cur: Any, slot: str | None, position: str | None) -> LogHealth:
    """What the server says about `slot` (None: no slot) and a reader at `position`."""
    cur.execute(_QUERY, (slot or "",))
    head_text, keep, restart, confirmed, wal_status, active = cur.fetchone()
    head = parse_lsn(head_text)
    limit = None if keep is None or int(keep) < 0 else int(keep) * 1024 * 1024
    at = _lsn(position)
    if at is None and confirmed is not None:
        at = parse_lsn(confirmed)
    retained = None if restart is None else max(0, head - parse_lsn(restart))
    warnings = []
    if slot and wal_status is None:
        warnings.append(
            f"replication slot {slot} does not exist: the changes since the reader's position "
            "are not kept. To recover, copy the tables' rows as they are now (--snapshot "
            "initial, or rowcast backfill URL --tables ... once it streams again) and read on from "
            "there"
        )
    elif wal_status == "lost":
        warnings.append(lost(slot or "", keep))
    elif wal_status == "unreserved":
        warnings.append(
            f"replication slot {slot} holds more WAL than max_slot_wal_keep_size "
            f"({size(limit)}) and will be invalidated at the next checkpoint: start its "
            "reader now, or drop it"
        )
    elif limit and retained is not None and retained >= 0.8 * limit:
        warnings.append(
            f"replication slot {slot} retains {size(retained)} of WAL, "
            f"{retained / limit:.0%} of max_slot_wal_keep_size ({size(limit)}): past it the "
            "slot is invalidated; is its reader running and keeping up?"
        )
    return LogHealth(
        head=format_lsn(head),
        behind_bytes=None if at is None else max(0, head - at),
        head_number=head,
        position_number=at,
        retained_bytes=retained,
        limit_bytes=limit,
        wal_status=wal_status,
        slot_active=None if active is None else bool(active),
        warnings=tuple(warnings),
        lost=bool(slot) and wal_status in (None, "lost"),
    )


def lost(slot: str, keep: Any = None) -> str:
    """The message for an invalidated slot, with the recovery."""
    limit = "" if keep is None else f" (max_slot_wal_keep_size = {keep} MB)"
    return (
        f"replication slot {slot} was invalidated: it held more WAL than the server keeps for "
        f"a slot{limit}, and the changes since its position are gone. To recover: drop the "
        "slot (rowcast uninstall URL --yes), empty the checkpoint, and copy the tables' rows "
        "as they are now (--snapshot initial, or rowcast backfill URL --tables ... once it "
        "streams again) before reading on"
    )


def slot_facts(cur: Any) -> list[tuple[str, str]]:
    """``rowcast doctor`` lines: the server's limit, and each slot's retained WAL against it."""
    cur.execute(
        "SELECT slot_name, active, wal_status, "
        "pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), "
        "(SELECT setting FROM pg_settings WHERE name = 'max_slot_wal_keep_size') "
        "FROM (SELECT 1) AS one LEFT JOIN pg_replication_slots "
        "ON database = current_database() ORDER BY slot_name"
    )
    rows = cur.fetchall()
    keep = rows[0][4] if rows else None
    unlimited = keep is None or int(keep) < 0
    limit = "" if keep is None or unlimited else size(int(keep) * 2**20)
    facts = [
        (
            "max_slot_wal_keep_size",
            "no limit: a slot whose reader is stopped keeps WAL until the disk fills "
            "(ALTER SYSTEM SET max_slot_wal_keep_size = '50GB' bounds it; past it the slot "
            "is invalidated)"
            if unlimited
            else limit,
        )
    ]
    for name, active, status, retained, _ in rows:
        if name is None:
            continue
        state = "read now" if active else "not read now"
        facts.append((f"slot {name}", f"retains {size(retained)} of WAL, {status}, {state}"))
    return facts


def _lsn(position: str | None) -> int | None:
    if not position:
        return None
    try:
        return parse_lsn(position)
    except ValueError:  # a snapshot position, say
        return None

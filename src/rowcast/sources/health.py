"""`LogHealth`: what a source's server says about the log it keeps for one reader.

A relay asks its source every second (`LogSource.health`) and ``rowcast status``
and ``rowcast doctor`` ask too: where the server's log ends now (the *head*), how
much log lies between a reader's position and the head, and how much log the
server keeps for that reader and for how long (a PostgreSQL slot's retained WAL
against ``max_slot_wal_keep_size``; the MySQL binlog a position needs against
the binlogs the server still has and ``binlog_expire_logs_seconds``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["LogHealth", "size"]


@dataclasses.dataclass(frozen=True)
class LogHealth:
    """One look at the server's log, for a reader at `position` (every field may be unknown).

    `head` is the server's position now; `behind_bytes` the bytes of log from the
    reader's position to the head (`behind_changes` for logs counted in changes);
    `head_number` and `position_number` both as numbers that grow with the log
    (PostgreSQL: the LSN; MySQL: the binlog file's number times 2**32 plus the
    offset; SQLite: the change's seq), for metrics. `retained_bytes`,
    `limit_bytes`, `wal_status` and `slot_active`: the PostgreSQL slot's retained
    WAL, ``max_slot_wal_keep_size`` (None: no limit) and the slot's state.
    `oldest_log`, `needed_log` and `expire_seconds`: the oldest MySQL binlog the
    server has, the one the position is in, and how long binlogs are kept.
    `warnings` are sentences fit for a log line, each with what to do; `lost` is
    true when the server no longer has the log from the position on (an invalidated
    or missing slot, a purged binlog): the reader cannot go on without a recovery.
    """

    head: str | None = None
    behind_bytes: int | None = None
    behind_changes: int | None = None
    head_number: int | None = None
    position_number: int | None = None
    retained_bytes: int | None = None
    limit_bytes: int | None = None
    wal_status: str | None = None
    slot_active: bool | None = None
    oldest_log: str | None = None
    needed_log: str | None = None
    expire_seconds: float | None = None
    warnings: tuple[str, ...] = ()
    lost: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (``warnings`` a list)."""
        data = dataclasses.asdict(self)
        data["warnings"] = list(self.warnings)
        return data

    @property
    def caught_up(self) -> bool:
        """Whether the position is known to be at (or past) the head."""
        if self.behind_bytes is not None:
            return self.behind_bytes <= 0
        if self.behind_changes is not None:
            return self.behind_changes <= 0
        return False


def size(count: float | None) -> str:
    """`count` bytes for people: ``"12.3 MB"`` (``"-"`` when unknown)."""
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"  # pragma: no cover

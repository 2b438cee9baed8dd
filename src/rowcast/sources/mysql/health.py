"""A MySQL / MariaDB reader's log health: the binlog head, its lag, and what may be purged.

Private to `rowcast.sources.mysql` (`BinlogSource.health`, ``diagnose``). The
server purges binlogs older than ``binlog_expire_logs_seconds`` (or
``expire_logs_days``); a reader whose position is in a purged binlog cannot go on.
"""

from __future__ import annotations

import re
from typing import Any

from ..health import LogHealth

__all__ = ["binlog_facts", "file_number", "health", "purged"]


def file_number(name: str) -> int:
    """The number a binlog file's name ends with (``mysql-bin.000042`` -> 42)."""
    found = re.search(r"(\d+)$", name)
    return int(found.group(1)) if found else 0


def _split(position: str | None) -> tuple[str, int] | None:
    if not position:
        return None
    name, sep, offset = position.rpartition(":")
    return (name, int(offset)) if sep and name and offset.isdigit() else None


def _logs(cur: Any) -> tuple[tuple[str, int], list[tuple[str, int]], float | None]:
    """The head (file, offset), the binlogs (name, size) oldest first, the expiry in seconds."""
    cur.execute("SHOW MASTER STATUS")
    row = cur.fetchone()
    head = (str(row[0]), int(row[1])) if row else ("", 0)
    cur.execute("SHOW BINARY LOGS")
    logs = sorted(
        ((str(name), int(size)) for name, size, *_ in cur.fetchall()),
        key=lambda log: file_number(log[0]),
    )
    cur.execute(
        "SHOW VARIABLES WHERE Variable_name IN ('binlog_expire_logs_seconds', 'expire_logs_days')"
    )
    values = {str(name): str(value) for name, value in cur.fetchall()}
    seconds = float(values.get("binlog_expire_logs_seconds") or 0)
    if not seconds:
        seconds = float(values.get("expire_logs_days") or 0) * 86400
    return head, logs, seconds or None


def health(conn: Any, position: str | None) -> LogHealth:
    """What the server says about its binlogs and a reader at `position` (``file:offset``)."""
    with conn.cursor() as cur:
        (head_file, head_offset), logs, expire = _logs(cur)
    sizes = dict(logs)
    at = _split(position)
    behind = number = None
    warnings = []
    lost = False
    if at is not None:
        name, offset = at
        number = (file_number(name) << 32) | offset
        if name not in sizes and logs and file_number(name) < file_number(logs[0][0]):
            warnings.append(purged(position or "", logs[0][0]))
            lost = True
        elif name == head_file:
            behind = max(0, head_offset - offset)
        elif name in sizes:
            behind = max(0, sizes[name] - offset) + head_offset
            behind += sum(
                size
                for log, size in logs
                if file_number(name) < file_number(log) < file_number(head_file)
            )
    if logs and at is not None and at[0] == logs[0][0] and at[0] != head_file and expire:
        warnings.append(
            f"the binlog this reader needs, {at[0]}, is the oldest the server keeps: it is "
            f"purged once {expire / 3600:.0f} h old (binlog_expire_logs_seconds); a reader "
            "stopped past that loses its place"
        )
    return LogHealth(
        head=f"{head_file}:{head_offset}" if head_file else None,
        behind_bytes=behind,
        head_number=(file_number(head_file) << 32) | head_offset if head_file else None,
        position_number=number,
        oldest_log=logs[0][0] if logs else None,
        needed_log=at[0] if at else None,
        expire_seconds=expire,
        warnings=tuple(warnings),
        lost=lost,
    )


def purged(position: str, oldest: str) -> str:
    """The message for a position in a binlog the server no longer has, with the recovery."""
    return (
        f"the binlog of position {position} was purged (the oldest the server keeps is "
        f"{oldest}): the changes since that position are gone. To recover: empty the "
        "checkpoint and copy the tables' rows as they are now (--snapshot initial, or "
        "rowcast backfill URL --tables ... once it streams again), then read on from there; keep "
        "binlogs longer than a reader may be "
        "stopped (binlog_expire_logs_seconds)"
    )


def binlog_facts(conn: Any) -> list[tuple[str, str]]:
    """``rowcast doctor`` lines: the binlogs kept and for how long."""
    try:
        with conn.cursor() as cur:
            _, logs, expire = _logs(cur)
    except Exception as error:  # no privilege for SHOW BINARY LOGS: the checks say which
        reason = error.args[-1] if error.args else error
        return [("binlogs kept", f"unknown: {reason}")]
    kept = f"{len(logs)} files, {sum(size for _, size in logs) / 2**20:.1f} MB"
    oldest = logs[0][0] if logs else "none"
    expiry = "never (no binlog_expire_logs_seconds)" if not expire else f"{expire / 3600:g} h"
    return [("binlogs kept", f"{kept}, oldest {oldest}"), ("binlog expiry", expiry)]

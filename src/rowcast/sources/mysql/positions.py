"""Binlog positions (``file:offset``) in the server's order: the number of the file, then
the offset. Private to `rowcast.sources.mysql` (its source and its backfills)."""

from __future__ import annotations

import re
from collections.abc import Callable

from ...errors import ConfigError
from .._snapshot import is_position as is_snapshot

__all__ = ["GTID_SET", "file_pos", "is_position", "order", "reaches"]

_MYSQL_GTID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F-]{27}:")
#: a GTID set: MariaDB's domain-server-sequence list, or MySQL's uuid:interval
GTID_SET = re.compile(r"^(\d+-\d+-\d+)(,\d+-\d+-\d+)*$|^[0-9a-f-]{36}:")


def file_pos(position: str, accepted: str = "a GTID set, 'now' or 'start'") -> tuple[str, int]:
    """``file:offset`` as (file, offset); a `ConfigError` naming what else is `accepted`."""
    name, sep, offset = position.rpartition(":")
    if not sep or not name or not offset.isdigit():
        raise ConfigError(
            f"bad binlog position {position!r}: expected 'file:offset' such as "
            f"'mysql-bin.000003:1234', {accepted}"
        )
    return name, int(offset)


def is_position(value: str) -> bool:
    """Whether `value` (a checkpoint's) is a binlog position: ``file:offset``, a GTID set or
    a snapshot's position."""
    if is_snapshot(value) or GTID_SET.match(value):
        return True
    try:
        file_pos(value)
    except ConfigError:
        return False
    return True


def order(position: str) -> tuple[int, int]:
    """``file:offset`` as a sortable pair (binlog files are numbered); a `ValueError` for
    anything else (a GTID set names no place in the files without asking the server)."""
    name, _, offset = position.rpartition(":")
    if not name or not offset.isdigit() or _MYSQL_GTID.match(position):
        raise ValueError(f"{position!r} is not a binlog file:offset")
    number = re.search(r"(\d+)$", name)
    return (int(number.group(1)) if number else 0, int(offset))


def reaches(end: str, key: Callable[[str], tuple[int, int]] = order) -> Callable[[str], bool]:
    """Whether a ``file:offset`` is at or past `end` in `key`'s order, `end`'s key made
    once (the test a source makes after each transaction)."""
    end_name, last = end.rpartition(":")[0], key(end)

    def reached(position: str) -> bool:
        name, _, offset = position.rpartition(":")
        if name == end_name and offset.isdigit():  # the same file: the offsets tell
            return int(offset) >= last[1]
        return key(position) >= last

    return reached

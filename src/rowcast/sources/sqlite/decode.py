"""Turning ``rowcast_changes`` rows back into `Change` objects (see `triggers`).

A row is (seq, layout, sealed, v0, v1...); its layout, read once from
``rowcast_layouts`` and kept, says whose change it is and what each value is.
A spilled layout's values are in ``rowcast_spill_<layout>``, read a group at a time.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any, Final

from ...change import Action, Change
from . import triggers

__all__ = ["Decoder", "Row"]

Row = tuple[Any, ...]  #: seq, layout, sealed, values...

_ACTIONS: Final = {"write": Action.WRITE, "update": Action.UPDATE, "delete": Action.DELETE}
_LAYOUTS: Final = "SELECT id, tbl, op, columns, key, width, spill FROM rowcast_layouts"
_V: Final = triggers.FIXED  # where a row's values start
# a layout as a reader uses it: table, action, wanted, columns, key slots, width, the
# table its values spill to (or None), whether the key is the hidden rowid
_Shape = tuple[str, Action, bool, tuple[str, ...], tuple[int, ...], int, str | None, bool]


class Decoder:
    """Changes of the tables `wanted` accepts, from groups of rows; layouts cached."""

    def __init__(self, wanted: Callable[[str], bool]) -> None:
        self._wanted = wanted
        self._layouts: dict[int, _Shape] = {}

    def forget(self) -> None:
        """Read the layouts again when next needed (rowcast's tables may have been remade)."""
        self._layouts.clear()

    def changes(self, conn: sqlite3.Connection, group: list[Row]) -> list[Change]:
        """The changes of one group (one or more whole transactions) of rows.

        Raises `KeyError`, `IndexError`, `ValueError` or `TypeError` for rows not
        written by rowcast's triggers.
        """
        first, last = group[0][0], group[-1][0]
        # ts, txid, position, source
        tail = (triggers.epoch(group[-1][2]), f"{first}-{last}", str(last), "sqlite")
        layouts = self._layouts
        spilled: dict[int, Row] = {}
        made: list[tuple[Action, str, str, Any, Any, Any]] = []
        for row in group:
            shape = layouts.get(row[1]) or self._layout(conn, row[1])
            table, action, wanted, columns, key, width, spill, hidden = shape
            if not wanted:
                continue
            values, at = row, _V
            if spill is not None:
                if row[0] not in spilled:
                    spilled.update(_spilled(conn, spill, row[0], last))
                values, at = spilled.pop(row[0]), 1
            before = after = None
            new = at
            if action is Action.WRITE:
                after = dict(zip(columns, values[at:], strict=False))
            else:
                before = dict(zip(columns, values[at:], strict=False))
                if action is Action.UPDATE:
                    new += width
                    after = dict(zip(columns, values[new:], strict=False))
            if len(key) == 1:
                pk = values[new + key[0]]
            else:
                pk = tuple(values[new + k] for k in key) if key else None
            if hidden and new != at and values[at + key[0]] != pk:
                # the hidden rowid moved (UPDATE t SET rowid = ...), and no image holds
                # it: to a reader keyed by it, the old row went and a new one came
                old = values[at + key[0]]
                made.append((Action.DELETE, "main", table, old, before, None))
                action, before = Action.WRITE, None
            made.append((action, "main", table, pk, before, after))
        return Change._rows(made, *tail)  # right by construction: without Change's checks

    def _layout(self, conn: sqlite3.Connection, layout: int) -> _Shape:
        """Layout `layout`, read with every other from ``rowcast_layouts`` into the cache."""
        for id_, table, op, columns, key, width, spill in conn.execute(_LAYOUTS):
            names = tuple(json.loads(columns))
            slots = tuple(json.loads(key))
            self._layouts[id_] = (
                table,
                _ACTIONS[op],
                bool(self._wanted(table)),
                names,
                slots,
                width,
                f"{triggers.SPILL}{id_}" if spill else None,
                len(slots) == 1 and slots[0] >= len(names),
            )
        return self._layouts[layout]  # KeyError: a row written by hand


def _spilled(conn: sqlite3.Connection, table: str, first: int, last: int) -> dict[int, Row]:
    """The values in spill table `table` of the changes `first` to `last`, by seq."""
    rows = conn.execute(f"SELECT * FROM {table} WHERE seq BETWEEN ? AND ?", (first, last))
    return {row[0]: row for row in rows}

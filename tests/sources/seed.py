"""The seed workload every log source must turn into the same 13 changes."""

from __future__ import annotations

from typing import Any

from rowcast import Change

SEED = [
    "INSERT INTO test (data) VALUES ('a')",
    "INSERT INTO test (data) VALUES ('b'), ('c'), ('d')",
    "UPDATE test SET data = 'aa' WHERE id = 1",
    "UPDATE test SET data = 'bb' WHERE id = 2",
    "UPDATE test SET data = 'cc' WHERE id != 1",
    "DELETE FROM test WHERE id != 1",
    "DELETE FROM test WHERE id = 1",
]
#: (name, pk) of the changes of each statement, as the binlog issue has them
SEED_BY_STATEMENT = [
    [("test_write", 1)],
    [("test_write", 2), ("test_write", 3), ("test_write", 4)],
    [("test_update", 1)],
    [("test_update", 2)],
    [("test_update", 2), ("test_update", 3), ("test_update", 4)],
    [("test_delete", 2), ("test_delete", 3), ("test_delete", 4)],
    [("test_delete", 1)],
]
SEED_EVENTS = [change for statement in SEED_BY_STATEMENT for change in statement]


def events(transactions: list[list[Change]]) -> list[tuple[str, Any]]:
    """(name, pk) of every change of `transactions`, in order."""
    return [(c.name, c.pk) for tx in transactions for c in tx]

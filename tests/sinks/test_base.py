"""The sink contract's shared parts: change ids and the per-batch encoding."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from rowcast import _speedups
from rowcast.change import Change
from rowcast.errors import ConfigError
from rowcast.sinks.base import NAMESPACE, change_id, encoded


def _change(
    pk: int, position: str | None = "mysql-bin.000003:1234", source: str = "mysql"
) -> Change:
    return Change("write", "shop", "orders", pk, None, {"id": pk}, 1.0, "0-1-9", position, source)


def test_change_ids_are_uuid5_of_source_position_and_index() -> None:
    """The derivation is a format: ids already in brokers and stores must stay the same."""
    change = _change(1)
    assert change_id(change, 2) == uuid.uuid5(NAMESPACE, "mysql\x1fmysql-bin.000003:1234\x1f2")
    assert change_id(change, 2) == uuid.UUID("ea037407-e3e5-51ca-af41-4c3748ed788a")
    for index in range(200):  # every nibble of the version and variant fields
        other = _change(index, f"binlog.{index:06d}:{index * 977}", "postgres")
        expected = uuid.uuid5(NAMESPACE, f"postgres\x1fbinlog.{index:06d}:{index * 977}\x1f{index}")
        assert change_id(other, index) == expected


def test_encoded_gives_each_change_its_id_and_body_in_commit_order() -> None:
    first, second = [_change(1), _change(2)], [_change(3, "mysql-bin.000003:2000")]
    result = encoded([first, second])
    assert [e.change for e in result] == first + second
    assert [e.id for e in result] == [
        str(change_id(first[0], 0)),
        str(change_id(first[1], 1)),
        str(change_id(second[0], 0)),
    ]
    assert [e.body for e in result] == [c.to_json() for c in first + second]


def test_encoded_is_the_same_from_every_thread_and_follows_its_transactions() -> None:
    c = _change(1)
    batch = [[c, c]]
    with ThreadPoolExecutor(4) as pool:  # sinks of one relay ask from their own threads
        results = list(pool.map(encoded, [batch] * 4))
    assert all(result == results[0] for result in results)
    if _speedups.active is _speedups.accelerated:  # computed once (ROWCAST_PURE=1: each time)
        assert all(result is results[0] for result in results)
    ids = [e.id for e in results[0]]
    assert ids == [str(change_id(c, 0)), str(change_id(c, 1))]
    regrouped = encoded([[c], [c]])  # the same changes, other transactions: other ids
    assert [e.id for e in regrouped] == [str(change_id(c, 0))] * 2
    assert encoded([]) == []


def test_a_change_without_position_fails_the_whole_batch_first() -> None:
    with pytest.raises(ConfigError, match="position"):
        encoded([[_change(1)], [_change(2, position=None)]])

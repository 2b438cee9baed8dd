"""Change: its fields, names and JSON round trip (the codec itself: test_codec.py)."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from rowcast import Action, Change
from tests.test_codec import same, scalars, values


@given(st.dictionaries(st.text(min_size=1), values, max_size=4), values)
def test_change_round_trips(image: dict[str, Any], pk: Any) -> None:
    change = Change(Action.UPDATE, "db", "t", (1, "x"), before=image, after=image, txid="7")
    assert Change.from_json(change.to_json()) == change
    assert Change.from_dict(change.to_dict()) == change
    assert Change.from_dict(json.loads(change.to_json())) == change


flat_values = scalars | st.floats(allow_nan=True, allow_infinity=True)


@given(
    st.dictionaries(st.text(min_size=1), flat_values, max_size=5)
    | st.dictionaries(st.text(min_size=1), values, max_size=3),
    st.none() | st.dictionaries(st.text(), flat_values, max_size=5),
    values,
    st.booleans(),
)
@example({"x": 1.192092896e-07}, None, 1e16, False)  # floats: spelled apart by orjson
@example({"x": 6.103515625e-05}, None, 1, False)
def test_to_json_is_the_json_of_to_dict_byte_for_byte(
    after: dict[str, Any], before: dict[str, Any] | None, pk: Any, snapshot: bool
) -> None:
    """to_json writes row values in one pass when it can: the bytes must not differ, but
    for how a float is spelled (the C encoder: 1e-7 and 0.00006103515625; json: 1e-07 and
    6.103515625e-05; both read back the same)."""
    action = "write" if snapshot or before is None else "update"
    change = Change(action, "db", "t", pk, before, after, 1.5, "7", "f:4", "mysql", snapshot)
    reference = json.dumps(
        change.to_dict(), separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    assert _floats(change.to_json()) == _floats(reference)
    assert json.loads(change.to_json()) == json.loads(reference)


def _floats(text: str) -> str:
    """`text` (JSON) with every float outside strings written as Python's repr writes it."""

    def canonical(match: re.Match[str]) -> str:
        token = match.group(0)
        if token.startswith('"') or not any(c in token for c in ".eE"):
            return token
        return repr(float(token))

    return re.sub(r'"(?:[^"\\]|\\.)*"|-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?', canonical, text)


def test_to_json_still_refuses_what_to_dict_cannot_write() -> None:
    change = Change("write", "db", "t", 1, after={"id": 1}, txid=uuid.UUID(int=1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not JSON serializable"):
        change.to_json()
    with pytest.raises(ValueError, match="Out of range float"):
        Change("write", "db", "t", 1, after={"id": 1}, ts=math.nan).to_json()
    one_tag = Change("write", "db", "t", 1, after={"$decimal": 1.5})
    assert '"after":{"$$decimal":1.5}' in one_tag.to_json()


def test_change_names_topic_and_changed() -> None:
    change = Change(
        "update", "db", "test", 1, before={"id": 1, "a": 1, "b": 2}, after={"id": 1, "a": 1, "b": 3}
    )
    assert change.action is Action.UPDATE
    assert change.name == "test_update"
    assert change.topic == "update@db.test"
    assert change.changed == ("b",)
    assert Change("write", None, "t", 1, after={"x": 1}).topic == "write@t"
    assert Change("write", None, "t", 1, after={"x": 1, "y": 2}).changed == ("x", "y")
    assert Change("delete", None, "t", 1, before={"x": 1}).changed == ("x",)
    added = Change("update", None, "t", 1, before={"x": 1}, after={"x": 1, "y": None})
    assert added.changed == ("y",)


def test_change_is_frozen() -> None:
    change = Change("write", None, "t", 1, after={})
    with pytest.raises(AttributeError):
        change.table = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"action": "insert", "after": {}}, "must be one of 'write', 'update', 'delete'"),
        ({"action": "write", "table": ""}, "non-empty string"),
        ({"action": "write"}, "'write' Change needs its after image"),
        ({"action": "update", "before": {}}, "'update' Change needs its after image"),
        ({"action": "delete", "after": {}}, "'delete' Change needs its before image"),
    ],
)
def test_invalid_changes_are_refused(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"schema": None, "table": "t", "pk": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        Change(**args)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "expected a JSON object"),
        ('{"action": "write"}', "expected a JSON object with action, table, pk"),
        ('{"action": "write", "table": "t", "pk": 1, "after": {}, "x": 1}', "unknown fields"),
        ("not json", "Expecting value"),
    ],
)
def test_from_json_refuses_what_is_not_a_change(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Change.from_json(text)


def test_from_dict_refuses_missing_fields() -> None:
    with pytest.raises(ValueError, match=r"missing \['pk', 'table'\]"):
        Change.from_dict({"action": "write"})


def test_uuid_pk_and_types_in_images_round_trip() -> None:
    key = uuid.uuid4()
    change = Change(
        "write",
        "s",
        "t",
        key,
        after={"id": key, "at": dt.datetime(2024, 1, 1), "n": Decimal("1E+2"), "b": b"x"},
        ts=1.5,
        position="mysql-bin.000001:4",
        source="mysql",
    )
    back = Change.from_json(change.to_json())
    assert back == change
    assert same(back.after, change.after)


def test_snapshot_reads_round_trip_and_live_changes_omit_the_field() -> None:
    live = Change("write", "s", "t", 1, after={"id": 1}, ts=1.0)
    read = Change("write", "s", "t", 1, after={"id": 1}, ts=1.0, snapshot=True)
    assert live.snapshot is False
    assert read.snapshot is True
    assert "snapshot" not in live.to_dict()
    assert '"snapshot"' not in live.to_json()
    assert read.to_dict()["snapshot"] is True
    assert json.loads(read.to_json())["snapshot"] is True
    for change in (live, read):
        assert Change.from_json(change.to_json()) == change
        assert Change.from_dict(change.to_dict()) == change
        assert Change.from_dict(json.loads(change.to_json())) == change
    assert live != read


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"action": "write", "after": {}, "snapshot": 1}, "must be True or False, not 1"),
        ({"action": "update", "before": {}, "after": {}, "snapshot": True}, "only a 'write'"),
    ],
)
def test_invalid_snapshot_flags_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Change(schema=None, table="t", pk=1, **kwargs)

"""Change and its JSON codec."""

from __future__ import annotations

import collections
import datetime as dt
import json
import math
import uuid
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rowcast import Action, Change
from rowcast.change import decode, dumps, encode, loads

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.decimals(allow_nan=False)
    | st.datetimes()
    | st.datetimes(timezones=st.timezones())
    | st.dates()
    | st.times()
    | st.times(timezones=st.just(dt.UTC))
    | st.timedeltas()
    | st.binary()
    | st.uuids()
)
hashables = st.one_of(st.integers(), st.text(), st.uuids(), st.decimals(allow_nan=False))
values = st.recursive(
    scalars | st.sets(hashables) | st.frozensets(st.integers()),
    lambda inner: (
        st.lists(inner)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(), inner)
        | st.dictionaries(st.integers(), inner)
    ),
    max_leaves=20,
)


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (1 == 1.0 == True is not enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dt.datetime | dt.time):
        return a == b and a.tzinfo == b.tzinfo and a.utcoffset() == b.utcoffset()
    if isinstance(a, Decimal):
        return str(a) == str(b)
    return bool(a == b)


@given(values)
def test_codec_round_trips_every_supported_type(value: Any) -> None:
    assert same(loads(dumps(value)), value)
    assert same(decode(json.loads(json.dumps(encode(value)))), value)


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
def test_to_json_is_the_json_of_to_dict_byte_for_byte(
    after: dict[str, Any], before: dict[str, Any] | None, pk: Any, snapshot: bool
) -> None:
    """to_json writes row values in one pass when it can: the bytes must not differ."""
    action = "write" if snapshot or before is None else "update"
    change = Change(action, "db", "t", pk, before, after, 1.5, "7", "f:4", "mysql", snapshot)
    reference = json.dumps(
        change.to_dict(), separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    assert change.to_json() == reference


def test_to_json_still_refuses_what_to_dict_cannot_write() -> None:
    change = Change("write", "db", "t", 1, after={"id": 1}, txid=uuid.UUID(int=1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not JSON serializable"):
        change.to_json()
    with pytest.raises(ValueError, match="Out of range float"):
        Change("write", "db", "t", 1, after={"id": 1}, ts=math.nan).to_json()
    one_tag = Change("write", "db", "t", 1, after={"$decimal": 1.5})
    assert '"after":{"$$decimal":1.5}' in one_tag.to_json()


def test_tagged_values_look_like_this() -> None:
    assert encode(Decimal("1.50")) == {"$decimal": "1.50"}
    assert encode(dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)) == {
        "$datetime": "2024-05-01T12:00:00+00:00"
    }
    assert encode(b"\x00\xff") == {"$bytes": "AP8="}
    assert encode({3, 1, 2}) == {"$set": [1, 2, 3]}
    assert encode(dt.timedelta(days=1, microseconds=5)) == {"$timedelta": [1, 0, 5]}
    assert encode(float("inf")) == {"$float": "inf"}
    assert math.isnan(loads(dumps(float("nan"))))


def test_user_dicts_that_look_like_tags_survive() -> None:
    tricky = {"$decimal": "1"}, {"$$x": 1}, {"$": None}, {"$a": 1, "$b": 2}
    for value in tricky:
        assert dumps(value) != dumps(Decimal("1")) or value != {"$decimal": "1"}
        assert loads(dumps(value)) == value


def test_zoneinfo_datetimes_keep_their_zone_and_fold() -> None:
    zone = ZoneInfo("Europe/Paris")
    for fold in (0, 1):  # 02:30 happens twice on that night
        value = dt.datetime(2024, 10, 27, 2, 30, tzinfo=zone, fold=fold)
        back = loads(dumps(value))
        assert back.tzinfo is zone
        assert back.utcoffset() == value.utcoffset()
    assert dumps(dt.datetime(2024, 1, 1, tzinfo=zone)) == (
        '{"$datetime":"2024-01-01T00:00:00+01:00[Europe/Paris]"}'
    )


def test_namedtuples_come_back_as_tuples_even_inside_sets() -> None:
    point = collections.namedtuple("point", "x y")
    assert loads(dumps({point(1, 2)})) == {(1, 2)}
    assert loads(dumps([point(1, 2)])) == [(1, 2)]


def test_enum_members_are_written_as_their_value() -> None:
    assert loads(dumps(Action.DELETE)) == "delete"


def test_unknown_types_and_tags_are_clear_errors() -> None:
    with pytest.raises(TypeError, match=r"cannot encode a value of type builtins\.object"):
        dumps(object())
    with pytest.raises(ValueError, match=r"unknown rowcast JSON tag '\$nope'"):
        loads('{"$nope": 1}')
    with pytest.raises(ValueError, match="malformed rowcast JSON value"):
        loads('{"$decimal": "not a number"}')
    with pytest.raises(ValueError, match="malformed"):
        loads('{"$timedelta": [1]}')
    with pytest.raises(ValueError, match="malformed"):
        loads('{"$datetime": "2024-01-01T00:00:00+00:00[Nowhere/Atlantis]"}')


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

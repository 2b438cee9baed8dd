"""The tagged JSON codec: every supported type comes back equal and of the same type."""

from __future__ import annotations

import collections
import datetime as dt
import json
import math
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

import rowcast.change
from rowcast import Action
from rowcast.codec import (
    decode,
    dumps,
    dumps_encoded,
    dumps_flat_rows,
    dumps_ready,
    encode,
    is_flat_row,
    loads,
    object_hook,
)

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


@given(values)
def test_object_hook_reads_what_dumps_wrote_through_json_itself(value: Any) -> None:
    text = dumps(value)
    assert same(json.loads(text, object_hook=object_hook), value)
    decoder = json.JSONDecoder(object_hook=object_hook)
    both, end = decoder.raw_decode(f"[{text},{text}]  ")
    assert end == len(text) * 2 + 3
    assert same(both, [value, value])


@given(st.dictionaries(st.text(), scalars | st.floats(), max_size=5) | st.none() | values)
def test_flat_rows_are_written_as_their_encoded_json(row: Any) -> None:
    if is_flat_row(row):
        # the same writer as for encoded values (dumps_encoded is json's own, which may
        # spell a float otherwise: 6.103515625e-05 for orjson's 0.00006103515625)
        assert dumps_flat_rows({"row": row}) == dumps_ready({"row": encode(row)})
        assert json.loads(dumps_flat_rows([row])) == json.loads(dumps_encoded([encode(row)]))
        assert same(loads(dumps_flat_rows([row])), [row])


def test_only_dicts_of_str_keys_and_leaf_values_are_flat_rows() -> None:
    assert is_flat_row({"a": 1, "b": Decimal("1"), "c": 1.5, "d": None})
    assert is_flat_row(None)
    assert not is_flat_row({"a": [1]})  # lists and dicts are copied by `encode`
    assert not is_flat_row({"a": math.inf})
    assert not is_flat_row({1: "a"})
    assert not is_flat_row({"$x": 1})  # written as {"$$x": 1}


def test_dumps_encoded_writes_json_ready_values_as_they_are() -> None:
    assert dumps_encoded({"$decimal": "1.5", "é": [1, None]}) == '{"$decimal":"1.5","é":[1,null]}'
    assert dumps({"$decimal": "1.5"}) == '{"$$decimal":"1.5"}'
    with pytest.raises(ValueError, match="Out of range float"):
        dumps_encoded(math.nan)


def test_the_codec_is_still_importable_from_rowcast_change() -> None:
    assert rowcast.change.dumps is dumps
    assert rowcast.change.loads is loads
    assert rowcast.change.encode is encode
    assert rowcast.change.decode is decode

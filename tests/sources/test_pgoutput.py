"""The pgoutput decoder on messages laid out as the PostgreSQL manual gives them."""

from __future__ import annotations

import struct

import pytest

from rowcast import SourceError
from rowcast.sources.postgres import pgoutput as pgo
from rowcast.sources.postgres.pgoutput import UNCHANGED, decode, format_lsn, parse_lsn

MICROS_2024 = (1_704_067_200 - pgo.PG_EPOCH) * 1_000_000  # 2024-01-01T00:00:00Z


def s(text: str) -> bytes:
    return text.encode() + b"\0"


def row(*values: bytes | str | None) -> bytes:
    out = struct.pack(">H", len(values))
    for value in values:
        if value is None:
            out += b"n"
        elif value == "u":
            out += b"u"
        else:
            assert isinstance(value, bytes)
            out += b"t" + struct.pack(">I", len(value)) + value
    return out


def test_lsn_text_round_trips() -> None:
    assert format_lsn(0x16B3748) == "0/16B3748"
    assert format_lsn((0xA << 32) | 0xFF) == "A/FF"
    assert parse_lsn("0/16B3748") == 0x16B3748
    assert parse_lsn("a/ff") == (0xA << 32) | 0xFF
    for bad in ("", "0", "/1", "1/", "x/1", "123456789/0", "0/1/2"):
        with pytest.raises(ValueError, match=r"not an LSN|invalid literal"):
            parse_lsn(bad)


def test_begin_and_commit() -> None:
    begin = decode(b"B" + struct.pack(">QqI", 0x100, MICROS_2024 + 500_000, 742))
    assert begin == pgo.Begin(0x100, 1_704_067_200.5, 742)
    commit = decode(b"C" + struct.pack(">BQQq", 0, 0x100, 0x128, MICROS_2024))
    assert commit == pgo.Commit(0, 0x100, 0x128, 1_704_067_200.0)


def test_relation_with_flags_types_and_pg_catalog() -> None:
    data = b"R" + struct.pack(">I", 16385) + s("public") + s("test") + b"f" + struct.pack(">H", 2)
    data += b"\x01" + s("id") + struct.pack(">Ii", 23, -1)
    data += b"\x00" + s("data") + struct.pack(">Ii", 1043, 24)
    assert decode(data) == pgo.Relation(
        16385,
        "public",
        "test",
        "f",
        (pgo.Column(1, "id", 23, -1), pgo.Column(0, "data", 1043, 24)),
    )
    assert [c.key for c in decode(data).columns] == [True, False]  # type: ignore[union-attr]
    catalog = b"R" + struct.pack(">I", 1) + s("") + s("t") + b"d" + struct.pack(">H", 0)
    assert decode(catalog).namespace == "pg_catalog"  # type: ignore[union-attr]


def test_rows_insert_update_delete() -> None:
    oid = struct.pack(">I", 7)
    assert decode(b"I" + oid + b"N" + row(b"1", None, "u")) == pgo.Insert(
        7, (b"1", None, UNCHANGED)
    )
    assert decode(b"U" + oid + b"N" + row(b"2")) == pgo.Update(7, None, None, (b"2",))
    assert decode(b"U" + oid + b"K" + row(b"1") + b"N" + row(b"2")) == pgo.Update(
        7, "K", (b"1",), (b"2",)
    )
    assert decode(b"U" + oid + b"O" + row(b"1", b"") + b"N" + row(b"1", b"x")) == pgo.Update(
        7, "O", (b"1", b""), (b"1", b"x")
    )
    assert decode(b"D" + oid + b"K" + row(b"1", None)) == pgo.Delete(7, "K", (b"1", None))


def test_type_truncate_origin_and_message() -> None:
    assert decode(b"Y" + struct.pack(">I", 90001) + s("public") + s("mood")) == pgo.Type(
        90001, "public", "mood"
    )
    assert decode(b"T" + struct.pack(">IB", 2, 1) + struct.pack(">II", 5, 6)) == pgo.Truncate(
        1, (5, 6)
    )
    assert decode(b"O" + struct.pack(">Q", 9) + s("node_a")) == pgo.Origin(9, "node_a")
    message = b"M" + struct.pack(">BQ", 1, 10) + s("app") + struct.pack(">I", 2) + b"hi"
    assert decode(message) == pgo.Message(1, 10, "app", b"hi")


def test_unchanged_marker_is_a_str_that_survives_json() -> None:
    assert UNCHANGED == "rowcast:unchanged-toast"
    assert isinstance(UNCHANGED, str)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "truncated or malformed"),
        (b"Z123", "unknown message kind 'Z'"),
        (b"B\x00\x01", "truncated or malformed"),
        (b"I" + struct.pack(">I", 1) + b"X" + row(b"1"), "malformed Insert"),
        (b"I" + struct.pack(">I", 1) + b"N" + struct.pack(">H", 1) + b"b", "column kind 'b'"),
        (b"U" + struct.pack(">I", 1) + b"K" + row(b"1") + b"Q", "malformed Update"),
        (b"R" + struct.pack(">I", 1) + b"public", "truncated or malformed"),
    ],
)
def test_malformed_messages_are_source_errors(data: bytes, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        decode(data)
